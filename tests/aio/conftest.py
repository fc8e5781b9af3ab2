"""Fixtures for the rsock.aio tests.

Every async test runs on the default asyncio loop and on uvloop (the `pytest_asyncio_loop_factories` hook below);
the stream tests also run over both stream implementations, asyncio's own and rsock.aio's (the `kit` fixture), so
each behaviour is checked against asyncio's. Everything a test opens is closed at teardown, every wait is bounded.
"""

import asyncio
import contextlib
import gc
import socket
import struct

import pytest
import pytest_asyncio
import uvloop

from rsock import aio

HOST = "127.0.0.1"
TIMEOUT = 5.0  # bound on any single wait: generous, only there so that nothing hangs

LOOP_FACTORIES = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_asyncio_loop_factories(config, item):
    """Runs every async test in this directory once per event loop implementation.

    pytest-asyncio 1.5 deprecates overriding the `event_loop_policy` fixture (the override emits a
    PytestDeprecationWarning, an error under this project's filterwarnings=error); this hook is its replacement."""
    return LOOP_FACTORIES


@pytest.fixture(params=list(LOOP_FACTORIES))
def loop_factory(request):
    """For the synchronous tests that run event loops of their own (asyncio.Runner): each loop implementation."""
    return LOOP_FACTORIES[request.param]


async def bounded(awaitable, timeout=TIMEOUT):
    """`await awaitable`, failing with TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        return await awaitable


def on_uvloop():
    """Whether the running loop is uvloop's."""
    return isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def still_pending(task, within=0.05):
    """True if `task` has not finished after `within` seconds: a bounded look that something really waits, not a
    synchronisation."""
    done, _ = await asyncio.wait({task}, timeout=within)
    return not done


class Peer:
    """The far end of a connection under test: a plain non-blocking stdlib socket driven with the loop's sock_*
    methods, so the behaviour on the other side does not depend on either stream implementation."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def loop(self):
        return asyncio.get_running_loop()

    async def send(self, data):
        await bounded(self.loop.sock_sendall(self.sock, data))

    async def recv(self, n=65536):
        return await bounded(self.loop.sock_recv(self.sock, n))

    async def recv_exactly(self, n, timeout=TIMEOUT):
        buf = bytearray()
        async with asyncio.timeout(timeout):
            while len(buf) < n:
                chunk = await self.loop.sock_recv(self.sock, min(n - len(buf), 1 << 20))
                if not chunk:
                    raise AssertionError(f"peer saw EOF after {len(buf)} of {n} bytes")
                buf += chunk
        return bytes(buf)

    async def recv_to_eof(self, timeout=TIMEOUT):
        buf = bytearray()
        async with asyncio.timeout(timeout):
            while chunk := await self.loop.sock_recv(self.sock, 1 << 20):
                buf += chunk
        return bytes(buf)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self):
        """Closes with an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


class Kit:
    """`open_connection` / `start_server` of one stream implementation (`kit.mod` is `asyncio` or `rsock.aio`),
    with every writer, server and handler task they produce closed or cancelled at teardown."""

    def __init__(self, name, mod):
        self.name = name
        self.mod = mod
        self._writers = []
        self._servers = []
        self._tasks = set()
        self._socks = []

    def __repr__(self):
        return f"<Kit {self.name}>"

    @property
    def is_rsock(self):
        return self.mod is aio

    def track(self, writer):
        self._writers.append(writer)
        return writer

    def track_sock(self, sock):
        self._socks.append(sock)
        return sock

    async def connect(self, address, **kwargs):
        """`open_connection(*address, **kwargs)`, bounded; the writer is closed at teardown."""
        reader, writer = await bounded(self.mod.open_connection(*address, **kwargs))
        self.track(writer)
        return reader, writer

    async def serve(self, handler, host=HOST, port=0, **kwargs):
        """`start_server` with `handler(reader, writer)` (a coroutine function) run for each connection, its writer
        closed when it returns; returns (server, address)."""

        async def on_client(reader, writer):
            self._tasks.add(asyncio.current_task())
            self.track(writer)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await bounded(self.mod.start_server(on_client, host, port, **kwargs))
        self._servers.append(server)
        address = server.sockets[0].getsockname()[:2] if server.sockets else None
        return server, address

    async def accepted(self, **kwargs):
        """A server of this kit whose accepted streams are handed over through a queue: returns (server, address,
        queue of (reader, writer))."""
        queue = asyncio.Queue()

        def on_client(reader, writer):
            self.track(writer)
            queue.put_nowait((reader, writer))

        server = await bounded(self.mod.start_server(on_client, HOST, 0, **kwargs))
        self._servers.append(server)
        return server, server.sockets[0].getsockname()[:2], queue

    async def pair(self, **kwargs):
        """A connection opened with this kit's open_connection(**kwargs) to a raw stdlib peer: (reader, writer,
        peer)."""
        loop = asyncio.get_running_loop()
        listener = self.track_sock(socket.socket())
        listener.bind((HOST, 0))
        listener.listen()
        listener.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        try:
            reader, writer = await self.connect(listener.getsockname(), **kwargs)
            raw, _ = await bounded(accepting)
        finally:
            accepting.cancel()
            listener.close()
        return reader, writer, Peer(self.track_sock(raw))

    async def server_pair(self, **kwargs):
        """A connection accepted by this kit's start_server(**kwargs) from a raw stdlib client: (reader, writer,
        peer)."""
        loop = asyncio.get_running_loop()
        _, address, queue = await self.accepted(**kwargs)
        raw = self.track_sock(socket.socket())
        raw.setblocking(False)
        await bounded(loop.sock_connect(raw, address))
        reader, writer = await bounded(queue.get())
        return reader, writer, Peer(raw)

    async def aclose(self):
        for server in self._servers:
            server.close()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.close()
        for writer in self._writers:
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except Exception:
                writer.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for sock in self._socks:
            sock.close()
        # Let the transports' close callbacks run before the loop goes.
        for _ in range(3):
            await asyncio.sleep(0)


KIT_MODULES = {"stdlib": asyncio, "rsock": aio}


@pytest_asyncio.fixture(params=list(KIT_MODULES))
async def kit(request):
    """The stream implementation under test: asyncio's (`stdlib`) or rsock.aio's (`rsock`)."""
    kit = Kit(request.param, KIT_MODULES[request.param])
    try:
        yield kit
    finally:
        await kit.aclose()


@pytest_asyncio.fixture
async def rkit():
    """rsock.aio's streams only, for what has no asyncio counterpart to compare with."""
    kit = Kit("rsock", aio)
    try:
        yield kit
    finally:
        await kit.aclose()


@pytest_asyncio.fixture
async def ref():
    """asyncio's own streams, as the reference peer of rsock.aio's servers and clients."""
    kit = Kit("stdlib", asyncio)
    try:
        yield kit
    finally:
        await kit.aclose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Renders a failure's traceback with the cyclic GC paused.

    CPython 3.11.7's `ast` can fail with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905)
    when a collection runs inside the ast.parse() that pytest does to show a traceback's source; pytest then stops
    the whole run with an INTERNALERROR. Seen here after the uvloop UdpClient failures (with stdlib sockets swapped
    in for rsock's too, and never with the GC disabled)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if enabled:
            gc.enable()
