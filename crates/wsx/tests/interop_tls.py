"""Interop over TLS (wss:// and https://) with Python `websockets`.

Usage:
  interop_tls.py server CERT_PEM KEY_PEM
      A wss:// echo server on 127.0.0.1 (port 0: the system picks) with the
      certificate chain and key, ALPN http/1.1 and websockets' default
      compression. Prints "port N" once listening, then for every connection
      that ends one line
        "conn path=P alpn=A extensions=E messages=N close_code=C"
      (E is "none" or the comma-separated extension names). Serves until its
      stdin closes or it is killed.
  interop_tls.py client wss://localhost:PORT/path CA_PEM LEAF_PEM
      A client trusting only CA_PEM: checks the server presents LEAF_PEM over
      ALPN http/1.1 and that permessage-deflate was negotiated, echoes text
      (multi-byte UTF-8) and binary messages of 0, 125, 126, 65536 and 1 MiB
      bytes, checks every frame from the server was compressed, and closes
      with 1000.
  interop_tls.py page https://localhost:PORT/ CA_PEM
      GETs the page with urllib trusting only CA_PEM: expects 200, text/html
      and an HTML body. Also checks that the same request with the system's
      default trust store fails certificate verification.

Exits non-zero on any mismatch (run by tests/interop_tls.rs).
"""

import asyncio
import ssl
import sys
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from interop_common import STATS, TIMEOUT, check_echo, count_received_frames, describe, fail

SIZES = [0, 125, 126, 65536, 1 << 20]

count_received_frames()


def text_of(size: int) -> str:
    """Exactly `size` bytes of UTF-8 mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "a\u00e9\u20ac\U0001f600"  # 1 + 2 + 3 + 4 bytes
    text = unit * (size // 10)
    text += "x" * (size - len(text.encode()))
    assert len(text.encode()) == size
    return text


def binary_of(size: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


def messages() -> list:
    out = []
    for size in SIZES:
        out.append(text_of(size))
        out.append(binary_of(size))
    return out


def trusting(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_pem` and checks host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks names by default
    ctx.load_verify_locations(cafile=ca_pem)
    return ctx


async def run_client(url: str, ca_pem: str, leaf_pem: str) -> None:
    ctx = trusting(ca_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    with open(leaf_pem) as f:
        leaf_der = ssl.PEM_cert_to_DER_cert(f.read())

    async with connect(url, ssl=ctx, max_size=None, open_timeout=TIMEOUT) as ws:
        tls = ws.transport.get_extra_info("ssl_object")
        if tls is None:
            fail("the connection is not TLS")
        if tls.getpeercert(binary_form=True) != leaf_der:
            fail("the server presented a certificate other than the generated leaf")
        alpn = tls.selected_alpn_protocol()
        if alpn != "http/1.1":
            fail(f"ALPN: got {alpn!r}, expected 'http/1.1'")
        print(f"ok: {tls.version()} with the generated leaf, ALPN {alpn}")

        header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(f"response Sec-WebSocket-Extensions: {header}")
        if "permessage-deflate" not in header:
            fail(f"the server did not accept permessage-deflate: {header!r}")
        names = [e.name for e in ws.protocol.extensions]
        if names != ["permessage-deflate"]:
            fail(f"negotiated extensions: {names!r}")

        msgs = messages()
        for m in msgs:
            await asyncio.wait_for(ws.send(m), TIMEOUT)
            check_echo(await asyncio.wait_for(ws.recv(), TIMEOUT), m)
            print(f"ok: {describe(m)}")

        # wsx serve compresses every message (--deflate-min-size 0 by default).
        if STATS != {"compressed": len(msgs), "plain": 0}:
            fail(f"frames from the server: {STATS}, expected all {len(msgs)} compressed")
        print(f"ok: frames from the server: {STATS}")

        await asyncio.wait_for(ws.close(1000, "done"), TIMEOUT)
        if ws.close_code != 1000:
            fail(f"the server answered the close with {ws.close_code}, expected 1000")
        print("ok: closed with 1000")


def run_page(url: str, ca_pem: str) -> None:
    with urllib.request.urlopen(url, context=trusting(ca_pem), timeout=TIMEOUT) as resp:
        status = resp.status
        content_type = resp.headers.get("Content-Type", "")
        body = resp.read().decode("utf-8", "replace")
    print(f"GET {url}: {status} {content_type}, {len(body)} bytes")
    if status != 200:
        fail(f"status {status}, expected 200")
    if not content_type.startswith("text/html"):
        fail(f"Content-Type {content_type!r}, expected text/html")
    lower = body.lower()
    if "<html" not in lower and "<!doctype html" not in lower:
        fail(f"not an HTML page: {body[:300]!r}")
    print("ok: the demo page over https")

    # Without the test CA the same request must fail verification: the page above really
    # came over TLS with the generated certificate.
    try:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=TIMEOUT)
    except urllib.error.URLError as e:
        if not isinstance(e.reason, ssl.SSLCertVerificationError):
            fail(f"without the CA: expected a certificate verification error, got {e!r}")
        print(f"ok: without the CA: {e.reason.verify_message}")
    else:
        fail("without the CA the request succeeded")


async def run_server(cert_pem: str, key_pem: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_pem, key_pem)
    ctx.set_alpn_protocols(["http/1.1"])

    async def echo(ws):
        count = 0
        try:
            async for message in ws:
                await ws.send(message)
                count += 1
        finally:
            tls = ws.transport.get_extra_info("ssl_object")
            alpn = tls.selected_alpn_protocol() if tls else None
            extensions = ",".join(e.name for e in ws.protocol.extensions) or "none"
            print(f"conn path={ws.request.path} alpn={alpn} extensions={extensions}"
                  f" messages={count} close_code={ws.close_code}", flush=True)

    async with serve(echo, "127.0.0.1", 0, ssl=ctx, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"port {port}", flush=True)
        # Exit when the test closes our stdin (or dies), so no server outlives it.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.buffer.read)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "server":
        asyncio.run(run_server(args[1], args[2]))
    elif len(args) == 4 and args[0] == "client":
        asyncio.run(run_client(args[1], args[2], args[3]))
    elif len(args) == 3 and args[0] == "page":
        run_page(args[1], args[2])
    else:
        sys.exit(__doc__)
