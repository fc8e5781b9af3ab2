"""Request loops of rsock's blocking clients against the stdlib socket's, on loopback.

    python benchmarks/client_requests.py [--requests 20000] [--reps 3]

One client thread sends a 64-byte request and waits for its reply, again and again, the way a script
talks to a server: rsock.UdpClient.request() and rsock.TcpClient.request() (line framing) against the
stdlib socket doing the same with sendto/recvfrom and sendall/recv, each against the same rsock echo
server running in its own process. Prints round trips per second and the client's CPU per round trip
(median of the repetitions, which alternate the clients). Loopback only; every loop is bounded by its
request count.
"""

import argparse
import socket
import statistics
import subprocess
import sys
import time

import rsock

SERVERS = {
    "udp": "rsock.UdpServer(('127.0.0.1', 0), lambda data, address: data)",
    "tcp": "rsock.TcpServer(('127.0.0.1', 0), lambda conn, data: data, framing='line')",
}
REQUEST = b"x" * 63 + b"\n"


def start_server(kind):
    code = f"import rsock, sys; s = {SERVERS[kind]}; s.start(); print(s.address[1], flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, ("127.0.0.1", int(proc.stdout.readline()))


def rsock_udp(address):
    client = rsock.UdpClient()
    return (lambda: client.request(REQUEST, address, timeout=10)), client.close


def stdlib_udp(address):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)

    def call():
        sock.sendto(REQUEST, address)
        return sock.recvfrom(65536)[0]

    return call, sock.close


def rsock_tcp(address):
    client = rsock.TcpClient.connect(address, timeout=10, framing="line")
    return (lambda: client.request(REQUEST[:-1])), client.close


def stdlib_tcp(address):
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call():
        sock.sendall(REQUEST)
        reply = b""
        while not reply.endswith(b"\n"):
            reply += sock.recv(65536)
        return reply

    return call, sock.close


CLIENTS = {
    "udp": {"rsock.UdpClient": rsock_udp, "stdlib socket": stdlib_udp},
    "tcp": {"rsock.TcpClient": rsock_tcp, "stdlib socket": stdlib_tcp},
}


def measure(make, address, requests):
    call, close = make(address)
    try:
        for _ in range(200):  # connection set up, caches warm
            call()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            call()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        close()
    return requests / wall, cpu / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print("| server | client | round trips/s | client CPU µs per round trip |")
    print("|---|---|---|---|")
    for kind, clients in CLIENTS.items():
        proc, address = start_server(kind)
        try:
            results = {name: [] for name in clients}
            for _ in range(args.reps):
                for name, make in clients.items():
                    results[name].append(measure(make, address, args.requests))
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
        for name, runs in results.items():
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"| rsock {kind.upper()} echo | {name} | {rate:,.0f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
