"""SOCK_STREAM sockets over AF_INET (127.0.0.1), AF_INET6 (::1) and AF_UNIX (a path and an abstract name).

Every test runs over the stdlib's `socket` module and over `rsock` (the `sockmod` fixture) and checks the
stdlib's behaviour; where the outcome depends on the machine, the test computes the stdlib's outcome too and
requires the same. Helper sockets are blocking but carry kernel-level timeouts (SO_RCVTIMEO/SO_SNDTIMEO), so
a wrong implementation fails instead of hanging.
"""

import array
import enum
import errno
import os
import select
import socket as stdlib_socket
import struct
import sys
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

import rsock
from tests.loopback import ipv6_loopback_available
from tests.socket_reads import recv_exactly, recv_until_eof

TIMEOUT = 10.0  # seconds: the bound on any wait in these tests
PAYLOAD = b"hello, rsock"


# --- helpers -----------------------------------------------------------------------------------------------


HAS_IPV6_LOOPBACK = ipv6_loopback_available()


def skip_without_ipv6_loopback(family_name):
    if family_name == "AF_INET6" and not HAS_IPV6_LOOPBACK:
        pytest.skip("this machine has no IPv6 loopback address (::1)")


@dataclass(frozen=True)
class Endpoint:
    """Where a listening socket binds: `family_name` is the constant's name, `address` the bind address."""

    family_name: str
    address: object

    def family(self, mod):
        return getattr(mod, self.family_name)


@pytest.fixture(params=["AF_INET", "AF_INET6", "AF_UNIX"])
def family_name(request):
    """One address family, by the name of its constant."""
    skip_without_ipv6_loopback(request.param)
    return request.param


@pytest.fixture(params=["AF_INET", "AF_INET6", "AF_UNIX-path", "AF_UNIX-abstract"])
def endpoint(request, tmp_path):
    """A loopback address to listen on: 127.0.0.1, ::1, a path in tmp_path, or a Linux abstract name."""
    kind = request.param
    skip_without_ipv6_loopback(kind)
    if kind == "AF_INET":
        return Endpoint("AF_INET", ("127.0.0.1", 0))
    if kind == "AF_INET6":
        return Endpoint("AF_INET6", ("::1", 0))
    if kind == "AF_UNIX-path":
        return Endpoint("AF_UNIX", str(tmp_path / "server.sock"))
    return Endpoint("AF_UNIX", abstract_name())


def abstract_name():
    """A fresh name in Linux's abstract AF_UNIX namespace (leading NUL byte, no file)."""
    return b"\0rsock-test-" + uuid.uuid4().hex.encode()


@pytest.fixture
def restore_default_timeout(sockmod):
    """Puts the module's default timeout back however the test ends."""
    saved = sockmod.getdefaulttimeout()
    yield
    sockmod.setdefaulttimeout(saved)


def guard(sock):
    """Bounds blocking calls on `sock` in the kernel (SO_RCVTIMEO/SO_SNDTIMEO): Python still sees a blocking
    socket (timeout None), but a call that would wait for ever fails with EAGAIN instead of hanging."""
    timeval = struct.pack("@ll", int(TIMEOUT), 0)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, timeval)
    return sock


@contextmanager
def listening(mod, endpoint, backlog=None):
    """A guarded stream socket of `mod` bound to `endpoint` and listening."""
    with mod.socket(endpoint.family(mod), mod.SOCK_STREAM) as server:
        guard(server)
        server.bind(endpoint.address)
        if backlog is None:
            server.listen()
        else:
            server.listen(backlog)
        yield server


@contextmanager
def connected(mod, endpoint):
    """(server, client, conn, addr): a listener, a client connected to it, and what accept() returned."""
    with listening(mod, endpoint) as server, mod.socket(endpoint.family(mod), mod.SOCK_STREAM) as client:
        guard(client)
        client.connect(server.getsockname())
        conn, addr = server.accept()
        with conn:
            guard(conn)
            yield server, client, conn, addr


@contextmanager
def ipv4_connection(mod):
    """(client, conn): a connected pair over 127.0.0.1, for tests that do not depend on the family."""
    with connected(mod, Endpoint("AF_INET", ("127.0.0.1", 0))) as (_, client, conn, _):
        yield client, conn


class Background:
    """Runs `fn(*args)` in a thread; result() joins it (bounded) and returns its value or re-raises."""

    def __init__(self, fn, *args):
        self._value = None
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn, args):
        try:
            self._value = fn(*args)
        except BaseException as exc:
            self._error = exc

    def result(self):
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "background thread still running"
        if self._error is not None:
            raise self._error
        return self._value


def raised(call, *args):
    """The exception `call(*args)` raises; fails the test if it returns."""
    try:
        result = call(*args)
    except Exception as exc:
        return exc
    pytest.fail(f"expected an exception, got {result!r}")


def assert_os_error(exc, exc_type, code):
    """`exc` is exactly `exc_type` with errno `code` and the stdlib's text for it."""
    assert type(exc) is exc_type
    assert exc.errno == code
    assert str(exc) == f"[Errno {code}] {os.strerror(code)}"


def assert_same_error(sockmod, scenario, exc_type):
    """`scenario(sockmod)` raises `exc_type` with the message `scenario(stdlib socket)` gives."""
    exc = raised(scenario, sockmod)
    assert type(exc) is exc_type
    assert str(exc) == str(raised(scenario, stdlib_socket))


def stdlib_repr_of(sock):
    """The stdlib's repr of a socket over the same descriptor, family, type and proto as `sock`."""
    view = stdlib_socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        return repr(view)
    finally:
        view.detach()


def as_stdlib_repr(sock):
    """repr(sock) with rsock's class name written as the stdlib's (`<rsock.socket` -> `<socket.socket`)."""
    text = repr(sock)
    if text.startswith("<rsock.socket"):
        return "<socket.socket" + text[len("<rsock.socket") :]
    return text


# --- the module's constants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["AF_INET", "AF_INET6", "AF_UNIX", "SOCK_STREAM", "SOCK_NONBLOCK", "SOCK_CLOEXEC", "AddressFamily", "SocketKind"],
)
def test_rsock_constants_are_the_stdlib_objects(name):
    assert getattr(rsock, name) is getattr(stdlib_socket, name)


# --- socket(): the constructor -----------------------------------------------------------------------------


def test_default_constructor_makes_blocking_ipv4_stream_socket(sockmod):
    with sockmod.socket() as sock:
        assert (sock.family, sock.type, sock.proto) == (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, 0)
        assert sock.timeout is None
        assert sock.gettimeout() is None
        assert sock.getblocking() is True


def test_recv_with_msg_trunc_discards_what_it_reports(sockmod):
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"A" * 1000)
        assert select.select([conn], [], [], TIMEOUT)[0]
        data = conn.recv(16, sockmod.MSG_TRUNC)
        assert len(data) == 16
        if sockmod is rsock:
            # TCP discards the bytes instead of copying them: the stdlib's result holds whatever its fresh
            # buffer held, rsock's is zero.
            assert data == bytes(16)
        assert recv_exactly(conn, 984) == b"A" * 984


@pytest.mark.parametrize("label", [(rsock.AF_UNIX, rsock.SOCK_STREAM), (rsock.AF_INET, rsock.SOCK_DGRAM)])
def test_recv_with_msg_trunc_on_a_tcp_descriptor_taken_as_another_kind_shows_no_memory(label):
    """fromfd() trusts the family and type it is given (as the stdlib's does); TCP still discards what MSG_TRUNC
    reports without writing it, and rsock zeroed that only for a socket it knew as TCP."""
    with ipv4_connection(rsock) as (client, conn):
        client.sendall(bytes(4000))
        assert select.select([conn], [], [], TIMEOUT)[0]
        with rsock.fromfd(conn.fileno(), *label) as taken:
            earlier = bytes([83]) * 4000  # an object of the buffer's size, freed for it to reuse
            del earlier
            data = taken.recv(4000, rsock.MSG_TRUNC)
        assert (len(data), data) == (4000, bytes(4000))


@pytest.mark.parametrize("method", ["recv", "recvfrom", "recvmsg"])
def test_msg_trunc_on_a_unix_stream_socket_reads_the_bytes_as_usual(sockmod, method):
    """AF_UNIX stream sockets ignore MSG_TRUNC and copy the data: the bytes come back as received (rsock used to
    zero them, as for TCP, and they were lost)."""
    left, right = sockmod.socketpair()
    with left, right:
        left.sendall(b"0123456789")
        right.settimeout(TIMEOUT)
        result = getattr(right, method)(4, sockmod.MSG_TRUNC)
        assert (result if method == "recv" else result[0]) == b"0123"
        assert right.recv(100) == b"456789"


@pytest.mark.parametrize("method", ["recv", "recvfrom", "recvmsg"])
@pytest.mark.parametrize(
    ("size", "error"),
    [(sys.maxsize, OverflowError), (sys.maxsize - 32, OverflowError), (sys.maxsize - 33, MemoryError)],
)
def test_msg_trunc_with_a_size_no_bytes_object_can_have_fails_as_the_bytes_would(sockmod, method, size, error):
    """A bytes object's header must fit in a Py_ssize_t beside its data: past that the size is an OverflowError,
    just below it the allocation fails. rsock's zeroed storage for MSG_TRUNC raised MemoryError for both."""
    left, right = sockmod.socketpair()
    with left, right:
        left.sendall(b"0123456789")
        with pytest.raises(error):
            getattr(right, method)(size, sockmod.MSG_TRUNC | sockmod.MSG_PEEK)
        assert right.recv(100) == b"0123456789"


def test_socket_is_an_instance_of_socket_type(sockmod):
    with sockmod.socket() as sock:
        assert isinstance(sock, sockmod.SocketType)


def test_family_and_type_are_the_stdlib_enum_members(sockmod, family_name):
    with sockmod.socket(getattr(sockmod, family_name), sockmod.SOCK_STREAM) as sock:
        assert sock.family is getattr(stdlib_socket, family_name)
        assert sock.type is stdlib_socket.SOCK_STREAM
        assert isinstance(sock.family, enum.IntEnum)


def test_constructor_takes_keyword_arguments(sockmod):
    with sockmod.socket(family=sockmod.AF_UNIX, type=sockmod.SOCK_STREAM, proto=0) as sock:
        assert (sock.family, sock.type, sock.proto) == (stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM, 0)


def test_explicit_protocol_is_reported(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM, sockmod.IPPROTO_TCP) as sock:
        assert sock.proto == stdlib_socket.IPPROTO_TCP


def test_sock_nonblock_is_stripped_from_type_and_gives_timeout_zero(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK) as sock:
        assert sock.type is stdlib_socket.SOCK_STREAM
        assert sock.timeout == 0.0
        assert sock.getblocking() is False


def test_sock_cloexec_is_stripped_from_type(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM | sockmod.SOCK_CLOEXEC) as sock:
        assert sock.type is stdlib_socket.SOCK_STREAM
        assert sock.timeout is None
        assert sock.get_inheritable() is False


def test_new_socket_is_not_inheritable(sockmod):
    with sockmod.socket() as sock:
        assert sock.get_inheritable() is False


def test_fileno_adopts_descriptor_and_detects_family_type_and_proto(sockmod, family_name):
    family = getattr(sockmod, family_name)
    fd = sockmod.socket(family, sockmod.SOCK_STREAM).detach()
    with sockmod.socket(fileno=fd) as sock:
        assert sock.fileno() == fd
        assert sock.family is getattr(stdlib_socket, family_name)
        assert sock.type is stdlib_socket.SOCK_STREAM
        assert sock.proto == (0 if family_name == "AF_UNIX" else stdlib_socket.IPPROTO_TCP)
        assert sock.timeout is None


def test_fileno_adopts_a_connected_descriptor(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(PAYLOAD)
        with sockmod.socket(fileno=conn.detach()) as adopted:
            assert recv_exactly(adopted, len(PAYLOAD)) == PAYLOAD
            assert adopted.getpeername() == client.getsockname()


def test_fileno_with_explicit_arguments_overrides_detection(sockmod):
    fd = sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM).detach()
    with sockmod.socket(sockmod.AF_INET6, sockmod.SOCK_DGRAM, 17, fd) as sock:
        assert (sock.family, sock.type, sock.proto) == (stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM, 17)


@pytest.mark.parametrize("fileno", [-1, -5])
def test_negative_fileno_raises_valueerror(sockmod, fileno):
    exc = raised(sockmod.socket, sockmod.AF_INET, sockmod.SOCK_STREAM, 0, fileno)
    assert type(exc) is ValueError
    assert str(exc) == "negative file descriptor"


def test_fileno_of_a_pipe_raises_enotsock(sockmod):
    read_end, write_end = os.pipe()
    try:
        assert_os_error(raised(lambda: sockmod.socket(fileno=read_end)), OSError, errno.ENOTSOCK)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_fileno_of_a_closed_descriptor_raises_ebadf(sockmod):
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    assert_os_error(raised(lambda: sockmod.socket(fileno=read_end)), OSError, errno.EBADF)


@pytest.mark.parametrize("argument", ["family", "type", "proto", "fileno"])
@pytest.mark.parametrize("value", ["2", 2.0, b"2"], ids=["str", "float", "bytes"])
def test_constructor_rejects_non_integer_arguments(sockmod, argument, value):
    assert_same_error(sockmod, lambda mod: mod.socket(**{argument: value}), TypeError)


def test_unknown_family_raises_eafnosupport(sockmod):
    assert_os_error(raised(sockmod.socket, 12345, sockmod.SOCK_STREAM), OSError, errno.EAFNOSUPPORT)


def test_unknown_type_raises_einval(sockmod):
    assert_os_error(raised(sockmod.socket, sockmod.AF_INET, 12345), OSError, errno.EINVAL)


def test_unknown_protocol_for_stream_raises_same_error_as_stdlib(sockmod):
    def scenario(mod):
        return mod.socket(mod.AF_INET, mod.SOCK_STREAM, 12345)

    exc = raised(scenario, sockmod)
    reference = raised(scenario, stdlib_socket)
    assert (type(exc), exc.errno, str(exc)) == (type(reference), reference.errno, str(reference))


def test_family_out_of_c_int_range_raises_overflowerror(sockmod):
    assert_same_error(sockmod, lambda mod: mod.socket(2**40), OverflowError)


def test_constructor_with_too_many_arguments_raises_typeerror(sockmod):
    assert_same_error(sockmod, lambda mod: mod.socket(2, 1, 0, None, 5), TypeError)


def _native_class_names_as_stdlib(text):
    """rsock's native class is `rsock._rsock.socket` where the stdlib's is `_socket.socket`."""
    return text.replace("rsock._rsock.socket", "_socket.socket")


@pytest.mark.parametrize("attribute", ["timeout", "family", "type", "proto"])
def test_socket_attributes_are_read_only(sockmod, attribute):
    def scenario(mod):
        with mod.socket() as sock:
            setattr(sock, attribute, 5)

    exc = raised(scenario, sockmod)
    assert type(exc) is AttributeError
    assert _native_class_names_as_stdlib(str(exc)) == str(raised(scenario, stdlib_socket))


# --- bind() and getsockname() ------------------------------------------------------------------------------


def test_bind_ipv4_loopback_reports_address_and_assigned_port(sockmod):
    with sockmod.socket(sockmod.AF_INET) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert 0 < port < 65536


def test_bind_ipv6_loopback_reports_four_tuple(sockmod):
    skip_without_ipv6_loopback("AF_INET6")
    with sockmod.socket(sockmod.AF_INET6) as sock:
        sock.bind(("::1", 0))
        host, port, flowinfo, scope_id = sock.getsockname()
        assert (host, flowinfo, scope_id) == ("::1", 0, 0)
        assert 0 < port < 65536


def test_bind_unix_path_creates_socket_file_and_reports_path(sockmod, tmp_path):
    path = str(tmp_path / "bound.sock")
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        sock.bind(path)
        assert sock.getsockname() == path
        assert os.path.exists(path)


def test_bind_unix_bytes_path_reports_str(sockmod, tmp_path):
    path = str(tmp_path / "bound.sock")
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        sock.bind(os.fsencode(path))
        assert sock.getsockname() == path


def test_bind_abstract_name_reports_bytes_and_creates_no_file(sockmod, tmp_path):
    name = abstract_name()
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        sock.bind(name)
        assert sock.getsockname() == name
    assert os.listdir(tmp_path) == []


def test_bind_abstract_name_given_as_str_reports_bytes(sockmod):
    name = abstract_name()
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        sock.bind(name.decode())
        assert sock.getsockname() == name


def test_bind_empty_unix_address_autobinds_an_abstract_name(sockmod):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        sock.bind("")
        name = sock.getsockname()
        assert isinstance(name, bytes)
        assert name.startswith(b"\0")
        assert len(name) == 6  # a NUL and five hex digits


@pytest.mark.parametrize("host", [b"127.0.0.1", bytearray(b"127.0.0.1")], ids=["bytes", "bytearray"])
def test_bind_accepts_host_as_bytes(sockmod, host):
    with sockmod.socket(sockmod.AF_INET) as sock:
        sock.bind((host, 0))
        assert sock.getsockname()[0] == "127.0.0.1"


def test_bind_empty_host_means_any_address(sockmod):
    with sockmod.socket(sockmod.AF_INET) as sock:
        sock.bind(("", 0))
        assert sock.getsockname()[0] == "0.0.0.0"


@pytest.mark.parametrize(
    ("family_key", "expected"),
    [("AF_INET", ("0.0.0.0", 0)), ("AF_INET6", ("::", 0, 0, 0)), ("AF_UNIX", "")],
)
def test_getsockname_of_unbound_socket(sockmod, family_key, expected):
    skip_without_ipv6_loopback(family_key)
    with sockmod.socket(getattr(sockmod, family_key)) as sock:
        assert sock.getsockname() == expected


# --- listen() and accept() ---------------------------------------------------------------------------------


def test_listen_without_backlog_accepts_a_connection(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, _, _, _):
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 1


@pytest.mark.parametrize("backlog", [0, 5, -1])
def test_listen_with_backlog_accepts_a_connection(sockmod, backlog):
    endpoint = Endpoint("AF_INET", ("127.0.0.1", 0))
    with listening(sockmod, endpoint, backlog) as server, sockmod.socket() as client:
        client.connect(server.getsockname())
        conn, addr = server.accept()
        with conn:
            assert addr == client.getsockname()


def test_accept_returns_a_socket_of_the_module_class(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, _, conn, _):
        assert type(conn) is sockmod.socket
        assert (conn.family, conn.type, conn.proto) == (server.family, server.type, server.proto)


def test_accept_returns_the_peer_address(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, client, conn, addr):
        assert addr == client.getsockname()
        assert conn.getpeername() == client.getsockname()
        assert conn.getsockname() == server.getsockname()


def test_accept_reports_the_bound_unix_client_path(sockmod, tmp_path):
    client_path = str(tmp_path / "client.sock")
    with listening(sockmod, Endpoint("AF_UNIX", str(tmp_path / "server.sock"))) as server:
        with sockmod.socket(sockmod.AF_UNIX) as client:
            client.bind(client_path)
            client.connect(server.getsockname())
            conn, addr = server.accept()
            with conn:
                assert addr == client_path
                assert conn.getpeername() == client_path


def test_accepted_socket_is_not_inheritable(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, _, conn, _):
        assert conn.get_inheritable() is False


def test_accepted_socket_is_blocking_when_the_listener_has_a_timeout(sockmod):
    with sockmod.socket() as server, sockmod.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(TIMEOUT)
        client.connect(server.getsockname())
        conn, _ = server.accept()
        with conn:
            assert conn.timeout is None
            assert conn.getblocking() is True


def test_accepted_socket_from_a_nonblocking_listener_is_blocking(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with sockmod.socket() as client:
            client.connect(server.getsockname())
            assert select.select([server], [], [], TIMEOUT)[0] == [server]
            conn, _ = server.accept()
            with conn:
                assert conn.timeout is None


# --- connect() and connect_ex() ----------------------------------------------------------------------------


def test_connect_sets_the_peer_name(sockmod, endpoint):
    with listening(sockmod, endpoint) as server, sockmod.socket(endpoint.family(sockmod)) as client:
        client.connect(server.getsockname())
        assert client.getpeername() == server.getsockname()
        server.accept()[0].close()


def test_connect_ex_returns_zero_on_success(sockmod, endpoint):
    with listening(sockmod, endpoint) as server, sockmod.socket(endpoint.family(sockmod)) as client:
        assert client.connect_ex(server.getsockname()) == 0
        assert client.getpeername() == server.getsockname()
        server.accept()[0].close()


@pytest.mark.parametrize("family_key", ["AF_INET", "AF_INET6"])
def test_connect_ex_returns_econnrefused_for_a_closed_port(sockmod, family_key):
    skip_without_ipv6_loopback(family_key)
    family = getattr(sockmod, family_key)
    host = "127.0.0.1" if family_key == "AF_INET" else "::1"
    # A bound socket that does not listen holds the port: nothing else can take it while we connect.
    with sockmod.socket(family) as holder, sockmod.socket(family) as client:
        holder.bind((host, 0))
        assert client.connect_ex(holder.getsockname()) == errno.ECONNREFUSED


def test_connect_ex_returns_econnrefused_for_a_unix_socket_not_listening(sockmod, tmp_path):
    path = str(tmp_path / "idle.sock")
    with sockmod.socket(sockmod.AF_UNIX) as holder, sockmod.socket(sockmod.AF_UNIX) as client:
        holder.bind(path)
        assert client.connect_ex(path) == errno.ECONNREFUSED


def test_connect_ex_returns_enoent_for_a_missing_unix_path(sockmod, tmp_path):
    with sockmod.socket(sockmod.AF_UNIX) as client:
        assert client.connect_ex(str(tmp_path / "missing.sock")) == errno.ENOENT


def test_connect_ex_on_a_connected_socket_returns_eisconn(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, client, _, _):
        assert client.connect_ex(server.getsockname()) == errno.EISCONN


def test_nonblocking_connect_ex_returns_einprogress(sockmod):
    with sockmod.socket() as server, sockmod.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.setblocking(False)
        assert client.connect_ex(server.getsockname()) == errno.EINPROGRESS


# --- send(), sendall(), recv() -----------------------------------------------------------------------------


def test_send_returns_the_count_and_the_peer_receives_the_bytes(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        assert client.send(PAYLOAD) == len(PAYLOAD)
        assert recv_exactly(conn, len(PAYLOAD)) == PAYLOAD


def test_data_flows_both_ways(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        conn.sendall(b"pong")
        assert recv_exactly(client, 4) == b"pong"


@pytest.mark.parametrize(
    "data",
    [bytearray(b"abcd"), memoryview(b"xxabcdxx")[2:6], array.array("B", b"abcd")],
    ids=["bytearray", "memoryview-slice", "array"],
)
def test_send_accepts_bytes_like_objects(sockmod, data):
    with ipv4_connection(sockmod) as (client, conn):
        assert client.send(data) == 4
        assert recv_exactly(conn, 4) == b"abcd"


def test_send_of_multibyte_items_counts_bytes(sockmod):
    data = array.array("i", [1, 2])
    with ipv4_connection(sockmod) as (client, conn):
        assert client.send(data) == data.itemsize * 2
        assert recv_exactly(conn, data.itemsize * 2) == data.tobytes()


def test_send_of_empty_bytes_returns_zero(sockmod):
    with ipv4_connection(sockmod) as (client, _):
        assert client.send(b"") == 0


def test_sendall_returns_none(sockmod):
    with ipv4_connection(sockmod) as (client, conn):
        assert client.sendall(PAYLOAD) is None
        assert recv_exactly(conn, len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("timeout", [1e-9, 1e-8])
def test_sendall_with_a_timeout_shorter_than_the_call_still_sends_once(sockmod, timeout):
    """The first send is always made, the deadline checked only before the next: what the socket takes at once goes
    out, and a send's own error is raised rather than a TimeoutError."""
    with ipv4_connection(sockmod) as (client, conn):
        client.settimeout(timeout)
        assert client.sendall(b"y") is None
        assert recv_exactly(conn, 1) == b"y"
    with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_STREAM) as unconnected:
        unconnected.settimeout(timeout)
        with pytest.raises(OSError) as failed:
            unconnected.sendall(b"y")
        assert (type(failed.value), failed.value.errno) == (OSError, errno.ENOTCONN)


@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_sendall_delivers_8_mib_to_a_reader_thread(sockmod, endpoint, mode):
    payload = os.urandom(1 << 16) * 128  # 8 MiB, far more than the socket buffers hold
    with connected(sockmod, endpoint) as (_, client, conn, _):
        if mode == "timeout":
            client.settimeout(TIMEOUT)
        reader = Background(recv_until_eof, conn)
        client.sendall(payload)
        client.shutdown(sockmod.SHUT_WR)
        assert reader.result() == payload


def test_recv_returns_at_most_bufsize(sockmod):
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(PAYLOAD)
        first = conn.recv(5)
        assert first == PAYLOAD[:5]
        assert recv_exactly(conn, len(PAYLOAD) - 5) == PAYLOAD[5:]


def test_recv_zero_bytes_with_a_timeout_returns_empty_without_waiting(sockmod):
    with ipv4_connection(sockmod) as (_, conn):
        conn.settimeout(1.0)
        assert conn.recv(0) == b""


def test_recv_zero_bytes_on_a_nonblocking_socket_returns_empty(sockmod):
    with ipv4_connection(sockmod) as (_, conn):
        conn.setblocking(False)
        assert conn.recv(0) == b""


def test_recv_returns_empty_bytes_after_the_peer_closes(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(PAYLOAD)
        client.close()
        assert recv_until_eof(conn) == PAYLOAD
        assert conn.recv(10) == b""


# --- recv_into() -------------------------------------------------------------------------------------------


def test_recv_into_bytearray_fills_the_front_and_returns_the_count(sockmod, endpoint):
    buffer = bytearray(b"-" * 20)
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(PAYLOAD)
        assert conn.recv_into(buffer) == len(PAYLOAD)
    assert buffer == PAYLOAD + b"-" * (20 - len(PAYLOAD))


def test_recv_into_memoryview_slice_writes_inside_the_slice(sockmod):
    backing = bytearray(b"-" * 10)
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abc")
        assert conn.recv_into(memoryview(backing)[2:5]) == 3
    assert backing == b"--abc-----"


def test_recv_into_array_uses_its_size_in_bytes(sockmod):
    target = array.array("i", [0] * 2)
    data = array.array("i", [7, -1]).tobytes()
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(data)
        assert conn.recv_into(target) == len(data)
    assert target.tolist() == [7, -1]


def test_recv_into_nbytes_limits_the_read(sockmod):
    buffer = bytearray(10)
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abcdef")
        assert conn.recv_into(buffer, 2) == 2
        assert recv_exactly(conn, 4) == b"cdef"
    assert buffer == b"ab" + bytes(8)


def test_recv_into_nbytes_zero_means_the_whole_buffer(sockmod):
    buffer = bytearray(3)
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abcdef")
        assert conn.recv_into(buffer, 0) == 3
    assert buffer == b"abc"


def test_recv_into_takes_keyword_arguments(sockmod):
    buffer = bytearray(5)
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abc")
        assert conn.recv_into(buffer=buffer, nbytes=2, flags=0) == 2
    assert buffer[:2] == b"ab"


def test_recv_into_nbytes_larger_than_the_buffer_raises_valueerror(sockmod):
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abcdef")
        exc = raised(conn.recv_into, bytearray(3), 4)
    assert type(exc) is ValueError
    assert str(exc) == "buffer too small for requested bytes"


@pytest.mark.parametrize(
    "make_buffer",
    [lambda: b"abc", lambda: memoryview(b"abc"), lambda: memoryview(bytearray(3)).toreadonly(), lambda: "abc"],
    ids=["bytes", "memoryview-of-bytes", "readonly-memoryview", "str"],
)
def test_recv_into_a_read_only_buffer_raises_typeerror(sockmod, make_buffer):
    def scenario(mod):
        with ipv4_connection(mod) as (client, conn):
            client.sendall(b"abc")
            conn.recv_into(make_buffer())

    assert_same_error(sockmod, scenario, TypeError)


# --- MSG_PEEK and MSG_DONTWAIT -----------------------------------------------------------------------------


def test_recv_with_msg_peek_leaves_the_data_queued(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(b"abc")
        assert conn.recv(1, sockmod.MSG_PEEK) == b"a"
        assert recv_exactly(conn, 3) == b"abc"


def test_recv_into_with_msg_peek_leaves_the_data_queued(sockmod):
    buffer = bytearray(3)
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abc")
        assert conn.recv_into(buffer, 3, sockmod.MSG_PEEK) == 3
        assert recv_exactly(conn, 3) == b"abc"
    assert buffer == b"abc"


def test_recv_with_msg_dontwait_returns_queued_data(sockmod):
    with ipv4_connection(sockmod) as (client, conn):
        client.sendall(b"abc")
        assert conn.recv(1, sockmod.MSG_PEEK) == b"a"  # the bytes have arrived
        assert conn.recv(10, sockmod.MSG_DONTWAIT) == b"abc"
        assert conn.getblocking() is True


# --- shutdown() --------------------------------------------------------------------------------------------


def test_shut_wr_gives_the_peer_eof_but_keeps_the_other_direction(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.sendall(b"last")
        client.shutdown(sockmod.SHUT_WR)
        assert recv_until_eof(conn) == b"last"
        conn.sendall(b"reply")
        assert recv_exactly(client, 5) == b"reply"


def test_shut_rd_makes_own_recv_return_eof(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, _, _):
        client.shutdown(sockmod.SHUT_RD)
        assert client.recv(10) == b""


def test_shut_rdwr_ends_both_directions(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        client.shutdown(sockmod.SHUT_RDWR)
        assert conn.recv(10) == b""
        assert client.recv(10) == b""


# --- getpeername() -----------------------------------------------------------------------------------------


def test_getpeername_of_an_unconnected_socket_raises_enotconn(sockmod, family_name):
    with sockmod.socket(getattr(sockmod, family_name)) as sock:
        assert_os_error(raised(sock.getpeername), OSError, errno.ENOTCONN)


# --- setsockopt() and getsockopt() -------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["SO_REUSEADDR", "SO_KEEPALIVE"])
def test_setsockopt_int_round_trips_through_getsockopt(sockmod, option):
    with sockmod.socket() as sock:
        assert sock.getsockopt(sockmod.SOL_SOCKET, getattr(sockmod, option)) == 0
        sock.setsockopt(sockmod.SOL_SOCKET, getattr(sockmod, option), 1)
        assert sock.getsockopt(sockmod.SOL_SOCKET, getattr(sockmod, option)) == 1


def test_setsockopt_accepts_a_bool(sockmod):
    with sockmod.socket() as sock:
        sock.setsockopt(sockmod.IPPROTO_TCP, sockmod.TCP_NODELAY, True)
        assert sock.getsockopt(sockmod.IPPROTO_TCP, sockmod.TCP_NODELAY) == 1


def test_getsockopt_reports_type_and_listening_state(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, client, _, _):
        assert client.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_TYPE) == sockmod.SOCK_STREAM
        assert client.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 0
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 1


@pytest.mark.parametrize("value", [struct.pack("ii", 1, 5), bytearray(struct.pack("ii", 1, 5))], ids=["bytes", "ba"])
def test_so_linger_buffer_form_round_trips(sockmod, value):
    with sockmod.socket() as sock:
        sock.setsockopt(sockmod.SOL_SOCKET, sockmod.SO_LINGER, value)
        raw = sock.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_LINGER, struct.calcsize("ii"))
        assert struct.unpack("ii", raw) == (1, 5)


@pytest.mark.parametrize("buflen", [1, 4, 1024])
def test_getsockopt_with_buflen_returns_what_the_kernel_wrote(sockmod, buflen):
    with sockmod.socket() as sock:
        sock.setsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, 1)
        raw = sock.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, buflen)
        assert type(raw) is bytes
        assert raw == struct.pack("i", 1)[: min(buflen, 4)]


@pytest.mark.parametrize("buflen", [-1, 1025])
def test_getsockopt_buflen_out_of_range_raises_oserror(sockmod, buflen):
    with sockmod.socket() as sock:
        exc = raised(sock.getsockopt, sockmod.SOL_SOCKET, sockmod.SO_LINGER, buflen)
    assert type(exc) is OSError
    assert exc.errno is None
    assert str(exc) == "getsockopt buflen out of range"


def test_setsockopt_none_with_optlen_passes_a_null_pointer(sockmod):
    with sockmod.socket() as sock:
        exc = raised(sock.setsockopt, sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, None, 4)
    assert_os_error(exc, OSError, errno.EFAULT)


def test_setsockopt_none_with_zero_optlen_matches_stdlib(sockmod):
    # SO_BINDTODEVICE takes (NULL, 0) to unbind; whether that is allowed depends on the machine.
    def outcome(mod):
        with mod.socket() as sock:
            try:
                sock.setsockopt(mod.SOL_SOCKET, mod.SO_BINDTODEVICE, None, 0)
            except OSError as exc:
                return type(exc), exc.errno
            return sock.getsockopt(mod.SOL_SOCKET, mod.SO_BINDTODEVICE, 16)

    assert outcome(sockmod) == outcome(stdlib_socket)


@pytest.mark.parametrize(("optlen", "error"), [(2**200, errno.EINVAL), (2**128 + 4, errno.EFAULT)], ids=["0", "4"])
def test_setsockopt_none_wraps_an_optlen_beyond_128_bits_to_32_bits(sockmod, optlen, error):
    """optlen is parsed with "I" (wrapped, not range-checked), however large: 2**200 is a length of 0, which
    SO_REUSEADDR refuses, and 2**128 + 4 a length of 4 at a NULL pointer (rsock raised TypeError beyond i128)."""
    with sockmod.socket() as sock:
        exc = raised(sock.setsockopt, sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, None, optlen)
    assert_os_error(exc, OSError, error)


def test_setsockopt_none_with_negative_optlen_raises_einval(sockmod):
    def scenario(mod):
        with mod.socket() as sock:
            sock.setsockopt(mod.SOL_SOCKET, mod.SO_REUSEADDR, None, -1)

    assert_os_error(raised(scenario, sockmod), OSError, errno.EINVAL)


def test_setsockopt_int_with_optlen_raises_typeerror(sockmod):
    def scenario(mod):
        with mod.socket() as sock:
            sock.setsockopt(mod.SOL_SOCKET, mod.SO_REUSEADDR, 1, 4)

    assert_same_error(sockmod, scenario, TypeError)


def test_setsockopt_int_beyond_c_int_raises_typeerror(sockmod):
    def scenario(mod):
        with mod.socket() as sock:
            sock.setsockopt(mod.SOL_SOCKET, mod.SO_REUSEADDR, 2**40)

    assert_same_error(sockmod, scenario, TypeError)


@pytest.mark.parametrize("value", ["1", 1.0, None], ids=["str", "float", "None"])
def test_setsockopt_rejects_values_that_are_neither_int_nor_buffer(sockmod, value):
    def scenario(mod):
        with mod.socket() as sock:
            sock.setsockopt(mod.SOL_SOCKET, mod.SO_REUSEADDR, value)

    assert_same_error(sockmod, scenario, TypeError)


def test_unknown_socket_option_raises_enoprotoopt(sockmod):
    with sockmod.socket() as sock:
        assert_os_error(raised(sock.setsockopt, sockmod.SOL_SOCKET, 12345, 1), OSError, errno.ENOPROTOOPT)
        assert_os_error(raised(sock.getsockopt, sockmod.SOL_SOCKET, 12345), OSError, errno.ENOPROTOOPT)


# --- close(), detach(), fileno() ---------------------------------------------------------------------------


def test_close_is_idempotent_and_leaves_fileno_minus_one(sockmod):
    sock = sockmod.socket()
    sock.close()
    sock.close()
    assert sock.fileno() == -1


def test_closed_socket_keeps_family_type_proto_and_timeout(sockmod):
    sock = sockmod.socket(sockmod.AF_UNIX)
    sock.settimeout(2.5)
    sock.close()
    assert (sock.family, sock.type, sock.proto) == (stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM, 0)
    assert sock.timeout == 2.5


def test_fileno_is_a_distinct_nonnegative_int(sockmod):
    with sockmod.socket() as first, sockmod.socket() as second:
        assert type(first.fileno()) is int
        assert first.fileno() >= 0
        assert first.fileno() != second.fileno()


def test_detach_returns_the_open_descriptor_and_marks_the_socket_closed(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        original = conn.fileno()
        fd = conn.detach()
        assert fd == original
        assert conn.fileno() == -1
        assert "[closed]" in repr(conn)
        with sockmod.socket(fileno=fd) as adopted:
            client.sendall(b"still open")
            assert recv_exactly(adopted, 10) == b"still open"


def test_detach_a_second_time_returns_minus_one(sockmod):
    sock = sockmod.socket()
    os.close(sock.detach())
    assert sock.detach() == -1


# --- dup() and fromfd() ------------------------------------------------------------------------------------


def test_dup_shares_the_connection_through_a_new_descriptor(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _), client.dup() as copy:
        assert copy.fileno() != client.fileno()
        copy.sendall(b"via dup")
        assert recv_exactly(conn, 7) == b"via dup"
        assert copy.getpeername() == client.getpeername()


def test_dup_copies_family_type_proto_timeout_and_class(sockmod, family_name):
    with sockmod.socket(getattr(sockmod, family_name)) as sock:
        sock.settimeout(2.5)
        with sock.dup() as copy:
            assert type(copy) is sockmod.socket
            assert (copy.family, copy.type, copy.proto) == (sock.family, sock.type, sock.proto)
            assert copy.timeout == 2.5


def test_dup_is_not_inheritable(sockmod):
    with sockmod.socket() as sock:
        sock.set_inheritable(True)
        with sock.dup() as copy:
            assert copy.get_inheritable() is False


def test_fromfd_wraps_a_duplicate_of_the_descriptor(sockmod, endpoint):
    with connected(sockmod, endpoint) as (_, client, conn, _):
        with sockmod.fromfd(client.fileno(), client.family, client.type) as copy:
            assert type(copy) is sockmod.socket
            assert copy.fileno() not in (-1, client.fileno())
            assert copy.getsockname() == client.getsockname()
            assert copy.get_inheritable() is False
            copy.sendall(b"copy")
        client.sendall(b"orig")  # closing the copy left the original open
        assert recv_exactly(conn, 8) == b"copyorig"


def test_fromfd_does_not_copy_the_timeout(sockmod):
    with sockmod.socket() as sock:
        sock.settimeout(2.5)
        with sockmod.fromfd(sock.fileno(), sock.family, sock.type) as copy:
            assert copy.timeout is None


# --- socketpair() ------------------------------------------------------------------------------------------


def test_socketpair_defaults_to_a_connected_unix_stream_pair(sockmod):
    first, second = sockmod.socketpair()
    with first, second:
        for sock in (first, second):
            assert type(sock) is sockmod.socket
            assert (sock.family, sock.type, sock.proto) == (stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM, 0)
            assert sock.get_inheritable() is False
        first.sendall(b"one")
        second.sendall(b"two")
        assert recv_exactly(second, 3) == b"one"
        assert recv_exactly(first, 3) == b"two"


def test_socketpair_with_sock_nonblock_makes_nonblocking_sockets(sockmod):
    first, second = sockmod.socketpair(sockmod.AF_UNIX, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK)
    with first, second:
        assert (first.type, first.timeout, second.timeout) == (stdlib_socket.SOCK_STREAM, 0.0, 0.0)


def test_socketpair_af_inet_raises_eopnotsupp(sockmod):
    assert_os_error(raised(sockmod.socketpair, sockmod.AF_INET), OSError, errno.EOPNOTSUPP)


# --- repr() ------------------------------------------------------------------------------------------------


def test_repr_of_a_module_socket_names_its_class(sockmod):
    with sockmod.socket() as sock:
        assert repr(sock).startswith(f"<{sockmod.__name__}.socket fd={sock.fileno()}, ")


def test_repr_of_unconnected_sockets_matches_stdlib(sockmod, family_name):
    with sockmod.socket(getattr(sockmod, family_name)) as sock:
        assert as_stdlib_repr(sock) == stdlib_repr_of(sock)


def test_repr_of_connected_sockets_matches_stdlib(sockmod, endpoint):
    with connected(sockmod, endpoint) as (server, client, conn, _):
        assert f"raddr={client.getpeername()}" in repr(client)
        for sock in (server, client, conn):
            assert as_stdlib_repr(sock) == stdlib_repr_of(sock)


def test_repr_of_a_closed_socket_matches_stdlib(sockmod, family_name):
    sock = sockmod.socket(getattr(sockmod, family_name))
    sock.close()
    reference = stdlib_socket.socket(getattr(stdlib_socket, family_name))
    reference.close()
    assert as_stdlib_repr(sock) == repr(reference)


def test_repr_of_a_detached_socket_matches_stdlib(sockmod):
    sock = sockmod.socket()
    os.close(sock.detach())
    reference = stdlib_socket.socket()
    os.close(reference.detach())
    assert as_stdlib_repr(sock) == repr(reference)


# --- get_inheritable() and set_inheritable() ---------------------------------------------------------------


def test_set_inheritable_round_trips(sockmod):
    with sockmod.socket() as sock:
        sock.set_inheritable(True)
        assert sock.get_inheritable() is True
        sock.set_inheritable(False)
        assert sock.get_inheritable() is False


@pytest.mark.parametrize(("flag", "expected"), [(2, True), (0, False)])
def test_set_inheritable_accepts_an_int(sockmod, flag, expected):
    with sockmod.socket() as sock:
        sock.set_inheritable(not expected)
        sock.set_inheritable(flag)
        assert sock.get_inheritable() is expected


@pytest.mark.parametrize("flag", ["yes", None], ids=["str", "None"])
def test_set_inheritable_rejects_non_integers(sockmod, flag):
    def scenario(mod):
        with mod.socket() as sock:
            sock.set_inheritable(flag)

    assert_same_error(sockmod, scenario, TypeError)


# --- the context manager -----------------------------------------------------------------------------------


def test_with_statement_yields_the_socket_and_closes_it(sockmod):
    with sockmod.socket() as sock:
        entered = sock
        assert sock.fileno() >= 0
    assert entered is sock
    assert sock.fileno() == -1


def test_with_statement_closes_the_socket_when_the_body_raises(sockmod):
    with pytest.raises(KeyError), sockmod.socket() as sock:
        raise KeyError("boom")
    assert sock.fileno() == -1


def test_leaving_with_after_an_explicit_close_is_harmless(sockmod):
    with sockmod.socket() as sock:
        sock.close()
    assert sock.fileno() == -1


# --- timeouts and blocking mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "timeout", "blocking"),
    [(1, 1.0, True), (0.5, 0.5, True), (1e-9, 1e-9, True), (True, 1.0, True), (0, 0.0, False), (None, None, True)],
)
def test_settimeout_sets_timeout_attribute_and_blocking_mode(sockmod, value, timeout, blocking):
    with sockmod.socket() as sock:
        sock.settimeout(value)
        assert sock.gettimeout() == timeout
        assert sock.timeout == timeout
        assert type(sock.timeout) is type(timeout)
        assert sock.getblocking() is blocking


@pytest.mark.parametrize(("flag", "timeout"), [(False, 0.0), (True, None), (0, 0.0), (2, None)])
def test_setblocking_sets_the_timeout(sockmod, flag, timeout):
    with sockmod.socket() as sock:
        sock.settimeout(3)
        sock.setblocking(flag)
        assert sock.timeout == timeout
        assert sock.getblocking() is (timeout is None)


def test_settimeout_after_setblocking_false_restores_blocking(sockmod):
    with sockmod.socket() as sock:
        sock.setblocking(False)
        sock.settimeout(None)
        assert (sock.timeout, sock.getblocking()) == (None, True)


# --- getdefaulttimeout() and setdefaulttimeout() -----------------------------------------------------------


def test_default_timeout_is_none(sockmod):
    assert sockmod.getdefaulttimeout() is None


@pytest.mark.parametrize(("value", "expected"), [(2.5, 2.5), (3, 3.0), (0, 0.0), (None, None)])
def test_setdefaulttimeout_is_reported_by_getdefaulttimeout(sockmod, restore_default_timeout, value, expected):
    sockmod.setdefaulttimeout(value)
    assert sockmod.getdefaulttimeout() == expected
    assert type(sockmod.getdefaulttimeout()) is type(expected)


def test_default_timeout_applies_to_new_sockets(sockmod, restore_default_timeout):
    sockmod.setdefaulttimeout(2.5)
    with sockmod.socket() as sock:
        assert sock.timeout == 2.5
        assert sock.getblocking() is True


def test_default_timeout_zero_makes_new_sockets_nonblocking(sockmod, restore_default_timeout):
    sockmod.setdefaulttimeout(0)
    with sockmod.socket() as sock:
        assert (sock.timeout, sock.getblocking()) == (0.0, False)


def test_default_timeout_applies_to_client_and_accepted_sockets(sockmod, endpoint, restore_default_timeout):
    sockmod.setdefaulttimeout(2.5)
    with connected(sockmod, endpoint) as (server, client, conn, _):
        assert (server.timeout, client.timeout, conn.timeout) == (2.5, 2.5, 2.5)


def test_default_timeout_applies_to_socketpair(sockmod, restore_default_timeout):
    sockmod.setdefaulttimeout(2.5)
    first, second = sockmod.socketpair()
    with first, second:
        assert (first.timeout, second.timeout) == (2.5, 2.5)


def test_default_timeout_applies_to_adopted_descriptors(sockmod, restore_default_timeout):
    fd = sockmod.socket().detach()
    sockmod.setdefaulttimeout(2.5)
    with sockmod.socket(fileno=fd) as sock:
        assert sock.timeout == 2.5


def test_sock_nonblock_overrides_the_default_timeout(sockmod, restore_default_timeout):
    sockmod.setdefaulttimeout(2.5)
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK) as sock:
        assert sock.timeout == 0.0


def test_changing_the_default_timeout_leaves_existing_sockets_alone(sockmod, restore_default_timeout):
    with sockmod.socket() as sock:
        sockmod.setdefaulttimeout(2.5)
        assert sock.timeout is None


def test_default_timeout_zero_applies_to_accepted_sockets(sockmod, restore_default_timeout):
    with sockmod.socket() as server, sockmod.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        sockmod.setdefaulttimeout(0)
        assert select.select([server], [], [], TIMEOUT)[0] == [server]
        conn, _ = server.accept()
        with conn:
            assert (conn.timeout, conn.getblocking()) == (0.0, False)
