"""Python `websockets` clients against `wsx serve --pubsub` (run by tests/pubsub.rs).

    python pubsub.py SCENARIO PORT [SERVER_PID]

Scenarios:
  fanout        100 subscribers of /news and 2 publishers (each also a subscriber, the sender
                included) sending 500 messages each, text and binary alternating; 10 subscribers
                of /other. Every /news client gets all 1,000 exactly once, each publisher's in
                order; /other gets none of them.
  no-echo-self  with --no-echo-self: a sender does not get its own messages, the others do.
  slow          a subscriber that never reads (a raw socket that upgrades and stops) next to
                10 readers: the readers get all 20,000 x 1 KiB publishes in order, the server's
                RSS stays bounded, and /stats counts skips.
Prints "ok SCENARIO ..." on success; any failure raises.
"""

import asyncio
import base64
import json
import os
import socket
import sys
import urllib.request

import websockets

PORT = int(sys.argv[2])
BASE = f"ws://127.0.0.1:{PORT}"


def stats():
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stats", timeout=10) as r:
        return json.loads(r.read())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def payload(publisher, i):
    text = f"{publisher}:{i}"
    return text if i % 2 == 0 else text.encode()


async def connect(path, **kw):
    return await websockets.connect(BASE + path, max_size=None, compression=None, **kw)


async def wait_subscribers(topic_count_at_least):
    # The server subscribes at the upgrade; make sure every connection is counted.
    for _ in range(200):
        if stats()["pubsub"]["subscriptions"] >= topic_count_at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"subscriptions never reached {topic_count_at_least}: {stats()}")


async def collect(ws, n, timeout=60):
    got = []
    async def run():
        while len(got) < n:
            got.append(await ws.recv())
    await asyncio.wait_for(run(), timeout)
    return got


def check_orders(got, publishers, per_publisher):
    seen = {p: 0 for p in publishers}
    for msg in got:
        text = msg.decode() if isinstance(msg, bytes) else msg
        p, i = text.split(":")
        i = int(i)
        assert p in seen, f"unexpected message {msg!r}"
        assert i == seen[p], f"publisher {p}: got {i}, expected {seen[p]}"
        # Text and binary arrive as they were sent.
        assert isinstance(msg, str) == (i % 2 == 0), f"type changed for {msg!r}"
        seen[p] += 1
    assert all(v == per_publisher for v in seen.values()), seen


async def fanout():
    subs = [await connect("/news") for _ in range(100)]
    others = [await connect("/other") for _ in range(10)]
    pubs = [await connect("/news") for _ in range(2)]
    await wait_subscribers(112)
    per = 500

    async def publish(ws, name):
        for i in range(per):
            await ws.send(payload(name, i))

    readers = [asyncio.create_task(collect(ws, 2 * per)) for ws in subs + pubs]
    await asyncio.gather(publish(pubs[0], "a"), publish(pubs[1], "b"))
    results = await asyncio.gather(*readers)
    for got in results:
        check_orders(got, ["a", "b"], per)
    # Exactly once: nothing more follows on /news but the sentinel; /other got only its own.
    await others[0].send("other:0")
    for ws in others:
        assert await asyncio.wait_for(ws.recv(), 10) == "other:0"
    await pubs[0].send("end:0")
    for ws in subs:
        assert await asyncio.wait_for(ws.recv(), 10) == "end:0"
    s = stats()["pubsub"]
    assert s["topics"] == 2 and s["skipped"] == 0, s
    for ws in subs + others + pubs:
        await ws.close()
    print(f"ok fanout: {len(results)} clients x {2 * per} messages, stats {s}")


async def no_echo_self():
    a = await connect("/room")
    b = await connect("/room")
    await wait_subscribers(2)
    await a.send("a:0")
    assert await asyncio.wait_for(b.recv(), 10) == "a:0"
    await b.send("b:0")
    # a's next message is b's: its own never came back.
    assert await asyncio.wait_for(a.recv(), 10) == "b:0"
    try:
        extra = await asyncio.wait_for(b.recv(), 0.5)
        raise AssertionError(f"b got its own message back: {extra!r}")
    except asyncio.TimeoutError:
        pass
    await a.close()
    await b.close()
    print("ok no-echo-self")


def stuck_subscriber(path):
    """Upgrades on a raw socket with a small receive buffer and never reads again."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", PORT))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


async def slow(pid):
    stuck = stuck_subscriber("/t")
    readers = [await connect("/t") for _ in range(10)]
    pub = await connect("/t")
    await wait_subscribers(12)
    rss_before = rss_kib(pid)
    n, burst = 20_000, 50
    blob = b"x" * 1020
    peak = rss_before
    counts = [0] * len(readers)

    async def read(k, ws):
        while counts[k] < n:
            msg = await ws.recv()
            assert msg[4:] == blob and int.from_bytes(msg[:4], "big") == counts[k], "order"
            counts[k] += 1

    tasks = [asyncio.create_task(read(k, ws)) for k, ws in enumerate(readers)]
    # The publisher's own echoes are read too, so that it is not a slow subscriber itself.
    echo_task = asyncio.create_task(collect(pub, n, timeout=300))
    for i in range(n):
        await pub.send(i.to_bytes(4, "big") + blob)
        if i % burst == burst - 1:
            # Paced so that the readers keep up; the stuck one falls behind at once.
            while min(counts) < i - burst:
                for t in tasks:
                    if t.done():
                        # Raises what failed it. A reader that returned has all n messages,
                        # which can happen in the last burst while another still lags: fine.
                        t.result()
                await asyncio.sleep(0.001)
            peak = max(peak, rss_kib(pid))
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    await echo_task
    grown = peak - rss_before
    s = stats()["pubsub"]
    assert s["skipped"] > 0, s
    # 20 MB were published; one stuck subscriber may pin its queue bound (256 KiB), its send
    # queue (128 KiB) and the socket buffers, not the stream.
    assert grown < 8 * 1024, f"server RSS grew {grown} KiB (from {rss_before} KiB)"
    stuck.close()
    for ws in readers + [pub]:
        await ws.close()
    print(f"ok slow: readers got {n} each, RSS grew {grown} KiB, stats {s}")


async def main():
    scenario = sys.argv[1]
    if scenario == "fanout":
        await fanout()
    elif scenario == "no-echo-self":
        await no_echo_self()
    elif scenario == "slow":
        await slow(int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown scenario {scenario}")


asyncio.run(main())
