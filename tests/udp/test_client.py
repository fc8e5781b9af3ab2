"""rsock.UdpClient: binding and addresses, sendto and its size check, recvfrom and its truncation report and timeout,
request with retries (against a server that drops datagrams) and its filtering of strangers, closing."""

import array
import errno
import os
import pickle
import select
import socket
import threading
import time

import pytest

import rsock
from tests.loopback import ipv6_loopback_available
from tests.proc_threads import voluntary_switches
from tests.subprocesses import rsock_server_process

HOST = "127.0.0.1"
TIMEOUT = 10.0
MAX_V4 = 65507
MAX_V6 = 65527


def test_unbound_client_gets_a_port_on_first_send(make_client, make_udp):
    client = make_client()
    assert client.local[1] == 0
    receiver = make_udp()
    assert client.sendto(b"hello", receiver.getsockname()) == 5
    port = client.local[1]
    assert port != 0
    data, sender = receiver.recvfrom(100)
    assert data == b"hello"
    assert sender[1] == port


def test_bound_client_and_recvfrom(make_client, make_udp):
    client = make_client((HOST, 0))
    host, port = client.local
    assert host == HOST and port != 0
    sender = make_udp()
    sender.sendto(b"to you", client.local)
    assert client.recvfrom(timeout=TIMEOUT) == (b"to you", sender.getsockname())
    sender.sendto(b"again", client.local)
    assert client.recvfrom(100, timeout=TIMEOUT) == (b"again", sender.getsockname())


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_sendto_takes_bytes_like(make_client, make_udp, kind):
    client = make_client()
    receiver = make_udp()
    assert client.sendto(kind(b"abc"), receiver.getsockname()) == 3
    assert receiver.recv(10) == b"abc"


def test_largest_ipv4_datagram_is_sent_and_received(make_client, make_udp):
    client = make_client((HOST, 0))
    peer = make_udp()
    payload = bytes(range(256)) * (MAX_V4 // 256) + bytes(MAX_V4 % 256)
    assert client.sendto(payload, peer.getsockname()) == MAX_V4
    assert peer.recv(65536) == payload
    peer.sendto(payload, client.local)
    assert client.recvfrom(timeout=TIMEOUT) == (payload, peer.getsockname())


def test_oversized_datagram_is_refused_before_sending(make_client, make_udp):
    client = make_client()
    receiver = make_udp()
    with pytest.raises(OSError) as info:
        client.sendto(b"x" * (MAX_V4 + 1), receiver.getsockname())
    assert info.value.errno == errno.EMSGSIZE
    client.sendto(b"marker", receiver.getsockname())
    assert receiver.recv(65536) == b"marker"  # nothing went out before it


def test_ipv6_limits(make_client, make_udp):
    client = make_client(family=socket.AF_INET6)
    receiver = make_udp("::1", socket.AF_INET6)
    with pytest.raises(OSError) as info:
        client.sendto(b"x" * (MAX_V6 + 1), receiver.getsockname()[:2])
    assert info.value.errno == errno.EMSGSIZE
    assert client.sendto(b"y" * MAX_V6, receiver.getsockname()[:2]) == MAX_V6
    assert receiver.recv(65536) == b"y" * MAX_V6


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["blocking", "timeout"])
def test_datagram_larger_than_bufsize_is_reported_not_cut(make_client, make_udp, timeout):
    client = make_client((HOST, 0))
    sender = make_udp()
    sender.sendto(b"z" * 1000, client.local)
    sender.sendto(b"next", client.local)
    with pytest.raises(OSError) as info:
        client.recvfrom(100, timeout=timeout)
    assert info.value.errno == errno.EMSGSIZE
    assert client.recvfrom(100, timeout=timeout) == (b"next", sender.getsockname())
    sender.sendto(b"q" * 100, client.local)
    assert client.recvfrom(100, timeout=timeout) == (b"q" * 100, sender.getsockname())  # exactly bufsize fits


def test_recvfrom_timeout(make_client):
    client = make_client((HOST, 0))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.recvfrom(timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------------------------
# request


def dropping_server(make_server, drop):
    """A UdpServer that ignores the first `drop` datagrams and answers the rest, and the list of what it got."""
    got = []

    def on_datagram(data, addr):
        got.append(data)
        return None if len(got) <= drop else b"reply to " + data

    return make_server(on_datagram), got


@pytest.mark.parametrize("drop", [0, 1, 2, 3])
def test_request_resends_until_a_reply_comes(make_server, make_client, drop):
    server, got = dropping_server(make_server, drop)
    client = make_client()
    assert client.request(b"q", server.address, timeout=0.2, retries=3) == b"reply to q"
    assert got == [b"q"] * (drop + 1)


def test_threads_sharing_a_client_each_get_their_own_reply(make_server, make_client):
    server = make_server(lambda data, addr: b"re: " + data)
    client = make_client()
    wrong = []

    def ask(thread):
        for i in range(100):
            question = b"%d-%d" % (thread, i)
            if (reply := client.request(question, server.address, timeout=2.0)) != b"re: " + question:
                wrong.append((question, reply))

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert wrong == []


def test_recvfrom_with_a_negative_size_raises_as_the_socket_s_does(make_client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(ValueError) as expected:
        sock.recvfrom(-1)
    with pytest.raises(ValueError) as raised:
        make_client().recvfrom(-1)
    assert str(raised.value) == str(expected.value)


def test_request_times_out_after_every_attempt(make_server, make_client, wait_until):
    server, got = dropping_server(make_server, 4)
    client = make_client()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"after 4 attempts$"):
        client.request(b"q", server.address, timeout=0.2, retries=3)
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 5
    wait_until(lambda: len(got) == 4, "the four attempts to reach the server")
    assert got == [b"q"] * 4


def test_request_with_no_retries_sends_once(make_server, make_client, wait_until):
    server, got = dropping_server(make_server, 1)
    client = make_client()
    with pytest.raises(TimeoutError, match=r"after 1 attempt$"):
        client.request(b"once", server.address, timeout=0.2, retries=0)
    wait_until(lambda: len(got) == 1, "the attempt to reach the server")
    assert client.request(b"twice", server.address, timeout=1.0, retries=0) == b"reply to twice"


def test_request_ignores_datagrams_from_other_senders(make_client, make_udp):
    client = make_client((HOST, 0))
    server = make_udp()
    stranger = make_udp()
    errors = []

    def serve():
        try:
            data, addr = server.recvfrom(100)
            # A stranger's datagram reaches the client first, then the real reply.
            stranger.sendto(b"spam", addr)
            server.sendto(b"real reply to " + data, addr)
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert client.request(b"q", server.getsockname(), timeout=TIMEOUT, retries=0) == b"real reply to q"
    finally:
        thread.join(TIMEOUT)
    assert errors == []


@pytest.mark.parametrize("extra", [(5, 0), (0, 0)], ids=["flowinfo", "plain"])
def test_request_to_an_ipv6_address_with_a_flow_label_takes_the_reply(make_server, make_client, extra):
    """The kernel reports the replying sender without the flow label asked with: the reply still matches (its IP
    and port are the ones asked), as the stdlib's recvfrom shows the same sender."""
    server = make_server(lambda data, addr: b"reply to " + data, address=("::1", 0))
    client = make_client(family=socket.AF_INET6)
    host, port = server.address[:2]
    assert client.request(b"q", (host, port, *extra), timeout=TIMEOUT, retries=0) == b"reply to q"


def test_request_ignores_strangers_until_it_times_out(make_client, make_udp):
    client = make_client((HOST, 0))
    silent = make_udp()
    stranger = make_udp()
    stranger.sendto(b"spam", client.local)
    with pytest.raises(TimeoutError):
        client.request(b"q", silent.getsockname(), timeout=0.2, retries=1)
    assert silent.recv(10) == b"q"
    assert silent.recv(10) == b"q"


def test_request_discards_a_late_reply_to_an_earlier_request(make_server, make_client, wait_until):
    def slow_for_late(data, addr):
        if data == b"late":
            time.sleep(0.5)
        return b"reply to " + data

    server = make_server(slow_for_late)
    client = make_client()
    with pytest.raises(TimeoutError):
        client.request(b"late", server.address, timeout=0.2, retries=0)
    wait_until(lambda: server.stats["datagrams_out"] == 1, "the late reply to be sent")
    assert select.select([client], [], [], TIMEOUT)[0], "the late reply is queued on the client"
    assert client.request(b"next", server.address, timeout=TIMEOUT, retries=0) == b"reply to next"


def test_request_discards_the_replies_to_its_earlier_resends(make_server, make_client, wait_until):
    calls = []

    def slow_first_call(data, addr):
        calls.append(data)
        if len(calls) == 1:
            time.sleep(0.7)
        return b"reply to " + data

    server = make_server(slow_first_call)
    client = make_client()
    # The first call holds its reply 0.7 s, past the 0.5 s timeout: the request is sent twice and answered twice.
    assert client.request(b"first", server.address, timeout=0.5, retries=3) == b"reply to first"
    wait_until(lambda: server.stats["datagrams_out"] == 2, "both replies to be sent")
    assert select.select([client], [], [], TIMEOUT)[0], "the second reply is queued on the client"
    assert client.request(b"second", server.address, timeout=TIMEOUT, retries=0) == b"reply to second"
    assert calls == [b"first", b"first", b"second"]


# ---------------------------------------------------------------------------------------------------------------
# Closing


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["blocking", "timeout"])
@pytest.mark.parametrize("module", [socket, rsock], ids=["stdlib", "rsock"])
def test_recvfrom_waiting_when_another_thread_closes_raises_ebadf(make_client, module, timeout):
    """A receive under way when another thread closes the client raises OSError(EBADF), as the stdlib's does
    (once its wait ends), and never returns an empty datagram from nowhere."""
    if module is socket:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((HOST, 0))
        client.settimeout(0.5 if timeout is None else timeout / 20)  # the stdlib's wait does not end at close()
        receive = lambda: client.recvfrom(100)  # noqa: E731
    else:
        client = make_client((HOST, 0))
        receive = lambda: client.recvfrom(timeout=timeout)  # noqa: E731
    outcome = []

    def wait():
        try:
            outcome.append(receive())
        except BaseException as exc:  # reported below
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    client.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    [exc] = outcome
    assert isinstance(exc, OSError) and exc.errno == errno.EBADF, exc


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_PACKET, 12345])
def test_a_family_other_than_inet_is_refused(family):
    """A UdpClient of another family could send, but a request() could never match a reply to its address."""
    with pytest.raises(ValueError, match="family must be AF_INET or AF_INET6"):
        rsock.UdpClient(family=family)


BIND_IN_A_FAMILY = {
    "IPv4 in AF_INET": (("127.0.0.1", 0), socket.AF_INET),
    "IPv4 in AF_INET6": (("127.0.0.1", 0), socket.AF_INET6),
    "IPv6 in AF_INET": (("::1", 0), socket.AF_INET),
    "IPv6 in AF_INET6": (("::1", 0), socket.AF_INET6),
    "every address in AF_INET": (("", 0), socket.AF_INET),
    "every address in AF_INET6": (("", 0), socket.AF_INET6),
    "name in AF_INET": (("localhost", 0), socket.AF_INET),
    "IPv6 four-tuple in AF_INET": (("::1", 0, 0, 0), socket.AF_INET),
}


@pytest.mark.parametrize(("address", "family"), BIND_IN_A_FAMILY.values(), ids=BIND_IN_A_FAMILY.keys())
def test_an_address_is_bound_in_the_family_given_as_a_socket_of_it_binds_it(address, family):
    """With `family`, the address is looked up in that family, as socket(family, SOCK_DGRAM).bind() looks it up:
    "" is that family's every address, an address of the other family a gaierror. The family was not used when an
    address was given: the address's own was taken."""
    if (":" in address[0] or family == socket.AF_INET6) and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")

    try:
        with rsock.UdpClient(address, family=family) as client:
            outcome = client.local[0]
    except (OSError, TypeError) as exc:
        outcome = type(exc), str(exc)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(address)
            expected = sock.getsockname()[0]
        except (OSError, TypeError) as exc:
            expected = type(exc), str(exc)
    assert outcome == expected


def test_close_and_context_manager(make_udp):
    receiver = make_udp()
    client = rsock.UdpClient()
    try:
        client.sendto(b"x", receiver.getsockname())
    finally:
        client.close()
    assert client.closed
    client.close()
    with pytest.raises(OSError):
        client.sendto(b"y", receiver.getsockname())
    with rsock.UdpClient() as client:
        assert not client.closed
    assert client.closed


def test_a_client_dropped_unclosed_inside_a_failing_call_keeps_the_error():
    """The ResourceWarning of a client collected while its call's exception is on the way up must not replace
    that exception (it used to become SystemError). Each client here lives only as long as its call."""
    with pytest.warns(ResourceWarning), pytest.raises(TypeError):
        rsock.UdpClient().sendto(b"x", "not an address")
    with pytest.warns(ResourceWarning), pytest.raises(ConnectionRefusedError):
        rsock.UdpClient().request(b"x", (HOST, 9), timeout=0.01, retries=0)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="polling for a reply needs the server running meanwhile")
def test_request_loop_against_a_local_server_polls_for_replies_instead_of_sleeping():
    """A reply from a server on this machine mostly comes within the client's poll: request() waits for it without
    sleeping, where a blocking receive (the stdlib socket's, measured in the same run) sleeps once per request. How
    many come within the poll depends on the machine's speed at the time (a quarter of them missed it on a slow
    day): the client sleeps at most three times for the stdlib's four."""

    def sleeps_per_request(request):
        for n in range(300):  # both sides settle into polling
            assert request(b"warm %d" % n) == b"warm %d" % n
        before = voluntary_switches(threading.get_native_id())
        for n in range(2000):
            assert request(b"%d" % n) == b"%d" % n
        return (voluntary_switches(threading.get_native_id()) - before) / 2000

    with rsock_server_process("rsock.UdpServer(('127.0.0.1', 0), lambda data, address: data)") as (_, address):
        with rsock.UdpClient() as client:
            ours = sleeps_per_request(lambda data: client.request(data, address, timeout=TIMEOUT))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)

            def stdlib_request(data):
                sock.sendto(data, address)
                return sock.recv(100)

            stdlib = sleeps_per_request(stdlib_request)
    assert stdlib > 0.9, f"the stdlib's blocking receive slept {stdlib:.2f} times per request"
    assert ours < 0.75 * stdlib, f"{ours:.2f} sleeps per request, the stdlib's {stdlib:.2f}"


def test_a_late_reply_shifts_back_to_back_requests_unless_accept_tells_replies_apart(sync_or_aio_client):
    """A reply that comes after its request timed out is taken by the next request, whose own reply is then taken by
    the one after: back-to-back requests stay a reply behind. With `accept`, a request takes only the reply that
    answers it (here by an id the messages carry) and drops the others. The sync and rsock.aio clients alike."""

    def slow_answer(data, sender):
        time.sleep(0.3)  # each answer comes well after the request that timed out (0.05 s)
        return b"re " + data

    server = rsock.UdpServer((HOST, 0), slow_answer)
    server.start()
    try:
        client = sync_or_aio_client()
        with pytest.raises(TimeoutError):
            client.call("request", b"1", server.address, timeout=0.05, retries=0)
        assert client.call("request", b"2", server.address, timeout=TIMEOUT) == b"re 1"  # the reply to "1"
        with pytest.raises(TimeoutError):
            client.call("request", b"3", server.address, timeout=0.05, retries=0)
        taken = client.call("request", b"4", server.address, timeout=TIMEOUT, accept=lambda reply: reply == b"re 4")
        assert taken == b"re 4"
    finally:
        server.stop(2.0)


def test_request_accept_errors(sync_or_aio_client, make_server):
    server = make_server(lambda data, sender: data)
    client = sync_or_aio_client()
    with pytest.raises(TypeError, match=r"^accept must be callable or None, not int$"):
        client.call("request", b"x", server.address, timeout=TIMEOUT, accept=1)

    def refuse(reply):
        raise LookupError(f"cannot read {reply!r}")

    with pytest.raises(LookupError, match=r"^cannot read b'x'$"):
        client.call("request", b"x", server.address, timeout=TIMEOUT, accept=refuse)
    assert client.call("request", b"y", server.address, timeout=TIMEOUT, accept=None) == b"y"


def stdlib_outcome(call):
    """The exception type and message `call()` raises (None if it returns)."""
    try:
        call()
    except Exception as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("host", ["127.0.0.1\x00.example", b"127.0.0.1\x00.example"], ids=["str", "bytes"])
def test_a_host_with_a_nul_is_a_type_error_as_bind_and_sendto_find_it(sync_or_aio_client, host):
    """getaddrinfo() reads a name only up to its NUL: rsock.aio's client bound, and asked, 127.0.0.1 for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        expected = stdlib_outcome(lambda: sock.bind((host, 0)))
        assert expected == stdlib_outcome(lambda: sock.sendto(b"x", (host, 9)))
    assert expected == (TypeError, "host name must not contain null character")
    assert stdlib_outcome(lambda: sync_or_aio_client(address=(host, 0))) == expected
    client = sync_or_aio_client()
    assert stdlib_outcome(lambda: client.call("request", b"x", (host, 9), timeout=0.2, retries=0)) == expected


def test_a_bytearray_host_binds_as_bind_takes_it(sync_or_aio_client):
    client = sync_or_aio_client(address=(bytearray(HOST.encode()), 0))
    assert client.client.local[0] == HOST


@pytest.mark.parametrize(
    "data, address",
    [("text", (HOST, 70000)), (None, ("256.1.1.1", 9)), ("text", (HOST, -1)), (1.5, ("no.such.host.invalid", 9))],
    ids=["port too large", "bad host", "negative port", "unknown name"],
)
@pytest.mark.parametrize("method", ["sendto", "request"])
def test_data_is_checked_before_the_address_as_socket_sendto_checks_it(sync_or_aio_client, method, data, address):
    """CPython reads sendto()'s data before its address: a payload that could never be sent is a TypeError, before
    any look-up. The sync client checked (and resolved) the address first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        expected = stdlib_outcome(lambda: sock.sendto(data, address))
    assert expected[0] is TypeError
    client = sync_or_aio_client()
    kwargs = {"timeout": 0.2, "retries": 0} if method == "request" else {}
    assert stdlib_outcome(lambda: client.call(method, data, address, **kwargs)) == expected


def test_any_bytes_like_object_is_sent_and_its_size_counted_in_bytes(sync_or_aio_client, make_udp):
    """rsock.aio's client measured a datagram with len(): a PickleBuffer has none (TypeError), and an array of
    doubles counts items, which let one past the size check to the kernel's bare EMSGSIZE."""
    peer = make_udp()
    client = sync_or_aio_client()
    assert client.call("sendto", pickle.PickleBuffer(b"abc"), peer.getsockname()) == 3
    assert peer.recvfrom(10)[0] == b"abc"
    too_large = array.array("d", [0.0] * ((MAX_V4 + 8) // 8))
    with pytest.raises(OSError, match=r"datagram of 65512 bytes is larger than the largest UDP datagram") as raised:
        client.call("sendto", too_large, peer.getsockname())
    assert raised.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize("timeout", [float("inf"), 1e300])
def test_a_timeout_too_large_is_an_overflow_error_as_settimeout_finds_it(sync_or_aio_client, timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(OverflowError):
        sock.settimeout(timeout)
    client = sync_or_aio_client(address=(HOST, 0))
    with pytest.raises(OverflowError, match=r"^timeout too large: "):
        client.call("recvfrom", timeout=timeout)
    with pytest.raises(OverflowError, match=r"^timeout too large: "):
        client.call("request", b"x", client.client.local, timeout=timeout)


def test_retries_beyond_32_bits_are_an_overflow_error(sync_or_aio_client):
    client = sync_or_aio_client(address=(HOST, 0))
    with pytest.raises(OverflowError):
        client.call("request", b"x", client.client.local, timeout=0.1, retries=2**70)
    with pytest.raises(OverflowError):
        client.call("request", b"x", client.client.local, timeout=0.1, retries=2**32)


def test_a_request_with_a_timeout_of_zero_reads_after_each_send(sync_or_aio_client, make_server):
    """Each attempt reads what is queued by then, so a reply to an earlier attempt is taken by a later one. rsock.aio's
    request never read with a timeout of 0, and sent every attempt in vain."""
    server = make_server(lambda data, sender: b"re " + data)
    client = sync_or_aio_client()
    assert client.call("request", b"x", server.address, timeout=0, retries=20_000) == b"re x"
