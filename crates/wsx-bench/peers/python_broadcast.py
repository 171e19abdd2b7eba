#!/usr/bin/env python3
"""Pub/sub peer for scripts/bench.sh: Python websockets' asyncio server with broadcast().

Every message a connection sends goes to every open connection, the sender included
(uWebSockets' broadcast_test semantics), with websockets.asyncio.server.broadcast, as the
websockets documentation writes a broadcast. websockets' defaults otherwise (the benchmark
client does not offer permessage-deflate, so nothing is compressed).

    python_broadcast.py [--listen HOST:PORT]     (default 127.0.0.1:9001)
"""

import argparse
import asyncio
import sys

import websockets
from websockets.asyncio.server import broadcast, serve


async def main(listen):
    host, _, port = listen.rpartition(":")
    server = None

    async def handler(connection):
        async for message in connection:
            broadcast(server.connections, message)

    server = await serve(handler, host, int(port))
    print(f"python_broadcast: websockets {websockets.__version__} on Python "
          f"{sys.version.split()[0]} listening on ws://{listen}/", file=sys.stderr)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9001", metavar="HOST:PORT")
    try:
        asyncio.run(main(parser.parse_args().listen))
    except KeyboardInterrupt:
        pass
