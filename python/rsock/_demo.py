"""``python -m rsock demo``: the socket tutorial's TCP and UDP round trips on rsock, then the same
exchange timed on rsock and on the stdlib side by side. Loopback only; a few seconds at most."""

import socket as stdlib_socket
import threading
import time

import rsock

ROUND_TRIPS = 5_000
MESSAGE = b"hello, rsock"


def _tcp_echo_server(mod, ready):
    """The tutorial's echo server: one client, echo until it closes."""
    with mod.socket(mod.AF_INET, mod.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        ready.append(server.getsockname())
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)


def _udp_echo_server(mod, ready, count):
    with mod.socket(mod.AF_INET, mod.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        ready.append(server.getsockname())
        for _ in range(count):
            data, addr = server.recvfrom(2048)
            server.sendto(data, addr)


def _start(target, *args):
    ready = []
    thread = threading.Thread(target=target, args=(*args[:1], ready, *args[1:]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not ready and time.monotonic() < deadline:
        time.sleep(0.001)
    if not ready:
        raise RuntimeError("demo server did not start")
    return thread, ready[0]


def tcp_round_trips(mod, count):
    """Connects to an echo server and makes `count` round trips; returns (first reply, trips per second)."""
    thread, address = _start(_tcp_echo_server, mod)
    with mod.create_connection(address, timeout=5) as client:
        client.setsockopt(mod.IPPROTO_TCP, mod.TCP_NODELAY, 1)
        client.sendall(MESSAGE)
        first = client.recv(1024)
        started = time.perf_counter()
        for _ in range(count):
            client.sendall(MESSAGE)
            client.recv(1024)
        rate = count / (time.perf_counter() - started)
    thread.join(5)
    return first, rate


def udp_round_trips(mod, count):
    """Sends `count` + 1 datagrams to an echo server, each waiting for its echo; returns (first reply, rate)."""
    thread, address = _start(_udp_echo_server, mod, count + 1)
    with mod.socket(mod.AF_INET, mod.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(MESSAGE, address)
        first, _ = client.recvfrom(2048)
        started = time.perf_counter()
        for _ in range(count):
            client.sendto(MESSAGE, address)
            client.recvfrom(2048)
        rate = count / (time.perf_counter() - started)
    thread.join(5)
    return first, rate


def run():
    print(f"rsock {rsock.__version__}: the socket tutorial with `import rsock as socket`\n")
    ok = True
    rows = []
    for name, exchange in (("TCP", tcp_round_trips), ("UDP", udp_round_trips)):
        reply, rsock_rate = exchange(rsock, ROUND_TRIPS)
        _, stdlib_rate = exchange(stdlib_socket, ROUND_TRIPS)
        ok &= reply == MESSAGE
        print(f"{name} echo on 127.0.0.1: sent {MESSAGE!r}, got back {reply!r}")
        rows.append((name, rsock_rate, stdlib_rate))
    print(f"\n{ROUND_TRIPS:,} round trips of {len(MESSAGE)} bytes, client and server threads in this process:")
    print(f"  {'':4} {'rsock':>14} {'stdlib socket':>14} {'ratio':>6}")
    for name, rsock_rate, stdlib_rate in rows:
        print(f"  {name:4} {rsock_rate:>12,.0f}/s {stdlib_rate:>12,.0f}/s {rsock_rate / stdlib_rate:>6.2f}")
    print("\n" + ("all round trips matched" if ok else "MISMATCH: a reply differed from what was sent"))
    return 0 if ok else 1
