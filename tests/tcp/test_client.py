"""rsock.TcpClient: connecting, raw and framed sending, recv / recv_exactly / recv_message and their end-of-stream
behaviour, request, timeouts, sendfile with progress (up to a 1 GiB transfer checked by digest), closing, and argument
checking. Peers are a stdlib listening socket (for byte-exact control of what the client receives) or a TcpServer."""

import contextlib
import errno
import gc
import hashlib
import os
import pathlib
import queue
import random
import resource
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
from tests.loopback import ipv6_loopback_available
from tests.socket_reads import recv_exactly

HOST = "127.0.0.1"
TIMEOUT = 10.0
MiB = 1 << 20
FRAMINGS = ["line", "length", b"<END>"]
CONTENT_SIZE = 300_000


def encode(framing, message):
    if framing is None:
        return message
    if framing == "line":
        return message + b"\n"
    if framing == "length":
        return struct.pack(">I", len(message)) + message
    return message + framing


@pytest.fixture
def peer():
    """`peer(**client_kwargs)` -> (TcpClient, the stdlib socket at the other end). Everything is closed at teardown."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((HOST, 0))
        listener.listen()
        listener.settimeout(TIMEOUT)

        def connect(**kwargs):
            kwargs.setdefault("timeout", TIMEOUT)
            client = rsock.TcpClient(listener.getsockname(), **kwargs)
            stack.callback(client.close)
            other, _ = listener.accept()
            stack.enter_context(other)
            other.settimeout(TIMEOUT)
            return client, other

        connect.address = listener.getsockname()
        yield connect


@pytest.fixture
def echo_server():
    """A started TcpServer factory: `echo_server(framing=None, handler=None)`; stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def make(framing=None, handler=None, **kwargs):
            server = rsock.TcpServer((HOST, 0), handler or (lambda conn, data: data), framing=framing, **kwargs)
            stack.callback(server.stop, 2.0)
            server.start()
            return server

        yield make


# ---------------------------------------------------------------------------------------------------------------
# Connecting, addresses, closing


def test_connect_addresses_and_framing(peer):
    client, other = peer()
    assert client.peer == peer.address
    assert client.local == other.getpeername()
    assert client.framing is None
    assert not client.closed
    assert str(peer.address[1]) in repr(client)


def test_connect_classmethod_takes_the_same_arguments(peer):
    with rsock.TcpClient.connect(peer.address, timeout=TIMEOUT, framing="length") as client:
        assert isinstance(client, rsock.TcpClient)
        assert client.framing == "length"
        assert client.peer == peer.address


def test_connect_to_a_closed_port_is_refused():
    with socket.socket() as unused:
        unused.bind((HOST, 0))  # bound, never listening: connections to it are refused
        with pytest.raises(ConnectionRefusedError):
            rsock.TcpClient(unused.getsockname(), timeout=TIMEOUT)
    gc.collect()  # a socket leaked by the failed connect would warn (an error under this suite's filterwarnings)


def test_peer_is_the_address_the_kernel_connected_to(peer):
    """As getpeername() gives it: 0.0.0.0 asked is the local host (the address as given was reported)."""
    port = peer.address[1]
    with socket.create_connection(("0.0.0.0", port), timeout=TIMEOUT) as stdlib_client:
        expected = stdlib_client.getpeername()
    with rsock.TcpClient(("0.0.0.0", port), timeout=TIMEOUT) as client:
        assert client.peer == expected == (HOST, port)
        assert f"{HOST}:{port}" in repr(client)


@pytest.mark.parametrize(
    "spell",
    [lambda host, port: ("", port), lambda host, port: (host, "no-such-service")],
    ids=["empty host", "service"],
)
def test_an_address_getaddrinfo_cannot_read_is_its_gaierror(peer, spell):
    """As for create_connection(): "" means every interface only to bind to (it used to connect to 0.0.0.0); a
    service name the system does not know."""
    address = spell(*peer.address)
    with pytest.raises(socket.gaierror) as stdlib_error:
        socket.create_connection(address, timeout=TIMEOUT)
    with pytest.raises(socket.gaierror) as error:
        rsock.TcpClient(address, timeout=TIMEOUT)
    assert error.value.errno == stdlib_error.value.errno


@pytest.mark.parametrize(
    "spell",
    [
        lambda host, port: (host, str(port)),
        lambda host, port: (host, str(port).encode()),
        lambda host, port: [host, port],
        lambda host, port: ["localhost", str(port)],
    ],
    ids=["str port", "bytes port", "list", "list with a name and a str port"],
)
def test_the_address_is_taken_as_create_connection_takes_it(peer, spell):
    """create_connection() unpacks any pair and hands the port to getaddrinfo() (a service: "80", b"80"); a
    configuration read from JSON or a command line gives such addresses. rsock refused both."""
    address = spell(*peer.address)
    with socket.create_connection(address, timeout=TIMEOUT) as stdlib_client:
        expected = stdlib_client.getpeername()
    with rsock.TcpClient(address, timeout=TIMEOUT) as client:
        assert client.peer == expected


@pytest.mark.parametrize(
    ("address", "given"),
    [(("127.0.0.1",), "a tuple of length 1"), (["127.0.0.1"], "a list of length 1"), ("127.0.0.1:80", "str")],
)
def test_an_address_of_the_wrong_shape_is_a_type_error_saying_what_was_given(address, given):
    with pytest.raises(TypeError, match=rf"^address must be a \(host, port\) or .* tuple or list, not {given}$"):
        rsock.TcpClient(address, timeout=TIMEOUT)


def test_a_server_binds_a_number_as_bind_takes_it():
    """A service name or a list is the client's, as create_connection() takes them; bind() takes neither."""
    with pytest.raises(TypeError):
        rsock.TcpServer((HOST, "0"))
    with pytest.raises(TypeError, match=r"tuple, not list$"):
        rsock.TcpServer([HOST, 0])


@pytest.mark.parametrize("listening", ["127.0.0.1", "::1"])
def test_connect_tries_each_address_the_host_resolves_to(listening):
    """A name that resolves to ::1 and 127.0.0.1 (None here; "localhost" on many systems) reaches a server on either
    one, as socket.create_connection() tries each address in turn; rsock used to try only the first."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback here")
    family = socket.AF_INET6 if ":" in listening else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind((listening, 0))
        listener.listen()
        port = listener.getsockname()[1]
        resolved = {info[4][0] for info in socket.getaddrinfo(None, port, type=socket.SOCK_STREAM)}
        if not {"127.0.0.1", "::1"} <= resolved:
            pytest.skip(f"None resolves to {resolved} here")
        with socket.create_connection((None, port), timeout=TIMEOUT) as stdlib_client:
            expected = stdlib_client.getpeername()[:2]
        with rsock.TcpClient((None, port), timeout=TIMEOUT) as client:
            assert client.peer[:2] == expected == (listening, port)


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["blocking", "timeout"])
@pytest.mark.parametrize("call", ["recv", "recv_exactly", "recv_message", "request"])
def test_close_from_another_thread_ends_a_blocked_read_with_ebadf_not_an_end_of_stream(peer, call, timeout):
    """close() from another thread wakes a read blocked on the client. The read raises OSError(EBADF), as a read
    after close() does (and as UdpClient's does), rather than returning b"" or None as if the peer had closed."""
    client, other = peer(framing="line", timeout=timeout)
    args = {"recv": (), "recv_exactly": (5,), "recv_message": (), "request": (b"question",)}[call]
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(attempt(getattr(client, call), *args)))
    reader.start()
    if call == "request":
        assert recv_exactly(other, len(b"question\n")) == b"question\n"
    time.sleep(0.2)  # for the read to block (were it not yet blocked, it would find the client closed: EBADF too)
    client.close()
    reader.join(TIMEOUT)
    assert not reader.is_alive()
    [exc] = outcome
    assert isinstance(exc, OSError) and exc.errno == errno.EBADF, exc
    assert other.recv(10) == b""


def attempt(call, *args):
    """What `call(*args)` returned or raised."""
    try:
        return call(*args)
    except Exception as exc:
        return exc


@pytest.mark.parametrize("peer_ended", [False, True], ids=["data buffered", "end of stream seen"])
@pytest.mark.parametrize("call", ["recv", "recv_exactly", "recv_message"])
def test_a_read_after_close_raises_ebadf_whatever_was_buffered(peer, call, peer_ended):
    """After close() every read is EBADF, as the stdlib's socket (and its closed makefile()) refuse reads. rsock
    handed out what it had buffered, and after the peer's end of stream b"" or None, as if the peer had closed."""
    client, other = peer(framing="line")
    other.sendall(b"first\nsecond\nthird\n")
    if peer_ended:
        other.close()
    assert client.recv_message() == b"first"
    if peer_ended:
        assert client.recv_exactly(len(b"second\nthird\n")) == b"second\nthird\n"
        assert client.recv_message() is None
    client.close()
    with pytest.raises(OSError) as raised:
        getattr(client, call)(*{"recv": (3,), "recv_exactly": (3,), "recv_message": ()}[call])
    assert raised.value.errno == errno.EBADF


def test_close_and_context_manager(peer):
    client, other = peer()
    client.close()
    assert client.closed
    client.close()  # a second close does nothing
    assert other.recv(10) == b""
    with pytest.raises(OSError):
        client.send(b"after close")

    with rsock.TcpClient(peer.address, timeout=TIMEOUT) as client:
        assert not client.closed
    assert client.closed


# ---------------------------------------------------------------------------------------------------------------
# Sending


@pytest.mark.parametrize("framing", [None, *FRAMINGS], ids=str)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_send_frames_each_message(peer, framing, kind):
    client, other = peer(framing=framing)
    client.send(kind(b"hello"))
    client.send(kind(b""))
    client.send(kind(b"world"))
    expected = encode(framing, b"hello") + encode(framing, b"") + encode(framing, b"world")
    assert recv_exactly(other, len(expected)) == expected


def test_send_64_mib_arrives_intact(echo_server):
    done = queue.Queue()

    def on_connect(conn):
        conn.state["digest"] = hashlib.sha256()

    def on_message(conn, data):
        conn.state["digest"].update(data)

    server = echo_server(handler=on_message, on_connect=on_connect, on_disconnect=lambda c, e: done.put(c.state))
    payload = os.urandom(64 * MiB)
    with rsock.TcpClient(server.address, timeout=TIMEOUT) as client:
        client.send(payload)
    state = done.get(timeout=TIMEOUT)
    assert state["digest"].hexdigest() == hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Receiving


def test_recv_returns_at_most_n_bytes_and_empty_at_eof(peer):
    client, other = peer()
    other.sendall(b"0123456789")
    got = b""
    while len(got) < 10:
        chunk = client.recv(4)
        assert 0 < len(chunk) <= 4
        got += chunk
    assert got == b"0123456789"
    other.close()
    assert client.recv() == b""
    assert client.recv() == b""


def test_recv_exactly_gathers_many_small_writes(peer):
    client, other = peer()

    def dribble():
        for i in range(200):
            other.sendall(bytes([i]))

    writer = threading.Thread(target=dribble)
    writer.start()
    try:
        assert client.recv_exactly(200) == bytes(range(200))
    finally:
        writer.join(TIMEOUT)


def test_recv_exactly_reads_ahead_so_small_messages_do_not_cost_a_system_call_each(peer):
    """A length-prefixed stream read with recv_exactly(4) and recv_exactly(length): one read takes what the socket
    holds (up to 64 KiB), and the next calls are served from it. The socket is then empty while the messages are
    still there to read (a read of exactly the bytes asked for would leave them in the socket, one syscall each)."""
    client, other = peer()
    messages = [b"m%d" % i * (i % 7) for i in range(500)]
    other.sendall(b"".join(struct.pack("!I", len(m)) + m for m in messages))
    assert select.select([client.fileno()], [], [], TIMEOUT)[0]
    time.sleep(0.05)  # the rest of the burst is in by now: one loopback sendall well under the socket's buffer
    got = []
    for _ in messages:
        (length,) = struct.unpack("!I", client.recv_exactly(4))
        got.append(client.recv_exactly(length))
        if len(got) == 1:
            assert select.select([client.fileno()], [], [], 0)[0] == []
    assert got == messages


def test_recv_exactly_eof_error_when_closed_early(peer):
    client, other = peer()
    other.sendall(b"12345")
    other.close()
    with pytest.raises(EOFError, match="after 5 of 10 bytes"):
        client.recv_exactly(10)
    assert client.recv(10) == b"12345"  # what came is still there to read
    assert client.recv() == b""


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_recv_message_cuts_the_stream_into_messages(peer, framing):
    client, other = peer(framing=framing)
    messages = [b"one", b"", b"three has more bytes", b"x" * 100_000]
    wire = b"".join(encode(framing, m) for m in messages)
    for i in range(0, len(wire), 7):  # in many pieces
        other.sendall(wire[i : i + 7])
    assert [client.recv_message() for _ in messages] == messages
    other.close()
    assert client.recv_message() is None
    assert client.recv_message() is None


def test_recv_message_line_drops_a_trailing_carriage_return(peer):
    client, other = peer(framing="line")
    other.sendall(b"dos\r\nunix\n")
    assert client.recv_message() == b"dos"
    assert client.recv_message() == b"unix"


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_recv_message_eof_error_mid_message(peer, framing):
    client, other = peer(framing=framing)
    other.sendall(encode(framing, b"whole") + encode(framing, b"cut short")[:-2])
    other.close()
    assert client.recv_message() == b"whole"
    with pytest.raises(EOFError):
        client.recv_message()


def test_recv_message_without_framing_is_a_value_error(peer):
    client, other = peer()
    other.sendall(b"data\n")
    with pytest.raises(ValueError):
        client.recv_message()


def test_a_client_dropped_unclosed_inside_a_failing_call_keeps_the_error(peer):
    """The ResourceWarning of a client collected while its call's exception is on the way up must not replace
    that exception (it used to become SystemError)."""
    with pytest.warns(ResourceWarning), pytest.raises(ValueError):
        rsock.TcpClient(peer.address).recv_message()


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_recv_message_over_max_frame_size_fails(peer, framing):
    client, other = peer(framing=framing, max_frame_size=100)
    other.sendall(encode(framing, b"a" * 100))
    assert client.recv_message() == b"a" * 100
    other.sendall(encode(framing, b"b" * 101))
    with pytest.raises(ValueError, match="max_frame_size"):
        client.recv_message()
    # The stream can no longer be cut into messages: the client is closed, as close() closes it.
    assert client.closed
    with pytest.raises(OSError) as raised:
        client.recv_message()
    assert raised.value.errno == errno.EBADF


@pytest.mark.parametrize("framing", ["line", b"END"], ids=str)
def test_a_frame_that_grows_too_long_in_pieces_fails_then_reads_find_the_client_closed(peer, framing):
    """The part of a frame that fits is searched, then more of it makes it too long: ValueError, and later reads
    raise EBADF (the search used to resume past the end of the emptied buffer: a Rust panic)."""
    client, other = peer(framing=framing, max_frame_size=8, timeout=0.3)
    other.sendall(b"abcd")
    with pytest.raises(TimeoutError):
        client.recv_message()
    other.sendall(b"efghijklmnop")
    with pytest.raises(ValueError, match="max_frame_size"):
        client.recv_message()
    with pytest.raises(OSError) as raised:
        client.recv_message()
    assert raised.value.errno == errno.EBADF


# A child process under an address-space limit 512 MiB above what it maps: a peer announces a 3 GiB frame, under
# a max_frame_size raised to 4 GiB, and closes after the 4-byte header.
HUGE_HEADER_UNDER_A_MEMORY_LIMIT = r"""
import resource, socket, struct
import rsock

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
client = rsock.TcpClient(listener.getsockname(), timeout=5, framing="length", max_frame_size=1 << 32)
other, _ = listener.accept()
with open("/proc/self/status") as status:
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + (512 << 20), resource.RLIM_INFINITY))
other.sendall(struct.pack(">I", 3 << 30))
other.close()
try:
    client.recv_message()
except EOFError as exc:
    print("EOFError:", exc)
"""


def test_a_length_header_alone_allocates_no_frame_sized_buffer():
    """A header announcing 3 GiB (allowed by a raised max_frame_size) made the client reserve all of it at once: under
    a memory limit, the process aborted on 4 bytes from its peer. It now makes room as the frame's bytes come."""
    done = subprocess.run([sys.executable, "-c", HUGE_HEADER_UNDER_A_MEMORY_LIMIT], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("EOFError: connection closed in the middle of a message (4 bytes of it"), done.stdout


def test_recv_message_crlf_line_of_exactly_max_frame_size(peer):
    """The \r of a \r\n is part of the terminator: it does not count toward max_frame_size."""
    client, other = peer(framing="line", max_frame_size=4)
    other.sendall(b"abcd\r\n")
    assert client.recv_message() == b"abcd"
    other.sendall(b"abcde\r\n")
    with pytest.raises(ValueError):
        client.recv_message()


def test_recv_message_length_header_announcing_4_gib_fails_at_once(peer):
    client, other = peer(framing="length")
    other.sendall(b"\xff\xff\xff\xff")
    started = time.monotonic()
    with pytest.raises((ValueError, OSError)):
        client.recv_message()
    assert time.monotonic() - started < TIMEOUT / 2


# ---------------------------------------------------------------------------------------------------------------
# request


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_request_returns_the_reply(echo_server, framing):
    server = echo_server(framing=framing, handler=lambda conn, data: b"re: " + data)
    with rsock.TcpClient(server.address, timeout=TIMEOUT, framing=framing) as client:
        for i in range(100):
            assert client.request(b"%d" % i) == b"re: %d" % i
        assert client.request(b"") == b"re: "
        big = b"0123456789abcdef" * (MiB // 8)  # 2 MiB holding no delimiter
        assert client.request(big) == b"re: " + big


def test_request_without_framing_returns_what_the_next_read_brings(echo_server):
    server = echo_server(handler=lambda conn, data: data.upper())
    with rsock.TcpClient(server.address, timeout=TIMEOUT) as client:
        assert client.request(b"small") == b"SMALL"


def test_threads_sharing_a_client_each_get_their_own_reply(echo_server):
    server = echo_server(framing="line", handler=lambda conn, data: b"re: " + data)
    wrong = []
    with rsock.TcpClient(server.address, timeout=TIMEOUT, framing="line") as client:

        def ask(thread):
            for i in range(100):
                question = b"%d-%d" % (thread, i)
                if (reply := client.request(question)) != b"re: " + question:
                    wrong.append((question, reply))

        threads = [threading.Thread(target=ask, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    assert wrong == []


def test_threads_sharing_a_client_do_not_interleave_their_messages(echo_server):
    received = queue.Queue()
    server = echo_server(framing="length", handler=lambda conn, data: received.put(data))
    with rsock.TcpClient(server.address, timeout=TIMEOUT, framing="length") as client:

        def send(thread):
            for _ in range(5):
                client.send(bytes([thread]) * (4 * MiB))

        threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        messages = [received.get(timeout=TIMEOUT) for _ in range(20)]
    assert all(m == m[:1] * (4 * MiB) for m in messages)
    assert sorted(m[0] for m in messages) == sorted(list(range(4)) * 5)


def test_request_that_times_out_closes_the_client(peer):
    """Its reply may still come, and would be taken for the reply to the next request."""
    client, other = peer(timeout=0.1, framing="line")
    with pytest.raises(TimeoutError):
        client.request(b"unanswered")
    assert client.closed
    assert recv_exactly(other, 11) == b"unanswered\n"
    assert other.recv(1) == b""
    with pytest.raises(OSError):
        client.request(b"next")


def test_request_whose_send_times_out_closes_the_client(peer):
    """Part of the message may have gone out: the stream is out of step."""
    client, _other = peer(timeout=0.2, framing="length")
    with pytest.raises(TimeoutError):
        client.request(bytes(64 * MiB))  # the peer reads nothing: the send cannot finish
    assert client.closed


@pytest.mark.parametrize(("framing", "closes"), [("length", True), (None, False)], ids=["framed", "raw"])
def test_a_send_that_times_out_closes_a_framed_client_only(peer, framing, closes):
    """Part of a framed message may have gone: the next one would land inside it, so the client closes (as after a
    request). A raw client's stream is the caller's, and stays open, as a socket's does after sendall()."""
    client, _other = peer(timeout=0.2, framing=framing)
    with pytest.raises(TimeoutError):
        client.send(bytes(64 * MiB))  # the peer reads nothing: the send cannot finish
    assert client.closed is closes


@pytest.mark.parametrize(("framing", "closes"), [("line", True), (None, False)], ids=["framed", "raw"])
def test_a_sendfile_whose_progress_raises_closes_a_framed_client_only(peer, tmp_path, framing, closes):
    client, _other = peer(framing=framing)
    path = tmp_path / "data"
    path.write_bytes(bytes(16 * MiB))

    def progress(sent):
        raise RuntimeError("progress failed")

    with pytest.raises(RuntimeError, match="progress failed"):
        client.sendfile(path, progress=progress)
    assert client.closed is closes


def test_a_sendfile_that_times_out_says_how_much_went_out_and_can_go_on_from_there(peer, tmp_path):
    """A raw client stays open after a timeout, and its caller can go on from where the file stopped: the
    TimeoutError's characters_written is what reached the peer (as an interrupted write's is; the stdlib's
    sendfile() leaves the file's position there), and sendfile(offset=) sends the rest. Neither was there."""
    client, other = peer(timeout=0.2)
    path = tmp_path / "data"
    content = random.Random(7).randbytes(64 * MiB)
    path.write_bytes(content)
    with pytest.raises(TimeoutError) as raised:
        client.sendfile(path)  # the peer reads nothing: the file cannot all go
    sent = raised.value.characters_written
    assert 0 < sent < len(content)
    assert not client.closed
    received = bytearray()
    other.settimeout(0.5)
    with contextlib.suppress(TimeoutError):  # everything that went out, then silence
        while chunk := other.recv(MiB):
            received += chunk
    assert bytes(received) == content[:sent]

    other.settimeout(TIMEOUT)
    reader = threading.Thread(target=lambda: received.extend(recv_exactly(other, len(content) - sent)))
    reader.start()
    client.settimeout(TIMEOUT)
    assert client.sendfile(path, offset=sent) == len(content) - sent
    reader.join(TIMEOUT)
    assert bytes(received) == content


def test_a_sendfile_that_times_out_waiting_for_its_turn_says_nothing_went_out(peer, tmp_path):
    """Another thread's sendfile() holds the client (its progress callback is slow): this one's timeout sent nothing,
    and its characters_written says 0, as a caller going on from offset + characters_written needs."""
    client, _other = peer(timeout=0.3)
    path = tmp_path / "data"
    path.write_bytes(bytes(100_000))
    inside, release = threading.Event(), threading.Event()

    def slow_progress(sent):
        inside.set()
        release.wait(TIMEOUT)

    holder = threading.Thread(target=client.sendfile, args=(path, slow_progress))
    holder.start()
    try:
        assert inside.wait(TIMEOUT)
        with pytest.raises(TimeoutError) as raised:
            client.sendfile(path)
    finally:
        release.set()
        holder.join(TIMEOUT)
    assert raised.value.characters_written == 0


@pytest.mark.parametrize(
    ("offset", "count", "part"),
    [(1000, None, slice(1000, None)), (0, 100, slice(0, 100)), (5000, 7, slice(5000, 5007)),
     (CONTENT_SIZE - 3, 100, slice(CONTENT_SIZE - 3, None)), (CONTENT_SIZE + 10, None, slice(0, 0))],
)  # fmt: skip
def test_sendfile_sends_count_bytes_from_offset_as_socket_sendfile_does(peer, tmp_path, offset, count, part):
    client, other = peer()
    path = tmp_path / "data"
    content = random.Random(8).randbytes(CONTENT_SIZE)
    path.write_bytes(content)
    progress = []
    assert client.sendfile(path, progress.append, offset=offset, count=count) == len(content[part])
    assert sum(progress) == len(content[part])
    client.send(b"end")
    assert recv_exactly(other, len(content[part]) + 3) == content[part] + b"end"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"offset": -1}, ValueError), ({"count": 0}, ValueError), ({"count": -5}, ValueError),
     ({"offset": 1.5}, TypeError), ({"count": "3"}, TypeError)],
)  # fmt: skip
def test_sendfile_with_a_bad_offset_or_count_sends_nothing(peer, tmp_path, kwargs, error):
    client, other = peer()
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    with pytest.raises(error):
        client.sendfile(path, **kwargs)
    client.send(b"end")
    assert recv_exactly(other, 3) == b"end"


def test_an_oversized_frame_closes_the_client_and_wakes_a_blocked_sender(peer):
    """The stream can no longer be cut into messages: the client closes as close() does, so a thread blocked
    sending on it (to a peer that does not read) ends at once instead of after the peer drains its bytes."""
    client, other = peer(timeout=None, framing="length", max_frame_size=1024)
    outcome = queue.Queue()

    def send_big():
        try:
            client.send(bytes(64 * MiB))
            outcome.put("returned")
        except OSError as exc:
            outcome.put(exc)

    sender = threading.Thread(target=send_big)
    sender.start()
    time.sleep(0.2)  # the send is blocked: the peer reads nothing
    other.sendall(struct.pack(">I", 2048) + bytes(2048))
    with pytest.raises(ValueError):
        client.recv_message()
    assert client.closed
    got = outcome.get(timeout=5)
    sender.join(TIMEOUT)
    assert isinstance(got, OSError), got


# A child process: a peer thread there sends, and signals SIGINT to itself (the main thread, busy receiving or
# sending, gets no EINTR: Python only sets its flag) once the transfer is under way.
CTRL_C_MID_TRANSFER = r"""
import os, signal, socket, sys, tempfile, threading, time
import rsock

MiB = 1 << 20
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
mode = sys.argv[1]


def peer():
    conn, _ = listener.accept()
    with conn:
        if mode == "receive":  # 8 MiB, the signal after the first, then silence (the connection stays open)
            for i in range(8):
                conn.sendall(bytes(MiB))
                if i == 0:
                    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        else:  # reads slowly, the signal after the first 4 MiB
            got = 0
            while data := conn.recv(1 << 16):
                got += len(data)
                if got >= 4 * MiB and got - len(data) < 4 * MiB:
                    signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                time.sleep(0.0005)
        time.sleep(10)


threading.Thread(target=peer, daemon=True).start()
client = rsock.TcpClient(listener.getsockname(), timeout=None if mode == "send" else 5.0)
started = time.monotonic()
try:
    if mode == "receive":
        client.recv_exactly(64 * MiB)
    else:
        with tempfile.NamedTemporaryFile() as file:
            file.write(bytes(64 * MiB))
            file.flush()
            client.sendfile(file.name)
    print("returned")
except KeyboardInterrupt:
    print(f"KeyboardInterrupt after {time.monotonic() - started:.2f} s")
except BaseException as exc:
    print(f"{exc!r} after {time.monotonic() - started:.2f} s")
"""


@pytest.mark.parametrize("mode", ["receive", "send"])
def test_ctrl_c_while_data_flows_interrupts_the_transfer(mode):
    """A Ctrl-C that comes while each recv or sendfile returns data interrupts no syscall: the loop must check for
    it itself, as the stdlib's recv_into loop and sendall do, instead of reading on (then sleeping with it pending
    until the timeout) or sending the whole file."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_MID_TRANSFER, mode], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    out = done.stdout.strip()
    assert out.startswith("KeyboardInterrupt after"), (out, done.stderr)
    assert float(out.split()[-2]) < 3.0, out


# A child process: Ctrl-C (SIGINT to the main thread) while sendfile waits for a peer that reads nothing yet; then
# the peer reads everything. Prints what the progress callback counted and what the peer received.
CTRL_C_COUNTED = r"""
import signal, socket, tempfile, threading
import rsock

listener = socket.create_server(("127.0.0.1", 0))
client = rsock.TcpClient(listener.getsockname())
peer, _ = listener.accept()
counted = []
main = threading.main_thread().ident
threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
with tempfile.NamedTemporaryFile() as file:
    file.write(bytes(64 << 20))
    file.flush()
    try:
        client.sendfile(file.name, progress=lambda sent: counted.append(sent))
    except KeyboardInterrupt:
        pass
client.close()
received = 0
while data := peer.recv(1 << 20):
    received += len(data)
print(sum(counted), received)
"""


def test_ctrl_c_during_a_sendfile_leaves_the_progress_counting_what_went_out():
    """A raw client stays open after the interruption; its caller needs the bytes sent to go on from there. The
    chunk the signal cut short was sent but never reported. The callback is a Python function, which runs pending
    signal handlers as it starts: the interruption is handled before it is called."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_COUNTED], capture_output=True, text=True, timeout=60)
    counted, received = map(int, done.stdout.split())
    assert counted == received > 0, done.stderr


def test_a_thread_waiting_its_turn_gives_up_at_the_client_s_timeout(peer):
    client, _other = peer(timeout=0.5, framing="line")
    first = []
    holding = threading.Thread(target=lambda: first.append(type(_raises(client.request, b"unanswered"))))
    holding.start()
    time.sleep(0.1)
    started = time.monotonic()
    with pytest.raises((TimeoutError, OSError)):
        client.request(b"waiting its turn")
    assert time.monotonic() - started < 2.0
    holding.join(TIMEOUT)
    assert first == [TimeoutError]


def test_close_ends_a_thread_waiting_its_turn(peer):
    client, other = peer(timeout=None, framing="line")
    first = []
    holding = threading.Thread(target=lambda: first.append(_raises(client.request, b"unanswered")))
    holding.start()
    time.sleep(0.1)
    threading.Timer(0.2, client.close).start()
    with pytest.raises(OSError) as raised:
        client.request(b"waiting its turn")
    assert raised.value.errno == errno.EBADF
    other.close()  # ends the first request's wait
    holding.join(TIMEOUT)
    assert not holding.is_alive()
    assert isinstance(first[0], (OSError, ConnectionError))


def test_a_progress_callback_s_request_and_another_thread_s_request_do_not_deadlock(peer, tmp_path):
    """sendfile takes the request turn before the send turn, as request() does: a request made from its
    progress callback and one from another thread both complete."""
    path = tmp_path / "lines"
    path.write_bytes(b"file line\n" * 100_000)
    client, other = peer(timeout=None, framing="line")

    def answer_requests():
        with other.makefile("rb") as lines:
            for line in lines:
                if line.startswith(b"RQ"):
                    other.sendall(b"re " + line)

    answering = threading.Thread(target=answer_requests, daemon=True)
    answering.start()
    replies = {}
    other_thread = threading.Thread(target=lambda: replies.setdefault("thread", client.request(b"RQ thread")))

    def progress(n):
        if "callback" in replies:
            return
        other_thread.start()
        time.sleep(0.1)  # the other thread now waits for its turn
        replies["callback"] = client.request(b"RQ callback")

    assert client.sendfile(path, progress=progress) == path.stat().st_size
    other_thread.join(TIMEOUT)
    assert replies == {"callback": b"re RQ callback", "thread": b"re RQ thread"}
    client.close()
    other.shutdown(socket.SHUT_RDWR)
    answering.join(TIMEOUT)


def test_close_from_another_thread_ends_a_blocked_receive(peer):
    client, _other = peer(timeout=None, framing="line")
    outcome = []

    def receive():
        try:
            outcome.append(client.recv_message())
        except (OSError, EOFError) as exc:
            outcome.append(exc)

    receiving = threading.Thread(target=receive)
    receiving.start()
    time.sleep(0.2)
    client.close()
    receiving.join(2.0)
    assert not receiving.is_alive()
    assert outcome[0] is None or isinstance(outcome[0], (OSError, EOFError))


def test_a_call_in_flight_when_the_client_closes_never_touches_a_socket_given_the_same_number(peer):
    """close() frees the descriptor number: a call still waiting on the closed client must fail, not go on
    polling and reading whatever socket the number is given to next."""
    client, _first_peer = peer(timeout=5.0, framing="line")
    number = client.fileno()
    outcome = []
    receiving = threading.Thread(target=lambda: outcome.append(_raises(client.recv_message)))
    receiving.start()
    time.sleep(0.2)
    client.close()
    second, second_peer = peer(timeout=5.0, framing="line")
    if second.fileno() != number:
        pytest.skip("the new socket did not get the closed one's number")
    second_peer.sendall(b"for the second client\n")
    receiving.join(TIMEOUT)
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EBADF
    assert second.recv_message() == b"for the second client"


def test_a_sendfile_progress_callback_may_send_on_the_same_client(peer, tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"f" * 100_000)
    client, other = peer()
    calls = []

    def progress(n):
        calls.append(n)
        client.send(b"!")

    assert client.sendfile(path, progress=progress) == 100_000
    assert recv_exactly(other, 100_000 + len(calls)).count(b"!") == len(calls) >= 1


# ---------------------------------------------------------------------------------------------------------------
# Timeouts


@pytest.mark.parametrize(
    "call",
    [lambda c: c.recv(), lambda c: c.recv_exactly(5), lambda c: c.recv_message(), lambda c: c.request(b"x")],
    ids=["recv", "recv_exactly", "recv_message", "request"],
)
def test_timeout_raises_timeout_error(peer, call):
    client, _other = peer(framing="line", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        call(client)
    assert 0.15 <= time.monotonic() - started < 5


def test_settimeout_changes_the_timeout(peer):
    client, other = peer(timeout=None)
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.recv()
    client.settimeout(TIMEOUT)
    other.sendall(b"now")
    assert client.recv_exactly(3) == b"now"


def test_a_partial_message_survives_a_timeout(peer):
    client, other = peer(framing="line", timeout=0.2)
    other.sendall(b"first ha")
    with pytest.raises(TimeoutError):
        client.recv_message()
    other.sendall(b"lf\n")
    assert client.recv_message() == b"first half"


@pytest.mark.parametrize("raw_read", ["recv", "recv_exactly"])
def test_raw_reads_between_message_reads(peer, raw_read):
    """A raw read that takes bytes a message read had already searched leaves the next message intact."""
    client, other = peer(framing="line", timeout=0.2)
    other.sendall(b"abcdef")
    with pytest.raises(TimeoutError):
        client.recv_message()
    assert getattr(client, raw_read)(4) == b"abcd"
    other.sendall(b"x\nnext\n")
    assert client.recv_message() == b"efx"
    assert client.recv_message() == b"next"


def test_recv_exactly_keeps_what_arrived_before_a_timeout(peer):
    client, other = peer(timeout=0.2)
    other.sendall(b"12345")
    with pytest.raises(TimeoutError):
        client.recv_exactly(10)
    other.sendall(b"67890")
    assert client.recv_exactly(10) == b"1234567890"


# ---------------------------------------------------------------------------------------------------------------
# sendfile


def digest_server(echo_server):
    """A TcpServer that hashes everything a connection sends; the queue gets (byte count, sha256 hex) at its end."""
    done = queue.Queue()

    def on_connect(conn):
        conn.state["digest"] = hashlib.sha256()
        conn.state["count"] = 0

    def on_message(conn, data):
        conn.state["digest"].update(data)
        conn.state["count"] += len(data)

    def on_disconnect(conn, exc):
        done.put((conn.state["count"], conn.state["digest"].hexdigest(), exc))

    return echo_server(handler=on_message, on_connect=on_connect, on_disconnect=on_disconnect), done


def test_sendfile_reports_progress_and_returns_the_total(echo_server, tmp_path):
    server, done = digest_server(echo_server)
    payload = os.urandom(20 * MiB + 12345)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    progress = []
    with rsock.TcpClient(server.address, timeout=TIMEOUT) as client:
        assert client.sendfile(path, progress=progress.append) == len(payload)
    assert all(isinstance(n, int) and n > 0 for n in progress)
    assert sum(progress) == len(payload)
    assert done.get(timeout=TIMEOUT) == (len(payload), hashlib.sha256(payload).hexdigest(), None)


@pytest.mark.parametrize("kind", [str, os.fsencode, pathlib.Path])
def test_sendfile_accepts_any_path_kind(peer, tmp_path, kind):
    client, other = peer()
    path = tmp_path / "small.txt"
    path.write_bytes(b"small file contents")
    assert client.sendfile(kind(str(path))) == 19
    assert recv_exactly(other, 19) == b"small file contents"


def test_sendfile_of_an_empty_file_sends_nothing(peer, tmp_path):
    client, other = peer()
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert client.sendfile(path) == 0
    client.send(b"after")
    assert recv_exactly(other, 5) == b"after"


def test_sendfile_of_a_missing_file_raises_as_open_does(peer, tmp_path):
    client, _other = peer()
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as raised:
        client.sendfile(missing)
    with pytest.raises(FileNotFoundError) as opened:
        open(missing, "rb")
    assert (raised.value.errno, raised.value.filename, str(raised.value)) == (
        opened.value.errno,
        str(missing),
        str(opened.value),
    )


@pytest.mark.parametrize("path", ["bad\x00name", b"bad\x00name"], ids=["str", "bytes"])
def test_sendfile_of_a_path_with_a_nul_raises_as_open_does(peer, tmp_path, path):
    client, other = peer()
    with pytest.raises(ValueError) as raised:
        client.sendfile(path)
    with pytest.raises(ValueError) as opened:
        open(path, "rb")
    assert str(raised.value) == str(opened.value)
    client.send(b"still usable")
    assert recv_exactly(other, 12) == b"still usable"


def test_ctrl_c_ends_a_sendfile_waiting_to_open_a_fifo_as_it_ends_open(peer, tmp_path):
    """Opening a FIFO waits for a writer. Python's open() gives Ctrl-C at once (PEP 475); rsock opened the file
    with std's File::open, which retries an interrupted open by itself, and waited on until a writer came."""
    client, other = peer()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    main = threading.get_ident()
    interrupt = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))

    def let_it_open():
        # Bounds the test should the interrupt be missed: a writer lets the open finish (opened for reading
        # and writing, it never waits itself).
        os.close(os.open(fifo, os.O_RDWR))

    valve = threading.Timer(5.0, let_it_open)
    interrupt.start()
    valve.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.sendfile(fifo)
        assert time.monotonic() - started < 4.0
    finally:
        interrupt.cancel()
        valve.cancel()
        valve.join()
    client.send(b"still usable")
    assert recv_exactly(other, 12) == b"still usable"


def test_sendfile_of_a_directory_is_an_is_a_directory_error(peer, tmp_path):
    client, other = peer()
    with pytest.raises(IsADirectoryError):
        client.sendfile(tmp_path)
    client.send(b"still usable")
    assert recv_exactly(other, 12) == b"still usable"


@pytest.mark.parametrize("progress", [0, 1.5, "bar", b"x"], ids=repr)
def test_sendfile_with_a_progress_that_is_not_callable_sends_nothing(peer, tmp_path, progress):
    client, other = peer()
    path = tmp_path / "small.txt"
    path.write_bytes(b"file contents")
    with pytest.raises(TypeError, match="progress"):
        client.sendfile(path, progress=progress)
    client.send(b"only this")
    client.close()
    other.settimeout(TIMEOUT)
    received = b""
    while chunk := other.recv(100):
        received += chunk
    assert received == b"only this"


def test_one_gib_sendfile_arrives_intact(echo_server, tmp_path):
    """1 GiB through sendfile to a server whose handler feeds a sha256: same digest, and memory stays bounded."""
    server, done = digest_server(echo_server)
    path = tmp_path / "gigabyte.bin"
    block = bytearray(os.urandom(MiB))
    expected = hashlib.sha256()
    try:
        with open(path, "wb") as f:
            for i in range(1024):  # each MiB stamped with its index, so a reordering changes the digest
                block[:8] = struct.pack(">Q", i)
                expected.update(block)
                f.write(block)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        progress = []
        with rsock.TcpClient(server.address, timeout=30) as client:
            assert client.sendfile(str(path), progress=progress.append) == 1 << 30
        count, digest, exc = done.get(timeout=60)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        path.unlink(missing_ok=True)
    assert exc is None
    assert count == 1 << 30
    assert digest == expected.hexdigest()
    assert sum(progress) == 1 << 30
    assert len(progress) > 1
    assert (rss_after - rss_before) * 1024 < 256 * MiB


# ---------------------------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"framing": "bogus"}, ValueError),
        ({"framing": b""}, ValueError),
        ({"framing": 3}, TypeError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "soon"}, TypeError),
        ({"max_frame_size": 0}, ValueError),
        ({"max_frame_size": -1}, ValueError),
        ({"max_frame_size": 2**64}, OverflowError),
    ],
)
def test_bad_arguments(peer, kwargs, error):
    with pytest.raises(error):
        rsock.TcpClient(peer.address, **kwargs)


@pytest.mark.parametrize("n", [-1, 2**63], ids=["negative", "beyond ssize_t"])
@pytest.mark.parametrize("method", ["recv", "recv_exactly"])
def test_bad_sizes_raise_as_the_socket_s_recv_does(peer, method, n):
    client, _other = peer()
    with socket.socket() as sock:
        expected = type(raised := _raises(sock.recv, n)), str(raised).replace("recv", method)
    assert (type(got := _raises(getattr(client, method), n)), str(got)) == expected


def _raises(call, *args):
    try:
        call(*args)
    except Exception as exc:
        return exc
    pytest.fail(f"{call} returned")


def test_bad_settimeout(peer):
    client, _other = peer()
    with pytest.raises(ValueError):
        client.settimeout(-1)


@pytest.mark.parametrize("nested", ["request", "recv_message", "send"])
def test_a_call_from_a_signal_handler_inside_a_read_is_refused_only_if_it_must_read(peer, nested):
    """A signal handler runs on the thread it interrupts, inside that thread's call. A read there could never have
    the read turn the outer read holds: RuntimeError. request() was refused only when it came to read its reply,
    after its message had gone out, and closed the client, so the outer read got EBADF and the peer a request whose
    reply nobody would read. It is refused before it sends now. A send() needs only the send turn: it goes out."""
    client, other = peer(framing="line")
    handled = threading.Event()
    outcome = {}

    def handler(signum, frame):
        try:
            call = getattr(client, nested)
            outcome["result"] = call() if nested == "recv_message" else call(b"nested")
        except Exception as exc:
            outcome["result"] = exc
        handled.set()

    def answer_after_the_handler():
        if handled.wait(TIMEOUT):
            other.sendall(b"outer\n")

    previous = signal.signal(signal.SIGUSR1, handler)
    answer = threading.Thread(target=answer_after_the_handler)
    interrupt = threading.Timer(0.2, signal.pthread_kill, (threading.get_ident(), signal.SIGUSR1))
    answer.start()
    interrupt.start()
    try:
        assert client.recv_message() == b"outer"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        interrupt.cancel()
        handled.set()
        answer.join()
    assert not client.closed
    other.settimeout(0.3)
    if nested == "send":
        assert outcome["result"] is None
        assert recv_exactly(other, 7) == b"nested\n"
    else:
        assert isinstance(outcome["result"], RuntimeError)
        assert str(outcome["result"]) == "reentrant call inside a read of this TcpClient"
        with pytest.raises(TimeoutError):
            other.recv(100)
