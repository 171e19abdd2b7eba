"""Helpers shared by the interop scripts (interop_python.py, interop_deflate.py,
interop_tls.py): echo checks, failure messages and counting compressed frames.

Not run by itself: the scripts import it from their own directory, which Python
puts first on sys.path when it runs a script.
"""

import asyncio

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode

TIMEOUT = 60  # seconds for any single step; the test never waits on luck

# Data frames received, by whether RSV1 was set, once count_received_frames()
# has been called.
STATS = {"compressed": 0, "plain": 0}


def count_received_frames() -> None:
    """Counts data frames received into STATS: where websockets inflates them,
    before the extension clears the bit."""
    decode = PerMessageDeflate.decode

    def counting_decode(self, frame, *, max_size=None):
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            STATS["compressed" if frame.rsv1 else "plain"] += 1
        return decode(self, frame, max_size=max_size)

    PerMessageDeflate.decode = counting_decode


def fail(message: str) -> None:
    raise AssertionError(message)


def describe(m) -> str:
    kind = "text" if isinstance(m, str) else "binary"
    size = len(m.encode()) if isinstance(m, str) else len(m)
    return f"{kind} message of {size} bytes"


def check_echo(echo, expected) -> None:
    if type(echo) is not type(expected) or echo != expected:
        first = next((i for i, (a, b) in enumerate(zip(echo, expected)) if a != b), None)
        fail(f"echo mismatch for {describe(expected)}: got {describe(echo)}"
             f" (first difference at index {first})")


async def roundtrip(ws, message, expected=None, timeout=TIMEOUT) -> None:
    """Sends `message` and checks the echo is `expected` (by default `message`)."""
    expected = message if expected is None else expected
    await asyncio.wait_for(ws.send(message), timeout)
    echo = await asyncio.wait_for(ws.recv(), timeout)
    check_echo(echo, expected)
    print(f"ok: {describe(expected)}")
