"""Load: 10,000 connections held open at once on one TcpServer, and 1,000,000 echo requests with every
reply checked.

The server runs in this process, so its descriptors and stats are what the test measures. The clients
run in child processes (CLIENT_SCRIPT, driven by `Clients`): the hard descriptor limit (20000 here)
cannot hold both ends of 10,000 connections in one process, and separate processes keep the clients'
Python work off the server's GIL. Each child holds at most MAX_PER_CHILD sockets.

test_soak.py drives its clients with the same `Clients`.
"""

import math
import os
import select
import subprocess
import sys
import time

import pytest

import rsock
from tests.stress.conftest import FULL, fd_count, raise_fd_limit, scale

MAX_PER_CHILD = 5000

# A client process: `python -c CLIENT_SCRIPT host port framing tag`. It reads commands from stdin, one a
# line ("open 5000 60": open 5000 connections within 60 s), and answers each with one line
# "<command> <count> <seconds>" once done. Every reply is compared with what was sent; a mismatch, a
# timeout or any other error ends the process with a traceback, which the parent reports. Messages carry
# the child's tag, the connection's index and a counter, so no two requests of a test are alike.
CLIENT_SCRIPT = r"""
import resource
import sys
import time

import rsock

host, port, framing, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
address = (host, port)
CALL_TIMEOUT = 30.0  # seconds any one connect, send or receive may take
connections = []


def check_deadline(deadline, command, done):
    if time.monotonic() > deadline:
        raise TimeoutError(f"{command}: only {done} done when the deadline passed")


def check_reply(sent, reply):
    if reply != sent:
        raise AssertionError(f"sent {sent!r}, got back {reply!r}")


def open_connections(count, deadline):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(connections) + count + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    for done in range(count):
        check_deadline(deadline, "open", done)
        connections.append(rsock.TcpClient(address, framing=framing, timeout=CALL_TIMEOUT))
    return count


def echo(deadline):
    # One request on every open connection, proving each one is served.
    for index, client in enumerate(connections):
        check_deadline(deadline, "echo", index)
        message = f"{tag}/{index}/alive".encode()
        check_reply(message, client.request(message))
    return len(connections)


def requests(total, window, deadline):
    # `total` requests spread over the open connections, up to `window` in flight on each; replies come
    # back in order on each connection, so each is checked against the request it answers.
    done = 0
    while done < total:
        check_deadline(deadline, "requests", done)
        in_flight = []
        for index, client in enumerate(connections):
            for _ in range(min(window, total - done - len(in_flight))):
                message = f"{tag}/{index}/{done + len(in_flight)}".encode()
                client.send(message)
                in_flight.append((client, message))
        for client, message in in_flight:
            check_reply(message, client.recv_message())
        done += len(in_flight)
    return done


def cycles(count, deadline):
    # Connect, one checked request, close: `count` times.
    for done in range(count):
        check_deadline(deadline, "cycles", done)
        with rsock.TcpClient(address, framing=framing, timeout=CALL_TIMEOUT) as client:
            message = f"{tag}/cycle/{done}".encode()
            check_reply(message, client.request(message))
    return count


def close(deadline):
    count = len(connections)
    for client in connections:
        client.close()
    connections.clear()
    return count


COMMANDS = {"open": open_connections, "echo": echo, "requests": requests, "cycles": cycles, "close": close}
for line in sys.stdin:
    name, *args = line.split()
    deadline = time.monotonic() + float(args.pop())
    started = time.perf_counter()
    count = COMMANDS[name](*map(int, args), deadline)
    print(name, count, f"{time.perf_counter() - started:.6f}", flush=True)
"""


class Clients:
    """Client processes running CLIENT_SCRIPT against one server, driven together.

    `run()` sends each child a command and waits for every answer, failing (with the child's output) if
    one does not come within the command's time budget plus STARTUP_SECONDS. `close()` ends the
    children: their stdin closes, so each finishes its loop and exits; one still alive after a few
    seconds is killed.
    """

    STARTUP_SECONDS = 15.0  # a child's interpreter start and `import rsock`, on a busy machine

    def __init__(self, address, children, framing):
        host, port = address
        self.procs = []
        self.output = []  # everything each child has written, for the failure messages
        try:
            for tag in range(children):
                argv = [sys.executable, "-c", CLIENT_SCRIPT, host, str(port), framing, str(tag)]
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                self.procs.append(proc)
                self.output.append(bytearray())
        except BaseException:
            self.close()
            raise

    def run(self, commands, budget):
        """Sends commands[i] (with `budget` seconds appended) to child i; returns the (count, seconds) each
        child answered with."""
        assert len(commands) == len(self.procs)
        for proc, command in zip(self.procs, commands, strict=True):
            proc.stdin.write(f"{command} {budget}\n".encode())
            proc.stdin.flush()
        deadline = time.monotonic() + budget + self.STARTUP_SECONDS
        return [self._answer(i, command.split()[0], deadline) for i, command in enumerate(commands)]

    def run_all(self, command, budget):
        """The same command to every child."""
        return self.run([command] * len(self.procs), budget)

    def _answer(self, i, name, deadline):
        proc, output = self.procs[i], self.output[i]
        while True:
            complete_lines = output.decode(errors="replace").split("\n")[:-1]
            answers = [line.split() for line in complete_lines if line.startswith(f"{name} ")]
            if answers:
                del output[:]
                _, count, seconds = answers[-1]
                return int(count), float(seconds)
            remaining = deadline - time.monotonic()
            readable = remaining > 0 and select.select([proc.stdout], [], [], remaining)[0]
            chunk = os.read(proc.stdout.fileno(), 65536) if readable else b""
            if not chunk:
                what = "ended" if readable else "did not answer in time"
                pytest.fail(
                    f"client process {i} {what} during {name!r}; its output:\n{output.decode(errors='replace')}"
                )
            output += chunk

    def close(self):
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def echo(conn, data):
    return data


def wait_until(condition, timeout):
    """Polls `condition` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def figure(name, value):
    """A measured figure, printed for `make stress` (-s) to show and the README table to collect."""
    print(f"FIGURE: {name}: {value}")


def test_ten_thousand_connections_held_open(no_leaks):
    """10,000 connections open at once on one server, each proven live by an echo, then all closed."""
    total = scale(500, 10_000)
    children = math.ceil(total / MAX_PER_CHILD)
    per_child = [total // children + (i < total % children) for i in range(children)]
    wanted = fd_count() + total + 100  # this process's descriptors now, the server's sockets, some slack
    limit = raise_fd_limit(wanted)
    assert limit >= wanted, (
        f"the descriptor limit ({limit}, hard limit included) cannot hold {total} server-side sockets"
        f" ({wanted} descriptors wanted); raise the hard limit (ulimit -Hn) to run this test"
        + (" at full size" if FULL else "")
    )
    budget = scale(30, 300)
    with rsock.TcpServer(("127.0.0.1", 0), echo, framing="line") as server:
        clients = Clients(server.address, children, "line")
        try:
            fds_before = fd_count()
            started = time.perf_counter()
            opened = clients.run([f"open {n}" for n in per_child], budget)
            assert sum(count for count, _ in opened) == total
            assert wait_until(lambda: server.stats["active"] == total, 10), server.stats
            open_seconds = time.perf_counter() - started
            stats = server.stats
            assert (stats["accepted"], stats["active"], stats["refused"]) == (total, total, 0), stats
            fds_held = fd_count()
            assert fds_held - fds_before == total, f"{total} connections but {fds_held - fds_before} more descriptors"

            echoed = clients.run_all("echo", budget)
            assert sum(count for count, _ in echoed) == total
            stats = server.stats
            assert (stats["messages"], stats["active"], stats["errors"]) == (total, total, 0), stats
            assert stats["bytes_in"] == stats["bytes_out"] > 0, stats

            closed = clients.run_all("close", budget)
            assert sum(count for count, _ in closed) == total
            assert wait_until(lambda: server.stats["active"] == 0 and fd_count() == fds_before, 10), (
                f"after closing: {server.stats}, {fd_count()} descriptors ({fds_before} before)"
            )
        finally:
            clients.close()
    figure("connections held open at once", total)
    figure("time to open them (s)", f"{open_seconds:.2f}")
    figure("connections proven live by an echo", sum(count for count, _ in echoed))
    figure("server descriptors before / holding / after", f"{fds_before} / {fds_held} / {fd_count()}")


def test_million_echo_requests_every_reply_checked(no_leaks):
    """1,000,000 requests over 100 connections, 8 in flight on each, every reply compared with its request."""
    total, connections, children, window = scale(20_000, 1_000_000), 100, 2, 8
    with rsock.TcpServer(("127.0.0.1", 0), echo, framing="length") as server:
        clients = Clients(server.address, children, "length")
        try:
            clients.run_all(f"open {connections // children}", 30)
            assert wait_until(lambda: server.stats["active"] == connections, 10), server.stats
            started = time.perf_counter()
            answers = clients.run_all(f"requests {total // children} {window}", scale(60, 1200))
            seconds = time.perf_counter() - started
            verified = sum(count for count, _ in answers)
            assert verified == total
            stats = server.stats
            assert (stats["messages"], stats["active"], stats["errors"]) == (total, connections, 0), stats
            assert stats["bytes_in"] == stats["bytes_out"] > 0, stats
            clients.run_all("close", 30)
            assert wait_until(lambda: server.stats["active"] == 0, 10), server.stats
        finally:
            clients.close()
    figure("echo requests verified", f"{verified} over {connections} connections ({window} in flight on each)")
    figure("echo requests per second", f"{verified / seconds:,.0f}")
