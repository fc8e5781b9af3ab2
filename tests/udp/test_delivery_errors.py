"""A UdpClient request to an address where nothing listens fails at once with ConnectionRefusedError, as a
connected stdlib UDP socket's receive does, rather than waiting out its retries; the refusal of some other
datagram (a sendto() to a closed port) changes nothing for the calls after it, as on an unconnected stdlib
socket. Each test runs on the sync client and on rsock.aio's."""

import errno
import socket
import time

import pytest

import rsock
from tests.loopback import ipv6_loopback_available

HOST = "127.0.0.1"
TIMEOUT = 10.0


@pytest.fixture
def echo_server():
    server = rsock.UdpServer((HOST, 0), lambda data, address: b"re: " + data)
    server.start()
    yield server
    server.stop(2.0)


def closed_port(host=HOST, family=socket.AF_INET):
    """The address of a UDP port nothing listens on (bound a moment ago and released)."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[:2]


def refusal_of_a_connected_stdlib_socket(address, family=socket.AF_INET):
    """What a connected stdlib UDP socket's receive raises after a datagram to `address`."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        sock.send(b"anyone?")
        with pytest.raises(OSError) as refused:
            sock.recv(100)
    return refused.value


def test_request_to_a_closed_port_is_refused_at_once(sync_or_aio_client):
    address = closed_port()
    client = sync_or_aio_client()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError) as refused:
        client.call("request", b"anyone?", address, timeout=TIMEOUT, retries=3)
    assert time.monotonic() - started < TIMEOUT
    stdlib = refusal_of_a_connected_stdlib_socket(address)
    expected = (ConnectionRefusedError, errno.ECONNREFUSED)
    assert (type(refused.value), refused.value.errno) == (type(stdlib), stdlib.errno) == expected
    assert str(refused.value) == f"[Errno {errno.ECONNREFUSED}] no reply from {address!r}: Connection refused"


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback address here")
@pytest.mark.parametrize("kind", ["ipv6", "ipv4-mapped"])
def test_request_of_an_ipv6_client_is_refused_at_once(sync_or_aio_client, kind):
    """IPv6's report (ICMPv6), and IPv4's for an IPv4-mapped address, which an IPv6 socket sends over IPv4."""
    if kind == "ipv6":
        address = closed_port("::1", socket.AF_INET6)
    else:
        address = ("::ffff:127.0.0.1", closed_port()[1])
    client = sync_or_aio_client(family=socket.AF_INET6)
    with pytest.raises(ConnectionRefusedError, match=r"^\[Errno 111\] no reply from .*: Connection refused$"):
        client.call("request", b"anyone?", address, timeout=TIMEOUT, retries=3)
    stdlib = refusal_of_a_connected_stdlib_socket(address, socket.AF_INET6)
    assert type(stdlib) is ConnectionRefusedError


def test_refusals_of_other_datagrams_change_nothing_for_later_calls(sync_or_aio_client, echo_server):
    """Datagrams to closed ports, then sendto(), recvfrom() and request() to a server: each as on an unconnected
    stdlib socket, which is never told of the refusals."""

    def converse(sendto, recvfrom, request):
        for _ in range(3):
            sendto(b"to nobody", closed_port())
        time.sleep(0.05)  # the refusals come back meanwhile (on loopback, during the send)
        results = [sendto(b"to the server", echo_server.address), recvfrom()]
        sendto(b"to nobody", closed_port())
        time.sleep(0.05)
        results.append(request(b"question"))
        return results

    client = sync_or_aio_client()
    ours = converse(
        lambda data, address: client.call("sendto", data, address),
        lambda: client.call("recvfrom", timeout=TIMEOUT),
        lambda data: client.call("request", data, echo_server.address, timeout=TIMEOUT),
    )

    def stdlib_request(data):
        sock.sendto(data, echo_server.address)
        return sock.recv(100)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        stdlib = converse(sock.sendto, lambda: sock.recvfrom(100), stdlib_request)
    assert ours == stdlib == [len(b"to the server"), (b"re: to the server", echo_server.address), b"re: question"]


def test_an_earlier_refusal_does_not_fail_a_request_to_a_server_started_since(sync_or_aio_client):
    """A refusal that came before the request started belongs to an earlier datagram: the request to the same
    port, where a server listens now, gets its reply."""
    client = sync_or_aio_client()
    address = closed_port()
    client.call("sendto", b"too early", address)
    time.sleep(0.05)
    server = rsock.UdpServer(address, lambda data, sender: b"re: " + data)
    server.start()
    try:
        assert client.call("request", b"now?", address, timeout=TIMEOUT) == b"re: now?"
    finally:
        server.stop(2.0)


def test_a_wait_after_refusals_sleeps(sync_or_aio_client):
    """The reports are taken off the socket as they are met: one left queued would make every wait for a
    datagram return at once (poll says the socket has something), and the wait would spin until its timeout."""
    client = sync_or_aio_client(address=(HOST, 0))
    for _ in range(20):
        client.call("sendto", b"to nobody", closed_port())
    time.sleep(0.05)
    cpu_before = time.thread_time()
    with pytest.raises(TimeoutError):
        client.call("recvfrom", timeout=0.5)
    assert time.thread_time() - cpu_before < 0.25
