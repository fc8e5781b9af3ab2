#!/usr/bin/env python3
"""Per-call cost of the socket methods the benchmark servers use, stdlib vs rsock, same code.

    python benchmarks/percall.py                 # 5 alternating reps, 100k iterations per op
    python benchmarks/percall.py --reps 9 --n 200000

One thread calls both ends of a loopback connection (so nothing ever waits): e.g. ``a.send(1 KiB);
b.recv(65536)`` is one op. Both libraries make the same syscalls, so the difference between the two
columns is what the library adds per call (argument parsing, buffer handling, GIL release, object
creation). Each rep is a fresh process per library (``as_rsock.py`` for rsock), in alternating order;
every op is timed as the best of 3 loops, and the table shows the median over reps.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(n):
    import socket

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    a = socket.create_connection(ls.getsockname())
    b, _ = ls.accept()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    u1, u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2.bind(("127.0.0.1", 0))
    uaddr = u2.getsockname()
    u1.bind(("127.0.0.1", 0))
    m64, m1k, m16k = b"x" * 64, b"x" * 1024, b"x" * 16384
    buf = bytearray(65536)

    def send_recv(n):
        send, recv = a.send, b.recv
        for _ in range(n):
            send(m1k)
            recv(65536)

    def sendall_recv(n):
        sendall, recv = a.sendall, b.recv
        for _ in range(n):
            sendall(m1k)
            recv(65536)

    def sendall_recv_into_16k(n):
        sendall, recv_into = a.sendall, b.recv_into
        for _ in range(n):
            sendall(m16k)
            got = 0
            while got < 16384:
                got += recv_into(buf)

    def udp(n):
        sendto, recvfrom = u1.sendto, u2.recvfrom
        for _ in range(n):
            sendto(m64, uaddr)
            recvfrom(65536)

    def udp_echo_back(n):  # the UDP server's reply path: sendto(data, addr) with the addr recvfrom gave
        sendto, recvfrom, send_to_u2 = u2.sendto, u1.recvfrom, u1.sendto
        send_to_u2(m64, uaddr)
        data, peer = u2.recvfrom(65536)
        for _ in range(n):
            sendto(data, peer)
            recvfrom(65536)

    def sock_close(n):
        S, AF, ST = socket.socket, socket.AF_INET, socket.SOCK_STREAM
        for _ in range(n):
            S(AF, ST).close()

    def setsockopt(n):
        so, lvl, opt = a.setsockopt, socket.IPPROTO_TCP, socket.TCP_NODELAY
        for _ in range(n):
            so(lvl, opt, 1)

    def fileno(n):
        f = a.fileno
        for _ in range(n):
            f()

    ops = {
        "send(1K) + recv(65536)": (send_recv, n),
        "sendall(1K) + recv(65536)": (sendall_recv, n),
        "sendall(16K) + recv_into(64K buf)": (sendall_recv_into_16k, n // 2),
        "UDP sendto(64, addr) + recvfrom(65536)": (udp, n // 2),
        "UDP reply sendto(data, peer) + recvfrom": (udp_echo_back, n // 2),
        "socket() + close()": (sock_close, n // 4),
        "setsockopt(TCP_NODELAY)": (setsockopt, n),
        "fileno()": (fileno, n),
    }
    out = {}
    for name, (fn, k) in ops.items():
        fn(min(k, 2000))  # warm-up
        best = min(_timed(fn, k) for _ in range(3))
        out[name] = best / k * 1e9
    print(json.dumps({"module": socket.socket.__module__, "ns_per_op": out}))


def _timed(fn, k):
    t0 = time.perf_counter()
    fn(k)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=100000, help="iterations per op and loop")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/percall-<time>.json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.n)
        return 0
    res = {"stdlib": [], "rsock": []}
    for rep in range(a.reps):
        for lib in ("stdlib", "rsock") if rep % 2 == 0 else ("rsock", "stdlib"):
            cmd = [sys.executable] + ([str(HERE / "as_rsock.py")] if lib == "rsock" else [])
            cmd += [str(Path(__file__).resolve()), "--worker", "--n", str(a.n)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"{lib} worker failed: {p.stderr[-500:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            assert r["module"] == ("rsock" if lib == "rsock" else "socket"), r["module"]
            res[lib].append(r["ns_per_op"])
            print(f"[{rep}] {lib} done", file=sys.stderr, flush=True)
    ops = list(res["stdlib"][0])
    lines = [
        f"### per-call cost, one thread, loopback (median of {a.reps} alternating reps, best of 3 loops each)",
        "| op | stdlib ns | rsock ns | rsock - stdlib ns | ratio | per-rep ratios |",
        "|---|---|---|---|---|---|",
    ]
    for op in ops:
        s = statistics.median(r[op] for r in res["stdlib"])
        q = statistics.median(r[op] for r in res["rsock"])
        per = [y[op] / x[op] for x, y in zip(res["stdlib"], res["rsock"], strict=True)]
        lines.append(f"| {op} | {s:,.0f} | {q:,.0f} | {q - s:+,.0f} | {q / s:.2f} | {min(per):.2f}-{max(per):.2f} |")
    out = Path(a.out) if a.out else HERE / "results" / f"percall-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "percall", "argv": sys.argv, "n": a.n, "reps": a.reps, "runs": res}, indent=1))
    print("\n".join(lines))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
