"""rsock.aio.TcpClient and rsock.aio.UdpClient, on both event loops.

The far end is always a plain stdlib socket (TCP: `Peer`; UDP: a datagram endpoint of the running loop), so what
is checked is what goes over the wire."""

import asyncio
import contextlib
import errno
import functools
import gc
import socket
import struct
import time

import pytest
import pytest_asyncio

import rsock
from rsock import aio
from tests.aio.conftest import HOST, TIMEOUT, Peer, bounded, on_uvloop, still_pending
from tests.loopback import ipv6_loopback_available

pytestmark = pytest.mark.asyncio

FRAMINGS = ["line", "length", b"<END>"]


def encode(framing, message):
    """`message` as it goes on the wire under `framing`."""
    if framing == "line":
        return message + b"\n"
    if framing == "length":
        return struct.pack(">I", len(message)) + message
    return message + framing


class Opened:
    """TcpClients, UdpClients, sockets and transports a test opens, closed at teardown."""

    def __init__(self):
        self.stack = contextlib.AsyncExitStack()

    async def tcp(self, **kwargs):
        """A TcpClient connected to a fresh stdlib listener: returns (client, peer)."""
        loop = asyncio.get_running_loop()
        listener = socket.create_server((HOST, 0))
        listener.setblocking(False)
        self.stack.callback(listener.close)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        try:
            client = await bounded(aio.TcpClient.connect(listener.getsockname(), **kwargs))
            self.stack.push_async_callback(client.close)
            raw, _ = await bounded(accepting)
        finally:
            accepting.cancel()
        self.stack.callback(raw.close)
        return client, Peer(raw)

    def udp(self, address=(HOST, 0), **kwargs):
        client = aio.UdpClient(address, **kwargs)
        self.stack.callback(client.close)
        return client

    async def responder(self, reply=lambda data, addr: b"re: " + data, host=HOST):
        """A datagram endpoint answering each datagram with `reply(data, addr)` (None: no answer); returns it, with
        `.address` and `.received` (a list of (data, addr))."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(lambda: Responder(reply), local_addr=(host, 0))
        self.stack.callback(transport.close)
        protocol.address = transport.get_extra_info("sockname")
        return protocol


class Responder(asyncio.DatagramProtocol):
    def __init__(self, reply):
        self.reply = reply
        self.received = []
        self.arrived = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append((data, addr))
        self.arrived.set()
        answer = self.reply(data, addr)
        if answer is not None:
            self.transport.sendto(answer, addr)


@pytest_asyncio.fixture
async def opened():
    opened = Opened()
    async with opened.stack:
        yield opened


# ---------------------------------------------------------------------------------------------------------------
# TcpClient


async def test_tcp_client_raw_send_and_recv(opened):
    client, peer = await opened.tcp()
    assert client.framing is None
    assert client.peer == peer.sock.getsockname()
    assert client.local == peer.sock.getpeername()
    assert not client.closed
    assert "open" in repr(client)
    await bounded(client.send(b"hello"))
    assert await peer.recv_exactly(5) == b"hello"
    await peer.send(b"world!")
    assert await bounded(client.recv(3)) == b"wor"
    assert await bounded(client.recv()) == b"ld!"


async def test_tcp_client_send_is_named_as_its_method_in_a_task(opened):
    client, peer = await opened.tcp()
    sending = client.send(b"hello")
    assert (sending.__qualname__, sending.__name__) == ("TcpClient.send", "send")
    task = asyncio.ensure_future(sending)
    assert "coro=<TcpClient.send()" in repr(task)
    await bounded(task)
    assert await peer.recv_exactly(5) == b"hello"


async def test_tcp_client_recv_exactly(opened):
    client, peer = await opened.tcp()
    receiving = asyncio.ensure_future(bounded(client.recv_exactly(6)))
    await peer.send(b"abc")
    assert await still_pending(receiving)
    await peer.send(b"defg")
    assert await receiving == b"abcdef"
    peer.shutdown_write()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(client.recv_exactly(5))
    assert (excinfo.value.partial, excinfo.value.expected) == (b"g", 5)
    assert await bounded(client.recv()) == b""


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_tcp_client_framed_send_and_recv_message(opened, framing):
    client, peer = await opened.tcp(framing=framing)
    assert client.framing == framing
    await bounded(client.send(b"first"))
    await bounded(client.send(bytearray(b"")))
    await bounded(client.send(memoryview(b"third")))
    expected = encode(framing, b"first") + encode(framing, b"") + encode(framing, b"third")
    assert await peer.recv_exactly(len(expected)) == expected
    wire = encode(framing, b"one") + encode(framing, b"two") + encode(framing, b"three")
    await peer.send(wire[:5])
    receiving = asyncio.ensure_future(bounded(client.recv_message()))
    assert await still_pending(receiving, 0.02) == (len(encode(framing, b"one")) > 5)
    await peer.send(wire[5:])
    assert await receiving == b"one"
    assert await bounded(client.recv_message()) == b"two"
    assert await bounded(client.recv_message()) == b"three"
    peer.shutdown_write()
    assert await bounded(client.recv_message()) is None


async def test_tcp_client_line_framing_drops_carriage_return(opened):
    client, peer = await opened.tcp(framing="line")
    await peer.send(b"dos\r\nunix\n")
    assert await bounded(client.recv_message()) == b"dos"
    assert await bounded(client.recv_message()) == b"unix"


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_tcp_client_eof_in_the_middle_of_a_message(opened, framing):
    client, peer = await opened.tcp(framing=framing)
    await peer.send(encode(framing, b"whole") + encode(framing, b"cut short")[:-2])
    peer.shutdown_write()
    assert await bounded(client.recv_message()) == b"whole"
    with pytest.raises(EOFError):
        await bounded(client.recv_message())


async def test_tcp_client_recv_message_needs_framing(opened):
    client, _ = await opened.tcp()
    with pytest.raises(ValueError):
        await bounded(client.recv_message())


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_tcp_client_max_frame_size(opened, framing):
    client, peer = await opened.tcp(framing=framing, max_frame_size=16)
    await peer.send(encode(framing, b"small"))
    assert await bounded(client.recv_message()) == b"small"
    await peer.send(encode(framing, b"x" * 40))
    with pytest.raises(ValueError):
        await bounded(client.recv_message())
    # What follows the refused frame cannot be told apart: the client is closed, as the sync client is.
    assert client.closed
    assert await peer.recv_to_eof() == b""


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_tcp_client_request(opened, framing):
    client, peer = await opened.tcp(framing=framing)

    async def serve_two():
        for question, answer in ((b"q1", b"a1"), (b"q2", b"a22")):
            assert await peer.recv_exactly(len(encode(framing, question))) == encode(framing, question)
            await peer.send(encode(framing, answer))

    serving = asyncio.ensure_future(serve_two())
    assert await bounded(client.request(b"q1")) == b"a1"
    assert await bounded(client.request(b"q2")) == b"a22"
    await bounded(serving)


async def test_tcp_client_request_without_framing_returns_what_arrives(opened):
    client, peer = await opened.tcp()

    async def answer():
        assert await peer.recv_exactly(4) == b"ping"
        await peer.send(b"pong")

    answering = asyncio.ensure_future(answer())
    assert await bounded(client.request(b"ping")) == b"pong"
    await bounded(answering)


async def test_tcp_client_timeout_then_data_is_not_lost(opened):
    client, peer = await opened.tcp(framing="line", timeout=0.05)
    with pytest.raises(TimeoutError):
        await client.recv_message()
    await peer.send(b"par")
    with pytest.raises(TimeoutError):
        await client.recv_message()
    await peer.send(b"tial\nraw")
    assert await client.recv_message() == b"partial"
    with pytest.raises(TimeoutError):
        await client.recv_exactly(10)
    await peer.send(b"1234567")
    assert await client.recv_exactly(10) == b"raw1234567"
    with pytest.raises(TimeoutError):
        await client.recv()


@pytest.mark.parametrize("raw_read", ["recv", "recv_exactly"])
async def test_tcp_client_raw_reads_between_message_reads(opened, raw_read):
    """A raw read that takes bytes a message read had already searched leaves the next message intact."""
    client, peer = await opened.tcp(framing="line", timeout=0.05)
    await peer.send(b"abcdef")
    with pytest.raises(TimeoutError):
        await client.recv_message()
    assert await getattr(client, raw_read)(4) == b"abcd"
    await peer.send(b"x\nnext\n")
    assert await client.recv_message() == b"efx"
    assert await client.recv_message() == b"next"


@pytest.mark.parametrize("framing", [None, "line"])
async def test_tcp_client_request_when_the_peer_closes_first(opened, framing):
    """The connection ending before the reply is an error, as for the sync client, not an empty reply."""
    client, peer = await opened.tcp(framing=framing)
    peer.close()
    with pytest.raises(ConnectionError, match="before the reply"):
        await bounded(client.request(b"anyone"))


async def test_tcp_client_request_timeout_closes_the_connection(opened):
    """The reply may still come, and would be taken for the reply to the next request: a request that times out
    after it was sent closes the connection rather than leave it answering the wrong questions."""
    client, peer = await opened.tcp(framing="line", timeout=0.05)
    with pytest.raises(TimeoutError):
        await client.request(b"unanswered")
    assert await peer.recv_to_eof() == b"unanswered\n"
    assert client.closed
    with pytest.raises(OSError):
        await client.request(b"next")


async def test_tcp_client_cancelled_request_closes_the_connection(opened):
    client, peer = await opened.tcp(framing="line")
    requesting = asyncio.ensure_future(client.request(b"question"))
    assert await still_pending(requesting)
    requesting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await requesting
    assert await peer.recv_to_eof() == b"question\n"
    assert client.closed


async def test_tcp_client_concurrent_requests_each_get_their_own_reply(opened):
    client, peer = await opened.tcp(framing="line")

    async def answer_each_line():
        pending = b""
        while True:
            pending += await peer.recv()
            *lines, pending = pending.split(b"\n")
            for line in lines:
                await peer.send(b"re:" + line + b"\n")

    answering = asyncio.ensure_future(answer_each_line())
    try:
        questions = [f"q{i}".encode() for i in range(20)]
        replies = await bounded(asyncio.gather(*(client.request(q) for q in questions)))
        assert replies == [b"re:" + q for q in questions]
        assert await bounded(client.request(b"after")) == b"re:after"
    finally:
        answering.cancel()


async def test_tcp_client_close_with_a_timeout_drops_output_the_peer_never_reads(opened):
    client, _ = await opened.tcp(timeout=0.2)
    with pytest.raises(TimeoutError):
        await client.send(bytes(64 << 20))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bounded(client.close())
    assert loop.time() - started < 2.0
    assert client.closed


async def test_tcp_client_dropped_unclosed_closes_its_connection_with_a_resource_warning():
    """As a writer of open_connection() (and asyncio's, from Python 3.11.5) does: the connection is closed once its
    output is sent, with a warning naming the client. It stayed open, the peer waiting, until the loop closed."""
    loop = asyncio.get_running_loop()
    with socket.create_server((HOST, 0)) as listener:
        listener.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        # Not through opened.tcp(), which would keep the client for its teardown.
        client = await bounded(aio.TcpClient.connect(listener.getsockname()))
        raw, _ = await bounded(accepting)
        with raw:
            await bounded(client.send(b"last words"))
            warning = r"^unclosed <rsock\.aio\.TcpClient \('127\.0\.0\.1', \d+\) open>$"
            with pytest.warns(ResourceWarning, match=warning):
                del client
                gc.collect()
            assert await Peer(raw).recv_to_eof() == b"last words"


async def test_tcp_client_connects_to_an_ipv6_address_of_four(opened):
    if not ipv6_loopback_available():
        pytest.skip("this machine has no IPv6 loopback address (::1)")
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    opened.stack.callback(listener.close)
    address = listener.getsockname()
    assert len(address) == 4
    client = await bounded(aio.TcpClient.connect(address))
    opened.stack.push_async_callback(client.close)
    assert client.peer[:2] == address[:2]


async def _connected_peer(connecting):
    """The peer a connected client reports, or the error's type and message."""
    try:
        client = await connecting
    except Exception as exc:
        return type(exc), str(exc)
    try:
        return client.peer
    finally:
        closing = client.close()  # the sync client's close() returns None, the async one's a coroutine
        if closing is not None:
            await closing


async def test_tcp_client_takes_ipv6_four_tuples_as_the_sync_client_does(opened):
    """The flowinfo and scope_id of a four-tuple reach connect(), and an IPv4 four-tuple is refused: the
    flowinfo and scope_id used to be dropped, so a link-local server's address (with its scope) could not be
    connected to."""
    if not ipv6_loopback_available():
        pytest.skip("this machine has no IPv6 loopback address (::1)")
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=16)
    opened.stack.callback(listener.close)
    port = listener.getsockname()[1]
    scope = socket.if_nametoindex("lo")
    addresses = [("::1", port, 0, scope), ("::1", port, 7, 0), ("127.0.0.1", port, 0, 0), ("::1", port, 1 << 20, 0)]
    for address in addresses:

        async def sync_connect(address=address):
            return rsock.TcpClient(address, timeout=TIMEOUT)

        expected = await _connected_peer(sync_connect())
        assert await _connected_peer(aio.TcpClient.connect(address, timeout=TIMEOUT)) == expected, address
    assert await _connected_peer(aio.TcpClient.connect(("::1", port, 7, scope))) == ("::1", port, 0, 0)


@pytest.mark.parametrize("port", [65536 + 9, -1])
async def test_tcp_client_port_out_of_range_raises_overflowerror(port):
    """Not wrapped round to another port by the resolver (as uvloop's open_connection does); the sync clients
    and asyncio's own loop raise the same."""
    with pytest.raises(OverflowError, match="port must be 0-65535"):
        await bounded(aio.TcpClient.connect((HOST, port)))
    with pytest.raises(OverflowError, match="port must be 0-65535"):
        await bounded(aio.open_connection(HOST, port))


async def test_tcp_client_two_concurrent_receivers(opened):
    client, peer = await opened.tcp(framing="line")
    first = asyncio.ensure_future(bounded(client.recv_message()))
    assert await still_pending(first, 0.01)
    with pytest.raises(RuntimeError):
        await bounded(client.recv_message())
    await peer.send(b"for the first\n")
    assert await first == b"for the first"


async def test_tcp_client_cancelled_recv_message_keeps_data(opened):
    client, peer = await opened.tcp(framing="length")
    task = asyncio.ensure_future(client.recv_message())
    await peer.send(encode("length", b"a message")[:6])
    assert await still_pending(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await peer.send(encode("length", b"a message")[6:])
    assert await bounded(client.recv_message()) == b"a message"


async def test_tcp_client_peer_reset(opened):
    client, peer = await opened.tcp(framing="line")
    receiving = asyncio.ensure_future(bounded(client.recv_message()))
    assert await still_pending(receiving, 0.01)
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await receiving


async def test_tcp_client_close_and_async_with(opened):
    listener = socket.create_server((HOST, 0))
    opened.stack.callback(listener.close)
    async with await bounded(aio.TcpClient.connect(listener.getsockname(), framing="line")) as client:
        conn, _ = listener.accept()
        opened.stack.callback(conn.close)
        await bounded(client.send(b"inside"))
    assert client.closed
    assert "closed" in repr(client)
    await bounded(client.close())
    other = Peer(conn)
    assert await other.recv_to_eof() == b"inside\n"


async def test_tcp_client_send_after_close_raises(opened):
    """As rsock.TcpClient.send does on a closed client (OSError EBADF), rather than dropping the message."""
    client, _ = await opened.tcp(framing="line")
    await bounded(client.close())
    with pytest.raises(OSError):
        await bounded(client.send(b"lost?"))


async def test_tcp_client_connect_refused():
    unused = socket.socket()
    unused.bind((HOST, 0))
    try:
        with pytest.raises(ConnectionRefusedError):
            await bounded(aio.TcpClient.connect(unused.getsockname()))
    finally:
        unused.close()


@pytest.mark.parametrize(
    "call",
    [lambda c: c.recv(), lambda c: c.recv_message(), lambda c: c.recv_exactly(3), lambda c: c.request(b"x")],
    ids=["recv", "recv_message", "recv_exactly", "request"],
)
async def test_tcp_client_timeout_says_timed_out_as_the_sync_client(opened, call):
    """asyncio.wait_for()'s TimeoutError has no message; the sync client's says "timed out", as a socket's does."""
    client, _ = await opened.tcp(framing="line", timeout=0.05)
    with (
        socket.create_server((HOST, 0)) as listener,
        rsock.TcpClient(listener.getsockname(), framing="line", timeout=0.05) as sync_client,
    ):
        sync_exc = _raised(lambda: call(sync_client))
    async_exc = await _raised_async(call(client))
    assert (type(async_exc), str(async_exc)) == (type(sync_exc), str(sync_exc)) == (TimeoutError, "timed out")


async def test_udp_recvfrom_timeout_says_timed_out_as_the_sync_client(opened):
    with rsock.UdpClient((HOST, 0)) as sync_client:
        sync_exc = _raised(lambda: sync_client.recvfrom(timeout=0.05))
    async_exc = await _raised_async(opened.udp().recvfrom(timeout=0.05))
    assert (type(async_exc), str(async_exc)) == (type(sync_exc), str(sync_exc)) == (TimeoutError, "timed out")


async def test_tcp_client_connect_timeout():
    """A listener whose accept queue is full drops further SYNs, so connecting waits: the timeout bounds it."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        with pytest.raises(TimeoutError, match=r"^timed out$"):
            await asyncio.wait_for(aio.TcpClient.connect(listener.getsockname(), timeout=0.2), TIMEOUT)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_tcp_client_rejects_bad_framing():
    listener = socket.create_server((HOST, 0))
    try:
        with pytest.raises(ValueError):
            await bounded(aio.TcpClient.connect(listener.getsockname(), framing="lines"))
    finally:
        listener.close()


# ---------------------------------------------------------------------------------------------------------------
# UdpClient


async def udp(awaitable, timeout=TIMEOUT):
    """`bounded(awaitable)` for the UdpClient's calls. A loop without sock_sendto()/sock_recvfrom() (uvloop raises
    NotImplementedError) is reported without the traceback through uvloop's Cython source: pytest's rendering of
    that traceback trips a CPython 3.11.7 bug in `ast` (SystemError, an INTERNALERROR that ends the whole run)."""
    try:
        return await bounded(awaitable, timeout)
    except NotImplementedError as exc:
        raise AssertionError(f"rsock.aio.UdpClient uses a loop method this loop lacks: {exc!r}") from None


async def test_udp_clients_exchange_datagrams(opened):
    a = opened.udp()
    b = opened.udp()
    assert a.local[0] == HOST
    assert await udp(a.sendto(b"hello", b.local)) == 5
    assert await udp(b.recvfrom()) == (b"hello", a.local)
    await udp(b.sendto(bytearray(b"back"), a.local))
    assert await udp(a.recvfrom(timeout=TIMEOUT)) == (b"back", b.local)


async def test_udp_unbound_client_gets_the_reply(opened):
    responder = await opened.responder()
    client = opened.udp(address=None)
    await udp(client.sendto(b"ping", responder.address))
    assert await udp(client.recvfrom()) == (b"re: ping", responder.address)
    assert responder.received == [(b"ping", (HOST, client.local[1]))]


async def test_udp_recvfrom_timeout_then_datagram_is_not_lost(opened):
    client = opened.udp()
    other = opened.udp()
    with pytest.raises(TimeoutError):
        await udp(client.recvfrom(timeout=0.05))
    await udp(other.sendto(b"late", client.local))
    assert await udp(client.recvfrom(timeout=TIMEOUT)) == (b"late", other.local)


async def test_udp_recvfrom_cancelled_then_datagram_is_not_lost(opened):
    client = opened.udp()
    other = opened.udp()
    task = asyncio.ensure_future(udp(client.recvfrom()))
    assert await still_pending(task, 0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await udp(other.sendto(b"after", client.local))
    assert await udp(client.recvfrom()) == (b"after", other.local)


async def test_udp_datagram_larger_than_bufsize_raises_emsgsize(opened):
    client = opened.udp()
    other = opened.udp()
    await udp(other.sendto(b"x" * 20, client.local))
    await udp(other.sendto(b"small", client.local))
    with pytest.raises(OSError) as excinfo:
        await udp(client.recvfrom(10))
    assert excinfo.value.errno == errno.EMSGSIZE
    assert await udp(client.recvfrom(10)) == (b"small", other.local)


async def test_udp_datagram_of_exactly_bufsize(opened):
    client = opened.udp()
    other = opened.udp()
    await udp(other.sendto(b"y" * 10, client.local))
    assert await udp(client.recvfrom(10)) == (b"y" * 10, other.local)


async def test_udp_oversized_sendto_raises_emsgsize(opened):
    client = opened.udp()
    responder = await opened.responder()
    with pytest.raises(OSError) as excinfo:
        await udp(client.sendto(b"z" * 65508, responder.address))
    assert excinfo.value.errno == errno.EMSGSIZE
    await udp(client.sendto(b"z" * 65507, responder.address))
    await bounded(responder.arrived.wait())
    assert [len(data) for data, _ in responder.received] == [65507]


async def test_udp_request(opened):
    responder = await opened.responder()
    client = opened.udp()
    assert await udp(client.request(b"question", responder.address)) == b"re: question"


async def test_udp_request_resends_until_answered(opened):
    seen = []

    def answer_the_third(data, addr):
        seen.append(data)
        return b"finally" if len(seen) == 3 else None

    responder = await opened.responder(answer_the_third)
    client = opened.udp()
    assert await udp(client.request(b"again", responder.address, timeout=0.05, retries=3)) == b"finally"
    assert seen == [b"again"] * 3


async def test_udp_request_gives_up_after_retries(opened):
    responder = await opened.responder(lambda data, addr: None)
    client = opened.udp()
    with pytest.raises(TimeoutError, match=r"after 3 attempts$"):
        await udp(client.request(b"anyone?", responder.address, timeout=0.05, retries=2))
    assert [data for data, _ in responder.received] == [b"anyone?"] * 3
    with pytest.raises(TimeoutError, match=r"after 1 attempt$"):
        await udp(client.request(b"once", responder.address, timeout=0.05, retries=0))


@pytest.mark.parametrize("family", [socket.AF_UNIX, socket.AF_PACKET, 12345])
async def test_udp_client_of_a_family_other_than_inet_is_refused(family):
    """As the sync client: another family's client could send, but never match a reply to its request."""
    with pytest.raises(ValueError, match="family must be AF_INET or AF_INET6"):
        rsock.aio.UdpClient(family=family)


@pytest.mark.parametrize("family", ["inet", 2.0])
async def test_udp_client_family_of_another_type_is_a_type_error_as_for_the_sync_client(family):
    with pytest.raises(TypeError):
        rsock.UdpClient(family=family)
    with pytest.raises(TypeError):
        rsock.aio.UdpClient(family=family)


async def test_udp_request_discards_late_replies_to_earlier_requests(opened):
    """A reply that comes after its request timed out is not taken for the reply to the next request."""
    answer_later = []

    def slow_first(data, addr):
        if not answer_later:
            answer_later.append((data, addr))
            return None
        return b"re: " + data

    responder = await opened.responder(slow_first)
    client = opened.udp()
    with pytest.raises(TimeoutError):
        await udp(client.request(b"first", responder.address, timeout=0.05, retries=0))
    late, addr = answer_later[0]
    responder.transport.sendto(b"re: " + late, addr)  # the first reply, late
    await asyncio.sleep(0.05)
    assert await udp(client.request(b"second", responder.address, retries=0)) == b"re: second"


async def test_udp_concurrent_requests_each_get_their_own_reply(opened):
    responder = await opened.responder()
    client = opened.udp()
    questions = [f"q{i}".encode() for i in range(20)]
    replies = await udp(asyncio.gather(*(client.request(q, responder.address) for q in questions)))
    assert replies == [b"re: " + q for q in questions]


async def test_udp_client_used_by_another_loop_after_this_one_takes_turns_there_too(opened, loop_factory):
    """A client outlives the loop it first contended under (made outside any loop, used by successive asyncio.run()
    calls): concurrent requests on the next loop take turns there too, instead of failing on a lock of the first."""
    client = opened.udp()
    loop = asyncio.get_running_loop()

    def answer_later(data, addr):
        # Not at once: each request is still waiting for its reply when the next one asks for its turn.
        loop.call_later(0.02, responder.transport.sendto, b"re: " + data, addr)

    responder = await opened.responder(answer_later)

    async def ask_concurrently(tag):
        asking = [client.request(b"%s %d" % (tag, i), responder.address, timeout=TIMEOUT) for i in range(3)]
        return await bounded(asyncio.gather(*asking))

    def on_another_loop():
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(ask_concurrently(b"second"))

    assert await ask_concurrently(b"first") == [b"re: first 0", b"re: first 1", b"re: first 2"]
    assert await asyncio.to_thread(on_another_loop) == [b"re: second 0", b"re: second 1", b"re: second 2"]


async def test_udp_request_port_out_of_range_raises_overflowerror(opened):
    client = opened.udp()
    with pytest.raises(OverflowError, match="port must be 0-65535"):
        await udp(client.request(b"x", (HOST, 65536 + 9)))


async def test_udp_request_to_a_host_name(opened):
    responder = await opened.responder()
    client = opened.udp()
    address = ("localhost", responder.address[1])
    assert await udp(client.request(b"by name", address, timeout=TIMEOUT, retries=0)) == b"re: by name"


async def test_udp_two_calls_waiting_at_once(opened):
    """A call that gives up waiting (a timeout) leaves another waiting call of the same client watching the socket."""
    client = opened.udp()
    sender = opened.udp()
    first = asyncio.ensure_future(client.recvfrom())
    assert await still_pending(first)
    with pytest.raises(TimeoutError):
        await udp(client.recvfrom(timeout=0.05))
    await udp(sender.sendto(b"for the first", client.local))
    assert await bounded(first) == (b"for the first", sender.local)


async def test_udp_close_ends_the_waiting_calls_as_the_sync_clients_close_does(opened):
    """Every call waiting, the one waiting on the socket and a request waiting its turn behind it, fails as a
    call on the closed socket does, and as the sync client's waiting calls do (the first said "the client was
    closed", the others "Bad file descriptor")."""
    responder = await opened.responder(lambda data, addr: None)
    client = opened.udp()
    fd = client.fileno()
    assert fd >= 0 and not client.closed
    waiting = [asyncio.ensure_future(client.request(b"?", responder.address, timeout=TIMEOUT)) for _ in range(2)]
    waiting.append(asyncio.ensure_future(client.recvfrom()))
    assert await still_pending(asyncio.gather(*waiting))
    client.close()
    errors = [await bounded(asyncio.gather(call, return_exceptions=True)) for call in waiting]
    assert client.closed
    sync_client = rsock.UdpClient()
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, sync_client.close)
    with pytest.raises(OSError) as sync_error:
        await loop.run_in_executor(None, functools.partial(sync_client.recvfrom, timeout=TIMEOUT))
    expected = (OSError, errno.EBADF, str(sync_error.value))
    assert [(type(exc), exc.errno, str(exc)) for [exc] in errors] == [expected] * 3


async def test_udp_request_ignores_datagrams_from_others(opened):
    intruder = await opened.responder(lambda data, addr: None)

    def intrude_then_answer(data, addr):
        intruder.transport.sendto(b"not the reply", addr)
        return b"the reply"

    responder = await opened.responder(intrude_then_answer)
    client = opened.udp()
    assert await udp(client.request(b"q", responder.address, timeout=TIMEOUT, retries=0)) == b"the reply"


async def test_udp_client_close_and_async_with(opened):
    responder = await opened.responder()
    async with aio.UdpClient((HOST, 0)) as client:
        assert await udp(client.request(b"in", responder.address)) == b"re: in"
    with pytest.raises(OSError):
        await udp(client.sendto(b"after close", responder.address))
    client.close()


async def test_udp_client_ipv6(opened):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    a = opened.udp(("::1", 0))
    b = opened.udp(address=None, family=socket.AF_INET6)
    await udp(b.sendto(b"six", a.local[:2]))
    data, sender = await udp(a.recvfrom())
    assert data == b"six"
    assert sender[0] == "::1"
    with pytest.raises(OSError) as excinfo:
        await udp(b.sendto(b"w" * 65528, a.local[:2]))
    assert excinfo.value.errno == errno.EMSGSIZE


# ---------------------------------------------------------------------------------------------------------------
# The same bad input raises the same as on the sync clients


def _raised(call):
    try:
        call()
    except Exception as exc:
        return exc
    pytest.fail(f"{call} returned")


async def _raised_async(awaitable):
    try:
        await bounded(awaitable)
    except Exception as exc:
        return exc
    pytest.fail("the call returned")


BAD_CONNECTS = {
    "address as a string": ({"address": "127.0.0.1:80"}, TypeError),
    "negative timeout": ({"timeout": -1}, ValueError),
    # settimeout() finds -inf out of range before it finds it negative.
    "timeout -inf": ({"timeout": float("-inf")}, OverflowError),
    "timeout inf": ({"timeout": float("inf")}, OverflowError),
    "timeout NaN": ({"timeout": float("nan")}, ValueError),
    "timeout of a wrong type": ({"timeout": "soon"}, TypeError),
    "max_frame_size 0": ({"max_frame_size": 0}, ValueError),
    "max_frame_size -1": ({"max_frame_size": -1}, ValueError),
}


@pytest.mark.parametrize(("kwargs", "error"), BAD_CONNECTS.values(), ids=BAD_CONNECTS.keys())
async def test_tcp_client_bad_connect_arguments_raise_as_the_sync_client(kwargs, error):
    with socket.create_server((HOST, 0)) as listener:
        kwargs = {"address": listener.getsockname(), **kwargs}
        address = kwargs.pop("address")
        sync_exc = _raised(lambda: rsock.TcpClient(address, **kwargs).close())
        async_exc = await _raised_async(aio.TcpClient.connect(address, **kwargs))
    assert type(async_exc) is type(sync_exc) is error


# An address's port or shape the sync clients refuse before any resolving (the resolver would take a float, a
# service name, None as port 0): `port(real_port)` is the address given.
BAD_ADDRESSES = {
    "float port": lambda port: (HOST, float(port)),
    "None port": lambda port: (HOST, None),
    "str port": lambda port: (HOST, str(port)),
    "list": lambda port: [HOST, port],
    "1-tuple": lambda port: (HOST,),
    "1-list": lambda port: [HOST],
}


# What a TcpClient takes as create_connection() does, and the datagram clients refuse as sendto() does.
CONNECT_FORMS = {
    "str port": lambda port: (HOST, str(port)),
    "bytes port": lambda port: (HOST, str(port).encode()),
    "list": lambda port: [HOST, port],
    "list with a name": lambda port: ["localhost", port],
}
BAD_CONNECT_ADDRESSES = {name: spell for name, spell in BAD_ADDRESSES.items() if name not in CONNECT_FORMS}


@pytest.mark.parametrize("address", CONNECT_FORMS.values(), ids=CONNECT_FORMS.keys())
async def test_tcp_client_connects_to_the_create_connection_forms_the_sync_client_takes(address):
    with socket.create_server((HOST, 0)) as listener:
        address = address(listener.getsockname()[1])
        with rsock.TcpClient(address, timeout=TIMEOUT) as sync_client:
            expected = sync_client.peer
        client = await bounded(aio.TcpClient.connect(address, timeout=TIMEOUT))
        async with client:
            assert client.peer == expected


# Service ports int() would read and the C library's getaddrinfo() reads otherwise: the TcpClients hand a str port to
# the resolver, as create_connection() does (rsock.aio's took int() of it, as open_connection() does beside an IP
# address).
ODD_SERVICE_PORTS = {
    "underscore": lambda port: f"{port // 10}_{port % 10}",
    "space": lambda port: f" {port}",
    "arabic digits": lambda port: str(port).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    "NUL": lambda port: f"{port}\0",
}


@pytest.mark.parametrize("spell", ODD_SERVICE_PORTS.values(), ids=ODD_SERVICE_PORTS.keys())
async def test_tcp_client_reads_a_str_port_as_the_sync_client_does(spell):
    if on_uvloop():
        pytest.skip("uvloop's resolver reads a port its own way; the sync client's reference is the C library's")
    with socket.create_server((HOST, 0)) as listener:
        address = (HOST, spell(listener.getsockname()[1]))

        def sync_peer():
            with rsock.TcpClient(address, timeout=TIMEOUT) as client:
                return client.peer

        async def async_peer():
            async with await aio.TcpClient.connect(address, timeout=TIMEOUT) as client:
                return client.peer

        assert await _outcome_async(async_peer()) == _outcome(sync_peer)


@pytest.mark.parametrize("address", BAD_CONNECT_ADDRESSES.values(), ids=BAD_CONNECT_ADDRESSES.keys())
async def test_tcp_client_connect_to_a_bad_address_raises_as_the_sync_client(address):
    with socket.create_server((HOST, 0)) as listener:
        address = address(listener.getsockname()[1])
        sync_exc = _raised(lambda: rsock.TcpClient(address, timeout=TIMEOUT).close())
        async_exc = await _raised_async(aio.TcpClient.connect(address, timeout=TIMEOUT))
    assert (type(async_exc), str(async_exc)) == (type(sync_exc), str(sync_exc))
    assert isinstance(sync_exc, TypeError)


@pytest.mark.parametrize("method", ["sendto", "request"])
@pytest.mark.parametrize("address", BAD_ADDRESSES.values(), ids=BAD_ADDRESSES.keys())
async def test_udp_client_to_a_bad_address_raises_as_the_sync_client(opened, address, method):
    responder = await opened.responder()
    address = address(responder.address[1])
    kwargs = {"timeout": 0.05, "retries": 0} if method == "request" else {}
    with rsock.UdpClient() as sync_client:
        sync_exc = _raised(lambda: getattr(sync_client, method)(b"x", address, **kwargs))
    async_exc = await _raised_async(getattr(opened.udp(), method)(b"x", address, **kwargs))
    assert (type(async_exc), str(async_exc)) == (type(sync_exc), str(sync_exc))
    assert isinstance(sync_exc, TypeError)


# Hosts the socket reads itself, as the stdlib's does, where the resolver would read them otherwise or not at all.
HOST_SPELLINGS = {
    "bytearray": bytearray(HOST.encode()),
    "None": None,
    "empty (every address)": "",
    "<broadcast>": "<broadcast>",
    "<broadcast> bytes": b"<broadcast>",
}


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("host", HOST_SPELLINGS.values(), ids=HOST_SPELLINGS.keys())
async def test_udp_request_reads_a_host_as_the_sync_client(host, family):
    """A request to a bytearray host is answered; None is a TypeError, "<broadcast>" not allowed (or of the other
    family), "" every address, which no reply comes from: each as the sync client's (the async one asked the
    resolver, which takes None as the loopback address and refuses the others)."""
    # A responder on its own thread: the sync client's request blocks the loop.
    with rsock.UdpServer((HOST, 0), lambda data, addr: b"re: " + data) as responder:
        responder.start()
        address = (host, responder.address[1])
        with rsock.UdpClient(family=family) as sync_client:
            sync_outcome = _outcome(lambda: sync_client.request(b"x", address, timeout=0.2, retries=0))
        async with aio.UdpClient(family=family) as async_client:
            async_outcome = await _outcome_async(async_client.request(b"x", address, timeout=0.2, retries=0))
    assert async_outcome == sync_outcome
    if family == socket.AF_INET and isinstance(host, bytearray):
        assert sync_outcome == b"re: x"


def _outcome(call):
    try:
        return call()
    except Exception as exc:
        return type(exc), str(exc)


async def _outcome_async(awaitable):
    try:
        return await bounded(awaitable)
    except Exception as exc:
        return type(exc), str(exc)


# Beyond a C ssize_t, rsock.aio's clamped the size (asyncio's StreamReader reads so) and waited for data.
BAD_SIZES = {"-1": -1, "2**70": 2**70, "-2**70": -(2**70), "str": "4", "float": 4.0}


@pytest.mark.parametrize("method", ["recv", "recv_exactly"])
@pytest.mark.parametrize("size", BAD_SIZES.values(), ids=BAD_SIZES.keys())
async def test_tcp_client_bad_sizes_raise_as_the_sync_client(opened, method, size):
    def call(c):
        return getattr(c, method)(size)

    client, _ = await opened.tcp()
    with socket.create_server((HOST, 0)) as listener, rsock.TcpClient(listener.getsockname()) as sync_client:
        sync_exc = _raised(lambda: call(sync_client))
    async_exc = await _raised_async(call(client))
    assert (type(async_exc), str(async_exc)) == (type(sync_exc), str(sync_exc))


async def test_tcp_client_recv_after_close_raises_ebadf_as_the_sync_client(opened):
    client, _ = await opened.tcp()
    await client.close()
    with socket.create_server((HOST, 0)) as listener:
        sync_client = rsock.TcpClient(listener.getsockname())
        sync_client.close()
        sync_exc = _raised(sync_client.recv)
    async_exc = await _raised_async(client.recv())
    assert type(async_exc) is type(sync_exc) is OSError
    assert async_exc.errno == sync_exc.errno == errno.EBADF


WAITING_CALLS = {
    "recv": lambda c: c.recv(),
    "recv_message": lambda c: c.recv_message(),
    "recv_exactly": lambda c: c.recv_exactly(4),
    "request": lambda c: c.request(b"question"),
}


# recv() is left out with part of a message in: it returns that part at once.
@pytest.mark.parametrize(
    ("call", "partial"),
    [(call, False) for call in WAITING_CALLS.values()]
    + [(call, True) for name, call in WAITING_CALLS.items() if name != "recv"],
    ids=[*WAITING_CALLS, *(f"{name}, part of a message in" for name in WAITING_CALLS if name != "recv")],
)
async def test_tcp_client_close_ends_the_calls_waiting_with_ebadf(opened, call, partial):
    """A call waiting when close() is called ends as a call after close() does (and as the sync client's waiting
    calls do), not as if the peer had closed the connection: with part of a message in, recv_message() and request()
    raised EOFError ("connection closed in the middle of a message")."""
    client, peer = await opened.tcp(framing="line")
    if partial:
        await peer.send(b"par")
        await asyncio.sleep(0.05)  # for it to be read before the call waits
    waiting = asyncio.ensure_future(call(client))
    assert await still_pending(waiting)
    await bounded(client.close())
    with pytest.raises(OSError) as raised:
        await bounded(waiting)
    assert raised.value.errno == errno.EBADF


PEER_CLOSED = {
    "recv": (lambda c: c.recv(), b""),
    "recv_message": (lambda c: c.recv_message(), None),
    "recv_exactly": (lambda c: c.recv_exactly(4), asyncio.IncompleteReadError),
    "request": (lambda c: c.request(b"question"), ConnectionError),
}


@pytest.mark.parametrize(("call", "outcome"), PEER_CLOSED.values(), ids=PEER_CLOSED.keys())
async def test_tcp_client_calls_waiting_when_the_peer_closes_see_the_end_of_the_stream(opened, call, outcome):
    client, peer = await opened.tcp(framing="line")
    waiting = asyncio.ensure_future(call(client))
    assert await still_pending(waiting)
    peer.close()
    if isinstance(outcome, type):
        with pytest.raises(outcome) as raised:
            await bounded(waiting)
        assert getattr(raised.value, "errno", None) != errno.EBADF
    else:
        assert await bounded(waiting) == outcome


BAD_UDP_CALLS = {
    "recvfrom(-1)": (lambda c, addr: c.recvfrom(-1), ValueError),
    "recvfrom(timeout=-1)": (lambda c, addr: c.recvfrom(timeout=-1), ValueError),
    "request(retries=-1)": (lambda c, addr: c.request(b"x", addr, retries=-1), ValueError),
    "request(timeout=-1)": (lambda c, addr: c.request(b"x", addr, timeout=-1), ValueError),
    "request(timeout=None)": (lambda c, addr: c.request(b"x", addr, timeout=None), TypeError),
}


@pytest.mark.parametrize(("call", "error"), BAD_UDP_CALLS.values(), ids=BAD_UDP_CALLS.keys())
async def test_udp_client_bad_arguments_raise_as_the_sync_client(opened, call, error):
    target = (HOST, 9)
    with rsock.UdpClient() as sync_client:
        sync_exc = _raised(lambda: call(sync_client, target))
    async_exc = await _raised_async(call(opened.udp(), target))
    assert type(async_exc) is type(sync_exc) is error


UDP_BIND_ADDRESSES = {
    "None host": (None, 0),
    "empty host": ("", 0),
    "bytes host": (b"127.0.0.1", 0),
    "host name": ("localhost", 0),
    "IPv6 host": ("::1", 0),
    "IPv6 bytes host": (b"::1", 0),
    "IPv6 with flowinfo": ("::1", 0, 0),
    "IPv6 of four": ("::1", 0, 0, 0),
    "IPv4 with flowinfo": ("127.0.0.1", 0, 0),
    "float port": ("127.0.0.1", 1.5),
    "None port": ("127.0.0.1", None),
    "str port": ("127.0.0.1", "0"),
    "port out of range": ("127.0.0.1", 70000),
    "1-tuple": ("127.0.0.1",),
    "list": ["127.0.0.1", 0],
    "str": "127.0.0.1:0",
}


def _bound(client_type, address, family=None):
    """What making a `client_type` of `family` bound to `address` gives: the host it bound and its address's length
    (4 for IPv6), or the error's type and message."""
    try:
        client = client_type(address) if family is None else client_type(address, family=family)
    except Exception as exc:
        return type(exc), str(exc)
    with contextlib.closing(client):
        return client.local[0], len(client.local)


@pytest.mark.parametrize("family", [None, socket.AF_INET, socket.AF_INET6], ids=["no family", "AF_INET", "AF_INET6"])
@pytest.mark.parametrize("address", UDP_BIND_ADDRESSES.values(), ids=UDP_BIND_ADDRESSES.keys())
async def test_udp_client_binds_the_address_forms_the_sync_client_binds(address, family):
    if ("::1" in str(address) or family == socket.AF_INET6) and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    assert _bound(aio.UdpClient, address, family) == _bound(rsock.UdpClient, address, family)


async def test_udp_recvfrom_with_timeout_zero_returns_a_queued_datagram(opened):
    client = opened.udp()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"queued", client.local)
        await asyncio.sleep(0.05)
        assert (await client.recvfrom(timeout=0))[0] == b"queued"
        with pytest.raises(TimeoutError):
            await client.recvfrom(timeout=0)


@pytest.mark.parametrize("host", ["127.0.0.1\x00.example", b"127.0.0.1\x00.example"], ids=["str", "bytes"])
async def test_tcp_client_a_host_with_a_nul_is_a_type_error_as_the_sync_client_finds_it(host):
    """The resolver reads a name only up to its NUL: rsock.aio's client connected to 127.0.0.1 for this one."""
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(TypeError) as sync_raised:
            rsock.TcpClient((host, port), timeout=TIMEOUT)
        with pytest.raises(TypeError) as raised:
            await bounded(aio.TcpClient.connect((host, port), timeout=TIMEOUT))
    assert str(raised.value) == str(sync_raised.value) == "host name must not contain null character"


@pytest.mark.parametrize("call", ["recv_message", "recv", "send"])
async def test_tcp_client_calls_after_a_peer_reset_raise_connection_reset_not_ebadf(opened, call):
    """A reset closes the client, and the calls after it raised EBADF, as if this client had been closed; asyncio's
    streams and the sync client report ConnectionResetError."""
    client, peer = await opened.tcp(framing="line")
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()
    with pytest.raises(ConnectionResetError):
        await bounded(client.recv_message())  # the call that meets the reset
    args = {"recv_message": (), "recv": (10,), "send": (b"x",)}[call]
    with pytest.raises(ConnectionResetError):
        await bounded(getattr(client, call)(*args))


# (client arguments, what the peer sends before its reset, the calls made after it; ("closed",) reads the property)
BEFORE_A_RESET = {
    "messages": ({"framing": "line"}, b"a\nb\n", [("closed",)] + [("recv_message",)] * 3 + [("closed",)]),
    "an empty line": ({"framing": "line"}, b"\nx\n", [("recv_message",)] * 3),
    "an empty frame": ({"framing": "length"}, struct.pack(">II", 0, 1) + b"x", [("recv_message",)] * 3),
    "a message and part of one": ({"framing": "line"}, b"a\nb", [("recv_message",)] * 2 + [("recv", 10)]),
    "an oversize frame": (
        {"framing": "line", "max_frame_size": 4},
        b"too long\n",
        [("recv_message",), ("closed",), ("recv", 10)],
    ),
    "raw bytes": ({}, b"abcdef", [("recv", 4), ("recv", 4), ("recv", 4)]),
    "raw, recv_exactly": ({}, b"abcdef", [("recv_exactly", 4), ("recv_exactly", 4), ("recv", 4)]),
    "raw, zero bytes": ({}, b"abc", [("recv", 0), ("recv_exactly", 0), ("recv", 10), ("closed",)]),
}


def _sync_reads_after_a_reset(kwargs, sent, calls):
    def call(client, name, *args):
        return getattr(client, name) if name == "closed" else getattr(client, name)(*args)

    with socket.create_server((HOST, 0)) as listener:
        with rsock.TcpClient(listener.getsockname(), timeout=TIMEOUT, **kwargs) as client:
            peer, _ = listener.accept()
            peer.sendall(sent)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
            return [_outcome(functools.partial(call, client, *each)) for each in calls]


@pytest.mark.parametrize(("kwargs", "sent", "calls"), BEFORE_A_RESET.values(), ids=BEFORE_A_RESET.keys())
async def test_tcp_client_reads_what_came_before_a_reset_as_the_sync_client(opened, kwargs, sent, calls):
    """What arrived before a peer's reset is read first (an empty message too; an oversize frame is the ValueError
    that closes the client), then ConnectionResetError comes, leaving a part of a message or of recv_exactly()'s
    bytes for a read that takes it, as the sync client (and the kernel's own receive queue) give it; the reset does
    not close the client. rsock.aio's client raised the reset at once, dropping whole messages it had (asyncio's
    StreamReader drops them too; its streams keep that)."""

    async def call(name, *args):
        return getattr(client, name) if name == "closed" else await getattr(client, name)(*args)

    client, peer = await opened.tcp(**kwargs)
    await peer.send(sent)
    peer.reset()
    # Until the client's transport has met the reset, with what came before it buffered (else the reads below take
    # it from the kernel, as the sync client does, and the transport's own rules go untested).
    async with asyncio.timeout(TIMEOUT):
        while client._transport.exception() is None:
            await asyncio.sleep(0.01)
    outcomes = [await _outcome_async(call(*each)) for each in calls]
    assert outcomes == _sync_reads_after_a_reset(kwargs, sent, calls)


async def test_tcp_client_send_waiting_for_room_raises_ebadf_when_the_client_closes_itself(opened):
    """An oversize frame closes the client at once, dropping its queued output: a send() still waiting for room
    returned None, as if its message had gone out. It raises EBADF, as the sync client's send() that a close() cut
    off does."""
    client, peer = await opened.tcp(framing="line", max_frame_size=100)
    sending = asyncio.ensure_future(client.send(b"x" * (32 << 20)))  # the peer does not read
    assert await still_pending(sending, within=0.2)
    await peer.send(b"y" * 200 + b"\n")
    with pytest.raises(ValueError, match="max_frame_size"):
        await bounded(client.recv_message())
    with pytest.raises(OSError) as raised:
        await bounded(sending)
    assert raised.value.errno == errno.EBADF


async def test_tcp_client_close_with_output_queued_ends_a_waiting_read_at_once(opened):
    """close() without a timeout waits for the queued output to go out; a read already waiting stayed waiting with
    it (until the peer read everything). It ends with EBADF at once, as a read after close() does, and the output
    still goes out whole."""
    client, peer = await opened.tcp()
    size = 16 << 20
    sending = asyncio.ensure_future(client.send(b"x" * size))  # the peer does not read yet
    reading = asyncio.ensure_future(client.recv())
    assert await still_pending(sending, within=0.2)
    closing = asyncio.ensure_future(client.close())
    with pytest.raises(OSError) as raised:
        await bounded(reading, timeout=1.0)
    assert raised.value.errno == errno.EBADF
    assert not closing.done()
    assert len(await peer.recv_to_eof()) == size
    await bounded(closing)
    await bounded(sending)


async def test_tcp_client_close_with_a_request_waiting_still_sends_the_queued_output(opened):
    """close() without a timeout sends what is queued. A request() waiting for its reply ends with EBADF at once, and
    its ending aborted the client, dropping the rest of its own message on the way out."""
    client, peer = await opened.tcp(framing="length")
    message = b"q" * (16 << 20)
    requesting = asyncio.ensure_future(client.request(message))  # the peer does not read yet
    assert await still_pending(requesting, within=0.2)
    closing = asyncio.ensure_future(client.close())
    with pytest.raises(OSError) as raised:
        await bounded(requesting)
    assert raised.value.errno == errno.EBADF
    assert await peer.recv_to_eof() == encode("length", message)
    await bounded(closing)


async def test_tcp_client_request_meeting_a_reset_raises_and_closes_as_the_sync_client(opened):
    """A peer pushes more than the client buffers (the transport stops reading), then resets: the request's send
    meets the reset. rsock.aio's returned the first pushed message as the reply. As the sync client's, the request
    raises ConnectionResetError and closes the client: later reads are EBADF."""
    pushed = b"".join(b"push %d " % i + b"x" * 1000 + b"\n" for i in range(300))

    def sync_outcome():
        with socket.create_server((HOST, 0)) as listener:
            with rsock.TcpClient(listener.getsockname(), framing="line", timeout=TIMEOUT) as sync_client:
                peer, _ = listener.accept()
                with peer:
                    peer.sendall(pushed)
                    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                time.sleep(0.1)
                return _outcome(lambda: sync_client.request(b"q")), sync_client.closed, _outcome(sync_client.recv)

    client, peer = await opened.tcp(framing="line")
    await peer.send(pushed)
    await asyncio.sleep(0.1)  # the client's buffer fills and it stops reading
    peer.reset()
    await asyncio.sleep(0.1)
    outcome = (await _outcome_async(client.request(b"q")), client.closed, await _outcome_async(client.recv()))
    assert outcome == sync_outcome()
    assert outcome[0][0] is ConnectionResetError


async def test_tcp_client_request_ended_by_a_reset_closes_the_client_as_the_sync_one(opened):
    """A request() whose reply a reset cut short closes the client, as the sync client's does: what the peer sent
    before the reset is not read afterwards (rsock.aio's gave it to the next recv())."""
    client, peer = await opened.tcp(framing="line")
    requesting = asyncio.ensure_future(client.request(b"q"))
    assert await peer.recv_exactly(2) == b"q\n"
    await peer.send(b"par")
    await asyncio.sleep(0.05)
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await bounded(requesting)
    assert client.closed
    for call in (client.recv(), client.recv_message()):
        with pytest.raises(OSError) as raised:
            await bounded(call)
        assert raised.value.errno == errno.EBADF


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["no timeout", "timeout"])
async def test_tcp_client_send_raises_when_awaited_not_when_called(opened, timeout):
    """send() is a coroutine function to its callers: its errors come from the await (a task made from it, gather()),
    whatever the timeout. Without one, a closed client's send() raised at the call."""
    client, _ = await opened.tcp(framing="line", timeout=timeout)
    not_bytes = client.send("text")
    with pytest.raises(TypeError):
        await not_bytes
    await client.close()
    sending = client.send(b"x")
    with pytest.raises(OSError) as raised:
        await sending
    assert raised.value.errno == errno.EBADF


@pytest.mark.parametrize(
    "make",
    [
        lambda: aio.TcpClient((HOST, 1), framing="line"),
        lambda: aio.TcpClient((HOST, 1)),
        lambda: aio.StreamWriter(),
    ],
    ids=["TcpClient(address, framing=...)", "TcpClient(address)", "StreamWriter()"],
)
async def test_one_made_with_the_wrong_arguments_is_a_type_error_and_collected_quietly(make, monkeypatch):
    """TcpClient is made by ``await TcpClient.connect()``, as the sync client's ``TcpClient(address)`` suggests it is
    not: the call is a TypeError, and the half-made object's finalizer has no connection to close. It raised
    AttributeError as it was collected, which pytest (with warnings as errors) turns into a failure."""
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    with pytest.raises(TypeError):
        make()
    gc.collect()
    assert unraisable == []
