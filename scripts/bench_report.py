#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench.sh into docs/BENCHMARKS.md and docs/benchmarks.svg.

Standard library only. Two commands:

    bench_report.py machine [--setting KEY=VALUE ...]   one JSON line describing this machine
    bench_report.py report RESULTS.jsonl [--md PATH] [--svg PATH]

Lines in the results file (one JSON object each, told apart by "kind"):

    machine  written once by `machine` at the start of a run
    run      {"round", "server", "connections", "size", "rc", "server_cpu_secs", "window_secs",
              "bench": <wsx bench --json> | null}
    rss      {"round", "server", "connections", "ok", "rss_before_kib", "rss_after_kib"}
    instr    {"server", "connections", "size", "runs": [{"messages", "instructions"}, ...]}:
             the server under callgrind for a short and a long run of the same point
    pubsub_run    {"round", "server", "connections", "size", "rc", "server_cpu_secs",
                  "window_secs", "hwm_before_kib", "hwm_after_kib", "syscalls": {name: count} |
                  null, "bench": <wsx bench --pubsub --json> | null}
    pubsub_rss    like rss: idle subscribers (wsx-pubsub) and plain idle connections
                  (wsx-default) to one path
    pubsub_instr  like instr, "messages" being deliveries
    tls_run       like run: a wss:// echo run of the TLS stage
    tls_handshakes  {"round", "server", "tls": "full" | "resumed", "connections", "rc",
                  "server_cpu_secs", "window_secs", "bench": <wsx bench --handshakes --json> |
                  null}
    tls_rss       like rss: idle wss:// connections to a TLS server, and idle ws:// ones to its
                  plain counterpart
"""

import argparse
import datetime
import html
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

# Column order everywhere: wsx first, the floor next, then the peers.
SERVER_ORDER = ["wsx", "wsx-default", "wsx-store", "wsx-hyper", "wsx-axum", "raw", "tungstenite",
                "axum", "fastwebsockets", "tokio-websockets"]
PEERS = ["raw", "tungstenite", "axum", "fastwebsockets", "tokio-websockets"]
# The pub/sub stage: wsx first, then the peers; the one-send-per-message pattern is the baseline
# of the 20× target.
PUBSUB_ORDER = ["wsx-pubsub", "tungstenite-batch", "tungstenite-broadcast", "node-ws",
                "python-websockets"]
PUBSUB_PEERS = PUBSUB_ORDER[1:]
ONE_SEND = "tungstenite-broadcast"
# wsx inside hyper and axum, each compared with `wsx serve` at its defaults (the native path).
INTEGRATIONS = ["wsx-hyper", "wsx-axum"]
LABEL = {
    "wsx": "wsx",
    "wsx-default": "wsx (defaults)",
    "wsx-store": "wsx (store and forward)",
    "wsx-hyper": "wsx in hyper",
    "wsx-axum": "wsx in axum",
    "raw": "raw TCP",
    "tungstenite": "tokio-tungstenite",
    "axum": "axum (ws)",
    "fastwebsockets": "fastwebsockets",
    "tokio-websockets": "tokio-websockets",
    "wsx-pubsub": "wsx serve --pubsub",
    "tungstenite-batch": "tokio-tungstenite + broadcast, batching writer",
    "tungstenite-broadcast": "tokio-tungstenite + broadcast, send per message",
    "node-ws": "Node ws",
    "python-websockets": "Python websockets",
    "wsx-tls": "wsx serve --tls-*",
    "tungstenite-tls": "tokio-tungstenite + tokio-rustls",
}
# The TLS stage: wsx first; each TLS server's plain ws:// counterpart for idle memory.
TLS_ORDER = ["wsx-tls", "tungstenite-tls"]
TLS_PLAIN = {"wsx-tls": "wsx-default", "tungstenite-tls": "tungstenite"}
COLOR = {
    "wsx": "#d62728",
    "wsx-default": "#ff7f0e",
    "wsx-store": "#8c564b",
    "wsx-hyper": "#e377c2",
    "wsx-axum": "#bcbd22",
    "raw": "#7f7f7f",
    "tungstenite": "#1f77b4",
    "axum": "#17becf",
    "fastwebsockets": "#2ca02c",
    "tokio-websockets": "#9467bd",
    "wsx-pubsub": "#d62728",
    "tungstenite-batch": "#1f77b4",
    "tungstenite-broadcast": "#aec7e8",
    "node-ws": "#2ca02c",
    "python-websockets": "#ff7f0e",
}
# Above this share of all CPUs busy before a run, the report says the machine was not quiet.
BUSY = 10
# Below this share of its core the server was not the bottleneck of a run.
SATURATED = 0.9
# Crates whose versions the report names, read from Cargo.lock.
LOCKED = ["tokio", "tokio-tungstenite", "tungstenite", "fastwebsockets", "hyper", "axum",
          "tokio-websockets"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("machine", help="print one JSON line describing this machine")
    m.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a benchmark setting to record (repeatable)")
    r = sub.add_parser("report", help="write the Markdown report and the SVG chart")
    r.add_argument("results", help="JSON lines written by scripts/bench.sh")
    r.add_argument("--md", default="docs/BENCHMARKS.md")
    r.add_argument("--svg", default="docs/benchmarks.svg")
    args = parser.parse_args()
    if args.command == "machine":
        settings = dict(s.split("=", 1) for s in args.setting)
        info = machine(settings)
        if (info["busy_percent"] or 0) > BUSY:
            print(f"warning: the CPUs were {info['busy_percent']}% busy before the run: something "
                  "else is running, and the results will be noisy", file=sys.stderr)
        print(json.dumps(info))
    else:
        data = load(args.results)
        os.makedirs(os.path.dirname(args.md) or ".", exist_ok=True)
        os.makedirs(os.path.dirname(args.svg) or ".", exist_ok=True)
        svg_rel = os.path.relpath(args.svg, os.path.dirname(args.md) or ".")
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(markdown(data, args.results, svg_rel))
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(svg(data))
        print(f"wrote {args.md} and {args.svg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# machine


def machine(settings):
    """What the report needs to say about where it ran."""
    return {
        "kind": "machine",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": command(["nproc"]) or str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": os.uname().release,
        "rustc": command(["rustc", "--version"]),
        "git": git_revision(),
        "crates": locked_versions("Cargo.lock"),
        "loadavg": read("/proc/loadavg").split()[:3],
        "busy_percent": busy_percent(),
        "settings": settings,
    }


def busy_percent(seconds=1.0):
    """How busy all CPUs were over the next second, from /proc/stat: a load average lags."""
    def sample():
        fields = read("/proc/stat").splitlines()[0].split()[1:]
        ticks = [int(f) for f in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (IndexError, ValueError):
        return None
    total = total1 - total0
    return round(100 * (total - (idle1 - idle0)) / total, 1) if total > 0 else None


def command(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model():
    for line in read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return "unknown"


def git_revision():
    rev = command(["git", "rev-parse", "--short", "HEAD"])
    if not rev:
        return "unknown"
    dirty = command(["git", "status", "--porcelain", "--untracked-files=no"])
    return rev + (" (with uncommitted changes)" if dirty else "")


def locked_versions(path):
    versions = {}
    for block in read(path).split("[[package]]"):
        name = re.search(r'^name = "([^"]+)"', block, re.M)
        version = re.search(r'^version = "([^"]+)"', block, re.M)
        if name and version and name.group(1) in LOCKED:
            versions.setdefault(name.group(1), []).append(version.group(1))
    # Two versions of one crate (axum pins an older tokio-tungstenite than the peer's) are both
    # named.
    return {name: " and ".join(vs) for name, vs in versions.items()}


# ---------------------------------------------------------------------------------------------
# loading and summarising


class Data:
    """The parsed results: samples per (server, point), plus what went wrong."""

    def __init__(self):
        self.machine = {}
        self.points = []  # (connections, size) in first-seen order
        self.servers = []
        self.rounds = set()
        self.msgs = defaultdict(list)  # (server, point) -> [msgs/s]
        self.msgs_by_round = defaultdict(dict)  # (server, point) -> {round: msgs/s}
        self.p50 = defaultdict(list)
        self.p99 = defaultdict(list)
        self.util = defaultdict(list)  # (server, point) -> [server CPU / wall clock]
        self.cost = defaultdict(list)  # (server, point) -> [µs of server CPU per message]
        self.failures = []  # human-readable lines
        self.rss = defaultdict(list)  # server -> [bytes per connection]
        self.rss_raw = defaultdict(list)  # server -> [(before KiB, after KiB, connections)]
        self.instr = {}  # (server, point) -> user-space instructions per message
        # The pub/sub stage, keyed like the above.
        self.ps_points = []
        self.ps_servers = []
        self.ps_rate = defaultdict(list)  # deliveries/s
        self.ps_rate_by_round = defaultdict(dict)
        self.ps_rounds_per_sec = defaultdict(list)
        self.ps_latency = defaultdict(lambda: defaultdict(list))  # -> {"p50": [µs], ...}
        self.ps_util = defaultdict(list)  # server CPU / wall clock
        self.ps_gen = defaultdict(list)  # generator CPU share over the measurement
        self.ps_cost = defaultdict(list)  # ns of server CPU per delivery
        self.ps_peak = defaultdict(list)  # bytes of VmHWM growth per connection
        self.ps_per_write = defaultdict(list)  # deliveries per write system call
        self.ps_per_read = defaultdict(list)  # publishes per read system call
        self.ps_rss = defaultdict(list)  # server -> bytes per idle connection
        self.ps_rss_raw = defaultdict(list)
        self.ps_instr = {}
        # The TLS stage.
        self.tls_points = []
        self.tls_servers = []
        self.tls_msgs = defaultdict(list)  # (server, point) -> [msgs/s]
        self.tls_msgs_by_round = defaultdict(dict)
        self.tls_util = defaultdict(list)
        self.tls_cost = defaultdict(list)  # µs of server CPU per message
        self.tls_hs = defaultdict(list)  # (server, "full" | "resumed") -> [handshakes/s]
        self.tls_hs_by_round = defaultdict(dict)
        self.tls_hs_latency = defaultdict(lambda: defaultdict(list))  # -> {"p50": [µs], ...}
        self.tls_hs_util = defaultdict(list)
        self.tls_hs_cost = defaultdict(list)  # µs of server CPU per handshake
        self.tls_hs_conns = set()
        self.tls_rss = defaultdict(list)  # server -> [bytes per idle connection]
        self.tls_rss_raw = defaultdict(list)


def load(path):
    data = Data()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                data.failures.append(f"line {number}: not JSON ({e})")
                continue
            kind = rec.get("kind")
            if kind == "machine":
                data.machine = rec
            elif kind == "run":
                add_run(data, rec)
            elif kind == "rss":
                add_rss(data, rec)
            elif kind == "instr":
                add_instr(data, rec)
            elif kind == "pubsub_run":
                add_pubsub_run(data, rec)
            elif kind == "pubsub_rss":
                add_pubsub_rss(data, rec)
            elif kind == "pubsub_instr":
                add_instr(data, rec, data.ps_instr)
            elif kind == "tls_run":
                add_tls_run(data, rec)
            elif kind == "tls_handshakes":
                add_tls_handshakes(data, rec)
            elif kind == "tls_rss":
                add_tls_rss(data, rec)
    return data


def add_instr(data, rec, into=None):
    """Instructions per message from two runs: the difference cancels start-up, handshakes and
    shutdown, which both runs share."""
    into = data.instr if into is None else into
    runs = [r for r in rec.get("runs", []) if r.get("messages") and r.get("instructions")]
    server, point = rec.get("server"), (rec.get("connections"), rec.get("size"))
    if len(runs) < 2:
        data.failures.append(f"{server}: instruction count at {point} incomplete")
        return
    runs.sort(key=lambda r: r["messages"])
    short, long = runs[0], runs[-1]
    extra = long["messages"] - short["messages"]
    if extra <= 0:
        data.failures.append(f"{server}: instruction runs at {point} echoed the same count")
        return
    into[(server, point)] = (long["instructions"] - short["instructions"]) / extra


def note_in(servers, server, order):
    """Adds `server` to the list `servers`, kept in `order` (others last, by name)."""
    if server not in servers:
        servers.append(server)
    servers.sort(key=lambda s: (order.index(s) if s in order else 99, s))


def note_server(data, server):
    note_in(data.servers, server, SERVER_ORDER)


def echo_run(data, rec, points, scheme=""):
    """The server, point and `wsx bench` result of an echo run record, its point noted in
    `points` and its round in the data; None, with the failure noted, when it has no result.
    A run with connection errors is kept, but flagged."""
    server, point = rec["server"], (int(rec["connections"]), int(rec["size"]))
    if point not in points:
        points.append(point)
    data.rounds.add(rec.get("round"))
    bench = rec.get("bench")
    where = f"round {rec.get('round')}, {scheme}{LABEL.get(server, server)}, {point_label(point)}"
    if not isinstance(bench, dict) or "msgs_per_sec" not in bench:
        data.failures.append(f"{where}: no result (exit status {rec.get('rc')})")
        return None
    if bench.get("errors") or rec.get("rc"):
        data.failures.append(
            f"{where}: {bench.get('errors', 0)} connection errors (exit status {rec.get('rc')})"
        )
    return server, point, bench


def add_run(data, rec):
    note_server(data, rec["server"])
    run = echo_run(data, rec, data.points)
    if run is None:
        return
    server, point, bench = run
    data.msgs[server, point].append(float(bench["msgs_per_sec"]))
    data.msgs_by_round[server, point][rec.get("round")] = float(bench["msgs_per_sec"])
    latency = bench.get("latency_us", {})
    if "p50" in latency:
        data.p50[server, point].append(float(latency["p50"]))
    if "p99" in latency:
        data.p99[server, point].append(float(latency["p99"]))
    cpu, window = rec.get("server_cpu_secs"), rec.get("window_secs")
    if cpu is not None and window and float(bench["msgs_per_sec"]) > 0:
        util = float(cpu) / float(window)
        data.util[server, point].append(util)
        # The window spans warm-up and measurement at the same rate, so CPU per message is the
        # utilisation divided by the rate.
        data.cost[server, point].append(util / float(bench["msgs_per_sec"]) * 1e6)


def add_rss(data, rec):
    server = rec["server"]
    note_server(data, server)
    where = f"round {rec.get('round')}, {LABEL.get(server, server)}, idle connections"
    n = int(rec.get("connections") or 0)
    if not rec.get("ok") or n <= 0:
        data.failures.append(f"{where}: {rec.get('error', 'failed')}")
        return
    before, after = int(rec["rss_before_kib"]), int(rec["rss_after_kib"])
    data.rss[server].append((after - before) * 1024 / n)
    data.rss_raw[server].append((before, after, n))


WRITES = ("write", "writev", "sendto", "sendmsg")
READS = ("read", "readv", "recvfrom", "recvmsg")


def add_pubsub_run(data, rec):
    server, point = rec["server"], (int(rec["connections"]), int(rec["size"]))
    if server not in data.ps_servers:
        data.ps_servers.append(server)
        data.ps_servers.sort(key=lambda x: (PUBSUB_ORDER.index(x) if x in PUBSUB_ORDER else 99, x))
    if point not in data.ps_points:
        data.ps_points.append(point)
    data.rounds.add(rec.get("round"))
    bench = rec.get("bench")
    where = f"round {rec.get('round')}, pub/sub, {LABEL.get(server, server)}, {point_label(point)}"
    if not isinstance(bench, dict) or "deliveries_per_sec" not in bench:
        data.failures.append(f"{where}: no result (exit status {rec.get('rc')})")
        return
    if bench.get("errors") or rec.get("rc"):
        data.failures.append(
            f"{where}: {bench.get('errors', 0)} connection errors (exit status {rec.get('rc')})"
        )
    rate = float(bench["deliveries_per_sec"])
    if rate <= 0:
        data.failures.append(f"{where}: no round completed")
        return
    key = (server, point)
    data.ps_rate[key].append(rate)
    data.ps_rate_by_round[key][rec.get("round")] = rate
    data.ps_rounds_per_sec[key].append(float(bench.get("rounds_per_sec", 0)))
    for q, v in bench.get("latency_us", {}).items():
        data.ps_latency[key][q].append(float(v))
    if bench.get("generator_cpu") is not None:
        data.ps_gen[key].append(float(bench["generator_cpu"]))
    cpu, window = rec.get("server_cpu_secs"), rec.get("window_secs")
    if cpu is not None and window:
        util = float(cpu) / float(window)
        data.ps_util[key].append(util)
        data.ps_cost[key].append(util / rate * 1e9)
    hwm0, hwm1 = rec.get("hwm_before_kib"), rec.get("hwm_after_kib")
    if hwm0 and hwm1:
        data.ps_peak[key].append((int(hwm1) - int(hwm0)) * 1024 / point[0])
    calls = rec.get("syscalls")
    if isinstance(calls, dict) and window:
        writes = sum(int(calls.get(c, 0)) for c in WRITES) / float(window)
        reads = sum(int(calls.get(c, 0)) for c in READS) / float(window)
        if writes > 0:
            data.ps_per_write[key].append(rate / writes)
        if reads > 0:
            data.ps_per_read[key].append(rate / point[0] / reads)


def add_pubsub_rss(data, rec):
    server = rec["server"]
    n = int(rec.get("connections") or 0)
    where = f"round {rec.get('round')}, {LABEL.get(server, server)}, idle subscribers"
    if not rec.get("ok") or n <= 0:
        data.failures.append(f"{where}: {rec.get('error', 'failed')}")
        return
    before, after = int(rec["rss_before_kib"]), int(rec["rss_after_kib"])
    data.ps_rss[server].append((after - before) * 1024 / n)
    data.ps_rss_raw[server].append((before, after, n))


def note_tls_server(data, server):
    note_in(data.tls_servers, server, TLS_ORDER)


def add_tls_run(data, rec):
    note_tls_server(data, rec["server"])
    run = echo_run(data, rec, data.tls_points, "wss://, ")
    if run is None:
        return
    server, point, bench = run
    rate = float(bench["msgs_per_sec"])
    data.tls_msgs[server, point].append(rate)
    data.tls_msgs_by_round[server, point][rec.get("round")] = rate
    cpu, window = rec.get("server_cpu_secs"), rec.get("window_secs")
    if cpu is not None and window and rate > 0:
        util = float(cpu) / float(window)
        data.tls_util[server, point].append(util)
        data.tls_cost[server, point].append(util / rate * 1e6)


def add_tls_handshakes(data, rec):
    server = rec["server"]
    note_tls_server(data, server)
    data.rounds.add(rec.get("round"))
    data.tls_hs_conns.add(rec.get("connections"))
    bench = rec.get("bench")
    mode = rec.get("tls", "resumed")
    where = f"round {rec.get('round')}, wss:// handshakes ({mode}), {LABEL.get(server, server)}"
    server = (server, mode)
    if not isinstance(bench, dict) or "handshakes_per_sec" not in bench:
        data.failures.append(f"{where}: no result (exit status {rec.get('rc')})")
        return
    if bench.get("errors") or rec.get("rc"):
        data.failures.append(
            f"{where}: {bench.get('errors', 0)} failed handshakes (exit status {rec.get('rc')})"
        )
    rate = float(bench["handshakes_per_sec"])
    data.tls_hs[server].append(rate)
    data.tls_hs_by_round[server][rec.get("round")] = rate
    for q, v in bench.get("latency_us", {}).items():
        data.tls_hs_latency[server][q].append(float(v))
    cpu, window = rec.get("server_cpu_secs"), rec.get("window_secs")
    if cpu is not None and window and rate > 0:
        util = float(cpu) / float(window)
        data.tls_hs_util[server].append(util)
        data.tls_hs_cost[server].append(util / rate * 1e6)


def add_tls_rss(data, rec):
    server = rec["server"]
    n = int(rec.get("connections") or 0)
    where = f"round {rec.get('round')}, {LABEL.get(server, server)}, idle connections (TLS stage)"
    if not rec.get("ok") or n <= 0:
        data.failures.append(f"{where}: {rec.get('error', 'failed')}")
        return
    before, after = int(rec["rss_before_kib"]), int(rec["rss_after_kib"])
    data.tls_rss[server].append((after - before) * 1024 / n)
    data.tls_rss_raw[server].append((before, after, n))


def median(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def point_label(point):
    conns, size = point
    return f"{conns} × {size_label(size)}"


def size_label(size):
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def si(x):
    """A short human number: 1234 -> 1.23k."""
    if x is None:
        return "—"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def grouped(x):
    return "—" if x is None else f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown(data, results_path, svg_rel):
    m = data.machine
    s = m.get("settings", {})
    rounds = len(data.rounds)
    duration = s.get("duration", "?")
    out = []
    w = out.append
    w("# Benchmarks\n")
    w(f"Generated by `scripts/bench.sh` on {m.get('date', 'an unknown date')} from "
      f"`{results_path}`: {rounds} round(s) of {duration} s per run after {s.get('warmup', '?')} s "
      "of warm-up. Re-run the script rather than editing this file.\n")
    if is_smoke(rounds, duration):
        w("> **Smoke run.** Fewer than 3 rounds or runs shorter than 5 s: these numbers only show "
          "that the pipeline works. Do not quote them.\n")
    if (m.get("busy_percent") or 0) > BUSY:
        w(f"> The CPUs were {m['busy_percent']}% busy in the second before the run: something "
          "else was running, so the figures are noisier than they should be.\n")
    w(f"![Throughput of each server at each point, and memory per idle connection]({svg_rel})\n")

    w("## Machine\n")
    crates = m.get("crates", {})
    w("| | |\n|---|---|")
    w(f"| `nproc` | {m.get('nproc', '?')} |")
    w(f"| CPU | {m.get('cpu', '?')} |")
    w(f"| kernel | {m.get('kernel', '?')} |")
    w(f"| rustc | {m.get('rustc', '?')} |")
    w(f"| wsx | git {m.get('git', '?')} |")
    peers = ", ".join(
        f"{name} {crates[name]}" for name in LOCKED if name in crates and name != "tokio"
    )
    w(f"| peers | {peers or '?'} |")
    w(f"| runtime | tokio {crates.get('tokio', '?')}, current-thread |")
    w(f"| CPU busy before the run | {m.get('busy_percent', '?')}% "
      f"(load average {' '.join(m.get('loadavg', [])) or '?'}) |")
    w("")

    if data.points or data.rss or data.instr:
        echo_sections(data, w, s, rounds)
    if data.ps_points or data.ps_rss or data.ps_instr:
        pubsub_sections(data, w, s, rounds)
    if data.tls_points or data.tls_hs or data.tls_rss:
        tls_sections(data, w, s, rounds)


    if data.failures:
        w("## Problems during the run\n")
        for line in data.failures:
            w(f"- {line}")
        w("")
    w("## Reproduce\n")
    w("```sh\nscripts/bench.sh                                          # full run, about 35 minutes\n"
      "WSX_BENCH_ROUNDS=1 WSX_BENCH_DURATION=1 scripts/bench.sh  # smoke run, about 2 minutes\n"
      "WSX_BENCH_ECHO=0 WSX_BENCH_TLS=0 scripts/bench.sh         # the pub/sub stage alone\n"
      "WSX_BENCH_ECHO=0 WSX_BENCH_PUBSUB=0 scripts/bench.sh      # the TLS stage alone\n"
      "```\n")
    w("Run it on a quiet machine: nothing else compiling, no other benchmark. The raw JSON lines "
      "stay under `target/wsx-bench/`; `python3 scripts/bench_report.py report FILE` rebuilds "
      "this page and the chart from them.")
    return "\n".join(out) + "\n"


def echo_sections(data, w, s, rounds):
    """The echo stage: method, throughput, CPU, ratios, latency, memory, instructions, targets."""
    w("## Method\n")
    server_cpu, client_cpu = s.get("server_cpu", "0"), s.get("client_cpu", "1")
    kind = "binary" if s.get("binary") == "1" else "text"
    w(f"- Every server runs alone, on one thread (tokio current-thread), pinned to CPU {server_cpu} "
      f"with `taskset`; the load generator, `wsx bench` (one thread), is pinned to CPU "
      f"{client_cpu}. Everything is on 127.0.0.1.")
    w("- **wsx** is the real `wsx serve --threads 1 --no-deflate --ping-interval 0`: keepalive "
      "off, like the peers, which ping nobody. **wsx (defaults)** is `wsx serve --threads 1` with "
      "every default: keepalive on (a ping after 20 s of silence), permessage-deflate offered "
      "(the generator does not accept it). **wsx (store and forward)** adds "
      "`--stream-threshold 1073741824`: each message is received whole before it is echoed, as "
      "the peers do, where plain wsx streams a large message back as it arrives (cut-through). "
      "The 1 MiB row compares like with like only in that column. The peers are "
      "`wsx-bench-server --impl NAME` (crates/wsx-bench), each set up as its own README and "
      "benchmark examples recommend, without compression:")
    w("  - **raw TCP**: the floor. A client does not accept a byte-for-byte echo, so it answers "
      "the upgrade and copies each frame back with its mask removed, unmasking in place with "
      "256 KiB reads: no UTF-8 check, no control frames, no limits. It streams (each read goes "
      "back out at once) and never waits on a write to read on: what the socket does not take "
      "is kept, up to 4 MiB.")
    w("  - **tokio-tungstenite**: `accept_async_with_config` with the default `WebSocketConfig` "
      "(128 KiB read and write buffers).")
    w("  - **fastwebsockets**: hyper 1 upgrade, `FragmentCollector`, task `unconstrained`, as in "
      "its `echo_server` example.")
    w("  - **tokio-websockets**: `ServerBuilder` with `frame_size(usize::MAX)`, task "
      "`unconstrained`, as in its `echo_server` example.")
    w("  - **axum (ws)**: axum 0.8's own `axum::extract::ws::WebSocketUpgrade` (tokio-tungstenite "
      "underneath, the version axum pins) with its defaults, on `Router::new().route(\"/\", "
      "get(..))` under `axum::serve`, `TCP_NODELAY` set with `ListenerExt::tap_io`.")
    w("  - **wsx in axum**: the same app with `wsx::axum::WebSocketUpgrade` instead, with its "
      "defaults (keepalive on, permessage-deflate accepted if offered; the generator does not "
      "offer it), messages received whole. **wsx in hyper**: a hyper 1 HTTP/1.1 server "
      "(`serve_connection(..).with_upgrades()`) answering with `wsx::hyper::upgrade` under "
      "`ServerPolicy::new(Config::default())` (keepalive on, no compression). Both are compared "
      "with **wsx (defaults)**, the native path.")
    w("  - All set `TCP_NODELAY` and keep a 64 MiB message limit. tokio-tungstenite, "
      "tokio-websockets, axum and both wsx integrations share one echo loop that, like "
      "`wsx serve`, flushes only when no further message is ready.")
    w(f"- Closed loop: each connection sends one {kind} message, waits for its echo, and repeats. "
      "The points are rows of the tables below. The generator takes large echoes as chunks and "
      "counts their bytes (it never reassembles them, whatever the server's framing), and it "
      "reads while a large message is still going out.")
    w(f"- {rounds} round(s). In each round every point runs on every server, one fresh server "
      "process per run, and the order of the servers rotates from round to round, so slow drift "
      "of the machine spreads over all of them. Figures are the median over rounds, with the "
      "range (min–max).")
    w("- Server CPU: user + system time of the server process from `/proc/PID/stat`, from the "
      "moment all of a run's connections are accepted (so handshakes are left out) until the "
      "generator exits. With one generator thread against one server thread the generator can "
      "be the bottleneck; the server's CPU share and its CPU per message show when it is.")
    w(f"- Memory: {memory_connections(data)} idle upgraded connections opened to a fresh server "
      "by `wsx-bench-idle` (hand-written handshake, 64 in flight), and `VmRSS` from "
      "`/proc/PID/status` read before and one second after; the difference divided by the "
      "connection count. Kernel socket buffers are not in `VmRSS`.")
    w("")

    servers = data.servers
    w("## Throughput\n")
    w(f"Messages per second (echoes received), median of {rounds} round(s); below it the range "
      "over rounds and the server's CPU share during the run. Higher is better.\n")
    w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
    w("|---|" + "---:|" * len(servers))
    for p in data.points:
        cells = []
        for x in servers:
            xs = data.msgs.get((x, p), [])
            if not xs:
                cells.append("—")
                continue
            med = grouped(median(xs))
            cell = f"**{med}**" if x == "wsx" else med
            notes = []
            if len(xs) > 1:
                notes.append(f"{si(min(xs))}–{si(max(xs))}")
            util = median(data.util.get((x, p), []))
            if util is not None:
                notes.append(f"CPU {util * 100:.0f}%" + ("¹" if util < SATURATED else ""))
            if notes:
                cell += "<br><sub>" + " · ".join(notes) + "</sub>"
            cells.append(cell)
        w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
    w("")
    if any(u < SATURATED for us in data.util.values() for u in [median(us)]):
        w(f"¹ The server used less than {SATURATED:.0%} of its core: the single-threaded "
          "generator, not the server, set the pace, so these rates are a floor for the server "
          "and the CPU per message below is the fairer comparison.\n")

    if data.cost:
        w("## Server CPU per message\n")
        w("Microseconds of server CPU (user + system, from `/proc/PID/stat`) per echoed message: "
          "the server's CPU time from the moment every connection was accepted until the "
          "generator exited, times its rate. It includes the kernel's share of the socket "
          "work. Lower is better; median over rounds.\n")
        w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
        w("|---|" + "---:|" * len(servers))
        for p in data.points:
            cells = []
            for x in servers:
                c = median(data.cost.get((x, p), []))
                cells.append("—" if c is None else (f"**{c:.2f}**" if x == "wsx" else f"{c:.2f}"))
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    peers_here = [x for x in PEERS if x in servers]
    if "wsx" in servers and peers_here:
        w("## wsx against each server\n")
        w("**Throughput**: wsx's median rate divided by the other's; above 1.00 wsx is faster. "
          "Against raw TCP it is the share of the floor's rate that wsx keeps.\n")
        w("| connections × size | " + " | ".join(f"wsx ÷ {LABEL[x]}" for x in peers_here) + " |")
        w("|---|" + "---:|" * len(peers_here))
        for p in data.points:
            wsx = median(data.msgs.get(("wsx", p), []))
            cells = [fmt_ratio(ratio(wsx, median(data.msgs.get((x, p), []))))
                     for x in peers_here]
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")
        if data.cost:
            w("**Server CPU per message**: wsx's divided by the other's; below 1.00 wsx does the "
              "same work with less CPU.\n")
            w("| connections × size | " + " | ".join(f"wsx ÷ {LABEL[x]}" for x in peers_here)
              + " |")
            w("|---|" + "---:|" * len(peers_here))
            for p in data.points:
                wsx = median(data.cost.get(("wsx", p), []))
                cells = [fmt_ratio(ratio(wsx, median(data.cost.get((x, p), []))))
                         for x in peers_here]
                w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
            w("")

    variants = [x for x in ("wsx-default", "wsx-store") if x in servers]
    if "wsx" in servers and variants:
        w("## The wsx variants\n")
        w("Each variant's median rate divided by another server's. **wsx (defaults) ÷ wsx** is "
          "what keepalive and the other defaults cost; **wsx (store and forward) ÷ X** compares "
          "like with like where plain wsx streams (the 1 MiB row).\n")
        cols = [(v, "wsx") for v in variants]
        if "wsx-store" in variants:
            cols += [("wsx-store", x) for x in peers_here]
        w("| connections × size | " + " | ".join(f"{LABEL[a]} ÷ {LABEL[b]}" for a, b in cols)
          + " |")
        w("|---|" + "---:|" * len(cols))
        for p in data.points:
            cells = [fmt_ratio(ratio(median(data.msgs.get((a, p), [])),
                                     median(data.msgs.get((b, p), []))))
                     for a, b in cols]
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    integrations(data, servers, w)

    w("## Latency\n")
    w("Round-trip time in µs as `p50 / p99`, each the median over rounds of one run's "
      "percentile. Lower is better. In a closed loop latency and throughput are two views of the "
      "same run.\n")
    w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
    w("|---|" + "---:|" * len(servers))
    for p in data.points:
        cells = []
        for x in servers:
            p50, p99 = median(data.p50.get((x, p), [])), median(data.p99.get((x, p), []))
            cells.append("—" if p50 is None else f"{p50:.0f} / {p99:.0f}")
        w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
    w("")

    if data.rss:
        w("## Memory per idle connection\n")
        w("Growth of the server's resident set per idle upgraded connection. Lower is better; "
          "in the last column, below 1.00 wsx uses less.\n")
        w("| server | bytes per connection | range | RSS before → after | wsx ÷ server |")
        w("|---|---:|---:|---:|---:|")
        wsx_rss = median(data.rss.get("wsx", []))
        for x in servers:
            xs = data.rss.get(x)
            if not xs:
                w(f"| {LABEL.get(x, x)} | — | | | |")
                continue
            before = median([b for b, _, _ in data.rss_raw[x]])
            after = median([a for _, a, _ in data.rss_raw[x]])
            r = "" if x == "wsx" else fmt_ratio(ratio(wsx_rss, median(xs)))
            spread = f"{grouped(min(xs))}–{grouped(max(xs))}" if len(xs) > 1 else "—"
            w(f"| {LABEL.get(x, x)} | {grouped(median(xs))} | {spread} | "
              f"{before / 1024:.1f} → {after / 1024:.1f} MiB | {r} |")
        w("")

    if data.instr:
        instr_points = sorted({p for _, p in data.instr})
        w("## User-space instructions per message\n")
        w("Instructions the server executes in user space per echoed message, counted by "
          "valgrind's callgrind (deterministic, unlike the timings above: it does not depend on "
          "how busy the machine is). Each server runs the point twice under callgrind, a short "
          "and a long run, and the difference in instructions over the difference in messages "
          "leaves out start-up, handshakes and shutdown. The kernel's share, most of the cost at "
          "small sizes, is not in it. Lower is better. Under callgrind a server runs far slower, "
          "so it handles more messages per read than at full speed, and a `rep` string "
          "instruction counts once per byte: tokio-tungstenite's zeroing of its 128 KiB read "
          "buffer before every read dominates its figure that way.\n")
        w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
        w("|---|" + "---:|" * len(servers))
        for p in instr_points:
            cells = [("—" if data.instr.get((x, p)) is None else grouped(data.instr[(x, p)]))
                     for x in servers]
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    targets(data, w)


# The pub/sub issue's targets, at 20 B on one server core.
PUBSUB_BEST_PEER = 1.5  # wsx-pubsub ÷ the best peer, at each of these points
PUBSUB_ONE_SEND = 20  # wsx-pubsub ÷ the one-send-per-message pattern
PUBSUB_TARGET_POINTS = [(100, 20), (1000, 20)]
PUBSUB_PEAK = 16 << 10  # most bytes of peak RSS per connection during a run
PUBSUB_IDLE_EXTRA = 200  # most bytes an idle subscriber may cost beyond a plain idle connection


def ps_cell_range(xs, fmt=si):
    return f"{fmt(min(xs))}–{fmt(max(xs))}" if len(xs) > 1 else ""


def round_ratios(data, a, b, p):
    """wsx ÷ peer within each round (the two runs minutes apart at most)."""
    by_a, by_b = data.ps_rate_by_round.get((a, p), {}), data.ps_rate_by_round.get((b, p), {})
    return [by_a[r] / by_b[r] for r in by_a if by_b.get(r)]


def best_peer(data, p):
    rates = [(median(data.ps_rate.get((x, p), [])) or 0, x) for x in PUBSUB_PEERS]
    rate, name = max(rates) if rates else (0, None)
    return (name, rate) if rate else (None, None)


def pubsub_sections(data, w, s, rounds):
    servers, points = data.ps_servers, data.ps_points
    m = data.machine.get("settings", {})
    w("## Pub/sub: uWebSockets' broadcast_test\n")
    w("`wsx bench --pubsub`: N connections to `/`, one topic. In each round every connection "
      "publishes one binary message and every connection must receive all N (its own "
      "included) before the next round starts: N publishes and N² deliveries per round, closed "
      "loop. Each payload carries its send time, sender and round, so every delivery's "
      "publish-to-delivery latency is measured and every round is checked (each connection "
      "gets each sender's message exactly once). The rates are over the counted rounds' own "
      "time, warm-up rounds left out.\n")
    w(f"- Servers, each alone on one thread pinned to CPU {s.get('server_cpu', '0')}; the "
      f"generator on CPU {s.get('client_cpu', '1')}:")
    w("  - **wsx serve --pubsub**: `wsx serve --pubsub --threads 1`, every other default "
      "(keepalive on, deflate offered and not accepted by the generator, 256 KiB per "
      "subscriber queue). A publish is encoded once; each subscriber writes everything "
      "pending in one write.")
    w("  - **tokio-tungstenite + broadcast**: tokio-tungstenite with one "
      "`tokio::sync::broadcast` channel (4,096 slots); per connection a reading task that "
      "publishes into it and a writer task. *Send per message*: the writer `send`s (writes and "
      "flushes) each message, the usual code. *Batching writer*: it feeds everything queued "
      "(`try_recv` until empty), then flushes once.")
    w(f"  - **Node ws**: ws {m.get('ws', '?')} on Node {m.get('node', '?')}, "
      "`wss.clients.forEach(c => c.send(data))` on each message, ws's defaults.")
    w(f"  - **Python websockets**: websockets {m.get('websockets', '?')} on Python "
      f"{m.get('python', '?')}, the asyncio server calling `broadcast(server.connections, "
      "message)` on each message.")
    w("- The generator (one thread) speaks WebSocket over ws:// with a lean client built from "
      "wsx-proto's handshake and frame pieces, parsing deliveries in place, so that one core "
      "of it outpaces the server core it drives; its CPU share over the measurement is in the "
      "table (**gen**), next to the server's (**CPU**).")
    w("- Peak RSS per connection: the server's `VmHWM` (from `/proc/PID/status`) after the run "
      "minus its `VmHWM` before the generator connected, divided by N. Writes per delivery: "
      "the server's `write`, `writev`, `sendto` and `sendmsg` calls, counted by `perf stat` "
      "tracepoints over the run (which cost next to nothing), against its delivery rate.")
    w("")

    w("### Deliveries per second\n")
    w(f"Median of {rounds} round(s); below it the range over rounds, the server's CPU share, "
      "the generator's. Higher is better.\n")
    w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
    w("|---|" + "---:|" * len(servers))
    for p in points:
        cells = []
        for x in servers:
            xs = data.ps_rate.get((x, p), [])
            if not xs:
                cells.append("—")
                continue
            med = grouped(median(xs))
            cell = f"**{med}**" if x == "wsx-pubsub" else med
            notes = [ps_cell_range(xs)] if len(xs) > 1 else []
            util, gen = median(data.ps_util.get((x, p), [])), median(data.ps_gen.get((x, p), []))
            if util is not None:
                notes.append(f"CPU {util * 100:.0f}%" + ("¹" if util < SATURATED else ""))
            if gen is not None:
                notes.append(f"gen {gen * 100:.0f}%")
            cell += "<br><sub>" + " · ".join(notes) + "</sub>"
            cells.append(cell)
        w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
    w("")
    if any(median(us) < SATURATED for us in data.ps_util.values() if us):
        w(f"¹ The server used less than {SATURATED:.0%} of its core. In broadcast_test a server "
          "also idles at every round's barrier (the last delivery of a round must reach the "
          "generator before the next round's publishes leave it), so a fast server is not "
          "saturated even with a generator to spare.\n")

    if "wsx-pubsub" in servers:
        peers = [x for x in PUBSUB_PEERS if x in servers]
        w("### wsx serve --pubsub against each peer\n")
        w("Median rates divided (above 1.00 wsx delivers more); below, the range of the "
          "ratio within one round, over the rounds.\n")
        w("| connections × size | " + " | ".join(f"wsx ÷ {LABEL[x]}" for x in peers) + " |")
        w("|---|" + "---:|" * len(peers))
        for p in points:
            wsx = median(data.ps_rate.get(("wsx-pubsub", p), []))
            cells = []
            for x in peers:
                cell = fmt_ratio(ratio(wsx, median(data.ps_rate.get((x, p), []))))
                per_round = round_ratios(data, "wsx-pubsub", x, p)
                if len(per_round) > 1:
                    cell += f"<br><sub>{min(per_round):.2f}–{max(per_round):.2f}</sub>"
                cells.append(cell)
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    w("### Publish-to-delivery latency\n")
    w("Milliseconds from a message's publish to its delivery at each connection, as "
      "`p50 / p99 / p99.9`, each the median over rounds of one run's percentile. In this "
      "closed loop a round's N² deliveries queue behind each other, so latency is about half "
      "a round's time; lower is better.\n")
    w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in servers) + " |")
    w("|---|" + "---:|" * len(servers))
    for p in points:
        cells = []
        for x in servers:
            lat = data.ps_latency.get((x, p), {})
            qs = [median(lat.get(q, [])) for q in ("p50", "p99", "p999")]
            cells.append("—" if qs[0] is None else " / ".join(f"{q / 1000:.2f}" for q in qs))
        w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
    w("")

    w("### Server cost per delivery\n")
    w("Nanoseconds of server CPU (user + system) per delivery, **peak RSS growth per "
      "connection** in bytes, and, where counted, **deliveries per write** system call "
      "(and publishes per read), medians over rounds.\n")
    w("| server | " + " | ".join(f"{point_label(p)}" for p in points) + " |")
    w("|---|" + "---:|" * len(points))
    for x in servers:
        cells = []
        for p in points:
            key = (x, p)
            parts = []
            cost, peak = median(data.ps_cost.get(key, [])), median(data.ps_peak.get(key, []))
            per_write, per_read = (median(data.ps_per_write.get(key, [])),
                                   median(data.ps_per_read.get(key, [])))
            if cost is not None:
                parts.append(f"{cost:.0f} ns CPU")
            if peak is not None:
                parts.append(f"peak {grouped(peak)} B/conn")
            if per_write is not None:
                parts.append(f"{per_write:.1f} deliveries/write")
            if per_read is not None:
                parts.append(f"{per_read:.2f} publishes/read")
            cells.append("<br>".join(parts) or "—")
        w(f"| {LABEL.get(x, x)} | " + " | ".join(cells) + " |")
    w("")

    if data.ps_rss:
        w("### Memory per idle subscriber\n")
        w(f"{memory_connections_of(data.ps_rss_raw)} idle connections to `/idle` from "
          "`wsx-bench-idle`, `VmRSS` growth per connection: each one a subscriber of topic "
          "`idle` under `wsx serve --pubsub`, a plain echo connection under `wsx serve` (both "
          "`--threads 1`, every other default).\n")
        w("| server | bytes per connection | range | RSS before → after |")
        w("|---|---:|---:|---:|")
        for x in ("wsx-pubsub", "wsx-default"):
            xs = data.ps_rss.get(x)
            if not xs:
                continue
            before = median([b for b, _, _ in data.ps_rss_raw[x]])
            after = median([a for _, a, _ in data.ps_rss_raw[x]])
            spread = f"{grouped(min(xs))}–{grouped(max(xs))}" if len(xs) > 1 else "—"
            label = "wsx serve --pubsub" if x == "wsx-pubsub" else "wsx serve"
            w(f"| {label} | {grouped(median(xs))} | {spread} | "
              f"{before / 1024:.1f} → {after / 1024:.1f} MiB |")
        w("")

    if data.ps_instr:
        instr_points = sorted({p for _, p in data.ps_instr})
        cols = [x for x in PUBSUB_ORDER if any((x, p) in data.ps_instr for p in instr_points)]
        w("### User-space instructions per delivery\n")
        w("Counted by callgrind as for the echo servers (a short and a long run, the "
          "difference over the difference in deliveries). The kernel's share is not in it, "
          "and, as there, tokio-tungstenite's figures are inflated by the zeroing of its "
          "128 KiB read buffer before each read, which callgrind counts byte by byte.\n")
        w("| connections × size | " + " | ".join(LABEL.get(x, x) for x in cols) + " |")
        w("|---|" + "---:|" * len(cols))
        for p in instr_points:
            cells = [("—" if data.ps_instr.get((x, p)) is None else grouped(data.ps_instr[(x, p)]))
                     for x in cols]
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    pubsub_targets(data, w)


def memory_connections_of(raw):
    counts = sorted({n for runs in raw.values() for _, _, n in runs})
    return ", ".join(f"{n:,}" for n in counts) or "10,000"


def pubsub_targets(data, w):
    rows = []
    wsx = "wsx-pubsub"
    for p in PUBSUB_TARGET_POINTS:
        ours = data.ps_rate.get((wsx, p), [])
        if not ours:
            continue
        name, best = best_peer(data, p)
        if name:
            r = median(ours) / best
            per_round = round_ratios(data, wsx, name, p)
            note = (f"per round {min(per_round):.2f}–{max(per_round):.2f}"
                    if len(per_round) > 1 else "")
            rows.append(f"| {point_label(p)} | wsx ≥ {PUBSUB_BEST_PEER} × the best peer "
                        f"({LABEL[name]}) | {r:.2f} | {verdict(r >= PUBSUB_BEST_PEER)} | {note} |")
        one = median(data.ps_rate.get((ONE_SEND, p), []))
        if one:
            r = median(ours) / one
            rows.append(f"| {point_label(p)} | wsx ≥ {PUBSUB_ONE_SEND} × {LABEL[ONE_SEND]} | "
                        f"{r:.1f} | {verdict(r >= PUBSUB_ONE_SEND)} | |")
        peak = data.ps_peak.get((wsx, p), [])
        if peak:
            rows.append(f"| {point_label(p)} | wsx peak RSS ≤ {PUBSUB_PEAK:,} B per connection | "
                        f"{grouped(max(peak))} B (worst round) | {verdict(max(peak) <= PUBSUB_PEAK)} "
                        "| |")
    sub, plain = median(data.ps_rss.get(wsx, [])), median(data.ps_rss.get("wsx-default", []))
    if sub is not None and plain is not None:
        extra = sub - plain
        rows.append(f"| idle | a subscriber ≤ a plain idle connection + {PUBSUB_IDLE_EXTRA} B | "
                    f"{extra:+,.0f} B ({grouped(sub)} vs {grouped(plain)}) | "
                    f"{verdict(extra <= PUBSUB_IDLE_EXTRA)} | |")
    if not rows:
        return
    w("### Pub/sub targets\n")
    w("The pub/sub issue's targets at 20 B on one server core, against this run's medians.\n")
    w("| point | target | measured | | |")
    w("|---|---|---:|---|---|")
    for row in rows:
        w(row)
    w("")


def verdict(ok):
    return "met" if ok else "**not met**"



# The targets: (point, peer, minimum throughput ratio wsx ÷ peer).
THROUGHPUT_TARGETS = [
    ((100, 20), "raw", 0.97), ((100, 20), "fastwebsockets", 1.03),
    ((1000, 20), "raw", 0.97), ((1000, 20), "fastwebsockets", 1.03),
    ((1000, 20), "tungstenite", 1.8),
    ((10, 16384), "raw", 0.95), ((10, 16384), "best Rust peer", 1.03),
    ((1, 1 << 20), "raw", 0.85),
]
RSS_TARGET = 2048
# The hyper/axum issue's targets: (point, server, baseline, minimum throughput ratio).
INTEGRATION_TARGETS = [
    ((1000, 20), "wsx-axum", "axum", 1.3),
    ((100, 20), "wsx-axum", "wsx-default", 0.95),
    ((1000, 20), "wsx-axum", "wsx-default", 0.95),
    ((10, 16384), "wsx-axum", "wsx-default", 0.95),
]
# Most bytes per idle connection that wsx in axum may use beyond the native path.
INTEGRATION_RSS_EXTRA = 1024


def targets(data, w):
    """Checks the performance targets against this run's medians."""
    rows = []
    for point, peer, goal in THROUGHPUT_TARGETS:
        wsx = median(data.msgs.get(("wsx", point), []))
        if peer == "best Rust peer":
            rates = [(median(data.msgs.get((x, point), [])) or 0, x)
                     for x in ("tungstenite", "fastwebsockets", "tokio-websockets")]
            best, name = max(rates)
            other, label = (best or None), f"the best Rust peer ({LABEL.get(name, name)})"
            peer = name
        else:
            other, label = median(data.msgs.get((peer, point), [])), LABEL.get(peer, peer)
        r = ratio(wsx, other)
        if r is None:
            continue
        verdict = "met" if r >= goal else "**not met**"
        note = ""
        ours, theirs = data.msgs.get(("wsx", point), []), data.msgs.get((peer, point), [])
        if r < goal and ours and theirs and max(ours) >= min(theirs) and max(theirs) >= min(ours):
            note = (f"rounds overlap: wsx {si(min(ours))}–{si(max(ours))}, "
                    f"{LABEL.get(peer, peer)} {si(min(theirs))}–{si(max(theirs))}")
        rows.append(f"| {point_label(point)} | wsx ≥ {goal:.2f} × {label} | {r:.2f} | {verdict} | "
                    f"{note} |")
    wsx_rss = median(data.rss.get("wsx", []))
    if wsx_rss is not None:
        verdict = "met" if wsx_rss <= RSS_TARGET else "**not met**"
        rows.append(f"| 10,000 idle | ≤ {RSS_TARGET:,} B per connection | {wsx_rss:,.0f} B | "
                    f"{verdict} | |")
    for point, ours_name, base, goal in INTEGRATION_TARGETS:
        ours, theirs = data.msgs.get((ours_name, point), []), data.msgs.get((base, point), [])
        r = ratio(median(ours), median(theirs))
        if r is None:
            continue
        verdict = "met" if r >= goal else "**not met**"
        note = ""
        if r < goal and max(ours) >= min(theirs) and max(theirs) >= min(ours):
            note = (f"rounds overlap: {LABEL[ours_name]} {si(min(ours))}–{si(max(ours))}, "
                    f"{LABEL[base]} {si(min(theirs))}–{si(max(theirs))}")
        rows.append(f"| {point_label(point)} | {LABEL[ours_name]} ≥ {goal:.2f} × {LABEL[base]} | "
                    f"{r:.2f} | {verdict} | {note} |")
    axum_rss = median(data.rss.get("wsx-axum", []))
    native_rss = median(data.rss.get("wsx-default", []))
    if axum_rss is not None and native_rss is not None:
        extra = axum_rss - native_rss
        verdict = "met" if extra <= INTEGRATION_RSS_EXTRA else "**not met**"
        rows.append(f"| idle | {LABEL['wsx-axum']} ≤ {LABEL['wsx-default']} + "
                    f"{INTEGRATION_RSS_EXTRA:,} B per connection | {extra:+,.0f} B | {verdict} | |")
    if not rows:
        return
    w("## Targets\n")
    w("The targets of the performance issue and of the hyper/axum one, checked against this "
      "run's medians. Throughput ratios "
      "where the generator set the pace (¹ above) only say wsx kept up; the CPU-per-message "
      "table is the sharper comparison there.\n")
    w("| point | target | measured | | |")
    w("|---|---|---:|---|---|")
    for row in rows:
        w(row)
    w("")
    w("Where the ranges of the rounds overlap, the two servers are not told apart by this run: "
      "from 20 B to 16 KiB the kernel's socket work is about nine tenths of a good server's CPU "
      "(one `recv` and one `send` per message for every server here), so the user-space part "
      "that differs moves the rate by a few percent, less than the machine's drift between "
      "rounds. The instruction counts above measure that part without the noise.")
    w("")


def integrations(data, servers, w):
    """wsx inside hyper and axum against axum's own WebSocket and against the native path."""
    cols = []
    if "wsx-axum" in servers and "axum" in servers:
        cols.append(("wsx-axum", "axum"))
    for x in INTEGRATIONS:
        if x in servers and "wsx-default" in servers:
            cols.append((x, "wsx-default"))
    if not cols:
        return
    w("## wsx inside hyper and axum\n")
    w("Median rates divided: **wsx in axum ÷ axum (ws)** is what swapping axum's extractor for "
      "wsx's gives an axum app; **÷ wsx (defaults)** is what the hyper (and axum) path costs "
      "against `wsx serve` with the same defaults. Below each ratio, the range of the ratio "
      "within one round (the two runs minutes apart at most), over the rounds.\n")
    w("| connections × size | " + " | ".join(f"{LABEL[a]} ÷ {LABEL[b]}" for a, b in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for p in data.points:
        cells = []
        for a, b in cols:
            xs, ys = data.msgs.get((a, p), []), data.msgs.get((b, p), [])
            cell = fmt_ratio(ratio(median(xs), median(ys)))
            by_a, by_b = data.msgs_by_round.get((a, p), {}), data.msgs_by_round.get((b, p), {})
            per_round = [by_a[r] / by_b[r] for r in by_a if by_b.get(r)]
            if len(per_round) > 1:
                cell += f"<br><sub>{min(per_round):.2f}–{max(per_round):.2f}</sub>"
            cells.append(cell)
        w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
    w("")
    native = median(data.rss.get("wsx-default", []))
    rows = [(x, median(data.rss.get(x, []))) for x in INTEGRATIONS + ["axum"]
            if data.rss.get(x)]
    if native is not None and rows:
        w("**Memory per idle connection** against wsx (defaults), "
          f"{grouped(native)} B: the difference in bytes (positive: more).\n")
        w("| server | bytes per connection | − wsx (defaults) |")
        w("|---|---:|---:|")
        for x, b in rows:
            w(f"| {LABEL.get(x, x)} | {grouped(b)} | {b - native:+,.0f} |")
        w("")


def spread(xs, fmt=grouped):
    """median (min–max), or the one value."""
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"


def tls_sections(data, w, s, rounds):
    """The TLS stage: wss:// echo rates, handshakes per second, memory per idle connection."""
    servers = data.tls_servers
    w("## TLS: wss:// echo, handshakes and memory per idle connection\n")
    w("Both servers terminate TLS with rustls 0.23 and its ring provider and rustls's defaults "
      "(TLS 1.3 negotiated, X25519, an ECDSA P-256 certificate made by openssl for the run, an "
      "in-memory session cache of 256 sessions and two TLS 1.3 tickets per handshake); the "
      "clients trust that certificate only.\n")
    w(f"- Each server alone on one thread pinned to CPU {s.get('server_cpu', '0')}, the "
      f"generator (`wsx bench`, one thread) on CPU {s.get('client_cpu', '1')}:")
    w("  - **wsx serve --tls-\\***: `wsx serve --threads 1 --tls-cert … --tls-key …` with every "
      "other default (keepalive on, deflate offered and not accepted by the generator, ALPN h2 "
      "and http/1.1: the generator asks for http/1.1).")
    w("  - **tokio-tungstenite + tokio-rustls**: `wsx-bench-server --impl tungstenite-tls`: "
      "tokio-rustls's `TlsAcceptor` with a `ServerConfig` built as tokio-rustls's `server` "
      "example does, then `accept_async_with_config` with tungstenite's default "
      "`WebSocketConfig` on the TLS stream, the same echo loop as the plain tokio-tungstenite "
      "peer, and `close_notify` once the WebSocket is closed.")
    w("- Echo: closed loop as in the echo stage, over wss://. Handshakes: `wsx bench "
      f"--handshakes` with {', '.join(str(c) for c in sorted(data.tls_hs_conns)) or '?'} "
      "connectors, each in a loop: TCP connect, TLS handshake, upgrade, close handshake (the "
      "server ends TCP), again. The rate counts complete cycles in the measured window; the "
      "latency is of the opening part only (TCP connect to the checked 101). *Full*: "
      "`--no-tls-resumption`, every TLS handshake a full one (X25519 and the server's ECDSA "
      "signature, which the client verifies), as a new client's. *Resumed*: the client keeps "
      "rustls's default session cache, so after its first connection each handshake resumes a "
      "session from a ticket the server sent (a TLS 1.3 PSK with a fresh X25519 exchange, no "
      "certificate signature), as a returning client's does.")
    n_idle = sorted({n for runs in data.tls_rss_raw.values() for _, _, n in runs})
    w(f"- Memory: {', '.join(f'{n:,}' for n in n_idle) or '?'} idle upgraded connections held "
      "by `wsx-bench-idle` (wss:// with `--cacert`: the same hand-written upgrade over a rustls "
      "session), the server's `VmRSS` growth per connection; next to each TLS server, its "
      "plain ws:// counterpart with the same settings (`wsx serve --threads 1`, the plain "
      "tokio-tungstenite peer), so the difference is what the TLS session costs.")
    w(f"- {rounds} round(s), the order of the servers rotating; figures are the median over "
      "rounds with the range (min–max).\n")

    if data.tls_points:
        w("### wss:// echo\n")
        w("Messages per second, median; below it the range over rounds, the server's CPU share "
          "(¹: below 90 %: the server was not what set the pace — the one-thread generator, or "
          "on a busy machine the other work, was) and µs of server CPU per message. Last, the "
          "ratio of the medians and its range within one round (the two runs seconds apart).\n")
        ratio_col = "wsx-tls" in servers and "tungstenite-tls" in servers
        head = [LABEL.get(x, x) for x in servers]
        if ratio_col:
            head.append("wsx ÷ tokio-tungstenite")
        w("| connections × size | " + " | ".join(head) + " |")
        w("|---|" + "---:|" * len(head))
        for p in data.tls_points:
            cells = []
            for x in servers:
                xs = data.tls_msgs.get((x, p), [])
                if not xs:
                    cells.append("—")
                    continue
                notes = []
                if len(xs) > 1:
                    notes.append(f"{si(min(xs))}–{si(max(xs))}")
                util = median(data.tls_util.get((x, p), []))
                if util is not None:
                    notes.append(f"CPU {util * 100:.0f}%" + ("¹" if util < SATURATED else ""))
                cost = median(data.tls_cost.get((x, p), []))
                if cost is not None:
                    notes.append(f"{cost:.2f} µs/msg")
                cells.append(grouped(median(xs)) + "<br><sub>" + " · ".join(notes) + "</sub>")
            if ratio_col:
                a = median(data.tls_msgs.get(("wsx-tls", p), []))
                b = median(data.tls_msgs.get(("tungstenite-tls", p), []))
                by_a = data.tls_msgs_by_round.get(("wsx-tls", p), {})
                by_b = data.tls_msgs_by_round.get(("tungstenite-tls", p), {})
                rr = [by_a[r] / by_b[r] for r in by_a if by_b.get(r)]
                cell = fmt_ratio(ratio(a, b))
                if len(rr) > 1:
                    cell += f"<br><sub>per round {min(rr):.2f}–{max(rr):.2f}</sub>"
                cells.append(cell)
            w(f"| {point_label(p)} | " + " | ".join(cells) + " |")
        w("")

    if data.tls_hs:
        w("### wss:// handshakes per second\n")
        w("| TLS handshake | server | handshakes/s, median (min–max) | opening latency p50 / "
          "p99, ms | server CPU share | server CPU per handshake |")
        w("|---|---|---:|---:|---:|---:|")
        ratios = []
        for mode in ("full", "resumed"):
            for x in servers:
                xs = data.tls_hs.get((x, mode), [])
                if not xs:
                    continue
                lat = data.tls_hs_latency.get((x, mode), {})
                p50, p99 = median(lat.get("p50", [])), median(lat.get("p99", []))
                latency = "—" if p50 is None else f"{p50 / 1e3:.2f} / {p99 / 1e3:.2f}"
                util = median(data.tls_hs_util.get((x, mode), []))
                cost = median(data.tls_hs_cost.get((x, mode), []))
                w(f"| {mode} | {LABEL.get(x, x)} | {spread(xs)} | {latency} | "
                  f"{'—' if util is None else f'{util * 100:.0f}%'} | "
                  f"{'—' if cost is None else f'{cost:.0f} µs'} |")
            a = median(data.tls_hs.get(("wsx-tls", mode), []))
            b = median(data.tls_hs.get(("tungstenite-tls", mode), []))
            if a and b:
                by_a = data.tls_hs_by_round[("wsx-tls", mode)]
                by_b = data.tls_hs_by_round[("tungstenite-tls", mode)]
                rr = [by_a[r] / by_b[r] for r in by_a if by_b.get(r)]
                ratios.append(f"{mode} {a / b:.2f}"
                              + (f" (per round {min(rr):.2f}–{max(rr):.2f})" if len(rr) > 1 else ""))
        if ratios:
            w("")
            w("Handshakes per second, wsx ÷ tokio-tungstenite: " + "; ".join(ratios) + ".")
        w("")

    if data.tls_rss:
        w("### Memory per idle connection\n")
        w("| server | wss:// bytes per connection, median (min–max) | RSS before → after | "
          "ws:// counterpart | the TLS session's share |")
        w("|---|---:|---:|---:|---:|")
        for x in servers:
            xs = data.tls_rss.get(x, [])
            if not xs:
                continue
            raw = data.tls_rss_raw[x][len(xs) // 2]
            plain = TLS_PLAIN.get(x)
            ps = data.tls_rss.get(plain, []) if plain else []
            diff = median(xs) - median(ps) if ps else None
            w(f"| {LABEL.get(x, x)} | {spread(xs)} | {raw[0] / 1024:.1f} → {raw[1] / 1024:.1f} MiB | "
              f"{LABEL.get(plain, plain) + ': ' + spread(ps) if ps else '—'} | "
              f"{'—' if diff is None else f'{diff:+,.0f} B'} |")
        w("")


def is_smoke(rounds, duration):
    try:
        return rounds < 3 or float(duration) < 5
    except ValueError:
        return True


def memory_connections(data):
    counts = sorted({n for runs in data.rss_raw.values() for _, _, n in runs})
    return ", ".join(f"{n:,}" for n in counts) or "10,000"


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}"


# ---------------------------------------------------------------------------------------------
# SVG


def svg(data):
    """Small multiples, one column per point: msg/s on the first row, server CPU per message on
    the second, memory per idle connection below. Bars are medians, whiskers min–max."""
    rows = [[(f"{point_label(p)}: msg/s", {x: data.msgs.get((x, p), []) for x in data.servers})
             for p in data.points]]
    if data.cost:
        rows.append([(f"{point_label(p)}: µs CPU/msg",
                      {x: data.cost.get((x, p), []) for x in data.servers})
                     for p in data.points])
    if data.rss:
        rows.append([("idle connection: bytes of RSS",
                      {x: data.rss.get(x, []) for x in data.servers})])
    if not data.points:
        rows = []
    if data.ps_points:
        rows.append([(f"pub/sub {point_label(p)}: deliveries/s",
                      {x: data.ps_rate.get((x, p), []) for x in data.ps_servers})
                     for p in data.ps_points])
    if not rows:
        rows = [[("no data", {})]]
    cols = max(len(r) for r in rows)
    pw, ph = 230, 200  # panel size
    width = max(cols * pw + 20, 720)
    # The legend, wrapped: every server of either stage.
    legend, lx, ly = [], 10, 50
    for x in data.servers + [x for x in data.ps_servers if x not in data.servers]:
        step = 30 + 5.8 * len(LABEL.get(x, x))
        if lx > 10 and lx + step > width:
            lx, ly = 10, ly + 18
        legend.append(f'<rect x="{lx:.0f}" y="{ly}" width="12" height="12" '
                      f'fill="{COLOR.get(x, "#333")}"/>')
        legend.append(f'<text x="{lx + 16:.0f}" y="{ly + 10}">{esc(LABEL.get(x, x))}</text>')
        lx += step
    top = ly + 28
    height = top + len(rows) * ph + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    m = data.machine
    rounds = len(data.rounds)
    title = "wsx and its peers, one server core: echo rate, server CPU per message, idle memory"
    if data.ps_points:
        title += ", pub/sub deliveries"
    sub = (f"median of {rounds} round(s), whiskers min–max · {m.get('cpu', '?')}, "
           f"{m.get('nproc', '?')} CPUs · {m.get('date', '')}")
    if is_smoke(rounds, m.get("settings", {}).get("duration", "?")):
        sub += " · SMOKE RUN, NOT FOR QUOTING"
    out.append(f'<text x="10" y="20" font-size="15" font-weight="bold">{esc(title)}</text>')
    out.append(f'<text x="10" y="38" fill="#555">{esc(sub)}</text>')
    out.extend(legend)
    for i, row in enumerate(rows):
        for j, (name, series) in enumerate(row):
            ox, oy = 10 + j * pw, top + i * ph
            out.extend(panel(ox, oy, pw - 14, ph - 14, name, series, list(series)))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def panel(ox, oy, w, h, name, series, servers):
    out = [f'<text x="{ox + w / 2}" y="{oy + 12}" text-anchor="middle" '
           f'font-weight="bold">{esc(name)}</text>']
    left, bottom, top = ox + 40, oy + h - 8, oy + 34
    highs = [max(v) for v in series.values() if v]
    if not highs:
        out.append(f'<text x="{ox + w / 2}" y="{oy + h / 2}" text-anchor="middle" '
                   'fill="#999">no data</text>')
        return out
    ymax, ticks = nice_axis(max(highs))

    def y(v):
        return bottom - (bottom - top) * v / ymax

    for t in ticks:
        out.append(f'<line x1="{left}" x2="{ox + w}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 4}" y="{y(t) + 4:.1f}" text-anchor="end" '
                   f'fill="#555">{si(t)}</text>')
    out.append(f'<line x1="{left}" x2="{ox + w}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    slot = (ox + w - left) / max(1, len(servers))
    bw = slot * 0.7
    for j, x in enumerate(servers):
        vs = series.get(x, [])
        cx = left + slot * j + slot / 2
        if not vs:
            out.append(f'<text x="{cx:.1f}" y="{bottom - 4}" text-anchor="middle" '
                       'fill="#999">—</text>')
            continue
        med, lo, hi = median(vs), min(vs), max(vs)
        color = COLOR.get(x, "#333")
        out.append(f'<rect x="{cx - bw / 2:.1f}" y="{y(med):.1f}" width="{bw:.1f}" '
                   f'height="{bottom - y(med):.1f}" fill="{color}">'
                   f'<title>{esc(LABEL.get(x, x))}: {med:,.0f} (min {lo:,.0f}, max {hi:,.0f})'
                   '</title></rect>')
        if hi > lo:
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" '
                       'stroke="#000"/>')
            for v in (lo, hi):
                out.append(f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{y(v):.1f}" '
                           f'y2="{y(v):.1f}" stroke="#000"/>')
        out.append(f'<text x="{cx:.1f}" y="{y(hi) - 4:.1f}" text-anchor="middle" '
                   f'font-size="10">{si(med)}</text>')
    return out


def nice_axis(vmax):
    """An axis top a little above vmax, and 4–6 round ticks from 0 to it."""
    if vmax <= 0:
        return 1, [0, 1]
    raw = vmax * 1.15 / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = int(-(-vmax * 1.15 // step))
    return n * step, [i * step for i in range(n + 1)]


def esc(s):
    return html.escape(str(s), quote=True)


if __name__ == "__main__":
    main()
