"""Resident memory per idle connection held by one TcpServer.

    python benchmarks/idle_memory.py --connections 10000

Starts an echo TcpServer in its own process, measures its resident set size (VmRSS), opens the
connections from this process (they send nothing), measures again once the server reports them all
active, and prints the growth per connection. Kernel socket buffers are not part of a process's RSS;
this is what rsock itself (tokio task, buffers, the Python Connection object) costs per connection.
Raises this process's descriptor limit as far as the hard limit allows; loopback only.
"""

import argparse
import resource
import socket
import subprocess
import sys
import time

SERVER = """
import sys, rsock
server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data, max_connections=int(sys.argv[1]) + 10)
server.start()
print(server.address[1], flush=True)
for line in sys.stdin:
    print(server.stats["active"], flush=True)
server.stop(timeout=5)
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    limit = raise_fd_limit(args.connections + 256)
    if limit < args.connections + 64:
        sys.exit(f"descriptor limit {limit} is too low for {args.connections} connections")

    def raise_child_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.connections)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=raise_child_limit,
    )
    clients = []
    try:
        port = int(server.stdout.readline())

        def active():
            server.stdin.write("?\n")
            server.stdin.flush()
            return int(server.stdout.readline())

        # One connection first, so the runtime and its first allocations are in the baseline.
        clients.append(socket.create_connection(("127.0.0.1", port)))
        while active() != 1:
            time.sleep(0.05)
        before = rss_kib(server.pid)
        for _ in range(args.connections - 1):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        deadline = time.monotonic() + 60
        while active() != args.connections:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not register every connection in 60 s")
            time.sleep(0.1)
        after = rss_kib(server.pid)
        per_connection = (after - before) * 1024 / (args.connections - 1)
        print(f"{args.connections:,} idle connections: server RSS {before:,} KiB -> {after:,} KiB")
        print(f"resident memory per connection: {per_connection / 1024:.2f} KiB ({per_connection:,.0f} bytes)")
    finally:
        for c in clients:
            c.close()
        server.stdin.close()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
