"""Interop check: Python `websockets` as the client of `wsx serve`'s echo.

Usage: interop_python.py ws://127.0.0.1:PORT/path

Sends text and binary messages at the payload-length encoding boundaries of
RFC 6455 §5.2 (0, 125, 126, 65535, 65536 bytes, and 1 MiB), text with
multi-byte UTF-8, a fragmented text message and a ping; asserts every echo is
exact; then closes with 1000 and checks the server echoed 1000. Exits
non-zero on any mismatch (run by tests/interop.rs).
"""

import asyncio
import random
import sys

from websockets.asyncio.client import connect

from interop_common import roundtrip

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]
TIMEOUT = 30  # seconds for any single step; the test never waits on luck

# 1-, 2-, 3- and 4-byte UTF-8 sequences: 10 bytes per repetition.
UTF8_UNIT = "a\u00e9\u20ac\U0001f600"


def text_of_size(n: int) -> str:
    """A string whose UTF-8 encoding is exactly n bytes, mostly multi-byte."""
    reps, rest = divmod(n, len(UTF8_UNIT.encode()))
    s = UTF8_UNIT * reps + "z" * rest
    assert len(s.encode()) == n
    return s


async def main(url: str) -> None:
    rng = random.Random(6455)
    async with connect(url, max_size=None, compression=None, open_timeout=TIMEOUT) as ws:
        for n in SIZES:
            await roundtrip(ws, text_of_size(n), timeout=TIMEOUT)
            await roundtrip(ws, rng.randbytes(n), timeout=TIMEOUT)

        # A fragmented text message comes back whole.
        parts = ["h\u00e9llo, ", "w\u00f6rld ", "\U0001f600"]
        await roundtrip(ws, parts, expected="".join(parts), timeout=TIMEOUT)

        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, TIMEOUT)
        print("ok: ping answered")

        await asyncio.wait_for(ws.close(1000, "done"), TIMEOUT)
        # websockets' close_code is the code the peer sent back.
        if ws.close_code != 1000:
            raise AssertionError(f"server closed with {ws.close_code}, expected 1000")
        if ws.protocol.close_rcvd_then_sent is not False:
            raise AssertionError("close handshake did not complete as initiated by the client")
        print("ok: closed with 1000")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
