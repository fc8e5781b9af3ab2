"""TcpServer.broadcast() called from a Python thread of the server's process (a ticker pushing updates).

    python benchmarks/broadcast_bench.py --peers 100 --count 2000 --size 64

Starts a TcpServer in this process and the peers in another process, which reads everything on all of
them with one selector; then this process's main thread broadcasts `count` messages (1 ms pause every
100) and waits until every peer has all of them. Prints the time one broadcast() call takes (the main
thread holds the GIL for all of it) and this process's CPU time per delivery (a message reaching one
peer), the main thread's and rsock's io thread's together. Loopback only; bounded by count and a 60 s
deadline in the reader.
"""

import argparse
import subprocess
import sys
import time

import rsock

READER = r"""
import selectors, socket, sys, time
port, peers, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(peers)]
print("ready", flush=True)
selector = selectors.DefaultSelector()
received = {}
for sock in socks:
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
    received[sock] = 0
deadline = time.monotonic() + 60
while min(received.values()) < total and time.monotonic() < deadline:
    for key, _ in selector.select(1):
        received[key.fileobj] += len(key.fileobj.recv(1 << 20))
print("done", sum(received.values()), flush=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    total = args.count * args.size
    with rsock.TcpServer(("127.0.0.1", 0), None, max_connections=args.peers + 10) as server:
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(server.address[1]), str(args.peers), str(total)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if reader.stdout.readline().strip() != "ready":
                sys.exit("the peers did not connect")
            deadline = time.monotonic() + 10
            while server.stats["active"] < args.peers:
                if time.monotonic() > deadline:
                    sys.exit(f"only {server.stats['active']} of {args.peers} peers connected")
                time.sleep(0.01)
            message = b"x" * args.size
            cpu_started = time.process_time()
            in_calls = 0.0
            for i in range(args.count):
                called = time.perf_counter()
                server.broadcast(message)
                in_calls += time.perf_counter() - called
                if i % 100 == 99:
                    time.sleep(0.001)
            word, count = reader.stdout.readline().split()
            cpu = time.process_time() - cpu_started
        finally:
            reader.wait(70)
    if word != "done" or int(count) != args.peers * total:
        sys.exit(f"the peers received {count} bytes of {args.peers * total}")
    deliveries = args.peers * args.count
    print(
        f"{args.peers} peers, {args.count} broadcasts of {args.size} B: broadcast() call "
        f"{in_calls / args.count * 1e6:.1f} µs, CPU per delivery {cpu / deliveries * 1e6:.3f} µs"
    )


if __name__ == "__main__":
    main()
