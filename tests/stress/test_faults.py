"""Faults against rsock.TcpServer: many faulty peers at once, each fault happening while a few healthy clients
(HealthyClients: rsock.TcpClient and stdlib sockets) keep making checked echo requests that must all succeed.

- peers that reset (SO_LINGER 0, then close) after sending part of a length-prefixed frame, or while the server
  is writing them replies;
- peers that half-close (shutdown(SHUT_WR)) in the middle of a frame;
- peers that never read: with a handler replying 64 KiB to each request, the server stops taking their requests
  once WRITE_HIGH_WATER of output is queued (they are held, memory stays bounded, and every reply arrives once
  they do read); broadcasts to them beyond WRITE_LIMIT disconnect them as slow readers;
- peers that connect and send nothing, or half a frame, or go quiet after a request: idle_timeout closes them;
- length headers announcing 4 GiB (and just over max_frame_size): rejected at the header, memory flat;
- connections beyond max_connections: refused, counted in stats["refused"], the others served;
- handlers that raise (logged on logger "rsock", that connection closed) or block (time.sleep: the others
  resume after);
- stop() with all of these at once, and Ctrl-C (SIGINT) to a child process under serve_forever() with them
  connected.

The server runs in this process (a child process for Ctrl-C), so its descriptors, threads and memory are what the
tests measure; the no_leaks fixture fails a test that leaves a descriptor or thread behind, and each test checks
server.stats against what its faults explain. Quick mode (the default, what CI runs) uses tens of faulty peers per
kind; RSOCK_STRESS=full uses hundreds.

Every socket has a timeout, every wait a deadline, every loop a bound.
"""

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import json
import logging
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import rsock
from tests.socket_reads import recv_until_closed
from tests.stress.conftest import fd_count, raise_fd_limit, rss_kib, scale
from tests.stress.test_load import figure, wait_until

HOST = "127.0.0.1"
MiB = 1 << 20
CALL_TIMEOUT = 10.0  # bound on any one blocking call: only there so that nothing hangs
SETTLE = 15.0  # how long the server may take to act on what peers did (close, count, log)
HEALTHY = scale(3, 6)  # healthy clients running through each fault
HEALTHY_MAX_REQUESTS = 1_000_000  # bound on each healthy client's loop (the test stops it long before)
BIG_REPLY = 64 * 1024  # the handler's reply to a b"big/..." request
# Mirrors of src/tcp/server.rs and src/server_common.rs.
WRITE_HIGH_WATER = 1 << 20  # queued output beyond which a connection's requests are not read
WRITE_LIMIT = 64 << 20  # queued output (by broadcasts) beyond which the peer is disconnected
DEFAULT_STOP_TIMEOUT = 5.0
ABORT_GRACE = 1.0  # stop() waits at most this long after force-closing what its timeout left open
STOP_SLACK = 1.5  # scheduling slack on a busy 2-core machine, on top of stop()'s documented bound
FILLER = bytes(range(256)) * 8

TALLY = {"kinds": set(), "faulty": 0, "healthy": 0}  # for the summary figure at the end of the module


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def frame(payload):
    """`payload` as it goes on the wire under "length" framing."""
    return struct.pack(">I", len(payload)) + payload


def recv_exact(sock, n):
    """Exactly `n` bytes from a stdlib socket; EOFError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(min(n - len(buf), MiB))
        if not data:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def parse_frames(data):
    """The whole frames in `data`, and how many bytes of a cut-off last one follow them."""
    frames, offset = [], 0
    while offset + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, offset)
        if offset + 4 + n > len(data):
            break
        frames.append(data[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return frames, len(data) - offset


def connect(stack, address, rcvbuf=None):
    """A stdlib TCP socket connected to `address`, with a timeout, closed when `stack` closes. `rcvbuf` (set before
    connecting, so the kernel does not grow it) limits what the socket can hold unread."""
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(CALL_TIMEOUT)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reset(sock):
    """Closes `sock` with a reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def unread_bytes(server_port, peer_ports):
    """Bytes the peers on `peer_ports` sent that the server on `server_port` has not read yet: not yet acknowledged
    (the peer socket's tx_queue) or waiting in the server socket's receive queue (its rx_queue), as /proc/net/tcp
    shows them."""
    peer_ports = set(peer_ports)
    total = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            tx_queue, rx_queue = (int(q, 16) for q in fields[4].split(":"))
            if local_port == server_port and remote_port in peer_ports:
                total += rx_queue
            elif local_port in peer_ports and remote_port == server_port:
                total += tx_queue
    return total


def wait_all_read(server, socks):
    """Waits (with a deadline) until the server has read every byte `socks` sent it."""
    ports = [sock.getsockname()[1] for sock in socks]
    assert wait_until(lambda: unread_bytes(server.address[1], ports) == 0, SETTLE), (
        f"the server left {unread_bytes(server.address[1], ports)} bytes from {len(socks)} peers unread"
    )


def vm_kib(field):
    """A /proc/self/status memory field (VmPeak, VmRSS, ...) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def trimmed_rss_kib():
    """Resident memory once freed memory is handed back to the system (glibc's malloc_trim), so that heap an earlier
    test freed but kept resident cannot absorb, and hide, what a test makes the server allocate."""
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    return rss_kib()


def wmem_max():
    """The most a TCP socket's send buffer grows to (net.ipv4.tcp_wmem's maximum)."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as sysctl:
        return int(sysctl.read().split()[2])


def need_descriptors(count):
    """Raises the descriptor limit for `count` more descriptors; fails the test if the hard limit is too low."""
    wanted = fd_count() + count + 100
    limit = raise_fd_limit(wanted)
    assert limit >= wanted, f"the descriptor limit ({limit}) cannot hold the {wanted} descriptors this test needs"


def stop_within(server, timeout, at_least=0.0):
    """server.stop(timeout), which must return within its documented bound (timeout, then ABORT_GRACE after
    force-closing what is left); returns how long it took."""
    started = time.monotonic()
    server.stop(timeout)
    took = time.monotonic() - started
    assert not server.running
    assert took < timeout + ABORT_GRACE + STOP_SLACK, f"stop({timeout}) took {took:.2f} s"
    assert took >= at_least, f"stop({timeout}) took only {took:.2f} s"
    return took


def log_records(caplog, level, text):
    return [r for r in caplog.records if r.name == "rsock" and r.levelno == level and text in r.getMessage()]


def tally(kinds, faulty, healthy):
    TALLY["kinds"].update(kinds)
    TALLY["faulty"] += faulty
    TALLY["healthy"] += healthy


@pytest.fixture(scope="module", autouse=True)
def io_thread_known_to_threading():
    """Makes rsock's io thread log once before any test. A thread Python did not start becomes a "Dummy-N" entry of
    threading.enumerate() the first time it logs (logging asks threading for the current thread's name): that is
    the io thread itself, which outlives every test, not a thread a test leaked; the no_leaks fixture would count it
    against whichever test first has rsock log at a level that is enabled."""
    logger = logging.getLogger("rsock")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with rsock.TcpServer((HOST, 0), None) as server:
            socket.create_connection(server.address, timeout=CALL_TIMEOUT).close()
            assert wait_until(lambda: server.stats["accepted"] == 1 and server.stats["active"] == 0, SETTLE)
    finally:
        logger.setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def summary():
    """Prints the module's summary figure once its tests are done."""
    yield
    if TALLY["faulty"]:
        figure(
            "faults survived",
            f"{TALLY['faulty']} faulty peers of {len(TALLY['kinds'])} kinds,"
            f" {TALLY['healthy']} healthy requests verified",
        )


class Boom(RuntimeError):
    """What the handler raises for a b"boom/..." request."""


class Recorder:
    """A TcpServer's handlers, and what they saw. Requests are b"<kind>/...": b"big" is answered with BIG_REPLY
    bytes (the request, padded), b"bulk/<size>/..." with `size` bytes (the same), b"boom" raises Boom,
    b"sleep/<seconds>/..." sleeps that long then echoes; anything else is echoed. Handlers run on rsock's io thread;
    the test reads what they record under the lock."""

    def __init__(self):
        self.cond = threading.Condition()
        self.handled = collections.Counter()  # kind -> messages handled
        self.by_peer = collections.Counter()  # (kind, peer) -> messages handled, for every kind but b"healthy"
        self.connected = 0
        self.ended = {}  # peer -> (the exception on_disconnect got, when)

    def on_connect(self, conn):
        with self.cond:
            self.connected += 1

    def on_message(self, conn, data):
        kind = data.partition(b"/")[0]
        with self.cond:
            self.handled[kind] += 1
            if kind != b"healthy":
                self.by_peer[kind, conn.peer] += 1
        if kind == b"big":
            return data.ljust(BIG_REPLY, b".")
        if kind == b"bulk":
            return data.ljust(int(data.split(b"/")[1]), b".")
        if kind == b"boom":
            raise Boom(data.decode())
        if kind == b"sleep":
            time.sleep(float(data.split(b"/")[1]))
        return data

    def on_disconnect(self, conn, exc):
        with self.cond:
            self.ended[conn.peer] = (exc, time.monotonic())
            self.cond.notify_all()

    def wait_ended(self, peers, timeout=SETTLE):
        """{peer: exception} once on_disconnect has run for every one of `peers` (addresses); fails the test at the
        deadline."""
        peers = list(peers)
        with self.cond:
            if not self.cond.wait_for(lambda: all(p in self.ended for p in peers), timeout):
                missing = [p for p in peers if p not in self.ended]
                pytest.fail(f"on_disconnect never ran for {len(missing)} of {len(peers)} peers, e.g. {missing[:3]}")
            return {p: self.ended[p][0] for p in peers}

    def ended_at(self, peer):
        with self.cond:
            return self.ended[peer][1]

    def count(self, kind, peer=None):
        with self.cond:
            return self.handled[kind] if peer is None else self.by_peer[kind, peer]


@contextlib.contextmanager
def fault_server(**kwargs):
    """A started TcpServer with "length" framing and a Recorder's handlers; stopped at the end."""
    recorder = Recorder()
    server = rsock.TcpServer(
        (HOST, 0),
        recorder.on_message,
        on_connect=recorder.on_connect,
        on_disconnect=recorder.on_disconnect,
        framing="length",
        **kwargs,
    )
    server.start()
    try:
        yield server, recorder
    finally:
        server.stop(2.0)


class StdlibClient:
    """A stdlib socket framing requests by hand, as a client in another language would."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=CALL_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, payload):
        self.sock.sendall(frame(payload))
        (n,) = struct.unpack(">I", recv_exact(self.sock, 4))
        return recv_exact(self.sock, n)

    def close(self):
        self.sock.close()


class HealthyClients:
    """`count` clients, each in a thread of its own, making checked echo requests back to back until stop(): the
    even ones rsock.TcpClient, the odd ones StdlibClient. Every request is unique (client, counter, a size that
    varies), every reply must equal it. Any error is recorded and fails the test at the next wait_progress() or
    check(). With `until_closed`, a client whose connection the server closes (ConnectionError, EOFError) just
    ends: for tests that stop the server under them. A timeout is never tolerated."""

    def __init__(self, address, count=HEALTHY, *, until_closed=False):
        self.address = address
        self.until_closed = until_closed
        self.done = [0] * count  # requests verified, per client
        self.wire_bytes = [0] * count  # bytes of those requests on the wire (each reply is the same size)
        self.slowest = [0.0] * count  # longest request, seconds
        self.closed = [None] * count  # under until_closed: how the server ended the connection
        self.errors = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"healthy-{i}") for i in range(count)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        try:
            self.wait_progress(1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self, index):
        client = None
        try:
            if index % 2 == 0:
                client = rsock.TcpClient(self.address, framing="length", timeout=CALL_TIMEOUT)
            else:
                client = StdlibClient(self.address)
            for i in range(HEALTHY_MAX_REQUESTS):
                if self.stopping.is_set():
                    break
                payload = b"healthy/%d/%d/" % (index, i) + FILLER[: (i * 37) % 1500]
                started = time.monotonic()
                try:
                    reply = client.request(payload)
                except (ConnectionError, EOFError) as exc:
                    if not self.until_closed:
                        raise
                    self.closed[index] = exc
                    break
                took = time.monotonic() - started
                if reply != payload:
                    raise AssertionError(f"healthy client {index} sent {payload[:40]!r}..., got {reply[:40]!r}...")
                self.done[index] += 1
                self.wire_bytes[index] += 4 + len(payload)
                self.slowest[index] = max(self.slowest[index], took)
        except BaseException as exc:  # reported by check()
            self.errors.append((index, exc))
        finally:
            if client is not None:
                client.close()

    def check(self):
        if self.errors:
            index, exc = self.errors[0]
            pytest.fail(f"healthy client {index} failed ({len(self.errors)} failed in all): {exc!r}")

    def wait_progress(self, more, timeout=SETTLE):
        """Waits until every client has verified `more` further requests; fails the test at the deadline."""
        target = [done + more for done in self.done]
        deadline = time.monotonic() + timeout
        while any(done < t for done, t in zip(self.done, target, strict=True)):
            self.check()
            if time.monotonic() > deadline:
                pytest.fail(f"healthy clients stalled: {self.done} verified, {target} wanted within {timeout} s")
            time.sleep(0.005)
        self.check()

    def stop(self):
        """Ends every client (each finishes the request it is making first) and joins its thread."""
        self.stopping.set()
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(CALL_TIMEOUT + 5)
        alive = [thread.name for thread in self.threads if thread.is_alive()]
        assert not alive, f"healthy clients still running: {alive}"

    @property
    def verified(self):
        return sum(self.done)

    @property
    def bytes(self):
        return sum(self.wire_bytes)


# ---------------------------------------------------------------------------------------------------------------
# Resets and half-closes


def test_peers_resetting_mid_frame_and_mid_reply(no_leaks):
    """Peers reset the connection with half a frame sent (read by the server first), or while the server writes
    them replies they are not reading; each such connection ends with ConnectionResetError (or EPIPE) and counts
    as an error, no half frame reaches the handler, and the healthy clients see none of it."""
    mid_frame, mid_reply = scale(60, 600), scale(20, 200)
    # Replies asked by each mid-reply peer: twice what the kernel's buffers and the high-water mark can hold.
    replies_asked = max(128, 2 * (wmem_max() + 2 * WRITE_HIGH_WATER) // BIG_REPLY)
    need_descriptors(2 * (mid_frame + mid_reply + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        sent = 0  # bytes the faulty peers sent
        partial = [connect(stack, server.address) for _ in range(mid_frame)]
        for i, sock in enumerate(partial):
            hello = frame(b"hello/%d" % i)
            sock.sendall(hello)
            assert recv_exact(sock, len(hello)) == hello
            cut = struct.pack(">I", 2000) + (b"partial/%d/" % i).ljust(10 + (i * 13) % 1900, b"p")
            sock.sendall(cut)
            sent += len(hello) + len(cut)
        writing = [connect(stack, server.address, rcvbuf=64 * 1024) for _ in range(mid_reply)]
        for i, sock in enumerate(writing):
            requests = b"".join(frame(b"big/%d/%d" % (i, n)) for n in range(replies_asked))
            sock.sendall(requests)
            sent += len(requests)
        for i, sock in enumerate(writing):
            first_reply = frame((b"big/%d/0" % i).ljust(BIG_REPLY, b"."))
            assert recv_exact(sock, 1000) == first_reply[:1000]  # the replies are going out
        wait_all_read(server, partial + writing)
        healthy.wait_progress(3)

        peers = [sock.getsockname() for sock in partial + writing]
        for sock in partial + writing:
            reset(sock)
        ended = recorder.wait_ended(peers)
        healthy.wait_progress(3)
        healthy.stop()
        healthy.check()

        for peer in peers[:mid_frame]:
            assert isinstance(ended[peer], ConnectionResetError), f"{peer} ended with {ended[peer]!r}"
        for peer in peers[mid_frame:]:
            assert isinstance(ended[peer], ConnectionResetError | BrokenPipeError), f"{peer}: {ended[peer]!r}"
            assert 1 <= recorder.count(b"big", peer) < replies_asked  # held at the high-water mark, then reset
        assert recorder.count(b"partial") == 0
        assert recorder.count(b"hello") == mid_frame
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        big = recorder.count(b"big")
        expected = {
            "accepted": HEALTHY + mid_frame + mid_reply,
            "active": 0,
            "refused": 0,
            "messages": healthy.verified + mid_frame + big,
            "bytes_in": healthy.bytes + sent,
            "errors": mid_frame + mid_reply,
        }
        assert {key: stats[key] for key in expected} == expected, stats
        assert stats["bytes_out"] >= healthy.bytes + sum(len(frame(b"hello/%d" % i)) for i in range(mid_frame))
        # on_disconnect runs just after a connection leaves stats["active"]: wait for the last one.
        assert wait_until(lambda: len(recorder.ended) == HEALTHY + mid_frame + mid_reply, SETTLE)
        assert recorder.connected == HEALTHY + mid_frame + mid_reply
        stop_within(server, 2.0)
    figure("resets mid-frame / mid-reply", f"{mid_frame} / {mid_reply} peers, {big} big replies produced for them")
    figure("healthy requests verified through the resets", healthy.verified)
    tally(["reset mid-frame", "reset mid-reply"], mid_frame + mid_reply, healthy.verified)


def test_peers_half_closing_mid_frame(no_leaks):
    """Peers send two whole frames and half of a third, then shutdown(SHUT_WR): both replies arrive, then EOF; the
    half frame never reaches the handler, on_disconnect gets an EOFError (a truncated upload is not a clean close),
    and every connection is freed."""
    count = scale(60, 600)
    need_descriptors(2 * (count + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        socks = [connect(stack, server.address) for _ in range(count)]
        sent = 0
        for i, sock in enumerate(socks):
            wire = frame(b"whole/%d/0" % i) + frame(b"whole/%d/1" % i)
            wire += struct.pack(">I", 5000) + (b"partial/%d/" % i).ljust(10 + (i * 29) % 4900, b"p")
            sock.sendall(wire)
            sock.shutdown(socket.SHUT_WR)
            sent += len(wire)
        healthy.wait_progress(3)
        for i, sock in enumerate(socks):
            assert recv_until_closed(sock) == frame(b"whole/%d/0" % i) + frame(b"whole/%d/1" % i), f"peer {i}"
        ended = recorder.wait_ended(sock.getsockname() for sock in socks)
        healthy.wait_progress(3)
        healthy.stop()
        healthy.check()

        assert all(isinstance(exc, EOFError) for exc in ended.values()), collections.Counter(map(repr, ended.values()))
        assert recorder.count(b"whole") == 2 * count
        assert recorder.count(b"partial") == 0
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        expected = {
            "accepted": HEALTHY + count,
            "active": 0,
            "refused": 0,
            "messages": healthy.verified + 2 * count,
            "bytes_in": healthy.bytes + sent,
            "errors": count,
        }
        assert {key: stats[key] for key in expected} == expected, stats
        stop_within(server, 2.0)
    figure("half-closed mid-frame", f"{count} peers, every whole frame answered")
    tally(["half-close mid-frame"], count, healthy.verified)


# ---------------------------------------------------------------------------------------------------------------
# Peers that never read


def test_peers_that_never_read_are_held_at_the_high_water_mark(no_leaks):
    """Peers pipeline 512 requests, each answered with 64 KiB (32 MiB of replies), and read nothing. The server
    stops taking their requests once WRITE_HIGH_WATER of output is queued: it produces only what the kernel buffers
    and the mark hold, memory stays bounded, the connections stay open. Half of them then read: every one of their
    512 replies arrives, whole and in order. stop() then waits its timeout for the others (their output can never
    go) and force-closes them; what they got is whole replies in order."""
    late, never = scale(2, 16), scale(2, 16)
    requests = 512
    rcvbuf = 64 * 1024
    need_descriptors(2 * (late + never + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        rss_before = trimmed_rss_kib()
        socks = [connect(stack, server.address, rcvbuf=rcvbuf) for _ in range(late + never)]
        absorbed = wmem_max() + 2 * socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # by the kernel
        most = (absorbed + WRITE_HIGH_WATER + BIG_REPLY) // BIG_REPLY + 4  # replies produced before the server waits
        assert most < requests // 2, "the kernel's buffers are too large for this test to tell anything"
        for i, sock in enumerate(socks):
            sock.sendall(b"".join(frame(b"big/%d/%03d" % (i, n)) for n in range(requests)))
        peers = [sock.getsockname() for sock in socks]

        # Wait for the server to stall on every peer: no more replies produced for a while.
        def produced():
            return [recorder.count(b"big", peer) for peer in peers]

        deadline, last, stable_since = time.monotonic() + SETTLE, None, time.monotonic()
        while time.monotonic() < deadline:
            now = produced()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 0.5 and all(now):
                break
            healthy.check()
            time.sleep(0.05)
        stalled = produced()
        rss_stalled = rss_kib()
        assert all(0 < n <= most for n in stalled), f"replies produced per peer {stalled}, at most {most} expected"
        assert not any(peer in recorder.ended for peer in peers), "a peer that does not read was disconnected"
        assert server.stats["active"] == HEALTHY + late + never
        # Each held peer: up to WRITE_HIGH_WATER queued, plus the buffer its replies were gathered in.
        rss_bound = (late + never) * 3 * WRITE_HIGH_WATER // 1024 + 32 * 1024
        assert rss_stalled - rss_before < rss_bound, (
            f"server RSS grew {rss_stalled - rss_before} KiB holding {late + never} peers that do not read"
            f" (bound {rss_bound} KiB; without backpressure it would be {(late + never) * requests * 64} KiB)"
        )
        healthy.wait_progress(5)

        for i, sock in enumerate(socks[:late]):
            for n in range(requests):
                expected = frame((b"big/%d/%03d" % (i, n)).ljust(BIG_REPLY, b"."))
                assert recv_exact(sock, len(expected)) == expected, f"peer {i}, reply {n}"
        assert [recorder.count(b"big", peer) for peer in peers[:late]] == [requests] * late
        healthy.wait_progress(5)
        healthy.stop()
        healthy.check()
        stats = server.stats
        produced_total = recorder.count(b"big")
        assert (stats["messages"], stats["errors"]) == (healthy.verified + produced_total, 0), stats

        took = stop_within(server, 1.0, at_least=0.9)
        for i, sock in enumerate(socks[late:], start=late):
            replies, cut = parse_frames(recv_until_closed(sock))
            assert len(replies) <= recorder.count(b"big", peers[i])
            assert replies == [(b"big/%d/%03d" % (i, n)).ljust(BIG_REPLY, b".") for n in range(len(replies))]
            assert cut < 4 + BIG_REPLY
        ended = recorder.wait_ended(peers)
        assert all(ended[peer] is None for peer in peers[:late])
    figure("peers that never read", f"{late + never}, {requests} requests each, {stalled} replies produced per peer")
    figure("server RSS growth holding them (KiB)", f"{rss_stalled - rss_before} (bound {rss_bound})")
    figure("stop(1.0) with their output unsendable (s)", f"{took:.2f}")
    tally(["never reads (requests)"], late + never, healthy.verified)


def test_connections_that_got_a_large_reply_do_not_keep_its_memory(no_leaks):
    """Connections that each got one 4 MiB reply, read it in full, and then sit idle: nothing is queued for them any
    more, so the server's resident memory must not stay grown by a reply's size per connection (the clients are
    stdlib sockets, so what grows is the server's). Otherwise a server whose connections each once sent a large
    reply holds that much per connection for as long as they stay open."""
    count, size = scale(20, 100), 4 * MiB
    need_descriptors(2 * (count + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        rss_before = trimmed_rss_kib()
        socks = [connect(stack, server.address) for _ in range(count)]
        for i, sock in enumerate(socks):
            request = b"bulk/%d/%d/" % (size, i)
            sock.sendall(frame(request))
            assert recv_exact(sock, 4 + size) == frame(request.ljust(size, b".")), f"reply {i} damaged"
        healthy.wait_progress(3)
        assert server.stats["active"] == HEALTHY + count
        growth = trimmed_rss_kib() - rss_before
        healthy.stop()
        healthy.check()
        assert (server.stats["errors"], recorder.count(b"bulk")) == (0, count), server.stats
        bound = count * 256 + 32 * 1024
        assert growth < bound, (
            f"{count} idle connections that each once got a {size // MiB} MiB reply hold {growth} KiB more server"
            f" memory ({growth // count} KiB each; bound {bound} KiB)"
        )
    figure("RSS growth with idle connections after a large reply (KiB)", f"{growth} for {count} x {size // MiB} MiB")
    tally(["idle after a large reply"], count, healthy.verified)


def test_broadcasts_to_peers_that_never_read_disconnect_them_at_the_write_limit(no_leaks, caplog):
    """1 MiB broadcasts, well past WRITE_LIMIT, to readers (paced so they keep up) and to peers that never read:
    each peer that never reads is disconnected as a slow reader (ENOBUFS, logged at WARNING) once more than
    WRITE_LIMIT is queued for it, memory stays bounded, and every reader gets every broadcast whole and in order,
    then its echo requests answered."""
    caplog.set_level(logging.WARNING, logger="rsock")
    never, readers = scale(4, 50), HEALTHY
    chunks = WRITE_LIMIT // MiB + 32
    window = 8  # broadcasts a reader may be behind
    need_descriptors(2 * (never + readers))

    def chunk(i):
        return (b"broadcast/%06d/" % i).ljust(MiB, b"b")

    received = [0] * readers
    errors = []

    def read(index, client):
        try:
            for i in range(chunks):
                message = client.recv_message() if index % 2 == 0 else client.next()
                if message != chunk(i):
                    raise AssertionError(f"reader {index}: broadcast {i} wrong ({message[:30]!r}...)")
                received[index] += 1
            for i in range(5):
                payload = b"after/%d/%d" % (index, i)
                if client.request(payload) != payload:
                    raise AssertionError(f"reader {index}: wrong echo")
        except BaseException as exc:  # reported below
            errors.append((index, exc))

    class StdlibReader(StdlibClient):
        def next(self):
            (n,) = struct.unpack(">I", recv_exact(self.sock, 4))
            return recv_exact(self.sock, n)

    with fault_server() as (server, recorder), contextlib.ExitStack() as stack:
        clients = []
        for index in range(readers):
            if index % 2 == 0:
                client = rsock.TcpClient(server.address, framing="length", timeout=CALL_TIMEOUT)
            else:
                client = StdlibReader(server.address)
            stack.callback(client.close)
            clients.append(client)
        slow = [connect(stack, server.address, rcvbuf=64 * 1024) for _ in range(never)]
        assert wait_until(lambda: server.stats["active"] == readers + never, SETTLE), server.stats
        threads = [threading.Thread(target=read, args=(i, c), name=f"reader-{i}") for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        try:
            rss_before = trimmed_rss_kib()
            rss_peak, reached = rss_before, []
            deadline = time.monotonic() + scale(60, 110)
            for i in range(chunks):
                while min(received) < i - window and not errors:
                    assert time.monotonic() < deadline, f"readers stalled at {received} of {chunks}"
                    time.sleep(0.001)
                assert not errors, errors
                reached.append(server.broadcast(chunk(i)))
                rss_peak = max(rss_peak, rss_kib())
        finally:
            for thread in threads:
                thread.join(scale(60, 110))
        assert not any(thread.is_alive() for thread in threads), "readers never finished"
        assert not errors, errors
        assert received == [chunks] * readers
        ended = recorder.wait_ended(sock.getsockname() for sock in slow)

        for peer, exc in ended.items():
            assert isinstance(exc, OSError) and exc.errno == errno.ENOBUFS, f"{peer} ended with {exc!r}"
        assert reached[0] == readers + never
        assert reached[-1] == readers
        dropped_after = reached.index(readers)  # broadcasts before every slow peer was gone
        assert dropped_after * MiB > WRITE_LIMIT, f"slow peers disconnected after only {dropped_after} MiB"
        assert wait_until(lambda: len(log_records(caplog, logging.WARNING, "does not read")) == never, SETTLE)
        # A broadcast's bytes are shared by every queue they wait in: the peak is about WRITE_LIMIT however many
        # peers do not read (unshared, it would be WRITE_LIMIT for each of them).
        rss_growth = rss_peak - rss_before
        assert rss_growth < (WRITE_LIMIT + 96 * MiB) // 1024, f"server RSS grew {rss_growth} KiB"
        stats = server.stats
        expected = {"accepted": readers + never, "active": readers, "messages": 5 * readers, "errors": never}
        assert {key: stats[key] for key in expected} == expected, stats
        assert stats["bytes_out"] >= readers * chunks * (MiB + 4)
        stop_within(server, 2.0)
    figure("broadcast to peers that never read", f"{never} peers dropped as slow readers after {dropped_after} MiB")
    figure("server RSS peak growth during the broadcasts (KiB)", rss_growth)
    tally(["never reads (broadcasts)"], never, 5 * readers)


# ---------------------------------------------------------------------------------------------------------------
# Silent peers, oversized frames, too many connections


def test_silent_peers_are_closed_by_idle_timeout(no_leaks, caplog):
    """Peers that connect and send nothing, that send half a frame, or that make one request and go quiet: each is
    closed about idle_timeout after its last byte (on_disconnect gets TimeoutError, logged at INFO, not counted as an
    error), while the healthy clients, busy all along, are never closed."""
    caplog.set_level(logging.INFO, logger="rsock")
    idle = 1.0
    silent, half, quiet = scale(40, 400), scale(40, 400), scale(20, 200)
    total = silent + half + quiet
    need_descriptors(2 * (total + HEALTHY))
    with (
        fault_server(idle_timeout=idle) as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        last_byte = {}  # peer -> when it last sent (or received) anything
        socks = []
        for i in range(total):
            sock = connect(stack, server.address)
            if silent <= i < silent + half:
                sock.sendall(struct.pack(">I", 100) + b"partial/%d" % i)
            elif i >= silent + half:
                request = frame(b"quiet/%d" % i)
                sock.sendall(request)
                assert recv_exact(sock, len(request)) == request
            last_byte[sock.getsockname()] = time.monotonic()
            socks.append(sock)
        ended = recorder.wait_ended(last_byte, timeout=idle + SETTLE)
        healthy.wait_progress(3)
        for sock in socks:
            assert recv_until_closed(sock) == b""
        healthy.stop()
        healthy.check()
        waited = {peer: recorder.ended_at(peer) - at for peer, at in last_byte.items()}
        for peer, exc in ended.items():
            assert isinstance(exc, TimeoutError), f"{peer} ended with {exc!r}"
            assert idle - 0.1 <= waited[peer] < idle + 5, f"{peer} closed {waited[peer]:.2f} s after its last byte"
        assert len(log_records(caplog, logging.INFO, "closing idle connection")) == total
        assert recorder.count(b"partial") == 0
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        expected = {
            "accepted": HEALTHY + total,
            "refused": 0,
            "messages": healthy.verified + quiet,
            "errors": 0,
        }
        assert {key: stats[key] for key in expected} == expected, stats
        stop_within(server, 2.0)
    figure("idle peers closed", f"{total} ({silent} silent, {half} half a frame, {quiet} quiet after a request)")
    figure("idle close after the last byte (s, min/max)", f"{min(waited.values()):.2f}/{max(waited.values()):.2f}")
    tally(["silent", "silent mid-frame", "quiet after a request"], total, healthy.verified)


def test_idle_timeout_spares_peers_still_reading_a_long_reply(no_leaks):
    """Peers that asked for an 8 MiB reply and read it steadily but slowly (64 KiB every 10 ms, so it takes several
    idle timeouts) send nothing meanwhile, but they are not idle: output flows to them the whole time. Each must get
    its whole reply, while the silent peers connected alongside are closed by the same idle_timeout."""
    idle = 0.5
    downloaders, size, silent = scale(2, 8), 8 * MiB, scale(20, 200)
    need_descriptors(2 * (downloaders + silent + HEALTHY))
    with (
        fault_server(idle_timeout=idle) as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        quiet = [connect(stack, server.address) for _ in range(silent)]
        socks = [connect(stack, server.address, rcvbuf=64 * 1024) for _ in range(downloaders)]
        requests = [b"bulk/%d/%d/" % (size, i) for i in range(downloaders)]
        for sock, request in zip(socks, requests, strict=True):
            sock.sendall(frame(request))
        received = [bytearray() for _ in socks]
        open_ = set(range(downloaders))
        started, deadline = time.monotonic(), time.monotonic() + scale(30, 60)
        while open_ and time.monotonic() < deadline:
            for i in sorted(open_):
                try:
                    data = socks[i].recv(64 * 1024)
                except ConnectionResetError:
                    data = b""
                received[i] += data
                if not data or len(received[i]) == 4 + size:
                    open_.discard(i)
            time.sleep(0.01)
        took = time.monotonic() - started
        ended = recorder.wait_ended(sock.getsockname() for sock in quiet)
        assert all(isinstance(exc, TimeoutError) for exc in ended.values()), list(ended.values())[:3]
        healthy.wait_progress(3)
        healthy.stop()
        healthy.check()
        assert took > 2 * idle, f"the downloads took only {took:.2f} s: too fast to test anything"
        for i, (sock, request) in enumerate(zip(socks, requests, strict=True)):
            cut_off = recorder.ended.get(sock.getsockname(), (None,))[0]
            assert len(received[i]) == 4 + size, (
                f"downloader {i} got {len(received[i])} of {4 + size} bytes in {took:.2f} s, reading all along;"
                f" its connection ended with {cut_off!r} (idle_timeout {idle} s)"
            )
            assert bytes(received[i]) == frame(request.ljust(size, b".")), f"downloader {i}: reply damaged"
    figure("downloads spared by idle_timeout", f"{downloaders} x {size // MiB} MiB over {took:.2f} s (idle {idle} s)")
    tally(["slow downloader"], downloaders, healthy.verified)


def test_length_headers_announcing_4_gib_are_rejected_and_memory_stays_flat(no_leaks, caplog):
    """Headers announcing 4 GiB (alone, or followed by a stream of body bytes) and headers just over max_frame_size:
    each connection is closed at the header (logged at ERROR, counted as an error, on_disconnect told why), nothing
    reaches the handler, and neither resident nor virtual memory grows by anything like the sizes announced."""
    caplog.set_level(logging.WARNING, logger="rsock")
    max_frame = MiB
    each = scale(40, 400)
    kinds = {
        "4 GiB header": b"\xff\xff\xff\xff",
        "4 GiB header and body": b"\xff\xff\xff\xff" + b"z" * (256 * 1024),
        "max_frame_size + 1": struct.pack(">I", max_frame + 1) + b"z" * 1000,
    }
    need_descriptors(2 * (len(kinds) * each + HEALTHY))
    with (
        fault_server(max_frame_size=max_frame) as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        peak_before, rss_before = vm_kib("VmPeak"), trimmed_rss_kib()
        socks = []
        for wire in kinds.values():
            for _ in range(each):
                sock = connect(stack, server.address)
                with contextlib.suppress(ConnectionError):  # the server may close before the body is all sent
                    sock.sendall(wire)
                socks.append(sock)
        slowest_close = 0.0
        for sock in socks:
            started = time.monotonic()
            assert recv_until_closed(sock) == b""
            slowest_close = max(slowest_close, time.monotonic() - started)
        ended = recorder.wait_ended(sock.getsockname() for sock in socks)
        healthy.wait_progress(3)
        healthy.stop()
        healthy.check()
        peak_growth, rss_growth = vm_kib("VmPeak") - peak_before, rss_kib() - rss_before

        assert all(isinstance(exc, ValueError) for exc in ended.values()), list(ended.values())[:3]
        total = len(socks)
        assert wait_until(lambda: len(log_records(caplog, logging.ERROR, "closing connection from")) == total, SETTLE)
        assert peak_growth < 2 * 1024 * 1024, f"virtual memory peaked {peak_growth} KiB higher"
        assert rss_growth < 32 * 1024, f"server RSS grew {rss_growth} KiB"
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        expected = {"accepted": HEALTHY + total, "active": 0, "messages": healthy.verified, "errors": total}
        assert {key: stats[key] for key in expected} == expected, stats
        assert set(recorder.handled) == {b"healthy"}
        stop_within(server, 2.0)
    figure("oversized length headers rejected", f"{total} ({', '.join(kinds)}: {each} each)")
    figure("memory growth meanwhile (KiB): RSS, virtual peak", f"{rss_growth}, {peak_growth}")
    figure("slowest close after an oversized header (s)", f"{slowest_close:.3f}")
    tally(kinds, total, healthy.verified)


def refusals_logged(caplog):
    """How many refusals the max_connections WARNING lines cover (a line stands for one, or says how many)."""
    lines = [record.getMessage() for record in log_records(caplog, logging.WARNING, "max_connections")]
    return sum(int(m.group(1)) if (m := re.match(r"refused (\d+) more", line)) else 1 for line in lines)


def test_connections_beyond_max_connections_are_refused_while_others_are_served(no_leaks, caplog):
    """With max_connections taken (healthy clients and holders), a burst of further connections, half of them
    sending a request, is accepted and closed at once: no reply, no handler, stats["refused"] counts each, and so
    do the WARNING lines together (at most one a second, each saying how many refusals it covers); the healthy
    clients keep being served, and a slot freed is taken by the next connection."""
    caplog.set_level(logging.WARNING, logger="rsock")
    holders, extra = 4, scale(100, 1000)
    limit = HEALTHY + holders
    need_descriptors(2 * (limit + extra))
    with (
        fault_server(max_connections=limit) as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        held = [StdlibClient(server.address) for _ in range(holders)]
        for i, client in enumerate(held):
            stack.callback(client.close)
            assert client.request(b"hold/%d" % i) == b"hold/%d" % i
        assert server.stats["active"] == limit
        refused = []
        for i in range(extra):
            sock = connect(stack, server.address)
            if i % 2:
                with contextlib.suppress(ConnectionError):  # refused already: the close may reset the connection
                    sock.sendall(frame(b"refused/%d" % i))
            refused.append(sock)
        healthy.wait_progress(3)
        for sock in refused:
            assert recv_until_closed(sock) == b""
        assert wait_until(lambda: server.stats["refused"] == extra, SETTLE), server.stats
        stats = server.stats
        assert (stats["accepted"], stats["active"], stats["refused"]) == (limit + extra, limit, extra), stats
        assert wait_until(lambda: refusals_logged(caplog) == extra, SETTLE)
        healthy.wait_progress(3)

        for client in held:
            client.close()
        assert wait_until(lambda: server.stats["active"] == HEALTHY, SETTLE), server.stats
        with rsock.TcpClient(server.address, framing="length", timeout=CALL_TIMEOUT) as late:
            assert late.request(b"late") == b"late"
        healthy.stop()
        healthy.check()
        assert recorder.count(b"refused") == 0
        assert not any(sock.getsockname() in recorder.ended for sock in refused)
        assert recorder.connected == limit + 1
        stats = server.stats
        expected = {
            "accepted": limit + extra + 1,
            "refused": extra,
            "messages": healthy.verified + holders + 1,
            "errors": 0,
        }
        assert {key: stats[key] for key in expected} == expected, stats
        stop_within(server, 2.0)
    figure("connections refused at max_connections", f"{extra} (limit {limit})")
    tally(["beyond max_connections"], extra, healthy.verified)


# ---------------------------------------------------------------------------------------------------------------
# Handlers that raise or block


def test_handlers_that_raise_close_only_their_connection(no_leaks, caplog):
    """Many connections make a good request, then one whose handler raises: each is logged at ERROR with its
    traceback, on_disconnect gets that very exception, that connection (only) is closed once its earlier replies
    are out, and the healthy clients keep being served."""
    caplog.set_level(logging.WARNING, logger="rsock")
    count = scale(60, 600)
    need_descriptors(2 * (count + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        clients = []
        for i in range(count):
            if i % 2 == 0:
                client = rsock.TcpClient(server.address, framing="length", timeout=CALL_TIMEOUT)
                stack.callback(client.close)
            else:
                client = connect(stack, server.address)
            clients.append(client)
        for i, client in enumerate(clients):
            if i % 2 == 0:
                assert client.request(b"ok/%d" % i) == b"ok/%d" % i
                client.send(b"boom/%d" % i)
            else:
                client.sendall(frame(b"ok/%d" % i) + frame(b"boom/%d" % i))
        healthy.wait_progress(3)
        for i, client in enumerate(clients):
            if i % 2 == 0:
                assert client.recv_message() is None, f"peer {i}"
            else:
                assert recv_until_closed(client) == frame(b"ok/%d" % i), f"peer {i}"
        peers = {(client.local if i % 2 == 0 else client.getsockname()): i for i, client in enumerate(clients)}
        ended = recorder.wait_ended(peers)
        healthy.wait_progress(3)
        healthy.stop()
        healthy.check()

        for peer, exc in ended.items():
            assert type(exc) is Boom and str(exc) == f"boom/{peers[peer]}", f"{peer} ended with {exc!r}"
        assert wait_until(lambda: len(log_records(caplog, logging.ERROR, "handler raised")) == count, SETTLE)
        records = log_records(caplog, logging.ERROR, "handler raised")
        assert sorted(str(r.exc_info[1]) for r in records) == sorted(f"boom/{i}" for i in range(count))
        assert all("in on_message" in logging.Formatter().formatException(r.exc_info) for r in records[:5])
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        expected = {"accepted": HEALTHY + count, "messages": healthy.verified + 2 * count, "errors": count}
        assert {key: stats[key] for key in expected} == expected, stats
        stop_within(server, 2.0)
    figure("handlers raised", f"{count} connections closed, each exception logged with its traceback")
    tally(["handler raises"], count, healthy.verified)


def test_handlers_that_block_delay_others_who_resume_after(no_leaks):
    """Requests whose handler sleeps (time.sleep on rsock's io thread) all get their replies; the healthy clients,
    held up meanwhile, all succeed and run at full speed again once the last one is done."""
    blockers, nap = scale(8, 24), 0.1
    need_descriptors(2 * (blockers + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address) as healthy,
        contextlib.ExitStack() as stack,
    ):
        clients = []
        for _ in range(blockers):
            client = rsock.TcpClient(server.address, framing="length", timeout=CALL_TIMEOUT)
            stack.callback(client.close)
            clients.append(client)
        before = healthy.verified
        started = time.monotonic()
        for i, client in enumerate(clients):
            client.send(b"sleep/%.2f/%d" % (nap, i))
        for i, client in enumerate(clients):
            assert client.recv_message() == b"sleep/%.2f/%d" % (nap, i)
        blocked = time.monotonic() - started
        during = healthy.verified - before
        resumed = time.monotonic()
        healthy.wait_progress(50, timeout=5)
        resumed = time.monotonic() - resumed
        slowest = max(healthy.slowest)  # the requests held up by the sleeps are done by now
        healthy.stop()
        healthy.check()
        assert recorder.count(b"sleep") == blockers
        stats = server.stats
        assert (stats["messages"], stats["errors"]) == (healthy.verified + blockers, 0), stats
        stop_within(server, 2.0)
    figure("blocking handlers", f"{blockers} x {nap} s sleeps in {blocked:.2f} s, {during} healthy requests meanwhile")
    figure("slowest healthy request / 50 more after (s)", f"{slowest:.3f} / {resumed:.3f}")
    tally(["handler blocks"], blockers, healthy.verified)


# ---------------------------------------------------------------------------------------------------------------
# stop() and Ctrl-C during all of the above


def every_fault(address, stack, each):
    """Opens faulty peers of every kind on `address` (their sockets closed with `stack`) and returns them by kind:
    resets mid-frame and half-closes mid-frame (over by the time it returns), peers silent mid-frame, peers that
    never read with output queued for them, and peers that sent a 4 GiB header and hold on."""
    peers = collections.defaultdict(list)
    for i in range(each):
        sock = connect(stack, address)
        sock.sendall(struct.pack(">I", 100) + b"partial/%d" % i)
        peers["silent mid-frame"].append(sock)

        sock = connect(stack, address)
        sock.sendall(struct.pack(">I", 100) + b"partial/%d" % i)
        peers["reset mid-frame"].append(sock)

        sock = connect(stack, address)
        sock.sendall(frame(b"whole/%d" % i) + struct.pack(">I", 100) + b"partial/%d" % i)
        sock.shutdown(socket.SHUT_WR)
        peers["half-close mid-frame"].append(sock)

        sock = connect(stack, address)
        sock.sendall(b"\xff\xff\xff\xff")
        peers["4 GiB header"].append(sock)
    for i in range(max(2, each // 4)):
        sock = connect(stack, address, rcvbuf=64 * 1024)
        sock.sendall(b"".join(frame(b"big/%d/%03d" % (i, n)) for n in range(256)))
        peers["never reads"].append(sock)
    time.sleep(0.2)  # the server takes in what they sent
    for sock in peers["reset mid-frame"]:
        reset(sock)
    return peers


def block_the_handler(address, stack, peers, seconds):
    """A peer whose request puts the handler (and with it rsock's io thread) to sleep for `seconds`."""
    sock = connect(stack, address)
    sock.sendall(frame(b"sleep/%.1f/blocked" % seconds))
    peers["blocked handler"].append(sock)


def end_of_every_peer(peers):
    """Reads every faulty peer's connection to its end: each recv is bounded by the socket's timeout, so a connection
    the server left hanging fails the test."""
    for kind, socks in peers.items():
        if kind != "reset mid-frame":
            for sock in socks:
                recv_until_closed(sock)


def test_stop_during_every_fault_at_once(no_leaks):
    """stop(1.0) with faulty peers of every kind connected, a handler blocked in time.sleep, and healthy clients
    mid-request: it returns within its documented bound; afterwards nothing listens, every peer's connection ends
    (EOF or reset, no hang), every healthy reply was right, every connection got its on_disconnect, and the server
    holds nothing."""
    each = scale(10, 100)
    need_descriptors(2 * (6 * each + HEALTHY + 10))
    with (
        fault_server(max_frame_size=MiB, idle_timeout=60) as (server, recorder),
        HealthyClients(server.address, until_closed=True) as healthy,
        contextlib.ExitStack() as stack,
    ):
        peers = every_fault(server.address, stack, each)
        healthy.wait_progress(3)
        block_the_handler(server.address, stack, peers, 1.5)
        assert wait_until(lambda: recorder.count(b"sleep") == 1, SETTLE)  # the handler is asleep
        took = stop_within(server, 1.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=CALL_TIMEOUT).close()
        end_of_every_peer(peers)
        healthy.stop()
        healthy.check()
        assert all(exc is not None for exc in healthy.closed), healthy.closed
        assert wait_until(lambda: server.stats["active"] == 0, SETTLE), server.stats
        stats = server.stats
        count = sum(len(socks) for socks in peers.values())
        assert (stats["accepted"], stats["refused"]) == (HEALTHY + count, 0), stats
        assert wait_until(lambda: len(recorder.ended) == HEALTHY + count, SETTLE), len(recorder.ended)
        assert recorder.connected == HEALTHY + count
        assert stats["messages"] == sum(recorder.handled.values()), (stats, recorder.handled)
        assert healthy.verified <= recorder.count(b"healthy") <= healthy.verified + HEALTHY
        assert recorder.count(b"partial") == 0
    figure("stop(1.0) during every fault at once (s)", f"{took:.2f} with {count} faulty peers of {len(peers)} kinds")
    figure("healthy requests verified up to the stop", f"{healthy.verified}, then all {HEALTHY} clients closed by it")
    tally(peers, count, healthy.verified)


def test_stop_timeout_closes_every_connection_at_once(no_leaks):
    """stop(0.3) with peers that keep their connections open (silent mid-frame, never reading with output queued)
    and healthy clients mid-request, no handler running: its docstring says connections still open after `timeout`
    are closed at once (only a handler still running may hold stop() up to a second more), so when it returns no
    connection is left and on_disconnect has run for every one."""
    timeout = 0.3
    each = scale(10, 100)
    need_descriptors(2 * (2 * each + HEALTHY))
    with (
        fault_server() as (server, recorder),
        HealthyClients(server.address, until_closed=True) as healthy,
        contextlib.ExitStack() as stack,
    ):
        socks = []
        for i in range(each):
            sock = connect(stack, server.address)
            sock.sendall(struct.pack(">I", 100) + b"partial/%d" % i)
            socks.append(sock)
            sock = connect(stack, server.address, rcvbuf=64 * 1024)
            sock.sendall(b"".join(frame(b"big/%d/%03d" % (i, n)) for n in range(256)))
            socks.append(sock)
        wait_all_read(server, socks[::2])
        healthy.wait_progress(3)
        began = time.monotonic()
        took = stop_within(server, timeout)
        left, told = server.stats["active"], len(recorder.ended)
        for sock in socks:
            recv_until_closed(sock)
        recorder.wait_ended(sock.getsockname() for sock in socks)
        last = max(recorder.ended_at(sock.getsockname()) for sock in socks) - began
        healthy.stop()
        healthy.check()
        total = HEALTHY + len(socks)
        assert (left, told) == (0, total), (
            f"stop({timeout}) returned after {took:.2f} s with {left} of {total} connections still open and"
            f" on_disconnect run for only {told}; the last closed {last:.2f} s after stop() began"
        )
    figure(f"stop({timeout}) with {total} connections held open (s)", f"{took:.2f}")
    tally(["held open through stop"], len(socks), healthy.verified)


CTRL_C_CHILD = r"""
import json
import logging
import sys
import time

import rsock

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def on_message(conn, data):
    kind = data.partition(b"/")[0]
    if kind == b"big":
        return data.ljust(64 * 1024, b".")
    if kind == b"sleep":
        time.sleep(float(data.split(b"/")[1]))
    return data


server = rsock.TcpServer(("127.0.0.1", 0), on_message, framing="length", max_frame_size=1 << 20, idle_timeout=60)
print(server.address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    print(json.dumps({"interrupted": True, "running": server.running, "stats": server.stats}), flush=True)
    sys.exit(0)
print(json.dumps({"interrupted": False}), flush=True)
sys.exit(3)
"""


def read_line(proc, timeout):
    """The first line the child writes to stdout, within `timeout`."""
    deadline, data = time.monotonic() + timeout, b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([proc.stdout], [], [], remaining)[0]:
            pytest.fail(f"the child wrote no line within {timeout} s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            pytest.fail(f"the child exited before writing its port: {data!r}")
        data += chunk
    line, _, rest = data.partition(b"\n")
    assert rest == b""
    return line.decode()


def test_ctrl_c_under_serve_forever_with_every_fault_connected(no_leaks):
    """A child process serves forever; faulty peers of every kind connect to it, a handler is left blocked in a sleep
    longer than stop() waits, and healthy clients keep making requests. SIGINT: serve_forever() raises
    KeyboardInterrupt, which the child handles, and the child exits (status 0) within the stop timeout, the abort
    grace and interpreter exit; every peer's connection ends, no healthy reply was wrong, nothing printed a
    traceback."""
    each = scale(10, 100)
    sleep = DEFAULT_STOP_TIMEOUT + ABORT_GRACE + 2  # still asleep when the child exits
    bound = DEFAULT_STOP_TIMEOUT + ABORT_GRACE + 1.0 + 3.0  # + atexit's _stop_all_servers(1.0) + slack
    need_descriptors(6 * each + HEALTHY + 10)
    out = err = b""
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        address = (HOST, int(read_line(proc, 30)))
        with HealthyClients(address, until_closed=True) as healthy, contextlib.ExitStack() as stack:
            peers = every_fault(address, stack, each)
            healthy.wait_progress(3)
            block_the_handler(address, stack, peers, sleep)
            time.sleep(0.2)  # the handler has started its sleep
            os.kill(proc.pid, signal.SIGINT)
            sent = time.monotonic()
            try:
                out, err = proc.communicate(timeout=bound)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the child did not exit within {bound} s of SIGINT")
            took = time.monotonic() - sent
            end_of_every_peer(peers)
            healthy.stop()
            healthy.check()
            assert all(exc is not None for exc in healthy.closed), healthy.closed
    finally:
        if proc.poll() is None:
            proc.kill()
        more_out, more_err = proc.communicate()
        out, err = out + more_out, (err + more_err).decode(errors="replace")
    assert proc.returncode == 0, f"exit status {proc.returncode}; stderr:\n{err}"
    assert "Traceback" not in err, err
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["interrupted"] is True and report["running"] is False, report
    count = sum(len(socks) for socks in peers.values())
    assert report["stats"]["accepted"] == HEALTHY + count, report
    assert report["stats"]["messages"] >= healthy.verified, report
    figure("Ctrl-C to exit, serve_forever with every fault connected (s)", f"{took:.2f} ({count} faulty peers)")
    tally(peers, count, healthy.verified)
