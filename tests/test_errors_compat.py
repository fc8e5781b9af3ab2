"""Errors from SOCK_STREAM sockets: the OSError subclass and errno the stdlib raises for each failure, and the
exception type and message it gives for bad input.

Every test runs over the stdlib's `socket` module and over `rsock` (the `sockmod` fixture). Messages are
compared with the stdlib's own, computed in the same test; errno-bearing errors must read
`[Errno N] <strerror(N)>` as CPython writes them.
"""

import errno
import os
import select
import socket as stdlib_socket
import struct
import sys
from contextlib import ExitStack, contextmanager

import pytest

from tests.loopback import ipv6_loopback_available

TIMEOUT = 10.0  # seconds: the bound on any wait in these tests
SHORT = 0.2  # seconds: the timeout of calls that are meant to time out
BIG = 64 << 20  # bytes: more than the kernel buffers of a loopback connection hold


# --- helpers -----------------------------------------------------------------------------------------------


HAS_IPV6_LOOPBACK = ipv6_loopback_available()
LOOPBACK = {"AF_INET": "127.0.0.1", "AF_INET6": "::1"}


@pytest.fixture(params=["AF_INET", "AF_INET6"])
def ip_family(request):
    """(family name, loopback host) for IPv4 and, where the machine has ::1, IPv6."""
    if request.param == "AF_INET6" and not HAS_IPV6_LOOPBACK:
        pytest.skip("this machine has no IPv6 loopback address (::1)")
    return request.param, LOOPBACK[request.param]


@pytest.fixture
def restore_default_timeout(sockmod):
    """Puts the module's default timeout back however the test ends."""
    saved = sockmod.getdefaulttimeout()
    yield
    sockmod.setdefaulttimeout(saved)


def guard(sock):
    """Bounds blocking calls on `sock` in the kernel (SO_RCVTIMEO/SO_SNDTIMEO): Python still sees a blocking
    socket, but a call that would wait for ever fails with EAGAIN instead of hanging the test."""
    timeval = struct.pack("@ll", int(TIMEOUT), 0)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDTIMEO, timeval)
    return sock


@contextmanager
def listener(mod, family_name="AF_INET", backlog=None):
    """A guarded TCP socket of `mod` listening on the loopback address of `family_name`."""
    with mod.socket(getattr(mod, family_name), mod.SOCK_STREAM) as server:
        guard(server)
        server.bind((LOOPBACK[family_name], 0))
        if backlog is None:
            server.listen()
        else:
            server.listen(backlog)
        yield server


@contextmanager
def connection(mod, family_name="AF_INET"):
    """(client, conn): a guarded, connected pair of `mod` sockets over loopback."""
    with listener(mod, family_name) as server, mod.socket(getattr(mod, family_name)) as client:
        guard(client)
        client.connect(server.getsockname())
        conn, _ = server.accept()
        with conn:
            guard(conn)
            yield client, conn


def wait_readable(sock):
    """Waits (bounded) until `sock` has something to report: data, EOF or an error."""
    assert select.select([sock], [], [], TIMEOUT)[0] == [sock], "socket never became readable"


def abort(sock):
    """Closes `sock` with SO_LINGER (on, 0 s): the kernel resets the connection instead of a clean FIN."""
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raised(call, *args):
    """The exception `call(*args)` raises; fails the test if it returns."""
    try:
        result = call(*args)
    except Exception as exc:
        return exc
    pytest.fail(f"expected an exception, got {result!r}")


def assert_os_error(exc, exc_type, code):
    """`exc` is exactly `exc_type` with errno `code` and CPython's text for it."""
    assert type(exc) is exc_type
    assert exc.errno == code
    assert exc.strerror == os.strerror(code)
    assert str(exc) == f"[Errno {code}] {os.strerror(code)}"


def assert_timed_out(exc, mod):
    """`exc` is the stdlib's timeout: TimeoutError("timed out") with no errno, catchable as socket.timeout."""
    assert type(exc) is TimeoutError
    assert isinstance(exc, mod.timeout)
    assert exc.args == ("timed out",)
    assert str(exc) == "timed out"
    assert exc.errno is None


def native_names_as_stdlib(text):
    """rsock's native module is `rsock._rsock` where the stdlib's is `_socket`."""
    return text.replace("rsock._rsock.", "_socket.")


def assert_same_error_type(sockmod, scenario, exc_type):
    """`scenario(sockmod)` raises `exc_type`, as `scenario(stdlib socket)` does. For wrong argument counts
    and keywords only the type is compared: the wording is the argument parser's (CPython's or pyo3's),
    not the socket's behaviour."""
    assert type(raised(scenario, sockmod)) is exc_type
    assert type(raised(scenario, stdlib_socket)) is exc_type


def assert_same_error(sockmod, scenario, exc_type):
    """`scenario(sockmod)` raises `exc_type` with the message `scenario(stdlib socket)` gives."""
    exc = raised(scenario, sockmod)
    assert type(exc) is exc_type
    assert native_names_as_stdlib(str(exc)) == str(raised(scenario, stdlib_socket))


def fill_send_buffers(sock, chunk=b"x" * 65536):
    """Sends on `sock` (whose peer never reads) until a call fails; returns that call's exception."""
    for _ in range(BIG // len(chunk)):
        try:
            sock.send(chunk)
        except OSError as exc:
            return exc
    pytest.fail("the send buffers never filled")


def connect_until_timeout(mod, server, stack):
    """Connects clients with a short timeout to a backlog-0 listener that accepts nothing, until the full
    queue makes one time out; returns that client's exception."""
    for _ in range(8):
        client = stack.enter_context(mod.socket())
        client.settimeout(SHORT)
        try:
            client.connect(server.getsockname())
        except TimeoutError as exc:
            return exc
    pytest.fail("the listen queue never filled")


# --- ConnectionRefusedError --------------------------------------------------------------------------------


@contextmanager
def closed_port(mod, family_name, host):
    """The address of a port nothing listens on: a bound, non-listening socket holds it meanwhile."""
    with mod.socket(getattr(mod, family_name)) as holder:
        holder.bind((host, 0))
        yield holder.getsockname()


def test_connect_to_a_closed_port_raises_connection_refused(sockmod, ip_family):
    family_name, host = ip_family
    with closed_port(sockmod, family_name, host) as address, sockmod.socket(getattr(sockmod, family_name)) as sock:
        assert_os_error(raised(sock.connect, address), ConnectionRefusedError, errno.ECONNREFUSED)


def test_connect_with_a_timeout_to_a_closed_port_raises_connection_refused(sockmod, ip_family):
    family_name, host = ip_family
    with closed_port(sockmod, family_name, host) as address, sockmod.socket(getattr(sockmod, family_name)) as sock:
        sock.settimeout(TIMEOUT)
        assert_os_error(raised(sock.connect, address), ConnectionRefusedError, errno.ECONNREFUSED)


def test_connect_to_a_unix_socket_not_listening_raises_connection_refused(sockmod, tmp_path):
    path = str(tmp_path / "idle.sock")
    with sockmod.socket(sockmod.AF_UNIX) as holder, sockmod.socket(sockmod.AF_UNIX) as sock:
        holder.bind(path)
        assert_os_error(raised(sock.connect, path), ConnectionRefusedError, errno.ECONNREFUSED)


def test_connection_refused_error_has_errno_and_strerror_args(sockmod):
    with closed_port(sockmod, "AF_INET", "127.0.0.1") as address, sockmod.socket() as sock:
        exc = raised(sock.connect, address)
    assert exc.args == (errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    assert exc.filename is None


def test_connect_to_a_missing_unix_path_raises_file_not_found(sockmod, tmp_path):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        exc = raised(sock.connect, str(tmp_path / "missing.sock"))
    assert_os_error(exc, FileNotFoundError, errno.ENOENT)


# --- ConnectionResetError ----------------------------------------------------------------------------------


def test_recv_after_the_peer_aborts_raises_connection_reset(sockmod, ip_family):
    with connection(sockmod, ip_family[0]) as (client, conn):
        client.sendall(b"never read")
        abort(conn)
        wait_readable(client)
        assert_os_error(raised(client.recv, 10), ConnectionResetError, errno.ECONNRESET)


def test_recv_after_the_peer_closes_with_unread_data_raises_connection_reset(sockmod):
    with connection(sockmod) as (client, conn):
        client.sendall(b"never read")
        wait_readable(conn)
        conn.close()
        wait_readable(client)
        assert_os_error(raised(client.recv, 10), ConnectionResetError, errno.ECONNRESET)


def test_send_after_the_peer_aborts_raises_connection_reset(sockmod):
    with connection(sockmod) as (client, conn):
        abort(conn)
        wait_readable(client)
        assert_os_error(raised(client.send, b"x"), ConnectionResetError, errno.ECONNRESET)


def test_recv_with_a_timeout_after_the_peer_aborts_raises_connection_reset(sockmod):
    with connection(sockmod) as (client, conn):
        client.settimeout(TIMEOUT)
        abort(conn)
        assert_os_error(raised(client.recv, 10), ConnectionResetError, errno.ECONNRESET)


# --- BrokenPipeError ---------------------------------------------------------------------------------------


def test_send_after_the_peer_closed_raises_broken_pipe(sockmod, ip_family):
    with connection(sockmod, ip_family[0]) as (client, conn):
        conn.close()
        wait_readable(client)  # the FIN has arrived
        # The first send draws a reset from the closed peer; a later one fails.
        exc = fill_send_buffers(client, b"x" * 100)
        assert_os_error(exc, BrokenPipeError, errno.EPIPE)


def test_send_after_own_shut_wr_raises_broken_pipe(sockmod):
    with connection(sockmod) as (client, _):
        client.shutdown(sockmod.SHUT_WR)
        assert_os_error(raised(client.send, b"x"), BrokenPipeError, errno.EPIPE)


def test_sendall_after_own_shut_wr_raises_broken_pipe(sockmod):
    with connection(sockmod) as (client, _):
        client.shutdown(sockmod.SHUT_WR)
        assert_os_error(raised(client.sendall, b"x"), BrokenPipeError, errno.EPIPE)


def test_send_on_an_unconnected_tcp_socket_raises_broken_pipe(sockmod):
    with sockmod.socket() as sock:
        assert_os_error(raised(sock.send, b"x"), BrokenPipeError, errno.EPIPE)


def test_send_on_an_unconnected_unix_socket_raises_enotconn(sockmod):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        assert_os_error(raised(sock.send, b"x"), OSError, errno.ENOTCONN)


# --- BlockingIOError ---------------------------------------------------------------------------------------


def test_nonblocking_recv_with_nothing_queued_raises_blocking_io_error(sockmod, ip_family):
    with connection(sockmod, ip_family[0]) as (_, conn):
        conn.setblocking(False)
        assert_os_error(raised(conn.recv, 10), BlockingIOError, errno.EAGAIN)


def test_nonblocking_recv_into_with_nothing_queued_raises_blocking_io_error(sockmod):
    with connection(sockmod) as (_, conn):
        conn.setblocking(False)
        assert_os_error(raised(conn.recv_into, bytearray(10)), BlockingIOError, errno.EAGAIN)


def test_nonblocking_accept_with_no_client_raises_blocking_io_error(sockmod, ip_family):
    with listener(sockmod, ip_family[0]) as server:
        server.setblocking(False)
        assert_os_error(raised(server.accept), BlockingIOError, errno.EAGAIN)


def test_accept_on_a_sock_nonblock_listener_raises_blocking_io_error(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert_os_error(raised(server.accept), BlockingIOError, errno.EAGAIN)


def test_recv_with_msg_dontwait_and_nothing_queued_raises_blocking_io_error(sockmod):
    with connection(sockmod) as (_, conn):
        assert_os_error(raised(conn.recv, 10, sockmod.MSG_DONTWAIT), BlockingIOError, errno.EAGAIN)
        assert conn.getblocking() is True


def test_nonblocking_send_into_full_buffers_raises_blocking_io_error(sockmod):
    with connection(sockmod) as (client, _):
        client.setblocking(False)
        assert_os_error(fill_send_buffers(client), BlockingIOError, errno.EAGAIN)


def test_nonblocking_sendall_of_more_than_fits_raises_blocking_io_error(sockmod):
    with connection(sockmod) as (client, _):
        client.setblocking(False)
        assert_os_error(raised(client.sendall, bytes(BIG)), BlockingIOError, errno.EAGAIN)


# --- TimeoutError ------------------------------------------------------------------------------------------


def test_recv_with_a_timeout_and_no_data_raises_timeout_error(sockmod, ip_family):
    with connection(sockmod, ip_family[0]) as (_, conn):
        conn.settimeout(SHORT)
        assert_timed_out(raised(conn.recv, 10), sockmod)


def test_recv_into_with_a_timeout_and_no_data_raises_timeout_error(sockmod):
    with connection(sockmod) as (_, conn):
        conn.settimeout(SHORT)
        assert_timed_out(raised(conn.recv_into, bytearray(10)), sockmod)


def test_accept_with_a_timeout_and_no_client_raises_timeout_error(sockmod, ip_family):
    with listener(sockmod, ip_family[0]) as server:
        server.settimeout(SHORT)
        assert_timed_out(raised(server.accept), sockmod)


def test_connect_with_a_timeout_to_a_full_listen_queue_raises_timeout_error(sockmod):
    with listener(sockmod, backlog=0) as server, ExitStack() as clients:
        assert_timed_out(connect_until_timeout(sockmod, server, clients), sockmod)


def test_connect_ex_with_a_timeout_to_a_full_listen_queue_returns_eagain(sockmod):
    result = 0
    with listener(sockmod, backlog=0) as server, ExitStack() as clients:
        for _ in range(8):
            client = clients.enter_context(sockmod.socket())
            client.settimeout(SHORT)
            result = client.connect_ex(server.getsockname())
            if result:
                break
        assert result == errno.EAGAIN


def test_send_with_a_timeout_into_full_buffers_raises_timeout_error(sockmod):
    with connection(sockmod) as (client, _):
        client.settimeout(SHORT)
        assert_timed_out(fill_send_buffers(client), sockmod)


def test_sendall_with_a_timeout_of_more_than_fits_raises_timeout_error(sockmod):
    with connection(sockmod) as (client, _):
        client.settimeout(SHORT)
        assert_timed_out(raised(client.sendall, bytes(BIG)), sockmod)


def test_default_timeout_makes_recv_raise_timeout_error(sockmod, restore_default_timeout):
    sockmod.setdefaulttimeout(SHORT)
    with connection(sockmod) as (_, conn):
        assert_timed_out(raised(conn.recv, 10), sockmod)


# --- EBADF after close -------------------------------------------------------------------------------------

CALLS_ON_A_CLOSED_SOCKET = [
    ("recv", (1,)),
    ("recv_into", (bytearray(1),)),
    ("send", (b"x",)),
    ("sendall", (b"x",)),
    ("bind", (("127.0.0.1", 0),)),
    ("listen", ()),
    ("accept", ()),
    ("connect", (("127.0.0.1", 9),)),
    ("getsockname", ()),
    ("getpeername", ()),
    ("shutdown", (stdlib_socket.SHUT_RDWR,)),
    ("setsockopt", (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)),
    ("getsockopt", (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR)),
    ("dup", ()),
    ("settimeout", (1.0,)),
    ("setblocking", (False,)),
    ("get_inheritable", ()),
    ("set_inheritable", (True,)),
]


@pytest.mark.parametrize(("method", "args"), CALLS_ON_A_CLOSED_SOCKET, ids=[c[0] for c in CALLS_ON_A_CLOSED_SOCKET])
def test_calls_on_a_closed_socket_raise_ebadf(sockmod, method, args):
    sock = sockmod.socket()
    sock.close()
    assert_os_error(raised(getattr(sock, method), *args), OSError, errno.EBADF)


def test_recv_on_a_closed_socket_with_a_timeout_raises_ebadf(sockmod):
    sock = sockmod.socket()
    sock.settimeout(SHORT)
    sock.close()
    assert_os_error(raised(sock.recv, 1), OSError, errno.EBADF)


def test_connect_ex_on_a_closed_socket_returns_ebadf(sockmod):
    sock = sockmod.socket()
    sock.close()
    assert sock.connect_ex(("127.0.0.1", 9)) == errno.EBADF


def test_module_close_of_a_bad_descriptor_raises_ebadf(sockmod):
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    assert_os_error(raised(sockmod.close, read_end), OSError, errno.EBADF)


def test_fromfd_of_a_negative_descriptor_raises_ebadf(sockmod):
    assert_os_error(raised(sockmod.fromfd, -1, sockmod.AF_INET, sockmod.SOCK_STREAM), OSError, errno.EBADF)


# --- other errno failures ----------------------------------------------------------------------------------


def test_bind_to_a_port_in_use_raises_eaddrinuse(sockmod, ip_family):
    with listener(sockmod, ip_family[0]) as server, sockmod.socket(server.family) as sock:
        assert_os_error(raised(sock.bind, server.getsockname()), OSError, errno.EADDRINUSE)


def test_bind_to_an_existing_unix_path_raises_eaddrinuse(sockmod, tmp_path):
    path = str(tmp_path / "taken.sock")
    with sockmod.socket(sockmod.AF_UNIX) as first, sockmod.socket(sockmod.AF_UNIX) as second:
        first.bind(path)
        assert_os_error(raised(second.bind, path), OSError, errno.EADDRINUSE)


def test_bind_to_an_address_not_on_this_host_raises_eaddrnotavail(sockmod):
    with sockmod.socket() as sock:  # 192.0.2.1 is TEST-NET-1: never a local address
        assert_os_error(raised(sock.bind, ("192.0.2.1", 0)), OSError, errno.EADDRNOTAVAIL)


def test_bind_into_a_missing_directory_raises_file_not_found(sockmod, tmp_path):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        exc = raised(sock.bind, str(tmp_path / "missing" / "x.sock"))
    assert_os_error(exc, FileNotFoundError, errno.ENOENT)


def test_bind_a_bound_socket_again_raises_einval(sockmod):
    with sockmod.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert_os_error(raised(sock.bind, ("127.0.0.1", 0)), OSError, errno.EINVAL)


def test_listen_on_an_unbound_unix_socket_raises_einval(sockmod):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        assert_os_error(raised(sock.listen), OSError, errno.EINVAL)


def test_accept_on_a_socket_not_listening_raises_einval(sockmod):
    with sockmod.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert_os_error(raised(sock.accept), OSError, errno.EINVAL)


def test_shutdown_with_an_unknown_how_raises_einval(sockmod):
    with connection(sockmod) as (client, _):
        assert_os_error(raised(client.shutdown, 7), OSError, errno.EINVAL)


def test_setsockopt_none_with_zero_optlen_on_an_int_option_raises_einval(sockmod):
    with sockmod.socket() as sock:
        exc = raised(sock.setsockopt, sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, None, 0)
    assert_os_error(exc, OSError, errno.EINVAL)


def test_connect_a_connected_socket_again_raises_eisconn(sockmod):
    with listener(sockmod) as server, sockmod.socket() as client:
        client.connect(server.getsockname())
        assert_os_error(raised(client.connect, server.getsockname()), OSError, errno.EISCONN)
        server.accept()[0].close()


@pytest.mark.parametrize(("method", "args"), [("recv", (1,)), ("shutdown", (stdlib_socket.SHUT_RDWR,))])
def test_io_on_an_unconnected_socket_raises_enotconn(sockmod, method, args):
    with sockmod.socket() as sock:
        assert_os_error(raised(getattr(sock, method), *args), OSError, errno.ENOTCONN)


# --- bad input: data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["send", "sendall"])
@pytest.mark.parametrize("data", ["text", 5, None], ids=["str", "int", "None"])
def test_sending_a_non_bytes_object_raises_typeerror(sockmod, method, data):
    def scenario(mod):
        with connection(mod) as (client, _):
            getattr(client, method)(data)

    assert_same_error(sockmod, scenario, TypeError)


def test_sending_a_non_contiguous_buffer_raises_buffer_error(sockmod):
    def scenario(mod):
        with connection(mod) as (client, _):
            client.send(memoryview(b"abcdef")[::2])

    assert_same_error(sockmod, scenario, BufferError)


@pytest.mark.parametrize(
    ("method", "args"),
    [("recv", (-1,)), ("recv_into", (bytearray(4), -1))],
    ids=["recv", "recv_into"],
)
def test_negative_buffer_size_raises_valueerror(sockmod, method, args):
    def scenario(mod):
        with connection(mod) as (_, conn):
            getattr(conn, method)(*args)

    assert_same_error(sockmod, scenario, ValueError)


@pytest.mark.parametrize("bufsize", ["10", 1.5, None], ids=["str", "float", "None"])
def test_recv_with_a_non_integer_size_raises_typeerror(sockmod, bufsize):
    def scenario(mod):
        with connection(mod) as (_, conn):
            conn.recv(bufsize)

    assert_same_error(sockmod, scenario, TypeError)


def test_recv_with_a_size_beyond_ssize_t_raises_overflowerror(sockmod):
    def scenario(mod):
        with connection(mod) as (_, conn):
            conn.recv(2**70)

    assert_same_error(sockmod, scenario, OverflowError)


# --- bad input: addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bind", "connect", "connect_ex"])
@pytest.mark.parametrize("port", [70000, 65536, -1])
def test_port_out_of_range_raises_overflowerror(sockmod, ip_family, method, port):
    family_name, host = ip_family

    def scenario(mod):
        with mod.socket(getattr(mod, family_name)) as sock:
            getattr(sock, method)((host, port))

    exc = raised(scenario, sockmod)
    assert type(exc) is OverflowError
    assert str(exc) == f"{method}(): port must be 0-65535."


@pytest.mark.parametrize("port", [2**40, 2**70])
def test_port_beyond_c_int_raises_the_port_range_overflowerror(sockmod, port):
    def scenario(mod):
        with mod.socket() as sock:
            sock.bind(("127.0.0.1", port))

    exc = raised(scenario, sockmod)
    assert type(exc) is OverflowError
    assert str(exc) == "bind(): port must be 0-65535."


MALFORMED_INET_ADDRESSES = {
    "one-item": ("127.0.0.1",),
    "three-items": ("127.0.0.1", 0, 0),
    "empty-tuple": (),
    "str": "127.0.0.1",
    "list": ["127.0.0.1", 0],
    "None": None,
    "int": 5,
    "int-host": (1, 0),
    "None-host": (None, 0),
    "str-port": ("127.0.0.1", "0"),
    "float-port": ("127.0.0.1", 0.0),
    "None-port": ("127.0.0.1", None),
}


@pytest.mark.parametrize("method", ["bind", "connect", "connect_ex"])
@pytest.mark.parametrize("address", MALFORMED_INET_ADDRESSES.values(), ids=MALFORMED_INET_ADDRESSES.keys())
def test_malformed_inet_address_raises_typeerror(sockmod, method, address):
    def scenario(mod):
        with mod.socket(mod.AF_INET) as sock:
            getattr(sock, method)(address)

    assert_same_error(sockmod, scenario, TypeError)


MALFORMED_INET6_ADDRESSES = {
    "one-item": ("::1",),
    "five-items": ("::1", 0, 0, 0, 0),
    "str": "::1",
    "list": ["::1", 0],
    "str-flowinfo": ("::1", 0, "0"),
    "str-scope-id": ("::1", 0, 0, "0"),
}


@pytest.mark.parametrize("address", MALFORMED_INET6_ADDRESSES.values(), ids=MALFORMED_INET6_ADDRESSES.keys())
def test_malformed_inet6_address_raises_typeerror(sockmod, address):
    def scenario(mod):
        with mod.socket(mod.AF_INET6) as sock:
            sock.bind(address)

    assert_same_error(sockmod, scenario, TypeError)


@pytest.mark.parametrize("flowinfo", [1 << 20, -1])
def test_inet6_flowinfo_out_of_range_raises_overflowerror(sockmod, flowinfo):
    def scenario(mod):
        with mod.socket(mod.AF_INET6) as sock:
            sock.bind(("::1", 0, flowinfo))

    exc = raised(scenario, sockmod)
    assert type(exc) is OverflowError
    assert str(exc) == "bind(): flowinfo must be 0-1048575."


@pytest.mark.parametrize("method", ["bind", "connect"])
def test_host_containing_nul_raises_typeerror(sockmod, ip_family, method):
    family_name, host = ip_family

    def scenario(mod):
        with mod.socket(getattr(mod, family_name)) as sock:
            getattr(sock, method)((host + "\0", 0))

    exc = raised(scenario, sockmod)
    assert type(exc) is TypeError
    assert str(exc) == "host name must not contain null character"


class HostName(str):
    """A str subclass: CPython sends it through the idna codec even when it is ASCII."""


@pytest.mark.parametrize("host", ["a" * 64, "a..b", "."], ids=["long-label", "empty-label", "dot"])
@pytest.mark.parametrize("method", ["connect", "sendto"])
def test_ascii_host_of_a_str_subclass_is_idna_encoded(sockmod, method, host):
    """The idna codec refuses a label of 64 characters or an empty one: TypeError("encoding of hostname failed")
    before any lookup, where rsock used to look the name up as an exact str is (gaierror)."""

    def scenario(mod):
        with mod.socket(mod.AF_INET, mod.SOCK_DGRAM) as sock:
            if method == "sendto":
                sock.sendto(b"x", (HostName(host), 9))
            else:
                sock.connect((HostName(host), 9))

    exc = raised(scenario, sockmod)
    assert type(exc) is TypeError
    assert str(exc) == "encoding of hostname failed"


def test_ascii_host_of_a_str_subclass_that_idna_accepts_works(sockmod):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as sock:
        sock.bind((HostName("127.0.0.1"), 0))
        assert sock.getsockname()[0] == "127.0.0.1"


@pytest.mark.parametrize(("family_name", "host"), [("AF_INET", "::1"), ("AF_INET6", "127.0.0.1")])
def test_host_of_the_other_family_raises_the_stdlib_resolver_error(sockmod, family_name, host):
    def scenario(mod):
        with mod.socket(getattr(mod, family_name)) as sock:
            sock.bind((host, 0))

    exc = raised(scenario, sockmod)
    reference = raised(scenario, stdlib_socket)
    assert (type(exc), exc.errno, str(exc)) == (type(reference), reference.errno, str(reference))


@pytest.mark.parametrize("address", [5, None, ("path",)], ids=["int", "None", "tuple"])
@pytest.mark.parametrize("method", ["bind", "connect"])
def test_unix_address_of_a_wrong_type_raises_typeerror(sockmod, method, address):
    def scenario(mod):
        with mod.socket(mod.AF_UNIX) as sock:
            getattr(sock, method)(address)

    assert_same_error(sockmod, scenario, TypeError)


@pytest.mark.parametrize("address", ["x" * 108, b"\0" + b"x" * 108], ids=["path", "abstract"])
def test_unix_address_too_long_raises_oserror(sockmod, address):
    with sockmod.socket(sockmod.AF_UNIX) as sock:
        exc = raised(sock.bind, address)
    assert type(exc) is OSError
    assert exc.errno is None
    assert str(exc) == "AF_UNIX path too long"


# --- bad input: timeouts -----------------------------------------------------------------------------------

BAD_TIMEOUTS = {
    "minus-one": (-1, ValueError),
    "negative-float": (-0.5, ValueError),
    "tiny-negative": (-1e-10, ValueError),
    "str": ("1", TypeError),
    "bytes": (b"1", TypeError),
    "nan": (float("nan"), ValueError),
    "inf": (float("inf"), OverflowError),
    "huge-float": (1e300, OverflowError),
    "huge-int": (2**70, OverflowError),
}


@pytest.mark.parametrize(("value", "exc_type"), BAD_TIMEOUTS.values(), ids=BAD_TIMEOUTS.keys())
def test_settimeout_with_a_bad_value_raises(sockmod, value, exc_type):
    def scenario(mod):
        with mod.socket() as sock:
            sock.settimeout(value)

    assert_same_error(sockmod, scenario, exc_type)


def test_rejected_settimeout_leaves_the_timeout_unchanged(sockmod):
    with sockmod.socket() as sock:
        sock.settimeout(2.5)
        assert type(raised(sock.settimeout, -1)) is ValueError
        assert sock.timeout == 2.5


@pytest.mark.parametrize(("value", "exc_type"), BAD_TIMEOUTS.values(), ids=BAD_TIMEOUTS.keys())
def test_setdefaulttimeout_with_a_bad_value_raises(sockmod, restore_default_timeout, value, exc_type):
    assert_same_error(sockmod, lambda mod: mod.setdefaulttimeout(value), exc_type)
    assert sockmod.getdefaulttimeout() is None


@pytest.mark.parametrize(
    ("flag", "exc_type", "blocking"),
    [
        ("yes", TypeError, True),
        (None, TypeError, False),
        (1.5, TypeError, True),
        (0.0, TypeError, False),
        ([], TypeError, False),
        (2**70, OverflowError, True),
    ],
    ids=["str", "None", "float", "zero-float", "list", "huge"],
)
def test_setblocking_with_a_non_integer_flag(sockmod, flag, exc_type, blocking):
    def scenario(mod):
        with mod.socket() as sock:
            sock.settimeout(2.5)
            sock.setblocking(flag)
            return sock.getblocking(), sock.gettimeout()

    if sys.version_info < (3, 12):  # 3.11 requires an int that fits a C long
        assert_same_error(sockmod, scenario, exc_type)
    else:  # from 3.12, the flag's truth value
        assert scenario(sockmod) == scenario(stdlib_socket) == (blocking, None if blocking else 0.0)


def test_setblocking_propagates_the_flag_s_bool_error(sockmod):
    class Unjudgeable:
        def __bool__(self):
            raise ZeroDivisionError("no truth value")

    def scenario(mod):
        with mod.socket() as sock:
            sock.setblocking(Unjudgeable())

    # 3.11 asks for an int (TypeError); from 3.12 the error of bool(flag) propagates.
    assert_same_error(sockmod, scenario, TypeError if sys.version_info < (3, 12) else ZeroDivisionError)


# --- bad input: arguments ----------------------------------------------------------------------------------

WRONG_ARGUMENTS = {
    "recv()": ("recv", (), {}),
    "recv(1, 0, 0)": ("recv", (1, 0, 0), {}),
    "recv(bufsize=1)": ("recv", (), {"bufsize": 1}),
    "recv_into()": ("recv_into", (), {}),
    "recv_into(buf, 1, 0, 0)": ("recv_into", (bytearray(1), 1, 0, 0), {}),
    "send()": ("send", (), {}),
    "send(b'', 0, 0)": ("send", (b"", 0, 0), {}),
    "send(b'', flags=0)": ("send", (b"",), {"flags": 0}),
    "sendall()": ("sendall", (), {}),
    "sendall(b'', 0, 0)": ("sendall", (b"", 0, 0), {}),
    "bind()": ("bind", (), {}),
    "bind(a, b)": ("bind", (("127.0.0.1", 0), 1), {}),
    "connect()": ("connect", (), {}),
    "connect_ex()": ("connect_ex", (), {}),
    "connect_ex(a, b)": ("connect_ex", (("127.0.0.1", 0), 1), {}),
    "listen(1, 2)": ("listen", (1, 2), {}),
    "accept(1)": ("accept", (1,), {}),
    "shutdown()": ("shutdown", (), {}),
    "setsockopt(1, 2)": ("setsockopt", (1, 2), {}),
    "setsockopt(1, 2, 3, 4, 5)": ("setsockopt", (1, 2, 3, 4, 5), {}),
    "getsockopt(1)": ("getsockopt", (1,), {}),
    "getsockopt(1, 2, 3, 4)": ("getsockopt", (1, 2, 3, 4), {}),
    "getsockname(1)": ("getsockname", (1,), {}),
    "getpeername(1)": ("getpeername", (1,), {}),
    "fileno(1)": ("fileno", (1,), {}),
    "dup(1)": ("dup", (1,), {}),
    "detach(1)": ("detach", (1,), {}),
    "close(1)": ("close", (1,), {}),
    "settimeout()": ("settimeout", (), {}),
    "gettimeout(1)": ("gettimeout", (1,), {}),
    "setblocking()": ("setblocking", (), {}),
    "getblocking(1)": ("getblocking", (1,), {}),
    "get_inheritable(1)": ("get_inheritable", (1,), {}),
    "set_inheritable()": ("set_inheritable", (), {}),
}


@pytest.mark.parametrize(("method", "args", "kwargs"), WRONG_ARGUMENTS.values(), ids=WRONG_ARGUMENTS.keys())
def test_socket_method_with_wrong_arguments_raises_typeerror(sockmod, method, args, kwargs):
    def scenario(mod):
        with mod.socket() as sock:
            getattr(sock, method)(*args, **kwargs)

    assert_same_error_type(sockmod, scenario, TypeError)


WRONG_MODULE_ARGUMENTS = {
    "getdefaulttimeout(1)": ("getdefaulttimeout", (1,)),
    "setdefaulttimeout()": ("setdefaulttimeout", ()),
    "socketpair(1, 2, 3, 4)": ("socketpair", (1, 2, 3, 4)),
    "fromfd(1)": ("fromfd", (1,)),
    "socket(2, 1, 0, None, 5)": ("socket", (2, 1, 0, None, 5)),
}


@pytest.mark.parametrize(("function", "args"), WRONG_MODULE_ARGUMENTS.values(), ids=WRONG_MODULE_ARGUMENTS.keys())
def test_module_function_with_wrong_arguments_raises_typeerror(sockmod, restore_default_timeout, function, args):
    assert_same_error_type(sockmod, lambda mod: getattr(mod, function)(*args), TypeError)


INT_ARGUMENTS_BEYOND_C_INT = {
    "listen(2**40)": ("listen", (2**40,)),
    "send(b'x', 2**40)": ("send", (b"x", 2**40)),
    "recv(1, 2**40)": ("recv", (1, 2**40)),
    "shutdown(2**40)": ("shutdown", (2**40,)),
    "getsockopt(2**40, 1)": ("getsockopt", (2**40, 1)),
}


@pytest.mark.parametrize(("method", "args"), INT_ARGUMENTS_BEYOND_C_INT.values(), ids=INT_ARGUMENTS_BEYOND_C_INT.keys())
def test_int_argument_beyond_c_int_raises_overflowerror(sockmod, method, args):
    def scenario(mod):
        with connection(mod) as (client, _):
            getattr(client, method)(*args)

    assert_same_error(sockmod, scenario, OverflowError)


# An optional integer argument given as None is a TypeError (CPython's parsers want an int), not the default.
NONE_FOR_AN_INT_ARGUMENT = {
    "recv(1, None)": ("recv", (1, None)),
    "recvfrom(1, None)": ("recvfrom", (1, None)),
    "recv_into(buf, None)": ("recv_into", (bytearray(1), None)),
    "recv_into(buf, 0, None)": ("recv_into", (bytearray(1), 0, None)),
    "recvfrom_into(buf, None)": ("recvfrom_into", (bytearray(1), None)),
    "recvmsg(1, None)": ("recvmsg", (1, None)),
    "recvmsg(1, 0, None)": ("recvmsg", (1, 0, None)),
    "recvmsg_into([buf], None)": ("recvmsg_into", ([bytearray(1)], None)),
    "send(b'x', None)": ("send", (b"x", None)),
    "sendall(b'x', None)": ("sendall", (b"x", None)),
    "sendmsg([b'x'], [], None)": ("sendmsg", ([b"x"], [], None)),
    "getsockopt(SOL_SOCKET, SO_TYPE, None)": ("getsockopt", (stdlib_socket.SOL_SOCKET, stdlib_socket.SO_TYPE, None)),
}


@pytest.mark.parametrize(("method", "args"), NONE_FOR_AN_INT_ARGUMENT.values(), ids=NONE_FOR_AN_INT_ARGUMENT.keys())
def test_none_for_an_optional_int_argument_raises_typeerror(sockmod, method, args):
    def scenario(mod):
        with connection(mod) as (client, conn):
            conn.sendall(b"data")
            getattr(client, method)(*args)

    assert_same_error(sockmod, scenario, TypeError)


def test_listen_none_raises_typeerror(sockmod):
    def scenario(mod):
        with mod.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(None)

    assert_same_error(sockmod, scenario, TypeError)


def test_sendmsg_with_none_for_ancillary_data_raises_typeerror(sockmod):
    def scenario(mod):
        with connection(mod) as (client, _):
            client.sendmsg([b"x"], None)

    assert_same_error(sockmod, scenario, TypeError)


def test_sendmsg_with_none_for_the_address_sends(sockmod):
    with connection(sockmod) as (client, conn):
        assert client.sendmsg([b"x"], [], 0, None) == 1
        assert conn.recv(1) == b"x"


NONE_FOR_A_MODULE_INT_ARGUMENT = {
    "socket(None)": lambda mod: mod.socket(None).close(),
    "socket(AF_INET, None, None)": lambda mod: mod.socket(mod.AF_INET, None, None).close(),
    "socketpair(AF_UNIX, None)": lambda mod: mod.socketpair(mod.AF_UNIX, None),
    "getaddrinfo(host, port, None)": lambda mod: mod.getaddrinfo("127.0.0.1", 80, None),
    "getaddrinfo(host, port, 0, 0, 0, None)": lambda mod: mod.getaddrinfo("127.0.0.1", 80, 0, 0, 0, None),
}


@pytest.mark.parametrize("scenario", NONE_FOR_A_MODULE_INT_ARGUMENT.values(), ids=NONE_FOR_A_MODULE_INT_ARGUMENT.keys())
def test_none_for_a_module_function_s_int_argument_raises_typeerror(sockmod, scenario):
    assert_same_error(sockmod, scenario, TypeError)


def test_fromfd_with_none_for_family_and_type_raises_typeerror(sockmod):
    def scenario(mod):
        with mod.socket() as sock:
            mod.fromfd(sock.fileno(), None, None)

    assert_same_error_type(sockmod, scenario, TypeError)


POSITIONAL_ONLY = {
    "shutdown(how=...)": ("shutdown", {"how": stdlib_socket.SHUT_RDWR}),
    "settimeout(value=...)": ("settimeout", {"value": 1.0}),
    "setblocking(flag=...)": ("setblocking", {"flag": False}),
    "bind(address=...)": ("bind", {"address": ("127.0.0.1", 0)}),
    "connect(address=...)": ("connect", {"address": ("127.0.0.1", 9)}),
    "connect_ex(address=...)": ("connect_ex", {"address": ("127.0.0.1", 9)}),
}


@pytest.mark.parametrize(("method", "kwargs"), POSITIONAL_ONLY.values(), ids=POSITIONAL_ONLY.keys())
def test_positional_only_argument_given_by_keyword_raises_typeerror(sockmod, method, kwargs):
    def scenario(mod):
        with mod.socket() as sock:
            getattr(sock, method)(**kwargs)

    assert_same_error_type(sockmod, scenario, TypeError)


@pytest.mark.parametrize("function", ["gethostbyname", "gethostbyname_ex"])
def test_resolver_argument_given_by_keyword_raises_typeerror(sockmod, function):
    assert_same_error_type(sockmod, lambda mod: getattr(mod, function)(hostname="localhost"), TypeError)


def test_gethostbyaddr_argument_given_by_keyword_raises_typeerror(sockmod):
    assert_same_error_type(sockmod, lambda mod: mod.gethostbyaddr(ip_address="127.0.0.1"), TypeError)


def on_a_socket(method, *args):
    """A scenario calling `method(*args)` on a fresh TCP socket of the module it is given."""

    def scenario(mod):
        with mod.socket() as sock:
            getattr(sock, method)(*args)

    return scenario


NONE_WHERE_A_BUFFER_OR_NAME_IS_WANTED = {
    "recv_into(None)": on_a_socket("recv_into", None),
    "recvfrom_into(None)": on_a_socket("recvfrom_into", None),
    "gethostbyname(None)": lambda mod: mod.gethostbyname(None),
    "gethostbyname_ex(None)": lambda mod: mod.gethostbyname_ex(None),
    "gethostbyaddr(None)": lambda mod: mod.gethostbyaddr(None),
}


@pytest.mark.parametrize(
    "scenario", NONE_WHERE_A_BUFFER_OR_NAME_IS_WANTED.values(), ids=NONE_WHERE_A_BUFFER_OR_NAME_IS_WANTED.keys()
)
def test_none_is_named_none_in_argument_type_errors(sockmod, scenario):
    assert_same_error(sockmod, scenario, TypeError)
