"""Interop check for permessage-deflate (RFC 7692) with Python `websockets`.

Usage:
  interop_deflate.py client MODE ws://127.0.0.1:PORT/path
      Python as the client of a wsx echo server. Negotiates compression in
      MODE, checks what was agreed, sends messages (empty, 100 bytes, 64 KiB
      of JSON-like text twice, 1 MiB binary, multi-byte UTF-8, a burst, a
      fragmented message), asserts every echo is exact and that the server's
      frames were compressed (RSV1) exactly when its window allows it, then
      closes with 1000.
  interop_deflate.py server MODE PORT
      Python as a compressing echo server on 127.0.0.1:PORT for one
      connection. Prints "ready" once listening, then, when the connection
      ends, "stats compressed=N plain=M messages=K" counting the client's data
      frames with and without RSV1, and exits. A connection without
      permessage-deflate is closed with 4000.

MODE:
  default              compression="deflate" (websockets' own settings); as a client,
                       expects the wsx server's default answer: no context takeover
                       either way
  takeover             (client) the same offer, against a wsx server with context
                       takeover: expects neither no_context_takeover parameter
  no-context-takeover  both no_context_takeover parameters
  server-window-8      (client) server_max_window_bits=8, client_max_window_bits=9:
                       the server cannot compress with 8 bits, so it must not
  client-window-8      (server) client_max_window_bits=8: likewise for the client

Exits non-zero on any mismatch (run by tests/interop_deflate.rs).
"""

import asyncio
import json
import random
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

from interop_common import STATS, TIMEOUT, check_echo, count_received_frames, fail, roundtrip

count_received_frames()


def json_like(n: int) -> str:
    """About n bytes of JSON records, the traffic deflate is meant for."""
    rng = random.Random(7692)
    records = []
    size = 0
    i = 0
    while size < n:
        record = json.dumps(
            {
                "id": i,
                "user": f"user-{rng.randrange(1000)}",
                "text": "h\u00e9llo w\u00f6rld \u20ac \U0001f600",
                "tags": ["a", "b", rng.choice(["x", "y", "z"])],
                "score": rng.random(),
            },
            ensure_ascii=False,
        )
        records.append(record)
        size += len(record.encode()) + 1
        i += 1
    return "[" + ",".join(records) + "]"


def messages() -> list:
    rng = random.Random(1)
    binary = bytearray()
    while len(binary) < (1 << 20):
        # Runs of repeated bytes between random stretches: compressible, not trivially.
        binary += rng.randbytes(rng.randrange(1, 200))
        binary += bytes([rng.randrange(256)]) * rng.randrange(1, 400)
    utf8 = "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x800),
                                   rng.randrange(0x800, 0xD800), rng.randrange(0x10000, 0x110000)]))
                   for _ in range(5000))
    text64 = json_like(64 << 10)
    return [
        "",
        b"",
        "x" * 100,
        rng.randbytes(100),
        text64,
        text64,  # again: with context takeover it compresses against the first copy
        bytes(binary[: 1 << 20]),
        utf8,
        rng.randbytes(1 << 16),  # incompressible
    ]


def client_extensions(mode: str):
    if mode in ("default", "takeover"):
        return {"compression": "deflate"}
    if mode == "no-context-takeover":
        factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            compress_settings={"memLevel": 5},
        )
    elif mode == "server-window-8":
        factory = ClientPerMessageDeflateFactory(server_max_window_bits=8, client_max_window_bits=9)
    else:
        sys.exit(f"unknown client mode {mode!r}\n\n{__doc__}")
    return {"compression": None, "extensions": [factory]}


def check_client_extension(mode: str, ws) -> None:
    header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    print(f"response Sec-WebSocket-Extensions: {header}")
    if "permessage-deflate" not in header:
        fail(f"the server did not accept permessage-deflate: {header!r}")
    extensions = ws.protocol.extensions
    if len(extensions) != 1 or extensions[0].name != "permessage-deflate":
        fail(f"negotiated extensions: {extensions!r}")
    ext = extensions[0]
    print(f"negotiated: {ext!r}")
    # (server_no_context_takeover, client_no_context_takeover, server bits, client bits)
    got = (ext.remote_no_context_takeover, ext.local_no_context_takeover,
           ext.remote_max_window_bits, ext.local_max_window_bits)
    expected = {
        "default": (True, True, 15, 15),
        "takeover": (False, False, 15, 15),
        "no-context-takeover": (True, True, 15, 15),
        "server-window-8": (True, True, 8, 9),
    }[mode]
    if got != expected:
        fail(f"negotiated {got}, expected {expected}")
    if mode in ("default", "no-context-takeover") and not (
        "server_no_context_takeover" in header and "client_no_context_takeover" in header
    ):
        fail(f"the response does not name both no_context_takeover parameters: {header!r}")


async def run_client(mode: str, url: str) -> None:
    async with connect(url, max_size=None, open_timeout=TIMEOUT,
                       **client_extensions(mode)) as ws:
        check_client_extension(mode, ws)
        msgs = messages()
        for m in msgs:
            await roundtrip(ws, m)

        # A burst: everything sent before any echo is read; order must hold.
        burst = [f"burst {i} " * (i * 37 % 50) if i % 2 else bytes([i]) * (i * 101)
                 for i in range(40)]
        for m in burst:
            await asyncio.wait_for(ws.send(m), TIMEOUT)
        for m in burst:
            check_echo(await asyncio.wait_for(ws.recv(), TIMEOUT), m)
        print(f"ok: a burst of {len(burst)} messages came back in order")

        # websockets compresses a fragmented message as one stream: RSV1 on the first frame.
        parts = ["h\u00e9llo, ", "w\u00f6rld ", "\U0001f600" * 1000, "", "end"]
        await roundtrip(ws, parts, expected="".join(parts))

        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, TIMEOUT)
        print("ok: ping answered")

        data_frames = len(msgs) + len(burst) + 1
        received = STATS["compressed"] + STATS["plain"]
        if received != data_frames:
            fail(f"counted {received} data frames from the server, expected {data_frames}")
        if mode == "server-window-8":
            # zlib cannot compress with an 8-bit window: the server sends as is (RFC 7692 §7.1.2.1).
            if STATS["compressed"]:
                fail(f"{STATS['compressed']} compressed frames despite server_max_window_bits=8")
        elif STATS["plain"]:
            fail(f"{STATS['plain']} of {data_frames} echoes from the server were not compressed")
        print(f"ok: frames from the server: {STATS}")

        await asyncio.wait_for(ws.close(1000, "done"), TIMEOUT)
        if ws.close_code != 1000:
            fail(f"server closed with {ws.close_code}, expected 1000")
        print("ok: closed with 1000")


def server_options(mode: str):
    if mode == "default":
        return {"compression": "deflate"}
    if mode == "no-context-takeover":
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            compress_settings={"memLevel": 5},
        )
    elif mode == "client-window-8":
        factory = ServerPerMessageDeflateFactory(client_max_window_bits=8)
    else:
        sys.exit(f"unknown server mode {mode!r}\n\n{__doc__}")
    return {"compression": None, "extensions": [factory]}


async def run_server(mode: str, port: int) -> None:
    done = asyncio.Event()

    async def echo(ws):
        extensions = [e for e in ws.protocol.extensions if e.name == "permessage-deflate"]
        count = 0
        try:
            if not extensions:
                await ws.close(4000, "permessage-deflate was not negotiated")
                return
            async for message in ws:
                await ws.send(message)
                count += 1
        finally:
            print(f"stats compressed={STATS['compressed']} plain={STATS['plain']}"
                  f" messages={count} extension={extensions!r}", flush=True)
            done.set()

    async with serve(echo, "127.0.0.1", port, max_size=None, **server_options(mode)):
        print("ready", flush=True)
        await done.wait()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    role, mode, where = sys.argv[1:]
    if role == "client":
        asyncio.run(run_client(mode, where))
    elif role == "server":
        asyncio.run(run_server(mode, int(where)))
    else:
        sys.exit(__doc__)
