"""Hostile arguments to the high-level types: TcpServer, UdpServer, TcpClient and UdpClient.

Every constructor and method argument is drawn from valid values and from values of any type: address
shapes, framing values, sizes and counts (negative, zero, beyond 2**64, bools, floats, strings), timeouts
(nan, inf, negative, huge). Each call must either work or raise TypeError, ValueError, OverflowError or
OSError (MemoryError too, for a buffer size no machine has), never another exception, never
pyo3_runtime.PanicException, and never hang. Whatever is constructed is stopped or closed, and what works
is checked to work: the framing attribute reads back, the address is the loopback address asked for,
a started server answers.

Servers bind 127.0.0.1 or ::1 only (never the wildcard), clients connect to servers of the example, hosts
are numeric (nothing is resolved through DNS), and every blocking call has a timeout.

Timeouts of 2**64 seconds or more used to make rsock panic (found by these properties, since fixed):
test_huge_timeouts_raise_instead_of_panicking pins that down.
"""

import contextlib
import math
import select
import socket as stdlib_socket
import tempfile
import time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st

import rsock
from tests.hostile.conftest import TRIED, Index, property_settings
from tests.loopback import ipv6_loopback_available
from tests.stress.conftest import scale

PROPERTY = property_settings(100, HealthCheck.filter_too_much)
WAIT = 2.0  # seconds: the bound on any wait the test itself does
ALLOWED = (TypeError, ValueError, OverflowError, OSError)
SIZE_ALLOWED = (*ALLOWED, MemoryError)  # recv(2**40) cannot be allocated
DATA_ALLOWED = (*ALLOWED, BufferError)  # a non-contiguous buffer: the stdlib's send() raises BufferError too

pytestmark = pytest.mark.timeout(scale(300, 7200))


HAS_IPV6 = ipv6_loopback_available()

# --- the FIGURE lines -----------------------------------------------------------------------------------------


# --- outcomes --------------------------------------------------------------------------------------------------


class Failed:
    """What a call raised (one of the allowed types)."""

    def __init__(self, exc):
        self.exc = exc

    def __repr__(self):
        return f"Failed({self.exc!r})"


def attempt(call, allowed=ALLOWED):
    """`call()`'s result, or a Failed for an allowed exception; anything else fails the test."""
    TRIED["test"] += 1
    try:
        return call()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            pytest.fail(f"rsock panicked: {exc!r}")
        if not isinstance(exc, allowed):
            pytest.fail(f"unexpected {type(exc).__name__}: {exc!r}")
        return Failed(exc)


def ok(result):
    """Whether `result` is a value (not a Failed); tallied for --hypothesis-show-statistics."""
    event("worked" if not isinstance(result, Failed) else f"raised {type(result.exc).__name__}")
    return not isinstance(result, Failed)


# --- strategies ------------------------------------------------------------------------------------------------


class Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


SERVER = Sentinel("SERVER")  # the port of the example's server

JUNK = [1.5, math.nan, "10", b"10", [], (), {}, 1j, Decimal("1"), object(), None]
EDGE_INTS = [0, 1, -1, 2, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, -(2**64)]
counts = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(-10, 100_000),
    st.integers(),
    st.booleans(),
    st.builds(Index, st.sampled_from(EDGE_INTS)),
    st.sampled_from(JUNK),
)
floats_anything = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 1e-12, 1e-9, 0.05, math.nan, math.inf, -math.inf, -1.0, 1e30, 1e300]),
)
timeouts = st.one_of(
    floats_anything,
    st.integers(-5, 10**12),
    st.sampled_from([None, True, False, 2**64, 2**1000, -(2**63), Index(1), "1", b"1", Decimal("0.5"), [], 1j]),
)

SERVER_HOSTS = ["127.0.0.1", "::1" if HAS_IPV6 else "127.0.0.1", "127.1", b"127.0.0.1", bytearray(b"127.0.0.1")]
BAD_HOSTS = ["\x00", "127.0.0.1\x00", "\udcff", "\u00e9" * 70, 5, 1.5, ["127.0.0.1"], memoryview(b"127.0.0.1")]
CLIENT_ONLY_HOSTS = [None, "", "0.0.0.0"]
port_values = st.one_of(
    st.just(0),
    st.sampled_from([-1, 65535, 65536, 2**16 + 1, 2**31, 2**63, 2**64, 2**100, True, False]),
    st.sampled_from(JUNK),
    st.builds(Index, st.sampled_from([0, 70000, -1])),
)


def address_shapes(hosts, ports):
    host = st.sampled_from(hosts)
    return st.one_of(
        st.tuples(host, ports),
        st.tuples(host, ports),
        st.tuples(host, ports),
        st.tuples(host),
        st.tuples(),
        st.tuples(host, ports, st.just(0), st.just(0)),
        st.tuples(host, ports).map(list),
        st.sampled_from(["127.0.0.1:0", b"127.0.0.1", 0, 1.5, {"host": "127.0.0.1"}]),
    )


server_addresses = st.one_of(st.none(), address_shapes(SERVER_HOSTS + BAD_HOSTS, port_values))
client_addresses = address_shapes(
    SERVER_HOSTS + BAD_HOSTS + CLIENT_ONLY_HOSTS, st.one_of(st.just(SERVER), st.just(SERVER), port_values)
)


def materialize(address, port):
    """`address` aimed at the example's server: SERVER becomes its port."""
    if isinstance(address, tuple | list) and any(part is SERVER for part in address):
        parts = [port if part is SERVER else part for part in address]
        return type(address)(parts)
    return address


framings = st.one_of(
    st.sampled_from([None, "line", "length", b"\n", b"\r\n", b"END", bytearray(b"|"), b"\x00"]),
    st.sampled_from([b"", "", "LINE", "lines", "\x00", "length ", memoryview(b"|"), 5, 1.5, True, ["line"], Index(1)]),
    st.binary(min_size=1, max_size=6),
    st.text(max_size=6),
)
handlers = st.sampled_from(["echo", "none", None, 5, "not callable", print, bytes])
data_values = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=50).map(bytearray),
    st.binary(max_size=50).map(memoryview),
    st.sampled_from(["text", 5, None, 1.5, [b"a"], memoryview(b"abcdef")[::2], b"x" * 70_000]),
)


def handler_for(name, reply=lambda data: data):
    if name == "echo":
        return lambda conn, data: reply(data)
    if name == "none":
        return lambda conn, data: None
    return name


def framing_value(framing):
    """What the framing attribute should read back as, for a framing the constructor accepted."""
    if isinstance(framing, bytes | bytearray):
        return bytes(framing)
    return framing


def valid_framing(framing):
    return framing in (None, "line", "length") or (isinstance(framing, bytes | bytearray) and len(framing) > 0)


@contextlib.contextmanager
def stopped_at_exit(server):
    try:
        yield server
    finally:
        server.stop(WAIT)


@st.composite
def arguments(draw, spec):
    """One value per argument of `spec` ({name: (valid, hostile)}): one argument hostile and the others valid
    (so the hostile one reaches the code that uses it), or several hostile at once."""
    focus = draw(st.sampled_from([*spec, "several", "several"]))
    chosen = {}
    for name, (valid, hostile) in spec.items():
        if focus == "several":
            chosen[name] = draw(st.one_of(valid, hostile))
        else:
            chosen[name] = draw(hostile if name == focus else valid)
    return chosen


V4 = "127.0.0.1"
V6 = "::1" if HAS_IPV6 else "127.0.0.1"
valid_server_addresses = st.sampled_from(
    [None, (V4, 0), (V6, 0), (b"127.0.0.1", 0), ("127.1", 0), (bytearray(V4, "ascii"), 0)]
)
valid_framings = st.one_of(
    st.sampled_from([None, "line", "length", b"\r\n", b"END", bytearray(b"|")]), st.binary(min_size=1, max_size=4)
)
valid_timeouts = st.one_of(st.none(), st.floats(1.0, 1e9), st.integers(1, 10**9))
valid_stop_timeouts = st.one_of(st.none(), st.floats(0, 10), st.integers(0, 10))


# --- TcpServer -------------------------------------------------------------------------------------------------


@PROPERTY
@given(
    args=arguments(
        {
            "address": (valid_server_addresses, server_addresses),
            "on_message": (st.sampled_from(["echo", "none", None]), handlers),
            "on_connect": (st.sampled_from([None, "none"]), st.sampled_from([5, "x", b"x"])),
            "framing": (valid_framings, framings),
            "max_connections": (st.one_of(st.integers(1, 10**6), st.just(2**64 - 1)), counts),
            "max_frame_size": (st.one_of(st.integers(1, 2**24), st.just(2**64 - 1)), counts),
            "idle_timeout": (valid_timeouts, timeouts),
            "backlog": (st.integers(-(2**31), 2**31 - 1), counts),
            "reuse_port": (st.booleans(), st.sampled_from([1, 0, None, "yes", 1.0])),
            "stop_timeout": (valid_stop_timeouts, timeouts),
        }
    ),
    talk=st.booleans(),
)
def test_tcp_server_arguments(args, talk):
    address, on_message, on_connect, framing = (args[k] for k in ["address", "on_message", "on_connect", "framing"])
    max_connections, max_frame_size, idle_timeout = (
        args["max_connections"],
        args["max_frame_size"],
        args["idle_timeout"],
    )
    backlog, reuse_port, stop_timeout = args["backlog"], args["reuse_port"], args["stop_timeout"]
    server = attempt(
        lambda: rsock.TcpServer(
            address,
            handler_for(on_message),
            on_connect=(lambda conn: None) if on_connect == "none" else on_connect,
            framing=framing,
            max_connections=max_connections,
            max_frame_size=max_frame_size,
            idle_timeout=idle_timeout,
            backlog=backlog,
            reuse_port=reuse_port,
        )
    )
    if not ok(server):
        return
    with stopped_at_exit(server):
        assert server.address[0] in ("127.0.0.1", "::1")
        assert server.framing == framing_value(framing)
        assert not server.running
        server.start()
        assert server.running
        assert set(server.stats) >= {"accepted", "active", "messages", "errors"}
        repr(server)
        server._repr_html_()
        if talk:
            # A started server serves: a message sent with the server's framing comes back (or, if an
            # argument made the connection end, the client sees that end, in time).
            wait = WAIT if on_message == "echo" else 0.05  # no reply is coming: do not wait long for it
            # An IPv6 server's address is (host, port, flowinfo, scope_id): a client takes it as it is.
            with rsock.TcpClient(server.address, framing=framing, timeout=wait) as client:
                reply = attempt(lambda: client.request(b"ping"))
                if ok(reply) and on_message == "echo" and frames_intact(framing) and max_frame_size_ok(max_frame_size):
                    assert reply == b"ping"
        if ok(attempt(lambda: server.stop(stop_timeout))):
            assert not server.running


def frames_intact(framing):
    """Whether b"ping" framed with `framing` decodes as itself (not raw chunks, and no delimiter inside it)."""
    if framing in ("line", "length"):
        return True
    if not isinstance(framing, bytes | bytearray):
        return False
    delimiter = bytes(framing)
    return (b"ping" + delimiter).find(delimiter) == 4


def max_frame_size_ok(value):
    """Whether `value` as max_frame_size lets a 4-byte message through."""
    return (type(value) is int and value >= 5) or (isinstance(value, Index) and value.value >= 5)


@PROPERTY
@given(
    data=data_values,
    exclude=st.sampled_from([None, "the connection", "a list of it", [None], "xyz", 5, [5], ()]),
    framing=st.sampled_from([None, "line", "length", b"END"]),
)
def test_tcp_server_broadcast_arguments(data, exclude, framing):
    connections = []
    server = rsock.TcpServer(("127.0.0.1", 0), framing=framing, on_connect=connections.append)
    server.start()
    with stopped_at_exit(server), stdlib_socket.create_connection(server.address, timeout=WAIT):
        deadline_wait(lambda: connections)
        excluded = exclude
        if exclude == "the connection":
            excluded = connections[0]
        elif exclude == "a list of it":
            excluded = [connections[0]]
        sent = attempt(lambda: server.broadcast(data, excluded), DATA_ALLOWED)
        if ok(sent):
            assert sent == (0 if exclude in ("the connection", "a list of it") else 1)


def deadline_wait(condition):
    """Waits (bounded) until `condition()` is true."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


# --- UdpServer -------------------------------------------------------------------------------------------------


@PROPERTY
@given(
    args=arguments(
        {
            "address": (valid_server_addresses, server_addresses),
            "on_datagram": (st.sampled_from(["echo", "none", None]), st.sampled_from([5, "not callable", print])),
            "reuse_port": (st.booleans(), st.sampled_from([1, 0, None, "yes", 1.0])),
            "stop_timeout": (valid_stop_timeouts, timeouts),
        }
    ),
    talk=st.booleans(),
)
def test_udp_server_arguments(args, talk):
    address, on_datagram, reuse_port, stop_timeout = (
        args[k] for k in ["address", "on_datagram", "reuse_port", "stop_timeout"]
    )
    handler = {"echo": lambda data, peer: data, "none": lambda data, peer: None}.get(on_datagram, on_datagram)
    server = attempt(lambda: rsock.UdpServer(address, handler, reuse_port=reuse_port))
    if not ok(server):
        return
    with stopped_at_exit(server):
        assert server.address[0] in ("127.0.0.1", "::1")
        server.start()
        assert server.running
        if talk and on_datagram == "echo":
            family = stdlib_socket.AF_INET6 if ":" in server.address[0] else stdlib_socket.AF_INET
            with stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM) as peer:
                peer.settimeout(WAIT)
                peer.sendto(b"ping", server.address)
                assert peer.recvfrom(100)[0] == b"ping"
        if ok(attempt(lambda: server.stop(stop_timeout))):
            assert not server.running


# --- TcpClient -------------------------------------------------------------------------------------------------

client_methods = st.sampled_from(
    ["send", "request", "recv", "recv_exactly", "recv_message", "sendfile", "settimeout", "connect classmethod"]
)


@PROPERTY
@given(
    args=arguments(
        {
            "address": (
                st.sampled_from([(V4, SERVER), (V6, SERVER), ("127.1", SERVER)]),
                client_addresses,
            ),
            "timeout": (valid_timeouts, timeouts),
            "framing": (valid_framings, framings),
            "max_frame_size": (st.integers(1, 2**24), counts),
            "data": (st.binary(max_size=200), data_values),
            "size": (st.integers(0, 100), counts),
            "new_timeout": (valid_timeouts, timeouts),
            "path": (st.sampled_from(["file", b"file"]), st.sampled_from(["missing", "directory", 5, None, "\x00"])),
            "progress": (st.sampled_from([None, False, "callable"]), st.sampled_from([5, "x"])),
        }
    ),
    method=client_methods,
)
def test_tcp_client_arguments(args, method):
    address, timeout, framing, max_frame_size = (args[k] for k in ["address", "timeout", "framing", "max_frame_size"])
    data, size, new_timeout, path, progress = (args[k] for k in ["data", "size", "new_timeout", "path", "progress"])
    server_framing = framing if valid_framing(framing) else None
    wants_v6 = HAS_IPV6 and isinstance(address, tuple | list) and len(address) > 0 and address[0] == "::1"
    server = rsock.TcpServer(
        ("::1" if wants_v6 else "127.0.0.1", 0), lambda conn, message: message, framing=server_framing
    )
    server.start()
    with stopped_at_exit(server):
        target = materialize(address, server.address[1])
        make = rsock.TcpClient.connect if method == "connect classmethod" else rsock.TcpClient
        client = attempt(lambda: make(target, timeout=timeout, framing=framing, max_frame_size=max_frame_size))
        if not ok(client):
            return
        with client:
            assert client.framing == framing_value(framing)
            assert not client.closed and client.fileno() >= 0
            assert client.peer[1] == server.address[1]
            client.local  # noqa: B018 - the property must not raise
            repr(client)
            client._repr_html_()
            # The constructor's timeout was exercised; the calls below wait at most WAIT.
            client.settimeout(WAIT)
            exercise_tcp_client(client, method, data, size, new_timeout, path, progress)
        assert client.closed and client.fileno() == -1


def exercise_tcp_client(client, method, data, size, new_timeout, path, progress):
    if method == "send":
        attempt(lambda: client.send(data), DATA_ALLOWED)
    elif method == "request":
        attempt(lambda: client.request(data), DATA_ALLOWED)
    elif method == "recv":
        attempt(lambda: client.send(b"hello\n"))
        # Bounded: a small read waits for the echo, a huge one is refused or cannot be allocated.
        attempt(lambda: client.recv(size), SIZE_ALLOWED)
    elif method == "recv_exactly":
        attempt(lambda: client.send(b"hello\n"))
        client.settimeout(0.05)  # asking for more than the echo waits for the timeout
        attempt(lambda: client.recv_exactly(size), SIZE_ALLOWED)
    elif method == "recv_message":
        attempt(lambda: client.send(b"hello"))
        attempt(client.recv_message)
    elif method == "sendfile":
        with tempfile.TemporaryDirectory() as directory:
            file = f"{directory}/payload"
            with open(file, "wb") as out:
                out.write(b"file contents\n")
            chosen = {"file": file, "missing": f"{directory}/missing", "directory": directory, b"file": file.encode()}
            seen = []
            callback = {"callable": seen.append}.get(progress, progress)
            sent = attempt(lambda: client.sendfile(chosen.get(path, path), callback))
            if ok(sent) and path in ("file", b"file"):
                assert sent == 14
                assert seen == ([14] if progress == "callable" else [])
    elif method in ("settimeout", "connect classmethod"):
        if ok(attempt(lambda: client.settimeout(new_timeout))):
            client.settimeout(WAIT)
    attempt(lambda: client.send(b"still usable\n"))


# --- UdpClient -------------------------------------------------------------------------------------------------


@PROPERTY
@given(
    args=arguments(
        {
            "address": (
                st.sampled_from([None, (V4, 0), (V6, 0)]),
                st.one_of(st.none(), address_shapes(SERVER_HOSTS + BAD_HOSTS, port_values)),
            ),
            "family": (
                st.sampled_from([stdlib_socket.AF_INET, stdlib_socket.AF_INET6]),
                st.one_of(st.sampled_from([stdlib_socket.AF_UNIX, 0, -1, 999]), counts),
            ),
            "data": (st.binary(max_size=100), data_values),
            "target": (st.just("server"), address_shapes(SERVER_HOSTS + BAD_HOSTS, port_values)),
            "bufsize": (st.one_of(st.just("default"), st.integers(100, 70_000)), counts),
            "timeout": (st.floats(0.05, 10), timeouts),
            "retries": (st.integers(0, 5), counts),
        }
    ),
    method=st.sampled_from(["sendto", "recvfrom", "request"]),
)
def test_udp_client_arguments(args, method):
    address, family, data, target = (args[k] for k in ["address", "family", "data", "target"])
    bufsize, timeout, retries = args["bufsize"], args["timeout"], args["retries"]
    with contextlib.ExitStack() as stack:
        servers = {}
        for host in ["127.0.0.1", "::1"] if HAS_IPV6 else ["127.0.0.1"]:
            # The reply is never empty, so a request always has one to wait for.
            server = rsock.UdpServer((host, 0), lambda datagram, peer: datagram + b"!")
            server.start()
            stack.callback(server.stop, WAIT)
            servers[host] = server
        client = attempt(lambda: rsock.UdpClient(address, family=family))
        if not ok(client):
            return
        with client:
            if address is not None:
                assert client.local[0] in ("127.0.0.1", "::1")
            repr(client)
            host = "::1" if HAS_IPV6 and _client_is_v6(client) else "127.0.0.1"
            where = servers[host].address if target == "server" else target
            if method == "sendto":
                attempt(lambda: client.sendto(data, where), DATA_ALLOWED)
            elif method == "request":
                wait, tries = timeout, retries
                if target != "server":
                    # Nothing answers there: any valid timeout would be waited out in full.
                    wait, tries = 0.01, 0
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    if float(wait) < 0.01 and type(tries) is int:
                        # A zero timeout resends at once: bound how many datagrams that makes.
                        tries = min(tries, 20)
                reply = attempt(lambda: client.request(data, where, wait, tries), DATA_ALLOWED)
                if ok(reply) and target == "server" and isinstance(data, bytes) and 0 < len(data) <= 65507:
                    assert reply.endswith(b"!")
            else:
                exercise_recvfrom(client, servers[host].address, bufsize, timeout)
        assert client.closed and client.fileno() == -1


def _client_is_v6(client):
    try:
        return ":" in client.local[0]
    except Exception:
        return False


def exercise_recvfrom(client, server_address, bufsize, timeout):
    """recvfrom() with the fuzzed size and timeout, once a datagram is sure to be waiting (or, if none could
    be made to wait, with a short timeout instead)."""
    waiting = ok(attempt(lambda: client.sendto(b"ping", server_address)))
    waiting = waiting and select.select([client.fileno()], [], [], WAIT)[0] != []
    wait = timeout if waiting else 0.01
    if bufsize == "default":
        attempt(lambda: client.recvfrom(timeout=wait))
    else:
        attempt(lambda: client.recvfrom(bufsize, timeout=wait), SIZE_ALLOWED)


# --- the bug pinned down ---------------------------------------------------------------------------------------


def _tcp_server_idle_timeout(value):
    rsock.TcpServer(idle_timeout=value).stop()


def _tcp_server_stop(value):
    server = rsock.TcpServer()
    try:
        server.stop(value)
    finally:
        server.stop()


def _udp_server_stop(value):
    server = rsock.UdpServer()
    try:
        server.stop(value)
    finally:
        server.stop()


def _udp_client_recvfrom(value):
    with rsock.UdpClient(("127.0.0.1", 0)) as client:
        client.sendto(b"x", client.local)
        client.recvfrom(timeout=value)


def _udp_client_request(value):
    with rsock.UdpServer(("127.0.0.1", 0), lambda data, peer: data) as server, rsock.UdpClient() as client:
        client.request(b"x", server.address, value, 0)


@pytest.mark.parametrize("value", [1e300, 2.0**64, 2**64])
@pytest.mark.parametrize(
    "call",
    [_tcp_server_idle_timeout, _tcp_server_stop, _udp_server_stop, _udp_client_recvfrom, _udp_client_request],
)
def test_huge_timeouts_raise_instead_of_panicking(call, value):
    """A finite timeout too large for a Duration (2**64 seconds and up) must be refused (ValueError or
    OverflowError, as socket.settimeout(1e300) refuses it) or taken as "no limit"; rsock used to panic."""
    TRIED["test"] += 1
    try:
        call(value)
    except (ValueError, OverflowError):
        pass
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            pytest.fail(f"rsock panicked on a timeout of {value!r}: {exc}")
        raise


def _bind_outcome(make, address):
    """What `make(address)` did: "ok", or the type and message of what it raised."""
    try:
        made = make(address)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        return type(exc), str(exc)
    if isinstance(made, stdlib_socket.socket | rsock.UdpClient):
        made.close()
    else:
        made.stop()
    return "ok"


IP_TUPLES = [
    ("127.0.0.1", 0, 0),
    ("127.0.0.1", 0, 0, 0),
    ("::1", 0, 0),
    ("::1", 0, 5, 0),
    ("::1", 0, 2**20, 0),
    ("::1", 0, -1, 0),
    ("::1", 0, 0, 2**32),
]


@pytest.mark.parametrize("address", IP_TUPLES, ids=str)
@pytest.mark.parametrize(
    "make",
    [lambda a: rsock.UdpClient(a), lambda a: rsock.UdpServer(a, None), lambda a: rsock.TcpServer(a, None)],
    ids=["UdpClient", "UdpServer", "TcpServer"],
)
def test_constructors_take_an_address_tuple_as_bind_takes_it(make, address):
    """The address a server or client binds to, in every tuple shape: the same outcome, exception type and message
    as the socket module's bind() on a socket of the family the host names (3-tuples and flowinfo for IPv6, pairs
    only for IPv4)."""
    if ":" in address[0] and not HAS_IPV6:
        pytest.skip("no IPv6 loopback here")
    TRIED["test"] += 1
    family = stdlib_socket.AF_INET6 if ":" in address[0] else stdlib_socket.AF_INET

    def stdlib_bind(a):
        sock = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
        try:
            sock.bind(a)
        except BaseException:
            sock.close()
            raise
        return sock

    assert _bind_outcome(make, address) == _bind_outcome(stdlib_bind, address)
