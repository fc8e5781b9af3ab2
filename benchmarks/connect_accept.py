#!/usr/bin/env python3
"""connect + accept + close cycles per second over loopback: stdlib ``socket`` vs rsock, one run.

    python benchmarks/connect_accept.py                 # 5 reps x 2 variants x {stdlib, rsock}
    python benchmarks/connect_accept.py --quick         # 3 reps, shorter windows
    python benchmarks/connect_accept.py --reps 7 --seconds 3 --out results/ca.json

One cycle, in one thread of one process (both ends use the library under test):

    c = socket.socket(AF_INET, SOCK_STREAM); c.connect(addr)     # variant "socket+connect"
    c = socket.create_connection(addr)                           # variant "create_connection"
    s, _ = listener.accept(); s.close(); c.close()

On loopback the three-way handshake completes inside connect(), so accept() never waits: the loop
measures what the library adds around socket/connect/accept4/close (object creation, address
conversion, the fileno adoption in accept(), getaddrinfo for create_connection), plus the kernel work,
which is the same for both. The server side closes first, so TIME_WAIT entries sit on the listening
port's 4-tuples; every measurement uses a fresh listening port, so no run inherits another's.

Each measurement is a fresh worker process (``python connect_accept.py --worker`` for the stdlib,
``python as_rsock.py connect_accept.py --worker`` for rsock: the same code, with rsock installed as
``socket``). It does --warmup cycles, then counts cycles until --count cycles or --seconds have passed,
and reports cycles/s and its own CPU time per cycle (user + system, all threads), plus how much CPU
other processes used meanwhile (/proc/stat). Windows where others used > 0.25 cores are measured once
more (as the shared harness does) and medians use undisturbed windows when there are at least two.
Repetitions alternate the order of stdlib and rsock.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
AS_RSOCK = HERE / "as_rsock.py"
IMPLS = ("stdlib", "rsock")
VARIANTS = ("socket+connect", "create_connection")
NOISE = 0.25  # cores used by other processes during a window
DEFAULTS = dict(reps=5, seconds=2.0, count=25000, warmup=500)
QUICK = dict(reps=3, seconds=0.8, count=15000, warmup=300)


def machine_busy_seconds():
    v = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ worker (runs in the child)


def worker(variant, count, seconds, warmup):
    import socket  # the stdlib, or rsock when started through as_rsock.py

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    addr = ls.getsockname()
    accept = ls.accept
    AF_INET, SOCK_STREAM = socket.AF_INET, socket.SOCK_STREAM
    new_socket, create_connection = socket.socket, socket.create_connection

    if variant == "socket+connect":

        def cycle():
            c = new_socket(AF_INET, SOCK_STREAM)
            c.connect(addr)
            s, _ = accept()
            s.close()
            c.close()

    elif variant == "create_connection":

        def cycle():
            c = create_connection(addr)
            s, _ = accept()
            s.close()
            c.close()

    else:
        raise SystemExit(f"unknown variant {variant!r}")

    for _ in range(warmup):
        cycle()
    deadline_check = 256  # look at the clock every 256 cycles
    m0, c0, t0 = machine_busy_seconds(), os.times(), time.perf_counter()
    end = t0 + seconds
    n = 0
    while n < count:
        for _ in range(min(deadline_check, count - n)):
            cycle()
        n += min(deadline_check, count - n)
        if time.perf_counter() >= end:
            break
    t1, c1, m1 = time.perf_counter(), os.times(), machine_busy_seconds()
    ls.close()
    wall = t1 - t0
    user, system = c1.user - c0.user, c1.system - c0.system
    print(
        json.dumps(
            {
                "ok": True,
                "module": f"{socket.socket.__module__}.{socket.socket.__qualname__}",
                "cycles": n,
                "wall": wall,
                "rate": n / wall,
                "user": user,
                "sys": system,
                "cpu_us_per_cycle": (user + system) / n * 1e6,
                "cpu_share": (user + system) / wall,
                "machine_busy": (m1 - m0) / wall,
            }
        ),
        flush=True,
    )


# ------------------------------------------------------------------ parent


def run_one(impl, variant, a):
    cmd = [sys.executable]
    if impl == "rsock":
        cmd.append(str(AS_RSOCK))
    cmd += [
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        "--count",
        str(a.count),
        "--seconds",
        str(a.seconds),
        "--warmup",
        str(a.warmup),
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + 60)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "worker timed out"}
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        return {"ok": False, "error": f"rc={p.returncode}: {p.stderr.strip()[-400:]}"}
    r = json.loads(lines[-1])
    r["other_cpu"] = round(max(0.0, r["machine_busy"] - r["cpu_share"]), 3)
    want = "rsock." if impl == "rsock" else "socket."
    if not r["module"].startswith(want):
        return {"ok": False, "error": f"worker ran on {r['module']}, expected {want}*"}
    return r


def summarize(runs):
    out = {}
    for impl in IMPLS:
        for variant in VARIANTS:
            rs = [
                r
                for r in runs
                if r["impl"] == impl and r["variant"] == variant and r.get("ok") and not r.get("superseded")
            ]
            if not rs:
                continue
            clean = [r for r in rs if r["other_cpu"] <= NOISE]
            use, is_clean = (clean, True) if len(clean) >= 2 else (rs, False)
            rates = [r["rate"] for r in use]
            med = statistics.median(rates)
            out[f"{impl}|{variant}"] = {
                "n": len(use),
                "n_all": len(rs),
                "clean": is_clean,
                "rate": med,
                "rates": rates,
                "spread": (max(rates) - min(rates)) / med,
                "cpu_us_per_cycle": statistics.median(r["cpu_us_per_cycle"] for r in use),
                "cpu_share": statistics.median(r["cpu_share"] for r in use),
                "other_cpu": statistics.median(r["other_cpu"] for r in use),
            }
    return out


def render(summary):
    lines = [
        "### connect + accept + close over loopback (one thread; median; ratio = rsock / stdlib)",
        "| variant | stdlib cycles/s | rsock cycles/s | ratio | stdlib CPU µs/cycle | rsock CPU µs/cycle "
        "| CPU ratio | spread stdlib / rsock |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        s, r = summary.get(f"stdlib|{variant}"), summary.get(f"rsock|{variant}")
        if not s or not r:
            lines.append(f"| {variant} | fail | | | | | | |")
            continue
        mark = lambda v: "" if v["clean"] else " ~"  # noqa: E731
        lines.append(
            f"| {variant} | {s['rate']:,.0f}{mark(s)} | {r['rate']:,.0f}{mark(r)} | {r['rate'] / s['rate']:.2f} "
            f"| {s['cpu_us_per_cycle']:.1f} | {r['cpu_us_per_cycle']:.1f} "
            f"| {r['cpu_us_per_cycle'] / s['cpu_us_per_cycle']:.2f} "
            f"| {s['spread'] * 100:.0f}% / {r['spread'] * 100:.0f}% |"
        )
    lines.append("(~ = fewer than 2 undisturbed windows; the median includes disturbed ones)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"short run: {QUICK}")
    ap.add_argument("--reps", type=int, help=f"repetitions, alternating order (default {DEFAULTS['reps']})")
    ap.add_argument("--seconds", type=float, help=f"max measured seconds per window (default {DEFAULTS['seconds']})")
    ap.add_argument("--count", type=int, help=f"max cycles per window (default {DEFAULTS['count']})")
    ap.add_argument("--warmup", type=int, help=f"cycles before the window (default {DEFAULTS['warmup']})")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    ap.add_argument("--retries", type=int, default=1, help=f"re-measure when others used > {NOISE} cores")
    ap.add_argument("--out", help="results JSON path (default benchmarks/results/connect-accept-<time>.json)")
    ap.add_argument("--worker", metavar="VARIANT", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.worker:
        worker(a.worker, a.count, a.seconds, a.warmup)
        return 0

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    runs, t0 = [], time.monotonic()
    env = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": sys.version.split()[0],
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpus": os.cpu_count(),
    }
    for rep in range(a.reps):
        order = IMPLS if rep % 2 == 0 else IMPLS[::-1]
        for variant in variants:
            for impl in order:
                tries = 0
                while True:
                    r = run_one(impl, variant, a)
                    r.update(impl=impl, variant=variant, rep=rep)
                    runs.append(r)
                    if r.get("ok"):
                        print(
                            f"[{rep}] {impl:6} {variant:17}: {r['rate']:>9,.0f} cycles/s  "
                            f"{r['cpu_us_per_cycle']:6.1f} µs CPU/cycle  other {r['other_cpu']}",
                            file=sys.stderr,
                            flush=True,
                        )
                    else:
                        print(f"[{rep}] {impl:6} {variant:17}: FAIL {r.get('error')}", file=sys.stderr, flush=True)
                    if not r.get("ok") or r["other_cpu"] <= NOISE or tries >= a.retries:
                        break
                    print(
                        f"    disturbed (others used {r['other_cpu']} cores); measuring again",
                        file=sys.stderr,
                        flush=True,
                    )
                    r["superseded"] = True
                    tries += 1
                    time.sleep(0.5)
    env["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    env["wall_seconds"] = round(time.monotonic() - t0, 1)
    summary = summarize(runs)
    out = Path(a.out) if a.out else HERE / "results" / f"connect-accept-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in ("reps", "seconds", "count", "warmup", "retries")}
    settings["variants"] = variants
    out.write_text(
        json.dumps(
            {
                "bench": "connect-accept",
                "argv": sys.argv,
                "settings": settings,
                "env": env,
                "summary": summary,
                "runs": runs,
            },
            indent=1,
        )
    )
    print(render(summary))
    fails = [r for r in runs if not r.get("ok")]
    if fails:
        print(f"\n{len(fails)} failed run(s); see {out}")
    disturbed = sum(1 for r in runs if r.get("ok") and r["other_cpu"] > NOISE)
    print(
        f"\nraw results: {out}  (wall {env['wall_seconds']} s, {disturbed}/{len(runs)} windows disturbed, "
        f"loadavg start {env['loadavg_start']} end {env['loadavg_end']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
