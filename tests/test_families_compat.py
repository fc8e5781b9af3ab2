"""AF_NETLINK, AF_PACKET and AF_VSOCK sockets over the stdlib's `socket` module and over `rsock`: the
addresses taken and given, a real NETLINK_ROUTE exchange and Ethernet frames on the loopback interface,
with the stdlib's results, exception types and messages.

AF_PACKET (and AF_XDP) sockets need CAP_NET_RAW: those tests skip unless run as root, as CI runs them."""

import errno
import os
import struct
import sys

import pytest

import rsock

# Every blocking call in this file has a deadline, so a missing reply or frame fails a test instead of
# hanging it.
TIMEOUT = 5.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET and AF_XDP sockets need root (CAP_NET_RAW)")

# <linux/rtnetlink.h>, <linux/netlink.h> and <linux/if_arp.h> values the socket module does not export.
RTM_NEWLINK = 16
RTM_GETLINK = 18
NLM_F_REQUEST = 1
ARPHRD_LOOPBACK = 772
AF_XDP = 44

# An EtherType for local experiments (IEEE 802 "Local Experimental Ethertype 1"): no stack consumes it.
ETH_P_EXPERIMENTAL = 0x88B5
# The loopback interface's hardware address, and a locally administered one for the frames' source.
LO_MAC = bytes(6)
SOURCE_MAC = bytes.fromhex("020000000001")


@pytest.fixture
def netlink(sockmod):
    """A NETLINK_ROUTE socket from the module under test, closed at teardown."""
    with sockmod.socket(sockmod.AF_NETLINK, sockmod.SOCK_RAW, sockmod.NETLINK_ROUTE) as sock:
        sock.settimeout(TIMEOUT)
        yield sock


@pytest.fixture
def packet(sockmod):
    """Makes AF_PACKET sockets from the module under test; all are closed at teardown."""
    sockets = []

    def make(kind=sockmod.SOCK_RAW, proto=0):
        sock = sockmod.socket(sockmod.AF_PACKET, kind, sockmod.htons(proto))
        sockets.append(sock)
        sock.settimeout(TIMEOUT)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def address_part(sock):
    """The laddr/raddr part of repr(sock), which is all its module-specific prefix leaves to compare."""
    text = repr(sock)
    return text[text.index(", laddr=") :]


# --- AF_NETLINK -------------------------------------------------------------------------------------------


def test_netlink_bind_autobinds_and_getsockname_gives_pid_and_groups(netlink):
    assert netlink.getsockname() == (0, 0)
    netlink.bind((0, 0))
    pid, groups = netlink.getsockname()
    assert (pid != 0, groups) == (True, 0)
    # The peer of an unconnected netlink socket is the kernel: (0, 0).
    assert netlink.getpeername() == (0, 0)
    assert address_part(netlink) == f", laddr={(pid, 0)}, raddr=(0, 0)>"


def test_netlink_socket_from_fileno_detects_family_and_address(sockmod, netlink):
    netlink.bind((0, 0))
    twin = sockmod.socket(fileno=netlink.fileno())
    try:
        assert (twin.family, twin.type, twin.proto) == (
            sockmod.AF_NETLINK,
            sockmod.SOCK_RAW,
            sockmod.NETLINK_ROUTE,
        )
        assert twin.getsockname() == netlink.getsockname()
    finally:
        twin.detach()


def getlink_request(index, seq):
    """An RTM_GETLINK request for the interface `index`: nlmsghdr then ifinfomsg."""
    ifinfomsg = struct.pack("=BxHiII", 0, 0, index, 0, 0)
    return struct.pack("=IHHII", 16 + len(ifinfomsg), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + ifinfomsg


def parse_link_reply(data):
    """(type, seq, interface index) of a netlink reply holding one link message."""
    length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert length == len(data)
    (index,) = struct.unpack_from("=i", data, 16 + 4)
    return kind, seq, index


@pytest.mark.parametrize("how", ["sendto", "connect"])
def test_netlink_route_getlink_for_loopback_gets_newlink_from_kernel(sockmod, netlink, how):
    lo = sockmod.if_nametoindex("lo")
    request = getlink_request(lo, seq=4242)
    netlink.bind((0, 0))
    if how == "sendto":
        assert netlink.sendto(request, (0, 0)) == len(request)
    else:
        netlink.connect((0, 0))
        assert netlink.send(request) == len(request)
    data, sender = netlink.recvfrom(65536)
    assert sender == (0, 0)
    assert parse_link_reply(data) == (RTM_NEWLINK, 4242, lo)


# Bad AF_NETLINK addresses, and the stdlib's exception and message for each.
BAD_NETLINK_ADDRESSES = {
    "list": ([0, 0], TypeError, r"bind\(\): AF_NETLINK address must be tuple, not list"),
    "None": (None, TypeError, r"bind\(\): AF_NETLINK address must be tuple, not NoneType"),
    "one item": ((0,), TypeError, r"AF_NETLINK address must be a pair \(pid, groups\)"),
    "three items": ((0, 0, 0), TypeError, r"AF_NETLINK address must be a pair \(pid, groups\)"),
    "str pid": (("1", 0), TypeError, r"'str' object cannot be interpreted as an integer"),
    "float groups": ((0, 0.5), TypeError, r"'float' object cannot be interpreted as an integer"),
}


@pytest.mark.parametrize("address, exc_type, message", BAD_NETLINK_ADDRESSES.values(), ids=BAD_NETLINK_ADDRESSES)
def test_netlink_bad_address_raises_stdlib_error(netlink, address, exc_type, message):
    with pytest.raises(exc_type, match=f"^{message}$"):
        netlink.bind(address)


def test_netlink_sendto_bad_address_names_sendto(netlink):
    with pytest.raises(TypeError, match=r"^sendto\(\): AF_NETLINK address must be tuple, not str$"):
        netlink.sendto(b"x", "kernel")


def test_netlink_pid_and_groups_wrap_as_unsigned_int(netlink):
    # CPython takes them as C unsigned ints without a range check: 2**32 wraps to pid 0, which asks the
    # kernel to pick one.
    netlink.bind((2**32, 0))
    assert netlink.getsockname()[0] != 0


def test_netlink_getsockopt_with_a_small_buffer_gives_what_fits(netlink, sockmod):
    """NETLINK_LIST_MEMBERSHIPS reports the length the whole list needs (8 bytes: NETLINK_ROUTE has more than 32
    groups) even when the buffer is smaller. rsock gives what the kernel wrote; it used to panic slicing past its
    buffer. (The stdlib gives the reported length, bytes past the buffer included, whatever they hold.)"""
    sol_netlink, add_membership, list_memberships = 270, 1, 9
    netlink.setsockopt(sol_netlink, add_membership, 1)  # RTNLGRP_LINK
    whole = netlink.getsockopt(sol_netlink, list_memberships, 8)
    assert whole[:4] == (1 << 0).to_bytes(4, sys.byteorder) and len(whole) == 8
    small = netlink.getsockopt(sol_netlink, list_memberships, 4)
    assert small[:4] == whole[:4]
    if sockmod is rsock:
        assert small == whole[:4]


# --- AF_PACKET --------------------------------------------------------------------------------------------


@needs_root
def test_packet_unbound_getsockname_and_repr(packet):
    sock = packet()
    assert sock.getsockname() == ("", 0, 0, 0, b"")
    assert address_part(sock) == ", laddr=('', 0, 0, 0, b'')>"


@needs_root
def test_packet_bind_to_loopback_and_getsockname(sockmod, packet):
    sock = packet(proto=ETH_P_EXPERIMENTAL)
    sock.bind(("lo", ETH_P_EXPERIMENTAL))
    expected = ("lo", ETH_P_EXPERIMENTAL, sockmod.PACKET_HOST, ARPHRD_LOOPBACK, LO_MAC)
    assert sock.getsockname() == expected
    assert address_part(sock) == f", laddr={expected}>"


@needs_root
def test_packet_bind_takes_all_five_fields(sockmod, packet):
    sock = packet()
    # pkttype, hatype and the hardware address matter only for sending; bind keeps the interface's own.
    sock.bind(("lo", ETH_P_EXPERIMENTAL, sockmod.PACKET_BROADCAST, 1, bytearray(SOURCE_MAC)))
    assert sock.getsockname() == ("lo", ETH_P_EXPERIMENTAL, 0, ARPHRD_LOOPBACK, LO_MAC)


@needs_root
def test_packet_socket_from_fileno_detects_family_and_address(sockmod, packet):
    sock = packet(proto=ETH_P_EXPERIMENTAL)
    sock.bind(("lo", ETH_P_EXPERIMENTAL))
    twin = sockmod.socket(fileno=sock.fileno())
    try:
        # proto is what SO_PROTOCOL reports, which Linux leaves 0 for packet sockets.
        assert (twin.family, twin.type, twin.proto) == (sockmod.AF_PACKET, sockmod.SOCK_RAW, 0)
        assert twin.getsockname() == sock.getsockname()
    finally:
        twin.detach()


def receive_with(sock, marker):
    """recvfrom() until a frame carrying `marker` comes (others may share the EtherType), or times out."""
    while True:
        data, address = sock.recvfrom(65536)
        if marker in data:
            return data, address


@needs_root
def test_packet_raw_frame_sent_on_loopback_is_received_with_sender_address(sockmod, packet):
    receiver = packet(proto=ETH_P_EXPERIMENTAL)
    receiver.bind(("lo", ETH_P_EXPERIMENTAL))
    marker = os.urandom(16)
    frame = LO_MAC + SOURCE_MAC + struct.pack("!H", ETH_P_EXPERIMENTAL) + marker
    assert packet().sendto(frame, ("lo", 0)) == len(frame)
    address = ("lo", ETH_P_EXPERIMENTAL, sockmod.PACKET_HOST, ARPHRD_LOOPBACK, SOURCE_MAC)
    assert receive_with(receiver, marker) == (frame, address)


@needs_root
def test_packet_raw_frame_sent_from_bound_socket(sockmod, packet):
    receiver = packet(proto=ETH_P_EXPERIMENTAL)
    receiver.bind(("lo", ETH_P_EXPERIMENTAL))
    sender = packet()
    sender.bind(("lo", 0))
    marker = os.urandom(16)
    frame = LO_MAC + SOURCE_MAC + struct.pack("!H", ETH_P_EXPERIMENTAL) + marker
    assert sender.send(frame) == len(frame)
    assert receive_with(receiver, marker)[0] == frame


@needs_root
def test_packet_dgram_sendto_uses_the_hardware_address_given(sockmod, packet):
    receiver = packet(sockmod.SOCK_DGRAM, ETH_P_EXPERIMENTAL)
    receiver.bind(("lo", ETH_P_EXPERIMENTAL))
    marker = os.urandom(16)
    # The kernel builds the Ethernet header: destination from the address, source the interface's own.
    sent = packet(sockmod.SOCK_DGRAM).sendto(marker, ("lo", ETH_P_EXPERIMENTAL, 0, 0, LO_MAC))
    assert sent == len(marker)
    address = ("lo", ETH_P_EXPERIMENTAL, sockmod.PACKET_HOST, ARPHRD_LOOPBACK, LO_MAC)
    assert receive_with(receiver, marker) == (marker, address)


@needs_root
def test_packet_connect_is_not_supported(packet):
    with pytest.raises(OSError) as excinfo:
        packet().connect(("lo", 0))
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.EOPNOTSUPP)


@needs_root
@pytest.mark.parametrize("name", ["rsock-no-such0", "", "lo" + "x" * 20])
def test_packet_unknown_interface_is_enodev(packet, name):
    # Checked before the protocol's range: the interface error wins.
    with pytest.raises(OSError) as excinfo:
        packet().bind((name, 70000))
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.ENODEV)


@needs_root
def test_packet_sendto_unknown_interface_is_enodev(packet):
    with pytest.raises(OSError) as excinfo:
        packet().sendto(b"x" * 14, ("rsock-no-such0", 0))
    assert (type(excinfo.value), excinfo.value.errno) == (OSError, errno.ENODEV)


# Bad AF_PACKET addresses, and the stdlib's exception and message for each.
SHAPE = r"AF_PACKET address must be a tuple of two to five elements"
BAD_PACKET_ADDRESSES = {
    "str": ("lo", TypeError, r"bind\(\): AF_PACKET address must be tuple, not str"),
    "list": (["lo", 0], TypeError, r"bind\(\): AF_PACKET address must be tuple, not list"),
    "one item": (("lo",), TypeError, SHAPE),
    "six items": (("lo", 0, 0, 0, b"", 0), TypeError, SHAPE),
    "bytes name": ((b"lo", 0), TypeError, SHAPE),
    "int name": ((1, 0), TypeError, SHAPE),
    "NUL in name": (("lo\0", 0), ValueError, r"embedded null character"),
    "surrogate in name": (("\udc80", 0), UnicodeEncodeError, r".*surrogates not allowed"),
    "float proto": (("lo", 0.5), TypeError, r"'float' object cannot be interpreted as an integer"),
    "proto beyond int": (("lo", 2**31), OverflowError, r"bind\(\): address argument out of range"),
    "pkttype beyond int": (("lo", 0, -(2**40)), OverflowError, r"bind\(\): address argument out of range"),
    "hatype beyond long": (("lo", 0, 0, 2**70), OverflowError, r"bind\(\): address argument out of range"),
    "str hardware address": (("lo", 0, 0, 0, "ab"), TypeError, r"a bytes-like object is required, not 'str'"),
    "long hardware address": (("lo", 0, 0, 0, bytes(9)), ValueError, r"Hardware address must be 8 bytes or less"),
    "proto above 65535": (("lo", 65536), OverflowError, r"bind\(\): proto must be 0-65535\."),
    "negative proto": (("lo", -1), OverflowError, r"bind\(\): proto must be 0-65535\."),
}


@needs_root
@pytest.mark.parametrize("address, exc_type, message", BAD_PACKET_ADDRESSES.values(), ids=BAD_PACKET_ADDRESSES)
def test_packet_bad_address_raises_stdlib_error(packet, address, exc_type, message):
    with pytest.raises(exc_type, match=f"^{message}$"):
        packet().bind(address)


@needs_root
def test_packet_hardware_address_length_is_checked_before_proto_range(packet):
    with pytest.raises(ValueError, match=r"^Hardware address must be 8 bytes or less$"):
        packet().bind(("lo", 70000, 0, 0, bytes(9)))


# --- AF_VSOCK ---------------------------------------------------------------------------------------------


@pytest.fixture
def vsock(sockmod):
    """An AF_VSOCK stream socket from the module under test (binding needs no VM: VMADDR_CID_ANY is local)."""
    try:
        sock = sockmod.socket(sockmod.AF_VSOCK, sockmod.SOCK_STREAM)
    except OSError as exc:
        pytest.skip(f"no AF_VSOCK in this kernel ({exc})")
    with sock:
        yield sock


def test_vsock_unbound_getsockname_and_repr(sockmod, vsock):
    assert vsock.getsockname() == (sockmod.VMADDR_CID_ANY, sockmod.VMADDR_PORT_ANY)
    assert address_part(vsock) == f", laddr=({sockmod.VMADDR_CID_ANY}, {sockmod.VMADDR_PORT_ANY})>"


def test_vsock_bind_gives_cid_and_port(sockmod, vsock):
    vsock.bind((sockmod.VMADDR_CID_ANY, sockmod.VMADDR_PORT_ANY))
    cid, port = vsock.getsockname()
    assert cid == sockmod.VMADDR_CID_ANY
    assert port not in (0, sockmod.VMADDR_PORT_ANY)  # the kernel picked one


def test_vsock_cid_and_port_wrap_as_unsigned_int(sockmod, vsock):
    # CPython takes them as C unsigned ints without a range check: -1 is VMADDR_CID_ANY.
    vsock.bind((-1, 2**32 + 5))
    assert vsock.getsockname() == (sockmod.VMADDR_CID_ANY, 5)


# Bad AF_VSOCK addresses, and the stdlib's exception and message for each (CPython names its parser).
BAD_VSOCK_ADDRESSES = {
    "str": ("vm", TypeError, r"getsockaddrarg: AF_VSOCK address must be tuple, not str"),
    "list": ([1, 2], TypeError, r"getsockaddrarg: AF_VSOCK address must be tuple, not list"),
    "empty": ((), TypeError, r"getsockaddrarg\(\) takes exactly 2 arguments \(0 given\)"),
    "three items": ((1, 2, 3), TypeError, r"getsockaddrarg\(\) takes exactly 2 arguments \(3 given\)"),
    "str cid": (("1", 2), TypeError, r"'str' object cannot be interpreted as an integer"),
    "float port": ((1, 0.5), TypeError, r"'float' object cannot be interpreted as an integer"),
}


@pytest.mark.parametrize("address, exc_type, message", BAD_VSOCK_ADDRESSES.values(), ids=BAD_VSOCK_ADDRESSES)
@pytest.mark.parametrize("method", ["bind", "connect"])
def test_vsock_bad_address_raises_stdlib_error(vsock, method, address, exc_type, message):
    with pytest.raises(exc_type, match=f"^{message}$"):
        getattr(vsock, method)(address)


def test_vsock_options_are_64_bit_set_from_an_int(sockmod, vsock):
    """CPython reads and writes a vsock socket's options as 64-bit values (its buffer sizes are u64), set from an int
    only and wrapped rather than range-checked; rsock used 4-byte ints, which the kernel refused (EINVAL)."""
    level, option = sockmod.AF_VSOCK, sockmod.SO_VM_SOCKETS_BUFFER_SIZE
    assert vsock.getsockopt(level, option) > 0
    vsock.setsockopt(level, option, 65536)
    assert vsock.getsockopt(level, option) == 65536
    vsock.setsockopt(level, option, 2**64 + 70000)
    assert vsock.getsockopt(level, option) == 70000
    vsock.setsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, 1)
    assert vsock.getsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR) == 1


BAD_VSOCK_OPTIONS = {
    "bytes": ((b"\0" * 8,), TypeError, r"setsockopt\(\) argument 3 must be int, not bytes"),
    "float": ((1.5,), TypeError, r"setsockopt\(\) argument 3 must be int, not float"),
    "None and a length": ((None, 8), TypeError, r"setsockopt\(\) takes exactly 3 arguments \(4 given\)"),
}


@pytest.mark.parametrize("value, exc_type, message", BAD_VSOCK_OPTIONS.values(), ids=BAD_VSOCK_OPTIONS)
def test_vsock_bad_option_values_raise_stdlib_errors(sockmod, vsock, value, exc_type, message):
    with pytest.raises(exc_type, match=f"^{message}$"):
        vsock.setsockopt(sockmod.AF_VSOCK, sockmod.SO_VM_SOCKETS_BUFFER_SIZE, *value)
    with pytest.raises(OSError, match=r"^getsockopt string buffer not allowed$"):
        vsock.getsockopt(sockmod.AF_VSOCK, sockmod.SO_VM_SOCKETS_BUFFER_SIZE, 8)


# --- other families ---------------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("method", ["bind", "connect"])
def test_address_for_family_without_address_format_is_bad_family(sockmod, method):
    try:
        sock = sockmod.socket(AF_XDP, sockmod.SOCK_RAW, 0)
    except OSError as exc:
        pytest.skip(f"no AF_XDP here ({exc})")
    with sock, pytest.raises(OSError, match=rf"^{method}\(\): bad family$"):
        getattr(sock, method)((0, 0))
