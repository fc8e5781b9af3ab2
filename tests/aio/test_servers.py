"""rsock.aio.TcpServer and rsock.aio.UdpServer: async handlers (run on the loop that started the server, in the
context current at start(), one message at a time per connection), plain handlers (run on rsock's own thread), the
asyncio lifecycle (start, stop, serve_forever, async with), stop() with handlers in flight, and a server whose loop
closes under it. Async tests run on both event loops; the loop-closing ones run a loop of each kind themselves."""

import asyncio
import contextlib
import contextvars
import gc
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref

import pytest
import pytest_asyncio

import rsock
from rsock import aio
from tests.aio.conftest import HOST, TIMEOUT, Peer, bounded, still_pending
from tests.socket_reads import recv_until_closed

request_id = contextvars.ContextVar("request_id", default="unset")


class Servers:
    """Servers and client sockets a test opens, stopped and closed at teardown."""

    def __init__(self):
        self.servers = []
        self.socks = []

    async def tcp(self, on_message=None, *, start=True, **kwargs):
        kwargs.setdefault("framing", "line")
        server = aio.TcpServer((HOST, 0), on_message, **kwargs)
        self.servers.append(server)
        if start:
            await server.start()
        return server

    async def udp(self, on_datagram=None, *, start=True, **kwargs):
        server = aio.UdpServer((HOST, 0), on_datagram, **kwargs)
        self.servers.append(server)
        if start:
            await server.start()
        return server

    async def connect(self, address):
        """A raw stdlib client connected to `address`, as a Peer."""
        sock = socket.socket()
        self.socks.append(sock)
        sock.setblocking(False)
        await bounded(asyncio.get_running_loop().sock_connect(sock, address))
        return Peer(sock)

    async def datagram_client(self):
        """A loop datagram endpoint that queues what it receives: returns (transport, queue of (data, addr))."""
        queue = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                queue.put_nowait((data, addr))

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Client, local_addr=(HOST, 0))
        self.socks.append(transport)
        return transport, queue

    async def aclose(self):
        # Clients first: a closing connection waits (up to 2 s) for its peer to close too.
        for sock in self.socks:
            sock.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.stop(2.0), TIMEOUT)
        for _ in range(3):
            await asyncio.sleep(0)


@pytest_asyncio.fixture
async def servers():
    servers = Servers()
    try:
        yield servers
    finally:
        await servers.aclose()


async def recv_lines(peer, count, timeout=TIMEOUT):
    """`count` newline-terminated lines from `peer`, without their newlines."""
    buf = bytearray()
    async with asyncio.timeout(timeout):
        while buf.count(b"\n") < count:
            chunk = await peer.loop.sock_recv(peer.sock, 65536)
            if not chunk:
                raise AssertionError(f"EOF before {count} lines arrived: {bytes(buf)!r}")
            buf += chunk
    lines = bytes(buf).split(b"\n")
    assert lines[count:] == [b""], f"more than {count} lines arrived: {bytes(buf)!r}"
    return lines[:count]


async def wait_for_condition(predicate, what, timeout=TIMEOUT):
    """Polls `predicate` (something with no event to wait on, such as a counter of the native server)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def rsock_records(caplog, level=logging.ERROR):
    return [r for r in caplog.records if r.name == "rsock" and r.levelno >= level]


# ---------------------------------------------------------------------------------------------------------------
# TcpServer: async handlers


@pytest.mark.asyncio
async def test_async_on_message_replies(servers):
    async def on_message(conn, data):
        await asyncio.sleep(0)
        return data.upper()

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"hello\nworld\n")
    assert await recv_lines(peer, 2) == [b"HELLO", b"WORLD"]


@pytest.mark.asyncio
async def test_async_handler_runs_on_the_loop_that_started_the_server(servers):
    seen = []

    async def on_message(conn, data):
        seen.append((asyncio.get_running_loop(), threading.get_ident(), asyncio.current_task() is not None))
        return b"ok"

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"x\n")
    assert await recv_lines(peer, 1) == [b"ok"]
    assert seen == [(asyncio.get_running_loop(), threading.get_ident(), True)]


@pytest.mark.asyncio
async def test_plain_handler_runs_on_rsock_io_thread(servers):
    seen = []

    def on_message(conn, data):
        seen.append(threading.get_ident())
        return b"sync " + data

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"call\n")
    assert await recv_lines(peer, 1) == [b"sync call"]
    assert len(seen) == 1
    assert seen[0] != threading.get_ident()


@pytest.mark.asyncio
async def test_pipelined_messages_are_handled_one_at_a_time_and_replied_in_order(servers):
    count = 30
    running = 0
    most = 0

    async def on_message(conn, data):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            # Earlier messages take longer: replies would come out reversed if they overlapped.
            await asyncio.sleep((count - int(data)) * 0.001)
            return b"reply " + data
        finally:
            running -= 1

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"".join(b"%d\n" % i for i in range(count)))
    assert await recv_lines(peer, count) == [b"reply %d" % i for i in range(count)]
    assert most == 1


@pytest.mark.asyncio
async def test_plain_and_async_replies_to_one_read_keep_their_order(servers):
    """A read holding three messages: the plain replies around an async one are gathered by the io thread while
    the async one is written from the loop's thread, and none may overtake another."""

    async def shout(data):
        return data.upper()

    def on_message(conn, data):
        return shout(data) if data == b"b" else data

    server = await servers.tcp(on_message)

    async def exchange():
        peer = await servers.connect(server.address)
        await peer.send(b"a\nb\nc\n")
        return await recv_lines(peer, 3)

    replies = []
    for _ in range(5):
        replies += await bounded(asyncio.gather(*(exchange() for _ in range(20))))
    assert replies == [[b"a", b"B", b"c"]] * 100


@pytest.mark.asyncio
async def test_async_handler_sees_the_context_of_start(servers):
    async def on_message(conn, data):
        return request_id.get().encode()

    request_id.set("set before start")
    server = await servers.tcp(on_message)
    request_id.set("set after start")
    peer = await servers.connect(server.address)
    await peer.send(b"which?\n")
    assert await recv_lines(peer, 1) == [b"set before start"]


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [ValueError, rsock.PanicException])  # a BaseException, not an Exception
async def test_async_handler_that_raises_closes_its_connection_and_is_logged(servers, caplog, error):
    caplog.set_level(logging.DEBUG, logger="rsock")
    ended = asyncio.Queue()

    handled = []

    async def on_message(conn, data):
        handled.append(data)
        if data == b"bad":
            raise error("boom from the handler")
        return b"fine " + data

    async def on_disconnect(conn, exc):
        ended.put_nowait((conn.id, exc))

    server = await servers.tcp(on_message, on_disconnect=on_disconnect)
    bystander = await servers.connect(server.address)
    victim = await servers.connect(server.address)
    await victim.send(b"good\nbad\nnever handled\n")
    assert await victim.recv_to_eof() == b"fine good\n"
    assert handled == [b"good", b"bad"]
    _, exc = await bounded(ended.get())
    assert isinstance(exc, error)
    assert str(exc) == "boom from the handler"
    records = rsock_records(caplog)
    assert any(r.exc_info and isinstance(r.exc_info[1], error) for r in records), records
    await bystander.send(b"still here\n")
    assert await recv_lines(bystander, 1) == [b"fine still here"]
    assert server.stats["errors"] == 1


def a_future_of_another_loop():
    """A done future the running loop cannot await: it belongs to a loop of its own (closed)."""
    other = asyncio.new_event_loop()
    future = other.create_future()
    future.set_result(b"never sent\n")
    other.close()
    return future


@pytest.mark.asyncio
async def test_plain_handler_returning_an_awaitable_the_loop_cannot_run_closes_its_connection(servers, caplog):
    """Reported as a failing handler: the connection closes (its peer does not wait for good) and on_disconnect
    hears of the error."""
    caplog.set_level(logging.DEBUG, logger="rsock")
    ended = asyncio.Queue()

    async def on_disconnect(conn, exc):
        ended.put_nowait(exc)

    server = await servers.tcp(lambda conn, data: a_future_of_another_loop(), on_disconnect=on_disconnect)
    peer = await servers.connect(server.address)
    await peer.send(b"hello\n")
    assert await peer.recv_to_eof() == b""
    assert isinstance(await bounded(ended.get()), ValueError)
    assert server.stats["errors"] == 1


@pytest.mark.asyncio
async def test_plain_on_disconnect_returning_an_awaitable_the_loop_cannot_run_is_logged(servers, caplog):
    caplog.set_level(logging.DEBUG, logger="rsock")
    server = await servers.tcp(lambda conn, data: data, on_disconnect=lambda conn, exc: a_future_of_another_loop())
    peer = await servers.connect(server.address)
    peer.close()
    await wait_for_condition(
        lambda: any(r.getMessage() == "on_disconnect raised" for r in rsock_records(caplog)), "the failure logged"
    )
    logged = [r for r in rsock_records(caplog) if r.getMessage() == "on_disconnect raised"]
    assert isinstance(logged[0].exc_info[1], ValueError)


@pytest.mark.asyncio
async def test_slow_async_handler_does_not_hold_up_other_connections(servers):
    release = asyncio.Event()
    entered = asyncio.Event()

    async def on_message(conn, data):
        if data == b"slow":
            entered.set()
            await release.wait()
        return b"done " + data

    server = await servers.tcp(on_message)
    slow = await servers.connect(server.address)
    fast = await servers.connect(server.address)
    await slow.send(b"slow\n")
    await bounded(entered.wait())
    await fast.send(b"fast\n")
    assert await recv_lines(fast, 1) == [b"done fast"]
    release.set()
    assert await recv_lines(slow, 1) == [b"done slow"]


@pytest.mark.asyncio
async def test_async_handlers_of_different_connections_run_concurrently(servers):
    count = 10
    arrived = 0
    all_in = asyncio.Event()

    async def on_message(conn, data):
        nonlocal arrived
        arrived += 1
        if arrived == count:
            all_in.set()
        await all_in.wait()  # every handler must be running at once for any to finish
        return data

    server = await servers.tcp(on_message)
    peers = [await servers.connect(server.address) for _ in range(count)]
    for i, peer in enumerate(peers):
        await peer.send(b"c%d\n" % i)
    for i, peer in enumerate(peers):
        assert await recv_lines(peer, 1) == [b"c%d" % i]


@pytest.mark.asyncio
async def test_async_on_connect_finishes_before_the_first_message_is_handled(servers):
    gate = asyncio.Event()
    events = []

    async def on_connect(conn):
        events.append("connect started")
        await gate.wait()
        conn.state["greeted"] = True
        conn.send(b"welcome")
        events.append("connect finished")

    async def on_message(conn, data):
        events.append(("message", data, conn.state.get("greeted")))
        return b"reply"

    server = await servers.tcp(on_message, on_connect=on_connect)
    peer = await servers.connect(server.address)
    await peer.send(b"early\n")
    receiving = asyncio.ensure_future(recv_lines(peer, 2))
    assert await still_pending(receiving, 0.1)
    assert events == ["connect started"]
    gate.set()
    assert await receiving == [b"welcome", b"reply"]
    assert events == ["connect started", "connect finished", ("message", b"early", True)]


@pytest.mark.asyncio
@pytest.mark.parametrize("returned", [b"not for the peer", True])
async def test_what_an_async_on_connect_returns_is_ignored(servers, returned):
    """As a plain on_connect's return value is: it is not a reply to anything."""

    async def on_connect(conn):
        return returned

    server = await servers.tcp(lambda conn, data: b"echo " + data, on_connect=on_connect)
    peer = await servers.connect(server.address)
    await peer.send(b"hi\n")
    assert await recv_lines(peer, 1) == [b"echo hi"]
    assert server.stats["errors"] == 0


@pytest.mark.asyncio
async def test_idle_timeout_does_not_count_the_time_an_async_handler_takes(servers):
    async def on_message(conn, data):
        await asyncio.sleep(0.5)
        return b"done " + data

    server = await servers.tcp(on_message, idle_timeout=0.2)
    peer = await servers.connect(server.address)
    await peer.send(b"slow\n")
    assert await recv_lines(peer, 1) == [b"done slow"]
    # Idle again once the reply is out: closed after the timeout (not twice it).
    replied = time.monotonic()
    assert await peer.recv_to_eof() == b""
    assert time.monotonic() - replied < 0.35


@pytest.mark.asyncio
async def test_a_failing_async_on_disconnect_is_logged(servers, caplog):
    caplog.set_level(logging.DEBUG, logger="rsock")
    ended = asyncio.Event()

    async def on_disconnect(conn, exc):
        ended.set()
        raise RuntimeError("boom in on_disconnect")

    server = await servers.tcp(lambda conn, data: data, on_disconnect=on_disconnect)
    peer = await servers.connect(server.address)
    await peer.send(b"x\n")
    assert await recv_lines(peer, 1) == [b"x"]
    peer.close()
    await bounded(ended.wait())
    for _ in range(10):
        await asyncio.sleep(0)
    logged = [r for r in rsock_records(caplog) if r.getMessage() == "on_disconnect raised"]
    assert [str(r.exc_info[1]) for r in logged] == ["boom in on_disconnect"]


@pytest.mark.asyncio
async def test_async_on_disconnect(servers):
    ended = asyncio.Queue()

    async def on_disconnect(conn, exc):
        ended.put_nowait((conn.closed, exc, threading.get_ident()))

    server = await servers.tcp(lambda conn, data: data, on_disconnect=on_disconnect)
    clean = await servers.connect(server.address)
    await clean.send(b"a\n")
    assert await recv_lines(clean, 1) == [b"a"]
    clean.close()
    assert await bounded(ended.get()) == (True, None, threading.get_ident())
    reset = await servers.connect(server.address)
    await reset.send(b"b\n")
    assert await recv_lines(reset, 1) == [b"b"]
    reset.reset()
    _, exc, _ = await bounded(ended.get())
    assert isinstance(exc, ConnectionResetError)


@pytest.mark.asyncio
async def test_connection_attributes_and_send_in_async_handler(servers):
    async def on_message(conn, data):
        assert not conn.closed
        conn.state.setdefault("seen", []).append(data)
        conn.send(b"id %d" % conn.id)
        conn.send(b"%s:%d" % (conn.peer[0].encode(), conn.peer[1]))
        return b"count %d" % len(conn.state["seen"])

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"one\n")
    first = await recv_lines(peer, 3)
    assert first[0].startswith(b"id ")
    assert first[1:] == [b"%s:%d" % (HOST.encode(), peer.sock.getsockname()[1]), b"count 1"]
    await peer.send(b"two\n")
    assert (await recv_lines(peer, 3))[2] == b"count 2"


@pytest.mark.asyncio
async def test_async_handler_reply_types_and_none(servers):
    async def on_message(conn, data):
        return {b"b": b"bytes", b"a": bytearray(b"bytearray"), b"m": memoryview(b"xmemoryviewx")[1:-1], b"n": None}[
            data
        ]

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"b\nn\na\nn\nm\n")
    assert await recv_lines(peer, 3) == [b"bytes", b"bytearray", b"memoryview"]


@pytest.mark.asyncio
async def test_async_handler_returning_a_non_buffer_ends_the_connection(servers, caplog):
    async def on_message(conn, data):
        return 42

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"x\n")
    assert await peer.recv_to_eof() == b""
    await wait_for_condition(lambda: server.stats["errors"] == 1, "the failure to be counted")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_that_closes_its_connection_still_gets_its_reply_out(servers, kind):
    def sync_handler(conn, data):
        conn.close()
        return b"last words"

    async def async_handler(conn, data):
        conn.close()
        return b"last words"

    server = await servers.tcp(sync_handler if kind == "sync" else async_handler)

    async def goodbye():
        peer = await servers.connect(server.address)
        await peer.send(b"bye\n")
        return await peer.recv_to_eof()

    # Many times over: an async handler can finish while the io thread is still in the delivery pass that
    # started it, and its reply once got lost in that window (about 1 in 20).
    replies = []
    for _ in range(15):
        replies += await bounded(asyncio.gather(*(goodbye() for _ in range(20))))
    assert replies == [b"last words\n"] * 300


@pytest.mark.asyncio
async def test_async_handler_without_framing_gets_chunks(servers):
    async def on_message(conn, data):
        await asyncio.sleep(0)
        return data[::-1]

    server = await servers.tcp(on_message, framing=None)
    peer = await servers.connect(server.address)
    await peer.send(b"abc")
    assert await peer.recv_exactly(3) == b"cba"
    await peer.send(b"12345")
    assert await peer.recv_exactly(5) == b"54321"


@pytest.mark.asyncio
async def test_async_handlers_with_length_framing_and_many_clients(servers):
    async def on_message(conn, data):
        await asyncio.sleep(0)
        return data * 2

    server = await servers.tcp(on_message, framing="length")
    assert server.framing == "length"

    async def client(i):
        peer = await servers.connect(server.address)
        for j in range(5):
            message = b"%d-%d" % (i, j)
            await peer.send(struct.pack(">I", len(message)) + message)
            header = await peer.recv_exactly(4)
            assert await peer.recv_exactly(struct.unpack(">I", header)[0]) == message * 2

    await bounded(asyncio.gather(*(client(i) for i in range(50))))
    assert server.stats["messages"] == 250


@pytest.mark.asyncio
async def test_broadcast(servers):
    connections = []
    joined = asyncio.Event()

    async def on_connect(conn):
        connections.append(conn)
        if len(connections) == 3:
            joined.set()

    server = await servers.tcp(on_connect=on_connect)
    peers = [await servers.connect(server.address) for _ in range(3)]
    await bounded(joined.wait())
    # A connection joins the broadcasts once its on_connect has finished, which its task's done callback reports
    # to the server after this wake-up.
    await asyncio.sleep(0)
    assert server.broadcast(b"to all") == 3
    for peer in peers:
        assert await recv_lines(peer, 1) == [b"to all"]
    excluded = connections[0]
    assert server.broadcast(b"to some", exclude=excluded) == 2
    by_port = {conn.peer[1]: conn for conn in connections}
    for peer in peers:
        if by_port[peer.sock.getsockname()[1]] is not excluded:
            assert await recv_lines(peer, 1) == [b"to some"]
    assert server.broadcast(b"to none", exclude=connections) == 0


@pytest.mark.asyncio
async def test_a_broadcast_reaches_a_connection_only_once_its_async_on_connect_has_finished(servers):
    """While an async on_connect awaits, broadcasts pass its connection by: what on_connect sends comes first."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def on_connect(conn):
        entered.set()
        await release.wait()
        conn.send(b"welcome")

    server = await servers.tcp(on_connect=on_connect)
    peer = await servers.connect(server.address)
    await bounded(entered.wait())
    assert server.broadcast(b"news") == 0
    release.set()
    assert await recv_lines(peer, 1) == [b"welcome"]
    assert server.broadcast(b"later") == 1
    assert await recv_lines(peer, 1) == [b"later"]


# ---------------------------------------------------------------------------------------------------------------
# TcpServer: lifecycle


@pytest.mark.asyncio
async def test_tcp_server_properties_and_lifecycle(servers):
    server = await servers.tcp(lambda conn, data: data, start=False)
    assert server.address[0] == HOST
    assert server.address[1] > 0
    assert not server.running
    assert server.framing == "line"
    await server.start()
    assert server.running
    await server.start()  # a second start is harmless
    peer = await servers.connect(server.address)
    await peer.send(b"echo\n")
    assert await recv_lines(peer, 1) == [b"echo"]
    stats = server.stats
    assert set(stats) == {"accepted", "active", "refused", "messages", "bytes_in", "bytes_out", "errors"}
    assert stats["messages"] == 1
    assert stats["accepted"] == 1
    assert "TcpServer" in repr(server)
    stopping = asyncio.ensure_future(server.stop())
    assert await peer.recv_to_eof() == b""
    peer.close()
    await bounded(stopping)
    assert not server.running
    with pytest.raises(RuntimeError):
        await server.start()


@pytest.mark.asyncio
async def test_tcp_server_async_with(servers):
    server = aio.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    servers.servers.append(server)
    async with server as entered:
        assert entered is server
        assert server.running
        peer = await servers.connect(server.address)
        await peer.send(b"inside\n")
        assert await recv_lines(peer, 1) == [b"inside"]
        peer.close()
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        await servers.connect(server.address)


@pytest.mark.asyncio
async def test_tcp_serve_forever_until_cancelled(servers):
    server = await servers.tcp(lambda conn, data: data, start=False)
    serving = asyncio.ensure_future(server.serve_forever())
    peer = None
    async with asyncio.timeout(TIMEOUT):
        while peer is None:
            try:
                peer = await servers.connect(server.address)
            except ConnectionRefusedError:
                await asyncio.sleep(0.005)
    await peer.send(b"up\n")
    assert await recv_lines(peer, 1) == [b"up"]
    peer.close()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(serving)
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        await servers.connect(server.address)


@pytest.mark.asyncio
async def test_tcp_serve_forever_returns_after_stop(servers):
    server = await servers.tcp(lambda conn, data: data)
    serving = asyncio.ensure_future(server.serve_forever())
    assert await still_pending(serving, 0.02)
    await bounded(server.stop())
    assert await bounded(serving) is None


def test_serve_forever_on_one_thread_s_loop_returns_after_stop_on_another_s(loop_factory, leftover):
    """serve_forever() awaited on a loop in one thread, stop() awaited on a loop in another: the stop wakes the
    first loop through that loop itself (setting its future from the other thread would not wake it)."""
    server = aio.TcpServer((HOST, 0), lambda conn, data: data, framing="line")
    leftover.append(server)
    serving = {}
    outcome = []

    async def serve():
        serving["loop"], serving["task"] = asyncio.get_running_loop(), asyncio.current_task()
        await server.start()
        serving["started"].set()
        outcome.append(await server.serve_forever())

    def thread_a():
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve())

    serving["started"] = threading.Event()
    thread = threading.Thread(target=thread_a, daemon=True)
    thread.start()
    try:
        assert serving["started"].wait(TIMEOUT)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(bounded(server.stop()))
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "serve_forever() went on after stop()"
        assert outcome == [None]
    finally:
        if thread.is_alive():
            serving["loop"].call_soon_threadsafe(serving["task"].cancel)
            thread.join(TIMEOUT)


@pytest.mark.asyncio
async def test_a_second_serve_forever_raises_as_asyncio_s_does(servers):
    server = await servers.tcp(lambda conn, data: data)
    serving = asyncio.ensure_future(server.serve_forever())
    assert await still_pending(serving, 0.02)
    with pytest.raises(RuntimeError, match="already being awaited on serve_forever"):
        await bounded(server.serve_forever())
    assert not serving.done()
    await bounded(server.stop())
    assert await bounded(serving) is None


@pytest.mark.asyncio
async def test_stop_from_an_async_handler_returns_at_once_and_its_reply_goes_out(servers):
    """stop() waits for the handlers in flight: awaited in one of them, it returns at once (the stop goes on in
    the background) instead of waiting for that very handler until the stop timeout."""
    server = None
    stop_took = []

    async def on_message(conn, data):
        started = time.monotonic()
        await server.stop()
        stop_took.append(time.monotonic() - started)
        return b"bye"

    server = await servers.tcp(on_message)
    serving = asyncio.ensure_future(server.serve_forever())
    peer = await servers.connect(server.address)
    await peer.send(b"stop\n")
    assert await recv_lines(peer, 1) == [b"bye"]
    assert stop_took[0] < 1.0
    peer.close()
    assert await bounded(serving) is None
    assert not server.running


@pytest.mark.asyncio
async def test_stop_with_a_timeout_in_a_handler_still_sends_that_handler_s_reply(servers):
    """await stop(timeout) in a handler while another handler is stuck: the timeout ends the caller's wait and closes
    the stuck handler's connection at the same moment, but the caller's connection is spared until the reply its
    handler returns (then or later) is out, and closes after it (it used to be closed with the others, the reply
    lost)."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def on_message(conn, data):
        if data == b"stuck":
            entered.set()
            await release.wait()
            return b"late"
        await server.stop(0.2)
        await asyncio.sleep(0.1)  # past the moment the timeout closes what is open, on any loop's timers
        return b"bye"

    server = await servers.tcp(on_message)
    stuck = await servers.connect(server.address)
    await stuck.send(b"stuck\n")
    await bounded(entered.wait())
    admin = await servers.connect(server.address)
    await admin.send(b"stop\n")
    try:
        assert await admin.recv_to_eof() == b"bye\n"
        with contextlib.suppress(ConnectionResetError):
            assert await stuck.recv_to_eof() == b""
    finally:
        release.set()
    assert not server.running


@pytest.mark.asyncio
async def test_the_connection_of_a_handler_that_stops_the_server_and_never_returns_closes_after_a_grace(servers):
    """The caller's connection is spared only for the reply its handler returns: a handler that never does has its
    connection closed a second past the timeout, and the stop completes (it used to wait for that handler)."""
    forever = asyncio.Event()

    async def on_message(conn, data):
        await server.stop(0.2)
        await forever.wait()

    server = await servers.tcp(on_message)
    serving = asyncio.ensure_future(server.serve_forever())
    peer = await servers.connect(server.address)
    await peer.send(b"stop\n")
    started = time.monotonic()
    try:
        with contextlib.suppress(ConnectionResetError):
            assert await peer.recv_to_eof() == b""
        assert await bounded(serving) is None
        assert 1.0 <= time.monotonic() - started < TIMEOUT / 2
    finally:
        forever.set()


async def bind_datagram_socket_when_free(address):
    """A UDP socket bound to `address`, retried (for at most TIMEOUT) while another still holds it."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_udp_stop_with_a_timeout_in_a_handler_still_sends_that_handler_s_reply(servers):
    """As for TCP: the timeout gives up the port while the caller's handler has yet to return its reply; the reply
    still goes out from the port, which is given up once it has, while the stuck handler's late reply is not sent."""
    entered = asyncio.Event()
    release = asyncio.Event()
    ended = asyncio.Event()

    async def on_datagram(data, address):
        if data == b"stuck":
            entered.set()
            await release.wait()
            ended.set()
            return b"late"
        await server.stop(0.2)
        await asyncio.sleep(0.1)  # past the moment the timeout closes what is open, on any loop's timers
        return b"bye"

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"stuck", server.address)
    await bounded(entered.wait())
    transport.sendto(b"stop", server.address)
    assert await bounded(replies.get()) == (b"bye", server.address)
    with await bind_datagram_socket_when_free(server.address):
        release.set()
        await bounded(ended.wait())
    await asyncio.sleep(0.1)  # for a late reply to arrive, were one sent
    assert replies.empty()


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_stopped_server_and_its_event_loop_are_collected(kind):
    """The native server refers to rsock.aio's bridge, which refers back to it and to the loop: once the server is
    stopped, the collector frees the server, its handler's owner and the closed loop (they used to stay for good,
    a loop each time asyncio.run() served one)."""

    class Service:
        async def on_message(self, conn, data):
            return data

        async def on_datagram(self, data, address):
            return data

    async def serve_once(service):
        handler = service.on_message if kind == "tcp" else service.on_datagram
        server = (aio.TcpServer if kind == "tcp" else aio.UdpServer)((HOST, 0), handler)
        async with server:
            pass
        return weakref.ref(asyncio.get_running_loop())

    service = Service()
    owner = weakref.ref(service)
    loop = asyncio.run(serve_once(service))
    del service
    gc.collect()
    assert (owner(), loop()) == (None, None)


@pytest.mark.asyncio
async def test_stop_awaited_in_a_task_a_handler_spawned_waits_for_the_handlers_in_flight(servers):
    """Only a handler itself gets stop()'s early return: a task it spawns is not one of the handlers stop() waits
    for, so it waits like any other caller, until the replies in flight are out."""
    stopped = asyncio.Event()
    order = []
    spawned = []

    async def shut_down():
        await server.stop()
        order.append("stop returned")
        stopped.set()

    async def on_message(conn, data):
        if data == b"shutdown":
            spawned.append(asyncio.ensure_future(shut_down()))
            return b"shutting down"
        await asyncio.sleep(0.3)
        order.append("slow reply")
        return b"slow done"

    server = await servers.tcp(on_message)
    worker = await servers.connect(server.address)
    await worker.send(b"work\n")
    await asyncio.sleep(0.05)
    admin = await servers.connect(server.address)
    await admin.send(b"shutdown\n")
    assert await recv_lines(admin, 1) == [b"shutting down"]
    await bounded(stopped.wait())
    assert order == ["slow reply", "stop returned"]
    assert await recv_lines(worker, 1) == [b"slow done"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "stopping",
    [
        lambda server: asyncio.wait_for(server.stop(), TIMEOUT),
        lambda server: asyncio.shield(server.stop()),
        lambda server: asyncio.ensure_future(server.stop()),
    ],
    ids=["wait_for", "shield", "a task of its own"],
)
async def test_stop_awaited_in_a_handler_through_a_task_returns_and_its_reply_goes_out(servers, stopping):
    """Through wait_for() or shield() the stop runs in a task the handler made, which still belongs to it: it
    does not wait for the handler that waits for it."""
    server = None
    stop_took = []

    async def on_message(conn, data):
        started = time.monotonic()
        await stopping(server)
        stop_took.append(time.monotonic() - started)
        return b"bye"

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"stop\n")
    assert await recv_lines(peer, 1) == [b"bye"]
    assert stop_took[0] < 1.0


@pytest.mark.asyncio
async def test_two_handlers_awaiting_stop_at_once_do_not_wait_for_each_other(servers):
    server = None
    both_in = asyncio.Event()
    inside = []

    async def on_message(conn, data):
        inside.append(data)
        if len(inside) == 2:
            both_in.set()
        await both_in.wait()
        await server.stop()
        return b"bye " + data

    server = await servers.tcp(on_message)
    first = await servers.connect(server.address)
    second = await servers.connect(server.address)
    started = time.monotonic()
    await first.send(b"one\n")
    await second.send(b"two\n")
    assert await recv_lines(first, 1) == [b"bye one"]
    assert await recv_lines(second, 1) == [b"bye two"]
    assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_stop_with_a_bad_timeout_raises_and_keeps_serving(servers):
    server = await servers.tcp(lambda conn, data: data)
    with pytest.raises(ValueError):
        await server.stop(-1)
    with pytest.raises(TypeError):
        await server.stop("soon")
    assert server.running
    peer = await servers.connect(server.address)
    await peer.send(b"still here\n")
    assert await recv_lines(peer, 1) == [b"still here"]


@pytest.mark.asyncio
async def test_stop_delivers_replies_of_async_handlers_in_flight(servers):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def on_message(conn, data):
        entered.set()
        await release.wait()
        return b"finished " + data

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"work\n")
    await bounded(entered.wait())
    stopping = asyncio.ensure_future(server.stop(TIMEOUT))
    assert await still_pending(stopping, 0.1), "stop() returned while a handler was still running"
    assert not server.running
    release.set()
    assert await peer.recv_to_eof() == b"finished work\n"
    peer.close()
    await bounded(stopping)


async def stop_with_a_stuck_handler(servers):
    """A server whose handler is stuck in an await, stopped with a short timeout: returns (peer, release, done)."""
    entered = asyncio.Event()
    release = asyncio.Event()
    done = asyncio.Event()

    async def on_message(conn, data):
        entered.set()
        try:
            await release.wait()
            return b"too late"
        finally:
            done.set()

    server = await servers.tcp(on_message)
    peer = await servers.connect(server.address)
    await peer.send(b"stuck\n")
    await bounded(entered.wait())
    started = time.monotonic()
    await bounded(server.stop(0.2))
    assert time.monotonic() - started < TIMEOUT / 2
    assert not server.running
    return peer, release, done


@pytest.mark.asyncio
async def test_stop_timeout_closes_a_connection_whose_async_handler_is_stuck(servers):
    """stop(timeout) closes the connections still open after the timeout: the client sees the end at once."""
    peer, release, done = await stop_with_a_stuck_handler(servers)
    try:
        with contextlib.suppress(ConnectionResetError):
            assert await peer.recv_to_eof(timeout=2.0) == b""
    finally:
        release.set()
        await bounded(done.wait())


@pytest.mark.asyncio
async def test_reply_of_a_handler_that_outlives_stop_is_dropped_quietly(servers, caplog):
    loop = asyncio.get_running_loop()
    loop_errors = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    peer, release, done = await stop_with_a_stuck_handler(servers)
    caplog.set_level(logging.DEBUG, logger="rsock")
    caplog.clear()
    release.set()
    await bounded(done.wait())
    peer.close()
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert loop_errors == []
    assert rsock_records(caplog) == []


# ---------------------------------------------------------------------------------------------------------------
# UdpServer


@pytest.mark.asyncio
async def test_udp_async_on_datagram_replies(servers):
    seen = []

    async def on_datagram(data, address):
        seen.append((threading.get_ident(), request_id.get(), address))
        await asyncio.sleep(0)
        return b"re: " + data

    request_id.set("udp start")
    server = await servers.udp(on_datagram)
    request_id.set("after")
    transport, replies = await servers.datagram_client()
    transport.sendto(b"one", server.address)
    assert await bounded(replies.get()) == (b"re: one", server.address)
    transport.sendto(b"two", server.address)
    assert await bounded(replies.get()) == (b"re: two", server.address)
    local = transport.get_extra_info("sockname")
    assert seen == [(threading.get_ident(), "udp start", local)] * 2
    await wait_for_condition(lambda: server.stats["datagrams_out"] == 2, "the replies to be counted")
    assert server.stats["datagrams_in"] == 2


@pytest.mark.asyncio
async def test_udp_async_handlers_run_concurrently(servers):
    release = asyncio.Event()

    async def on_datagram(data, address):
        if data == b"slow":
            await release.wait()
        return data

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"slow", server.address)
    transport.sendto(b"fast", server.address)
    assert await bounded(replies.get()) == (b"fast", server.address)
    release.set()
    assert await bounded(replies.get()) == (b"slow", server.address)


@pytest.mark.asyncio
async def test_udp_async_handler_that_raises_is_logged_and_serving_goes_on(servers, caplog):
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def on_datagram(data, address):
        if data == b"bad":
            raise KeyError("udp boom")
        return data

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"bad", server.address)
    await wait_for_condition(lambda: server.stats["errors"] == 1, "the failure to be counted")
    assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in rsock_records(caplog))
    transport.sendto(b"good", server.address)
    assert await bounded(replies.get()) == (b"good", server.address)


@pytest.mark.asyncio
async def test_udp_plain_handler_runs_on_rsock_io_thread(servers):
    seen = []

    def on_datagram(data, address):
        seen.append(threading.get_ident())
        return data.upper()

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"sync", server.address)
    assert await bounded(replies.get()) == (b"SYNC", server.address)
    assert seen != [threading.get_ident()]


@pytest.mark.asyncio
async def test_udp_stop_delivers_replies_of_handlers_in_flight(servers):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def on_datagram(data, address):
        entered.set()
        await release.wait()
        return b"late " + data

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"reply", server.address)
    await bounded(entered.wait())
    stopping = asyncio.ensure_future(server.stop(TIMEOUT))
    await asyncio.sleep(0)
    release.set()
    await bounded(stopping)
    assert not server.running
    assert await bounded(replies.get()) == (b"late reply", server.address)


@pytest.mark.asyncio
async def test_a_udp_server_runs_at_most_1024_async_handlers_at_once(servers):
    """Past 1024 async handlers running, the receive thread waits and datagrams wait in the socket's buffer (a flood
    used to pile up handlers on the loop without limit); once handlers finish, the waiting datagrams are handled."""
    release = asyncio.Event()
    counts = {"started": 0, "finished": 0}

    async def on_datagram(data, address):
        counts["started"] += 1
        await release.wait()
        counts["finished"] += 1

    server = await servers.udp(on_datagram)
    transport, _ = await servers.datagram_client()
    async with asyncio.timeout(TIMEOUT):
        for i in range(1024 + 50):
            transport.sendto(b"%d" % i, server.address)
            # Paced, so that no datagram overflows the server's socket buffer while this loop holds the GIL.
            while counts["started"] < min(i + 1, 1024):
                await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)  # for more to start, were the limit not kept
    assert counts["started"] == 1024
    release.set()
    async with asyncio.timeout(TIMEOUT):
        while counts["finished"] < 1024 + 50:
            await asyncio.sleep(0.01)
    assert server.stats["datagrams_in"] == 1024 + 50


@pytest.mark.asyncio
async def test_udp_stop_waits_for_async_handlers_then_gives_up_the_port(servers):
    """stop(timeout) waits for an async handler in flight as for a plain one: past the timeout it returns, the port
    is free for a new server, and the late reply is not sent (it used to leave from the port after stop())."""
    entered = asyncio.Event()
    release = asyncio.Event()
    ended = asyncio.Event()

    async def on_datagram(data, address):
        entered.set()
        await release.wait()
        ended.set()
        return b"late " + data

    server = await servers.udp(on_datagram)
    transport, replies = await servers.datagram_client()
    transport.sendto(b"reply", server.address)
    await bounded(entered.wait())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bounded(server.stop(0.2))
    assert 0.15 <= loop.time() - started < 3.0  # the timeout, then at most one second more
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as successor:
        successor.bind(server.address)
        release.set()
        await bounded(ended.wait())
    await asyncio.sleep(0.1)  # for a late reply to arrive, were one sent
    assert replies.empty()
    assert server.stats["errors"] == 1


@pytest.mark.asyncio
async def test_udp_server_lifecycle(servers):
    server = await servers.udp(lambda data, address: data, start=False)
    assert not server.running
    assert server.address[0] == HOST
    async with server:
        assert server.running
        transport, replies = await servers.datagram_client()
        transport.sendto(b"x", server.address)
        assert await bounded(replies.get()) == (b"x", server.address)
    assert not server.running
    assert set(server.stats) == {"datagrams_in", "datagrams_out", "bytes_in", "bytes_out", "errors"}
    with pytest.raises(RuntimeError):
        await server.start()


@pytest.mark.asyncio
async def test_udp_serve_forever_until_cancelled(servers):
    server = await servers.udp(lambda data, address: data, start=False)
    serving = asyncio.ensure_future(server.serve_forever())
    transport, replies = await servers.datagram_client()
    async with asyncio.timeout(TIMEOUT):
        while replies.empty():
            transport.sendto(b"anyone", server.address)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replies.get(), 0.05)
                break
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(serving)
    assert not server.running


# ---------------------------------------------------------------------------------------------------------------
# A server whose event loop closes under it (synchronous tests: each runs its own loop, of each kind)


def loop_closed_noise(caplog, capfd):
    """What was said about the closed loop, in rsock's log records (messages and exceptions) and on stderr."""
    out, err = capfd.readouterr()
    said = [out, err]
    for record in caplog.records:
        said.append(record.getMessage())
        if record.exc_info:
            said.append(repr(record.exc_info[1]))
    return [text for text in said if "Event loop is closed" in text]


def read_until_closed(address, payload, timeout=TIMEOUT):
    """Connects (blocking stdlib socket), sends `payload`, and returns what arrives until the server closes the
    connection; None if the connection is refused. Fails the test if the connection hangs open."""
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        return None
    with sock:
        sock.sendall(payload)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the connection stayed open {timeout} s after {payload!r}; received {bytes(received)!r}")
        return bytes(received)


def wait_stopped(server, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while server.running:
        if time.monotonic() > deadline:
            pytest.fail("the server kept running")
        time.sleep(0.005)


@pytest.fixture
def leftover():
    """Servers a loop-closing test leaves running, stopped with the native (synchronous) stop at teardown."""
    left = []
    yield left
    for server in left:
        server._server.stop(2.0)


def test_an_event_loop_that_used_rsock_is_freed_once_closed(loop_factory):
    """rsock keeps per-loop state (the poller its transports share) without keeping the loop alive: three loops,
    each with a connection opened, used and closed, are all freed once dropped."""
    loops = []

    async def use_a_connection():
        loops.append(weakref.ref(asyncio.get_running_loop()))
        near, far = socket.socketpair()
        with far:
            reader, writer = await aio.open_connection(sock=near)
            far.sendall(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()

    for _ in range(3):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(use_a_connection())
    gc.collect()
    assert [loop() for loop in loops] == [None, None, None]


def test_a_server_started_again_under_a_later_loop_serves_there(loop_factory, leftover):
    """Two asyncio.run() calls, or a fixture outliving a test's loop: start() under the new loop moves the server's
    async handlers there."""

    async def on_message(conn, data):
        return b"echo " + data

    server = aio.TcpServer((HOST, 0), on_message, framing="line")
    leftover.append(server)

    async def start_and_ask(question):
        await server.start()
        client = await aio.TcpClient.connect(server.address, framing="line", timeout=TIMEOUT)
        async with client:
            return await client.request(question)

    for question in (b"first loop", b"second loop"):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            assert runner.run(start_and_ask(question)) == b"echo " + question
    assert server.running


def test_a_stop_interrupted_under_one_loop_is_finished_under_the_next(loop_factory, leftover):
    """stop() cut short (wait_for) under one asyncio.run(), whose loop then closes with the stop's task in it; stop()
    under the next loop finishes the stop instead of awaiting the closed loop's cancelled task."""

    async def on_message(conn, data):
        await asyncio.sleep(1.0)
        return data

    server = aio.TcpServer((HOST, 0), on_message, framing="line")
    leftover.append(server)

    async def interrupted_stop():
        await server.start()
        client = await aio.TcpClient.connect(server.address, framing="line", timeout=TIMEOUT)
        async with client:
            await client.send(b"slow")
            await asyncio.sleep(0.1)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(server.stop(), 0.1)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(interrupted_stop())
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(bounded(server.stop()))
    assert not server.running


def test_tcp_server_stops_when_a_message_arrives_after_its_loop_closed(loop_factory, leftover, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def on_message(conn, data):
        return b"echo " + data

    async def start_and_leave():
        server = aio.TcpServer((HOST, 0), on_message, framing="line")
        leftover.append(server)
        await server.start()
        return server

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        server = runner.run(start_and_leave())
    assert server.running
    assert read_until_closed(server.address, b"after the loop\n") == b""
    wait_stopped(server)
    assert read_until_closed(server.address, b"again\n") in (b"", None)  # closed at once, or refused
    assert loop_closed_noise(caplog, capfd) == []


def test_tcp_handler_in_flight_when_the_loop_closes(loop_factory, leftover, caplog, capfd):
    """asyncio.Runner cancels the handler's task as it closes the loop: its connection ends (nothing hangs), and the
    server stops at the next message."""
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def on_message(conn, data):
        await asyncio.Event().wait()  # never finishes by itself

    async def main():
        server = aio.TcpServer((HOST, 0), on_message, framing="line")
        leftover.append(server)
        await server.start()
        sock = socket.create_connection(server.address, timeout=TIMEOUT)
        sock.sendall(b"pending\n")
        await wait_for_condition(lambda: server.stats["messages"] == 1, "the message to reach the handler")
        return server, sock

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        server, sock = runner.run(main())
    with sock:
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("the connection whose handler was cancelled with the loop stayed open")
    assert read_until_closed(server.address, b"next\n") in (b"", None)
    wait_stopped(server)
    assert loop_closed_noise(caplog, capfd) == []


def test_tcp_async_on_disconnect_after_the_loop_closed(loop_factory, leftover, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def on_message(conn, data):
        return data

    async def on_disconnect(conn, exc):
        pass

    async def main():
        server = aio.TcpServer((HOST, 0), on_message, on_disconnect=on_disconnect, framing="line")
        leftover.append(server)
        await server.start()
        sock = socket.create_connection(server.address, timeout=TIMEOUT)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"hi\n")
        assert await bounded(loop.sock_recv(sock, 100)) == b"hi\n"
        return server, sock

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        server, sock = runner.run(main())
    sock.close()  # on_disconnect now has no loop to run on
    wait_stopped(server)
    assert read_until_closed(server.address, b"x\n") is None
    assert loop_closed_noise(caplog, capfd) == []


def test_udp_server_stops_when_a_datagram_arrives_after_its_loop_closed(loop_factory, leftover, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def on_datagram(data, address):
        return data

    async def start_and_leave():
        server = aio.UdpServer((HOST, 0), on_datagram)
        leftover.append(server)
        await server.start()
        return server

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        server = runner.run(start_and_leave())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(0.2)
        client.sendto(b"after the loop", server.address)
        wait_stopped(server)
        with pytest.raises(TimeoutError):
            client.recvfrom(100)
    assert loop_closed_noise(caplog, capfd) == []
    # Not the handler's fault, nor the server's: said at INFO, as a TcpServer says it of a connection.
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert any("its handler's event loop is gone" in record.getMessage() for record in caplog.records)


def test_udp_handler_in_flight_when_the_loop_closes(loop_factory, leftover, caplog, capfd):
    """asyncio.Runner cancels the handler's task as it closes the loop: no reply, and no error logged for it (one
    was, where a TcpServer's handler cancelled so logs at INFO)."""
    caplog.set_level(logging.DEBUG, logger="rsock")
    entered = []

    async def on_datagram(data, address):
        entered.append(data)
        await asyncio.Event().wait()  # never finishes by itself

    async def main():
        server = aio.UdpServer((HOST, 0), on_datagram)
        leftover.append(server)
        await server.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"pending", server.address)
        await wait_for_condition(lambda: entered == [b"pending"], "the datagram to reach the handler")
        return server

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert any("its handler was cancelled" in record.getMessage() for record in caplog.records)
    assert loop_closed_noise(caplog, capfd) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["tcp", "udp"])
async def test_servers_show_as_a_table_in_notebooks(servers, kind):
    server = await getattr(servers, kind)(lambda *args: None)
    html = server._repr_html_()
    assert html == server._server._repr_html_()
    assert "<table" in html and str(server.address[1]) in html


# A child process, so that what leaves its loop cannot reach pytest's: a stream handler raises argv[3] after a read.
LEAVING_THE_LOOP = r"""
import asyncio, socket, sys
import uvloop
from rsock import aio

module = {"stdlib": asyncio, "rsock": aio}[sys.argv[1]]
loop = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}[sys.argv[2]]()
raised = {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt()}[sys.argv[3]]


async def handler(reader, writer):
    await reader.readline()
    raise raised


async def main():
    server = await module.start_server(handler, "127.0.0.1", 0)
    with socket.create_connection(server.sockets[0].getsockname()) as client:
        client.sendall(b"go\n")
        await asyncio.sleep(5)
    return "the loop kept running"


try:
    print(loop.run_until_complete(main()))
except (SystemExit, KeyboardInterrupt) as exc:
    print("left the loop with", type(exc).__name__)
"""


@pytest.mark.parametrize("raised", ["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("module", ["stdlib", "rsock"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_system_exit_or_ctrl_c_in_a_stream_handler_stops_the_loop(loop, module, raised):
    """sys.exit() or a Ctrl-C in a handler resumed by data leaves the loop, as asyncio's handles re-raise them: rsock
    resumed the task inside its own I/O callback and reported them as an error in a callback, serving on."""
    done = subprocess.run([sys.executable, "-c", LEAVING_THE_LOOP, module, loop, raised], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == f"left the loop with {raised}", (done.stdout, done.stderr[-2000:])


@pytest.mark.asyncio
async def test_stop_during_an_async_handler_starts_no_second_handler_for_its_connection():
    """The connection reads nothing while its async handler runs; stop()'s final read took the next request anyway
    and ran its handler beside the first, whose reply was then lost."""
    running, most_running = [0], [0]

    async def on_message(conn, data):
        running[0] += 1
        most_running[0] = max(most_running[0], running[0])
        try:
            if data == b"slow":
                await asyncio.sleep(0.3)
            return data + b" done"
        finally:
            running[0] -= 1

    server = aio.TcpServer((HOST, 0), on_message, framing="line")
    await server.start()
    with socket.create_connection(server.address, timeout=TIMEOUT) as peer:
        peer.sendall(b"slow\n")
        await asyncio.sleep(0.1)  # the slow handler runs
        peer.sendall(b"fast\n")
        await bounded(server.stop(timeout=TIMEOUT))
        replies = await asyncio.to_thread(recv_until_closed, peer)
    assert (replies, most_running[0]) == (b"slow done\n", 1)
