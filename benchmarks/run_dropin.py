#!/usr/bin/env python3
"""rsock's drop-in vs the stdlib, same server code, same run: TCP echo, UDP, bulk, connect/accept.

    python benchmarks/run_dropin.py --quick          # ~2-4 minutes: smoke test of every row
    python benchmarks/run_dropin.py                  # full run (~18-24 minutes on the 2-vCPU dev VM)
    python benchmarks/run_dropin.py --report benchmarks/results/full-YYYYmmdd-HHMMSS   # re-print tables

Every comparison pairs a stdlib server from the shared harness (/work/shared/bench/peers.py, written
with ``import socket``) with the *same file* started through ``benchmarks/as_rsock.py``, which puts
rsock in ``sys.modules["socket"]`` first:

  echo_bench.py   socketserver, threads, selectors  vs  rsock-socketserver, rsock-threads, rsock-selectors
                  sizes 64,1K,16K,100K x concurrency 1,10, plus 1K at concurrency 100
  udp_bench.py    stdlib (blocking recvfrom/sendto)  vs  rsock-stdlib: ping-pong 64/1400 B at c=1,10, blast
  bulk_bench.py   stdlib-recv_into (both roles)      vs  rsock-recv_into: 1 GiB, buffers 16K..1M, + iperf3
  connect_accept.py  connect+accept+close cycles/s, stdlib vs rsock

The harness scripts run unmodified; the rsock servers are added with its --server / --impl options and
the stdlib ones are its own registry entries, with --baseline set to the stdlib servers. Raw JSON and the
harness's own tables go to benchmarks/results/<mode>-<time>/; this script then prints (and writes to
summary.md there) one table per benchmark with rsock/stdlib ratios of req/s and of server CPU per
request, per cell, against the targets (req/s >= 0.95x, CPU/request <= 1.05x; bulk 1 MiB >= 0.95x the
stdlib and >= 0.9x the iperf3 ceiling).
"""

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
AS_RSOCK = HERE / "as_rsock.py"
DEFAULT_HARNESS = Path(os.environ.get("BENCH_HARNESS", "/work/shared/bench"))

TCP_PAIRS = [("threads", "rsock-threads"), ("selectors", "rsock-selectors"), ("socketserver", "rsock-socketserver")]
UDP_PAIRS = [("stdlib", "rsock-stdlib")]
BULK_PAIR = ("stdlib-recv_into", "rsock-recv_into")
RPS_TARGET, CPU_TARGET = 0.95, 1.05
BULK_STDLIB_TARGET, BULK_CEILING_TARGET = 0.95, 0.90
CLIENT_BOUND = 0.9  # load generator CPU share at/above which a cell is client-bound (harness's †)


def mark(x):
    """The harness's cell marks: † client-bound, ~ median includes disturbed windows."""
    return ("†" if (x.get("client_cpu") or 0) >= CLIENT_BOUND else "") + ("" if x.get("clean", True) else "~")


FULL = {
    "reps": 5,
    "echo_sizes": "64,1K,16K,100K",
    "echo_conc": "1,10",
    "c100_sizes": "1K",
    "bulk_bufsizes": "16K,64K,256K,1M",
}
QUICK = {"reps": 3, "echo_sizes": "1K,100K", "echo_conc": "10", "c100_sizes": "1K", "bulk_bufsizes": "64K,1M"}


def rsock_cmd(kind, impl, extra):
    """A harness command template running peers.py's `impl` unmodified on rsock."""
    return (
        f"{{python}} {shlex.quote(str(AS_RSOCK))} {{here}}/peers.py {kind} {impl}"
        f" --host {{host}} --port {{port}}{extra}"
    )


def run_stage(name, argv, outdir, cwd):
    """Runs one harness/benchmark command; its progress goes to our stderr, its tables to <name>.md."""
    print(f"\n=== {name}: {' '.join(shlex.quote(a) for a in argv)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    (outdir / f"{name}.md").write_text(f"<!-- {' '.join(shlex.quote(a) for a in argv)} -->\n{p.stdout}")
    print(p.stdout, file=sys.stderr, flush=True)
    print(f"=== {name}: rc={p.returncode}, {wall:.0f} s", file=sys.stderr, flush=True)
    return {"name": name, "argv": argv, "rc": p.returncode, "wall": round(wall, 1)}


SNAPSHOT_CHECK = """
import os, sys
import rsock
assert rsock.__file__.startswith(os.environ["RSOCK_SNAPSHOT"]), rsock.__file__
a, b = rsock.socketpair()
a.sendall(b"x" * 70000)
n = 0
while n < 70000:
    n += len(b.recv(65536))
a.close(); b.close()
print(rsock.__version__)
"""


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git(repo, *args):
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def snapshot_rsock(outdir):
    """Copies the installed rsock package (Python files and the built extension) into outdir and checks
    that the copy imports and moves data; the whole run then uses the copy (RSOCK_SNAPSHOT), so it
    measures one build even if the working tree is rebuilt meanwhile. Returns its provenance."""
    p = subprocess.run(
        [sys.executable, "-c", "import rsock, os; print(os.path.dirname(rsock.__file__))"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RSOCK_SNAPSHOT"},
    )
    if p.returncode != 0:
        raise SystemExit(f"rsock does not import: {p.stderr.strip()[-500:]}")
    pkg = Path(p.stdout.strip())
    dest_root = outdir / "rsock-snapshot"
    for _attempt in range(10):
        before = {f.name: f.stat().st_mtime_ns for f in pkg.iterdir() if f.is_file()}
        shutil.rmtree(dest_root, ignore_errors=True)
        shutil.copytree(pkg, dest_root / "rsock", ignore=shutil.ignore_patterns("__pycache__"))
        after = {f.name: f.stat().st_mtime_ns for f in pkg.iterdir() if f.is_file()}
        env = dict(os.environ, RSOCK_SNAPSHOT=str(dest_root))
        chk = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);" + SNAPSHOT_CHECK, str(dest_root)],
            capture_output=True,
            text=True,
            env=env,
        )
        if before == after and chk.returncode == 0:
            break
        print(
            f"rsock snapshot not usable yet (tree changing or import failed: {chk.stderr.strip()[-300:]}); "
            "retrying in 15 s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(15)
    else:
        raise SystemExit("could not take a consistent rsock snapshot")
    repo = pkg.parent.parent
    sos = sorted((dest_root / "rsock").glob("_rsock*.so"))
    prov = {
        "package": str(pkg),
        "snapshot": str(dest_root),
        "version": chk.stdout.strip(),
        "git_head": _git(repo, "rev-parse", "--short", "HEAD"),
        "git_head_subject": _git(repo, "log", "-1", "--format=%s"),
        "git_dirty": (
            _git(repo, "status", "--porcelain", "--", "src", "python", "Cargo.toml", "Cargo.lock") or ""
        ).splitlines(),
        "extension": sos[0].name if sos else None,
        "extension_sha256": _sha256(sos[0]) if sos else None,
        "extension_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(sos[0].stat().st_mtime)) if sos else None,
        "python_sha256": {f.name: _sha256(f)[:16] for f in sorted((dest_root / "rsock").glob("*.py"))},
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (outdir / "rsock-build.json").write_text(json.dumps(prov, indent=1))
    os.environ["RSOCK_SNAPSHOT"] = str(dest_root)
    return prov, pkg


def reuse_snapshot(run_dir, outdir):
    """Measures the build frozen by an earlier run (so the two runs can be pooled)."""
    prov = load(run_dir / "rsock-build.json")
    snap = run_dir / "rsock-snapshot"
    sos = sorted((snap / "rsock").glob("_rsock*.so"))
    if not prov or not sos or _sha256(sos[0]) != prov["extension_sha256"]:
        raise SystemExit(f"{run_dir} has no intact rsock snapshot")
    prov = dict(prov, reused_from=str(run_dir), taken=prov["taken"])
    for k in ("tree_changed_during_run", "git_head_at_end"):
        prov.pop(k, None)
    (outdir / "rsock-build.json").write_text(json.dumps(prov, indent=1))
    os.environ["RSOCK_SNAPSHOT"] = str(snap)
    return prov, Path(prov["package"])


def run_all(a):
    harness = a.harness.resolve()
    cfg = dict(QUICK if a.quick else FULL)
    if a.reps:
        cfg["reps"] = a.reps
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = (HERE / "results" / f"{'quick' if a.quick else 'full'}-{stamp}").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    # The harness writes its raw JSON (and its servers' temporary stderr files) under BENCH_RESULTS:
    # keep all of that here, not in the shared harness directory.
    os.environ["BENCH_RESULTS"] = str(outdir)
    if a.reuse_snapshot:
        prov, pkg = reuse_snapshot(Path(a.reuse_snapshot).resolve(), outdir)
    else:
        prov, pkg = snapshot_rsock(outdir)
    print(
        f"rsock {prov['version']} at {prov['git_head']} ({len(prov['git_dirty'])} modified paths), extension "
        f"sha256 {prov['extension_sha256'][:16]}, snapshot {prov['snapshot']}",
        file=sys.stderr,
        flush=True,
    )
    py = sys.executable
    q = ["--quick"] if a.quick else []
    reps = ["--reps", str(cfg["reps"])] + (["--retries", str(a.retries)] if a.retries is not None else [])
    stages = []
    skip = set(a.skip.split(",")) if a.skip else set()
    if shutil.which("iperf3") is None:
        print("iperf3 not installed: bulk runs without its ceiling (apt-get install -y iperf3)", file=sys.stderr)

    tcp_servers = []
    for stdlib, rs in TCP_PAIRS:
        tcp_servers += ["--server", f"{rs}={rsock_cmd('tcp', stdlib, '')}"]
    tcp_common = [
        py,
        str(harness / "echo_bench.py"),
        *q,
        *reps,
        "--servers",
        ",".join(s for s, _ in TCP_PAIRS),
        *tcp_servers,
        "--baseline",
        ",".join(s for s, _ in TCP_PAIRS),
    ]
    if "echo" not in skip:
        stages.append(
            run_stage(
                "echo",
                [
                    *tcp_common,
                    "--sizes",
                    cfg["echo_sizes"],
                    "--concurrency",
                    cfg["echo_conc"],
                    "--out",
                    str(outdir / "echo.json"),
                ],
                outdir,
                harness,
            )
        )
        stages.append(
            run_stage(
                "echo-c100",
                [
                    *tcp_common,
                    "--sizes",
                    cfg["c100_sizes"],
                    "--concurrency",
                    "100",
                    "--out",
                    str(outdir / "echo-c100.json"),
                ],
                outdir,
                harness,
            )
        )
    if "udp" not in skip:
        udp = [
            py,
            str(harness / "udp_bench.py"),
            *q,
            *reps,
            "--servers",
            "stdlib",
            "--server",
            f"rsock-stdlib={rsock_cmd('udp', 'stdlib', '')}",
            "--baseline",
            "stdlib",
            "--out",
            str(outdir / "udp.json"),
        ]
        stages.append(run_stage("udp", udp, outdir, harness))
    if "bulk" not in skip:
        bulk = [
            py,
            str(harness / "bulk_bench.py"),
            *q,
            *reps,
            "--impls",
            BULK_PAIR[0],
            "--impl",
            f"{BULK_PAIR[1]}=" + rsock_cmd("bulk", BULK_PAIR[0], " --role {role} --bytes {bytes} --bufsize {bufsize}"),
            "--bufsizes",
            cfg["bulk_bufsizes"],
            "--out",
            str(outdir / "bulk.json"),
        ]
        stages.append(run_stage("bulk", bulk, outdir, harness))
    if "ca" not in skip:
        ca = [
            py,
            str(HERE / "connect_accept.py"),
            *q,
            "--reps",
            str(cfg["reps"] + 2),
            *reps[2:],
            "--out",
            str(outdir / "connect-accept.json"),
        ]
        stages.append(run_stage("connect-accept", ca, outdir, HERE))
    sos = sorted(pkg.glob("_rsock*.so"))
    prov["tree_changed_during_run"] = bool(sos) and _sha256(sos[0]) != prov["extension_sha256"]
    prov["git_head_at_end"] = _git(pkg.parent.parent, "rev-parse", "--short", "HEAD")
    (outdir / "rsock-build.json").write_text(json.dumps(prov, indent=1))
    cfg["retries"] = a.retries if a.retries is not None else "harness default (1)"
    cfg["skipped"] = sorted(skip)
    (outdir / "stages.json").write_text(
        json.dumps({"mode": "quick" if a.quick else "full", "config": cfg, "stages": stages}, indent=1)
    )
    return outdir


def pool(into, dirs, harness):
    """Pools several runs' files, benchmark by benchmark, with the harness's combine.py (connect_accept
    results are merged here the same way: every file's repetitions become repetitions of one run)."""
    into = Path(into).resolve()
    into.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_RESULTS"] = str(into)
    dirs = [Path(d).resolve() for d in dirs]
    builds = [load(d / "rsock-build.json") for d in dirs]
    shas = {b["extension_sha256"] if b else None for b in builds}
    if len(shas) != 1 or None in shas:
        raise SystemExit(f"refusing to pool runs of different (or unrecorded) rsock builds: {sorted(map(str, shas))}")
    (into / "rsock-build.json").write_text(json.dumps(dict(builds[0], pooled_from=[str(d) for d in dirs]), indent=1))
    for name in ("echo", "echo-c100", "udp", "bulk"):
        files = [str(d / f"{name}.json") for d in dirs if (d / f"{name}.json").exists()]
        if not files:
            continue
        p = subprocess.run(
            [sys.executable, str(harness / "combine.py"), *files, "--out", str(into / f"{name}.json")],
            cwd=harness,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        (into / f"{name}.md").write_text(p.stdout)
    files = [d / "connect-accept.json" for d in dirs if (d / "connect-accept.json").exists()]
    if files:
        sys.path.insert(0, str(HERE))
        import connect_accept as CA

        datas = [json.loads(f.read_text()) for f in files]
        runs = [dict(r, rep=f"{i}.{r['rep']}", source=str(files[i])) for i, d in enumerate(datas) for r in d["runs"]]
        (into / "connect-accept.json").write_text(
            json.dumps(
                {
                    "bench": "connect-accept",
                    "pooled_from": [str(f) for f in files],
                    "settings": datas[0]["settings"],
                    "env": {},
                    "summary": CA.summarize(runs),
                    "runs": runs,
                },
                indent=1,
            )
        )
    stages = [json.loads((d / "stages.json").read_text()) for d in dirs if (d / "stages.json").exists()]
    (into / "stages.json").write_text(
        json.dumps(
            {
                "mode": "pooled",
                "config": {"from": [str(d) for d in dirs]},
                "stages": [
                    dict(s, name=f"{Path(dirs[i]).name}/{s['name']}")
                    for i, st in enumerate(stages)
                    for s in st["stages"]
                ],
            },
            indent=1,
        )
    )
    return into


# ------------------------------------------------------------------ report


def load(path):
    return json.loads(path.read_text()) if path.exists() else None


def other_cpu(r):
    if "other_cpu" in r:
        return r["other_cpu"]
    mb, cc, sc = r.get("machine_busy"), r.get("client_cpu"), r.get("server_cpu")
    return None if None in (mb, cc, sc) else max(0.0, mb - cc - sc)


def per_rep_ratios(runs, match_a, match_b, field):
    """rsock/stdlib ratio of `field` within each repetition (reps are interleaved, so the two ran close
    together); per repetition the least disturbed window of each side is used."""

    def best(match):
        out = {}
        for r in runs:
            if match(r) and r.get("ok") and r.get(field):
                o = other_cpu(r) or 0.0
                if r["rep"] not in out or o < out[r["rep"]][0]:
                    out[r["rep"]] = (o, r[field])
        return out

    a, b = best(match_a), best(match_b)
    return [b[k][1] / a[k][1] for k in sorted(a) if k in b]


def reps_label(d):
    if d.get("pooled_from"):
        n = len({r["rep"] for r in d.get("runs", [])})
        k = len(d["pooled_from"])
        return f"median of {n} interleaved reps pooled from {k} run{'s' if k > 1 else ''}"
    return f"median of {d['settings']['reps']} interleaved reps"


def fmt_range(xs):
    return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "—"


def verdict(rps_ratio, cpu_ratio, clean=True):
    """'met' / 'MISSED (...)'; cells whose median had to include disturbed windows say so."""
    bad = []
    if rps_ratio is not None and rps_ratio < RPS_TARGET:
        bad.append(f"req/s {rps_ratio:.2f}")
    if cpu_ratio is not None and cpu_ratio > CPU_TARGET:
        bad.append(f"CPU {cpu_ratio:.2f}")
    v = "met" if not bad else "MISSED (" + ", ".join(bad) + ")"
    return v if clean else v + " ~disturbed"


def size_label(n):
    for unit, m in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n} B"


def noise_note(name, d):
    runs = d.get("runs", [])
    superseded = sum(1 for r in runs if r.get("superseded"))
    summ = d.get("summary") or {}
    unclean = [k for k, v in summ.items() if isinstance(v, dict) and v.get("clean") is False]
    env = d.get("env", {})
    fails = len(d.get("failures", [])) if "failures" in d else sum(1 for r in runs if not r.get("ok"))
    return (
        f"{name}: {len(runs)} windows, {superseded} disturbed and re-measured, "
        f"{len(unclean)} cells with < 2 undisturbed windows{(' (' + ', '.join(unclean) + ')') if unclean else ''}, "
        f"{fails} failed"
        + (
            f"; wall {env['wall_seconds']} s; loadavg {env.get('loadavg_start')} -> {env.get('loadavg_end')}"
            if env.get("wall_seconds")
            else ""
        )
    )


def echo_rows(d, pairs):
    rows, summ, runs = [], d["summary"], d["runs"]
    concs, sizes = d["settings"]["concurrency"], d["settings"]["sizes"]
    for base, rs in pairs:
        if base not in d.get("servers", {base: 1}) and rs not in d.get("servers", {rs: 1}):
            continue
        for c in concs:
            for s in sizes:
                v, w = summ.get(f"{base}|{c}|{s}"), summ.get(f"{rs}|{c}|{s}")
                if not v or not w:
                    rows.append([base, f"c={c} {size_label(s)}", "fail", "", "", "", "", "", "", "", ""])
                    continue
                rr = w["rps"] / v["rps"]
                cr = (
                    w["server_us_per_req"] / v["server_us_per_req"]
                    if v.get("server_us_per_req") and w.get("server_us_per_req")
                    else None
                )
                reps = per_rep_ratios(
                    runs,
                    lambda r, n=base, c=c, s=s: r["server"] == n and r["conc"] == c and r["size"] == s,
                    lambda r, n=rs, c=c, s=s: r["server"] == n and r["conc"] == c and r["size"] == s,
                    "rps",
                )
                rows.append(
                    [
                        base,
                        f"c={c} {size_label(s)}",
                        f"{v['rps']:,.0f}{mark(v)}",
                        f"{w['rps']:,.0f}{mark(w)}",
                        f"**{rr:.2f}**",
                        fmt_range(reps),
                        f"{v['server_us_per_req']:.1f}",
                        f"{w['server_us_per_req']:.1f}",
                        f"**{cr:.2f}**" if cr else "—",
                        f"{v['spread'] * 100:.0f}% / {w['spread'] * 100:.0f}%",
                        verdict(rr, cr, v.get("clean", True) and w.get("clean", True)),
                    ]
                )
    return rows


ECHO_HEAD = [
    "server (same code)",
    "cell",
    "stdlib req/s",
    "rsock req/s",
    "ratio",
    "per-rep ratios",
    "stdlib CPU µs/req",
    "rsock CPU µs/req",
    "CPU ratio",
    "spread stdlib / rsock",
    "target",
]


def md(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def report(outdir):
    outdir = Path(outdir)
    parts, notes, verdicts = [], [], []
    stages = load(outdir / "stages.json")
    prov = load(outdir / "rsock-build.json")
    if prov:
        parts.append(
            f"rsock build measured: {prov['version']} at commit {prov['git_head']} "
            f'("{prov.get("git_head_subject")}"), {len(prov["git_dirty"])} uncommitted paths in src/ '
            f"python/; extension sha256 {prov['extension_sha256'][:16]} built {prov['extension_mtime']}; "
            f"run from a snapshot taken {prov['taken']}"
            + (f" by {Path(prov['reused_from']).name}" if prov.get("reused_from") else "")
            + (
                f" (the working tree's build differed from it by the end of the run: "
                f"{prov['tree_changed_during_run']}; HEAD then {prov.get('git_head_at_end')})"
                if "tree_changed_during_run" in prov
                else ""
            )
            + "\n"
        )
    if stages:
        parts.append(
            f"Mode: {stages['mode']}, config {stages['config']}; stage wall times: "
            + ", ".join(f"{s['name']} {s['wall']:.0f} s (rc {s['rc']})" for s in stages["stages"])
        )
    titles = {"echo.json": "TCP echo", "echo-c100.json": "TCP echo, 100 connections"}
    echo_files = [
        f.name
        for f in sorted(
            outdir.glob("echo*.json"), key=lambda f: (list(titles).index(f.name) if f.name in titles else 9, f.name)
        )
    ]
    for fname in echo_files:
        title = titles.get(fname, f"TCP echo ({fname})")
        d = load(outdir / fname)
        if not d:
            continue
        rows = echo_rows(d, TCP_PAIRS)
        verdicts += [(f"{title}: {r[0]} {r[1]}", r[-1]) for r in rows]
        parts += [
            f"\n### {title}: rsock / stdlib, same peers.py server code "
            f"({reps_label(d)}; † = load generator ≥ 0.9 core, "
            f"client-bound; ~ = < 2 undisturbed windows)",
            md(ECHO_HEAD, rows),
        ]
        notes.append(noise_note(fname, d))
    for ufile in sorted(outdir.glob("udp*.json")):
        d = load(ufile)
        if not d:
            continue
        rows, summ = [], d["summary"]
        for base, rs in UDP_PAIRS:
            for mode, c, s in d["settings"]["cells"]:
                v, w = summ.get(f"{base}|{mode}|{c}|{s}"), summ.get(f"{rs}|{mode}|{c}|{s}")
                label = f"ping-pong c={c} {s} B" if mode == "pingpong" else f"blast {s} B"
                if not v or not w:
                    rows.append([base, label, "fail", "", "", "", "", "", "", "", ""])
                    continue
                rr = w["rps"] / v["rps"]
                cr = (
                    w["server_us_per_op"] / v["server_us_per_op"]
                    if v.get("server_us_per_op") and w.get("server_us_per_op")
                    else None
                )
                reps = per_rep_ratios(
                    d["runs"],
                    lambda r, k=(base, mode, c, s): (r["server"], r["mode"], r["conc"], r["size"]) == k,
                    lambda r, k=(rs, mode, c, s): (r["server"], r["mode"], r["conc"], r["size"]) == k,
                    "rps",
                )
                extra = (
                    f" (loss {v['loss'] * 100:.1f}% / {w['loss'] * 100:.1f}%)"
                    if mode == "blast" and v.get("loss") is not None and w.get("loss") is not None
                    else ""
                )
                rows.append(
                    [
                        base,
                        label + extra,
                        f"{v['rps']:,.0f}{mark(v)}",
                        f"{w['rps']:,.0f}{mark(w)}",
                        f"**{rr:.2f}**",
                        fmt_range(reps),
                        f"{v['server_us_per_op']:.2f}",
                        f"{w['server_us_per_op']:.2f}",
                        f"**{cr:.2f}**" if cr else "—",
                        f"{v['spread'] * 100:.0f}% / {w['spread'] * 100:.0f}%",
                        verdict(rr, cr, v.get("clean", True) and w.get("clean", True)),
                    ]
                )
        verdicts += [(f"UDP ({ufile.name}): {r[1]}", r[-1]) for r in rows]
        head = [h.replace("req", "datagram") for h in ECHO_HEAD]
        parts += [
            f"\n### UDP: rsock / stdlib, peers.py `udp stdlib` ({reps_label(d)}; "
            "blast rate = datagrams the server counted per second)",
            md(head, rows),
        ]
        notes.append(noise_note(ufile.name, d))
    d = load(outdir / "bulk.json")
    if d:
        summ, bufs = d["summary"], d["settings"]["bufsizes"]
        ceiling = summ.get("ceiling_gibps")
        rows = []
        for bs in bufs:
            v, w = summ.get(f"{BULK_PAIR[0]}|{bs}"), summ.get(f"{BULK_PAIR[1]}|{bs}")
            ip = (summ.get(f"iperf3 -l {size_label(bs)}") or {}).get("gibps")
            if not v or not w:
                rows.append([size_label(bs), "fail", "", "", "", "", "", "", ""])
                continue
            rr = w["gibps"] / v["gibps"]
            reps = per_rep_ratios(
                d["runs"],
                lambda r, bs=bs: r["impl"] == BULK_PAIR[0] and r["bufsize"] == bs,
                lambda r, bs=bs: r["impl"] == BULK_PAIR[1] and r["bufsize"] == bs,
                "gibps",
            )

            def rcpu(n, bs=bs):
                """median receiver CPU share over the undisturbed transfers (all when fewer than 2)"""
                rs = [
                    r
                    for r in d["runs"]
                    if r["impl"] == n and r["bufsize"] == bs and r.get("ok") and r.get("server_cpu") is not None
                ]
                clean = [r for r in rs if (other_cpu(r) or 0) <= 0.4]
                return statistics.median(
                    [r["server_cpu"] for r in (clean if len(clean) >= 2 else rs)] or [float("nan")]
                )

            target = ""
            if bs == max(bufs):
                ok1, ok2 = rr >= BULK_STDLIB_TARGET, (ceiling is None or w["gibps"] / ceiling >= BULK_CEILING_TARGET)
                target = (
                    "met"
                    if ok1 and ok2
                    else "MISSED ("
                    + ", ".join(
                        x
                        for x, ok in (
                            (f"vs stdlib {rr:.2f}", ok1),
                            (f"vs ceiling {w['gibps'] / ceiling:.2f}" if ceiling else "", ok2),
                        )
                        if not ok
                    )
                    + ")"
                )
                verdicts.append((f"bulk {size_label(bs)}", target))
            rows.append(
                [
                    size_label(bs),
                    f"{v['gibps']:.2f}{'' if v.get('clean', True) else '~'}",
                    f"{w['gibps']:.2f}{'' if w.get('clean', True) else '~'}",
                    f"**{rr:.2f}**",
                    fmt_range(reps),
                    f"{ip:.2f}" if ip else "—",
                    f"{w['gibps'] / ip:.2f}" if ip else "—",
                    f"{v['gibps'] / ceiling:.2f} / {w['gibps'] / ceiling:.2f}" if ceiling else "—",
                    f"{rcpu(BULK_PAIR[0]):.2f} / {rcpu(BULK_PAIR[1]):.2f}",
                    target,
                ]
            )
        parts += [
            f"\n### bulk: {size_label(d['settings']['bytes'])} over one loopback TCP connection, GiB/s "
            f"({reps_label(d)}; both roles run peers.py `bulk stdlib-recv_into`; "
            f"iperf3 ceiling = {ceiling:.2f} GiB/s)"
            if ceiling
            else "\n### bulk (no iperf3 ceiling)",
            md(
                [
                    "buffer",
                    "stdlib",
                    "rsock",
                    "ratio",
                    "per-rep ratios",
                    "iperf3 same buffer",
                    "rsock / iperf3 same buffer",
                    "vs ceiling stdlib / rsock",
                    "receiver CPU share stdlib / rsock (undisturbed)",
                    "target (1 MiB)",
                ],
                rows,
            ),
        ]
        notes.append(noise_note("bulk.json", d))
    d = load(outdir / "connect-accept.json")
    if d:
        summ = d["summary"]
        rows = []
        for variant in d["settings"]["variants"]:
            v, w = summ.get(f"stdlib|{variant}"), summ.get(f"rsock|{variant}")
            if not v or not w:
                rows.append([variant, "fail", "", "", "", "", "", "", ""])
                continue
            rr, cr = w["rate"] / v["rate"], w["cpu_us_per_cycle"] / v["cpu_us_per_cycle"]
            reps = per_rep_ratios(
                [r for r in d["runs"] if r.get("variant") == variant],
                lambda r: r["impl"] == "stdlib",
                lambda r: r["impl"] == "rsock",
                "rate",
            )
            rows.append(
                [
                    variant,
                    f"{v['rate']:,.0f}{'' if v['clean'] else '~'}",
                    f"{w['rate']:,.0f}{'' if w['clean'] else '~'}",
                    f"**{rr:.2f}**",
                    fmt_range(reps),
                    f"{v['cpu_us_per_cycle']:.1f}",
                    f"{w['cpu_us_per_cycle']:.1f}",
                    f"**{cr:.2f}**",
                    verdict(rr, cr, v["clean"] and w["clean"]),
                ]
            )
            verdicts.append((f"connect+accept+close ({variant})", rows[-1][-1]))
        parts += [
            f"\n### connect + accept + close, one thread, loopback ({reps_label(d)}, alternating order; "
            "CPU = the whole process, both ends)",
            md(
                [
                    "variant",
                    "stdlib cycles/s",
                    "rsock cycles/s",
                    "ratio",
                    "per-rep ratios",
                    "stdlib CPU µs/cycle",
                    "rsock CPU µs/cycle",
                    "CPU ratio",
                    "target",
                ],
                rows,
            ),
        ]
        runs = d["runs"]
        notes.append(
            f"connect-accept.json: {len(runs)} windows, {sum(1 for r in runs if r.get('superseded'))} "
            f"disturbed and re-measured"
            + (f"; wall {d['env']['wall_seconds']} s" if d["env"].get("wall_seconds") else "")
        )
    met = sum(1 for _, v in verdicts if v.startswith("met"))
    missed = [(k, v) for k, v in verdicts if not v.startswith("met")]
    unresolved = sum(1 for _, v in verdicts if v.endswith("~disturbed"))
    parts += [
        f"\n### targets: {met} of {len(verdicts)} rows met ({unresolved} rows' medians include disturbed "
        "windows: marked ~disturbed, not resolved by this run)"
    ]
    parts += [f"- {k}: {v}" for k, v in missed]
    parts += [
        "\n### noise (other processes' CPU during the windows; the harness re-measures a window (--retries times, "
        "default once) when others used > 0.25 cores, 0.4 for bulk)"
    ] + [f"- {n}" for n in notes]
    text = "\n".join(parts)
    (outdir / "summary.md").write_text(text + "\n")
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="short run (~2-4 min): harness --quick settings, echo 1K/100K at c=10 and 1K at c=100, bulk 64K/1M",
    )
    ap.add_argument("--reps", type=int, help="repetitions for every benchmark (full default 5, quick 3)")
    ap.add_argument("--skip", help="comma list of stages to skip: echo,udp,bulk,ca")
    ap.add_argument("--harness", type=Path, default=DEFAULT_HARNESS, help="the shared harness directory")
    ap.add_argument(
        "--retries",
        type=int,
        help="passed to every benchmark: re-measure a disturbed window up to N times (harness default 1)",
    )
    ap.add_argument(
        "--reuse-snapshot",
        metavar="RUN_DIR",
        help="measure the rsock build frozen by an earlier run (to pool the two runs)",
    )
    ap.add_argument("--report", metavar="DIR", help="only print the ratio tables of an earlier run's directory")
    ap.add_argument(
        "--pool",
        nargs="+",
        metavar="DIR",
        help="pool earlier runs' directories (harness combine.py) into --into and print the tables",
    )
    ap.add_argument("--into", help="output directory for --pool")
    a = ap.parse_args(argv)
    if a.report:
        print(report(a.report))
        return 0
    if a.pool:
        into = a.into or str(HERE / "results" / f"pooled-{time.strftime('%Y%m%d-%H%M%S')}")
        print(report(pool(into, a.pool, a.harness.resolve())))
        return 0
    t0 = time.monotonic()
    outdir = run_all(a)
    print(report(outdir))
    print(f"\nresults in {outdir} (total wall {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
