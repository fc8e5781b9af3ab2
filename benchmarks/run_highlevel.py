"""rsock's high-level servers and rsock.aio against the peers, in the shared harness's runs.

    python benchmarks/run_highlevel.py            # everything, ~11 minutes on a quiet machine
    python benchmarks/run_highlevel.py --quick    # one repetition of each, a few minutes
    python benchmarks/run_highlevel.py --only echo-c10,chat

Each stage is one command (the harness's echo_bench.py / udp_bench.py with rsock's servers plugged in,
or one of this folder's own benchmarks); its output goes to results/highlevel-<time>/<stage>.txt (and
.json where the harness writes one). The stages:

  echo-c10     TcpServer (Python handler) vs the Rust reference and every peer, c=10, 64 B/1 KiB/100 KiB
  echo-c100    the same at 100 connections, 1 KiB
  echo-cold    fresh processes (no warm-up connection), c=10, 64 B and 100 KiB
  udp          UdpServer vs the stdlib loop and the protocol peers: ping-pong and blast, 64 B
  aio-streams  rsock.aio start_server streams (default loop and uvloop) vs asyncio/uvloop streams
  aio-cold     the same, fresh processes
  aio-client   client CPU per sequential round trip: rsock.aio vs asyncio streams
  chat         chat room, 100 clients, 1,000 lines/s: rsock broadcast vs a uvloop Protocol chat
  chat-saturated  the same offered 16,000 lines/s (1.58 million deliveries/s), beyond what a uvloop chat delivers
  idle         resident memory per idle connection, 10,000 connections
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("BENCH_HARNESS", "/work/shared/bench"))
PY = sys.executable
RSOCK_TCP = f"rsock-TcpServer={PY} {HERE}/rsock_servers.py tcp-echo --port {{port}}"
RSOCK_UDP = f"rsock-UdpServer={PY} {HERE}/rsock_servers.py udp-echo --port {{port}}"
AIO_ASYNCIO = f"rsock-aio-streams={PY} {HERE}/aio_servers.py tcp-streams --port {{port}}"
AIO_UVLOOP = f"rsock-aio-streams-uvloop={PY} {HERE}/aio_servers.py tcp-streams --loop uvloop --port {{port}}"


def stages(reps, duration):
    echo = [PY, str(HARNESS / "echo_bench.py"), "--reps", str(reps), "--duration", str(duration)]
    peers = "rust-tokio-1t,uvloop-protocol,rloop-protocol,asyncio-protocol,selectors,socketserver"
    return {
        "echo-c10": [*echo, "--servers", peers, "--server", RSOCK_TCP, "--sizes", "64,1K,100K",
                     "--concurrency", "10", "--baseline", "rust-tokio-1t"],
        "echo-c100": [*echo, "--servers", peers, "--server", RSOCK_TCP, "--sizes", "1K", "--concurrency", "100",
                      "--baseline", "socketserver"],
        "echo-cold": [*echo, "--cold", "--servers", "rust-tokio-1t,uvloop-protocol,rloop-protocol,asyncio-protocol",
                      "--server", RSOCK_TCP, "--sizes", "64,100K", "--concurrency", "10",
                      "--baseline", "rust-tokio-1t"],
        "udp": [PY, str(HARNESS / "udp_bench.py"), "--reps", str(reps), "--duration", str(duration),
                "--servers", "stdlib,uvloop-protocol,rloop-protocol,asyncio-protocol", "--server", RSOCK_UDP,
                "--modes", "pingpong,blast", "--sizes", "64", "--concurrency", "10", "--baseline", "stdlib"],
        "aio-streams": [*echo, "--servers", "asyncio-streams,uvloop-streams,rloop-streams",
                        "--server", AIO_ASYNCIO, "--server", AIO_UVLOOP, "--sizes", "1K,100K",
                        "--concurrency", "10", "--baseline", "asyncio-streams"],
        "aio-cold": [*echo, "--cold", "--servers", "asyncio-streams,uvloop-streams", "--server", AIO_ASYNCIO,
                     "--server", AIO_UVLOOP, "--sizes", "1K,100K", "--concurrency", "10",
                     "--baseline", "asyncio-streams"],
        "aio-client": [PY, str(HERE / "aio_client_bench.py"), "--reps", str(reps), "--duration", str(duration * 2)],
        "chat": [PY, str(HERE / "chat_bench.py"), "--reps", str(reps), "--duration", str(duration * 3),
                 "--rate", "1000"],
        # Offered well beyond what a uvloop chat delivers (about 400,000 deliveries/s on the faster machine
        # state, 170,000-210,000 on the slower), so that deliveries/s compares what each server can deliver.
        "chat-saturated": [PY, str(HERE / "chat_bench.py"), "--reps", str(reps), "--duration", str(duration * 3),
                           "--rate", "16000"],
        "idle": [PY, str(HERE / "idle_memory.py"), "--connections", "10000"],
    }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated stage names")
    args = parser.parse_args()
    reps, duration = (1, 0.5) if args.quick else (5, 1.0)
    todo = stages(reps, duration)
    if args.only:
        todo = {name: todo[name] for name in args.only.split(",")}
    out = HERE / "results" / f"highlevel-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    for name, command in todo.items():
        if str(HARNESS) in " ".join(command) and "--out" not in command and "bench.py" in command[1]:
            command = [*command, "--out", str(out / f"{name}.json")]
        print(f"== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        with open(out / f"{name}.txt", "w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=3600).returncode
        print(f"   rc {rc}, {time.monotonic() - started:.0f} s -> {out / (name + '.txt')}", flush=True)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
