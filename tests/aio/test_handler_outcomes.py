"""How a connection's end is told apart and reported: a handler's own exception (logged at ERROR with its traceback)
against what is not the handler's fault (a peer gone before its reply could be sent), and a request() that would take
another task's read. Every async test runs on both loops (conftest)."""

import asyncio
import logging
import socket
import struct

import pytest

import rsock
from rsock import aio
from tests.aio.conftest import HOST, TIMEOUT, bounded, still_pending


def handler_errors(caplog):
    return [r for r in caplog.records if r.name == "rsock" and r.getMessage().startswith("handler raised")]


@pytest.mark.asyncio
async def test_a_request_made_while_another_task_reads_is_refused_before_it_is_sent():
    """Its reply would be taken by the other task's read: request() raises RuntimeError, as a second read does, before
    anything goes out, and the client stays in step (it used to send, raise, and close the client under the reader)."""
    loop = asyncio.get_running_loop()
    with socket.create_server((HOST, 0)) as listener:
        listener.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        client = await bounded(aio.TcpClient.connect(listener.getsockname(), framing="line", timeout=TIMEOUT))
        peer, _ = await bounded(accepting)
        with peer:
            reading = asyncio.ensure_future(client.recv_message())
            assert await still_pending(reading, 0.01)
            with pytest.raises(RuntimeError, match=r"^request\(\) called while another coroutine is already waiting"):
                await client.request(b"question")
            assert not client.closed
            peer.sendall(b"push\n")
            assert await bounded(reading) == b"push"
            peer.settimeout(0.05)
            with pytest.raises(TimeoutError):
                peer.recv(100)  # the refused request was never sent
            await client.close()


@pytest.mark.asyncio
async def test_an_async_handler_s_reply_to_a_peer_gone_is_an_io_failure_not_a_handler_error(caplog):
    """The peer resets the connection while an async handler is still working: its reply cannot be sent. That ends
    the connection as a failed write does for a plain handler's reply (on_disconnect gets the OSError, logged at
    INFO), not as an exception of the handler's (it was logged at ERROR as "handler raised", with a traceback)."""
    caplog.set_level(logging.INFO, logger="rsock")
    entered = asyncio.Event()
    release = asyncio.Event()
    ended = asyncio.Queue()

    async def slow_echo(conn, data):
        entered.set()
        await release.wait()
        return data

    loop = asyncio.get_running_loop()

    def on_disconnect(conn, exc):  # a plain handler: called on rsock's thread
        loop.call_soon_threadsafe(ended.put_nowait, exc)

    async with aio.TcpServer((HOST, 0), slow_echo, framing="line", on_disconnect=on_disconnect) as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as peer:
            peer.sendall(b"hello\n")
            await bounded(entered.wait())
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        release.set()
        exc = await bounded(ended.get())
    assert isinstance(exc, ConnectionError), exc
    assert handler_errors(caplog) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_a_handler_raising_connection_aborted_error_is_logged_as_its_error(caplog, kind):
    """rsock.aio reports a handler whose event loop closed as a ConnectionAbortedError it makes (logged at INFO, not
    the handler's fault); one the handler raised itself is its error like any other: ERROR, with the traceback."""
    caplog.set_level(logging.INFO, logger="rsock")

    def plain(conn, data):
        raise ConnectionAbortedError("the backend went away")

    async def coroutine(conn, data):
        raise ConnectionAbortedError("the backend went away")

    async with aio.TcpServer((HOST, 0), plain if kind == "plain" else coroutine, framing="line") as server:
        async with await aio.TcpClient.connect(server.address, framing="line", timeout=TIMEOUT) as client:
            with pytest.raises(ConnectionError):
                await client.request(b"hello")
        await bounded(_until(lambda: handler_errors(caplog)))
    [record] = handler_errors(caplog)
    assert record.levelno == logging.ERROR
    assert "ConnectionAbortedError: the backend went away" in (record.exc_text or "")


def test_a_sync_handler_raising_connection_aborted_error_is_logged_as_its_error(caplog):
    """The same for rsock.TcpServer, whose handlers have no event loop to lose."""
    caplog.set_level(logging.INFO, logger="rsock")

    def handler(conn, data):
        raise ConnectionAbortedError("the backend went away")

    with rsock.TcpServer((HOST, 0), handler, framing="line") as server:
        with rsock.TcpClient(server.address, framing="line", timeout=TIMEOUT) as client:
            with pytest.raises(ConnectionError):
                client.request(b"hello")
        server.stop(TIMEOUT)
    [record] = handler_errors(caplog)
    assert "ConnectionAbortedError: the backend went away" in (record.exc_text or "")


NOT_BYTES_LIKE = ["text", 42, ["a"]]


def not_a_reply_message(handler, reply):
    return f"{handler} must return a bytes-like object or None, not '{type(reply).__name__}'"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["plain", "async"])
@pytest.mark.parametrize("reply", NOT_BYTES_LIKE, ids=lambda reply: type(reply).__name__)
async def test_a_reply_that_is_not_bytes_like_is_reported_as_on_message_s_return_value(caplog, kind, reply):
    """The handler has returned by the time its reply is found not to be bytes-like, so the traceback cannot point at
    it: the TypeError names on_message and what it returned (the buffer protocol's own message said only "a
    bytes-like object is required"), and it ends that connection as the handler's error."""
    caplog.set_level(logging.INFO, logger="rsock")

    def plain(conn, data):
        return reply

    async def coroutine(conn, data):
        return reply

    async with aio.TcpServer((HOST, 0), plain if kind == "plain" else coroutine, framing="line") as server:
        async with await aio.TcpClient.connect(server.address, framing="line", timeout=TIMEOUT) as client:
            with pytest.raises(ConnectionError):
                await client.request(b"hello")
        [record] = handler_errors(caplog)
    assert f"TypeError: {not_a_reply_message('on_message', reply)}" in (record.exc_text or "")


@pytest.mark.asyncio
@pytest.mark.parametrize("reply", NOT_BYTES_LIKE, ids=lambda reply: type(reply).__name__)
async def test_an_async_datagram_handler_s_reply_that_is_not_bytes_like_is_reported_as_its_return_value(caplog, reply):
    """The same for an async on_datagram of rsock.aio.UdpServer: its reply is sent from the event loop's side."""
    caplog.set_level(logging.INFO, logger="rsock")

    async def on_datagram(data, addr):
        return reply if data == b"bad" else data

    async with aio.UdpServer((HOST, 0), on_datagram) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(b"bad", server.address)
            await bounded(_until(lambda: server.stats["errors"] == 1))
            sock.sendto(b"after", server.address)
            assert await asyncio.to_thread(sock.recv, 100) == b"after"
    [record] = [r for r in caplog.records if r.name == "rsock" and r.levelno >= logging.ERROR]
    assert str(record.exc_info[1]) == not_a_reply_message("on_datagram", reply)


@pytest.mark.parametrize("reply", NOT_BYTES_LIKE, ids=lambda reply: type(reply).__name__)
def test_a_sync_server_s_reply_that_is_not_bytes_like_is_reported_as_on_message_s_return_value(caplog, reply):
    """The same for rsock.TcpServer. A connection's own send() keeps the stdlib's message, as socket.send() words it:
    there the caller's frame is in the traceback."""
    caplog.set_level(logging.INFO, logger="rsock")
    sent = []

    def handler(conn, data):
        with pytest.raises(TypeError) as raised:
            conn.send(reply)
        sent.append(str(raised.value))
        return reply

    with rsock.TcpServer((HOST, 0), handler, framing="line") as server:
        with rsock.TcpClient(server.address, framing="line", timeout=TIMEOUT) as client:
            with pytest.raises(ConnectionError):
                client.request(b"hello")
        [record] = handler_errors(caplog)
    assert f"TypeError: {not_a_reply_message('on_message', reply)}" in (record.exc_text or "")
    with socket.socket() as stdlib_socket, pytest.raises(TypeError) as stdlib_raised:
        stdlib_socket.send(reply)
    assert sent == [str(stdlib_raised.value)]


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.005)
