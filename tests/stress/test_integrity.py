"""Data integrity: many connections at once each send PAYLOAD bytes of random data, in chunks of random sizes,
through an echo server; every byte is hashed on the way out, on arrival at the server, on the way back and on
arrival at the client, and all four must agree: 0 bytes lost, added or reordered.

The cases form a matrix (CASES) of
- servers: rsock.TcpServer with an echo handler, rsock.aio.TcpServer with an `async def` echo handler,
  rsock.aio.start_server with an echo coroutine, and a thread-per-connection echo server on the drop-in
  rsock.socket;
- clients: rsock.TcpClient, the drop-in rsock.socket, rsock.aio.open_connection and rsock.aio.TcpClient;
- framing: None (a raw stream), "length", "line" and a two-byte delimiter.
Not the whole cross product: every server and every client runs at least once raw and at least once framed.

Where one side frames and the other does not (the start_server and drop-in servers echo raw bytes; the
drop-in and open_connection clients frame with this file's own `encode` and `Deframer`), the raw side checks
the wire bytes rsock's framing produced and consumed, independently of rsock's own decoders.

"line" and delimiter framing cannot carry every byte: their messages are cut from a pool of random bytes with
the terminator made impossible (`message_pool`); "length" and raw messages carry arbitrary bytes.

Everything runs in this process, clients in threads (sync) or on the test's event loop (asyncio): the data
volume is what is stressed, not the descriptor count. Quick mode: 10 connections x 256 KiB per case; full
mode (RSOCK_STRESS=full): 100 connections x 10 MiB per case.
"""

import asyncio
import contextlib
import functools
import hashlib
import random
import threading
import time
import zlib

import pytest

import rsock
from rsock import aio
from tests.stress.conftest import raise_fd_limit, scale

HOST = "127.0.0.1"
CONNECTIONS = scale(10, 100)
PAYLOAD = scale(256 * 1024, 10 * 1024 * 1024)  # bytes each connection sends (and gets back), before framing
MAX_CHUNK = 256 * 1024  # the largest message or read; the smallest is 1 byte
POOL_SIZE = 16 * 1024 * 1024  # random bytes messages are cut from
CALL_TIMEOUT = 60.0  # bound on any one blocking call: only there so that nothing hangs
CASE_TIMEOUT = scale(90.0, 900.0)  # bound on one case, connect to last byte
RECORD_TIMEOUT = 10.0  # how long the server may take to report connections the clients have finished
DELIMITER = b"\x00\xff"  # no proper prefix of it is also a suffix, so a message ending in b"\x00" is unambiguous


def chunk_size(rng):
    """A message or read size from 1 byte to MAX_CHUNK, spread log-uniformly so that single bytes, a few
    hundred bytes and a quarter of a megabyte are all common."""
    return rng.randint(1, 1 << rng.randint(0, MAX_CHUNK.bit_length() - 1))


def random_sizes(seed):
    """Endless read sizes (`chunk_size`) from `seed`."""
    rng = random.Random(seed)
    while True:
        yield chunk_size(rng)


def terminator(framing):
    """What ends a message on the wire under a delimiter framing."""
    return b"\n" if framing == "line" else framing


def encode(framing, message):
    """`message` as it goes on the wire under `framing`: this file's own encoder, for the clients that frame by
    hand over a raw stream."""
    if framing == "length":
        return len(message).to_bytes(4, "big") + message
    return b"".join((message, terminator(framing)))


@functools.cache
def message_pool(framing):
    """Random bytes that messages are slices of. Generating 2 GiB per case with random.Random or os.urandom
    would cost more than the transfer (about 300 MiB/s, holding the GIL); slices of one pool at random offsets
    are as varied for checking order and cost nothing.

    For "line" the pool has no b"\\n" and no b"\\r" (line framing ends a message at b"\\n" and drops a b"\\r"
    before it): those two byte values are mapped to 0x0B and 0x0E. For the delimiter the pool has no
    DELIMITER: each occurrence becomes b"\\x00\\xfe", which cannot form a new one. Other framings carry any
    byte."""
    pool = random.Random(20261125).randbytes(POOL_SIZE)
    if framing == "line":
        pool = pool.translate(bytes.maketrans(b"\n\r", b"\x0b\x0e"))
    elif isinstance(framing, bytes):
        pool = pool.replace(DELIMITER, b"\x00\xfe")
    if framing not in (None, "length"):
        assert terminator(framing) not in pool
    return pool


class Plan:
    """What one connection sends: PAYLOAD bytes in messages of random sizes (`chunk_size`), each a slice of the
    pool at a random offset, all decided by the connection's seed. Under raw framing the "messages" are just
    the chunks handed to send(); TCP may split or merge them."""

    def __init__(self, seed, framing):
        self.seed = seed
        self.framing = framing
        self.count = sum(1 for _ in self.messages())
        self.wire_bytes = PAYLOAD + self.count * Tally.overhead(framing)

    def messages(self):
        rng = random.Random(self.seed)
        pool = memoryview(message_pool(self.framing))
        left = PAYLOAD
        while left:
            size = min(left, chunk_size(rng))
            start = rng.randrange(len(pool) - size + 1)
            yield pool[start : start + size]
            left -= size

    def read_sizes(self):
        """The sizes the client's reader asks for, each at random, so reads split and merge what was sent."""
        return random_sizes(self.seed + 1)


class Tally:
    """What one side sent or received on one connection, in order: the wire bytes, their hash and the
    messages. A message is hashed as it travels (with its length prefix or terminator), so the tally of a
    framed side equals the tally of a raw side that carried the same stream, and message boundaries count:
    moving one would change the hash."""

    def __init__(self, framing=None):
        self.framing = framing
        self.hash = hashlib.sha256()
        self.bytes = 0
        self.payload = 0
        self.messages = 0

    @staticmethod
    def overhead(framing):
        if framing is None:
            return 0
        return 4 if framing == "length" else len(terminator(framing))

    def add(self, data):
        """Counts `data`: a whole message when framed, any piece of the stream when raw."""
        if self.framing == "length":
            self.hash.update(len(data).to_bytes(4, "big"))
        self.hash.update(data)
        if self.framing not in (None, "length"):
            self.hash.update(terminator(self.framing))
        self.payload += len(data)
        self.bytes += len(data) + self.overhead(self.framing)
        self.messages += 1

    @property
    def stream(self):
        """What the wire carried, as bytes and hash: comparable whatever either side's framing."""
        return self.bytes, self.hash.hexdigest()

    def __repr__(self):
        return f"<{self.bytes} bytes, {self.messages} messages, sha256 {self.hash.hexdigest()[:16]}>"


class Deframer:
    """This file's own decoder for a framed stream read from a raw socket, so messages coming from rsock's
    servers are cut independently of rsock's decoders."""

    def __init__(self, framing):
        self.framing = framing
        self.buffer = bytearray()
        self.searched = 0

    def feed(self, data):
        """The messages `data` completes, in order."""
        self.buffer += data
        messages = []
        while True:
            if self.framing == "length":
                if len(self.buffer) < 4:
                    break
                end = 4 + int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) < end:
                    break
                messages.append(bytes(self.buffer[4:end]))
                del self.buffer[:end]
            else:
                delimiter = terminator(self.framing)
                end = self.buffer.find(delimiter, max(0, self.searched - len(delimiter) + 1))
                if end < 0:
                    self.searched = len(self.buffer)
                    break
                messages.append(bytes(self.buffer[:end]))
                del self.buffer[: end + len(delimiter)]
                self.searched = 0
        return messages


class EchoLog:
    """What an echo server received and sent on each connection, by the client's address; each server adds a
    connection once it has ended."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = {}

    def record(self, peer, received, sent, error):
        with self.lock:
            self.connections[tuple(peer)[:2]] = (received, sent, error)

    async def wait_for(self, count):
        """Waits (bounded) until `count` connections have been recorded."""
        deadline = time.monotonic() + RECORD_TIMEOUT
        while len(self.connections) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


# Servers: async context managers yielding (address, native server or None); each echoes every byte back
# and records in the log what it received and sent, as its framing cuts the stream.


def recording_handlers(framing, log, asynchronous):
    """An echo server's on_connect, on_message (`async def` if `asynchronous`) and on_disconnect, which record
    in `log` what each connection received and sent."""

    def on_connect(conn):
        conn.state["received"], conn.state["sent"] = Tally(framing), Tally(framing)

    def on_message(conn, data):
        conn.state["received"].add(data)
        conn.state["sent"].add(data)
        return data

    async def on_message_async(conn, data):
        return on_message(conn, data)

    def on_disconnect(conn, exc):
        log.record(conn.peer, conn.state["received"], conn.state["sent"], exc)

    return {
        "on_message": on_message_async if asynchronous else on_message,
        "on_connect": on_connect,
        "on_disconnect": on_disconnect,
    }


@contextlib.asynccontextmanager
async def tcpserver(framing, log):
    """rsock.TcpServer whose handler returns each message (each chunk, raw) as the reply."""
    server = rsock.TcpServer((HOST, 0), framing=framing, **recording_handlers(framing, log, asynchronous=False))
    try:
        server.start()
        yield server.address, server
    finally:
        server.stop(5.0)


@contextlib.asynccontextmanager
async def aio_tcpserver(framing, log):
    """rsock.aio.TcpServer with an `async def` echo handler, run on this test's event loop."""
    server = aio.TcpServer((HOST, 0), framing=framing, **recording_handlers(framing, log, asynchronous=True))
    try:
        await server.start()
        yield server.address, server
    finally:
        await server.stop(5.0)


@contextlib.asynccontextmanager
async def aio_start_server(framing, log):
    """rsock.aio.start_server with a coroutine echoing raw bytes, read in random sizes (the client's framing
    passes through untouched)."""
    tasks = set()

    async def echo(reader, writer):
        tasks.add(asyncio.current_task())
        peer = writer.get_extra_info("peername")
        received, sent = Tally(), Tally()
        sizes = random_sizes(peer[1])
        error = None
        try:
            while data := await reader.read(next(sizes)):
                received.add(data)
                writer.write(data)
                sent.add(data)
                await writer.drain()
        except Exception as exc:
            error = exc
        finally:
            log.record(peer, received, sent, error)
            writer.close()

    server = await aio.start_server(echo, HOST, 0, backlog=1024)
    try:
        yield server.sockets[0].getsockname()[:2], None
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)


@contextlib.asynccontextmanager
async def threaded_server(framing, log):
    """A thread per connection on the drop-in rsock.socket, as the socket tutorial writes servers: recv() in
    random sizes and sendall() what came, raw, until the client shuts its side down."""
    stopping = threading.Event()
    workers = []

    def serve(conn, peer):
        received, sent = Tally(), Tally()
        sizes = random_sizes(peer[1])
        error = None
        try:
            with conn:
                conn.settimeout(CALL_TIMEOUT)
                while data := conn.recv(next(sizes)):
                    received.add(data)
                    conn.sendall(data)
                    sent.add(data)
        except OSError as exc:
            error = exc
        log.record(peer, received, sent, error)

    def accept_loop(listener):
        while not stopping.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue  # look at `stopping` again
            worker = threading.Thread(target=serve, args=(conn, peer), name=f"echo-{peer[1]}")
            workers.append(worker)
            worker.start()

    with rsock.socket(rsock.AF_INET, rsock.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(1024)
        listener.settimeout(0.1)
        acceptor = threading.Thread(target=accept_loop, args=(listener,), name="echo-accept")
        acceptor.start()
        try:
            yield listener.getsockname(), None
        finally:
            stopping.set()
            acceptor.join(CALL_TIMEOUT)
            for worker in workers:
                worker.join(CALL_TIMEOUT)


SERVERS = {
    "tcpserver": tcpserver,
    "aio.TcpServer": aio_tcpserver,
    "aio.start_server": aio_start_server,
    "socket-threads": threaded_server,
}
# The framing each server cuts the stream with, given the case's: only the rsock servers have framing.
SERVER_FRAMES = {"tcpserver": True, "aio.TcpServer": True, "aio.start_server": False, "socket-threads": False}


# Clients: one object per connection with send_all() and receive_all() (run at the same time, so the echo
# never waits for the client to stop sending), close(), and the tallies of what it sent and received.


class Client:
    def __init__(self, framing, plan):
        self.framing = framing
        self.plan = plan
        self.sent = Tally(framing)
        self.received = Tally(framing)
        self.problem = None
        self.local = None


class TcpClientConn(Client):
    """rsock.TcpClient, with rsock's framing. It has no half-close, so the reader stops at the expected count
    (bytes, or messages) and extra bytes show up in the server's count of what it sent."""

    def __init__(self, address, framing, plan):
        super().__init__(framing, plan)
        self.client = rsock.TcpClient(address, framing=framing, timeout=CALL_TIMEOUT)
        self.local = self.client.local

    def send_all(self):
        for message in self.plan.messages():
            self.client.send(message)
            self.sent.add(message)

    def receive_all(self):
        if self.framing is None:
            sizes = self.plan.read_sizes()
            while self.received.bytes < self.plan.wire_bytes and (data := self.client.recv(next(sizes))):
                self.received.add(data)
        else:
            while self.received.messages < self.plan.count:
                if (message := self.client.recv_message()) is None:
                    break  # EOF: what is missing shows in the counts
                self.received.add(message)

    def close(self):
        self.client.close()


class SocketConn(Client):
    """The drop-in rsock.socket: sendall() each message (framed by `encode` when the server frames),
    shutdown(SHUT_WR) after the last, recv() in random sizes until EOF (cut by `Deframer`)."""

    def __init__(self, address, framing, plan):
        super().__init__(framing, plan)
        self.sock = rsock.create_connection(address, timeout=CALL_TIMEOUT)
        self.local = self.sock.getsockname()

    def send_all(self):
        for message in self.plan.messages():
            self.sock.sendall(message if self.framing is None else encode(self.framing, message))
            self.sent.add(message)
        self.sock.shutdown(rsock.SHUT_WR)

    def receive_all(self):
        deframer = None if self.framing is None else Deframer(self.framing)
        sizes = self.plan.read_sizes()
        while data := self.sock.recv(next(sizes)):
            for message in [data] if deframer is None else deframer.feed(data):
                self.received.add(message)
        if deframer is not None and deframer.buffer:
            self.problem = f"EOF after {len(deframer.buffer)} bytes of an unfinished message"

    def close(self):
        self.sock.close()


class AioStreamsConn(Client):
    """rsock.aio.open_connection: write() and drain() each message (framed by `encode` when the server
    frames), write_eof() after the last, read() in random sizes until EOF (cut by `Deframer`)."""

    @classmethod
    async def connect(cls, address, framing, plan):
        self = cls(framing, plan)
        self.reader, self.writer = await aio.open_connection(*address)
        self.local = self.writer.get_extra_info("sockname")
        return self

    async def send_all(self):
        for message in self.plan.messages():
            self.writer.write(message if self.framing is None else encode(self.framing, message))
            self.sent.add(message)
            await self.writer.drain()
        self.writer.write_eof()

    async def receive_all(self):
        deframer = None if self.framing is None else Deframer(self.framing)
        sizes = self.plan.read_sizes()
        while data := await self.reader.read(next(sizes)):
            for message in [data] if deframer is None else deframer.feed(data):
                self.received.add(message)
        if deframer is not None and deframer.buffer:
            self.problem = f"EOF after {len(deframer.buffer)} bytes of an unfinished message"

    async def close(self):
        self.writer.close()
        await self.writer.wait_closed()


class AioTcpClientConn(Client):
    """rsock.aio.TcpClient, with rsock's framing; like TcpClient, it reads up to the expected count."""

    @classmethod
    async def connect(cls, address, framing, plan):
        self = cls(framing, plan)
        self.client = await aio.TcpClient.connect(address, framing=framing)
        self.local = self.client.local
        return self

    async def send_all(self):
        for message in self.plan.messages():
            await self.client.send(message)
            self.sent.add(message)

    async def receive_all(self):
        if self.framing is None:
            sizes = self.plan.read_sizes()
            while self.received.bytes < self.plan.wire_bytes and (data := await self.client.recv(next(sizes))):
                self.received.add(data)
        else:
            while self.received.messages < self.plan.count:
                if (message := await self.client.recv_message()) is None:
                    break  # EOF: what is missing shows in the counts
                self.received.add(message)

    async def close(self):
        await self.client.close()


def run_sync_clients(kind, address, framing, plans, deadline):
    """Connects one `kind` per plan, then runs every connection's send_all() and receive_all() each in a thread
    of its own until `deadline`; returns the clients."""
    clients, threads, errors = [], [], []

    def guarded(job):
        try:
            job()
        except BaseException as exc:
            errors.append((threading.current_thread().name, exc))

    try:
        for plan in plans:
            clients.append(kind(address, framing, plan))
        for index, client in enumerate(clients):
            for job in (client.send_all, client.receive_all):
                threads.append(threading.Thread(target=guarded, args=(job,), name=f"{job.__name__}-{index}"))
                threads[-1].start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in threads if thread.is_alive()]
    finally:
        for client in clients:
            client.close()  # also ends any thread still blocked, with an error
        for thread in threads:
            thread.join(CALL_TIMEOUT)
    assert not stuck, f"{len(stuck)} client threads still running at the deadline: {stuck[:5]}; errors {errors[:3]}"
    if errors:
        name, exc = errors[0]
        raise AssertionError(f"{len(errors)} client threads failed, the first ({name}): {exc!r}") from exc
    return clients


async def run_async_clients(kind, address, framing, plans):
    """Connects one `kind` per plan, then runs every connection's send_all() and receive_all() as tasks of one
    TaskGroup (the first failure cancels the rest); returns the clients."""
    clients = []
    try:
        for plan in plans:
            clients.append(await kind.connect(address, framing, plan))
        async with asyncio.TaskGroup() as group:
            for client in clients:
                group.create_task(client.send_all())
                group.create_task(client.receive_all())
    finally:
        for client in clients:
            await client.close()
    return clients


CLIENTS = {
    "tcpclient": TcpClientConn,
    "socket": SocketConn,
    "aio.open_connection": AioStreamsConn,
    "aio.TcpClient": AioTcpClientConn,
}

# (server, client, framing): each server and each client at least once raw and once framed.
CASES = [
    ("tcpserver", "tcpclient", None),
    ("tcpserver", "tcpclient", "length"),
    ("tcpserver", "socket", "line"),
    ("tcpserver", "aio.TcpClient", DELIMITER),
    ("tcpserver", "aio.open_connection", None),
    ("aio.TcpServer", "socket", "length"),
    ("aio.TcpServer", "aio.TcpClient", None),
    ("aio.start_server", "aio.open_connection", None),
    ("aio.start_server", "tcpclient", "length"),
    ("socket-threads", "socket", None),
    ("socket-threads", "aio.TcpClient", "line"),
]


def case_id(case):
    server, client, framing = case
    name = {None: "raw", "length": "length", "line": "line"}.get(framing, "delimiter")
    return f"{server}-{client}-{name}"


async def run_case(server_kind, client_kind, framing, plans):
    """Serves, runs every client connection to the end, and returns (clients, server log, server stats or
    None, seconds the transfer took)."""
    log = EchoLog()
    async with SERVERS[server_kind](framing if SERVER_FRAMES[server_kind] else None, log) as (address, server):
        started = time.perf_counter()
        kind = CLIENTS[client_kind]
        async with asyncio.timeout(CASE_TIMEOUT):
            if hasattr(kind, "connect"):
                clients = await run_async_clients(kind, address, framing, plans)
            else:
                deadline = time.monotonic() + CASE_TIMEOUT
                clients = await asyncio.to_thread(run_sync_clients, kind, address, framing, plans, deadline)
        elapsed = time.perf_counter() - started
        await log.wait_for(len(plans))
        stats = None if server is None else server.stats
    return clients, log, stats, elapsed


def check_connection(client, log, server_frames):
    """What is wrong with one connection, as a list of sentences (empty when every byte checks out)."""
    problems = []
    if client.problem:
        problems.append(client.problem)
    if client.sent.payload != PAYLOAD:
        problems.append(f"sent {client.sent.payload} of {PAYLOAD} bytes")
    if client.received.stream != client.sent.stream:
        problems.append(f"sent {client.sent}, got back {client.received}")
    if client.framing is not None and client.received.messages != client.sent.messages:
        problems.append(f"sent {client.sent.messages} messages, got back {client.received.messages}")
    seen = log.connections.get(tuple(client.local)[:2])
    if seen is None:
        return [*problems, "the server has no record of this connection"]
    received, sent, error = seen
    if error is not None:
        problems.append(f"the server's side ended with {error!r}")
    if received.stream != client.sent.stream:
        problems.append(f"the server received {received}, the client sent {client.sent}")
    if sent.stream != client.received.stream:
        problems.append(f"the server sent {sent}, the client received {client.received}")
    if server_frames and client.framing is not None and received.messages != client.sent.messages:
        problems.append(f"the server received {received.messages} messages of {client.sent.messages}")
    return problems


@pytest.mark.parametrize(("server_kind", "client_kind", "framing"), CASES, ids=[case_id(c) for c in CASES])
def test_echo_integrity(server_kind, client_kind, framing, no_leaks):
    """Every connection gets back exactly what it sent, and the server saw exactly that: per connection the
    byte counts, message counts and hashes of all four streams agree; for rsock's servers, the stats count
    every byte in and out."""
    raise_fd_limit(4096)
    name = case_id((server_kind, client_kind, framing))
    base_seed = zlib.crc32(name.encode())
    plans = [Plan(base_seed + 2 * index, framing) for index in range(CONNECTIONS)]

    clients, log, stats, elapsed = asyncio.run(run_case(server_kind, client_kind, framing, plans))

    server_frames = SERVER_FRAMES[server_kind]
    problems = {client.local: check_connection(client, log, server_frames) for client in clients}
    problems = {local: found for local, found in problems.items() if found}
    sent = sum(client.sent.payload for client in clients)
    verified = sum(client.received.payload for client in clients if client.local not in problems)
    messages = sum(client.sent.messages for client in clients)
    print(
        f"FIGURE: integrity {name}: {len(clients)} connections x {PAYLOAD / 2**20:g} MiB, "
        f"{verified} bytes verified each way, {CONNECTIONS * PAYLOAD - verified} bytes lost, "
        f"{messages} {'messages' if framing else 'sends'}, {elapsed:.1f} s, {sent / 2**20 / elapsed:.0f} MiB/s echoed"
    )
    assert len(clients) == CONNECTIONS
    assert not problems, (
        f"{len(problems)} of {CONNECTIONS} connections lost, added or reordered data (seed {base_seed}): "
        + "; ".join(f"{local}: {', '.join(found)}" for local, found in list(problems.items())[:5])
    )
    assert verified == CONNECTIONS * PAYLOAD
    if stats is not None:
        wire_out = sum(client.sent.bytes for client in clients)
        wire_back = sum(client.received.bytes for client in clients)
        assert stats["accepted"] == CONNECTIONS, stats
        assert stats["active"] == 0, stats
        assert stats["errors"] == 0, stats
        assert stats["bytes_in"] == wire_out, stats
        assert stats["bytes_out"] == wire_back, stats
        if framing is not None:
            assert stats["messages"] == messages, stats
