"""socket.makefile() with its SocketIO raw stream, and socket.sendfile(), over the stdlib's `socket`
module and over `rsock`: same objects, same data, same errors, same file positions."""

import contextlib
import gc
import hashlib
import io
import os
import socket as stdlib_socket
import struct
import sys
import threading

import pytest

from tests.socket_reads import assert_nothing_waiting, recv_exactly

# Every blocking socket call in this file has a deadline, and every thread is joined with one.
TIMEOUT = 10.0


@pytest.fixture
def tcp_pair(sockmod):
    """(client, server_side): a connected TCP pair on 127.0.0.1 from the module under test."""
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(TIMEOUT)
        with sockmod.create_connection(listener.getsockname(), TIMEOUT) as client:
            server_side, _ = listener.accept()
            with server_side:
                server_side.settimeout(TIMEOUT)
                yield client, server_side


def fill_send_buffer(sock):
    """Sends without blocking until the kernel takes no more; the socket's timeout is restored."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(timeout)


# --- makefile(): the objects it returns ---------------------------------------------------------------------

# mode, buffering -> (class of the file object, its .mode, readable, writable)
MAKEFILE_OBJECTS = [
    ("r", None, io.TextIOWrapper, "r", True, False),
    ("w", None, io.TextIOWrapper, "w", False, True),
    ("rw", None, io.TextIOWrapper, "rw", True, True),
    ("rb", None, io.BufferedReader, "rb", True, False),
    ("wb", None, io.BufferedWriter, "wb", False, True),
    ("rwb", None, io.BufferedRWPair, None, True, True),
    ("rb", 0, "SocketIO", "rb", True, False),
    ("wb", 0, "SocketIO", "wb", False, True),
    ("rwb", 0, "SocketIO", "rwb", True, True),
    ("rb", 16, io.BufferedReader, "rb", True, False),
    ("wb", -1, io.BufferedWriter, "wb", False, True),
    ("r", 1, io.TextIOWrapper, "r", True, False),
    ("", None, io.TextIOWrapper, "", True, False),
    ("b", None, io.BufferedReader, "rb", True, False),
    ("wr", None, io.TextIOWrapper, "wr", True, True),
]


@pytest.mark.parametrize(
    "mode, buffering, cls, file_mode, readable, writable",
    MAKEFILE_OBJECTS,
    ids=[f"{mode!r}-{buffering}" for mode, buffering, *_ in MAKEFILE_OBJECTS],
)
def test_makefile_returns_stdlib_file_object(tcp_pair, sockmod, mode, buffering, cls, file_mode, readable, writable):
    client, _ = tcp_pair
    with client.makefile(mode, buffering) as f:
        expected_cls = sockmod.SocketIO if cls == "SocketIO" else cls
        assert type(f) is expected_cls
        assert getattr(f, "mode", None) == file_mode
        assert (f.readable(), f.writable(), f.seekable()) == (readable, writable, False)


@pytest.mark.parametrize("mode, buffering", [("r", None), ("w", None), ("rb", None), ("wb", 8), ("rwb", 0)])
def test_makefile_fileno_is_the_sockets(tcp_pair, mode, buffering):
    client, _ = tcp_pair
    with client.makefile(mode, buffering) as f:
        assert f.fileno() == client.fileno()


def test_makefile_rw_pair_has_no_fileno(tcp_pair):
    client, _ = tcp_pair
    with client.makefile("rwb") as f:
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()


def test_makefile_text_uses_locale_encoding_unless_given(tcp_pair):
    client, _ = tcp_pair
    with client.makefile("r") as default, client.makefile("r", encoding="latin-1", errors="replace") as latin:
        assert default.encoding == io.TextIOWrapper(io.BytesIO(), io.text_encoding(None)).encoding
        assert (latin.encoding, latin.errors) == ("latin-1", "replace")


def test_socketio_name_and_mode(tcp_pair):
    client, _ = tcp_pair
    raw = client.makefile("rwb", buffering=0)
    assert (raw.name, raw.mode, raw.closed) == (client.fileno(), "rwb", False)
    raw.close()
    assert (raw.name, raw.mode, raw.closed) == (-1, "rwb", True)


def test_socketio_class_is_exported(sockmod):
    assert issubclass(sockmod.SocketIO, io.RawIOBase)


@pytest.mark.parametrize("mode", ["x", "r+", "a", "rt", "wbx"])
def test_makefile_invalid_mode_raises_value_error(tcp_pair, mode):
    client, _ = tcp_pair
    with pytest.raises(ValueError) as excinfo:
        client.makefile(mode)
    assert str(excinfo.value) == f"invalid mode {mode!r} (only r, w, b allowed)"


@pytest.mark.parametrize("mode", ["r", "w", "rw"])
def test_makefile_unbuffered_text_raises_value_error(tcp_pair, mode):
    client, _ = tcp_pair
    with pytest.raises(ValueError, match=r"^unbuffered streams must be binary$"):
        client.makefile(mode, buffering=0)


def test_socketio_rejects_invalid_mode(tcp_pair, sockmod):
    client, _ = tcp_pair
    reported = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append(unraisable.exc_type)
    try:
        with pytest.raises(ValueError, match=r"^invalid mode: 'x'$"):
            sockmod.SocketIO(client, "x")
        gc.collect()  # finalises the half-built object, which calls its close()
    finally:
        sys.unraisablehook = old_hook
    # The stdlib's close() then fails (AttributeError: no '_sock'), a CPython bug that 3.13 reports as
    # unraisable (3.11 and 3.12 only in dev mode); hence only rsock's is checked.
    if sockmod is not stdlib_socket:
        assert reported == []


# --- makefile(): reading and writing ------------------------------------------------------------------------


def test_binary_readline_over_line_protocol(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"220 ready\r\n250-first\r\n250 last\r\npartial")
    server_side.shutdown(stdlib_socket.SHUT_WR)
    with client.makefile("rb") as rfile:
        assert rfile.readline() == b"220 ready\r\n"
        assert list(rfile) == [b"250-first\r\n", b"250 last\r\n", b"partial"]
        assert rfile.readline() == b""


def test_text_readline_translates_newlines_by_default(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"one\r\ntwo\rthree\n")
    server_side.shutdown(stdlib_socket.SHUT_WR)
    with client.makefile("r", encoding="ascii") as rfile:
        assert rfile.readlines() == ["one\n", "two\n", "three\n"]


def test_text_readline_with_newline_argument_keeps_line_endings(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"one\r\ntwo\n")
    server_side.shutdown(stdlib_socket.SHUT_WR)
    with client.makefile("r", encoding="ascii", newline="") as rfile:
        assert rfile.readlines() == ["one\r\n", "two\n"]


def test_text_write_encodes_and_translates_newline(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("w", encoding="utf-8", newline="\r\n") as wfile:
        assert wfile.write("héllo\n") == 6
        wfile.flush()
        assert recv_exactly(server_side, 8) == "héllo\r\n".encode()


def test_text_decoding_errors_follow_errors_argument(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"ok \xff\n")
    with client.makefile("r", encoding="ascii", errors="replace") as rfile:
        assert rfile.readline() == "ok \ufffd\n"


def test_buffered_write_waits_for_flush(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("wb") as wfile:
        wfile.write(b"held back")
        assert_nothing_waiting(server_side)
        wfile.flush()
        assert recv_exactly(server_side, 9) == b"held back"


def test_unbuffered_write_sends_immediately(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("wb", buffering=0) as wfile:
        assert wfile.write(b"now") == 3
        assert recv_exactly(server_side, 3) == b"now"


def test_closing_write_file_flushes_it(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("w", encoding="ascii") as wfile:
        wfile.write("bye\n")
    assert recv_exactly(server_side, 4) == b"bye\n"


def test_read_buffer_holds_buffering_bytes(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"abcdefgh")
    with client.makefile("rb", buffering=4) as rfile:
        assert rfile.read(1) == b"a"
        assert rfile.peek() == b"bcd"
        assert rfile.read(5) == b"bcdef"


def test_rw_pair_reads_and_writes(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("rwb") as stream:
        stream.write(b"request\n")
        stream.flush()
        assert recv_exactly(server_side, 8) == b"request\n"
        server_side.sendall(b"response\n")
        assert stream.readline() == b"response\n"


def test_text_rw_file_reads_and_writes(tcp_pair):
    client, server_side = tcp_pair
    with client.makefile("rw", encoding="ascii", newline="") as stream:
        stream.write("HELO x\r\n")
        stream.flush()
        assert recv_exactly(server_side, 8) == b"HELO x\r\n"
        server_side.sendall(b"250 ok\r\n")
        assert stream.readline() == "250 ok\r\n"


def test_read_until_eof(tcp_pair):
    client, server_side = tcp_pair
    server_side.sendall(b"x" * 100_000)
    server_side.shutdown(stdlib_socket.SHUT_WR)
    with client.makefile("rb") as rfile:
        assert rfile.read() == b"x" * 100_000
        assert rfile.read() == b""


def test_socketio_wrong_direction_raises_unsupported_operation(tcp_pair):
    client, _ = tcp_pair
    with client.makefile("rb", buffering=0) as reader, client.makefile("wb", buffering=0) as writer:
        with pytest.raises(io.UnsupportedOperation):
            reader.write(b"x")
        with pytest.raises(io.UnsupportedOperation):
            writer.read(1)
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(0)


def test_closed_socketio_raises_value_error(tcp_pair):
    client, _ = tcp_pair
    raw = client.makefile("rb", buffering=0)
    raw.close()
    with pytest.raises(ValueError, match=r"^I/O operation on closed socket\.$"):
        raw.readable()
    with pytest.raises(ValueError, match=r"^I/O operation on closed file\.?$"):
        raw.readinto(bytearray(1))
    with pytest.raises(ValueError, match=r"^I/O operation on closed file\.?$"):
        raw.fileno()


# --- makefile(): closing order ------------------------------------------------------------------------------


def test_socket_stays_open_until_makefile_objects_are_closed(tcp_pair):
    client, server_side = tcp_pair
    rfile = client.makefile("rb")
    wfile = client.makefile("wb", buffering=0)
    fd = client.fileno()
    client.close()
    assert client.fileno() == fd
    wfile.write(b"still here")
    assert recv_exactly(server_side, 10) == b"still here"
    server_side.sendall(b"and here\n")
    assert rfile.readline() == b"and here\n"
    wfile.close()
    assert client.fileno() == fd
    rfile.close()
    assert client.fileno() == -1
    assert server_side.recv(100) == b""


def test_closing_makefile_first_leaves_socket_usable(tcp_pair):
    client, server_side = tcp_pair
    fd = client.fileno()
    with client.makefile("rwb") as stream:
        stream.write(b"via file")
    assert client.fileno() == fd
    client.sendall(b", via socket")
    assert recv_exactly(server_side, 20) == b"via file, via socket"
    client.close()
    assert client.fileno() == -1


def test_socket_closed_after_last_of_several_files(tcp_pair):
    client, _ = tcp_pair
    files = [client.makefile("rb"), client.makefile("w"), client.makefile("rwb", buffering=0)]
    client.close()
    for f in files[:-1]:
        f.close()
        assert client.fileno() >= 0
    files[-1].close()
    assert client.fileno() == -1


def test_closing_makefile_twice_does_not_close_socket(tcp_pair):
    client, server_side = tcp_pair
    raw = client.makefile("rwb", buffering=0)
    raw.close()
    raw.close()
    other = client.makefile("wb", buffering=0)
    client.close()
    other.write(b"alive")
    assert recv_exactly(server_side, 5) == b"alive"
    other.close()
    assert client.fileno() == -1


# --- SocketIO: timeouts and non-blocking sockets ------------------------------------------------------------


def test_socketio_refuses_reads_after_timeout(tcp_pair):
    client, server_side = tcp_pair
    client.settimeout(0.05)
    with client.makefile("rb", buffering=0) as raw:
        with pytest.raises(TimeoutError, match=r"^timed out$"):
            raw.readinto(bytearray(10))
        server_side.sendall(b"too late")
        with pytest.raises(OSError) as excinfo:
            raw.readinto(bytearray(10))
        assert (type(excinfo.value), excinfo.value.args) == (OSError, ("cannot read from timed out object",))
    # The socket itself still has the data.
    client.settimeout(TIMEOUT)
    assert recv_exactly(client, 8) == b"too late"


def test_buffered_reader_refuses_reads_after_timeout(tcp_pair):
    client, server_side = tcp_pair
    client.settimeout(0.05)
    with client.makefile("rb") as rfile:
        with pytest.raises(TimeoutError):
            rfile.readline()
        server_side.sendall(b"line\n")
        with pytest.raises(OSError, match=r"^cannot read from timed out object$"):
            rfile.readline()


def test_timeout_does_not_affect_a_new_makefile(tcp_pair):
    client, server_side = tcp_pair
    client.settimeout(0.05)
    with client.makefile("rb", buffering=0) as first:
        with pytest.raises(TimeoutError):
            first.read(1)
    server_side.sendall(b"fresh")
    client.settimeout(TIMEOUT)
    with client.makefile("rb", buffering=0) as second:
        assert second.read(10) == b"fresh"


def test_socketio_readinto_returns_none_on_nonblocking_socket(tcp_pair):
    client, server_side = tcp_pair
    client.setblocking(False)
    with client.makefile("rb", buffering=0) as raw:
        buffer = bytearray(5)
        assert raw.readinto(buffer) is None
        assert raw.read(5) is None
        server_side.sendall(b"ready")
        server_side.settimeout(TIMEOUT)
        client.settimeout(TIMEOUT)  # wait for the bytes through the same file object
        assert raw.readinto(buffer) == 5
        assert buffer == b"ready"


def test_buffered_read_returns_none_on_nonblocking_socket(tcp_pair):
    client, _ = tcp_pair
    client.setblocking(False)
    with client.makefile("rb") as rfile:
        assert rfile.read(5) is None
        assert rfile.read1(5) == b""


def test_socketio_write_returns_none_when_send_would_block(tcp_pair):
    client, _ = tcp_pair
    fill_send_buffer(client)
    client.setblocking(False)
    with client.makefile("wb", buffering=0) as raw:
        assert raw.write(b"no room") is None


def test_socketio_read_error_other_than_blocking_propagates(tcp_pair):
    client, server_side = tcp_pair
    server_side.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    server_side.close()  # linger 0: the peer resets the connection
    with client.makefile("rb", buffering=0) as raw:
        with pytest.raises(ConnectionResetError):
            raw.read(10)


# --- sendfile() ---------------------------------------------------------------------------------------------


class Receiver(threading.Thread):
    """Reads a socket to EOF in the background, keeping a hash, the size and the first bytes."""

    def __init__(self, sock, keep=1 << 20):
        super().__init__(daemon=True)
        self.sock = sock
        self.keep = keep
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()
        self.error = None

    def run(self):
        try:
            while chunk := self.sock.recv(1 << 20):
                self.digest.update(chunk)
                self.size += len(chunk)
                if len(self.head) < self.keep:
                    self.head += chunk[: self.keep - len(self.head)]
        except Exception as exc:
            self.error = exc

    def result(self, timeout=TIMEOUT):
        """The bytes received (up to `keep`), once the sender has shut down its side."""
        self.join(timeout)
        assert not self.is_alive(), "receiver did not see EOF in time"
        assert self.error is None
        return bytes(self.head)


@contextlib.contextmanager
def sendfile_receiver(tcp_pair):
    """Yields (sender, receiver): a Receiver thread reads the pair's other side until EOF. The sender's
    write side is shut down and the thread joined on the way out, even when the test fails."""
    sender, receiving_side = tcp_pair
    receiver = Receiver(receiving_side)
    receiver.start()
    try:
        yield sender, receiver
    finally:
        with contextlib.suppress(OSError):
            sender.shutdown(stdlib_socket.SHUT_WR)
        receiver.join(TIMEOUT)


def received_after_sendfile(tcp_pair, file, *args):
    """Calls sender.sendfile(file, *args), then returns (its result, the file position, the bytes the
    peer received)."""
    with sendfile_receiver(tcp_pair) as (sender, receiver):
        sent = sender.sendfile(file, *args)
        position = file.tell()
        sender.shutdown(stdlib_socket.SHUT_WR)
        return sent, position, receiver.result()


CONTENT = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture
def regular_file(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(CONTENT)
    with open(path, "rb") as f:
        yield f


def test_sendfile_sends_whole_regular_file(tcp_pair, regular_file):
    assert received_after_sendfile(tcp_pair, regular_file) == (len(CONTENT), len(CONTENT), CONTENT)


def test_sendfile_from_offset(tcp_pair, regular_file):
    assert received_after_sendfile(tcp_pair, regular_file, 1000) == (len(CONTENT) - 1000, len(CONTENT), CONTENT[1000:])


def test_sendfile_with_count_leaves_file_after_sent_bytes(tcp_pair, regular_file):
    assert received_after_sendfile(tcp_pair, regular_file, 100, 50) == (50, 150, CONTENT[100:150])


def test_sendfile_count_beyond_end_sends_rest(tcp_pair, regular_file):
    result = received_after_sendfile(tcp_pair, regular_file, 100, 10 * len(CONTENT))
    assert result == (len(CONTENT) - 100, len(CONTENT), CONTENT[100:])


def test_sendfile_offset_beyond_end_sends_nothing(tcp_pair, regular_file):
    assert received_after_sendfile(tcp_pair, regular_file, 2 * len(CONTENT)) == (0, 0, b"")


def test_sendfile_through_the_send_helper_a_subclass_may_choose(sockmod, tmp_path):
    """socket.py's helpers keep their names: a subclass whose _sendfile_use_sendfile() gives up (to keep every byte
    in user space) has its file sent by _sendfile_use_send(). rsock's had other names, and the override was not
    called."""
    chosen = []

    class SendOnly(sockmod.socket):
        def _sendfile_use_sendfile(self, file, offset=0, count=None):
            chosen.append("sendfile")
            raise sockmod._GiveupOnSendfile("send() only")

        def _sendfile_use_send(self, file, offset=0, count=None):
            chosen.append("send")
            return super()._sendfile_use_send(file, offset, count)

    path = tmp_path / "payload.bin"
    path.write_bytes(CONTENT)
    with SendOnly() as listener, open(path, "rb") as file:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with SendOnly() as sender:
            sender.settimeout(TIMEOUT)
            sender.connect(listener.getsockname())
            receiving_side, _ = listener.accept()
            with receiving_side:
                receiving_side.settimeout(TIMEOUT)
                assert received_after_sendfile((sender, receiving_side), file, 100, 50) == (50, 150, CONTENT[100:150])
    assert chosen == ["sendfile", "send"]


def test_sendfile_ignores_current_file_position(tcp_pair, regular_file):
    regular_file.seek(500)
    assert received_after_sendfile(tcp_pair, regular_file, 0, 10) == (10, 10, CONTENT[:10])


def test_sendfile_empty_file_sends_nothing(tcp_pair, tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert received_after_sendfile(tcp_pair, f) == (0, 0, b"")


def test_sendfile_unbuffered_file(tcp_pair, tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(CONTENT)
    with open(path, "rb", buffering=0) as f:
        assert received_after_sendfile(tcp_pair, f, 7, 9) == (9, 16, CONTENT[7:16])


def test_sendfile_on_socket_with_timeout(tcp_pair, regular_file):
    tcp_pair[0].settimeout(TIMEOUT)
    assert received_after_sendfile(tcp_pair, regular_file) == (len(CONTENT), len(CONTENT), CONTENT)


def test_sendfile_non_regular_file_falls_back_to_send(tcp_pair):
    data = io.BytesIO(b"0123456789" * 10)
    assert received_after_sendfile(tcp_pair, data, 10, 20) == (20, 30, (b"0123456789" * 10)[10:30])


def test_sendfile_non_regular_file_whole(tcp_pair):
    data = io.BytesIO(CONTENT)
    assert received_after_sendfile(tcp_pair, data) == (len(CONTENT), len(CONTENT), CONTENT)


def test_sendfile_text_file_raises_value_error(tcp_pair, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("text")
    client, _ = tcp_pair
    with open(path, encoding="ascii") as f:
        with pytest.raises(ValueError, match=r"^file should be opened in binary mode$"):
            client.sendfile(f)
        assert f.tell() == 0


@pytest.mark.parametrize(
    "count, exc_type",
    [(0, ValueError), (-1, ValueError), ("x", TypeError), (1.0, TypeError)],
    ids=repr,
)
def test_sendfile_bad_count(tcp_pair, regular_file, count, exc_type):
    client, _ = tcp_pair
    with pytest.raises(exc_type) as excinfo:
        client.sendfile(regular_file, 0, count)
    assert type(excinfo.value) is exc_type
    assert str(excinfo.value) == f"count must be a positive integer (got {count!r})"


def test_sendfile_count_beyond_ssize_t_sends_the_rest_of_the_file(sockmod, tcp_pair, regular_file):
    """Each sendfile(2) call moves at most 1 GiB, so a count past a C ssize_t sends what the file holds,
    as the stdlib does since gh-114077 (3.11.8, 3.12.2); earlier it passed the count on whole and
    raised OverflowError."""
    fixed_in = (3, 11, 8) if sys.version_info < (3, 12) else (3, 12, 2)
    if sockmod is stdlib_socket and sys.version_info < fixed_in:
        pytest.skip("this Python's socket.sendfile() predates gh-114077 and raises OverflowError")
    result = received_after_sendfile(tcp_pair, regular_file, 100, 2**63)
    assert result == (len(CONTENT) - 100, len(CONTENT), CONTENT[100:])


def test_sendfile_propagates_an_oserror_from_fileno(tcp_pair):
    """Only a file without a descriptor (AttributeError, UnsupportedOperation) is sent with send()
    instead; an OSError from fileno() reaches the caller and nothing is sent."""

    class BrokenFile(io.BytesIO):
        def fileno(self):
            raise OSError(5, "no descriptor")

    client, server_side = tcp_pair
    with pytest.raises(OSError) as excinfo:
        client.sendfile(BrokenFile(b"data"))
    assert excinfo.value.errno == 5
    assert_nothing_waiting(server_side)


def test_sendfile_bad_count_is_checked_for_non_regular_files_too(tcp_pair):
    client, _ = tcp_pair
    with pytest.raises(ValueError, match=r"^count must be a positive integer \(got 0\)$"):
        client.sendfile(io.BytesIO(b"data"), 0, 0)


@pytest.mark.parametrize("make_file", [lambda path: open(path, "rb"), lambda path: io.BytesIO(CONTENT)])
def test_sendfile_nonblocking_socket_raises_value_error(tcp_pair, tmp_path, make_file):
    path = tmp_path / "payload.bin"
    path.write_bytes(CONTENT)
    client, _ = tcp_pair
    client.setblocking(False)
    with make_file(path) as f:
        with pytest.raises(ValueError, match=r"^non-blocking sockets are not supported$"):
            client.sendfile(f)
        assert f.tell() == 0


def test_sendfile_datagram_socket_raises_value_error(sockmod, regular_file):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_DGRAM) as sock:
        with pytest.raises(ValueError, match=r"^only SOCK_STREAM type sockets are supported$"):
            sock.sendfile(regular_file)


def test_sendfile_on_unconnected_socket_raises_broken_pipe(sockmod, regular_file):
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as sock:
        with pytest.raises(BrokenPipeError):
            sock.sendfile(regular_file)


def test_sendfile_on_closed_socket_raises_value_error(sockmod, regular_file):
    # The stdlib registers the socket's descriptor (-1 once closed) with a selector before sending.
    with sockmod.socket(sockmod.AF_INET, sockmod.SOCK_STREAM) as sock:
        sock.close()
        with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
            sock.sendfile(regular_file)


def test_sendfile_64_mib_file_arrives_intact(tcp_pair, tmp_path):
    size = 64 * 1024 * 1024
    path = tmp_path / "big.bin"
    expected = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            expected.update(block)
            f.write(block)
    with sendfile_receiver(tcp_pair) as (sender, receiver), open(path, "rb") as f:
        assert sender.sendfile(f) == size
        assert f.tell() == size
        sender.shutdown(stdlib_socket.SHUT_WR)
        receiver.result(timeout=60)
    assert receiver.size == size
    assert receiver.digest.hexdigest() == expected.hexdigest()
