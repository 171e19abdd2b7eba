#!/usr/bin/env python3
"""Print how many Autobahn cases kosoku selects for the given -i/-x globs.

Usage: case_count.py [-i GLOB]... [-x GLOB]...

The number comes from kosoku itself: a fuzzingserver with the same selection
is started on an ephemeral loopback port and asked /getCaseCount (the
Autobahn client protocol), so it is the length of the case list a run with
these globs must report, never a number read back from that run's report.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from kosoku import run_fuzzingserver
from websockets.asyncio.client import connect


async def case_count(include: list[str] | None, exclude: list[str] | None) -> int:
    async with run_fuzzingserver(include, exclude, host="127.0.0.1", port=0) as server:
        url = f"ws://{server.address}:{server.port}/getCaseCount"
        async with connect(url) as ws:
            return int(await asyncio.wait_for(ws.recv(), 30))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--include", action="append", metavar="GLOB")
    parser.add_argument("-x", "--exclude", action="append", metavar="GLOB")
    args = parser.parse_args()
    print(asyncio.run(case_count(args.include, args.exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
