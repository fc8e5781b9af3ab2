"""Client side of asyncio: one connection, sequential request/response, client CPU per round trip.

    python benchmarks/aio_client_bench.py                    # default loop and uvloop, 1 KiB
    python benchmarks/aio_client_bench.py --size 64 --duration 3 --reps 5

The server is the harness's native Rust echo server (loadgen serve-tcp), the same for every client, so
the clients are what differs. Each client runs in a fresh process and measures its own CPU time
(getrusage, user + system) over a fixed window:

  asyncio-streams   asyncio.open_connection: write(), drain(), readexactly()
  rsock-streams     rsock.aio.open_connection: the same code
  rsock-client      rsock.aio.TcpClient with framing="length": request()

Repetitions alternate the clients; medians and ratios to asyncio-streams are printed. Loopback only;
every run is bounded in time.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from chat_bench import free_port  # this folder's

LOADGEN = os.environ.get("BENCH_LOADGEN", "/work/shared/bench/loadgen/target/release/loadgen")
CLIENTS = ("asyncio-streams", "rsock-streams", "rsock-client")
LOOPS = ("asyncio", "uvloop")


async def _run_client(kind, port, size, duration, warmup):
    import asyncio

    message = b"x" * size
    if kind == "rsock-client":
        from rsock import aio

        # The echo server sends the length-prefixed frame back as it is: a valid reply frame.
        client = await aio.TcpClient.connect(("127.0.0.1", port), framing="length")

        async def round_trip():
            await client.request(message)

        closing = client.close
    else:
        if kind == "asyncio-streams":
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            from rsock import aio

            reader, writer = await aio.open_connection("127.0.0.1", port)

        async def round_trip():
            writer.write(message)
            await writer.drain()
            await reader.readexactly(size)

        async def closing():
            writer.close()
            await writer.wait_closed()

    end_warmup = time.monotonic() + warmup
    while time.monotonic() < end_warmup:
        await round_trip()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < duration:
        for _ in range(100):
            await round_trip()
        done += 100
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    await closing()
    return {"round_trips_per_s": done / elapsed, "client_us_per_round_trip": cpu / done * 1e6}


def client_main(args):
    import asyncio

    coro = _run_client(args.client, args.port, args.size, args.duration, args.warmup)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    port = free_port()
    server = subprocess.Popen([LOADGEN, "serve-tcp", "--port", str(port), "--threads", "1", "--max-seconds", "900"])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        results = {(loop, kind): [] for loop in LOOPS for kind in CLIENTS}
        for rep in range(args.reps):
            order = list(results)
            order = order[rep % len(order) :] + order[: rep % len(order)]
            for loop, kind in order:
                command = [sys.executable, __file__, "--client", kind, "--port", str(port), "--loop", loop]
                command += ["--size", str(args.size), "--duration", str(args.duration), "--warmup", str(args.warmup)]
                out = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                result = json.loads(out.stdout)
                results[(loop, kind)].append(result)
                print(
                    f"[{rep}] {loop:8} {kind:16} {result['round_trips_per_s']:>9,.0f} round trips/s "
                    f"{result['client_us_per_round_trip']:6.1f} µs client CPU",
                    flush=True,
                )
    finally:
        server.kill()
        server.wait(10)
    print(f"\nsequential request/response, {args.size} B, one connection, median of {args.reps}")
    print("| loop | client | round trips/s | client CPU µs per round trip | CPU ratio vs asyncio-streams |")
    print("|---|---|---|---|---|")
    for loop in LOOPS:
        base = statistics.median(r["client_us_per_round_trip"] for r in results[(loop, "asyncio-streams")])
        for kind in CLIENTS:
            rate = statistics.median(r["round_trips_per_s"] for r in results[(loop, kind)])
            cpu = statistics.median(r["client_us_per_round_trip"] for r in results[(loop, kind)])
            print(f"| {loop} | {kind} | {rate:,.0f} | {cpu:.1f} | {cpu / base:.2f} |")


if __name__ == "__main__":
    main()
