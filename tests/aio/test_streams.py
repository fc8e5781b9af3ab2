"""rsock.aio's streams (open_connection, start_server, StreamReader, StreamWriter, Server) next to asyncio's.

Most tests run over both implementations (the `kit` fixture: `stdlib` is asyncio's streams, `rsock` is rsock.aio's)
and assert asyncio's behaviour, so a failure only on the `rsock` side is a difference from asyncio. Every test also
runs on both event loops (asyncio's and uvloop). The far end of each connection is a plain stdlib socket (`Peer`).
"""

import asyncio
import contextlib
import contextvars
import enum
import errno
import functools
import gc
import hashlib
import os
import random
import resource
import socket
import ssl
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from rsock import _rsock, aio, sockets
from tests.aio.conftest import HOST, TIMEOUT, Peer, bounded, on_uvloop, still_pending
from tests.loopback import ipv6_loopback_available
from tests.proc_threads import fd_targets
from tests.subprocesses import Lines, finish, listening_port, say, started

pytestmark = pytest.mark.asyncio

MiB = 1 << 20
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def payload(n, seed=0):
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------------------------------------------------------
# Reading


async def test_read_returns_what_arrived(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"hello")
    assert await bounded(reader.read(100)) == b"hello"


async def test_read_n_smaller_than_buffered_leaves_the_rest(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"abcdef")
    assert await bounded(reader.readexactly(1)) == b"a"
    assert await bounded(reader.read(2)) == b"bc"
    assert await bounded(reader.read(100)) == b"def"


async def test_sizes_beyond_a_c_ssize_t_read_as_unlimited(kit):
    """asyncio takes any int as a size: read(10**20) gives what is buffered, readexactly(10**20) waits for more and at
    the end of the stream raises IncompleteReadError with what came (rsock raised OverflowError)."""
    reader, _, peer = await kit.pair()
    await peer.send(b"abc")
    assert await bounded(reader.read(10**20)) == b"abc"
    await peer.send(b"tail")
    peer.shutdown_write()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(reader.readexactly(10**20))
    assert excinfo.value.partial == b"tail"
    assert await bounded(reader.read(-(10**20))) == b""


@pytest.mark.parametrize("second", ["read", "readexactly", "readline", "readuntil"])
async def test_a_second_read_while_one_waits_names_its_method(kit, second):
    """asyncio's RuntimeError names the method called second (readline() waits inside readuntil())."""
    reader, _, peer = await kit.pair()
    waiting = asyncio.ensure_future(reader.read(10))
    assert await still_pending(waiting, 0.01)
    call = {"read": lambda: reader.read(5), "readexactly": lambda: reader.readexactly(5)}.get(second)
    call = call or getattr(reader, second)
    name = "readuntil" if second == "readline" else second
    with pytest.raises(RuntimeError, match=rf"^{name}\(\) called while another coroutine is already waiting"):
        await bounded(call())
    await peer.send(b"data")
    assert await bounded(waiting) == b"data"


async def test_read_minus_one_reads_to_eof(kit):
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.read(-1)))
    for chunk in (b"one ", b"two ", b"three"):
        await peer.send(chunk)
        assert await still_pending(reading, 0.01)
    peer.shutdown_write()
    assert await reading == b"one two three"
    assert await bounded(reader.read()) == b""
    assert await bounded(reader.read(10)) == b""
    assert reader.at_eof()


async def test_awaiting_a_finished_read_again_raises_runtime_error(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"xy")
    read = reader.read(10)
    assert await bounded(read) == b"xy"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await read
    closed = reader.read(10)
    closed.close()
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await closed
    nothing = reader.read(0)
    assert await nothing == b""
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await nothing


@pytest.mark.parametrize(
    ("method", "args"), [("read", (10,)), ("readline", ()), ("readexactly", (4,)), ("readuntil", (b"!",))]
)
async def test_a_read_never_awaited_warns_as_a_coroutine_does(kit, method, args):
    reader, _, peer = await kit.pair()
    await peer.send(b"data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(reader, method)(*args)
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
        f"coroutine 'StreamReader.{method}' was never awaited"
    ]
    # Nothing was taken from the stream.
    assert await bounded(reader.read(10)) == b"data"


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("StreamReader.read", (10,)),
        ("StreamReader.read", (0,)),
        ("StreamReader.readline", ()),
        ("StreamReader.readexactly", (4,)),
        ("StreamReader.readuntil", (b"!",)),
        ("StreamWriter.drain", ()),
        ("StreamWriter.wait_closed", ()),
    ],
)
async def test_an_awaitable_is_named_as_asyncios_coroutine_in_a_task_repr(kit, method, args):
    """A task over rsock's awaitable showed as coro=<<Op without __name__>()> where asyncio's shows the method."""
    reader, writer, _ = await kit.pair()
    if method == "StreamWriter.wait_closed":
        writer.close()
    kind, name = method.split(".")
    awaitable = getattr(reader if kind == "StreamReader" else writer, name)(*args)
    assert (awaitable.__qualname__, awaitable.__name__) == (method, name)
    task = asyncio.ensure_future(awaitable)
    assert f"coro=<{method}()" in repr(task)
    await bounded(asyncio.wait([task], timeout=0.05))
    task.cancel()


async def test_read_zero_returns_empty_without_consuming(kit):
    reader, _, peer = await kit.pair()
    assert await bounded(reader.read(0)) == b""
    await peer.send(b"xy")
    assert await bounded(reader.readexactly(1)) == b"x"
    assert await bounded(reader.read(0)) == b""
    assert await bounded(reader.read(5)) == b"y"


async def test_readexactly_across_segments(kit):
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.readexactly(5)))
    for chunk in (b"ab", b"cd", b"ef"):
        assert await still_pending(reading, 0.01)
        await peer.send(chunk)
    assert await reading == b"abcde"
    assert await bounded(reader.readexactly(1)) == b"f"


async def test_readexactly_at_eof_raises_incomplete_read_with_partial(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"hello")
    peer.shutdown_write()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(reader.readexactly(10))
    assert excinfo.value.partial == b"hello"
    assert excinfo.value.expected == 10
    assert isinstance(excinfo.value, EOFError)
    assert reader.at_eof()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(reader.readexactly(1))
    assert (excinfo.value.partial, excinfo.value.expected) == (b"", 1)


async def test_readexactly_zero_and_negative(kit):
    reader, _, _ = await kit.pair()
    assert await bounded(reader.readexactly(0)) == b""
    with pytest.raises(ValueError):
        await bounded(reader.readexactly(-1))


async def test_readline_and_partial_last_line_at_eof(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"a\nb\r\nc")
    peer.shutdown_write()
    assert [await bounded(reader.readline()) for _ in range(4)] == [b"a\n", b"b\r\n", b"c", b""]
    assert reader.at_eof()


async def test_readline_waits_for_the_newline(kit):
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.readline()))
    await peer.send(b"par")
    assert await still_pending(reading)
    await peer.send(b"tial\nnext")
    assert await reading == b"partial\n"
    assert await bounded(reader.read(100)) == b"next"


async def test_readuntil_multibyte_separator_split_across_segments(kit):
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.readuntil(b"\r\n\r\n")))
    for chunk in (b"one\r\n", b"\r", b"\ntwo\r\n\r"):
        await peer.send(chunk)
        await asyncio.sleep(0.01)  # separate segments, so the separator really is split between reads
    assert await reading == b"one\r\n\r\n"
    reading = asyncio.ensure_future(bounded(reader.readuntil(b"\r\n\r\n")))
    assert await still_pending(reading)
    await peer.send(b"\nrest")
    assert await reading == b"two\r\n\r\n"
    peer.shutdown_write()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(reader.readuntil(b"\r\n\r\n"))
    assert (excinfo.value.partial, excinfo.value.expected) == (b"rest", None)
    assert reader.at_eof()


async def test_readuntil_with_a_tuple_of_separators(kit):
    """From Python 3.13 the match that ends first wins (the shorter separator on a tie); before, a tuple is a
    TypeError."""
    reader, _, peer = await kit.pair()
    await peer.send(b"key: value\r\n\r\nbody")
    if sys.version_info < (3, 13):
        with pytest.raises(TypeError):
            await bounded(reader.readuntil((b"\r\n\r\n", b"\n")))
        return
    assert await bounded(reader.readuntil((b"\r\n\r\n", b"\n"))) == b"key: value\r\n"
    assert await bounded(reader.readuntil((b"\r\n", b"\n"))) == b"\r\n"
    with pytest.raises(ValueError, match="at least one element"):
        await bounded(reader.readuntil(()))
    with pytest.raises(ValueError, match="at least one-byte"):
        await bounded(reader.readuntil((b"x", b"")))
    peer.shutdown_write()
    with pytest.raises(asyncio.IncompleteReadError) as excinfo:
        await bounded(reader.readuntil((b"!", b"?")))
    assert excinfo.value.partial == b"body"


async def test_readuntil_default_separator_is_newline(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"x\ny")
    assert await bounded(reader.readuntil()) == b"x\n"


async def test_readuntil_empty_separator_raises_value_error(kit):
    reader, _, _ = await kit.pair()
    with pytest.raises(ValueError):
        await bounded(reader.readuntil(b""))


async def test_readuntil_none_raises_type_error(kit):
    """None is not a separator (rsock's native readuntil() used to read it as the default b"\\n")."""
    reader, _, peer = await kit.pair()
    await peer.send(b"x\ny")
    with pytest.raises(TypeError):
        await bounded(reader.readuntil(None))
    assert await bounded(reader.readuntil()) == b"x\n"


async def test_readuntil_over_limit_without_separator_raises_and_keeps_data(kit):
    reader, _, peer = await kit.pair(limit=16)
    await peer.send(b"x" * 30)
    with pytest.raises(asyncio.LimitOverrunError) as excinfo:
        await bounded(reader.readuntil(b"\n"))
    assert excinfo.value.consumed == 30
    assert excinfo.value.args[0] == "Separator is not found, and chunk exceed the limit"
    assert await bounded(reader.readexactly(30)) == b"x" * 30


async def test_readuntil_over_limit_multibyte_separator_consumed(kit):
    """asyncio reports how far it searched: the buffer less a separator's length plus one."""
    reader, _, peer = await kit.pair(limit=16)
    await peer.send(b"x" * 30)
    with pytest.raises(asyncio.LimitOverrunError) as excinfo:
        await bounded(reader.readuntil(b"\r\n"))
    assert excinfo.value.consumed == 29
    assert await bounded(reader.readexactly(30)) == b"x" * 30


async def test_readuntil_separator_found_beyond_limit(kit):
    reader, _, peer = await kit.pair(limit=16)
    await peer.send(b"x" * 20 + b"\nrest")
    with pytest.raises(asyncio.LimitOverrunError) as excinfo:
        await bounded(reader.readuntil(b"\n"))
    assert excinfo.value.consumed == 20
    assert excinfo.value.args[0] == "Separator is found, but chunk is longer than limit"
    assert await bounded(reader.readexactly(21)) == b"x" * 20 + b"\n"


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"<END>"])
async def test_readuntil_chunk_of_exactly_limit_bytes_before_separator(kit, separator):
    """asyncio's limit bounds where the separator starts, not where it ends."""
    reader, _, peer = await kit.pair(limit=10)
    await peer.send(b"0123456789" + separator)
    assert await bounded(reader.readuntil(separator)) == b"0123456789" + separator


async def test_readline_of_exactly_limit_bytes(kit):
    reader, _, peer = await kit.pair(limit=10)
    await peer.send(b"0123456789\n")
    assert await bounded(reader.readline()) == b"0123456789\n"


async def test_readline_over_limit_discards_the_line(kit):
    reader, _, peer = await kit.pair(limit=16)
    await peer.send(b"x" * 40 + b"\nnext\n")
    with pytest.raises(ValueError) as excinfo:
        await bounded(reader.readline())
    assert not isinstance(excinfo.value, asyncio.LimitOverrunError)
    assert await bounded(reader.readline()) == b"next\n"


async def test_readline_over_limit_without_newline_clears_the_buffer(kit):
    reader, _, peer = await kit.pair(limit=16)
    await peer.send(b"y" * 40)
    with pytest.raises(ValueError):
        await bounded(reader.readline())
    await peer.send(b"z\n")
    assert await bounded(reader.readline()) == b"z\n"


async def test_at_eof(kit):
    reader, _, peer = await kit.pair()
    assert not reader.at_eof()
    await peer.send(b"ab")
    assert await bounded(reader.readexactly(1)) == b"a"
    assert not reader.at_eof()
    peer.shutdown_write()
    assert await bounded(reader.read()) == b"b"
    assert reader.at_eof()


async def test_async_for_iterates_lines(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"first\nsecond\r\n")
    await peer.send(b"third\nno newline")
    peer.shutdown_write()
    lines = []
    async with asyncio.timeout(TIMEOUT):
        async for line in reader:
            lines.append(line)
    assert lines == [b"first\n", b"second\r\n", b"third\n", b"no newline"]


async def test_limit_zero_is_rejected_without_leaking_a_socket(kit):
    listener = kit.track_sock(socket.create_server((HOST, 0)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError):
            await bounded(kit.mod.open_connection(*listener.getsockname(), limit=0))
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_a_limit_beyond_a_c_ssize_t_is_taken_as_unlimited(kit):
    """asyncio takes any positive int as the limit; rsock raised OverflowError, after connecting."""
    reader, _, peer = await kit.pair(limit=2**63)
    await peer.send(b"x" * 100_000 + b"\n")
    assert len(await bounded(reader.readline())) == 100_001


# ---------------------------------------------------------------------------------------------------------------
# Writing


async def test_write_accepts_bytes_like_and_writelines(kit):
    _, writer, peer = await kit.pair()
    writer.write(b"ab")
    writer.write(bytearray(b"cd"))
    writer.write(memoryview(b"xefx")[1:3])
    writer.writelines([b"gh", bytearray(b"ij"), memoryview(b"kl")])
    writer.writelines([])
    writer.write(b"")
    await bounded(writer.drain())
    assert await peer.recv_exactly(12) == b"abcdefghijkl"


async def test_write_str_raises_type_error(kit):
    _, writer, _ = await kit.pair()
    with pytest.raises(TypeError):
        writer.write("text")


async def test_write_eof_half_closes(kit):
    reader, writer, peer = await kit.pair()
    assert writer.can_write_eof()
    writer.write(b"request")
    writer.write_eof()
    assert await peer.recv_to_eof() == b"request"
    await peer.send(b"response")
    peer.shutdown_write()
    assert await bounded(reader.read()) == b"response"
    assert not writer.is_closing()


async def test_write_eof_after_queued_output_is_sent_after_it(kit):
    _, writer, peer = await kit.pair()
    data = payload(16 * MiB)
    writer.write(data)
    writer.write_eof()
    assert await peer.recv_to_eof() == data


async def test_a_write_after_close_while_output_is_queued_still_goes_out(kit):
    """close() sends the queued output first; a write() made meanwhile is queued behind it, as asyncio's is (rsock
    dropped it without a word)."""
    _, writer, peer = await kit.pair()
    data = payload(16 * MiB)  # more than the socket buffers take while the peer is not reading
    writer.write(data)
    writer.close()
    assert writer.is_closing()
    writer.write(b"TAIL")
    assert await peer.recv_to_eof() == data + b"TAIL"
    await bounded(writer.wait_closed())


async def test_write_after_write_eof_raises_and_reading_goes_on(kit):
    reader, writer, peer = await kit.pair()
    writer.write_eof()
    with pytest.raises(RuntimeError):
        writer.write(b"too late")
    await peer.send(b"still readable")
    peer.shutdown_write()
    assert await bounded(reader.read()) == b"still readable"


async def test_close(kit):
    _, writer, peer = await kit.pair()
    writer.write(b"bye")
    assert not writer.is_closing()
    writer.close()
    assert writer.is_closing()
    await bounded(writer.wait_closed())
    writer.close()
    await bounded(writer.wait_closed())
    assert await peer.recv_to_eof() == b"bye"


async def test_close_sends_queued_output_first(kit):
    _, writer, peer = await kit.pair()
    data = payload(16 * MiB)
    writer.write(data)
    writer.close()
    closing = asyncio.ensure_future(bounded(writer.wait_closed()))
    assert await peer.recv_to_eof() == data
    await closing


async def test_close_wakes_a_pending_read(kit):
    reader, writer, _ = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.read(10)))
    assert await still_pending(reading, 0.01)
    writer.close()
    assert await reading == b""


async def test_drain_after_close_raises_connection_reset(kit):
    _, writer, _ = await kit.pair()
    writer.close()
    with pytest.raises(ConnectionResetError):
        await bounded(writer.drain())


async def test_get_extra_info_client_side(kit):
    _, writer, peer = await kit.pair()
    assert writer.get_extra_info("peername") == peer.sock.getsockname()
    assert writer.get_extra_info("sockname") == peer.sock.getpeername()
    sock = writer.get_extra_info("socket")
    assert sock.getsockname() == writer.get_extra_info("sockname")
    assert sock.getpeername() == writer.get_extra_info("peername")
    assert sock.fileno() >= 0
    assert writer.get_extra_info("no such thing") is None
    assert writer.get_extra_info("no such thing", 42) == 42
    assert writer.get_extra_info("peername", "default") == peer.sock.getsockname()


async def test_the_socket_get_extra_info_gives_cannot_be_closed_behind_the_transport(kit):
    """asyncio and uvloop give a stand-in without close(), detach() or I/O: the transport calls on the socket's
    descriptor, and closed behind it that number would go to whatever is opened next. rsock gave the socket."""
    reader, writer, peer = await kit.pair()
    sock = writer.get_extra_info("socket")
    assert writer.get_extra_info("socket") is sock
    for method, args in [("close", ()), ("detach", ()), ("send", (b"x",)), ("recv", (1,))]:
        with pytest.raises((AttributeError, TypeError)):
            getattr(sock, method)(*args)
    assert sock.fileno() >= 0
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) in (0, 1)
    writer.write(b"still")
    assert await peer.recv_exactly(5) == b"still"
    await peer.send(b"open")
    assert await bounded(reader.readexactly(4)) == b"open"


async def test_get_extra_info_server_side(kit):
    _, writer, peer = await kit.server_pair()
    assert writer.get_extra_info("peername") == peer.sock.getsockname()
    assert writer.get_extra_info("sockname") == peer.sock.getpeername()
    assert writer.get_extra_info("socket").getsockname() == peer.sock.getpeername()


async def test_writer_transport(kit):
    _, writer, peer = await kit.pair()
    transport = writer.transport
    assert transport is not None
    assert transport.get_write_buffer_size() == 0
    assert not transport.is_closing()
    assert transport.get_extra_info("peername") == peer.sock.getsockname()


async def test_transport_abort_drops_queued_output_and_closes(kit):
    _, writer, peer = await kit.pair()
    writer.write(payload(16 * MiB))
    assert writer.transport.get_write_buffer_size() > 0
    writer.transport.abort()
    assert writer.is_closing()
    await bounded(writer.wait_closed())
    received = len(await peer.recv_to_eof())
    assert received < 16 * MiB


async def test_a_writer_dropped_unclosed_closes_its_connection_with_a_resource_warning(kit):
    """As asyncio's StreamWriter.__del__ does from Python 3.11.5: the connection is closed once its queued output is
    sent (rsock's used to stay open, the peer waiting for good)."""
    if kit.name == "stdlib" and sys.version_info < (3, 11, 5):
        pytest.skip("asyncio's StreamWriter closes itself when dropped from Python 3.11.5")
    loop = asyncio.get_running_loop()
    listener = kit.track_sock(socket.create_server((HOST, 0)))
    listener.setblocking(False)
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    # Not through kit.connect(), which would keep the writer for its teardown.
    reader, writer = await bounded(kit.mod.open_connection(*listener.getsockname()))
    raw, _ = await bounded(accepting)
    peer = Peer(kit.track_sock(raw))
    writer.write(b"last words")
    with pytest.warns(ResourceWarning, match="unclosed <.*StreamWriter"):
        del reader, writer
        gc.collect()
    assert await peer.recv_to_eof() == b"last words"


async def test_a_server_connection_whose_handler_dropped_its_writer_stays_open(kit):
    """Before Python 3.13 asyncio's protocol keeps a server connection's writer until the connection closes, so a
    handler that keeps only its reader does not have the connection closed under it by StreamWriter.__del__. From
    3.13 it does not: the dropped writer closes the connection and warns."""
    accepted = asyncio.Queue()

    def keep_the_reader(reader, writer):
        accepted.put_nowait((reader, writer.transport))

    transport = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = await bounded(kit.mod.start_server(keep_the_reader, HOST, 0))
        peer = await raw_client(kit, server.sockets[0].getsockname())
        reader, transport = await bounded(accepted.get())
        gc.collect()
    try:
        unclosed = [str(w.message) for w in caught if "unclosed" in str(w.message)]
        if sys.version_info >= (3, 13):
            assert len(unclosed) == 1 and "StreamWriter" in unclosed[0], unclosed
            assert transport.is_closing()
            assert await peer.recv_to_eof() == b""
            return
        assert unclosed == []
        assert not transport.is_closing()
        await peer.send(b"still there")
        assert await bounded(reader.readexactly(11)) == b"still there"
        transport.write(b"so am I")
        assert await peer.recv_exactly(7) == b"so am I"
    finally:
        if transport is not None:
            transport.close()
        server.close()
        await bounded(server.wait_closed())


# ---------------------------------------------------------------------------------------------------------------
# Backpressure


async def test_drain_returns_at_once_below_high_water(kit):
    _, writer, peer = await kit.pair()
    writer.write(b"x" * 1024)
    await asyncio.wait_for(writer.drain(), 0.5)
    assert await peer.recv_exactly(1024) == b"x" * 1024


async def test_many_tasks_awaiting_drain_at_once_all_get_none(kit):
    _, writer, peer = await kit.pair()
    writer.write(b"y" * 100)
    assert await bounded(asyncio.gather(*(writer.drain() for _ in range(200)))) == [None] * 200
    assert await peer.recv_exactly(100) == b"y" * 100


async def test_generator_based_coroutines_can_yield_from_reads_and_drain(kit):
    """@types.coroutine generators (older libraries) drive awaitables with `yield from`, which needs __iter__."""
    reader, writer, peer = await kit.pair()

    @types.coroutine
    def exchange():
        writer.write(b"ping")
        yield from writer.drain()
        return (yield from reader.readexactly(4))

    answering = asyncio.ensure_future(exchange())
    assert await peer.recv_exactly(4) == b"ping"
    await peer.send(b"pong")
    assert await bounded(answering) == b"pong"


@pytest.mark.parametrize("side", ["client", "server"])
async def test_drain_waits_while_the_peer_does_not_read(kit, side):
    _, writer, peer = await (kit.pair() if side == "client" else kit.server_pair())
    data = payload(32 * MiB)
    writer.write(data)
    assert writer.transport.get_write_buffer_size() > 64 * 1024
    draining = asyncio.ensure_future(writer.drain())
    assert await still_pending(draining, 0.2), "drain() returned although the peer reads nothing"
    received = await peer.recv_exactly(len(data), timeout=3 * TIMEOUT)
    await bounded(draining)
    assert writer.transport.get_write_buffer_size() <= 64 * 1024
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


async def test_cancelled_drain_loses_nothing(kit):
    _, writer, peer = await kit.pair()
    data = payload(32 * MiB, seed=1)
    writer.write(data)
    draining = asyncio.ensure_future(writer.drain())
    assert await still_pending(draining, 0.1)
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    writer.write(b"tail")
    received = await peer.recv_exactly(len(data) + 4, timeout=3 * TIMEOUT)
    await bounded(writer.drain())
    assert received == data + b"tail"


async def test_wait_for_timing_out_on_drain_then_drain_again(kit):
    _, writer, peer = await kit.pair()
    data = payload(32 * MiB, seed=2)
    writer.write(data)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 0.1)
    receiving = asyncio.ensure_future(peer.recv_exactly(len(data), timeout=3 * TIMEOUT))
    await bounded(writer.drain())
    assert await receiving == data


async def test_the_future_a_waiting_read_parks_its_task_on_hands_callbacks_itself(kit):
    """The future a task waiting on a read is parked on (`task._fut_waiter`, which a debugger or another
    library may hold) passes itself to its done callbacks, as asyncio's futures do, while the task
    resumes with the data."""
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(reader.read(100))
    assert await still_pending(reading, 0.05)
    parked_on = reading._fut_waiter
    called_with = []
    parked_on.add_done_callback(called_with.append)
    await peer.send(b"data")
    assert await bounded(reading) == b"data"
    await asyncio.sleep(0)  # asyncio's futures run their callbacks through the loop
    assert len(called_with) == 1 and called_with[0] is parked_on


# ---------------------------------------------------------------------------------------------------------------
# Concurrent readers, cancellation


READS = {
    "read": lambda r: r.read(100),
    "readexactly": lambda r: r.readexactly(3),
    "readline": lambda r: r.readline(),
    "readuntil": lambda r: r.readuntil(b"\r\n"),
}


@pytest.mark.parametrize("second", list(READS))
async def test_second_concurrent_reader_raises_runtime_error(kit, second):
    reader, _, peer = await kit.pair()

    async def first():
        return await reader.read(100)

    waiting = asyncio.ensure_future(bounded(first()))
    assert await still_pending(waiting, 0.01)
    with pytest.raises(RuntimeError):
        await bounded(READS[second](reader))
    await peer.send(b"for the first\r\n")
    assert await waiting == b"for the first\r\n"


async def test_create_task_of_a_read(kit):
    """asyncio's reads are coroutines, so `asyncio.create_task(reader.read(n))` is common code."""
    reader, _, peer = await kit.pair()
    task = asyncio.create_task(reader.read(100))
    try:
        await peer.send(b"data")
        assert await bounded(task) == b"data"
    finally:
        task.cancel()


async def test_create_task_of_drain_and_wait_closed(kit):
    _, writer, _ = await kit.pair()
    writer.write(b"x")
    await bounded(asyncio.create_task(writer.drain()))
    writer.close()
    await bounded(asyncio.create_task(writer.wait_closed()))


@pytest.mark.parametrize("method", list(READS))
async def test_cancelling_a_blocked_read_keeps_later_data(kit, method):
    reader, _, peer = await kit.pair()

    async def blocked():
        return await READS[method](reader)

    task = asyncio.ensure_future(blocked())
    assert await still_pending(task, 0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await peer.send(b"abc\r\n")
    assert await bounded(reader.readexactly(5)) == b"abc\r\n"


@pytest.mark.parametrize("method", ["readexactly", "readline", "readuntil"])
async def test_cancelling_a_read_with_partial_data_keeps_it(kit, method):
    reader, _, peer = await kit.pair()
    calls = {
        "readexactly": lambda: reader.readexactly(9),
        "readline": lambda: reader.readline(),
        "readuntil": lambda: reader.readuntil(b"\r\n"),
    }

    async def blocked():
        return await calls[method]()

    task = asyncio.ensure_future(blocked())
    await peer.send(b"par")
    assert await still_pending(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await peer.send(b"tial\r\n")
    assert await bounded(calls[method]()) == b"partial\r\n"


# Each way of reading the line b"abcd\r\n" (six bytes), given the reader.
LINE_READS = {
    "read": lambda reader: reader.read(100),
    "readexactly": lambda reader: reader.readexactly(6),
    "readline": lambda reader: reader.readline(),
    "readuntil": lambda reader: reader.readuntil(b"\r\n"),
}


@pytest.mark.parametrize("method", ["read", "readexactly", "readline", "readuntil"])
async def test_wait_for_timeout_keeps_data_that_arrives_later(kit, method):
    reader, _, peer = await kit.pair()
    calls = {method: functools.partial(read, reader) for method, read in LINE_READS.items()}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(calls[method](), 0.05)
    if method != "read":
        await peer.send(b"ab")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(calls[method](), 0.05)
    await peer.send(b"cd\r\n" if method != "read" else b"abcd\r\n")
    assert await bounded(calls[method]()) == b"abcd\r\n"


@pytest.mark.parametrize("method", ["read", "readexactly", "readline", "readuntil"])
async def test_wait_for_with_zero_timeout_loses_no_buffered_data(kit, method):
    """wait_for(..., 0) cancels the read before it runs; the data it would have read stays for the next read."""
    reader, _, peer = await kit.pair()
    calls = {method: functools.partial(read, reader) for method, read in LINE_READS.items()}
    await peer.send(b"-abcd\r\n")
    assert await bounded(reader.readexactly(1)) == b"-"  # the rest is buffered now
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(calls[method](), 0)
    assert await bounded(reader.read(100), 1.0) == b"abcd\r\n"


async def test_cancelling_a_task_between_two_reads(kit):
    reader, _, peer = await kit.pair()

    async def two_lines():
        return [await reader.readline(), await reader.readline()]

    task = asyncio.ensure_future(two_lines())
    await peer.send(b"one\n")
    assert await still_pending(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await peer.send(b"two\n")
    assert await bounded(reader.readline()) == b"two\n"


# ---------------------------------------------------------------------------------------------------------------
# Resets and half-closes


@pytest.mark.parametrize("method", list(READS))
async def test_peer_reset_during_a_read_raises_connection_reset(kit, method):
    reader, _, peer = await kit.pair()

    async def blocked():
        return await READS[method](reader)

    task = asyncio.ensure_future(bounded(blocked()))
    if method != "read":
        await peer.send(b"x")  # a partial message, then the reset
    assert await still_pending(task)
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await task


async def test_peer_reset_with_unread_data_raises_on_the_next_read(kit):
    reader, _, peer = await kit.pair()
    await peer.send(b"0123456789")
    assert await bounded(reader.readexactly(1)) == b"0"
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await bounded(reader.readexactly(100))
    with pytest.raises(ConnectionResetError):
        await bounded(reader.read(5))
    with pytest.raises(ConnectionResetError):
        await bounded(reader.read(0))


async def test_after_a_reset_the_transport_is_closing_and_drain_and_wait_closed_raise(kit):
    reader, writer, peer = await kit.pair()
    reading = asyncio.ensure_future(bounded(reader.read(10)))
    assert await still_pending(reading, 0.01)
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await reading
    with pytest.raises(ConnectionResetError):
        await bounded(writer.drain())
    assert writer.is_closing()
    writer.close()
    with pytest.raises(ConnectionResetError):
        await bounded(writer.wait_closed())


async def test_drain_after_close_waits_for_the_queued_output(kit):
    """close() with output still queued sends it before closing; drain() meanwhile waits for it, as for any write,
    rather than failing."""
    data = payload(4 * 1024 * 1024)
    _, writer, peer = await kit.pair()
    writer.write(data)
    writer.close()
    receiving = asyncio.ensure_future(peer.recv_to_eof())
    assert await bounded(writer.drain()) is None
    assert await receiving == data
    await bounded(writer.wait_closed())


async def test_write_eof_after_close_leaves_a_later_connection_alone(rkit):
    """A connection made after another was closed may get its descriptor number: write_eof() on the closed one
    must not shut that one down."""
    _, first, _ = await rkit.pair()
    first.close()
    await bounded(first.wait_closed())
    _, second, peer = await rkit.pair()
    first.write_eof()
    second.write(b"to the second")
    second.write_eof()
    assert await peer.recv_to_eof() == b"to the second"


async def test_reader_exception_after_a_reset(kit):
    reader, _, peer = await kit.pair()
    assert reader.exception() is None
    reading = asyncio.ensure_future(bounded(reader.read(10)))
    assert await still_pending(reading, 0.01)
    peer.reset()
    with pytest.raises(ConnectionResetError):
        await reading
    assert isinstance(reader.exception(), ConnectionResetError)


async def test_transport_pause_and_resume_reading(kit):
    reader, writer, peer = await kit.pair()
    transport = writer.transport
    assert transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    await peer.send(b"held back")
    reading = asyncio.ensure_future(bounded(reader.read(100)))
    assert await still_pending(reading, 0.05)
    transport.resume_reading()
    assert transport.is_reading()
    assert await reading == b"held back"
    writer.close()
    assert not transport.is_reading()


async def test_transport_write_buffer_limits(kit):
    _, writer, _ = await kit.pair()
    transport = writer.transport
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)
    transport.set_write_buffer_limits(low=100)
    assert transport.get_write_buffer_limits() == (100, 400)
    transport.set_write_buffer_limits(high=10, low=5)
    assert transport.get_write_buffer_limits() == (5, 10)
    with pytest.raises(ValueError, match="must be >= low"):
        transport.set_write_buffer_limits(high=1, low=2)
    with pytest.raises(ValueError, match=r"^high \(-1\) must be >= low \(-1\) must be >= 0$"):
        transport.set_write_buffer_limits(high=-1)


async def test_drain_waits_by_the_write_buffer_limits(kit):
    """With a high mark above what is queued, drain() returns at once even though the peer does not read."""
    _, writer, peer = await kit.pair()
    writer.transport.set_write_buffer_limits(high=64 * 1024 * 1024)
    writer.write(payload(8 * 1024 * 1024))
    assert await bounded(writer.drain()) is None
    assert writer.transport.get_write_buffer_size() > 0
    writer.transport.set_write_buffer_limits(high=1024)
    draining = asyncio.ensure_future(bounded(writer.drain()))
    assert await still_pending(draining, 0.05)
    received = asyncio.ensure_future(peer.recv_exactly(8 * 1024 * 1024))
    await draining
    await received


async def test_limit_must_be_positive(kit):
    for limit in (0, -1):
        with pytest.raises(ValueError, match="Limit cannot be <= 0"):
            await kit.pair(limit=limit)


async def test_server_reads_to_eof_then_replies(kit):
    async def handler(reader, writer):
        request = await reader.read()
        writer.write(b"got " + request)
        await writer.drain()

    _, address = await kit.serve(handler)
    peer = await raw_client(kit, address)
    await peer.send(b"the request")
    peer.shutdown_write()
    assert await peer.recv_to_eof() == b"got the request"


async def test_a_connection_its_handler_never_closed_is_collected(rkit):
    """A handler that returns without closing its writer: once the peer has gone and nothing refers to the
    connection, the garbage collector frees it and its socket is closed with a ResourceWarning, as asyncio's
    transports are on its default loop (rsock's used to stay open for good, a reference cycle the collector could
    not see). uvloop's own transports stay open until closed, so this is not compared with asyncio."""
    kit = rkit
    finished = asyncio.Queue()

    async def forgetful(reader, writer):
        await reader.read()
        finished.put_nowait(None)

    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    server = await bounded(kit.mod.start_server(forgetful, HOST, 0))
    closed = asyncio.ensure_future(server.wait_closed())
    try:
        address = server.sockets[0].getsockname()
        before = open_fds()
        # The whole run: a collection may come at any allocation, not only at the explicit one.
        with pytest.warns(ResourceWarning, match="unclosed"):
            for _ in range(20):
                peer = await raw_client(kit, address)
                peer.sock.close()
                await bounded(finished.get())
            for _ in range(3):
                await asyncio.sleep(0)  # the finished handler tasks leave the loop's queue
            gc.collect()
        assert open_fds() <= before
        server.close()
        await bounded(closed)  # the connections collected count as closed
    finally:
        server.close()
        await bounded(server.wait_closed())


# ---------------------------------------------------------------------------------------------------------------
# Servers


async def echo_lines(reader, writer):
    async for line in reader:
        writer.write(line)
        await writer.drain()


async def raw_client(kit, address):
    raw = kit.track_sock(socket.socket())
    raw.setblocking(False)
    await bounded(asyncio.get_running_loop().sock_connect(raw, address))
    return Peer(raw)


async def assert_refused(address):
    raw = socket.socket()
    raw.setblocking(False)
    try:
        with pytest.raises(ConnectionRefusedError):
            await bounded(asyncio.get_running_loop().sock_connect(raw, address))
    finally:
        raw.close()


async def test_start_server_echo(kit):
    _, address = await kit.serve(echo_lines)
    peer = await raw_client(kit, address)
    for i in range(20):
        await peer.send(b"line %d\n" % i)
        assert await peer.recv_exactly(len(b"line %d\n" % i)) == b"line %d\n" % i
    peer.shutdown_write()
    assert await peer.recv_to_eof() == b""


async def test_server_attributes(kit):
    server, address = await kit.serve(echo_lines)
    assert len(server.sockets) == 1
    assert server.sockets[0].getsockname()[:2] == address
    assert server.get_loop() is asyncio.get_running_loop()
    assert server.is_serving()
    assert isinstance(repr(server), str)
    server.close()
    assert not server.is_serving()
    assert len(server.sockets) == 0
    await bounded(server.wait_closed())
    server.close()


async def test_server_sockets_cannot_be_closed_or_accepted_on_behind_the_server(kit):
    """asyncio and uvloop give stand-ins for the listening sockets, without close() or accept(); rsock gave the
    listeners themselves, which closed would leave the accept loop on a descriptor number free for reuse."""
    server, address = await kit.serve(echo_lines)
    listener = server.sockets[0]
    for method in ("close", "accept", "detach"):
        with pytest.raises((AttributeError, TypeError)):
            getattr(listener, method)()
    assert listener.fileno() >= 0
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert f"fd={listener.fileno()}" in repr(server)
    peer = await raw_client(kit, address)
    await peer.send(b"served\n")
    assert await peer.recv_exactly(7) == b"served\n"


async def test_a_host_with_a_nul_is_refused_by_open_connection_and_start_server(kit):
    """asyncio's check of an IP address lets inet_pton()'s ValueError through; rsock.aio's took it for a name, and
    the resolver read it up to the NUL: it connected to, and listened on, 127.0.0.1."""
    if kit.name == "stdlib" and on_uvloop():
        pytest.skip("uvloop's own resolver reads the name up to the NUL")
    _, address = await kit.serve(echo_lines)
    with pytest.raises(ValueError, match="embedded null character"):
        await bounded(kit.mod.open_connection(HOST + "\x00.example", address[1]))
    with pytest.raises(ValueError, match="embedded null character"):
        await bounded(kit.mod.start_server(echo_lines, HOST + "\x00.example", 0))


async def test_start_serving_false_then_start_serving(kit):
    served = asyncio.Event()

    async def handler(reader, writer):
        served.set()
        await echo_lines(reader, writer)

    server, address = await kit.serve(handler, start_serving=False)
    assert not server.is_serving()
    await server.start_serving()
    assert server.is_serving()
    peer = await raw_client(kit, address)
    await peer.send(b"hi\n")
    assert await peer.recv_exactly(3) == b"hi\n"
    assert served.is_set()


async def test_connection_before_start_serving_is_refused(kit):
    _, address = await kit.serve(echo_lines, start_serving=False)
    await assert_refused(address)


async def test_serve_forever_cancelled_closes_the_server(kit):
    server, address = await kit.serve(echo_lines, start_serving=False)
    serving = asyncio.ensure_future(server.serve_forever())
    async with asyncio.timeout(TIMEOUT):
        while not server.is_serving():
            await asyncio.sleep(0)
    peer = await raw_client(kit, address)
    await peer.send(b"ping\n")
    assert await peer.recv_exactly(5) == b"ping\n"
    assert server.is_serving()
    peer.close()  # the cancelled serve_forever() waits for the connections to end from Python 3.12.1 on
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(serving)
    assert not server.is_serving()
    await assert_refused(address)


async def test_serve_forever_twice_raises(kit):
    server, _ = await kit.serve(echo_lines)
    serving = asyncio.ensure_future(server.serve_forever())
    assert await still_pending(serving, 0.01)
    with pytest.raises(RuntimeError):
        await bounded(server.serve_forever())
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(serving)
    with pytest.raises(RuntimeError):
        await bounded(server.serve_forever())


async def test_server_close_ends_serve_forever(rkit):
    """As asyncio.Server.close() does (uvloop's own Server leaves serve_forever() waiting, so this is checked against
    asyncio's behaviour only)."""
    server, address = await rkit.serve(echo_lines)
    serving = asyncio.ensure_future(server.serve_forever())
    assert await still_pending(serving, 0.01)
    server.close()
    with pytest.raises(asyncio.CancelledError):
        await bounded(serving)
    with pytest.raises(RuntimeError):
        await bounded(server.serve_forever())
    await assert_refused(address)


async def test_server_async_with(kit):
    server, address = await kit.serve(echo_lines)
    async with server as entered:
        assert entered is server
        peer = await raw_client(kit, address)
        await peer.send(b"in\n")
        assert await peer.recv_exactly(3) == b"in\n"
        peer.close()  # leaving the block waits for the connections to end from Python 3.12.1 on
    assert not server.is_serving()
    await assert_refused(address)


async def test_server_close_keeps_connected_clients(kit):
    skip_uvloops_own_server(kit)
    server, address = await kit.serve(echo_lines)
    peers = [await raw_client(kit, address) for _ in range(3)]
    for peer in peers:
        await peer.send(b"before\n")
        assert await peer.recv_exactly(7) == b"before\n"
    server.close()
    waiting = asyncio.ensure_future(server.wait_closed())
    if sys.version_info >= (3, 12, 1):
        assert await still_pending(waiting)  # for the connections still open
    else:
        await bounded(waiting)
    await assert_refused(address)
    for peer in peers:
        await peer.send(b"after\n")
        assert await peer.recv_exactly(6) == b"after\n"
        peer.shutdown_write()
        assert await peer.recv_to_eof() == b""
    await bounded(waiting)


async def test_start_server_on_a_port_in_use_raises_address_in_use(kit):
    taken = kit.track_sock(socket.create_server((HOST, 0)))
    with pytest.raises(OSError) as excinfo:
        await kit.serve(echo_lines, port=taken.getsockname()[1])
    assert excinfo.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("port", [65536, 70000, -1])
async def test_start_server_port_out_of_range_raises_overflowerror(kit, port):
    """As on asyncio's own loop, where bind() refuses it (rsock's resolver wrapped 65536 and 70000 round to other
    ports and listened there)."""
    if kit.name == "stdlib" and on_uvloop():
        pytest.skip("uvloop's own create_server leaves the port to its resolver, which wraps it round")
    with pytest.raises(OverflowError, match=r"bind\(\): port must be 0-65535"):
        await kit.serve(echo_lines, port=port)


async def test_start_server_reuse_port(kit):
    _, address = await kit.serve(echo_lines, reuse_port=True)
    second, _ = await kit.serve(echo_lines, port=address[1], reuse_port=True)
    assert second.sockets[0].getsockname()[:2] == address
    peer = await raw_client(kit, address)
    await peer.send(b"x\n")
    assert await peer.recv_exactly(2) == b"x\n"


async def test_callback_runs_in_the_context_of_start_server(kit):
    var = contextvars.ContextVar("var", default="unset")
    seen = asyncio.Queue()

    async def handler(reader, writer):
        seen.put_nowait(var.get())

    var.set("at start_server")
    _, address = await kit.serve(handler)
    var.set("later")
    await raw_client(kit, address)
    assert await bounded(seen.get()) == "at start_server"


async def test_each_connection_has_its_own_context(kit):
    """What one connection's handler sets in a ContextVar is not seen by the others (request ids, tracing)."""
    var = contextvars.ContextVar("var", default="unset")
    seen = asyncio.Queue()

    async def handler(reader, writer):
        name = (await reader.readline()).strip().decode()
        before = var.get()
        var.set(name)
        await reader.read()
        seen.put_nowait((name, before, var.get()))

    _, address = await kit.serve(handler)
    peers = []
    for name in ("a", "b", "c"):
        peer = await raw_client(kit, address)
        await peer.send(name.encode() + b"\n")
        peers.append(peer)
        await asyncio.sleep(0.02)  # each handler sets its variable before the next connects
    for peer in peers:
        peer.shutdown_write()
    results = sorted([await bounded(seen.get()) for _ in peers])
    assert results == [("a", "unset", "a"), ("b", "unset", "b"), ("c", "unset", "c")]


async def test_a_handler_that_raises_is_reported_and_its_connection_closed(kit):
    reported = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.put_nowait(context))
    try:

        async def handler(reader, writer):
            await reader.readline()
            raise ValueError("boom")

        server = await bounded(kit.mod.start_server(handler, HOST, 0))
        try:
            peer = await raw_client(kit, server.sockets[0].getsockname())
            await peer.send(b"hello\n")
            assert await peer.recv_to_eof() == b""
            context = await bounded(reported.get())
            assert context["message"] == "Unhandled exception in client_connected_cb"
            assert isinstance(context["exception"], ValueError)
        finally:
            server.close()
            await bounded(server.wait_closed())
    finally:
        loop.set_exception_handler(None)


async def test_a_plain_callback_that_closes_the_server_reports_nothing(kit):
    """A one-shot server, whose plain callback closes it. rsock calls a plain callback as it accepts, and used to go on
    accepting from the listener just closed: an "accept failed" EBADF for the loop's exception handler."""
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        servers = []

        def once(reader, writer):
            servers[0].close()
            writer.write(b"bye\n")
            writer.close()

        server = await bounded(kit.mod.start_server(once, HOST, 0))
        servers.append(server)
        peer = await raw_client(kit, server.sockets[0].getsockname())
        assert await peer.recv_to_eof() == b"bye\n"
        await bounded(server.wait_closed())
        assert not server.is_serving()
        for _ in range(3):
            await asyncio.sleep(0)
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_cancelled_handler_closes_its_connection(rkit):
    """As asyncio's start_server from Python 3.13 (before, its done callback fails on the cancelled task and the
    connection stays open)."""
    handlers = asyncio.Queue()

    async def handler(reader, writer):
        handlers.put_nowait(asyncio.current_task())
        await reader.read()

    server = await bounded(aio.start_server(handler, HOST, 0))
    try:
        peer = await raw_client(rkit, server.sockets[0].getsockname())
        (await bounded(handlers.get())).cancel()
        assert await peer.recv_to_eof() == b""
    finally:
        server.close()
        await bounded(server.wait_closed())


async def test_server_wait_closed_waits_for_close(kit):
    server, _, _ = await kit.accepted()
    waiting = asyncio.ensure_future(server.wait_closed())
    assert await still_pending(waiting)
    server.close()
    await bounded(waiting)
    await bounded(server.wait_closed())


async def test_server_close_clients_and_abort_clients(kit):
    if kit.name == "stdlib" and (sys.version_info < (3, 13) or on_uvloop()):
        pytest.skip("asyncio's Server has close_clients() and abort_clients() from Python 3.13 (uvloop's has not)")
    server, address, accepted = await kit.accepted()
    peers = [await raw_client(kit, address) for _ in range(3)]
    writers = [(await bounded(accepted.get()))[1] for _ in peers]
    writers[0].write(b"last words")
    server.close_clients()
    assert all(writer.is_closing() for writer in writers)
    for peer, sent in zip(peers, [b"last words", b"", b""], strict=True):
        assert await peer.recv_to_eof() == sent
    server.abort_clients()  # nothing left to abort: harmless
    _, late = await raw_client(kit, address), (await bounded(accepted.get()))[1]
    late.write(b"x" * 1024)
    server.abort_clients()
    assert late.is_closing()
    server.close()
    await bounded(server.wait_closed())


async def test_server_wait_closed_and_the_connections_still_open(kit):
    """wait_closed() called before close() waits for the connections still open too; one called after close()
    does so from Python 3.12.1 on, as asyncio's does there (before, it returns at once)."""
    skip_uvloops_own_server(kit)
    server, address, accepted = await kit.accepted()
    await raw_client(kit, address)
    _, writer = await bounded(accepted.get())
    early = asyncio.ensure_future(server.wait_closed())
    assert await still_pending(early)
    server.close()
    late = asyncio.ensure_future(server.wait_closed())
    assert await still_pending(early)
    if sys.version_info >= (3, 12, 1):
        assert await still_pending(late)
    else:
        await bounded(late)
    writer.close()
    await bounded(early)
    await bounded(late)


def skip_uvloops_own_server(kit):
    """uvloop's own Server keeps Python 3.11's wait_closed(), which returns at once once closed: from 3.12.1 it is
    no reference for asyncio's."""
    if kit.name == "stdlib" and on_uvloop() and sys.version_info >= (3, 12, 1):
        pytest.skip("uvloop's Server.wait_closed() keeps Python 3.11's behaviour")


# A server that runs out of descriptors: it keeps every connection, with room for only a few, prints its port,
# and after the clients have come reports how many it holds, how many accept failures were reported and the CPU
# time it used in the next second.
OUT_OF_DESCRIPTORS_SERVER = """
import asyncio, os, resource, sys, time
import uvloop
from rsock import aio

async def main():
    kept, failures = [], []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: failures.append(context))
    server = await aio.start_server(lambda reader, writer: kept.append(writer), "127.0.0.1", 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
    print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    sys.stdin.readline()
    await asyncio.sleep(0.2)
    started = time.process_time()
    await asyncio.sleep(1.0)
    print(len(kept), len(failures), time.process_time() - started, flush=True)

(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""


async def test_a_server_out_of_descriptors_backs_off_instead_of_spinning():
    """accept() failing with EMFILE leaves the listener readable: the server stops watching it for a while, as
    asyncio does, rather than failing again at every turn of the loop (it used to take a whole core). The server
    runs in a process of its own, on the same kind of loop as this test."""
    loop = "uvloop" if on_uvloop() else "asyncio"

    def run():
        with started([sys.executable, "-c", OUT_OF_DESCRIPTORS_SERVER, loop], stdin=subprocess.PIPE) as proc:
            lines = Lines(proc)
            port = listening_port(proc, lines, "the server")
            with contextlib.ExitStack() as clients:
                for _ in range(12):
                    clients.enter_context(socket.create_connection((HOST, port), timeout=TIMEOUT))
                say(proc, "connected")
                return finish(proc, lines)

    out, err = await asyncio.to_thread(run)
    kept, failures, cpu = out[-1].split()
    assert 0 < int(kept) < 12
    assert 1 <= int(failures) <= 5, err
    assert float(cpu) < 0.3


# ---------------------------------------------------------------------------------------------------------------
# open_connection's and start_server's other arguments


async def test_unknown_and_tls_only_options_are_refused(kit):
    async def on_client(reader, writer):
        writer.close()

    with pytest.raises(TypeError, match="bogus"):
        await bounded(kit.mod.open_connection(HOST, 9, bogus=1))
    with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
        await bounded(kit.mod.open_connection(HOST, 9, server_hostname="example.org"))
    with pytest.raises(TypeError, match="bogus"):
        await bounded(kit.mod.start_server(on_client, HOST, 0, bogus=1))
    with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
        await bounded(kit.mod.start_server(on_client, HOST, 0, ssl_handshake_timeout=5))


async def test_open_connection_refused(kit):
    unused = socket.socket()
    unused.bind((HOST, 0))
    try:
        with pytest.raises(ConnectionRefusedError):
            await bounded(kit.mod.open_connection(*unused.getsockname()))
    finally:
        unused.close()


async def test_open_connection_local_addr_and_family(kit):
    listener = kit.track_sock(socket.create_server((HOST, 0)))
    _, writer = await kit.connect(("localhost", listener.getsockname()[1]), family=socket.AF_INET, local_addr=(HOST, 0))
    assert writer.get_extra_info("peername") == listener.getsockname()
    assert writer.get_extra_info("sockname")[0] == HOST


async def test_open_connection_with_a_stdlib_sock(kit):
    listener = kit.track_sock(socket.create_server((HOST, 0)))
    sock = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    peer = Peer(kit.track_sock(conn))
    reader, writer = await bounded(kit.mod.open_connection(sock=sock))
    kit.track(writer)
    assert writer.get_extra_info("peername") == listener.getsockname()
    writer.write(b"via sock")
    await peer.send(b"back")
    assert await peer.recv_exactly(8) == b"via sock"
    assert await bounded(reader.readexactly(4)) == b"back"
    writer.close()
    await bounded(writer.wait_closed())
    assert await peer.recv_to_eof() == b""
    sock.close()  # detached or closed by now: must not raise


async def test_open_connection_with_an_rsock_sock(rkit):
    listener = rkit.track_sock(socket.create_server((HOST, 0)))
    sock = sockets.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    peer = Peer(rkit.track_sock(conn))
    reader, writer = await bounded(aio.open_connection(sock=sock))
    rkit.track(writer)
    assert writer.get_extra_info("socket").fileno() == sock.fileno()
    writer.write(b"via rsock")
    assert await peer.recv_exactly(9) == b"via rsock"
    await peer.send(b"back")
    assert await bounded(reader.readexactly(4)) == b"back"
    writer.close()
    await bounded(writer.wait_closed())
    assert sock.fileno() == -1


async def test_a_stream_used_from_inside_its_own_close_raises_runtime_error(rkit):
    """The transport closes the socket it adopted while it is busy closing: a socket subclass whose close() reads
    from the stream then gets RuntimeError from every call (a read used to raise a Rust panic)."""
    listener = rkit.track_sock(socket.create_server((HOST, 0)))
    outcomes = []

    class Inquisitive(sockets.socket):
        def close(self):
            for call in (reader.at_eof, lambda: reader.read(0)):
                try:
                    call()
                except BaseException as exc:  # a Rust panic is a BaseException
                    outcomes.append(type(exc))
            super().close()

    sock = Inquisitive()
    sock.connect(listener.getsockname())
    reader, writer = await bounded(aio.open_connection(sock=sock))
    writer.close()
    await bounded(writer.wait_closed())
    assert outcomes == [RuntimeError] * 2


async def check_server_on_given_sock(kit, listener):
    address = listener.getsockname()
    server, _ = await kit.serve(echo_lines, host=None, port=None, sock=listener)
    assert server.sockets[0].getsockname() == address
    peer = await raw_client(kit, address)
    await peer.send(b"through sock\n")
    assert await peer.recv_exactly(13) == b"through sock\n"
    peer.close()
    server.close()
    await bounded(server.wait_closed())
    await assert_refused(address)
    listener.close()


async def test_start_server_with_a_stdlib_listening_sock(kit):
    await check_server_on_given_sock(kit, socket.create_server((HOST, 0)))


async def test_start_server_with_an_rsock_listening_sock(rkit):
    await check_server_on_given_sock(rkit, sockets.create_server((HOST, 0)))


async def test_ssl_hands_over_to_asyncio(rkit):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(DATA_DIR / "localhost-cert.pem", DATA_DIR / "localhost-key.pem")
    client_ctx = ssl.create_default_context(cafile=DATA_DIR / "localhost-cert.pem")
    server, address = await rkit.serve(echo_lines, ssl=server_ctx)
    assert not isinstance(server, aio.Server)
    reader, writer = await rkit.connect(address, ssl=client_ctx, server_hostname="localhost")
    assert isinstance(reader, asyncio.StreamReader)
    assert writer.get_extra_info("ssl_object") is not None
    writer.write(b"secret\n")
    assert await bounded(reader.readline()) == b"secret\n"
    writer.close()
    await bounded(writer.wait_closed())


# ---------------------------------------------------------------------------------------------------------------
# rsock.aio only: Op and Waiter, large transfers, many connections


def epoll_fds():
    """How many epoll instances this process holds."""
    return fd_targets().count("anon_inode:[eventpoll]")


async def test_one_epoll_instance_watches_a_loop_s_transports_and_only_while_there_are_some(rkit):
    """rsock.aio's transports are watched through one epoll fd per loop (the loop watches that one fd), which
    exists only while a transport is open: an idle loop holds no descriptor of rsock's."""
    before = epoll_fds()
    pairs = [await rkit.pair() for _ in range(5)]
    assert epoll_fds() == before + 1
    for i, (reader, _, peer) in enumerate(pairs):
        await peer.send(b"%d" % i)
        assert await bounded(reader.read(10)) == b"%d" % i
    for _, writer, peer in pairs:
        writer.close()
        await bounded(writer.wait_closed())
        peer.close()
    assert epoll_fds() == before


async def test_buffered_read_is_ready_and_pending_read_is_a_waiter(rkit):
    reader, _, peer = await rkit.pair()
    # A read is a coroutine-like operation; its first step, with nothing buffered, yields rsock's future.
    pending = reader.read(10).send(None)
    assert isinstance(pending, _rsock.Waiter)
    assert asyncio.isfuture(pending)
    assert pending.get_loop() is asyncio.get_running_loop()
    assert not pending.done()
    called = asyncio.Event()
    results = []

    def callback(fut):
        results.append(fut.result())
        called.set()

    pending.add_done_callback(callback)
    await peer.send(b"0123456789abc")
    await bounded(called.wait())
    assert results == [b"0123456789"]
    assert pending.done() and not pending.cancelled() and pending.exception() is None
    ready = reader.read(10)
    assert isinstance(ready, _rsock.Op)
    with pytest.raises(StopIteration) as stopped:
        ready.send(None)  # buffered: the first step completes it at once
    assert stopped.value.value == b"abc"


async def test_remove_done_callback_whose_comparison_raises_removes_nothing(kit):
    """remove_done_callback() compares with ==; an __eq__ that raises propagates and leaves every callback
    registered, as asyncio's futures do: the task parked on the future still wakes up with its data."""
    reader, _, peer = await kit.pair()
    reading = asyncio.ensure_future(reader.read(100))
    assert await still_pending(reading, 0.05)
    parked_on = reading._fut_waiter

    class Incomparable:
        def __eq__(self, other):
            raise ArithmeticError("no comparing")

        __hash__ = object.__hash__

    with pytest.raises(ArithmeticError, match="no comparing"):
        parked_on.remove_done_callback(Incomparable())
    await peer.send(b"data")
    assert await bounded(reading) == b"data"


async def test_waiter_cancel_keeps_data_for_the_next_read(rkit):
    reader, _, peer = await rkit.pair()
    pending = reader.readexactly(4).send(None)
    assert pending.cancel("no longer")
    assert pending.cancelled()
    assert not pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        pending.result()
    await peer.send(b"kept")
    assert await bounded(reader.readexactly(4)) == b"kept"


async def test_waiter_callback_removed_is_not_called(rkit):
    reader, _, peer = await rkit.pair()
    pending = reader.read(10).send(None)
    calls = []
    pending.add_done_callback(calls.append)
    assert pending.remove_done_callback(calls.append) == 1
    done = asyncio.Event()
    pending.add_done_callback(lambda _: done.set())
    await peer.send(b"x")
    await bounded(done.wait())
    assert calls == []
    assert pending.result() == b"x"


async def test_waiter_callbacks_error_context_and_late_registration(rkit):
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    var = contextvars.ContextVar("var", default="default")
    context = contextvars.copy_context()
    context.run(var.set, "in the given context")
    reader, _, peer = await rkit.pair()
    pending = reader.read(10).send(None)
    seen = []
    finished = asyncio.Event()

    def raising(fut):
        raise RuntimeError("a callback failed")

    pending.add_done_callback(raising)
    pending.add_done_callback(lambda fut: seen.append(var.get()), context=context)
    pending.add_done_callback(lambda fut: finished.set())
    await peer.send(b"x")
    await bounded(finished.wait())
    assert seen == ["in the given context"]
    assert [type(report.get("exception")) for report in reported] == [RuntimeError]
    late = []
    pending.add_done_callback(late.append)
    assert late == []  # scheduled with call_soon, as asyncio does for a finished future
    await asyncio.sleep(0)
    assert late == [pending]


async def test_a_task_whose_context_is_any_object_with_run_is_woken(rkit):
    """asyncio takes any object with a run() method as a task's context (Handle._run calls it): a read
    wakes such a task as it wakes one with a contextvars.Context."""
    if on_uvloop():
        pytest.skip("uvloop itself runs a task only in a contextvars.Context")
    var = contextvars.ContextVar("var", default="default")

    class RunsInACopy:
        def __init__(self):
            self.context = contextvars.copy_context()
            self.context.run(var.set, "in the copy")

        def run(self, callback, *args):
            return self.context.run(callback, *args)

    async def read_and_look(reader):
        data = await reader.read(10)
        return data, var.get()

    reader, _, peer = await rkit.pair()
    task = asyncio.get_running_loop().create_task(read_and_look(reader), context=RunsInACopy())
    await asyncio.sleep(0.05)  # the task is waiting in read()
    await peer.send(b"data")
    assert await bounded(task) == (b"data", "in the copy")


async def test_large_transfer_through_readexactly_chunks(rkit):
    total = 64 * MiB
    chunk = MiB + 7

    async def sink(reader, writer):
        digest = hashlib.sha256()
        left = total
        while left:
            piece = await reader.readexactly(min(chunk, left))
            digest.update(piece)
            left -= len(piece)
        writer.write(digest.hexdigest().encode() + b"\n")
        await writer.drain()

    _, address = await rkit.serve(sink)
    reader, writer = await rkit.connect(address)
    expected = hashlib.sha256()
    rng = random.Random(7)
    async with asyncio.timeout(6 * TIMEOUT):
        sent = 0
        while sent < total:
            block = rng.randbytes(min(4 * MiB, total - sent))
            expected.update(block)
            writer.write(block)
            await writer.drain()
            sent += len(block)
        assert await reader.readline() == expected.hexdigest().encode() + b"\n"


async def test_large_transfer_to_the_client(rkit):
    data = payload(64 * MiB, seed=3)

    async def source(reader, writer):
        view = memoryview(data)
        for start in range(0, len(data), 3 * MiB):
            writer.write(view[start : start + 3 * MiB])
            await writer.drain()

    _, address = await rkit.serve(source)
    reader, _ = await rkit.connect(address)
    digest = hashlib.sha256()
    async with asyncio.timeout(6 * TIMEOUT):
        left = len(data)
        while left:
            piece = await reader.readexactly(min(65536 + 3, left))
            digest.update(piece)
            left -= len(piece)
        assert await reader.read() == b""
    assert digest.digest() == hashlib.sha256(data).digest()


def ensure_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"the test needs {needed} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_thousand_concurrent_connections_echo(rkit):
    count = 1000
    ensure_fd_limit(3 * count + 256)
    _, address = await rkit.serve(echo_lines, backlog=count)

    async def client(i):
        reader, writer = await aio.open_connection(*address)
        rkit.track(writer)
        line = b"client %d says hello\n" % i
        writer.write(line)
        await writer.drain()
        echoed = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return echoed == line

    async with asyncio.timeout(6 * TIMEOUT):
        results = await asyncio.gather(*(client(i) for i in range(count)))
    assert all(results)


@pytest.mark.parametrize(
    ("host", "expected"),
    [(["127.0.0.1"], {"127.0.0.1"}), (("127.0.0.1", "127.0.0.1"), {"127.0.0.1"}), ("", {"0.0.0.0", "::"})],
    ids=["list", "tuple", "empty"],
)
async def test_start_server_host_may_be_empty_or_a_sequence(kit, host, expected):
    """As asyncio reads `host`: "" listens on every interface, a sequence of hosts on each (once per address)."""
    if "::" in expected and not ipv6_loopback_available():
        expected = expected - {"::"}

    async def handler(reader, writer):
        writer.write(await reader.readline())

    server, _ = await kit.serve(handler, host)
    assert {sock.getsockname()[0] for sock in server.sockets} == expected
    # With port 0 each listener has a port of its own: the IPv4 one's.
    port = next(sock.getsockname()[1] for sock in server.sockets if sock.family == socket.AF_INET)
    reader, writer = await kit.connect((HOST, port))
    writer.write(b"hello\n")
    assert await bounded(reader.readline()) == b"hello\n"


ONE_OR_THE_OTHER = {
    "open_connection(host, port, sock=)": (
        lambda mod, tcp, udp: mod.open_connection(*tcp.getsockname(), sock=tcp),
        "host/port and sock can not be specified at the same time",
    ),
    "open_connection()": (lambda mod, tcp, udp: mod.open_connection(), "host and port was not specified and no sock "
                          "specified"),
    "open_connection(sock=UDP)": (lambda mod, tcp, udp: mod.open_connection(sock=udp), "A Stream Socket was expected"),
    "start_server(cb, host, 0, sock=)": (
        lambda mod, tcp, udp: mod.start_server(print, HOST, 0, sock=tcp),
        "host/port and sock can not be specified at the same time",
    ),
    "start_server(cb)": (lambda mod, tcp, udp: mod.start_server(print), "Neither host/port nor sock were specified"),
}  # fmt: skip


@pytest.mark.parametrize("call", list(ONE_OR_THE_OTHER))
async def test_host_port_and_sock_are_one_or_the_other(kit, call):
    """asyncio's ValueErrors: host/port with sock, neither of them, a socket that is not a stream socket."""
    make, message = ONE_OR_THE_OTHER[call]
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind((HOST, 0))
        tcp.listen()
        with pytest.raises(ValueError) as raised:
            await bounded(make(kit.mod, tcp, udp))
    assert str(raised.value).split(", got")[0] == message


PORT_SPELLINGS = {
    "int": int,
    "str": str,
    "bytes": lambda p: b"%d" % p,
    "float": float,
    "IntEnum": lambda p: enum.IntEnum("Port", {"P": p}).P,
}


@pytest.mark.parametrize("spelling", list(PORT_SPELLINGS))
async def test_a_port_with_an_ip_address_is_read_as_asyncio_reads_it(kit, spelling):
    """With an IP address for host, asyncio takes int() of the port (a float, an IntEnum) without asking the
    resolver, which would refuse them ("Int or String expected")."""
    if kit.name == "stdlib" and on_uvloop():
        pytest.skip("uvloop's own create_server refuses a float port")
    port_as = PORT_SPELLINGS[spelling]
    server, (_, port) = await kit.serve(echo_lines, HOST, port_as(0))
    assert server.sockets[0].getsockname()[0] == HOST
    reader, writer = await kit.connect((HOST, port_as(port)))
    writer.write(b"hello\n")
    assert await bounded(reader.readline()) == b"hello\n"


@pytest.mark.parametrize("proto", [socket.IPPROTO_TCP, socket.IPPROTO_UDP])
async def test_a_protocol_with_an_ip_address_is_read_as_asyncio_reads_it(kit, proto):
    """asyncio takes IPPROTO_UDP given for a stream socket to an IP address as TCP; rsock.aio gave it to the resolver,
    which refused it (ai_socktype not supported)."""
    _, address = await kit.serve(echo_lines)
    reader, writer = await kit.connect(address, proto=proto)
    writer.write(b"hello\n")
    assert await bounded(reader.readline()) == b"hello\n"


@pytest.mark.parametrize("host", ["127.0.0.1", b"127.0.0.1", "::1"])
async def test_an_ip_address_is_not_taken_to_the_resolver(kit, host, monkeypatch):
    """As asyncio's create_connection() and create_server() read an IP address at once, rsock.aio's do: no trip to
    the loop's resolver thread for each connection (rsock.aio's took one, and connected three times slower); a name
    still goes to it."""
    if host == "::1" and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback address here")
    if kit.name == "stdlib" and on_uvloop():
        pytest.skip("uvloop's own create_connection resolves names without loop.getaddrinfo()")
    loop = asyncio.get_running_loop()
    asked = []

    async def resolver(*args, **kwargs):
        asked.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "the resolver was asked")

    monkeypatch.setattr(loop, "getaddrinfo", resolver)
    # start_server() takes a host that is not a str as a sequence of hosts, so its address a str.
    _, (_, port) = await kit.serve(echo_lines, host if isinstance(host, str) else host.decode(), 0)
    reader, writer = await kit.connect((host, port))
    writer.write(b"hello\n")
    assert await bounded(reader.readline()) == b"hello\n"
    assert asked == []
    with pytest.raises(socket.gaierror, match="the resolver was asked"):
        await kit.connect(("localhost", port))
    assert asked == ["localhost"]


@pytest.mark.parametrize("wait", ["drain", "wait_closed"])
async def test_waits_given_up_against_a_stalled_peer_do_not_pile_up(rkit, wait):
    """A keep-alive loop whose drain() (or wait_closed()) times out again and again while the peer reads nothing:
    each wait given up is dropped, as asyncio drops a cancelled drain's future, instead of being kept until the
    peer reads or the connection closes."""
    _reader, writer, _peer = await rkit.pair()
    writer.write(bytes(10_000_000))  # the peer reads nothing: drain() waits
    if wait == "wait_closed":
        writer.close()
    for _ in range(300):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(getattr(writer, wait)(), 0.0005)
    gc.collect()
    assert sum(type(o) is _rsock.Waiter for o in gc.get_objects()) <= 1


@pytest.mark.parametrize("streams", ["stdlib", "rsock"])
async def test_other_threads_get_the_gil_while_streams_of_this_loop_keep_it_busy(streams):
    """Eight connections of one loop echo lines to each other while the loop asks another thread for 50 calls
    (`asyncio.to_thread`, as an executor's getaddrinfo runs): each waits about a switch interval (5 ms) at most,
    as with asyncio's own streams. rsock.aio's loop used to let go of the GIL only for moments too short for the
    waiting thread to take it, which kept each call waiting up to a second."""
    module = {"stdlib": asyncio, "rsock": aio}[streams]
    handlers = []

    async def echo(reader, writer):
        handlers.append(asyncio.current_task())
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        writer.close()

    async def pump(reader, writer):
        while True:
            writer.write(b"ping\n" * 20)
            await writer.drain()
            for _ in range(20):
                await reader.readline()

    server = await module.start_server(echo, HOST, 0)
    connections = [await bounded(module.open_connection(*server.sockets[0].getsockname()[:2])) for _ in range(8)]
    pumps = [asyncio.ensure_future(pump(reader, writer)) for reader, writer in connections]
    try:
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(50):
            await bounded(asyncio.to_thread(int))
        elapsed = loop.time() - started
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for _, writer in connections:
            writer.close()
            await bounded(writer.wait_closed())
        await bounded(asyncio.gather(*handlers))  # each ends at its client's end of stream
        server.close()
        await bounded(server.wait_closed())
    assert elapsed < 2.5, f"50 calls in another thread took {elapsed:.2f} s"


async def test_awaitables_run_as_tasks_of_asyncios_pure_python_task_complete(kit):
    """asyncio's pure-Python Task (which nest_asyncio, common in notebooks, installs) steps the awaitable it runs with
    send(None), and takes a None result for a bare yield. Awaitables that finish with None (drain() with room in the
    buffer, wait_closed()) must then raise StopIteration from send(), as a coroutine does: rsock's returned None, and
    such a task stepped them for ever, at full CPU."""
    reader, writer, peer = await kit.pair()
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    loop.set_task_factory(lambda loop, coro, **kwargs: asyncio.tasks._PyTask(coro, loop=loop, **kwargs))
    try:
        writer.write(b"ping")
        assert await bounded(loop.create_task(writer.drain())) is None
        assert await peer.recv_exactly(4) == b"ping"
        await peer.send(b"pong")
        assert await bounded(loop.create_task(reader.readexactly(4))) == b"pong"
        writer.close()
        assert await bounded(loop.create_task(writer.wait_closed())) is None
    finally:
        loop.set_task_factory(factory)
