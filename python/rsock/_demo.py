"""``python -m rsock demo``: the socket tutorial's TCP and UDP round trips on rsock, then the same
exchange timed on rsock and on the stdlib side by side, then rsock's TcpServer against the stdlib's
thread-per-connection server. Loopback only, everything in this one process; a few seconds at most.

The measuring functions here are shared with ``python -m rsock bench``, which runs more of them for longer.
"""

import socket as stdlib_socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress

import rsock

ROUND_TRIPS = 5_000
ROUND_TRIP_REPS = 3  # interleaved runs of each module, the median shown: one run's rate swings by a fifth
MESSAGE = b"hello, rsock"

# The server comparison: SERVER_REQUESTS request/reply exchanges of SERVER_MESSAGE spread over SERVER_CONNECTIONS
# client threads, each run cut short after SERVER_TIME_LIMIT seconds, the median of SERVER_REPS interleaved runs.
SERVER_CONNECTIONS = 8
SERVER_REQUESTS = 4_000
SERVER_TIME_LIMIT = 2.0
SERVER_REPS = 3
SERVER_MESSAGE = b"x" * 64

CLIENT_TIMEOUT = 5.0  # seconds: every client socket's timeout, so nothing here can hang


def _tcp_echo_server(mod, ready):
    """The tutorial's echo server: one client, echo until it closes."""
    with mod.socket(mod.AF_INET, mod.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        ready.append(server.getsockname())
        conn, _ = server.accept()
        with conn, suppress(ConnectionError):  # a client gone mid-exchange (Ctrl-C) ends it quietly
            while data := conn.recv(1024):
                conn.sendall(data)


def _udp_echo_server(mod, ready, count):
    with mod.socket(mod.AF_INET, mod.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        ready.append(server.getsockname())
        server.settimeout(CLIENT_TIMEOUT)
        for _ in range(count):
            try:
                data, addr = server.recvfrom(2048)
            except TimeoutError:
                return  # the client is gone
            if data == b"":  # the client's "no more" marker (see udp_round_trips)
                return
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


def tcp_round_trips(mod, count, time_limit=None):
    """Connects to an echo server and makes `count` round trips, or as many as fit in `time_limit` seconds;
    returns (first reply, trips per second)."""
    thread, address = _start(_tcp_echo_server, mod)
    with mod.create_connection(address, timeout=CLIENT_TIMEOUT) as client:
        client.setsockopt(mod.IPPROTO_TCP, mod.TCP_NODELAY, 1)
        client.sendall(MESSAGE)
        first = client.recv(1024)
        started = time.perf_counter()
        deadline = started + time_limit if time_limit else float("inf")
        done = 0
        while done < count and time.perf_counter() < deadline:
            client.sendall(MESSAGE)
            client.recv(1024)
            done += 1
        rate = done / (time.perf_counter() - started)
    thread.join(5)
    return first, rate


def udp_round_trips(mod, count, time_limit=None):
    """Sends `count` + 1 datagrams to an echo server (fewer if `time_limit` seconds run out), each waiting for
    its echo; returns (first reply, rate)."""
    thread, address = _start(_udp_echo_server, mod, count + 1)
    with mod.socket(mod.AF_INET, mod.SOCK_DGRAM) as client:
        client.settimeout(CLIENT_TIMEOUT)
        client.sendto(MESSAGE, address)
        first, _ = client.recvfrom(2048)
        started = time.perf_counter()
        deadline = started + time_limit if time_limit else float("inf")
        done = 0
        while done < count and time.perf_counter() < deadline:
            client.sendto(MESSAGE, address)
            client.recvfrom(2048)
            done += 1
        rate = done / (time.perf_counter() - started)
        if done < count:
            client.sendto(b"", address)  # tells the server to stop waiting for the rest
    thread.join(5)
    return first, rate


# --- servers: rsock.TcpServer / UdpServer against the stdlib's -----------------------------------------
# Each server runs in a process of its own, as a real server would, so the comparison is the servers'
# and not how well they share one interpreter with the clients. It serves until its stdin closes, answering each
# line read there with its CPU time so far: the process's own clock (time.process_time()), to the microsecond,
# where /proc counts clock ticks of 10 ms, coarse against the tens of milliseconds a server spends on a run here.

_SERVE_UNTIL_STDIN_CLOSES = """
import time
for _ in sys.stdin:
    print(time.process_time(), flush=True)
"""

_RSOCK_TCP = (
    """
import sys, rsock
server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
print(server.address[1], flush=True)
"""
    + _SERVE_UNTIL_STDIN_CLOSES
    + """
server.stop(5)
"""
)

_STDLIB_TCP = (
    """
import socketserver, sys, threading

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True

server = Server(("127.0.0.1", 0), Echo)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
"""
    + _SERVE_UNTIL_STDIN_CLOSES
    + """
server.shutdown()
server.server_close()
"""
)

_RSOCK_UDP = (
    """
import sys, rsock
server = rsock.UdpServer(("127.0.0.1", 0), lambda data, address: data)
server.start()
print(server.address[1], flush=True)
"""
    + _SERVE_UNTIL_STDIN_CLOSES
    + """
server.stop(5)
"""
)

_STDLIB_UDP = (
    """
import socket, sys, threading
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))

def serve():
    while True:
        data, address = sock.recvfrom(65536)
        sock.sendto(data, address)

threading.Thread(target=serve, daemon=True).start()
print(sock.getsockname()[1], flush=True)
"""
    + _SERVE_UNTIL_STDIN_CLOSES
)


class _Served:
    """A server process: its address and its CPU time so far."""

    def __init__(self, address, proc):
        self.address = address
        self.pid = proc.pid
        self._proc = proc

    def cpu_seconds(self):
        """The server's CPU time so far, as it reads it itself; NaN if it cannot say."""
        try:
            self._proc.stdin.write("\n")
            self._proc.stdin.flush()
            return float(self._proc.stdout.readline())
        except (OSError, ValueError):
            return float("nan")


@contextmanager
def _server_process(script):
    """Runs `script` (which prints its port, then serves until its stdin closes) in a child process."""
    # A session of its own: Ctrl-C at the terminal (SIGINT to the foreground process group) reaches only the parent,
    # which ends the child by closing its stdin; the child would otherwise die of it with a traceback.
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        port = proc.stdout.readline().strip()
        if not port:
            raise RuntimeError("the demo server did not start")
        yield _Served(("127.0.0.1", int(port)), proc)
    finally:
        # A server that died leaves a CPU-time question unsent in the buffer, which closing would flush into the
        # broken pipe, as Popen.communicate() knows.
        with suppress(BrokenPipeError):
            proc.stdin.close()
        try:
            proc.wait(CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def rsock_tcp_echo_server():
    """An rsock.TcpServer echoing every chunk it reads, in a process of its own."""
    return _server_process(_RSOCK_TCP)


def stdlib_tcp_echo_server():
    """socketserver.ThreadingTCPServer with an echo handler, in a process of its own."""
    return _server_process(_STDLIB_TCP)


def rsock_udp_echo_server():
    """An rsock.UdpServer sending every datagram back, in a process of its own."""
    return _server_process(_RSOCK_UDP)


def stdlib_udp_echo_server():
    """The tutorial's UDP echo loop (recvfrom, sendto) on a stdlib socket, in a process of its own."""
    return _server_process(_STDLIB_UDP)


def _run_clients(connections, exchange):
    """Runs `exchange(i, barrier)` in `connections` threads; re-raises the first exception one of them raised."""
    errors = []
    barrier = threading.Barrier(connections + 1, timeout=CLIENT_TIMEOUT)

    def client(i):
        try:
            exchange(i, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a client failed before the start: its error is raised below
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def tcp_server_rate(server, connections, requests, time_limit, message=SERVER_MESSAGE):
    """Makes up to `requests` request/reply exchanges with the TCP echo server `server` (a context manager
    yielding its address), spread over `connections` stdlib client threads, stopping after `time_limit`
    seconds; returns (exchanges done, exchanges whose reply differed from the request, exchanges per second,
    server CPU microseconds per exchange)."""
    done = [0] * connections
    wrong = [0] * connections
    per_connection = -(-requests // connections)
    with server as served:
        address = served.address
        cpu_before = served.cpu_seconds()

        def exchange(i, barrier):
            with stdlib_socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
                sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
                barrier.wait()
                deadline = time.perf_counter() + time_limit
                while done[i] < per_connection and time.perf_counter() < deadline:
                    sock.sendall(message)
                    reply = b""
                    while len(reply) < len(message):  # TCP may deliver the echo in pieces
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionError("the echo server closed the connection")
                        reply += chunk
                    done[i] += 1
                    wrong[i] += reply != message

        elapsed = _run_clients(connections, exchange)
        cpu = served.cpu_seconds() - cpu_before
    return sum(done), sum(wrong), sum(done) / elapsed, cpu / max(sum(done), 1) * 1e6


def udp_server_rate(server, clients, requests, time_limit, message=SERVER_MESSAGE):
    """Like tcp_server_rate() for a UDP echo server: each of `clients` threads sends a datagram and waits for
    its echo; a datagram lost (no echo within 1 s) counts as a wrong reply."""
    done = [0] * clients
    wrong = [0] * clients
    per_client = -(-requests // clients)
    with server as served:
        address = served.address
        cpu_before = served.cpu_seconds()

        def exchange(i, barrier):
            with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)
                sock.connect(address)
                barrier.wait()
                deadline = time.perf_counter() + time_limit
                while done[i] < per_client and time.perf_counter() < deadline:
                    sock.send(message)
                    try:
                        reply = sock.recv(65536)
                    except TimeoutError:
                        reply = None
                    done[i] += 1
                    wrong[i] += reply != message

        elapsed = _run_clients(clients, exchange)
        cpu = served.cpu_seconds() - cpu_before
    return sum(done), sum(wrong), sum(done) / elapsed, cpu / max(sum(done), 1) * 1e6


def compare_servers(rate_function, servers, reps, *args):
    """Runs `rate_function(server(), *args)` for each server factory in `servers`, `reps` times over,
    interleaved; returns ([(median rate, median server CPU µs per exchange) for each server], total wrong
    replies)."""
    rates = [[] for _ in servers]
    cpus = [[] for _ in servers]
    wrong = 0
    for _ in range(reps):
        for i, server in enumerate(servers):
            _, bad, rate, cpu = rate_function(server(), *args)
            rates[i].append(rate)
            cpus[i].append(cpu)
            wrong += bad
    return [(statistics.median(r), statistics.median(c)) for r, c in zip(rates, cpus, strict=True)], wrong


def run():
    """Runs the demo; returns the exit code (0 when every reply matched what was sent, else 1)."""
    print(f"rsock {rsock.__version__}: the socket tutorial with `import rsock as socket`\n")
    ok = True
    rows = []
    for name, exchange in (("TCP", tcp_round_trips), ("UDP", udp_round_trips)):
        rsock_rates, stdlib_rates = [], []
        for _ in range(ROUND_TRIP_REPS):
            reply, rate = exchange(rsock, ROUND_TRIPS)
            ok &= reply == MESSAGE
            rsock_rates.append(rate)
            stdlib_rates.append(exchange(stdlib_socket, ROUND_TRIPS)[1])
        print(f"{name} echo on 127.0.0.1: sent {MESSAGE!r}, got back {reply!r}")
        rows.append((name, statistics.median(rsock_rates), statistics.median(stdlib_rates)))
    print(
        f"\n{ROUND_TRIPS:,} round trips of {len(MESSAGE)} bytes, client and server threads in this process "
        f"(median of {ROUND_TRIP_REPS}):"
    )
    print(f"  {'':4} {'rsock':>14} {'stdlib socket':>14} {'ratio':>6}")
    for name, rsock_rate, stdlib_rate in rows:
        print(f"  {name:4} {rsock_rate:>12,.0f}/s {stdlib_rate:>12,.0f}/s {rsock_rate / stdlib_rate:>6.2f}")

    ((rsock_rate, rsock_cpu), (stdlib_rate, stdlib_cpu)), wrong = compare_servers(
        tcp_server_rate,
        [rsock_tcp_echo_server, stdlib_tcp_echo_server],
        SERVER_REPS,
        SERVER_CONNECTIONS,
        SERVER_REQUESTS,
        SERVER_TIME_LIMIT,
    )
    ok &= wrong == 0
    print(
        f"\nEcho servers, each in its own process: {SERVER_REQUESTS:,} requests of {len(SERVER_MESSAGE)} bytes over "
        f"{SERVER_CONNECTIONS} connections (median of {SERVER_REPS}):"
    )
    print(f"  {'server':<48} {'requests':>14} {'server CPU':>12} {'ratio':>6}")
    for label, rate, cpu in (
        ("rsock.TcpServer (one Rust I/O loop)", rsock_rate, rsock_cpu),
        ("socketserver.ThreadingTCPServer (a thread each)", stdlib_rate, stdlib_cpu),
    ):
        print(f"  {label:<48} {rate:>12,.0f}/s {cpu:>8.1f} µs/req {rate / stdlib_rate:>6.2f}")
    print("  (the clients are Python threads in this process; `python -m rsock bench` measures more)")
    print("\n" + ("all round trips matched" if ok else "MISMATCH: a reply differed from what was sent"))
    return 0 if ok else 1
