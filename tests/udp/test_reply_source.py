"""A UdpServer bound to every address replies from the address each datagram was sent to, not from the one the
kernel's route would pick: a client that asked another of the host's addresses (here 127.0.0.2, which loopback
answers for) and checks who answers (a connected socket, UdpClient.request()) gets its reply. The stdlib's and
asyncio's UDP sockets reply from the route's choice (127.0.0.1), and such a client never sees the reply."""

import asyncio
import socket

import pytest

from rsock import aio
from tests.loopback import ipv6_loopback_available

TIMEOUT = 10.0
ASKED = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def upper(data, _addr):
    return data.upper()


def ask_connected(family, address, timeout=TIMEOUT):
    """What a connected socket (one that takes datagrams from `address` only) receives after sending to it."""
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(timeout)
        client.connect(address)
        client.send(b"hello")
        return client.recvfrom(100)


@pytest.mark.parametrize("asked", ASKED)
def test_a_server_on_every_address_replies_from_the_address_asked(make_server, make_client, asked):
    server = make_server(upper, address=("0.0.0.0", 0))
    address = (asked, server.address[1])
    assert ask_connected(socket.AF_INET, address) == (b"HELLO", address)
    assert make_client().request(b"ping", address, timeout=TIMEOUT, retries=0) == b"PING"


@pytest.mark.parametrize("asked", ASKED)
def test_an_async_handler_replies_from_the_address_asked(asked):
    async def upper_later(data, _addr):
        await asyncio.sleep(0)
        return data.upper()

    async def main():
        async with aio.UdpServer(("0.0.0.0", 0), upper_later) as server:
            address = (asked, server.address[1])
            return address, await asyncio.to_thread(ask_connected, socket.AF_INET, address)

    address, received = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert received == (b"HELLO", address)


def test_a_server_on_one_address_replies_as_before(make_server):
    server = make_server(upper)
    assert ask_connected(socket.AF_INET, server.address) == (b"HELLO", server.address)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_a_server_on_every_ipv6_address_also_takes_ipv4_as_the_stdlibs_socket_does(make_server):
    """A UDP socket on "::" keeps the system's default, as the stdlib's and asyncio's do: it takes IPv4 datagrams
    too, from their IPv4-mapped sender (rsock's used to be IPv6 only, as create_server() makes TCP's)."""
    senders = []
    server = make_server(lambda data, addr: senders.append(addr) or data, address=("::", 0))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as stdlib_server:
        stdlib_server.bind(("::", 0))
        v6only = stdlib_server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    for asked in ASKED:
        address = (asked, server.address[1])
        if v6only:
            with pytest.raises(TimeoutError):
                ask_connected(socket.AF_INET, address, timeout=0.2)
        else:
            assert ask_connected(socket.AF_INET, address) == (b"hello", address)
    if not v6only:
        assert {sender[0] for sender in senders} == {"::ffff:127.0.0.1"}


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_a_server_on_every_ipv6_address_replies_over_ipv6(make_server, make_client):
    """Replies sent with an IPv6 source address reach the client. Loopback has one IPv6 address, ::1, which the
    route picks anyway: this shows the reply goes out, not that its source is chosen."""
    server = make_server(upper, address=("::", 0))
    address = ("::1", server.address[1])
    host, port, *_ = ask_connected(socket.AF_INET6, address)[1]
    assert (host, port) == address
    assert make_client(family=socket.AF_INET6).request(b"ping", address, timeout=TIMEOUT, retries=0) == b"PING"


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_broadcast_is_answered_from_the_interface_s_own_address(make_server, host):
    """As the stdlib's socket answers it: a broadcast's destination is no address to reply from. On "::" the
    IPv4 datagram's IPv6 report names the broadcast address itself; the server used it, and the reply failed
    (ENETUNREACH, logged as the handler's error)."""
    if ":" in host and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    server = make_server(upper, address=(host, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        client.settimeout(TIMEOUT)
        client.sendto(b"hello", ("127.255.255.255", server.address[1]))
        assert client.recvfrom(100) == (b"HELLO", ("127.0.0.1", server.address[1]))


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_a_server_on_every_ipv4_address_of_an_ipv6_socket_replies_from_the_address_asked(make_server):
    """::ffff:0.0.0.0 is bound to every IPv4 address, as 0.0.0.0 is."""
    server = make_server(upper, address=("::ffff:0.0.0.0", 0))
    address = ("127.0.0.2", server.address[1])
    assert ask_connected(socket.AF_INET, address) == (b"HELLO", address)
