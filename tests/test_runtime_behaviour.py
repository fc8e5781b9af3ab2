"""Runtime behaviour of rsock next to the stdlib's: GIL release around blocking calls, Ctrl-C and PEP 475
signal handling, interop with select/selectors/asyncio/ssl, fork, ResourceWarning, subclassing, many clients.

Every test runs over both the stdlib's ``socket`` and ``rsock`` (the ``sockmod`` fixture) and asserts the same
outcome for both.

The TLS test certificate in tests/data/ is a self-signed RSA key and certificate for "localhost" and 127.0.0.1,
valid for 100 years, generated with (from the repository root):

    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 -subj "/CN=localhost" \\
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \\
        -keyout tests/data/localhost-key.pem -out tests/data/localhost-cert.pem
"""

import asyncio
import contextlib
import copy
import errno
import gc
import os
import pickle
import select
import selectors
import signal
import socket as stdlib_socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
import weakref
from pathlib import Path

import pytest

from tests.subprocesses import Lines, default_sigint, started

HOST = "127.0.0.1"
TIMEOUT = 10.0  # per-operation socket timeout: generous, only there so nothing hangs
JOIN_TIMEOUT = 20.0  # for threads and children that finish once unblocked
SAFETY_NET = 10  # seconds: SO_RCVTIMEO/SO_SNDTIMEO on a socket whose blocking call a test unblocks itself
PROMPT = 5.0  # a child sent SIGINT must be gone within this
DATA = Path(__file__).parent / "data"
CERT = DATA / "localhost-cert.pem"
KEY = DATA / "localhost-key.pem"


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _listener(mod, backlog=None, *, rcvbuf=None):
    """A TCP socket of `mod` listening on a free loopback port."""
    sock = mod.socket(mod.AF_INET, mod.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # inherited by accepted sockets
            sock.setsockopt(mod.SOL_SOCKET, mod.SO_RCVBUF, rcvbuf)
        sock.bind((HOST, 0))
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_pair(mod, stack, *, rcvbuf=None, sndbuf=None):
    """(client, server-side connection), both of `mod`, blocking, closed by `stack`."""
    listener = stack.enter_context(_listener(mod, rcvbuf=rcvbuf))
    listener.settimeout(TIMEOUT)
    client = stack.enter_context(mod.socket(mod.AF_INET, mod.SOCK_STREAM))
    if sndbuf is not None:
        client.setsockopt(mod.SOL_SOCKET, mod.SO_SNDBUF, sndbuf)
    client.settimeout(TIMEOUT)
    client.connect(listener.getsockname())
    conn, _ = listener.accept()
    stack.enter_context(conn)
    client.settimeout(None)
    conn.settimeout(None)
    return client, conn


def _kernel_timeouts(sock, seconds=SAFETY_NET):
    """Makes the kernel end a blocking call on `sock` after `seconds` (EAGAIN), so a test whose unblocking step
    cannot run (say, because the blocked thread kept the GIL) fails instead of hanging."""
    timeval = struct.pack("ll", seconds, 0)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, timeval)


@contextlib.contextmanager
def _full_backlog_listener(mod):
    """A listening socket of `mod` whose accept queue is full, so Linux drops a new SYN and a connect() to it
    blocks until accept() makes room (the client then gets in with its next SYN retransmission).

    Yields the listener; accepting once makes room for one connection."""
    fillers = []
    with _listener(mod, backlog=0) as listener:
        try:
            for _ in range(32):
                filler = stdlib_socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
                _, writable, _ = select.select([], [filler], [], 0.3)
                if not writable:  # this SYN was dropped: the queue is full
                    fillers.pop().close()
                    break
            else:
                raise AssertionError("could not fill the accept queue of a listen(0) socket")
            listener.settimeout(TIMEOUT)
            yield listener
        finally:
            for filler in fillers:
                filler.close()


def _stat_fields(path):
    """The fields of a /proc .../stat file after the command name (the state letter first), or None once the
    process or thread is gone."""
    try:
        with open(path) as f:
            return f.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return None


def _thread_state(tid):
    """The scheduler state letter of thread `tid` of this process ('R', 'S', ...), or None once it is gone."""
    fields = _stat_fields(f"/proc/self/task/{tid}/stat")
    return fields and fields[0]


def _process_state(pid):
    fields = _stat_fields(f"/proc/{pid}/stat")
    return fields and fields[0]


def _count_for(seconds):
    """Iterations of a pure-Python loop in `seconds` of wall time."""
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def _join(thread, timeout=JOIN_TIMEOUT):
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} did not finish within {timeout} s"


def _recv_exactly(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        assert chunk, "peer closed early"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------------------------
# 1. A thread blocked in a socket call lets other Python threads run


GIL_WINDOW = 0.3  # seconds of counting, once with nothing blocked and once while the call is blocked


def _gil_recv(mod, stack, timeout):
    peer, sock = _tcp_pair(mod, stack)
    sock.settimeout(timeout)
    _kernel_timeouts(sock)
    return (lambda: sock.recv(64)), (lambda: peer.sendall(b"wake")), (lambda result: result == b"wake")


def _gil_accept(mod, stack, timeout):
    listener = stack.enter_context(_listener(mod))
    listener.settimeout(timeout)
    _kernel_timeouts(listener)
    client = stack.enter_context(stdlib_socket.socket())
    client.settimeout(TIMEOUT)

    def call():
        conn, addr = listener.accept()
        with conn:
            return addr, conn.getpeername()

    def check(result):
        addr, peername = result
        return addr == peername == client.getsockname()

    return call, (lambda: client.connect(listener.getsockname())), check


def _gil_recvfrom(mod, stack, timeout):
    sock = stack.enter_context(mod.socket(mod.AF_INET, mod.SOCK_DGRAM))
    sock.bind((HOST, 0))
    sock.settimeout(timeout)
    _kernel_timeouts(sock)
    sender = stack.enter_context(stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM))
    sender.bind((HOST, 0))
    return (
        lambda: sock.recvfrom(64),
        lambda: sender.sendto(b"wake", sock.getsockname()),
        lambda result: result == (b"wake", sender.getsockname()),
    )


def _gil_connect(mod, stack, timeout):
    listener = stack.enter_context(_full_backlog_listener(mod))
    sock = stack.enter_context(mod.socket(mod.AF_INET, mod.SOCK_STREAM))
    sock.settimeout(timeout)
    _kernel_timeouts(sock)

    def call():
        sock.connect(listener.getsockname())
        return sock.getpeername()

    def unblock():
        conn, _ = listener.accept()  # one of the fillers: makes room for the blocked connect
        conn.close()

    return call, unblock, (lambda result: result == listener.getsockname())


def _gil_sendall(mod, stack, timeout):
    sender, receiver = _tcp_pair(mod, stack, rcvbuf=4096, sndbuf=4096)
    sender.settimeout(timeout)
    _kernel_timeouts(sender)
    receiver.settimeout(TIMEOUT)
    payload = os.urandom(4 << 20)  # far more than the socket buffers hold
    received = []

    return (
        lambda: sender.sendall(payload),
        lambda: received.append(_recv_exactly(receiver, len(payload))),
        lambda result: result is None and received == [payload],
    )


GIL_CASES = {
    "recv": (_gil_recv, None),
    "recv-timeout": (_gil_recv, 15.0),
    "accept": (_gil_accept, None),
    "accept-timeout": (_gil_accept, 15.0),
    "recvfrom": (_gil_recvfrom, None),
    "recvfrom-timeout": (_gil_recvfrom, 15.0),
    "connect": (_gil_connect, None),
    "connect-timeout": (_gil_connect, 15.0),
    "sendall": (_gil_sendall, None),
    "sendall-timeout": (_gil_sendall, 15.0),
}


@pytest.mark.parametrize("case", list(GIL_CASES))
def test_blocked_call_lets_other_threads_run(sockmod, case):
    setup, timeout = GIL_CASES[case]
    with contextlib.ExitStack() as stack:
        call, unblock, check = setup(sockmod, stack, timeout)
        outcome = {}
        started = threading.Event()

        def worker():
            started.set()
            try:
                outcome["result"] = call()
            except BaseException as exc:
                outcome["error"] = exc

        baseline = _count_for(GIL_WINDOW)
        thread = threading.Thread(target=worker, name=f"blocked-{case}", daemon=True)
        thread.start()
        try:
            assert started.wait(TIMEOUT)
            # Let the worker get into the kernel: a sleeping state (it stays there until unblocked).
            deadline = time.monotonic() + TIMEOUT
            while _thread_state(thread.native_id) not in ("S", "D", None) and time.monotonic() < deadline:
                time.sleep(0.001)
            during = _count_for(GIL_WINDOW)
            still_blocked = thread.is_alive() and not outcome
            unblock()
        finally:
            _join(thread)
        assert "error" not in outcome, f"the blocked call failed: {outcome.get('error')!r}"
        assert still_blocked, "the call returned before it was unblocked"
        assert check(outcome["result"]), outcome["result"]
        assert during >= baseline * 0.25, f"{during} loop iterations while blocked vs {baseline} unblocked"


# ---------------------------------------------------------------------------------------------------------------
# 2. Signals: Ctrl-C interrupts a blocked call; a handler that returns lets it go on (PEP 475)

_CHILD = r"""
import os, signal, sys

socket = __import__(sys.argv[1])
op, timeout, port, handler = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
timeout = None if timeout == "none" else float(timeout)
PAYLOAD = int(sys.argv[6])
if handler == "usr1":
    signal.signal(signal.SIGUSR1, lambda signum, frame: os.write(1, b"handled\n"))


def ready(port=0):
    print("ready", port, flush=True)


if op == "accept":
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.settimeout(timeout)
        ready(sock.getsockname()[1])
        conn, addr = sock.accept()
        with conn:
            print("done", addr == conn.getpeername(), flush=True)
elif op == "recv":
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout)
        ready()
        print("done", sock.recv(64).decode(), flush=True)
elif op == "recvfrom":
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        ready(sock.getsockname()[1])
        data, addr = sock.recvfrom(64)
        print("done", data.decode(), flush=True)
elif op == "connect":
    with socket.socket() as sock:
        sock.settimeout(timeout)
        ready()
        sock.connect(("127.0.0.1", port))
        print("done", sock.getpeername() == ("127.0.0.1", port), flush=True)
elif op == "sendall":
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(timeout)
        ready()
        sock.sendall(b"x" * PAYLOAD)
        print("done", PAYLOAD, flush=True)
"""
_CHILD_PAYLOAD = 8 << 20  # what the child's sendall() sends: far more than the socket buffers hold


class _Child:
    """A `python -c _CHILD` process whose stdout is read line by line without ever blocking past a deadline."""

    def __init__(self, module, op, timeout, port, handler):
        args = [sys.executable, "-c", _CHILD, module, op, "none" if timeout is None else str(timeout)]
        self.proc = subprocess.Popen(
            [*args, str(port), handler, str(_CHILD_PAYLOAD)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self._buffer = b""

    def line(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(left, 0))
            if not readable:
                pytest.fail(f"no line from the child within {timeout} s; so far: {self._buffer!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"the child exited early: stdout {self._buffer!r}, stderr {self.stderr()!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def wait_blocked(self):
        """Waits until the child sleeps in the kernel (in the call under test, by the time it said so)."""
        deadline = time.monotonic() + TIMEOUT
        while _process_state(self.proc.pid) != "S":
            assert self.proc.poll() is None, f"the child exited: {self.stderr()!r}"
            assert time.monotonic() < deadline, "the child never blocked"
            time.sleep(0.002)

    def finish(self, timeout):
        """(rest of stdout, stderr, returncode) once the child exits within `timeout` seconds."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"the child did not exit within {timeout} s; stderr: {err.decode()!r}")
        return (self._buffer + out).decode(), err.decode(), self.proc.returncode

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@contextlib.contextmanager
def _child_scenario(sockmod, op, timeout, handler):
    """Starts the child blocking in `op` and yields (child, unblock, expected "done" line); `unblock()` lets the
    blocked call complete. Every socket and the child are cleaned up afterwards."""
    with contextlib.ExitStack() as stack:
        port = 0
        listener = None
        if op == "connect":
            listener = stack.enter_context(_full_backlog_listener(stdlib_socket))
        elif op in ("recv", "sendall"):
            listener = stack.enter_context(_listener(stdlib_socket, rcvbuf=4096))
            listener.settimeout(TIMEOUT)
        if listener is not None:
            port = listener.getsockname()[1]
        child = _Child(sockmod.__name__, op, timeout, port, handler)
        stack.callback(child.close)
        child_port = int(child.line().split()[1])
        if op == "accept":
            client = stack.enter_context(stdlib_socket.socket())
            client.settimeout(TIMEOUT)
            yield child, lambda: client.connect((HOST, child_port)), "done True"
        elif op == "recv":
            conn, _ = listener.accept()
            stack.enter_context(conn)
            yield child, lambda: conn.sendall(b"wake"), "done wake"
        elif op == "recvfrom":
            sender = stack.enter_context(stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM))
            yield child, lambda: sender.sendto(b"wake", (HOST, child_port)), "done wake"
        elif op == "connect":

            def make_room():
                conn, _ = listener.accept()
                conn.close()

            yield child, make_room, "done True"
        elif op == "sendall":
            conn, _ = listener.accept()
            stack.enter_context(conn)
            conn.settimeout(TIMEOUT)
            yield child, lambda: _recv_exactly(conn, _CHILD_PAYLOAD), f"done {_CHILD_PAYLOAD}"


SIGNAL_OPS = ["accept", "recv", "recvfrom", "connect", "sendall"]
SIGNAL_TIMEOUTS = pytest.mark.parametrize("timeout", [None, 60.0], ids=["blocking", "timeout"])


@SIGNAL_TIMEOUTS
@pytest.mark.parametrize("op", SIGNAL_OPS)
def test_sigint_interrupts_blocked_call(sockmod, op, timeout):
    with _child_scenario(sockmod, op, timeout, handler="none") as (child, _unblock, _done):
        child.wait_blocked()
        os.kill(child.proc.pid, signal.SIGINT)
        out, err, returncode = child.finish(PROMPT)
    assert "KeyboardInterrupt" in err, err
    assert returncode == -signal.SIGINT, (returncode, err)
    assert "done" not in out


@SIGNAL_TIMEOUTS
@pytest.mark.parametrize("op", SIGNAL_OPS)
def test_signal_handler_that_returns_does_not_interrupt_call(sockmod, op, timeout):
    with _child_scenario(sockmod, op, timeout, handler="usr1") as (child, unblock, done):
        child.wait_blocked()
        os.kill(child.proc.pid, signal.SIGUSR1)
        assert child.line() == "handled"
        child.wait_blocked()  # back in the call, not out with an error
        unblock()
        assert child.line(JOIN_TIMEOUT) == done
        out, err, returncode = child.finish(PROMPT)
    assert (out, err, returncode) == ("", "", 0)


# ---------------------------------------------------------------------------------------------------------------
# 3. Interop: select, poll, selectors, asyncio, ssl


def test_select_select(sockmod):
    with _listener(sockmod) as listener, sockmod.socket() as client:
        assert select.select([listener], [], [], 0) == ([], [], [])
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        assert select.select([listener], [], [], TIMEOUT) == ([listener], [], [])
        conn, _ = listener.accept()
        with conn:
            assert select.select([conn], [conn], [], TIMEOUT) == ([], [conn], [])
            client.sendall(b"ping")
            assert select.select([conn], [], [], TIMEOUT) == ([conn], [], [])
            assert conn.recv(16) == b"ping"
            assert select.select([conn], [], [], 0) == ([], [], [])


def test_select_poll(sockmod):
    with _listener(sockmod) as listener, sockmod.socket() as client:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        assert poller.poll(0) == []
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        assert poller.poll(TIMEOUT * 1000) == [(listener.fileno(), select.POLLIN)]
        conn, _ = listener.accept()
        with conn:
            poller.unregister(listener)
            poller.register(conn, select.POLLIN)
            client.sendall(b"ping")
            assert poller.poll(TIMEOUT * 1000) == [(conn.fileno(), select.POLLIN)]
            assert conn.recv(16) == b"ping"
            client.close()
            events = dict(poller.poll(TIMEOUT * 1000))
            assert events[conn.fileno()] & select.POLLIN
            assert conn.recv(16) == b""
            poller.unregister(conn)


def test_selectors_default_selector(sockmod):
    with selectors.DefaultSelector() as selector, _listener(sockmod) as listener, sockmod.socket() as client:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, data="listener")
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        [(key, events)] = selector.select(TIMEOUT)
        assert (key.fileobj, key.data, events) == (listener, "listener", selectors.EVENT_READ)
        conn, _ = listener.accept()
        with conn:
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, data="conn")
            [(key, events)] = selector.select(TIMEOUT)
            assert (key.fileobj, events) == (conn, selectors.EVENT_WRITE)
            client.sendall(b"ping")
            ready = {}
            deadline = time.monotonic() + TIMEOUT
            while not ready.get(conn, 0) & selectors.EVENT_READ and time.monotonic() < deadline:
                ready = {key.fileobj: events for key, events in selector.select(TIMEOUT)}
            assert ready[conn] == selectors.EVENT_READ | selectors.EVENT_WRITE
            assert conn.recv(16) == b"ping"
            assert selector.get_key(conn).data == "conn"
            selector.unregister(conn)
        selector.unregister(listener)


def test_asyncio_loop_sock_methods(sockmod):
    payload = os.urandom(2 << 20)  # big enough for sock_sendall to meet EAGAIN

    async def main():
        loop = asyncio.get_running_loop()
        with _listener(sockmod) as listener, sockmod.socket() as client:
            listener.setblocking(False)
            client.setblocking(False)
            accepting = asyncio.ensure_future(loop.sock_accept(listener))
            await asyncio.wait_for(loop.sock_connect(client, listener.getsockname()), TIMEOUT)
            conn, addr = await asyncio.wait_for(accepting, TIMEOUT)
            with conn:
                assert isinstance(conn, sockmod.socket)
                assert addr == client.getsockname()
                assert conn.gettimeout() == 0

                async def receive_all():
                    chunks, size = [], 0
                    while size < len(payload):
                        chunk = await loop.sock_recv(conn, 65536)
                        assert chunk
                        chunks.append(chunk)
                        size += len(chunk)
                    return b"".join(chunks)

                sending = asyncio.ensure_future(loop.sock_sendall(client, payload))
                received = await asyncio.wait_for(receive_all(), TIMEOUT)
                await asyncio.wait_for(sending, TIMEOUT)
                assert received == payload

                await loop.sock_sendall(conn, b"reply")
                buf = bytearray(16)
                n = await asyncio.wait_for(loop.sock_recv_into(client, buf), TIMEOUT)
                assert bytes(buf[:n]) == b"reply"[:n] and n > 0

    asyncio.run(main())


def test_asyncio_open_connection_and_start_server_with_sock(sockmod):
    async def handle(reader, writer):
        try:
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    async def main():
        listener = _listener(sockmod)
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            assert [s.fileno() for s in server.sockets] == [listener.fileno()]
            client = sockmod.socket()
            client.settimeout(TIMEOUT)
            client.connect(listener.getsockname())
            reader, writer = await asyncio.open_connection(sock=client)
            try:
                assert writer.get_extra_info("sockname") == client.getsockname()
                for word in (b"alpha\n", b"beta\n", b"gamma\n"):
                    writer.write(word)
                    await writer.drain()
                    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == word.upper()
            finally:
                writer.close()
                await writer.wait_closed()
            assert client.fileno() == -1  # the transport closed it
        assert listener.fileno() == -1

    asyncio.run(main())


def test_asyncio_create_server_with_sock(sockmod):
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data[::-1])

    async def main():
        loop = asyncio.get_running_loop()
        listener = _listener(sockmod)
        server = await loop.create_server(Echo, sock=listener)
        async with server:
            with sockmod.socket() as client:
                client.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(client, listener.getsockname()), TIMEOUT)
                await loop.sock_sendall(client, b"stressed")
                got = b""
                while len(got) < 8:
                    chunk = await asyncio.wait_for(loop.sock_recv(client, 64), TIMEOUT)
                    assert chunk
                    got += chunk
                assert got == b"desserts"
        assert listener.fileno() == -1

    asyncio.run(main())


def test_asyncio_datagrams_with_sock(sockmod):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    async def main():
        loop = asyncio.get_running_loop()
        server_sock = sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM)
        server_sock.bind((HOST, 0))
        transport, _ = await loop.create_datagram_endpoint(Echo, sock=server_sock)
        try:
            with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as client:
                client.bind((HOST, 0))
                client.setblocking(False)
                for word in (b"first", b"second"):
                    await loop.sock_sendto(client, word, server_sock.getsockname())
                    data, addr = await asyncio.wait_for(loop.sock_recvfrom(client, 64), TIMEOUT)
                    assert (data, addr) == (word.upper(), server_sock.getsockname())
        finally:
            transport.close()
            await asyncio.sleep(0)  # the transport closes its socket on the next loop iteration
        assert server_sock.fileno() == -1

    asyncio.run(main())


def _tls_contexts():
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(CERT, KEY)
    client_ctx = ssl.create_default_context(cafile=CERT)
    return server_ctx, client_ctx


@pytest.mark.parametrize("connect_first", [True, False], ids=["wrap-connected", "wrap-then-connect"])
def test_tls_echo_with_wrap_socket(sockmod, connect_first):
    server_ctx, client_ctx = _tls_contexts()
    errors = []
    server_side = {}

    with _listener(sockmod) as listener:
        listener.settimeout(TIMEOUT)

        def serve():
            try:
                conn, _ = listener.accept()
                with conn:
                    assert isinstance(conn, sockmod.socket)
                    conn.settimeout(TIMEOUT)
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        assert conn.fileno() == -1  # wrap_socket() took over the descriptor
                        server_side["version"] = tls.version()
                        while data := tls.recv(1024):
                            tls.sendall(b"echo:" + data)
                            if data.endswith(b"bye"):
                                break
                        tls.unwrap().close()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve, name="tls-server")
        thread.start()
        try:
            with sockmod.socket() as raw:
                raw.settimeout(TIMEOUT)
                if connect_first:
                    raw.connect(listener.getsockname())
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    assert raw.fileno() == -1
                    if not connect_first:
                        tls.connect(listener.getsockname())
                    assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
                    assert tls.version() is not None
                    replies = []
                    for message in (b"hello", b"world", b"bye"):
                        tls.sendall(message)
                        replies.append(tls.recv(1024))
                    assert replies == [b"echo:hello", b"echo:world", b"echo:bye"]
                    tls.unwrap().close()
        finally:
            _join(thread)
    assert not errors, errors
    assert server_side["version"] is not None


def test_tls_echo_over_asyncio_with_sock(sockmod):
    server_ctx, client_ctx = _tls_contexts()

    async def handle(reader, writer):
        try:
            while line := await reader.readline():
                writer.write(b"echo:" + line)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def main():
        listener = _listener(sockmod)
        server = await asyncio.start_server(handle, sock=listener, ssl=server_ctx)
        async with server:
            client = sockmod.socket()
            client.settimeout(TIMEOUT)
            client.connect(listener.getsockname())
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(sock=client, ssl=client_ctx, server_hostname="localhost"), TIMEOUT
            )
            try:
                assert writer.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
                for message in (b"one\n", b"two\n"):
                    writer.write(message)
                    await writer.drain()
                    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"echo:" + message
            finally:
                writer.close()
                await writer.wait_closed()
            assert client.fileno() == -1

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------------------------
# 4. fork()


def _reap(pid, timeout=JOIN_TIMEOUT):
    """The exit code of child `pid`, waiting at most `timeout` seconds (then it is killed and the test fails)."""
    pidfd = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not readable:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child did not exit within {timeout} s")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run_in_fork(body):
    """Runs `body()` in a forked child; the child exits 0 if it returns, 1 (traceback on stderr) if it raises."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def test_fork_child_creates_connects_and_uses_sockets(sockmod):
    with _listener(sockmod) as listener, contextlib.ExitStack() as stack:
        listener.settimeout(TIMEOUT)
        parent_end, child_end = sockmod.socketpair()
        stack.enter_context(parent_end)
        stack.enter_context(child_end)
        parent_end.settimeout(TIMEOUT)

        def child():
            parent_end.close()
            # New sockets connecting to the inherited listener, accepted on it in the child.
            with sockmod.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
                conn, addr = listener.accept()
                with conn:
                    assert addr == client.getsockname()
                    client.sendall(b"ping")
                    assert conn.recv(16) == b"ping"
                    conn.sendall(b"pong")
                    assert client.recv(16) == b"pong"
            # A new UDP pair.
            with (
                sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as a,
                sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as b,
            ):
                a.bind((HOST, 0))
                b.bind((HOST, 0))
                b.settimeout(TIMEOUT)
                b.sendto(b"datagram", a.getsockname())
                a.settimeout(TIMEOUT)
                assert a.recvfrom(64) == (b"datagram", b.getsockname())
            # The inherited socketpair end talks to the parent.
            listener.close()
            child_end.settimeout(TIMEOUT)
            child_end.sendall(b"from child")
            assert child_end.recv(64) == b"from parent"
            child_end.close()

        pid = _run_in_fork(child)
        try:
            assert parent_end.recv(64) == b"from child"
            parent_end.sendall(b"from parent")
        finally:
            code = _reap(pid)
        assert code == 0
        # The child closing its copy left the parent's listener working.
        with sockmod.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
            conn, _ = listener.accept()
            with conn:
                client.sendall(b"still here")
                assert conn.recv(64) == b"still here"


def test_fork_child_serves_on_inherited_listener(sockmod):
    with _listener(sockmod) as listener:

        def child():
            listener.settimeout(TIMEOUT)
            for _ in range(3):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    conn.sendall(conn.recv(64).upper())
            listener.close()

        pid = _run_in_fork(child)
        try:
            replies = []
            for word in (b"one", b"two", b"three"):
                with sockmod.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
                    client.sendall(word)
                    replies.append(client.recv(64))
        finally:
            code = _reap(pid)
        assert code == 0
        assert replies == [b"ONE", b"TWO", b"THREE"]


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_forked_child_stopping_the_parents_server_leaves_it_serving(kind):
    """A child forked while a server runs shares its socket but not its tasks or threads. Stopping the server
    there, directly or at the child's interpreter exit, must neither wait for tasks that are not in the child
    (stop()'s 5 s timeout) nor touch the socket the parent still serves on."""
    import rsock

    if kind == "tcp":
        server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    else:
        server = rsock.UdpServer((HOST, 0), lambda data, addr: data)

    def ask(word):
        if kind == "tcp":
            with rsock.TcpClient(server.address, timeout=TIMEOUT, framing="line") as client:
                return client.request(word)
        with rsock.UdpClient() as client:
            return client.request(word, server.address, timeout=TIMEOUT, retries=0)

    with server:
        assert ask(b"before") == b"before"

        def child():
            started = time.monotonic()
            server.stop()
            rsock._rsock._stop_all_servers(1.0)  # what the child's interpreter exit runs
            assert not server.running
            assert time.monotonic() - started < 4.0, "stop() waited for tasks that run only in the parent"

        code = _reap(_run_in_fork(child))
        assert code == 0
        assert server.running
        assert ask(b"after") == b"after"


def test_a_forked_child_cannot_act_on_the_parents_connections():
    """In a child forked while a TcpServer serves, the connections are the parent's: broadcast(), a connection's
    send() and close(), and rsock.aio's report that an async handler finished raise RuntimeError (their locks may
    have been held by the parent's I/O thread at the fork, and would never be released in the child), and stats,
    reprs and `closed` answer without waiting. The parent's connection is untouched."""
    import rsock

    connected = []
    server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line", on_connect=connected.append)
    with server, rsock.TcpClient(server.address, timeout=TIMEOUT, framing="line") as client:
        assert client.request(b"before") == b"before"
        (conn,) = connected

        def child():
            actions = (
                lambda: server.broadcast(b"x"),
                lambda: conn.send(b"x"),
                conn.close,
                lambda: conn._handler_done(b"x"),  # what rsock.aio calls when an async handler finishes
            )
            for action in actions:
                with pytest.raises(RuntimeError, match="forked child"):
                    action()
            assert conn.closed
            assert server.stats["active"] == 1
            assert "1 connections" in repr(server)
            assert "closed" in repr(conn)
            assert "<table" in server._repr_html_() and "<table" in conn._repr_html_()

        assert _reap(_run_in_fork(child)) == 0
        assert not conn.closed
        assert server.broadcast(b"to all") == 1
        assert client.recv_message() == b"to all"
        assert client.request(b"after") == b"after"
    assert server.stats["active"] == 0


def test_a_client_closed_in_a_forked_child_stays_open_in_the_parent():
    """A child's close() closes its own descriptor only, as the stdlib socket's does. The clients shut the
    connection down as they close, to wake calls other threads wait in; with none waiting they did it all the
    same, and shutdown(2) acts on the connection both processes share: the parent's next request got
    BrokenPipeError."""
    import rsock

    tcp_server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    udp_server = rsock.UdpServer((HOST, 0), lambda data, sender: data)
    with tcp_server, udp_server:
        tcp_client = rsock.TcpClient(tcp_server.address, timeout=TIMEOUT, framing="line")
        udp_client = rsock.UdpClient()
        stdlib_client = stdlib_socket.create_connection(tcp_server.address, timeout=TIMEOUT)
        rsock_socket = rsock.create_connection(tcp_server.address, timeout=TIMEOUT)
        clients = (tcp_client, udp_client, stdlib_client, rsock_socket)
        try:

            def requests(tag):
                replies = [tcp_client.request(tag), udp_client.request(tag, udp_server.address, timeout=TIMEOUT)]
                for sock in (stdlib_client, rsock_socket):
                    sock.sendall(tag + b"\n")
                    replies.append(sock.recv(100))
                return replies

            assert requests(b"before") == [b"before", b"before", b"before\n", b"before\n"]

            def child():
                for client in clients:
                    client.close()

            assert _reap(_run_in_fork(child)) == 0
            assert requests(b"after") == [b"after", b"after", b"after\n", b"after\n"]
        finally:
            for client in clients:
                client.close()


def test_a_forked_child_cannot_answer_for_the_parents_udp_server():
    """An async on_datagram's reply is sent when rsock.aio reports the handler done. In a child forked while
    the server runs, the parent still serves the socket: the report raises RuntimeError there instead of sending
    a second reply, and the parent's report still sends it."""
    import rsock

    replies = []

    async def on_datagram(data, addr):
        return data

    def bridge(awaitable, reply):
        awaitable.close()  # run by hand below, as rsock.aio would on its loop
        replies.append(reply)

    server = rsock.UdpServer((HOST, 0), on_datagram)
    server._set_async_bridge(bridge)
    with server, stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        client.sendto(b"ask", server.address)
        deadline = time.monotonic() + TIMEOUT
        while not replies and time.monotonic() < deadline:
            time.sleep(0.002)
        (reply,) = replies

        def child():
            with pytest.raises(RuntimeError, match="forked child"):
                reply._handler_done(b"from the child")

        assert _reap(_run_in_fork(child)) == 0
        reply._handler_done(b"from the parent")
        assert client.recvfrom(64) == (b"from the parent", server.address)
        client.settimeout(0.2)
        with pytest.raises(TimeoutError):
            client.recvfrom(64)  # and nothing from the child


FORK_WHILE_A_VALUE_IS_MADE = r"""
import logging, os, threading
import rsock

parent = os.getpid()
entered, release = threading.Event(), threading.Event()
get_logger = logging.getLogger


def get_logger_slowly(name=None):
    # rsock looks its logger up on first use. In the parent, that look-up (on rsock's io thread) waits, without
    # the GIL, until the main thread has forked in the middle of it.
    if name == "rsock" and os.getpid() == parent:
        entered.set()
        release.wait(10)
    return get_logger(name)


logging.getLogger = get_logger_slowly
server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
rsock.TcpClient(server.address, timeout=10).close()  # the accept is the io thread's first look-up
assert entered.wait(10), "the io thread did not look its logger up"
pid = os.fork()
if pid == 0:
    code = 1
    try:
        with rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data.upper(), framing="line") as child_server:
            child_server.start()
            with rsock.TcpClient(child_server.address, timeout=5, framing="line") as client:
                assert client.request(b"served") == b"SERVED"
        code = 0
    finally:
        os._exit(code)
release.set()
_, status = os.waitpid(pid, 0)
server.stop()
print("child", os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_while_another_thread_makes_a_shared_value_makes_its_own():
    """Values rsock makes on first use (its logger, the stdlib's socket module, ...) were made under a lock that
    makes other threads wait, and the making may let go of the GIL: a child forked meanwhile inherited the lock
    held by no thread of its own, and its first use waited for ever (its servers never answered)."""
    result = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_A_VALUE_IS_MADE], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "child 0\n"), result.stderr


def test_a_server_made_but_not_started_before_a_fork_is_the_childs_to_use():
    """Only a server running when the process forked belongs to the parent: one made and not yet started is the
    child's, which may broadcast to its (no) connections and start it."""
    import rsock

    server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line")

    def child():
        assert server.broadcast(b"nobody yet") == 0
        with server, rsock.TcpClient(server.address, timeout=TIMEOUT, framing="line") as client:
            assert client.request(b"served by the child") == b"served by the child"

    try:
        assert _reap(_run_in_fork(child)) == 0
    finally:
        server.stop()


def test_udp_server_made_before_fork_and_started_in_two_children_survives_one_stopping():
    """Pre-fork workers: the socket is made once and each child serves on it. One worker stopping (or exiting)
    must not shut the shared socket down under the other."""
    import rsock

    server = rsock.UdpServer((HOST, 0), lambda data, addr: str(os.getpid()).encode())  # never started here
    children = []
    with contextlib.ExitStack() as pipes:
        pipes.callback(server.stop)

        def pipe():
            r, w = os.pipe()
            pipes.callback(os.close, r)
            pipes.callback(os.close, w)
            return r, w

        for _ in range(2):
            ready, go = pipe(), pipe()

            def worker(ready=ready, go=go):
                server.start()
                os.write(ready[1], b"started")
                os.read(go[0], 1)
                server.stop()
                rsock._rsock._stop_all_servers(1.0)  # what the worker's interpreter exit runs

            pid = _run_in_fork(worker)
            assert os.read(ready[0], 100) == b"started"
            children.append((pid, go[1]))

        (first, stop_first), (second, stop_second) = children
        os.write(stop_first, b"x")
        assert _reap(first) == 0
        busy = _cpu_seconds(second)
        time.sleep(0.5)
        busy = _cpu_seconds(second) - busy  # an idle worker blocks in recvmmsg; one that spins uses it all
        with rsock.UdpClient() as client:
            replies = {client.request(b"who", server.address, timeout=TIMEOUT, retries=0) for _ in range(5)}
        os.write(stop_second, b"x")
        assert _reap(second) == 0
    assert replies == {str(second).encode()}
    assert busy < 0.25, f"the remaining worker spun: {busy:.2f} s of CPU in 0.5 s while idle"


def _ask_line(address, line):
    """One line-framed request on a new connection, and its reply."""
    with stdlib_socket.create_connection(address, timeout=TIMEOUT) as client:
        client.sendall(line + b"\n")
        with client.makefile("rb") as replies:
            return replies.readline()


def test_tcp_server_made_before_fork_survives_a_workers_forced_stop():
    """Pre-fork workers: one listener, made once, served by each child. A worker whose stop() times out while its
    handler holds up its io thread gives up the port. Given up by shutting the listener down, that ended the listening
    of the socket the workers share: the other worker refused every connection, its accept loop failing at once with
    EINVAL for ever (half a core, an error logged each time). Only the stopping worker's descriptor goes."""
    import logging

    import rsock

    def handler(conn, data):
        if data == b"block":
            threading.Thread(target=server.stop, args=(0.2,)).start()
            time.sleep(2.0)
        return str(os.getpid()).encode()

    server = rsock.TcpServer((HOST, 0), handler, framing="line")  # never started here
    workers, codes = [], []
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        for _ in range(2):
            ready_r, ready_w = os.pipe()
            go_r, go_w = os.pipe()
            for fd in (ready_r, ready_w, go_r, go_w):
                stack.callback(os.close, fd)

            def worker(ready_w=ready_w, go_r=go_r):
                logging.disable(logging.CRITICAL)  # a worker that spins, logging, must not fill the test's capture
                server.start()
                os.write(ready_w, b"started")
                os.read(go_r, 1)
                server.stop()
                rsock._rsock._stop_all_servers(1.0)  # what the worker's interpreter exit runs

            pid = _run_in_fork(worker)
            stack.callback(lambda pid=pid: codes.append(_reap(pid)))
            stack.callback(os.write, go_w, b"x")
            assert os.read(ready_r, 100) == b"started"
            workers.append(pid)
        with stdlib_socket.create_connection(server.address, timeout=TIMEOUT) as blocker:
            blocker.sendall(b"block\n")
            time.sleep(0.6)  # the stop(0.2) of the worker that took it has timed out
            busy = {pid: _cpu_seconds(pid) for pid in workers}
            time.sleep(0.5)
            busy = {pid: _cpu_seconds(pid) - busy[pid] for pid in workers}
            replies = {_ask_line(server.address, b"who") for _ in range(5)}
    assert codes == [0, 0]
    assert len(replies) == 1 and int(replies.pop()) in workers
    assert max(busy.values()) < 0.25, f"a worker spun: {busy} s of CPU in 0.5 s"


def test_a_childs_handler_stopping_the_parents_tcp_server_leaves_it_listening():
    """A forked child's handler that stops the parent's server (a stop on the child's io thread, which gives up the
    port at once) acts on the child's copy only: it shut the parent's listener down, and the parent's server refused
    every connection, its accept loop failing with EINVAL for ever."""
    import rsock

    server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    server.start()
    try:
        assert _ask_line(server.address, b"serving") == b"serving\n"  # its accept loop holds the port

        def child():
            def stop_the_parents(conn, data):
                server.stop()
                return b"stopped"

            with rsock.TcpServer((HOST, 0), stop_the_parents, framing="line") as own:
                assert _ask_line(own.address, b"go") == b"stopped\n"

        assert _reap(_run_in_fork(child)) == 0
        time.sleep(0.3)
        assert _ask_line(server.address, b"still here") == b"still here\n"
        assert server.stats["errors"] == 0
    finally:
        server.stop()


def test_a_listener_shut_down_from_outside_ends_accepting_with_one_error(caplog):
    """A listener another process shut down (one sharing it) fails every accept() at once with EINVAL: the accept loop
    reports it once and ends, where it retried at once for ever, logging an error each time. The connections already
    open are served on."""
    import logging

    import rsock

    server = rsock.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    server.start()
    try:
        with stdlib_socket.create_connection(server.address, timeout=TIMEOUT) as client, client.makefile("rb") as lines:
            client.sendall(b"one\n")
            assert lines.readline() == b"one\n"
            with caplog.at_level(logging.ERROR, logger="rsock"):
                with _listening_socket(server.address) as listener:
                    listener.shutdown(stdlib_socket.SHUT_RDWR)
                time.sleep(0.5)
            client.sendall(b"two\n")
            assert lines.readline() == b"two\n"
        with pytest.raises(ConnectionRefusedError):
            stdlib_socket.create_connection(server.address, timeout=TIMEOUT).close()
        assert server.stats["errors"] == 1
        reports = [r.getMessage() for r in caplog.records if r.name == "rsock"]
        assert reports == [
            "no longer accepting connections: the listening socket was shut down (Invalid argument (os error 22))"
        ]
    finally:
        server.stop()


def _listening_socket(address):
    """A stdlib socket on a duplicate of this process's descriptor that listens at `address`."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            continue
        try:
            sock = stdlib_socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        with contextlib.ExitStack() as unused:
            unused.callback(sock.close)
            if (
                sock.type == stdlib_socket.SOCK_STREAM
                and sock.getsockname() == address
                and sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN)
            ):
                unused.pop_all()
                return sock
    raise AssertionError(f"no socket listens at {address}")


def _cpu_seconds(pid):
    """CPU time (user + system) process `pid` has used so far."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------------
# 5. ResourceWarning for a socket collected while open


@contextlib.contextmanager
def _recorded_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    gc.collect()


def _resource_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("bound", [False, True])
def test_unclosed_socket_warns_when_collected(sockmod, bound):
    with _recorded_warnings() as caught:
        sock = sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM)
        if bound:
            sock.bind((HOST, 0))
        expected = f"unclosed {sock!r}"
        del sock
        gc.collect()
    try:
        assert _resource_warnings(caught) == [expected]
        assert caught[0].filename == __file__
    finally:
        caught.clear()


def test_unclosed_accepted_socket_warns(sockmod):
    with _listener(sockmod) as listener, sockmod.socket() as client:
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        with _recorded_warnings() as caught:
            conn, _ = listener.accept()
            expected = f"unclosed {conn!r}"
            del conn
            gc.collect()
        try:
            assert _resource_warnings(caught) == [expected]
        finally:
            caught.clear()


def test_unclosed_socket_in_reference_cycle_warns(sockmod):
    with _recorded_warnings() as caught:
        holder = {"sock": sockmod.socket()}
        holder["self"] = holder
        expected = f"unclosed {holder['sock']!r}"
        del holder
        gc.collect()
    try:
        assert _resource_warnings(caught) == [expected]
    finally:
        caught.clear()


def test_unclosed_socket_type_instance_warns(sockmod):
    """`SocketType` (the C `_socket.socket` in the stdlib) warns about itself too."""
    with _recorded_warnings() as caught:
        sock = sockmod.SocketType(sockmod.AF_INET, sockmod.SOCK_STREAM)
        expected = f"unclosed {sock!r}"
        del sock
        gc.collect()
    try:
        assert _resource_warnings(caught) == [expected]
    finally:
        caught.clear()


@pytest.mark.parametrize("calls_super", [True, False], ids=["super().__del__()", "no __del__"])
def test_a_socket_type_subclass_finalizes_as_the_base_does(sockmod, calls_super):
    """A direct subclass of `SocketType` whose `__del__` calls the base's (rsock's had none: AttributeError), or
    that defines none: collected while open, it warns with itself as the warning's source, and is closed."""

    class Sub(sockmod.SocketType):
        if calls_super:

            def __del__(self):
                super().__del__()

    with _recorded_warnings() as caught:
        sock = Sub(sockmod.AF_INET, sockmod.SOCK_STREAM)
        expected = f"unclosed {sock!r}"
        del sock
        gc.collect()
    try:
        [warning] = caught
        assert (warning.category, str(warning.message), type(warning.source)) == (ResourceWarning, expected, Sub)
        assert warning.source.fileno() == -1 and warning.filename == __file__
    finally:
        caught.clear()
        gc.collect()


def test_collected_unclosed_socket_is_closed_even_when_the_warning_keeps_it(sockmod):
    """The recorded warning's `source` keeps the socket object alive; its descriptor is closed all the same."""
    with _recorded_warnings() as caught:
        sock = sockmod.socket()
        fd = sock.fileno()
        del sock
        gc.collect()
    try:
        [warning] = caught
        assert warning.source.fileno() == -1
        with pytest.raises(OSError) as excinfo:
            os.fstat(fd)
        assert excinfo.value.errno == errno.EBADF
    finally:
        caught.clear()
        gc.collect()


def test_unclosed_socket_with_warnings_as_errors_is_reported_unraisable(sockmod):
    """Under -W error (as in this test suite) the warning becomes an error reported through sys.unraisablehook,
    which is how a leaked socket fails a test run instead of passing silently."""
    reported = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append((unraisable.exc_type, str(unraisable.exc_value)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            sock = sockmod.socket()
            expected = f"unclosed {sock!r}"
            del sock
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert reported == [(ResourceWarning, expected)]


@pytest.mark.parametrize("action", ["always", "error", "ignore"])
def test_socket_whose_descriptor_was_closed_elsewhere_warns_but_reports_no_close_error(sockmod, action):
    """The socket was never closed, so collecting it warns as usual; what its close(2) then reports (EBADF)
    goes nowhere, as in the stdlib's finalizer."""
    reported = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append((unraisable.exc_type, str(unraisable.exc_value)))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(action, ResourceWarning)
            sock = sockmod.socket()
            os.close(sock.fileno())
            expected = [(ResourceWarning, f"unclosed {sock!r}")]
            del sock
            gc.collect()
        warned = [(w.category, str(w.message)) for w in caught]
        caught.clear()
    finally:
        sys.unraisablehook = old_hook
    assert (warned, reported) == {"always": (expected, []), "error": ([], expected), "ignore": ([], [])}[action]


def test_closed_socket_does_not_warn(sockmod):
    with _recorded_warnings() as caught:
        sock = sockmod.socket()
        sock.close()
        del sock
        with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as other:
            other.bind((HOST, 0))
        del other
        gc.collect()
    assert caught == []


def test_detached_socket_does_not_warn(sockmod):
    with _recorded_warnings() as caught:
        sock = sockmod.socket()
        fd = sock.detach()
        del sock
        gc.collect()
    try:
        assert caught == []
        os.fstat(fd)  # still open: detach() gave it away
    finally:
        os.close(fd)


def test_socket_whose_init_failed_does_not_warn(sockmod):
    with _recorded_warnings() as caught:
        with pytest.raises(OSError):
            sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM, 255)  # no such protocol
        gc.collect()
    assert caught == []


def test_socket_closed_after_makefile_does_not_warn(sockmod):
    with _recorded_warnings() as caught:
        with contextlib.ExitStack() as stack:
            a, b = _tcp_pair(sockmod, stack)
            reader = b.makefile("rb")
            b.close()  # the file still uses the descriptor
            assert b.fileno() >= 0
            a.sendall(b"line\n")
            assert reader.readline() == b"line\n"
            reader.close()
            assert b.fileno() == -1
        del a, b, reader
        gc.collect()
    assert caught == []


# ---------------------------------------------------------------------------------------------------------------
# 6. Subclassing, weakref, pickle, SocketType


def _subclasses(mod):
    class TaggedDatagram(mod.socket):
        def __init__(self, tag, *, note=None):
            super().__init__(mod.AF_INET, mod.SOCK_DGRAM)
            self.tag = tag
            self.note = note

        def send_tagged(self, data, address):
            return self.sendto(self.tag + data, address)

    class NativeTaggedDatagram(mod.SocketType):
        def __init__(self, tag):
            super().__init__(mod.AF_INET, mod.SOCK_DGRAM)
            self.tag = tag

    return TaggedDatagram, NativeTaggedDatagram


def test_subclass_with_own_init(sockmod):
    TaggedDatagram, _ = _subclasses(sockmod)
    with TaggedDatagram(b"A:", note="first") as a, TaggedDatagram(tag=b"B:") as b:
        assert type(a) is TaggedDatagram
        assert isinstance(a, sockmod.socket)
        assert isinstance(a, sockmod.SocketType)
        assert (a.tag, a.note, b.tag, b.note) == (b"A:", "first", b"B:", None)
        assert (a.family, a.type, a.proto) == (sockmod.AF_INET, sockmod.SOCK_DGRAM, 0)
        assert isinstance(a.family, stdlib_socket.AddressFamily)
        assert isinstance(a.type, stdlib_socket.SocketKind)
        assert repr(a).startswith(f"<{__name__}.{TaggedDatagram.__qualname__} fd={a.fileno()}, family=")
        a.bind((HOST, 0))
        b.bind((HOST, 0))
        b.settimeout(TIMEOUT)
        assert a.send_tagged(b"hi", b.getsockname()) == 4
        data, addr = b.recvfrom(64)
        assert (data, addr) == (b"A:hi", a.getsockname())
    assert a.fileno() == b.fileno() == -1
    assert "[closed]" in repr(a)


def test_subclass_of_socket_type_with_own_init(sockmod):
    _, NativeTaggedDatagram = _subclasses(sockmod)
    sock = NativeTaggedDatagram("n")
    try:
        assert isinstance(sock, sockmod.SocketType)
        assert not isinstance(sock, sockmod.socket)
        assert (sock.tag, sock.family, sock.type) == ("n", stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.settimeout(TIMEOUT)
        sock.sendto(b"self", sock.getsockname())
        assert sock.recvfrom(64) == (b"self", sock.getsockname())
    finally:
        sock.close()
    assert sock.fileno() == -1


def test_subclass_init_that_does_not_call_super_gives_unopened_socket(sockmod):
    class Lazy(sockmod.socket):
        def __init__(self, *args, **kwargs):
            self.args = (args, kwargs)

    with _recorded_warnings() as caught:
        lazy = Lazy(1, 2, three=3)
        assert lazy.args == ((1, 2), {"three": 3})
        assert lazy.fileno() == -1
        with pytest.raises(OSError) as excinfo:
            lazy.send(b"x")
        assert excinfo.value.errno == errno.EBADF
        unopened = (lazy.family, lazy.type, lazy.proto)
        del lazy
        gc.collect()
    assert caught == []
    assert unopened == (0, 0, 0)  # nothing opened yet: no family, type or protocol


def test_weakref_to_socket(sockmod):
    TaggedDatagram, _ = _subclasses(sockmod)
    for make in (sockmod.socket, lambda: TaggedDatagram(b"t")):
        sock = make()
        ref = weakref.ref(sock)
        proxy = weakref.proxy(sock)
        assert ref() is sock
        assert proxy.fileno() == sock.fileno()
        registry = weakref.WeakSet([sock])
        assert sock in registry
        sock.close()
        del sock
        gc.collect()
        assert ref() is None
        assert len(registry) == 0
        with pytest.raises(ReferenceError):
            proxy.fileno()


def _pickling_errors(obj):
    """(exception type, message) for every pickle protocol and for copy.copy/deepcopy."""
    outcomes = []
    attempts = [lambda p=p: pickle.dumps(obj, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    for attempt in [lambda: pickle.dumps(obj), *attempts, lambda: copy.copy(obj), lambda: copy.deepcopy(obj)]:
        try:
            attempt()
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
        else:
            outcomes.append(None)
    return outcomes


def test_pickle_raises_like_stdlib(sockmod):
    with sockmod.socket() as sock, stdlib_socket.socket() as reference:
        outcomes = _pickling_errors(sock)
        assert outcomes[0] == (TypeError, "cannot pickle 'socket' object")
        assert outcomes == _pickling_errors(reference)


def test_pickle_subclass_raises_like_stdlib(sockmod):
    (TaggedDatagram, _), (ReferenceDatagram, _) = _subclasses(sockmod), _subclasses(stdlib_socket)
    with TaggedDatagram(b"x") as sock, ReferenceDatagram(b"x") as reference:
        outcomes = _pickling_errors(sock)
        assert outcomes[0] == (TypeError, "cannot pickle 'TaggedDatagram' object")
        assert outcomes == _pickling_errors(reference)


def test_sockets_are_instances_of_socket_type(sockmod):
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(_listener(sockmod))
        client = stack.enter_context(sockmod.create_connection(listener.getsockname(), timeout=TIMEOUT))
        conn = stack.enter_context(listener.accept()[0])
        pair = sockmod.socketpair()
        for sock in pair:
            stack.enter_context(sock)
        dup = stack.enter_context(client.dup())
        fromfd = stack.enter_context(sockmod.fromfd(conn.fileno(), sockmod.AF_INET, sockmod.SOCK_STREAM))
        for sock in (listener, client, conn, *pair, dup, fromfd):
            assert isinstance(sock, sockmod.SocketType), sock
            assert isinstance(sock, sockmod.socket), sock
        assert issubclass(sockmod.socket, sockmod.SocketType)
        assert sockmod.SocketType is not sockmod.socket


# ---------------------------------------------------------------------------------------------------------------
# 7. Many clients


def _request(client_id, round_no):
    return f"client {client_id} round {round_no}\n".encode()


def _reply(request):
    return b"ok " + request[::-1].strip() + b"\n"


def _run_clients(sockmod, address, count, rounds):
    """`count` concurrent client threads doing `rounds` request/response exchanges each; returns the replies
    per client and any errors."""
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT)
    replies = {}
    errors = []

    def client(client_id):
        try:
            barrier.wait()
            with sockmod.create_connection(address, timeout=TIMEOUT) as sock, sock.makefile("rb") as reader:
                got = []
                for round_no in range(rounds):
                    sock.sendall(_request(client_id, round_no))
                    got.append(reader.readline())
                replies[client_id] = got
        except BaseException as exc:
            errors.append((client_id, exc))
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        _join(thread)
    return replies, errors


def _expected_replies(count, rounds):
    return {i: [_reply(_request(i, r)) for r in range(rounds)] for i in range(count)}


def test_threaded_server_with_50_concurrent_clients(sockmod):
    count, rounds = 50, 5
    server_errors = []
    handlers = []

    def handle(conn):
        try:
            with conn, conn.makefile("rb") as reader:
                conn.settimeout(TIMEOUT)
                while line := reader.readline():
                    conn.sendall(_reply(line))
        except BaseException as exc:
            server_errors.append(exc)

    with _listener(sockmod, backlog=count) as listener:
        listener.settimeout(TIMEOUT)

        def accept_loop():
            try:
                for _ in range(count):
                    conn, _ = listener.accept()
                    thread = threading.Thread(target=handle, args=(conn,), name="handler")
                    handlers.append(thread)
                    thread.start()
            except BaseException as exc:
                server_errors.append(exc)

        acceptor = threading.Thread(target=accept_loop, name="acceptor")
        acceptor.start()
        try:
            replies, client_errors = _run_clients(sockmod, listener.getsockname(), count, rounds)
        finally:
            _join(acceptor)
            for thread in handlers:
                _join(thread)
    assert not client_errors, client_errors[:3]
    assert not server_errors, server_errors[:3]
    assert len(handlers) == count
    assert replies == _expected_replies(count, rounds)


def test_select_server_with_20_clients(sockmod):
    count, rounds = 20, 5
    server_errors = []
    stop = threading.Event()
    finished = []

    with _listener(sockmod, backlog=count) as listener:

        def serve():
            connections = {}  # socket -> pending bytes
            try:
                listener.setblocking(False)
                deadline = time.monotonic() + JOIN_TIMEOUT
                while len(finished) < count and not stop.is_set():
                    assert time.monotonic() < deadline, "the select() server ran out of time"
                    readable, _, _ = select.select([listener, *connections], [], [], 0.1)
                    for sock in readable:
                        if sock is listener:
                            conn, _ = listener.accept()
                            conn.settimeout(TIMEOUT)
                            connections[conn] = b""
                            continue
                        data = sock.recv(4096)
                        if not data:
                            del connections[sock]
                            sock.close()
                            finished.append(sock)
                            continue
                        pending = connections[sock] + data
                        *lines, connections[sock] = pending.split(b"\n")
                        for line in lines:
                            sock.sendall(_reply(line + b"\n"))
            except BaseException as exc:
                server_errors.append(exc)
            finally:
                for sock in connections:
                    sock.close()

        server = threading.Thread(target=serve, name="select-server")
        server.start()
        try:
            replies, client_errors = _run_clients(sockmod, listener.getsockname(), count, rounds)
            if client_errors:  # the server would wait for clients that are gone
                stop.set()
        except BaseException:
            stop.set()
            raise
        finally:
            _join(server)
    assert not client_errors, client_errors[:3]
    assert not server_errors, server_errors[:3]
    assert len(finished) == count
    assert all(isinstance(sock, sockmod.socket) for sock in finished)
    assert replies == _expected_replies(count, rounds)


AIO_STOP_HELD_UP = """
import asyncio, threading
import rsock, rsock.aio

release = threading.Event()

def held_up(conn, data):
    release.wait(60)  # holds up rsock's thread, and with it the stop
    return data

async def main():
    server = rsock.aio.TcpServer(("127.0.0.1", 0), held_up)
    await server.start()
    client = await rsock.aio.TcpClient.connect(server.address)
    await client.send(b"x")
    await asyncio.sleep(0.2)
    print("stopping", flush=True)
    await server.stop(timeout=60)

try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_during_an_aio_servers_stop_ends_the_program_promptly():
    """Ctrl-C cancels asyncio.run()'s task, which was waiting in `await server.stop()`; asyncio.run() then waits for
    its executor's threads as it ends, and the blocking stop ran in one: the program lived until the stop's timeout.
    The stop waits in a daemon thread of its own now, and the program ends as the sync server's stop() would."""
    with started([sys.executable, "-c", AIO_STOP_HELD_UP], preexec_fn=default_sigint) as proc:
        lines = Lines(proc)
        assert lines.next() == "stopping"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=PROMPT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the program was still running {PROMPT} s after Ctrl-C")
        assert (proc.returncode, lines.rest()) == (0, ["stopping", "interrupted"]), proc.stderr.read().decode()


def _never_started_servers():
    import socketserver

    import rsock

    return {
        "rsock.TcpServer": lambda: rsock.TcpServer((HOST, 0), lambda conn, data: data),
        "rsock.UdpServer": lambda: rsock.UdpServer((HOST, 0), lambda data, sender: data),
        "socketserver.TCPServer": lambda: socketserver.TCPServer((HOST, 0), socketserver.BaseRequestHandler),
        "socketserver.UDPServer": lambda: socketserver.UDPServer((HOST, 0), socketserver.BaseRequestHandler),
    }


@pytest.mark.parametrize("kind", list(_never_started_servers()))
def test_a_server_bound_but_never_started_nor_stopped_warns_when_collected(kind):
    """Its port was held for nothing: a ResourceWarning, as socketserver's (its socket's) when never closed. A
    server that was started serves on without its object, and stop() closes a server never started."""
    server = _never_started_servers()[kind]()
    with pytest.warns(ResourceWarning, match=r"^unclosed <"):
        del server
        gc.collect()


@pytest.mark.parametrize("kind", ["rsock.TcpServer", "rsock.UdpServer"])
def test_a_server_never_started_but_stopped_is_collected_quietly(kind):
    server = _never_started_servers()[kind]()
    server.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del server
        gc.collect()
