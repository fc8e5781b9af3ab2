#!/usr/bin/env python3
"""Paired windows: several servers running side by side, load windows taken by each in turn.

    python benchmarks/paired.py --mode udp-blast \\
        "stdlib=python /work/shared/bench/peers.py udp stdlib --host 127.0.0.1 --port {port}" \\
        "rsock=python benchmarks/rsock_servers.py udp-echo --port {port}"
    python benchmarks/paired.py --mode tcp-echo --size 1024 \\
        "before=env PYTHONPATH=/tmp/before python benchmarks/rsock_servers.py tcp-echo --port {port}" \\
        "after=python benchmarks/rsock_servers.py tcp-echo --port {port}"

Every server starts first and keeps running; then, for --rounds rounds, each takes one --window-second
window of the harness's Rust load generator (order reversed every other round), and its CPU time over the
window comes from /proc/<pid>/stat. The machine's state drifts by ±10% over minutes here, more than most
changes are worth; windows a few seconds apart see the same state, so the ratio of two servers' CPU per
request within a round is steadier than the ratio of two separate runs. Reports each server's CPU µs per
request (per datagram) and its requests (datagrams) per second, per window, and the medians of the
per-round ratios against the first server.

To compare two builds of rsock, copy one build's python/rsock to a directory and start that server with
PYTHONPATH pointing there (as above). Needs the load generator: cd ../shared/bench/loadgen && cargo build
--release. Loopback only; every window is bounded in time and every server is ended by its pid.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from chat_bench import cpu_seconds, free_port  # this folder's: server CPU time from /proc, a free port

LOADGEN = Path(__file__).resolve().parents[2] / "shared" / "bench" / "loadgen" / "target" / "release" / "loadgen"


def window(args, port, pid):
    """One load window against the server on `port`; returns the requests or datagrams it handled, and the
    seconds they took."""
    common = ["--addr", f"127.0.0.1:{port}", "--size", str(args.size), "--duration", str(args.window)]
    if args.mode == "udp-blast":
        command = [str(LOADGEN), "udp-blast", *common, "--warmup", "0.2", "--watch-pid", str(pid)]
    else:
        command = [str(LOADGEN), "tcp-echo", *common, "--conns", str(args.conns), "--warmup", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.window + 30)
    report = json.loads(result.stdout)
    if args.mode == "udp-blast":
        return report["rps"] * report["elapsed"], report["elapsed"]
    return report["requests"], report["elapsed"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", nargs="+", help="NAME=COMMAND with {port}; the first is the baseline")
    parser.add_argument("--mode", choices=["tcp-echo", "udp-blast"], default="tcp-echo")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--conns", type=int, default=10, help="tcp-echo connections")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--window", type=float, default=1.5, help="seconds per window")
    args = parser.parse_args()
    if len(args.servers) < 2 or any("=" not in spec for spec in args.servers):
        parser.error("give at least two servers as NAME=COMMAND")
    if not LOADGEN.exists():
        sys.exit(f"no load generator at {LOADGEN}: cd ../shared/bench/loadgen && cargo build --release")
    kind = socket.SOCK_DGRAM if args.mode == "udp-blast" else socket.SOCK_STREAM
    servers = []
    try:
        for spec in args.servers:
            name, command = spec.split("=", 1)
            port = free_port(kind)
            # exec: the pid measured is the server's own, not a shell's.
            process = subprocess.Popen(
                "exec " + command.format(port=port), shell=True, stdout=subprocess.DEVNULL, start_new_session=True
            )
            servers.append((name, port, process))
        time.sleep(1.5)
        for name, _, process in servers:
            if process.poll() is not None:
                sys.exit(f"{name} exited at start (rc {process.returncode})")
        costs = {name: [] for name, _, _ in servers}
        rates = {name: [] for name, _, _ in servers}
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else servers[::-1]
            for name, port, process in order:
                before = cpu_seconds(process.pid)
                handled, elapsed = window(args, port, process.pid)
                costs[name].append((cpu_seconds(process.pid) - before) / handled * 1e6)
                rates[name].append(handled / elapsed)
        unit = "datagram" if args.mode == "udp-blast" else "request"
        baseline = servers[0][0]
        for name, series in costs.items():
            cells = " ".join(f"{c:6.2f}" for c in series)
            print(f"{name:12s} CPU µs per {unit}: {cells}   median {statistics.median(series):.3f}")
        for name, series in rates.items():
            cells = " ".join(f"{r:7.0f}" for r in series)
            print(f"{name:12s} {unit}s per second: {cells}   median {statistics.median(series):.0f}")
        for measure, series in (("CPU", costs), ("rate", rates)):
            for name in list(series)[1:]:
                ratios = [b / a for a, b in zip(series[baseline], series[name], strict=True)]
                print(
                    f"{name} / {baseline} {measure}: paired median {statistics.median(ratios):.3f} "
                    f"(rounds {min(ratios):.3f}-{max(ratios):.3f})"
                )
    finally:
        for _, _, process in servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


if __name__ == "__main__":
    main()
