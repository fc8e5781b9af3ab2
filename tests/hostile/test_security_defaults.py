"""The high-level types' defaults are safe ones, shown through behaviour.

- TcpServer() and UdpServer() without an address listen on 127.0.0.1 only.
- The default max_frame_size of framed TcpServer and TcpClient is finite (16 MiB: TcpServer's docstring in
  _rsock.pyi, DEFAULT_MAX_FRAME_SIZE in src/tcp/server.rs and src/tcp/client.rs): a frame announced or
  buffered beyond it is refused and the connection closed, one of exactly that size is not.
- The default max_connections is finite (10,000: TcpServer's docstring in _rsock.pyi,
  DEFAULT_MAX_CONNECTIONS in src/tcp/server.rs; no attribute exposes it): one connection more than that is
  refused (the clients live in a child process, so the descriptor limit needs room for the server's side
  only).
- A handler raising any exception, BaseException subclasses included (KeyboardInterrupt and SystemExit
  aside), ends only that connection (or datagram): the server keeps serving the others and new ones.
- The crate unwinds on panic in every profile, so pyo3 can turn a panic into pyo3_runtime.PanicException and
  tokio can contain one in a connection's task: a panic never aborts the process.
"""

import asyncio
import contextlib
import inspect
import logging
import math
import re
import socket as stdlib_socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

import rsock
from tests.hostile.conftest import TRIED
from tests.stress.conftest import raise_fd_limit, scale

WAIT = 5.0  # seconds: the bound on every wait
SOURCE = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.timeout(scale(120, 600))


def source_constant(relative, name):
    """The value of `const NAME: TYPE = ...;` in a Rust source file of rsock."""
    path = SOURCE / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (rsock installed without its source)")
    match = re.search(rf"const {name}: \w+ = ([0-9_ *]+);", path.read_text())
    assert match, f"{name} not found in {path}"
    return math.prod(int(factor) for factor in match.group(1).replace("_", "").split("*"))


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def closed_by_peer(sock):
    """Whether the peer closed `sock` (EOF or reset) within WAIT, reading and discarding whatever comes."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


def still_open(sock, seconds=0.3):
    """Whether `sock` is still open after `seconds`: nothing arrived, neither data nor EOF."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    except ConnectionError:
        return False
    return False


# --- default address -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsock.TcpServer(),
        lambda: rsock.TcpServer(None, lambda conn, data: data),
        lambda: rsock.UdpServer(),
        lambda: rsock.UdpServer(None, lambda data, peer: data),
    ],
    ids=["TcpServer()", "TcpServer(None, handler)", "UdpServer()", "UdpServer(None, handler)"],
)
def test_default_address_is_loopback(make):
    server = make()
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        assert 0 < port < 65536
        # Bound to 127.0.0.1 only, not to every interface: another loopback address's port is still free
        # (a wildcard bind would make this bind fail with EADDRINUSE).
        kind = stdlib_socket.SOCK_STREAM if isinstance(server, rsock.TcpServer) else stdlib_socket.SOCK_DGRAM
        with stdlib_socket.socket(stdlib_socket.AF_INET, kind) as other:
            other.bind(("127.0.0.2", port))
        server.start()
        assert server.address == (host, port)
    finally:
        server.stop(WAIT)


# --- default max_frame_size ------------------------------------------------------------------------------------


STUB = Path(rsock.__file__).parent / "_rsock.pyi"


@pytest.fixture(scope="module")
def default_frame_size():
    server = source_constant("tcp/server.rs", "DEFAULT_MAX_FRAME_SIZE")
    client = source_constant("tcp/client.rs", "DEFAULT_MAX_FRAME_SIZE")
    assert server == client
    assert 0 < server <= 64 << 20, f"the default max_frame_size ({server}) is no small bound"
    # What the documentation says is what the source has.
    assert server == 16 << 20 and "`max_frame_size` (default 16 MiB)" in STUB.read_text()
    return server


class Ends:
    """on_disconnect results of a server, as a list."""

    def __init__(self):
        self.ends = []
        self.messages = []

    def on_message(self, conn, data):
        self.messages.append(len(data))

    def on_disconnect(self, conn, exc):
        self.ends.append(exc)


@contextlib.contextmanager
def framed_server(framing, ends):
    with rsock.TcpServer(
        ("127.0.0.1", 0), ends.on_message, on_disconnect=ends.on_disconnect, framing=framing
    ) as server:  # every default but framing
        yield server


@pytest.mark.parametrize("announced", ["default + 1", "4 GiB - 1"])
def test_server_refuses_a_length_header_over_the_default(default_frame_size, announced):
    size = default_frame_size + 1 if announced == "default + 1" else 2**32 - 1
    ends = Ends()
    TRIED["test"] += 1
    with framed_server("length", ends) as server, stdlib_socket.create_connection(server.address, WAIT) as client:
        client.sendall(struct.pack(">I", size))
        # Refused on the header alone: the server closes without waiting for the body (or for our EOF).
        assert closed_by_peer(client)
        client.close()
        wait_until(lambda: ends.ends, "on_disconnect")
    assert type(ends.ends[0]) is ValueError
    assert ends.messages == []


def test_server_takes_a_length_header_of_exactly_the_default(default_frame_size):
    ends = Ends()
    TRIED["test"] += 1
    with framed_server("length", ends) as server, stdlib_socket.create_connection(server.address, WAIT) as client:
        client.sendall(struct.pack(">I", default_frame_size) + b"x" * 1000)
        assert still_open(client)  # waiting for the rest of the body
        client.shutdown(stdlib_socket.SHUT_WR)
        assert closed_by_peer(client)
        wait_until(lambda: ends.ends, "on_disconnect")
    # Not refused for its size: the connection ends only because the stream stopped mid-message.
    assert type(ends.ends[0]) is EOFError
    assert ends.messages == []


@pytest.mark.parametrize("extra", [0, 1])
def test_server_bounds_an_unterminated_line_by_the_default(default_frame_size, extra):
    """default bytes without a newline are buffered; one more is refused."""
    ends = Ends()
    TRIED["test"] += 1
    with framed_server("line", ends) as server, stdlib_socket.create_connection(server.address, WAIT) as client:
        with contextlib.suppress(ConnectionError):
            client.sendall(b"x" * (default_frame_size + extra))
        if extra:
            assert closed_by_peer(client)
            client.close()
            wait_until(lambda: ends.ends, "on_disconnect")
            assert type(ends.ends[0]) is ValueError
        else:
            assert still_open(client)
            client.sendall(b"\n")
            wait_until(lambda: ends.messages, "the line")
            assert ends.messages == [default_frame_size]


@contextlib.contextmanager
def feeding_client(payload, **kwargs):
    """A rsock.TcpClient connected to a stdlib socket that sends `payload` (from a thread: it may be more than
    the socket buffers hold) and then shuts down its side."""
    with stdlib_socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        with rsock.TcpClient(listener.getsockname(), timeout=WAIT, **kwargs) as client:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)

                def feed():
                    with contextlib.suppress(OSError):  # the client may close on a refused frame
                        conn.sendall(payload)
                        conn.shutdown(stdlib_socket.SHUT_WR)

                sender = threading.Thread(target=feed)
                sender.start()
                try:
                    yield client
                finally:
                    client.close()
                    sender.join(WAIT)
                    assert not sender.is_alive()


@pytest.mark.parametrize("framing", ["length", "line"])
def test_client_refuses_a_frame_over_the_default(default_frame_size, framing):
    TRIED["test"] += 1
    payload = struct.pack(">I", default_frame_size + 1) if framing == "length" else b"y" * (default_frame_size + 1)
    with feeding_client(payload, framing=framing) as client:
        with pytest.raises(ValueError, match=r"max_frame_size|frame size too big"):
            client.recv_message()
        assert client.closed


@pytest.mark.parametrize("framing", ["length", "line"])
def test_client_takes_a_frame_of_exactly_the_default(default_frame_size, framing):
    TRIED["test"] += 1
    body = b"z" * default_frame_size
    payload = struct.pack(">I", default_frame_size) + body if framing == "length" else body + b"\n"
    with feeding_client(payload, framing=framing) as client:
        assert client.recv_message() == body
        assert client.recv_message() is None


# --- default max_connections -----------------------------------------------------------------------------------


def test_default_max_connections_is_documented_and_finite():
    default = source_constant("tcp/server.rs", "DEFAULT_MAX_CONNECTIONS")
    assert 0 < default <= 100_000
    # The constant is what an absent max_connections becomes, what TcpServer's signature shows, and what the
    # documentation says.
    server_rs = (SOURCE / "tcp/server.rs").read_text()
    assert 'positive("max_connections", &max_connections, DEFAULT_MAX_CONNECTIONS)' in server_rs
    assert inspect.signature(rsock.TcpServer).parameters["max_connections"].default == default
    assert default == 10_000 and "`max_connections` (default 10,000)" in STUB.read_text()


def test_max_connections_refuses_the_connection_over_it():
    """The mechanism the default relies on: with max_connections=2 a third connection is closed at once and
    counted as refused, while the first two are served."""
    TRIED["test"] += 1
    with (
        rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data, max_connections=2) as server,
        contextlib.ExitStack() as stack,
    ):
        first, second = (stack.enter_context(stdlib_socket.create_connection(server.address, WAIT)) for _ in range(2))
        wait_until(lambda: server.stats["active"] == 2, "two connections")
        third = stack.enter_context(stdlib_socket.create_connection(server.address, WAIT))
        assert closed_by_peer(third)
        assert server.stats["refused"] == 1
        for sock in (first, second):
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"


CHILD = """
import resource, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 200), hard))
held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
print("connected", flush=True)
sys.stdin.read()
"""


def test_default_max_connections_is_enforced():
    """One connection more than the default is refused (10,001 connections: about a second on loopback)."""
    default = source_constant("tcp/server.rs", "DEFAULT_MAX_CONNECTIONS")
    if raise_fd_limit(default + 200) < default + 200:
        pytest.skip("the descriptor limit is too low for this test")
    TRIED["test"] += 1
    with (
        rsock.TcpServer(("127.0.0.1", 0), backlog=4096) as server,
        # The clients live in a child process, so this one only holds the server's side.
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(server.address[1]), str(default + 1)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as child,
    ):
        try:
            assert child.stdout.readline().strip() == "connected"
            deadline = time.monotonic() + 60
            while server.stats["accepted"] < default + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.stats["refused"] == 1
            assert server.stats["active"] == default
        finally:
            child.stdin.close()
            child.wait(60)


# --- handlers that raise ---------------------------------------------------------------------------------------


class CustomBaseError(BaseException):
    """A BaseException subclass of the application's own."""


RAISED = [
    Exception("boom"),
    ValueError("boom"),
    RuntimeError("boom"),
    ZeroDivisionError("boom"),
    RecursionError("boom"),
    MemoryError("boom"),
    StopIteration("boom"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "boom"),
    CustomBaseError("boom"),
    GeneratorExit("boom"),
    asyncio.CancelledError("boom"),
    BaseExceptionGroup("boom", [CustomBaseError("inner")]),
]


@pytest.fixture
def quiet_rsock_log():
    """The handler errors these tests cause are logged at ERROR by design: keep them out of the output."""
    logger = logging.getLogger("rsock")
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(saved)


def echo(conn, data):
    return data


@pytest.mark.parametrize("where", ["on_message", "on_connect", "on_disconnect"])
@pytest.mark.parametrize("error", RAISED, ids=[type(e).__name__ for e in RAISED])
def test_tcp_handler_exception_leaves_the_server_serving(error, where, quiet_rsock_log):
    TRIED["test"] += 1
    victims = set()  # peer ports of the connections whose handlers raise

    def on_message(conn, data):
        if where == "on_message" and data == b"boom":
            raise error
        return data

    def on_connect(conn):
        if where == "on_connect" and conn.peer[1] in victims:
            raise error

    def on_disconnect(conn, exc):
        if where == "on_disconnect" and conn.peer[1] in victims:
            raise error

    with (
        rsock.TcpServer(("127.0.0.1", 0), on_message, on_connect=on_connect, on_disconnect=on_disconnect) as server,
        contextlib.ExitStack() as stack,
    ):
        bystander = stack.enter_context(stdlib_socket.create_connection(server.address, WAIT))
        bystander.sendall(b"before")
        assert bystander.recv(6) == b"before"

        victim = stack.enter_context(stdlib_socket.socket())
        victim.settimeout(WAIT)
        victim.bind(("127.0.0.1", 0))
        victims.add(victim.getsockname()[1])
        victim.connect(server.address)
        victim.sendall(b"boom")
        if where in ("on_message", "on_connect"):
            assert closed_by_peer(victim), "the connection whose handler raised stays open"
        victim.close()  # (for on_disconnect: the handler that raises)
        wait_until(lambda: server.stats["active"] == 1, "the victim's end")

        assert server.running
        bystander.sendall(b"after")
        assert bystander.recv(5) == b"after"
        with stdlib_socket.create_connection(server.address, WAIT) as newcomer:
            newcomer.sendall(b"new")
            assert newcomer.recv(3) == b"new"
        if where != "on_disconnect":
            assert server.stats["errors"] >= 1


@pytest.mark.parametrize("error", RAISED, ids=[type(e).__name__ for e in RAISED])
def test_udp_handler_exception_leaves_the_server_serving(error, quiet_rsock_log):
    TRIED["test"] += 1

    def on_datagram(data, peer):
        if data == b"boom":
            raise error
        return data

    with (
        rsock.UdpServer(("127.0.0.1", 0), on_datagram) as server,
        stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as peer,
    ):
        peer.settimeout(WAIT)
        peer.sendto(b"boom", server.address)
        peer.sendto(b"still there?", server.address)
        assert peer.recvfrom(100)[0] == b"still there?"
        assert server.running
        wait_until(lambda: server.stats["errors"] >= 1, "the error to be counted")


def test_no_build_profile_aborts_on_panic():
    """panic = "abort" in any profile would turn every panic (which pyo3 raises as PanicException, and which
    tokio contains in the task it happens in) into the end of the user's process."""
    manifest = tomllib.loads((SOURCE.parent / "Cargo.toml").read_text())
    profiles = manifest.get("profile", {})
    assert "release" in profiles, "the release profile the wheel is built with is configured in Cargo.toml"
    aborting = {name: p.get("panic") for name, p in profiles.items() if p.get("panic", "unwind") != "unwind"}
    assert not aborting, f"profiles that abort on panic: {aborting}"
