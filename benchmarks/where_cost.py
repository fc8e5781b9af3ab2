#!/usr/bin/env python3
"""Where does a server spend its CPU, stdlib vs rsock, same peers.py code: user/system CPU per request
and syscalls per request (strace -c).

    python benchmarks/where_cost.py tcp threads --conns 10 --size 1K
    python benchmarks/where_cost.py tcp selectors --conns 10 --size 100K --reps 5
    python benchmarks/where_cost.py udp stdlib --conns 10 --size 64
    python benchmarks/where_cost.py bulk stdlib-recv_into --bufsize 64K --bytes 256M

tcp/udp: for each of stdlib and rsock (alternating, --reps times) a fresh server process
(``peers.py KIND IMPL``, through as_rsock.py for rsock) is driven by the harness's load generator for
--seconds; its utime/stime from /proc/PID/stat over the window give user and system µs per request
(no tracing). Then one more server of each is traced with ``strace -f -c -p PID`` (all its threads)
while the load generator runs, and the syscall counts are divided by the requests completed. strace
slows the server down a lot, so only the counts per request mean anything there, not the times.

bulk: both roles (recv and send) of ``peers.py bulk IMPL`` run under ``strace -f -c``; counts per MiB.

Only processes started here are signalled (by their own pid / process group).
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("BENCH_HARNESS", "/work/shared/bench"))
os.environ.setdefault("BENCH_RESULTS", str(HERE / "results"))
sys.path.insert(0, str(HARNESS))
import benchlib as B  # noqa: E402 - the shared harness's helpers (ports, processes, load generator)

TICK = os.sysconf("SC_CLK_TCK")


def server_cmd(kind, impl, rsock, host, port, extra=""):
    pre = f"{sys.executable} {HERE / 'as_rsock.py'}" if rsock else sys.executable
    return f"{pre} {HARNESS / 'peers.py'} {kind} {impl} --host {host} --port {port}{extra}"


def proc_times(pid):
    """(user s, system s, minor faults, {tid: (voluntary, involuntary context switches)}) of a process,
    all threads: /proc/PID/stat and /proc/PID/task/*/status."""
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    switches = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            st = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
            switches[task.name] = (int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError, ValueError):
            pass
    return int(rest[11]) / TICK, int(rest[12]) / TICK, int(rest[7]), switches


def switch_delta(a, b):
    """Context switches between two samples, over the threads alive at both (threads that start or end
    in between are left out, so this undercounts for thread-per-connection servers with churn)."""
    common = a.keys() & b.keys()
    return (sum(b[t][0] - a[t][0] for t in common), sum(b[t][1] - a[t][1] for t in common))


def start_server(kind, impl, rsock, host):
    port = B.free_port(host)
    name = ("rsock-" if rsock else "") + impl
    proc = B.Proc(server_cmd(kind, impl, rsock, host, port), name)
    err = B.wait_tcp_ready(proc, host, port) if kind == "tcp" else B.wait_udp_ready(proc, host, port)
    if err:
        proc.stop()
        raise SystemExit(f"{name}: {err}")
    return proc, port


def load_args(a, port, seconds, warmup, watch=None):
    mode = "tcp-echo" if a.kind == "tcp" else "udp-pingpong"
    args = [
        mode,
        "--addr",
        B.addr_str(a.host, port),
        "--conns",
        a.conns,
        "--size",
        a.size,
        "--duration",
        seconds,
        "--warmup",
        warmup,
    ]
    return args + (["--watch-pid", watch] if watch else [])


def cpu_split(a, rsock):
    proc, port = start_server(a.kind, a.impl, rsock, a.host)
    try:
        # the load generator's warm-up runs first; sample the counters around its measured window only
        # by running a warm-up pass, then a measured pass
        B.run_loadgen(load_args(a, port, a.warmup, 0), timeout=a.warmup + 30)
        t0 = proc_times(proc.pid)
        r = B.run_loadgen(load_args(a, port, a.seconds, 0, proc.pid), timeout=a.seconds + 30)
        t1 = proc_times(proc.pid)
    finally:
        proc.stop()
    n = r.get("requests") or 0
    if not r.get("ok", True) or not n:
        return None
    d = [y - x for x, y in zip(t0[:3], t1[:3], strict=True)]
    vcsw, ivcsw = switch_delta(t0[3], t1[3])
    return {
        "rps": r["rps"],
        "user_us": d[0] / n * 1e6,
        "sys_us": d[1] / n * 1e6,
        "minflt": d[2] / n,
        "vcsw": vcsw / n,
        "ivcsw": ivcsw / n,
        "other": B.other_cpu(r),
        "client_cpu": r.get("client_cpu"),
    }


STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)\s*$")


def parse_strace(path):
    calls = {}
    for line in Path(path).read_text().splitlines():
        m = STRACE_LINE.match(line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    return calls


def strace_server(a, rsock, out):
    proc, port = start_server(a.kind, a.impl, rsock, a.host)
    st = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(out), "-p", str(proc.pid)], stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        time.sleep(0.5)  # let strace attach to every thread
        r = B.run_loadgen(load_args(a, port, a.seconds, 0), timeout=a.seconds + 60)
        time.sleep(0.2)
    finally:
        os.kill(st.pid, signal.SIGINT)  # strace detaches and writes its summary
        st.wait(10)
        proc.stop()
    return r.get("requests") or 0, parse_strace(out)


def strace_bulk(a, rsock, outdir):
    port = B.free_port(a.host)
    extra = f" --bytes {B.parse_size(a.bytes)} --bufsize {B.parse_size(a.bufsize)}"
    res = {}
    cmd = lambda role: server_cmd("bulk", a.impl, rsock, a.host, port, f" --role {role}" + extra)  # noqa: E731
    tag = "rsock" if rsock else "stdlib"
    rf, sf = outdir / f"strace-bulk-{tag}-recv.txt", outdir / f"strace-bulk-{tag}-send.txt"
    recv = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(rf), *cmd("recv").split()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while not B.tcp_listening(port) and time.monotonic() < deadline:
        time.sleep(0.01)
    send = subprocess.Popen(["strace", "-f", "-c", "-o", str(sf), *cmd("send").split()], start_new_session=True)
    out, _ = recv.communicate(timeout=300)
    send.wait(60)
    res["recv"], res["send"] = parse_strace(rf), parse_strace(sf)
    res["result"] = out.strip().splitlines()[-1] if out.strip() else ""
    return res


def table(per_unit, unit, min_count):
    names = sorted(
        {k for d in per_unit.values() for k in d}, key=lambda k: -max(d.get(k, (0, 0))[0] for d in per_unit.values())
    )
    lines = [
        f"| syscall | stdlib calls/{unit} | rsock calls/{unit} | stdlib errors/{unit} | rsock errors/{unit} |",
        "|---|---|---|---|---|",
    ]
    tot = {k: 0.0 for k in per_unit}
    for name in names:
        vals = {k: per_unit[k].get(name, (0.0, 0.0)) for k in per_unit}
        for k in vals:
            tot[k] += vals[k][0]
        if max(v[0] for v in vals.values()) < min_count:
            continue
        lines.append(
            f"| {name} | {vals['stdlib'][0]:.3f} | {vals['rsock'][0]:.3f} | {vals['stdlib'][1]:.3f} "
            f"| {vals['rsock'][1]:.3f} |"
        )
    lines.append(f"| **total** | {tot['stdlib']:.3f} | {tot['rsock']:.3f} | | |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["tcp", "udp", "bulk"])
    ap.add_argument("impl", help="peers.py implementation name (threads, selectors, socketserver, stdlib, ...)")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--size", default="1K")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per window")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=3, help="CPU-split repetitions per library (alternating)")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--bufsize", default="64K", help="bulk: buffer size")
    ap.add_argument("--bytes", default="256M", help="bulk: bytes per transfer")
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args(argv)
    B.check_loopback(a.host)
    B.ensure_loadgen()
    a.size = B.parse_size(a.size)
    outdir = HERE / "results" / "where_cost"
    outdir.mkdir(parents=True, exist_ok=True)

    if a.kind == "bulk":
        res = {lib: strace_bulk(a, lib == "rsock", outdir) for lib in ("stdlib", "rsock")}
        mib = B.parse_size(a.bytes) / (1 << 20)
        for role in ("recv", "send"):
            per = {lib: {k: (c / mib, e / mib) for k, (c, e) in res[lib][role].items()} for lib in res}
            print(
                f"\n### bulk {a.impl} role {role}, buffer {a.bufsize}, {a.bytes}: syscalls per MiB "
                f"(whole process incl. start-up)"
            )
            print(table(per, "MiB", 0.01))
        for lib in res:
            print(f"{lib} receiver result (under strace): {res[lib]['result']}")
        return 0

    label = f"{a.kind} {a.impl} c={a.conns} {B.fmt_size(a.size)}"
    runs = {"stdlib": [], "rsock": []}
    for rep in range(a.reps):
        for lib in ("stdlib", "rsock") if rep % 2 == 0 else ("rsock", "stdlib"):
            r = cpu_split(a, lib == "rsock")
            if r:
                runs[lib].append(r)
                B.log(
                    f"[{rep}] {lib:6} {label}: {r['rps']:>9,.0f} req/s  user {r['user_us']:.2f} µs/req  "
                    f"sys {r['sys_us']:.2f} µs/req  minflt {r['minflt']:.4f}/req  ctx-sw {r['vcsw']:.3f}+"
                    f"{r['ivcsw']:.3f}/req  other {r['other']}  client {r['client_cpu']}"
                )
    print(
        f"\n### {label}: server CPU per request without tracing (median of {a.reps}, /proc/PID/stat; "
        f"'quiet' = median over windows where other processes used <= {B.NOISE_THRESHOLD} cores)"
    )
    print(
        "| library | windows (quiet) | req/s | user µs/req | system µs/req | total µs/req | quiet total µs/req "
        "| minor faults/req | voluntary ctx switches/req* | involuntary/req* |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for lib, rs in runs.items():
        if rs:
            med = lambda k, xs=rs: statistics.median(r[k] for r in xs)  # noqa: E731
            quiet = [r for r in rs if (r["other"] or 0) <= B.NOISE_THRESHOLD]
            qt = f"{med('user_us', quiet) + med('sys_us', quiet):.2f}" if quiet else "—"
            print(
                f"| {lib} | {len(rs)} ({len(quiet)}) | {med('rps'):,.0f} | {med('user_us'):.2f} | {med('sys_us'):.2f} "
                f"| {med('user_us') + med('sys_us'):.2f} | {qt} | {med('minflt'):.4f} | {med('vcsw'):.3f} "
                f"| {med('ivcsw'):.3f} |"
            )
    print("(* over threads alive for the whole window)")
    if a.no_strace:
        return 0
    per, reqs = {}, {}
    for lib in ("stdlib", "rsock"):
        n, calls = strace_server(a, lib == "rsock", outdir / f"strace-{a.kind}-{a.impl}-{lib}.txt")
        reqs[lib] = n
        per[lib] = {k: (c / n, e / n) for k, (c, e) in calls.items()} if n else {}
    print(
        f"\n### {label}: syscalls per request under strace -f -c "
        f"(requests: stdlib {reqs['stdlib']:,}, rsock {reqs['rsock']:,})"
    )
    print(table(per, "req", 0.001))
    return 0


if __name__ == "__main__":
    sys.exit(main())
