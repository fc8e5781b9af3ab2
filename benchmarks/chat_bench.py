"""Chat room benchmark: every line a client sends is delivered to every other client.

    python benchmarks/chat_bench.py                      # rsock vs uvloop Protocol, 100 clients
    python benchmarks/chat_bench.py --clients 100 --rate 1000 --duration 5 --reps 3

Two servers written the way a user would write them:
  rsock      rsock.TcpServer(framing="line") whose handler calls server.broadcast(line, exclude=conn):
             the fan-out (framing, one write per peer) is done in Rust.
  uvloop     an asyncio Protocol on uvloop that splits lines and writes each to every other transport.

The load is open-loop: the clients together send --rate lines per second (each client in turn), all
clients read everything they are sent, and the run measures deliveries per second (lines received by
all clients / time) and the server's CPU time per delivery (from /proc/<pid>/stat). Each server runs in
its own process; repetitions alternate the servers. Loopback only; every run is bounded in time.
"""

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGE = b"x" * 48 + b"\n"


def serve_rsock(port):
    import rsock

    server = None

    def on_message(conn, line):
        server.broadcast(line, exclude=conn)

    server = rsock.TcpServer(("127.0.0.1", port), on_message, framing="line", backlog=1024)
    server.serve_forever()


def serve_uvloop(port):
    import asyncio

    import uvloop

    members = set()

    class Chat(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.partial = b""
            members.add(transport)

        def data_received(self, data):
            data = self.partial + data
            *lines, self.partial = data.split(b"\n")
            me = self.transport
            for line in lines:
                out = line + b"\n"
                for member in members:
                    if member is not me:
                        member.write(out)

        def connection_lost(self, exc):
            members.discard(self.transport)

    async def main():
        server = await asyncio.get_running_loop().create_server(Chat, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


SERVERS = {"rsock": serve_rsock, "uvloop": serve_uvloop}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port nothing is bound to (of `kind`), for a server started in another process."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, deadline=15):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def drive(port, clients, rate, duration, warmup):
    """Runs the load; returns deliveries per second over the measured window and that window's length."""
    socks = []
    for _ in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    time.sleep(0.2)  # let the server register everyone before the first line
    interval = 1.0 / rate
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + duration
    next_send, sender = start, 0
    received = measured = 0
    try:
        while True:
            now = time.monotonic()
            if now >= measure_to:
                break
            while next_send <= now:
                try:
                    socks[sender].send(MESSAGE)
                except BlockingIOError:
                    pass
                sender = (sender + 1) % clients
                next_send += interval
            for key, _ in sel.select(timeout=max(0.0, min(next_send, measure_to) - time.monotonic())):
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                lines = data.count(b"\n")
                received += lines
                if measure_from <= time.monotonic():
                    measured += lines
    finally:
        sel.close()
        for s in socks:
            s.close()
    return measured / duration


def run_one(name, args):
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "serve", name, "--port", str(port)])
    try:
        wait_listening(port)
        time.sleep(0.2)
        cpu_before = cpu_seconds(proc.pid)
        wall_before = time.monotonic()
        rate = drive(port, args.clients, args.rate, args.duration, args.warmup)
        cpu = cpu_seconds(proc.pid) - cpu_before
        wall = time.monotonic() - wall_before
        deliveries = rate * args.duration
        # CPU over the whole drive (warm-up included) per delivery over the whole drive, estimated
        # from the measured rate: the load is steady, so the two windows agree.
        per_delivery = cpu / (rate * wall) * 1e6 if rate else float("nan")
        return {
            "server": name,
            "deliveries_per_s": rate,
            "server_us_per_delivery": per_delivery,
            "deliveries": deliveries,
        }
    finally:
        proc.kill()
        proc.wait(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("server", choices=sorted(SERVERS))
    serve.add_argument("--port", type=int, required=True)
    parser.add_argument("--servers", default="rsock,uvloop")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000, help="lines sent per second, all clients together")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if args.command == "serve":
        SERVERS[args.server](args.port)
        return
    names = args.servers.split(",")
    results = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            result = run_one(name, args)
            results[name].append(result)
            print(
                f"[{rep}] {name:8} {result['deliveries_per_s']:>10,.0f} deliveries/s "
                f"{result['server_us_per_delivery']:6.2f} us server CPU per delivery",
                flush=True,
            )
    offered = args.rate * (args.clients - 1)
    print(f"\n{args.clients} clients, {args.rate:.0f} lines/s offered ({offered:,.0f} deliveries/s)")
    print("| server | deliveries/s | server CPU µs per delivery |")
    print("|---|---|---|")
    medians = {}
    for name in names:
        rate = statistics.median(r["deliveries_per_s"] for r in results[name])
        cpu = statistics.median(r["server_us_per_delivery"] for r in results[name])
        medians[name] = (rate, cpu)
        print(f"| {name} | {rate:,.0f} | {cpu:.2f} |")
    if "rsock" in medians and "uvloop" in medians:
        rate_ratio = medians["rsock"][0] / medians["uvloop"][0]
        cpu_ratio = medians["uvloop"][1] / medians["rsock"][1]
        print(f"\nrsock vs uvloop: deliveries/s x{rate_ratio:.2f}, CPU per delivery {cpu_ratio:.2f}x better")


if __name__ == "__main__":
    main()
