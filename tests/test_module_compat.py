"""The module-level API of `rsock` against the stdlib's `socket`: names, constants, enums and exceptions,
create_connection/create_server, the resolver functions, the byte-order and address helpers, the default
timeout, fromfd/socketpair/dup/close.

Results that depend on this machine (its resolver, /etc/hosts, /etc/services, routes) are computed with
the stdlib in the same test and compared; everything else is asserted as the stdlib behaves."""

import contextlib
import errno
import gc
import os
import socket as stdlib_socket
import sys
import types
import warnings

import pytest

from tests.loopback import ipv6_loopback_available

TIMEOUT = 5.0


def outcome(call):
    """What `call()` does, in a comparable form: ("ok", result) or ("raise", type, errno, str(exc))."""
    try:
        return ("ok", call())
    except Exception as exc:
        return ("raise", type(exc), getattr(exc, "errno", None), str(exc))


def error_outcome(call):
    """The type and errno of the exception `call()` raises (None when it returns), for failures whose
    message or timing may vary (slow resolvers)."""
    try:
        call()
    except Exception as exc:
        return type(exc), getattr(exc, "errno", None)
    return None


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")


@pytest.fixture
def listener(sockmod):
    """A TCP socket listening on 127.0.0.1 (from the module under test)."""
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.fixture
def restore_default_timeout(sockmod):
    """Puts the module's default timeout back after the test."""
    saved = sockmod.getdefaulttimeout()
    yield
    sockmod.setdefaulttimeout(saved)


def closed_tcp_port(sockmod):
    """A loopback TCP port nothing listens on (bound a moment ago, never listened on, released)."""
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_round_trip(client, server_side):
    client.sendall(b"ping")
    assert server_side.recv(10) == b"ping"
    server_side.sendall(b"pong")
    assert client.recv(10) == b"pong"


# --- names, constants, enums, exceptions --------------------------------------------------------------------


def test_error_is_oserror(sockmod):
    assert sockmod.error is OSError


def test_timeout_is_timeout_error(sockmod):
    assert sockmod.timeout is TimeoutError


def test_gaierror_and_herror_are_the_stdlibs(sockmod):
    assert sockmod.gaierror is stdlib_socket.gaierror
    assert sockmod.herror is stdlib_socket.herror


def test_global_default_timeout_sentinel_is_the_stdlibs(sockmod):
    assert sockmod._GLOBAL_DEFAULT_TIMEOUT is stdlib_socket._GLOBAL_DEFAULT_TIMEOUT


@pytest.mark.parametrize("name", ["AddressFamily", "SocketKind", "MsgFlag", "AddressInfo"])
def test_enum_is_the_stdlibs(sockmod, name):
    assert getattr(sockmod, name, None) is getattr(stdlib_socket, name)


def test_constants_are_the_stdlibs_enum_members(sockmod):
    assert type(sockmod.AF_INET) is stdlib_socket.AddressFamily
    assert type(sockmod.SOCK_DGRAM) is stdlib_socket.SocketKind
    assert type(sockmod.MSG_PEEK) is stdlib_socket.MsgFlag
    assert type(sockmod.AI_PASSIVE) is stdlib_socket.AddressInfo


def test_every_int_constant_in_stdlib_all_has_the_same_value(sockmod):
    int_names = [name for name in stdlib_socket.__all__ if isinstance(getattr(stdlib_socket, name), int)]
    assert len(int_names) > 200
    wrong = [name for name in int_names if getattr(sockmod, name, None) != getattr(stdlib_socket, name)]
    assert wrong == []


def test_every_name_in_stdlib_all_exists(sockmod):
    missing = [name for name in stdlib_socket.__all__ if not hasattr(sockmod, name)]
    assert missing == []


def test_every_public_name_of_the_stdlib_module_exists(sockmod):
    # Public names beyond __all__ too (SocketIO; EAGAIN, EBADF, EWOULDBLOCK from errno), but not the modules
    # and enum bases socket.py imports for its own use.
    own_imports = {"IntEnum", "IntFlag"}
    public = [
        name
        for name, value in vars(stdlib_socket).items()
        if not name.startswith("_") and name not in own_imports and not isinstance(value, types.ModuleType)
    ]
    assert [name for name in public if not hasattr(sockmod, name)] == []
    assert (sockmod.EAGAIN, sockmod.EBADF, sockmod.EWOULDBLOCK) == (errno.EAGAIN, errno.EBADF, errno.EWOULDBLOCK)


def test_a_star_import_gives_the_stdlib_s_names_and_the_servers_and_clients():
    """`from rsock import *` gives what `from socket import *` gives, and TcpServer, TcpClient, UdpServer and
    UdpClient; it gave __version__ and Connection too, overwriting the importing module's own."""
    stdlib_names, rsock_names = (
        {"__version__": "mine", "Connection": "mine"},
        {"__version__": "mine", "Connection": "mine"},
    )
    exec("from socket import *", stdlib_names)
    exec("from rsock import *", rsock_names)
    assert set(rsock_names) - set(stdlib_names) == {"TcpServer", "TcpClient", "UdpServer", "UdpClient"}
    assert set(stdlib_names) <= set(rsock_names)
    assert (rsock_names["__version__"], rsock_names["Connection"]) == ("mine", "mine")


def test_socket_type_is_the_base_of_socket(sockmod):
    assert issubclass(sockmod.socket, sockmod.SocketType)
    with sockmod.socket() as sock:
        assert isinstance(sock, sockmod.SocketType)


def test_unclosed_socket_warning_reaches_unraisablehook_when_warnings_are_errors(sockmod, monkeypatch):
    # With warnings turned into errors (python -W error, pytest's filterwarnings=error) the stdlib reports
    # a socket collected while open through sys.unraisablehook: it is never silently dropped.
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sock = sockmod.socket()
        fd = sock.fileno()
        del sock
        gc.collect()
    assert [type(hook_args.exc_value) for hook_args in reported] == [ResourceWarning]
    assert f"fd={fd}" in str(reported[0].exc_value)


# --- create_connection ----------------------------------------------------------------------------------------


def test_create_connection_connects_to_listener(sockmod, listener):
    with sockmod.create_connection(listener.getsockname()) as client:
        server_side, address = listener.accept()
        with server_side:
            assert (client.family, client.type) == (sockmod.AF_INET, sockmod.SOCK_STREAM)
            assert client.getpeername() == listener.getsockname()
            assert address == client.getsockname()
            assert_round_trip(client, server_side)


def test_create_connection_without_timeout_uses_default_timeout(sockmod, listener):
    with sockmod.create_connection(listener.getsockname()) as client:
        listener.accept()[0].close()
        assert client.gettimeout() is None
        assert client.getblocking() is True


@pytest.mark.parametrize("timeout, expected", [(2.5, 2.5), (3, 3.0), (None, None)])
def test_create_connection_timeout_argument_sets_socket_timeout(sockmod, listener, timeout, expected):
    with sockmod.create_connection(listener.getsockname(), timeout=timeout) as client:
        listener.accept()[0].close()
        assert client.gettimeout() == expected


@pytest.mark.usefixtures("restore_default_timeout")
def test_create_connection_follows_setdefaulttimeout(sockmod, listener):
    sockmod.setdefaulttimeout(1.5)
    with sockmod.create_connection(listener.getsockname()) as client:
        listener.accept()[0].close()
        assert client.gettimeout() == 1.5


def test_create_connection_binds_source_address(sockmod, listener):
    with sockmod.create_connection(listener.getsockname(), TIMEOUT, ("127.0.0.1", 0)) as client:
        server_side, address = listener.accept()
        with server_side:
            assert client.getsockname()[0] == "127.0.0.1"
            assert client.getsockname()[1] != 0
            assert address == client.getsockname()


def test_create_connection_source_address_in_use_raises_eaddrinuse(sockmod, listener):
    with pytest.raises(OSError) as excinfo:
        sockmod.create_connection(listener.getsockname(), TIMEOUT, listener.getsockname())
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EADDRINUSE)
    assert str(excinfo.value) == "[Errno 98] Address already in use"


def test_create_connection_refused_raises_connection_refused_error(sockmod):
    with pytest.raises(ConnectionRefusedError) as excinfo:
        sockmod.create_connection(("127.0.0.1", closed_tcp_port(sockmod)), TIMEOUT)
    assert excinfo.value.errno == errno.ECONNREFUSED
    assert str(excinfo.value) == "[Errno 111] Connection refused"


def test_create_connection_all_errors_raises_exception_group(sockmod):
    with pytest.raises(ExceptionGroup) as excinfo:
        sockmod.create_connection(("127.0.0.1", closed_tcp_port(sockmod)), TIMEOUT, all_errors=True)
    group = excinfo.value
    assert group.message == "create_connection failed"
    assert [(type(exc), exc.errno) for exc in group.exceptions] == [(ConnectionRefusedError, errno.ECONNREFUSED)]


def connect_all_errors_to_localhost(mod, port):
    """The errors create_connection(("localhost", port), all_errors=True) collects, as (type, errno)."""
    try:
        mod.create_connection(("localhost", port), TIMEOUT, all_errors=True).close()
    except ExceptionGroup as group:
        return [(type(exc), exc.errno) for exc in group.exceptions]
    return None


def test_create_connection_all_errors_collects_one_error_per_address(sockmod):
    # "localhost" may stand for one address or two here: the stdlib's result is the reference.
    port = closed_tcp_port(sockmod)
    errors = connect_all_errors_to_localhost(sockmod, port)
    assert errors == connect_all_errors_to_localhost(stdlib_socket, port)
    assert errors
    assert set(errors) == {(ConnectionRefusedError, errno.ECONNREFUSED)}


def test_create_connection_unknown_host_raises_gaierror_as_stdlib(sockmod):
    raised = error_outcome(lambda: sockmod.create_connection(("nonexistent.invalid", 80), TIMEOUT))
    assert raised == error_outcome(lambda: stdlib_socket.create_connection(("nonexistent.invalid", 80), TIMEOUT))
    assert raised[0] is stdlib_socket.gaierror


@contextlib.contextmanager
def full_accept_queue():
    """A stdlib listener whose accept queue is full, so the next connect() to it cannot complete; skips
    the test where the system completes every connection anyway."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(stdlib_socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        for _ in range(16):
            try:
                stack.enter_context(stdlib_socket.create_connection(server.getsockname(), timeout=0.2))
            except TimeoutError:
                break
        else:
            pytest.skip("this system never leaves a connect() pending")
        yield server.getsockname()


def test_create_connection_timeout_raises_timeout_error(sockmod):
    with full_accept_queue() as address:
        with pytest.raises(TimeoutError) as excinfo:
            sockmod.create_connection(address, timeout=0.2)
    assert (type(excinfo.value), excinfo.value.args) == (TimeoutError, ("timed out",))


# --- create_server / has_dualstack_ipv6 ---------------------------------------------------------------------


def test_create_server_returns_listening_reusable_tcp_socket(sockmod):
    with sockmod.create_server(("127.0.0.1", 0)) as server:
        assert (server.family, server.type) == (sockmod.AF_INET, sockmod.SOCK_STREAM)
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 1
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR) == 1
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEPORT) == 0
        assert server.gettimeout() is None
        server.settimeout(TIMEOUT)
        with sockmod.create_connection(server.getsockname(), TIMEOUT) as client:
            server_side, _ = server.accept()
            with server_side:
                assert_round_trip(client, server_side)


@pytest.mark.parametrize("backlog", [0, 1, 5, -3])
def test_create_server_with_backlog_listens(sockmod, backlog):
    with sockmod.create_server(("127.0.0.1", 0), backlog=backlog) as server:
        assert server.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 1
        server.settimeout(TIMEOUT)
        with sockmod.create_connection(server.getsockname(), TIMEOUT):
            server.accept()[0].close()


def test_create_server_reuse_port_lets_two_servers_share_a_port(sockmod):
    with sockmod.create_server(("127.0.0.1", 0), reuse_port=True) as first:
        assert first.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEPORT) == 1
        with sockmod.create_server(first.getsockname(), reuse_port=True) as second:
            assert second.getsockname() == first.getsockname()


@needs_ipv6
def test_create_server_ipv6_is_v6only(sockmod):
    with sockmod.create_server(("::1", 0), family=sockmod.AF_INET6) as server:
        assert server.family == sockmod.AF_INET6
        assert server.getsockname()[0] == "::1"
        assert server.getsockopt(sockmod.IPPROTO_IPV6, sockmod.IPV6_V6ONLY) == 1


# IPv4 loopback as an IPv6 address: an AF_INET6 socket bound to it serves IPv4 clients of 127.0.0.1.
V4_MAPPED_LOOPBACK = "::ffff:127.0.0.1"


@needs_ipv6
def test_create_server_dualstack_accepts_ipv4_clients(sockmod):
    with sockmod.create_server((V4_MAPPED_LOOPBACK, 0), family=sockmod.AF_INET6, dualstack_ipv6=True) as server:
        assert server.getsockopt(sockmod.IPPROTO_IPV6, sockmod.IPV6_V6ONLY) == 0
        server.settimeout(TIMEOUT)
        with sockmod.create_connection(("127.0.0.1", server.getsockname()[1]), TIMEOUT) as client:
            server_side, address = server.accept()
            with server_side:
                assert address == (V4_MAPPED_LOOPBACK, client.getsockname()[1], 0, 0)
                assert_round_trip(client, server_side)


@needs_ipv6
def test_create_server_without_dualstack_is_ipv6_only(sockmod):
    # IPV6_V6ONLY forbids IPv4-mapped addresses: binding to one fails, naming the address.
    address = (V4_MAPPED_LOOPBACK, 0)
    with pytest.raises(OSError) as excinfo:
        sockmod.create_server(address, family=sockmod.AF_INET6, dualstack_ipv6=False)
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EINVAL)
    assert str(excinfo.value) == f"[Errno 22] Invalid argument (while attempting to bind on address {address!r})"


def test_create_server_dualstack_requires_af_inet6(sockmod):
    with pytest.raises(ValueError, match=r"^dualstack_ipv6 requires AF_INET6 family$"):
        sockmod.create_server(("127.0.0.1", 0), dualstack_ipv6=True)


def test_create_server_bind_failure_names_the_address(sockmod, listener):
    address = listener.getsockname()
    with pytest.raises(OSError) as excinfo:
        sockmod.create_server(address)
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EADDRINUSE)
    assert str(excinfo.value) == f"[Errno 98] Address already in use (while attempting to bind on address {address!r})"


def test_create_server_bind_failure_message_matches_stdlib(sockmod):
    with stdlib_socket.create_server(("127.0.0.1", 0)) as taken:
        address = taken.getsockname()
        expected = outcome(lambda: stdlib_socket.create_server(address))
        assert outcome(lambda: sockmod.create_server(address)) == expected


def test_create_server_bind_failure_keeps_oserror_subclass(sockmod, tmp_path):
    path = str(tmp_path / "missing" / "server.sock")
    with pytest.raises(FileNotFoundError) as excinfo:
        sockmod.create_server(path, family=sockmod.AF_UNIX)
    assert str(excinfo.value) == f"[Errno 2] No such file or directory (while attempting to bind on address {path!r})"


def test_create_server_unknown_host_reports_gaierror_code_in_oserror(sockmod):
    raised = outcome(lambda: sockmod.create_server(("nonexistent.invalid", 0)))
    assert raised == outcome(lambda: stdlib_socket.create_server(("nonexistent.invalid", 0)))
    assert raised[1] is OSError


def test_has_dualstack_ipv6_matches_stdlib(sockmod):
    assert sockmod.has_dualstack_ipv6() is stdlib_socket.has_dualstack_ipv6()


# --- getaddrinfo ----------------------------------------------------------------------------------------------

GETADDRINFO_CALLS = [
    ("127.0.0.1", 80),
    ("127.0.0.1", "80"),
    ("127.0.0.1", b"80"),
    ("127.0.0.1", None),
    ("127.0.0.1", 0),
    ("127.0.0.1", "http"),
    (b"127.0.0.1", 80),
    ("localhost", 80),
    ("localhost", "http", 0, stdlib_socket.SOCK_STREAM),
    (None, 80),
    (None, "http", 0, 0, 0, stdlib_socket.AI_PASSIVE),
    (None, 0, stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM, 0, stdlib_socket.AI_PASSIVE),
    ("::1", 80),
    ("::1", 80, stdlib_socket.AF_INET6, stdlib_socket.SOCK_STREAM, stdlib_socket.IPPROTO_TCP),
    ("127.0.0.1", 80, stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM),
    ("127.0.0.1", 80, 0, 0, stdlib_socket.IPPROTO_UDP),
    ("127.0.0.1", "80", 0, 0, 0, stdlib_socket.AI_NUMERICHOST | stdlib_socket.AI_NUMERICSERV),
    ("127.0.0.1", 80, 0, stdlib_socket.SOCK_STREAM, 0, stdlib_socket.AI_CANONNAME),
    ("localhost", 80, 0, stdlib_socket.SOCK_STREAM, 0, stdlib_socket.AI_CANONNAME),
    ("127.0.0.1", 80, stdlib_socket.AF_INET6, 0, 0, stdlib_socket.AI_V4MAPPED),
    ("fe80::1%lo", 80, stdlib_socket.AF_INET6, stdlib_socket.SOCK_STREAM),
]


@pytest.mark.parametrize("args", GETADDRINFO_CALLS, ids=[repr(args) for args in GETADDRINFO_CALLS])
def test_getaddrinfo_results_equal_stdlib(sockmod, args):
    results = sockmod.getaddrinfo(*args)
    assert results == stdlib_socket.getaddrinfo(*args)
    assert results
    for family, kind, _proto, _canonname, _address in results:
        assert type(family) is stdlib_socket.AddressFamily
        assert type(kind) is stdlib_socket.SocketKind


def test_getaddrinfo_keyword_arguments(sockmod):
    results = sockmod.getaddrinfo(
        host="127.0.0.1", port=53, family=sockmod.AF_INET, type=sockmod.SOCK_DGRAM, proto=0, flags=0
    )
    assert results == [(sockmod.AF_INET, sockmod.SOCK_DGRAM, sockmod.IPPROTO_UDP, "", ("127.0.0.1", 53))]


def test_getaddrinfo_numeric_ipv4(sockmod):
    assert sockmod.getaddrinfo("127.0.0.1", 8080, sockmod.AF_INET, sockmod.SOCK_STREAM) == [
        (stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM, stdlib_socket.IPPROTO_TCP, "", ("127.0.0.1", 8080))
    ]


def test_getaddrinfo_canonname_of_numeric_host_is_the_host(sockmod):
    flags = sockmod.AI_CANONNAME
    [(_, _, _, canonname, _)] = sockmod.getaddrinfo("127.0.0.1", 80, 0, sockmod.SOCK_STREAM, 0, flags)
    assert canonname == "127.0.0.1"


def test_getaddrinfo_passive_wildcard(sockmod):
    results = sockmod.getaddrinfo(None, 80, sockmod.AF_INET, sockmod.SOCK_STREAM, 0, sockmod.AI_PASSIVE)
    assert [address for *_, address in results] == [("0.0.0.0", 80)]


def test_getaddrinfo_ipv6_addresses_are_four_tuples(sockmod):
    results = sockmod.getaddrinfo("::1", 80, sockmod.AF_INET6, sockmod.SOCK_STREAM)
    assert [address for *_, address in results] == [("::1", 80, 0, 0)]


# (arguments, EAI code) for failures the resolver reports without asking the network.
GETADDRINFO_GAIERRORS = [
    (("localhost", 80, 0, 0, 0, stdlib_socket.AI_NUMERICHOST), stdlib_socket.EAI_NONAME),
    (("127.0.0.1", "http", 0, 0, 0, stdlib_socket.AI_NUMERICSERV), stdlib_socket.EAI_NONAME),
    ((None, None), stdlib_socket.EAI_NONAME),
    (("127.0.0.1", "nosuchservice"), stdlib_socket.EAI_SERVICE),
    (("127.0.0.1", -1), stdlib_socket.EAI_SERVICE),
    (("127.0.0.1", 80, 12345), stdlib_socket.EAI_FAMILY),
    (("127.0.0.1", 80, stdlib_socket.AF_UNIX), stdlib_socket.EAI_FAMILY),
    (("127.0.0.1", 80, 0, 12345), stdlib_socket.EAI_SOCKTYPE),
    (("127.0.0.1", 80, stdlib_socket.AF_INET6), stdlib_socket.EAI_ADDRFAMILY),
    (("127.0.0.1", 80, 0, 0, 0, -1), stdlib_socket.EAI_BADFLAGS),
]


@pytest.mark.parametrize("args, code", GETADDRINFO_GAIERRORS, ids=[repr(a) for a, _ in GETADDRINFO_GAIERRORS])
def test_getaddrinfo_failure_raises_gaierror_with_code(sockmod, args, code):
    with pytest.raises(stdlib_socket.gaierror) as excinfo:
        sockmod.getaddrinfo(*args)
    assert excinfo.value.errno == code
    assert str(excinfo.value) == str(outcome(lambda: stdlib_socket.getaddrinfo(*args))[3])


def test_getaddrinfo_unknown_host_raises_gaierror_as_stdlib(sockmod):
    # The resolver may answer slowly or differently here (NXDOMAIN, no network): compare type and errno.
    raised = error_outcome(lambda: sockmod.getaddrinfo("nonexistent.invalid", 80))
    assert raised == error_outcome(lambda: stdlib_socket.getaddrinfo("nonexistent.invalid", 80))
    assert raised[0] is stdlib_socket.gaierror


@pytest.mark.parametrize("port", [1.5, True, False, [80], bytearray(b"80")], ids=repr)
def test_getaddrinfo_bad_port_type_raises_oserror(sockmod, port):
    with pytest.raises(OSError) as excinfo:
        sockmod.getaddrinfo("127.0.0.1", port)
    assert (type(excinfo.value), excinfo.value.args) == (OSError, ("Int or String expected",))


@pytest.mark.parametrize("host", [1, bytearray(b"127.0.0.1"), ("127.0.0.1",)], ids=repr)
def test_getaddrinfo_bad_host_type_raises_type_error(sockmod, host):
    with pytest.raises(TypeError, match=r"^getaddrinfo\(\) argument 1 must be string or None$"):
        sockmod.getaddrinfo(host, 80)


@pytest.mark.parametrize("port", [2**70, -(2**63) - 1], ids=repr)
def test_getaddrinfo_port_too_large_for_c_long(sockmod, port):
    if sys.version_info < (3, 12):  # 3.11 converts the port to a C long first
        with pytest.raises(OverflowError, match=r"^Python int too large to convert to C long$"):
            sockmod.getaddrinfo("127.0.0.1", port)
    else:  # from 3.12 the C library is given the port's decimal text, and refuses it
        with pytest.raises(sockmod.gaierror) as excinfo:
            sockmod.getaddrinfo("127.0.0.1", port)
        assert excinfo.value.errno == sockmod.EAI_SERVICE
        assert outcome(lambda: sockmod.getaddrinfo("127.0.0.1", port)) == outcome(
            lambda: stdlib_socket.getaddrinfo("127.0.0.1", port)
        )


# Names the idna codec refuses, with its complaint from 3.13 on; 3.11 and 3.12 say "label empty or too long".
IDNA_REFUSED = {"a" * 64 + ".example": "label too long", "a..b": "label empty"}


def idna_complaint(name):
    return IDNA_REFUSED[name] if sys.version_info >= (3, 13) else "label empty or too long"


@pytest.mark.parametrize("host", IDNA_REFUSED)
def test_getaddrinfo_host_rejected_by_idna_raises_unicode_error(sockmod, host):
    with pytest.raises(UnicodeError, match=idna_complaint(host)):
        sockmod.getaddrinfo(host, 80)


# --- getnameinfo --------------------------------------------------------------------------------------------


def test_getnameinfo_numeric_ipv4(sockmod):
    flags = sockmod.NI_NUMERICHOST | sockmod.NI_NUMERICSERV
    assert sockmod.getnameinfo(("127.0.0.1", 80), flags) == ("127.0.0.1", "80")


@pytest.mark.parametrize("address", [("::1", 80), ("::1", 80, 0), ("::1", 80, 0, 0)])
def test_getnameinfo_numeric_ipv6_tuples(sockmod, address):
    flags = sockmod.NI_NUMERICHOST | sockmod.NI_NUMERICSERV
    assert sockmod.getnameinfo(address, flags) == ("::1", "80")


@pytest.mark.parametrize(
    "address, flags",
    [
        (("127.0.0.1", 80), 0),
        (("127.0.0.1", 80), stdlib_socket.NI_NUMERICSERV),
        (("::1", 443, 0, 0), 0),
        (("127.0.0.1", 53), stdlib_socket.NI_DGRAM),
        (("192.0.2.1", 80), stdlib_socket.NI_NAMEREQD),
        (("127.0.0.1", 70000), stdlib_socket.NI_NUMERICHOST),
    ],
    ids=repr,
)
def test_getnameinfo_matches_stdlib(sockmod, address, flags):
    result = outcome(lambda: sockmod.getnameinfo(address, flags))
    assert result == outcome(lambda: stdlib_socket.getnameinfo(address, flags))


# (sockaddr, exception type, message) as the stdlib's getnameinfo() reports them.
GETNAMEINFO_BAD_ARGS = [
    (["127.0.0.1", 80], TypeError, "getnameinfo() argument 1 must be a tuple"),
    ("127.0.0.1", TypeError, "getnameinfo() argument 1 must be a tuple"),
    (("127.0.0.1",), TypeError, "getnameinfo(): illegal sockaddr argument"),
    (("::1", 80, 0, 0, 0), TypeError, "getnameinfo(): illegal sockaddr argument"),
    ((1, 80), TypeError, "getnameinfo(): illegal sockaddr argument"),
    ((b"127.0.0.1", 80), TypeError, "getnameinfo(): illegal sockaddr argument"),
    (("127.0.0.1", "80"), TypeError, "'str' object cannot be interpreted as an integer"),
    (("127.0.0.1", 80, 0), OSError, "IPv4 sockaddr must be 2 tuple"),
    (("::1", 80, 0x100000, 0), OverflowError, "getnameinfo(): flowinfo must be 0-1048575."),
    (("127.0.0.1\0", 80), ValueError, "embedded null character"),
    (("127.0.0.1", 2**40), OverflowError, "signed integer is greater than maximum"),
]


@pytest.mark.parametrize(
    "sockaddr, exc_type, message", GETNAMEINFO_BAD_ARGS, ids=[repr(a) for a, *_ in GETNAMEINFO_BAD_ARGS]
)
def test_getnameinfo_bad_sockaddr_raises_stdlib_error(sockmod, sockaddr, exc_type, message):
    with pytest.raises(exc_type) as excinfo:
        sockmod.getnameinfo(sockaddr, 0)
    assert type(excinfo.value) is exc_type
    assert str(excinfo.value) == message


def test_getnameinfo_host_name_is_not_resolved(sockmod):
    with pytest.raises(stdlib_socket.gaierror) as excinfo:
        sockmod.getnameinfo(("localhost", 80), 0)
    assert excinfo.value.errno == stdlib_socket.EAI_NONAME


# Wrong argument counts and keywords: only the exception type is the socket module's to match; the
# wording is the argument parser's (CPython's or pyo3's).
def test_getnameinfo_takes_no_keyword_arguments(sockmod):
    with pytest.raises(TypeError):
        sockmod.getnameinfo(sockaddr=("127.0.0.1", 80), flags=0)


def test_getnameinfo_requires_flags(sockmod):
    with pytest.raises(TypeError, match=r"^getnameinfo\(\) takes exactly 2 arguments \(1 given\)$"):
        sockmod.getnameinfo(("127.0.0.1", 80))


# --- host names ---------------------------------------------------------------------------------------------


def test_gethostname_matches_stdlib_and_uname(sockmod):
    assert sockmod.gethostname() == stdlib_socket.gethostname() == os.uname().nodename


@pytest.mark.parametrize(
    "name, address",
    [
        ("127.0.0.1", "127.0.0.1"),
        (b"127.0.0.1", "127.0.0.1"),
        (bytearray(b"10.1.2.3"), "10.1.2.3"),
        ("", "0.0.0.0"),
        ("<broadcast>", "255.255.255.255"),
        ("255.255.255.255", "255.255.255.255"),
    ],
    ids=repr,
)
def test_gethostbyname_without_lookup(sockmod, name, address):
    assert sockmod.gethostbyname(name) == address


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "::1"])
def test_gethostbyname_matches_stdlib(sockmod, name):
    assert outcome(lambda: sockmod.gethostbyname(name)) == outcome(lambda: stdlib_socket.gethostbyname(name))


def test_gethostbyname_unknown_host_raises_gaierror_as_stdlib(sockmod):
    raised = error_outcome(lambda: sockmod.gethostbyname("nonexistent.invalid"))
    assert raised == error_outcome(lambda: stdlib_socket.gethostbyname("nonexistent.invalid"))
    assert raised[0] is stdlib_socket.gaierror


def test_gethostbyname_localhost_is_ipv4_loopback(sockmod):
    assert sockmod.gethostbyname("localhost").startswith("127.")


def test_gethostbyname_bad_type_raises_type_error(sockmod):
    with pytest.raises(TypeError, match=r"^gethostbyname\(\) argument 1 must be str, bytes or bytearray, not int$"):
        sockmod.gethostbyname(1)


def test_gethostbyname_null_character_raises_stdlib_type_error(sockmod):
    message = r"^gethostbyname\(\) argument 1 must be encoded string without null bytes, not str$"
    with pytest.raises(TypeError, match=message):
        sockmod.gethostbyname("local\0host")


@pytest.mark.parametrize("name", IDNA_REFUSED)
def test_gethostbyname_encodes_name_with_idna(sockmod, name):
    # Like getaddrinfo(), gethostbyname() encodes every str host with the idna codec, which refuses
    # empty labels and labels over 63 characters before any lookup.
    with pytest.raises(UnicodeError, match=idna_complaint(name)):
        sockmod.gethostbyname(name)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_gethostbyname_ex_matches_stdlib(sockmod, name):
    assert outcome(lambda: sockmod.gethostbyname_ex(name)) == outcome(lambda: stdlib_socket.gethostbyname_ex(name))


def test_gethostbyname_ex_unknown_host_raises_gaierror_as_stdlib(sockmod):
    raised = error_outcome(lambda: sockmod.gethostbyname_ex("nonexistent.invalid"))
    assert raised == error_outcome(lambda: stdlib_socket.gethostbyname_ex("nonexistent.invalid"))
    assert raised[0] is stdlib_socket.gaierror


def test_gethostbyname_ex_numeric_address(sockmod):
    assert sockmod.gethostbyname_ex("127.0.0.1") == ("127.0.0.1", [], ["127.0.0.1"])


def test_gethostbyname_ex_failure_after_address_check_is_herror(sockmod):
    # "<broadcast>" passes the address check but no host has that name. (The herror's errno comes from
    # the stdlib's thread-local h_errno, which earlier lookups may have left set: only the type is fixed.)
    with pytest.raises(stdlib_socket.herror):
        sockmod.gethostbyname_ex("<broadcast>")


@pytest.mark.parametrize("address", ["127.0.0.1", b"127.0.0.1", "::1", "localhost", "192.0.2.1", "<broadcast>"])
def test_gethostbyaddr_matches_stdlib(sockmod, address):
    assert outcome(lambda: sockmod.gethostbyaddr(address)) == outcome(lambda: stdlib_socket.gethostbyaddr(address))


def test_gethostbyaddr_loopback_lists_its_address(sockmod):
    name, aliases, addresses = sockmod.gethostbyaddr("127.0.0.1")
    assert isinstance(name, str) and name
    assert isinstance(aliases, list)
    assert addresses == ["127.0.0.1"]


def test_gethostbyaddr_empty_name_matches_stdlib(sockmod):
    # "" is the wildcard address; the stdlib resolves it for AF_UNSPEC and refuses when that gives both
    # 0.0.0.0 and ::.
    assert outcome(lambda: sockmod.gethostbyaddr("")) == outcome(lambda: stdlib_socket.gethostbyaddr(""))


def test_gethostbyaddr_bad_type_raises_type_error(sockmod):
    with pytest.raises(TypeError, match=r"^gethostbyaddr\(\) argument 1 must be str, bytes or bytearray, not int$"):
        sockmod.gethostbyaddr(1)


@pytest.mark.parametrize("name", ["", "127.0.0.1", "localhost", "  localhost  ", "0.0.0.0", "::", "192.0.2.1"])
def test_getfqdn_matches_stdlib(sockmod, name):
    assert sockmod.getfqdn(name) == stdlib_socket.getfqdn(name)


def test_getfqdn_without_argument_matches_stdlib(sockmod):
    assert sockmod.getfqdn() == stdlib_socket.getfqdn()


def test_getfqdn_returns_unresolvable_name_unchanged(sockmod):
    assert sockmod.getfqdn(" nonexistent.invalid ") == "nonexistent.invalid"


# --- services, protocols, byte order, address conversion ----------------------------------------------------


@pytest.mark.parametrize("args", [("http",), ("http", "tcp"), ("domain", "udp"), ("nosuchservice",)], ids=repr)
def test_getservbyname_matches_stdlib(sockmod, args):
    assert outcome(lambda: sockmod.getservbyname(*args)) == outcome(lambda: stdlib_socket.getservbyname(*args))


@pytest.mark.parametrize("args", [(80,), (443, "tcp"), (53, "udp"), (70000,), (-1,)], ids=repr)
def test_getservbyport_matches_stdlib(sockmod, args):
    assert outcome(lambda: sockmod.getservbyport(*args)) == outcome(lambda: stdlib_socket.getservbyport(*args))


def test_getservbyname_unknown_service_raises_oserror(sockmod):
    with pytest.raises(OSError) as excinfo:
        sockmod.getservbyname("nosuchservice", "tcp")
    assert (type(excinfo.value), excinfo.value.args) == (OSError, ("service/proto not found",))


def test_getprotobyname(sockmod):
    assert sockmod.getprotobyname("tcp") == stdlib_socket.IPPROTO_TCP
    assert sockmod.getprotobyname("udp") == stdlib_socket.IPPROTO_UDP
    with pytest.raises(OSError, match=r"^protocol not found$"):
        sockmod.getprotobyname("nosuchprotocol")


def test_inet_aton_and_ntoa(sockmod):
    assert sockmod.inet_aton("127.0.0.1") == b"\x7f\0\0\1"
    assert sockmod.inet_aton("1") == b"\0\0\0\1"
    assert sockmod.inet_ntoa(b"\xc0\xa8\x00\x01") == "192.168.0.1"
    with pytest.raises(OSError, match=r"^illegal IP address string passed to inet_aton$"):
        sockmod.inet_aton("not an address")
    with pytest.raises(OSError, match=r"^packed IP wrong length for inet_ntoa$"):
        sockmod.inet_ntoa(b"abc")


def test_inet_pton_and_ntop(sockmod):
    assert sockmod.inet_pton(sockmod.AF_INET, "10.0.0.1") == b"\n\0\0\1"
    assert sockmod.inet_pton(sockmod.AF_INET6, "::1") == bytes(15) + b"\1"
    assert sockmod.inet_ntop(sockmod.AF_INET6, bytes(15) + b"\1") == "::1"
    assert sockmod.inet_ntop(sockmod.AF_INET, b"\x7f\0\0\1") == "127.0.0.1"
    with pytest.raises(OSError, match=r"^illegal IP address string passed to inet_pton$"):
        sockmod.inet_pton(sockmod.AF_INET, "1")
    with pytest.raises(ValueError, match=r"^invalid length of packed IP address string$"):
        sockmod.inet_ntop(sockmod.AF_INET6, b"abc")
    with pytest.raises(OSError) as excinfo:
        sockmod.inet_pton(99, "1")
    assert excinfo.value.errno == errno.EAFNOSUPPORT


def test_byte_order_helpers(sockmod):
    assert (sockmod.htons(1), sockmod.ntohs(256)) == (256, 1)
    assert (sockmod.htonl(1), sockmod.ntohl(16777216)) == (16777216, 1)
    with pytest.raises(OverflowError, match=r"^htons: Python int too large to convert to C 16-bit unsigned integer$"):
        sockmod.htons(2**16)
    with pytest.raises(OverflowError, match=r"^htons: can't convert negative Python int"):
        sockmod.htons(-1)
    with pytest.raises(OverflowError, match=r"^int larger than 32 bits$"):
        sockmod.htonl(2**32)


# --- default timeout ----------------------------------------------------------------------------------------


def test_default_timeout_is_none(sockmod):
    assert sockmod.getdefaulttimeout() is None


@pytest.mark.usefixtures("restore_default_timeout")
@pytest.mark.parametrize(
    "value, expected, blocking_fd",
    [(1.5, 1.5, False), (2, 2.0, False), (0, 0.0, False), (None, None, True), (1e-10, 1e-09, False)],
)
def test_setdefaulttimeout_applies_to_new_sockets(sockmod, value, expected, blocking_fd):
    sockmod.setdefaulttimeout(value)
    assert sockmod.getdefaulttimeout() == expected
    with sockmod.socket() as sock:
        assert sock.gettimeout() == expected
        assert sock.getblocking() is (expected != 0)
        assert os.get_blocking(sock.fileno()) is blocking_fd


@pytest.mark.usefixtures("restore_default_timeout")
def test_setdefaulttimeout_applies_to_accepted_and_paired_sockets(sockmod):
    sockmod.setdefaulttimeout(2.0)
    with sockmod.create_server(("127.0.0.1", 0)) as server:
        with sockmod.create_connection(server.getsockname()) as client:
            server_side, _ = server.accept()
            with server_side:
                assert (client.gettimeout(), server_side.gettimeout()) == (2.0, 2.0)
    first, second = sockmod.socketpair()
    with first, second:
        assert (first.gettimeout(), second.gettimeout()) == (2.0, 2.0)


@pytest.mark.usefixtures("restore_default_timeout")
def test_the_default_timeout_is_one_setting_with_the_stdlib_s(sockmod):
    """`import rsock as socket; socket.setdefaulttimeout(0.5)` reaches the sockets that libraries on the stdlib's
    socket module make (http.client, smtplib), as the stdlib's own call does, and the other way round: rsock kept a
    setting of its own, so a program's requests through http.client could wait for ever."""
    import http.client

    import rsock

    other = rsock if sockmod is stdlib_socket else stdlib_socket
    sockmod.setdefaulttimeout(0.25)
    assert other.getdefaulttimeout() == 0.25
    with other.socket() as sock:
        assert sock.gettimeout() == 0.25
    with stdlib_socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (in its backlog), never answers
        connection = http.client.HTTPConnection(*silent.getsockname())
        try:
            with pytest.raises(TimeoutError):
                connection.request("GET", "/")
                connection.getresponse()
        finally:
            connection.close()
    sockmod.setdefaulttimeout(None)
    assert other.getdefaulttimeout() is None


PYTIME_T = "PyTime_t" if sys.version_info >= (3, 13) else "_PyTime_t"  # 3.13 made CPython's time type public


@pytest.mark.usefixtures("restore_default_timeout")
@pytest.mark.parametrize(
    "value, exc_type, message",
    [
        (-1, ValueError, "Timeout value out of range"),
        (-0.5, ValueError, "Timeout value out of range"),
        (float("nan"), ValueError, "Invalid value NaN (not a number)"),
        ("1", TypeError, "'str' object cannot be interpreted as an integer"),
        (2**100, OverflowError, f"timestamp too large to convert to C {PYTIME_T}"),
        (1e300, OverflowError, "timestamp out of range for platform time_t"),
    ],
    ids=repr,
)
def test_setdefaulttimeout_rejects_bad_values(sockmod, value, exc_type, message):
    with pytest.raises(exc_type) as excinfo:
        sockmod.setdefaulttimeout(value)
    assert str(excinfo.value) == message
    assert sockmod.getdefaulttimeout() is None


@pytest.mark.usefixtures("restore_default_timeout")
def test_setdefaulttimeout_takes_no_keyword_arguments(sockmod):
    with pytest.raises(TypeError):
        sockmod.setdefaulttimeout(timeout=None)


# --- fromfd, socketpair, dup, close -------------------------------------------------------------------------


def test_fromfd_duplicates_descriptor(sockmod, listener):
    with sockmod.fromfd(listener.fileno(), int(sockmod.AF_INET), int(sockmod.SOCK_STREAM)) as copy:
        assert copy.fileno() != listener.fileno()
        assert (copy.family, copy.type, copy.proto) == (sockmod.AF_INET, sockmod.SOCK_STREAM, 0)
        assert (type(copy.family), type(copy.type)) == (stdlib_socket.AddressFamily, stdlib_socket.SocketKind)
        assert copy.getsockname() == listener.getsockname()
        assert copy.get_inheritable() is False
        copy.settimeout(TIMEOUT)
        with sockmod.create_connection(listener.getsockname(), TIMEOUT) as client:
            server_side, _ = copy.accept()
            with server_side:
                assert_round_trip(client, server_side)
    # Closing the copy leaves the original open.
    assert listener.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_ACCEPTCONN) == 1


def test_fromfd_bad_descriptor_raises_ebadf(sockmod):
    with pytest.raises(OSError) as excinfo:
        sockmod.fromfd(-1, sockmod.AF_INET, sockmod.SOCK_STREAM)
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EBADF)


def test_socketpair_defaults_to_connected_unix_stream_pair(sockmod):
    first, second = sockmod.socketpair()
    with first, second:
        for sock in (first, second):
            assert (sock.family, sock.type, sock.proto) == (sockmod.AF_UNIX, sockmod.SOCK_STREAM, 0)
            assert sock.gettimeout() is None
        assert_round_trip(first, second)


def test_socketpair_family_none_means_af_unix(sockmod):
    first, second = sockmod.socketpair(None)
    with first, second:
        assert first.family == second.family == sockmod.AF_UNIX
        assert_round_trip(first, second)


def test_socketpair_datagram(sockmod):
    first, second = sockmod.socketpair(sockmod.AF_UNIX, sockmod.SOCK_DGRAM)
    with first, second:
        assert first.type == sockmod.SOCK_DGRAM
        first.send(b"one")
        first.send(b"two")
        assert second.recvfrom(100) == (b"one", None)
        assert second.recv(100) == b"two"


def test_socketpair_nonblocking(sockmod):
    first, second = sockmod.socketpair(sockmod.AF_UNIX, sockmod.SOCK_STREAM | sockmod.SOCK_NONBLOCK)
    with first, second:
        for sock in (first, second):
            assert sock.type == sockmod.SOCK_STREAM
            assert (sock.gettimeout(), sock.getblocking(), os.get_blocking(sock.fileno())) == (0.0, False, False)
        with pytest.raises(BlockingIOError) as excinfo:
            first.recv(10)
        assert excinfo.value.errno == errno.EAGAIN


def test_socketpair_af_inet_raises_eopnotsupp(sockmod):
    with pytest.raises(OSError) as excinfo:
        sockmod.socketpair(sockmod.AF_INET)
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EOPNOTSUPP)


def test_dup_returns_non_inheritable_copy_and_close_closes_it(sockmod):
    with sockmod.socket() as sock:
        fd = sockmod.dup(sock.fileno())
        assert fd != sock.fileno()
        assert os.get_inheritable(fd) is False
        sockmod.close(fd)
        with pytest.raises(OSError) as excinfo:
            os.fstat(fd)
        assert excinfo.value.errno == errno.EBADF
        assert sock.fileno() >= 0


@pytest.mark.parametrize("function", ["dup", "close"])
def test_dup_and_close_bad_descriptor_raise_ebadf(sockmod, function):
    with pytest.raises(OSError) as excinfo:
        getattr(sockmod, function)(-1)
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EBADF)


# Calls with a str where an int argument belongs.
BAD_INT_ARGUMENTS = {
    "dup(fd)": lambda mod: mod.dup("3"),
    "close(fd)": lambda mod: mod.close("3"),
    "fromfd(fd)": lambda mod: mod.fromfd("3", mod.AF_INET, mod.SOCK_STREAM),
    "socketpair(family)": lambda mod: mod.socketpair("x"),
    "socketpair(type)": lambda mod: mod.socketpair(mod.AF_UNIX, "x"),
    "getaddrinfo(family)": lambda mod: mod.getaddrinfo("127.0.0.1", 80, "x"),
    "getaddrinfo(flags)": lambda mod: mod.getaddrinfo("127.0.0.1", 80, 0, 0, 0, "x"),
    "getnameinfo(flags)": lambda mod: mod.getnameinfo(("127.0.0.1", 80), "0"),
}


@pytest.mark.parametrize("call", BAD_INT_ARGUMENTS.values(), ids=BAD_INT_ARGUMENTS.keys())
def test_non_int_argument_raises_plain_type_error(sockmod, call):
    # The stdlib's TypeError carries just the message: no __notes__ added to what a traceback shows.
    with pytest.raises(TypeError) as excinfo:
        call(sockmod)
    assert excinfo.value.args == ("'str' object cannot be interpreted as an integer",)
    assert getattr(excinfo.value, "__notes__", None) is None


class StrWithItsOwnEncode(str):
    """A str subclass whose encode() returns something else: CPython's C code encodes the str itself."""

    def encode(self, *args, **kwargs):
        return "not bytes"


@pytest.mark.parametrize(
    "call",
    [
        lambda mod: mod.getaddrinfo(StrWithItsOwnEncode("127.0.0.1"), 80),
        lambda mod: mod.gethostbyname(StrWithItsOwnEncode("127.0.0.1")),
        lambda mod: mod.gethostbyname_ex(StrWithItsOwnEncode("127.0.0.1")),
    ],
    ids=["getaddrinfo", "gethostbyname", "gethostbyname_ex"],
)
def test_a_str_subclass_host_is_encoded_as_the_str_it_is(sockmod, call):
    assert outcome(lambda: call(sockmod)) == outcome(lambda: call(stdlib_socket))


def test_getnameinfo_host_with_a_lone_surrogate_raises_unicode_encode_error(sockmod):
    def call(mod):
        return mod.getnameinfo(("\udcff", 80), 0)

    assert outcome(lambda: call(sockmod)) == outcome(lambda: call(stdlib_socket))
    assert outcome(lambda: call(sockmod))[1] is UnicodeEncodeError
