"""Datagram sockets (UDP over IPv4 and IPv6 loopback, AF_UNIX SOCK_DGRAM), over the stdlib's `socket`
module and over `rsock`: every result, exception type, errno and user-visible message is the stdlib's."""

import collections
import contextlib
import errno
import pathlib
import resource
import socket as stdlib_socket
import subprocess
import sys

import pytest

import rsock
from tests.loopback import ipv6_loopback_available
from tests.socket_reads import assert_nothing_waiting

# Every blocking call in this file has a deadline, so a missing datagram fails a test instead of hanging it.
TIMEOUT = 5.0

# The largest UDP payloads: 65535 minus the IPv4 (20) and UDP (8) headers; for IPv6 the payload length
# field (65535) covers the UDP header only.
MAX_UDP_IPV4 = 65507
MAX_UDP_IPV6 = 65527


class Datagrams:
    """Makes datagram sockets of one family with the module under test; all are closed at teardown."""

    def __init__(self, mod, family_name, directory, stack):
        """`directory` holds AF_UNIX socket files (unused for IP families)."""
        self.mod = mod
        self.family = getattr(mod, family_name)
        self._directory = directory
        self._stack = stack
        self._count = 0

    def unbound(self):
        sock = self._stack.enter_context(self.mod.socket(self.family, self.mod.SOCK_DGRAM))
        sock.settimeout(TIMEOUT)
        return sock

    def bound(self):
        sock = self.unbound()
        sock.bind(self.fresh_address())
        return sock

    def fresh_address(self):
        """An address to bind to: port 0 on loopback, or a new path in the test's directory."""
        if self.family == self.mod.AF_INET:
            return ("127.0.0.1", 0)
        if self.family == self.mod.AF_INET6:
            return ("::1", 0)
        self._count += 1
        return str(self._directory / f"s{self._count}")


@pytest.fixture(params=["AF_INET", "AF_INET6", "AF_UNIX"])
def dgram(request, sockmod, tmp_path):
    """Datagram sockets over each family, from the module under test."""
    if request.param == "AF_INET6" and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    with contextlib.ExitStack() as stack:
        yield Datagrams(sockmod, request.param, tmp_path, stack)


@pytest.fixture
def udp4(sockmod):
    """UDP/IPv4 sockets from the module under test."""
    with contextlib.ExitStack() as stack:
        yield Datagrams(sockmod, "AF_INET", None, stack)


@pytest.fixture
def udp6(sockmod):
    """UDP/IPv6 sockets from the module under test (skipped without an IPv6 loopback)."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    with contextlib.ExitStack() as stack:
        yield Datagrams(sockmod, "AF_INET6", None, stack)


def closed_udp_port(sockmod):
    """A loopback UDP port nothing listens on (it was bound a moment ago and released)."""
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- sendto / recvfrom ------------------------------------------------------------------------------------


def test_sendto_without_flags_returns_count_and_delivers_sender_address(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    assert sender.sendto(b"ping", receiver.getsockname()) == 4
    assert receiver.recvfrom(1024) == (b"ping", sender.getsockname())


def test_sendto_with_flags_argument_delivers_datagram(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    assert sender.sendto(b"flags", 0, receiver.getsockname()) == 5
    assert sender.sendto(b"dontwait", dgram.mod.MSG_DONTWAIT, receiver.getsockname()) == 8
    assert receiver.recvfrom(1024) == (b"flags", sender.getsockname())
    assert receiver.recvfrom(1024) == (b"dontwait", sender.getsockname())


def test_sendto_accepts_any_bytes_like_object(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    assert sender.sendto(bytearray(b"ab"), receiver.getsockname()) == 2
    assert sender.sendto(memoryview(b"xcdx")[1:3], receiver.getsockname()) == 2
    assert receiver.recv(10) == b"ab"
    assert receiver.recv(10) == b"cd"


def test_sendto_from_unbound_socket_binds_it_implicitly(udp4):
    sender, receiver = udp4.unbound(), udp4.bound()
    assert sender.getsockname() == ("0.0.0.0", 0)
    sender.sendto(b"x", receiver.getsockname())
    host, port = sender.getsockname()
    assert host == "0.0.0.0"
    assert port != 0
    assert receiver.recvfrom(10) == (b"x", ("127.0.0.1", port))


def test_unbound_unix_sender_arrives_without_address(sockmod, tmp_path):
    with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as sender:
        with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as receiver:
            receiver.bind(str(tmp_path / "receiver"))
            receiver.settimeout(TIMEOUT)
            sender.sendto(b"anonymous", receiver.getsockname())
            assert receiver.recvfrom(100) == (b"anonymous", None)


def test_abstract_unix_address_round_trips_as_bytes(sockmod):
    name = f"\0rsock-test-{id(sockmod)}".encode()
    with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as sender:
        with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as receiver:
            receiver.bind(name)
            receiver.settimeout(TIMEOUT)
            sender.bind(name + b"-sender")
            sender.sendto(b"abstract", name)
            assert receiver.getsockname() == name
            assert receiver.recvfrom(100) == (b"abstract", name + b"-sender")


def test_sendto_takes_two_or_three_arguments(udp4):
    sock = udp4.unbound()
    with pytest.raises(TypeError, match=r"^sendto\(\) takes 2 or 3 arguments \(1 given\)$"):
        sock.sendto(b"x")
    with pytest.raises(TypeError, match=r"^sendto\(\) takes 2 or 3 arguments \(4 given\)$"):
        sock.sendto(b"x", 0, ("127.0.0.1", 9), 0)


def test_sendto_flags_must_be_an_int(udp4):
    sock = udp4.unbound()
    with pytest.raises(TypeError, match=r"^'str' object cannot be interpreted as an integer$"):
        sock.sendto(b"x", "0", ("127.0.0.1", 9))


def test_sendto_rejects_str_data(udp4):
    sock = udp4.unbound()
    with pytest.raises(TypeError, match=r"^a bytes-like object is required, not 'str'$"):
        sock.sendto("text", ("127.0.0.1", 9))


def test_type_errors_name_a_c_type_with_its_module(udp4):
    """CPython's messages print a type's tp_name: module-qualified for a type defined in C."""
    sock = udp4.unbound()
    with pytest.raises(TypeError, match=r"^a bytes-like object is required, not 'collections\.OrderedDict'$"):
        sock.sendto(collections.OrderedDict(), ("127.0.0.1", 9))
    with pytest.raises(TypeError, match=r"^sendto\(\): AF_INET address must be tuple, not collections\.OrderedDict$"):
        sock.sendto(b"x", collections.OrderedDict())


def test_sendto_checks_data_before_flags(udp4):
    # The stdlib parses its arguments left to right: the data error wins over the flags error.
    sock = udp4.unbound()
    with pytest.raises(TypeError, match=r"^a bytes-like object is required, not 'str'$"):
        sock.sendto("text", "0", ("127.0.0.1", 9))


def test_sendto_rejects_unsupported_flags_with_eopnotsupp(udp4):
    sender, receiver = udp4.unbound(), udp4.bound()
    with pytest.raises(OSError) as excinfo:
        sender.sendto(b"x", udp4.mod.MSG_OOB, receiver.getsockname())
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EOPNOTSUPP)


def test_recvfrom_negative_bufsize_is_a_value_error(udp4):
    with pytest.raises(ValueError, match=r"^negative buffersize in recvfrom$"):
        udp4.bound().recvfrom(-1)


# Calls with an int argument out of its C type's range, and the stdlib's OverflowError message.
OUT_OF_RANGE_ARGUMENTS = {
    "recvfrom(bufsize)": (lambda sock: sock.recvfrom(2**63), "Python int too large to convert to C ssize_t"),
    "recvfrom(flags)": (lambda sock: sock.recvfrom(1, 2**40), "signed integer is greater than maximum"),
    "recvfrom_into(nbytes)": (
        lambda sock: sock.recvfrom_into(bytearray(1), 2**63),
        "Python int too large to convert to C ssize_t",
    ),
    "sendto(flags)": (
        lambda sock: sock.sendto(b"x", 2**40, ("127.0.0.1", 9)),
        "signed integer is greater than maximum",
    ),
}


@pytest.mark.parametrize("call, message", OUT_OF_RANGE_ARGUMENTS.values(), ids=OUT_OF_RANGE_ARGUMENTS.keys())
def test_out_of_range_int_argument_raises_stdlib_overflow_error(udp4, call, message):
    with pytest.raises(OverflowError) as excinfo:
        call(udp4.bound())
    assert str(excinfo.value) == message


def test_sendto_and_recvfrom_on_closed_socket_raise_ebadf(udp4):
    sock = udp4.unbound()
    sock.close()
    for call in (lambda: sock.sendto(b"x", ("127.0.0.1", 9)), lambda: sock.recvfrom(1)):
        with pytest.raises(OSError) as excinfo:
            call()
        assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EBADF)


# --- recvfrom_into ------------------------------------------------------------------------------------------


def test_recvfrom_into_fills_buffer_and_returns_count_and_address(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    sender.sendto(b"hello", receiver.getsockname())
    buffer = bytearray(10)
    assert receiver.recvfrom_into(buffer) == (5, sender.getsockname())
    assert buffer == b"hello" + bytes(5)


def test_recvfrom_into_with_nbytes_writes_at_most_nbytes(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"abcdef", receiver.getsockname())
    buffer = bytearray(b"." * 10)
    assert receiver.recvfrom_into(buffer, 3) == (3, sender.getsockname())
    assert buffer == b"abc......."


def test_recvfrom_into_keyword_arguments(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"abcdef", receiver.getsockname())
    buffer = bytearray(10)
    assert receiver.recvfrom_into(buffer=buffer, nbytes=4, flags=0) == (4, sender.getsockname())
    assert buffer[:4] == b"abcd"


def test_recvfrom_into_too_small_buffer_truncates_and_discards_rest(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    sender.sendto(b"0123456789", receiver.getsockname())
    sender.sendto(b"next", receiver.getsockname())
    buffer = bytearray(4)
    assert receiver.recvfrom_into(buffer) == (4, sender.getsockname())
    assert buffer == b"0123"
    assert receiver.recvfrom(100) == (b"next", sender.getsockname())


def test_recvfrom_into_nbytes_larger_than_buffer_is_a_value_error(udp4):
    with pytest.raises(ValueError, match=r"^nbytes is greater than the length of the buffer$"):
        udp4.bound().recvfrom_into(bytearray(3), 4)


def test_recvfrom_into_negative_nbytes_is_a_value_error(udp4):
    with pytest.raises(ValueError, match=r"^negative buffersize in recvfrom_into$"):
        udp4.bound().recvfrom_into(bytearray(3), -1)


@pytest.mark.parametrize("method", ["recvfrom_into", "recv_into"])
def test_read_only_buffer_is_a_type_error(udp4, method):
    with pytest.raises(TypeError) as excinfo:
        getattr(udp4.bound(), method)(b"read-only")
    assert str(excinfo.value) == f"{method}() argument 1 must be read-write bytes-like object, not bytes"


def test_recvfrom_into_checks_buffer_before_nbytes(udp4):
    # The buffer argument is converted first, so a read-only buffer is reported even with a bad nbytes.
    with pytest.raises(
        TypeError, match=r"^recvfrom_into\(\) argument 1 must be read-write bytes-like object, not bytes$"
    ):
        udp4.bound().recvfrom_into(b"read-only", -1)


# --- truncation, MSG_PEEK, sizes ------------------------------------------------------------------------------


def test_recv_truncates_datagram_silently(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    sender.sendto(b"0123456789", receiver.getsockname())
    sender.sendto(b"second", receiver.getsockname())
    assert receiver.recv(4) == b"0123"
    assert receiver.recv(100) == b"second"


def test_recvfrom_truncates_datagram_silently(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    sender.sendto(b"0123456789", receiver.getsockname())
    assert receiver.recvfrom(3) == (b"012", sender.getsockname())


def test_recv_into_with_msg_trunc_reports_full_datagram_length(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"0123456789", receiver.getsockname())
    buffer = bytearray(4)
    assert receiver.recv_into(buffer, 2, udp4.mod.MSG_TRUNC) == 10
    assert buffer == b"01\0\0"


# Past both sizes of a result's storage: the inline 256 bytes and a separately allocated buffer.
@pytest.mark.parametrize("bufsize", [16, 300])
def test_recvmsg_with_msg_trunc_returns_at_most_bufsize(udp4, bufsize):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"A" * 5000, receiver.getsockname())
    data, ancdata, flags, _ = receiver.recvmsg(bufsize, 0, udp4.mod.MSG_TRUNC)
    assert (data, ancdata, flags & udp4.mod.MSG_TRUNC) == (b"A" * bufsize, [], udp4.mod.MSG_TRUNC)


@pytest.mark.parametrize("bufsize", [0, 16, 300])
@pytest.mark.parametrize("method", ["recv", "recvfrom"])
def test_recv_with_msg_trunc_returns_bytes_of_the_full_datagram_length(udp4, method, bufsize):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"A" * 5000, receiver.getsockname())
    data = getattr(receiver, method)(bufsize, udp4.mod.MSG_TRUNC)
    if method == "recvfrom":
        data, address = data
        assert address == sender.getsockname()
    # recv(0) reads nothing; otherwise the result has the datagram's length, the part past bufsize
    # unspecified (CPython's is whatever memory its grown buffer held).
    expected_length = 0 if (method, bufsize) == ("recv", 0) else 5000
    assert (len(data), data[:bufsize]) == (expected_length, b"A" * min(bufsize, expected_length))
    if udp4.mod is rsock:
        # rsock's never shows memory it did not receive.
        assert data[bufsize:] == bytes(len(data[bufsize:]))


# In a fresh interpreter, where the storage a receive gets has held other objects before (in a long test run it
# may happen to be zero).
_PEEK_PAST_AN_OFFSET = """
import sys
mod = __import__(sys.argv[1])
receiver, sender = mod.socket(mod.AF_INET, mod.SOCK_DGRAM), mod.socket(mod.AF_INET, mod.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
sender.sendto(bytes(range(100)), receiver.getsockname())
receiver.settimeout(5.0)
receiver.setsockopt(mod.SOL_SOCKET, 42, 60)  # SO_PEEK_OFF (the module has the name from 3.14)
flags = mod.MSG_PEEK | mod.MSG_TRUNC
result = {"recv": lambda: receiver.recv(50, flags), "recvfrom": lambda: receiver.recvfrom(50, flags)[0],
          "recvmsg": lambda: receiver.recvmsg(50, 0, flags)[0]}[sys.argv[2]]()
print(result.hex())
"""


@pytest.mark.parametrize("method", ["recv", "recvfrom", "recvmsg"])
def test_msg_trunc_past_a_peek_offset_shows_no_memory_that_was_not_received(sockmod, method):
    """With SO_PEEK_OFF, a peek under MSG_TRUNC writes the datagram from the offset but reports its full length:
    the bytes past what was written held whatever the fresh buffer held (a heap pointer), in rsock's result as in
    the stdlib's."""
    name = "rsock" if sockmod is rsock else "socket"
    run = subprocess.run(
        [sys.executable, "-c", _PEEK_PAST_AN_OFFSET, name, method], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    data = bytes.fromhex(run.stdout)
    assert (len(data), data[:40]) == ((50 if method == "recvmsg" else 100), bytes(range(60, 100)))
    if sockmod is rsock:
        assert data[40:] == bytes(len(data) - 40)


@pytest.mark.parametrize("method", ["recv", "recvfrom"])
def test_recv_with_msg_trunc_and_a_huge_bufsize_takes_only_the_datagram(udp4, method):
    """A buffer of 8 GiB asked for is never touched beyond the datagram (it used to be zeroed whole under
    MSG_TRUNC: seconds of work and gigabytes of memory)."""
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"small", receiver.getsockname())
    receiver.settimeout(TIMEOUT)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    data = getattr(receiver, method)(8 << 30, udp4.mod.MSG_TRUNC)
    assert (data[0] if method == "recvfrom" else data) == b"small"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 1 << 20


@pytest.mark.parametrize(
    "call",
    [
        lambda s, flags: s.recvfrom_into(bytearray(16), 0, flags)[0],
        lambda s, flags: s.recvmsg_into([bytearray(16)], 0, flags)[0],
    ],
)
def test_receiving_into_a_buffer_with_msg_trunc_reports_full_datagram_length(udp4, call):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"A" * 5000, receiver.getsockname())
    assert call(receiver, udp4.mod.MSG_TRUNC) == 5000


def test_msg_peek_leaves_datagram_queued(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    sender.sendto(b"peekaboo", receiver.getsockname())
    peek = dgram.mod.MSG_PEEK
    assert receiver.recvfrom(4, peek) == (b"peek", sender.getsockname())
    assert receiver.recv(100, peek) == b"peekaboo"
    assert receiver.recvfrom_into(bytearray(100), 0, peek) == (8, sender.getsockname())
    assert receiver.recvfrom(100) == (b"peekaboo", sender.getsockname())
    assert_nothing_waiting(receiver)


def test_zero_length_datagram_is_delivered(dgram):
    sender, receiver = dgram.bound(), dgram.bound()
    assert sender.sendto(b"", receiver.getsockname()) == 0
    assert receiver.recvfrom(100) == (b"", sender.getsockname())
    assert_nothing_waiting(receiver)


def test_zero_length_datagram_into_buffer_returns_zero(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    sender.sendto(b"", receiver.getsockname())
    assert receiver.recvfrom_into(bytearray(4)) == (0, sender.getsockname())


def test_largest_ipv4_datagram_round_trips(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    payload = bytes(range(256)) * (MAX_UDP_IPV4 // 256) + b"z" * (MAX_UDP_IPV4 % 256)
    assert sender.sendto(payload, receiver.getsockname()) == MAX_UDP_IPV4
    assert receiver.recvfrom(MAX_UDP_IPV4 + 100) == (payload, sender.getsockname())


def test_largest_ipv6_datagram_round_trips(udp6):
    sender, receiver = udp6.bound(), udp6.bound()
    payload = b"6" * MAX_UDP_IPV6
    assert sender.sendto(payload, receiver.getsockname()) == MAX_UDP_IPV6
    assert receiver.recvfrom(MAX_UDP_IPV6 + 100) == (payload, sender.getsockname())


def assert_emsgsize(sockets, size):
    sender, receiver = sockets.bound(), sockets.bound()
    with pytest.raises(OSError) as excinfo:
        sender.sendto(b"x" * size, receiver.getsockname())
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EMSGSIZE)
    assert str(excinfo.value) == f"[Errno {errno.EMSGSIZE}] Message too long"


def test_oversized_ipv4_datagram_raises_emsgsize(udp4):
    assert_emsgsize(udp4, MAX_UDP_IPV4 + 1)


def test_oversized_ipv6_datagram_raises_emsgsize(udp6):
    assert_emsgsize(udp6, MAX_UDP_IPV6 + 1)


# --- timeouts and non-blocking ------------------------------------------------------------------------------


def test_recvfrom_with_timeout_raises_timeout_error(dgram):
    sock = dgram.bound()
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError) as excinfo:
        sock.recvfrom(100)
    assert (type(excinfo.value), excinfo.value.args, excinfo.value.errno) == (TimeoutError, ("timed out",), None)
    assert sock.gettimeout() == 0.05


def test_recvfrom_into_with_timeout_raises_timeout_error(udp4):
    sock = udp4.bound()
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError, match=r"^timed out$"):
        sock.recvfrom_into(bytearray(10))


def test_datagram_arriving_after_timeout_is_still_received(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    receiver.settimeout(0.05)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(100)
    receiver.settimeout(TIMEOUT)
    sender.sendto(b"late", receiver.getsockname())
    assert receiver.recvfrom(100) == (b"late", sender.getsockname())


def test_recvfrom_nonblocking_raises_blocking_io_error(dgram):
    sock = dgram.bound()
    sock.setblocking(False)
    for call in (lambda: sock.recvfrom(100), lambda: sock.recvfrom_into(bytearray(10)), lambda: sock.recv(10)):
        with pytest.raises(BlockingIOError) as excinfo:
            call()
        assert excinfo.value.errno == errno.EAGAIN
        assert str(excinfo.value) == "[Errno 11] Resource temporarily unavailable"


def test_msg_dontwait_on_blocking_socket_raises_blocking_io_error(udp4):
    sock = udp4.bound()
    sock.setblocking(True)  # with a timeout the call would first wait for data, whatever the flags
    with pytest.raises(BlockingIOError) as excinfo:
        sock.recvfrom(100, udp4.mod.MSG_DONTWAIT)
    assert excinfo.value.errno == errno.EAGAIN


def test_recvfrom_on_unbound_socket_waits_and_times_out(udp4):
    sock = udp4.unbound()
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError, match=r"^timed out$"):
        sock.recvfrom(100)
    assert sock.getsockname() == ("0.0.0.0", 0)


def test_recvfrom_on_unbound_nonblocking_socket_raises_blocking_io_error(udp4):
    sock = udp4.unbound()
    sock.setblocking(False)
    with pytest.raises(BlockingIOError) as excinfo:
        sock.recvfrom(100)
    assert excinfo.value.errno == errno.EAGAIN


def test_recvfrom_on_unbound_unix_socket_times_out(sockmod):
    with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError, match=r"^timed out$"):
            sock.recvfrom(100)
        assert sock.getsockname() == ""


# --- connect() on a datagram socket -------------------------------------------------------------------------


def test_connected_datagram_socket_sends_and_receives_without_address(dgram):
    client, server = dgram.bound(), dgram.bound()
    client.connect(server.getsockname())
    assert client.getpeername() == server.getsockname()
    assert client.send(b"request") == 7
    assert server.recvfrom(100) == (b"request", client.getsockname())
    server.sendto(b"reply", client.getsockname())
    assert client.recv(100) == b"reply"


def test_connected_udp_socket_drops_datagrams_from_other_peers(udp4):
    client, peer, stranger = udp4.bound(), udp4.bound(), udp4.bound()
    client.connect(peer.getsockname())
    stranger.sendto(b"stranger", client.getsockname())
    peer.sendto(b"peer", client.getsockname())
    assert client.recvfrom(100) == (b"peer", peer.getsockname())
    assert_nothing_waiting(client)


def test_connected_udp_socket_reports_port_unreachable_as_connection_refused(udp4):
    client = udp4.bound()
    client.connect(("127.0.0.1", closed_udp_port(udp4.mod)))
    client.send(b"anyone?")
    with pytest.raises(ConnectionRefusedError) as excinfo:
        client.recv(100)
    assert excinfo.value.errno == errno.ECONNREFUSED


def test_send_on_unconnected_udp_socket_raises_edestaddrreq(udp4):
    with pytest.raises(OSError) as excinfo:
        udp4.unbound().send(b"where to?")
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EDESTADDRREQ)
    assert str(excinfo.value) == "[Errno 89] Destination address required"


def test_getpeername_on_unconnected_udp_socket_raises_enotconn(udp4):
    with pytest.raises(OSError) as excinfo:
        udp4.unbound().getpeername()
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.ENOTCONN)


# --- broadcast ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["<broadcast>", "255.255.255.255"])
def test_broadcast_without_so_broadcast_raises_eacces(udp4, host):
    sock = udp4.unbound()
    with pytest.raises(PermissionError) as excinfo:
        sock.sendto(b"all", (host, 9))
    assert excinfo.value.errno == errno.EACCES
    assert str(excinfo.value) == "[Errno 13] Permission denied"


def confine_to_loopback(sock):
    """Keeps the socket's traffic on `lo` (SO_BINDTODEVICE), so a broadcast never leaves the machine."""
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_BINDTODEVICE, b"lo")
    except PermissionError:
        pytest.skip("SO_BINDTODEVICE needs privileges on this kernel")


def test_broadcast_with_so_broadcast_is_delivered(udp4):
    receiver, sender = udp4.unbound(), udp4.unbound()
    for sock in (receiver, sender):
        confine_to_loopback(sock)
    receiver.bind(("<broadcast>", 0))
    assert receiver.getsockname()[0] == "255.255.255.255"
    sender.bind(("127.0.0.1", 0))
    sender.setsockopt(udp4.mod.SOL_SOCKET, udp4.mod.SO_BROADCAST, 1)
    assert sender.sendto(b"all", ("<broadcast>", receiver.getsockname()[1])) == 3
    assert receiver.recvfrom(100) == (b"all", sender.getsockname())


@pytest.mark.parametrize("host", ["<broadcast>", "255.255.255.255"])
def test_broadcast_address_on_ipv6_socket_is_family_mismatch(udp6, host):
    with pytest.raises(OSError) as excinfo:
        udp6.unbound().sendto(b"x", (host, 9))
    assert (type(excinfo.value), excinfo.value.args) == (OSError, ("address family mismatched",))


# --- malformed addresses ------------------------------------------------------------------------------------

# (family, address, exception type, exact message) as the stdlib's sendto() reports them.
BAD_ADDRESSES = [
    ("AF_INET", "127.0.0.1", TypeError, "sendto(): AF_INET address must be tuple, not str"),
    ("AF_INET", ["127.0.0.1", 9], TypeError, "sendto(): AF_INET address must be tuple, not list"),
    ("AF_INET", ("127.0.0.1",), TypeError, "AF_INET address must be a pair (host, port)"),
    ("AF_INET", ("127.0.0.1", 9, 0), TypeError, "AF_INET address must be a pair (host, port)"),
    ("AF_INET", (1, 9), TypeError, "str, bytes or bytearray expected, not int"),
    ("AF_INET", (None, 9), TypeError, "str, bytes or bytearray expected, not NoneType"),
    ("AF_INET", ("127.0.0.1", "9"), TypeError, "'str' object cannot be interpreted as an integer"),
    ("AF_INET", ("127.0.0.1", 9.0), TypeError, "'float' object cannot be interpreted as an integer"),
    ("AF_INET", ("127.0.0.1\0", 9), TypeError, "host name must not contain null character"),
    ("AF_INET", ("127.0.0.1", -1), OverflowError, "sendto(): port must be 0-65535."),
    ("AF_INET", ("127.0.0.1", 65536), OverflowError, "sendto(): port must be 0-65535."),
    ("AF_INET", ("127.0.0.1", 2**40), OverflowError, "sendto(): port must be 0-65535."),
    ("AF_INET6", "::1", TypeError, "sendto(): AF_INET6 address must be tuple, not str"),
    (
        "AF_INET6",
        ("::1", 9, 0, 0, 0),
        TypeError,
        "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])",
    ),
    ("AF_INET6", ("::1", 70000), OverflowError, "sendto(): port must be 0-65535."),
    ("AF_INET6", ("::1", 2**40), OverflowError, "sendto(): port must be 0-65535."),
    ("AF_INET6", ("::1", 9, 0x100000, 0), OverflowError, "sendto(): flowinfo must be 0-1048575."),
    ("AF_UNIX", 1, TypeError, "a bytes-like object is required, not 'int'"),
    ("AF_UNIX", ("path", 1), TypeError, "a bytes-like object is required, not 'tuple'"),
    ("AF_UNIX", pathlib.PurePosixPath("/tmp/x"), TypeError, "a bytes-like object is required, not 'PurePosixPath'"),
    ("AF_UNIX", "/" + "a" * 200, OSError, "AF_UNIX path too long"),
    ("AF_UNIX", "a" * 108, OSError, "AF_UNIX path too long"),
]


@pytest.mark.parametrize(
    "family_name, address, exc_type, message",
    BAD_ADDRESSES,
    ids=[f"{family}-{address!r:.30}" for family, address, *_ in BAD_ADDRESSES],
)
def test_sendto_with_malformed_address_raises_stdlib_error(sockmod, family_name, address, exc_type, message):
    with sockmod.socket(getattr(sockmod, family_name), sockmod.SOCK_DGRAM) as sock:
        with pytest.raises(exc_type) as excinfo:
            sock.sendto(b"x", address)
    assert type(excinfo.value) is exc_type
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    "family_name, address, errno_value",
    [
        ("AF_INET", ("::1", 9), stdlib_socket.EAI_ADDRFAMILY),
        ("AF_INET6", ("127.0.0.1", 9), stdlib_socket.EAI_ADDRFAMILY),
    ],
)
def test_sendto_with_address_of_other_family_raises_gaierror(sockmod, family_name, address, errno_value):
    with sockmod.socket(getattr(sockmod, family_name), sockmod.SOCK_DGRAM) as sock:
        with pytest.raises(stdlib_socket.gaierror) as excinfo:
            sock.sendto(b"x", address)
    assert excinfo.value.errno == errno_value


def test_sendto_to_missing_unix_path_raises_file_not_found(sockmod, tmp_path):
    with sockmod.socket(sockmod.AF_UNIX, sockmod.SOCK_DGRAM) as sock:
        with pytest.raises(FileNotFoundError) as excinfo:
            sock.sendto(b"x", str(tmp_path / "nobody"))
    assert excinfo.value.errno == errno.ENOENT


def test_sendto_accepts_bytes_and_bytearray_hosts(udp4):
    sender, receiver = udp4.bound(), udp4.bound()
    port = receiver.getsockname()[1]
    assert sender.sendto(b"1", (b"127.0.0.1", port)) == 1
    assert sender.sendto(b"2", (bytearray(b"127.0.0.1"), port)) == 1
    assert sender.sendto(b"3", ("localhost", port)) == 1
    assert [receiver.recv(10) for _ in range(3)] == [b"1", b"2", b"3"]
