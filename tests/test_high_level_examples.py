"""Runs the examples built on rsock's own servers and clients (TcpServer, TcpClient, UdpServer, UdpClient)
for real, each as a subprocess on loopback, and checks what they print and what arrives.

Servers are started on port 0 and read back the port they print; every wait has a deadline, and any
process a test started that is still running when the test ends is killed, by its pid.
"""

import ast
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

import pytest

from tests import subprocesses
from tests.socket_reads import recv_exactly, recv_until_eof
from tests.subprocesses import ROOT, TIMEOUT, Lines, default_sigint, listening_port, say, started

EXAMPLES = ROOT / "examples"

SERVERS = ["echo_server.py", "chat_server.py", "file_receive.py", "udp_time_server.py"]
CLIENTS = ["chat_client.py", "file_send.py", "udp_time_client.py"]
INTERRUPTED = "interrupted, shutting down"

# Runs the example named by argv[1] as if tqdm were not installed (importing it raises ImportError).
WITHOUT_TQDM = (
    "import runpy, sys; sys.modules['tqdm'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def command(script, *args):
    return [sys.executable, f"examples/{script}", *args]


def run(script, *args, prefix=None):
    """Runs an example to completion; returns the CompletedProcess (text output)."""
    cmd = [*(prefix or [sys.executable]), f"examples/{script}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


@contextmanager
def server(script, *args):
    """Starts examples/`script` on port 0; yields ``(proc, port, lines)`` once it says it is listening."""
    with started(command(script, "--port", "0", *args), preexec_fn=default_sigint) as proc:
        lines = Lines(proc)
        yield proc, listening_port(proc, lines, script), lines


def finish(proc, lines):
    """Waits for a process to exit by itself with code 0 and nothing on stderr; returns all its lines."""
    output, err = subprocesses.finish(proc, lines)
    assert err == ""
    return output


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def recv_line(conn):
    """Reads one newline-terminated line, a byte at a time so nothing after it is consumed."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        assert byte, f"the connection closed in the middle of a line ({line!r})"
        line += byte
    return line


def assert_lines_match(lines, patterns):
    """Each line fully matches the regular expression at the same place in `patterns`."""
    assert len(lines) == len(patterns) and all(map(re.fullmatch, patterns, lines)), (lines, patterns)


# --- the files themselves ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", SERVERS + CLIENTS)
def test_example_is_documented(script):
    """Each example opens with a docstring saying how to run it, imports rsock (its high-level types,
    not the socket API) and is listed in examples/README.md with its command."""
    tree = ast.parse((EXAMPLES / script).read_text())
    docstring = ast.get_docstring(tree)
    assert docstring and f"python examples/{script}" in docstring
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert "rsock" in imported and "socket" not in imported
    assert f"python examples/{script}" in (EXAMPLES / "README.md").read_text()


# --- echo -------------------------------------------------------------------------------------------


def test_echo_server_round_trip():
    """The tutorial's echo client gets its message back whole (one larger than any one read, and not
    ASCII), three connections held open at once are each answered, newest first, and once the five
    clients are gone the server exits by itself, printing counters that add up to what was sent."""
    messages = ["Hello, world", "héllo wörld " * 8000]
    with server("echo_server.py", "--max-clients", "5") as (proc, port, lines):
        for message in messages:
            result = run("tcp_echo_client.py", "--port", str(port), message)
            assert result.returncode == 0, result.stderr
            assert result.stdout == f"received {message.encode()!r}\n"
        sent = sum(len(message.encode()) for message in messages)
        with ExitStack() as stack:
            conns = [stack.enter_context(connect(port)) for _ in range(3)]
            for i, conn in reversed(list(enumerate(conns))):
                data = f"to connection {i}".encode()
                conn.sendall(data)
                assert recv_exactly(conn, len(data)) == data
                sent += len(data)
        output = finish(proc, lines)
    stats = re.fullmatch(
        r"connections: (\d+), messages: (\d+), bytes in: (\d+), bytes out: (\d+), errors: 0", output[-1]
    )
    assert stats, output
    assert int(stats[1]) == 5
    assert int(stats[2]) >= 5  # one per read: the long message may take several
    assert int(stats[3]) == int(stats[4]) == sent


# --- chat -------------------------------------------------------------------------------------------


@contextmanager
def chat_client(port, nick):
    """An interactive chat client (stdin a pipe); yields ``(proc, lines, guest)``, `guest` being the
    name the server gave it before it took `nick`."""
    cmd = command("chat_client.py", "--port", str(port), "--nick", nick)
    with started(cmd, stdin=subprocess.PIPE) as proc:
        lines = Lines(proc)
        welcome = lines.expect(re.compile(r"\* welcome, (guest\d+)! others here: (\d+)\. .*"))
        lines.expect(f"* you are now {nick}")
        yield proc, lines, welcome[1]


def leave(proc, lines):
    """Ends a chat client's input, which makes it /quit; returns its whole output once it has exited."""
    proc.stdin.close()
    return finish(proc, lines)


def test_chat_room_with_three_clients():
    """Alice, Bob and Carol join in turn, each say one line and leave in turn. Each sees the others
    join, rename themselves, speak and leave, in that order, and never their own lines; the server logs
    it all and exits by itself after the third has left."""
    with ExitStack() as stack:
        srv, port, srv_lines = stack.enter_context(server("chat_server.py", "--max-clients", "3"))
        alice, alice_lines, alice_guest = stack.enter_context(chat_client(port, "alice"))
        bob, bob_lines, bob_guest = stack.enter_context(chat_client(port, "bob"))
        alice_lines.expect(f"* {bob_guest} is now bob")
        carol, carol_lines, carol_guest = stack.enter_context(chat_client(port, "carol"))
        alice_lines.expect(f"* {carol_guest} is now carol")
        bob_lines.expect(f"* {carol_guest} is now carol")

        # Each speaks once everyone has heard the one before: any echo of a line to its sender would
        # reach the sender before the next speaker's line does.
        said = {"alice": "hello from alice", "bob": "hi, bob here", "carol": "¡hola! from carol"}
        people = {"alice": (alice, alice_lines), "bob": (bob, bob_lines), "carol": (carol, carol_lines)}
        for nick, (proc, _) in people.items():
            say(proc, said[nick])
            for other, (_, other_lines) in people.items():
                if other != nick:
                    other_lines.expect(f"{nick}: {said[nick]}")

        alice_out = leave(alice, alice_lines)
        bob_lines.expect("* alice left")
        carol_lines.expect("* alice left")
        bob_out = leave(bob, bob_lines)
        carol_lines.expect("* bob left")
        carol_out = leave(carol, carol_lines)
        server_out = finish(srv, srv_lines)

    assert alice_guest != bob_guest != carol_guest != alice_guest
    hint = "/nick NAME renames you, /quit leaves"
    assert alice_out == [
        f"* welcome, {alice_guest}! others here: 0. {hint}",
        "* you are now alice",
        f"* {bob_guest} joined",
        f"* {bob_guest} is now bob",
        f"* {carol_guest} joined",
        f"* {carol_guest} is now carol",
        f"bob: {said['bob']}",
        f"carol: {said['carol']}",
        "* disconnected",
    ]
    assert bob_out == [
        f"* welcome, {bob_guest}! others here: 1. {hint}",
        "* you are now bob",
        f"* {carol_guest} joined",
        f"* {carol_guest} is now carol",
        f"alice: {said['alice']}",
        f"carol: {said['carol']}",
        "* alice left",
        "* disconnected",
    ]
    assert carol_out == [
        f"* welcome, {carol_guest}! others here: 2. {hint}",
        "* you are now carol",
        f"alice: {said['alice']}",
        f"bob: {said['bob']}",
        "* alice left",
        "* bob left",
        "* disconnected",
    ]
    for nick, out in [("alice", alice_out), ("bob", bob_out), ("carol", carol_out)]:
        assert not [line for line in out if line.startswith(f"{nick}: ")], f"{nick} got their own line back"

    assert_lines_match(
        server_out[1:],
        [
            rf"{alice_guest} joined from 127\.0\.0\.1:\d+",
            f"{alice_guest} is now alice",
            rf"{bob_guest} joined from 127\.0\.0\.1:\d+",
            f"{bob_guest} is now bob",
            rf"{carol_guest} joined from 127\.0\.0\.1:\d+",
            f"{carol_guest} is now carol",
            "alice left",
            "bob left",
            "carol left",
        ],
    )


def test_chat_client_send_mode_and_server_ctrl_c():
    """``--send TEXT --count N`` sends TEXT N times and leaves, printing what it received (not its own
    lines); a member already there sees the N lines and the join and leave. Ctrl-C then stops the
    server, which closes that member's connection: the client says so and exits, stdin still open."""
    with server("chat_server.py") as (srv, port, srv_lines), chat_client(port, "watcher") as (watcher, lines, _):
        result = run("chat_client.py", "--port", str(port), "--nick", "bot", "--send", "beep boop", "--count", "3")
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        bot_out = result.stdout.splitlines()
        assert re.fullmatch(r"\* welcome, guest\d+! others here: 1\. .*", bot_out[0]), bot_out
        # The bot sends /nick, its lines and /quit at once; the reply to /nick goes out before the close.
        assert bot_out[1:] == ["* you are now bot", "* disconnected"], bot_out

        bot_guest = lines.expect(re.compile(r"\* (guest\d+) joined"))[1]
        lines.expect(f"* {bot_guest} is now bot")
        for _ in range(3):
            assert lines.next() == "bot: beep boop"
        assert lines.next() == "* bot left"

        srv.send_signal(signal.SIGINT)
        server_out = finish(srv, srv_lines)
        assert lines.next() == "* disconnected"  # the server closed the connection: nothing else came
        watcher_out = finish(watcher, lines)  # stdin is still open: the client exits all the same
    # stop() waits for the connections to close, so on_disconnect runs before serve_forever() raises.
    assert server_out[-2:] == ["watcher left", INTERRUPTED]
    assert watcher_out[-1] == "* disconnected"


def test_chat_reply_survives_a_quit_read_with_it():
    """``/nick bot`` and ``/quit`` arriving in one read (one write from the client, after the welcome):
    the reply to /nick must still go out before the server closes the connection, and the member must
    leave cleanly. conn.close() promises to close "once the output already queued is sent"."""
    with server("chat_server.py", "--max-clients", "1") as (proc, port, lines):
        with connect(port) as conn:
            assert recv_line(conn).startswith(b"* welcome, guest1!")
            conn.sendall(b"/nick bot\n/quit\n")
            received = recv_until_eof(conn)
        output = finish(proc, lines)
    assert output[-1] == "bot left", output  # a lost reply ends the connection with BrokenPipeError
    assert received == b"* you are now bot\n"


# --- file transfer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", ["tqdm", "percentage"])
def test_file_transfer(tmp_path, progress):
    """A few MiB of random data sent with file_send.py arrive intact: the receiver's file has the same
    bytes, both ends print the same SHA-256 (that of the data), the sender draws its progress on stderr
    up to 100%, and no temporary file is left behind."""
    if progress == "tqdm":
        pytest.importorskip("tqdm")
        prefix = [sys.executable]
    else:
        prefix = [sys.executable, "-c", WITHOUT_TQDM]
    data = os.urandom(3 * 1024 * 1024 + 12345)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "random.bin"
    source.write_bytes(data)
    out_dir = tmp_path / "received"

    with server("file_receive.py", "--output-dir", str(out_dir), "--max-clients", "1") as (proc, port, lines):
        result = run("file_send.py", "--port", str(port), str(source), prefix=prefix)
        assert result.returncode == 0, result.stderr
        server_out = finish(proc, lines)

    assert result.stdout.splitlines() == [
        f"sent random.bin: {len(data)} bytes, sha256 {digest}",
        f"receiver: ok {len(data)} {digest}",
    ]
    if progress == "tqdm":
        assert re.search(r"random\.bin: 100%\|", result.stderr), result.stderr
    else:
        # One line rewritten in place with \r (which text mode reads as a line break), ending at 100%.
        assert result.stderr.splitlines()[-1] == f"random.bin: 100% of {len(data)} bytes", result.stderr
    assert re.fullmatch(
        rf"received {re.escape(str(out_dir / 'random.bin'))} \({len(data)} bytes\) from 127\.0\.0\.1:\d+, "
        rf"sha256 {digest}",
        server_out[1],
    ), server_out
    received = (out_dir / "random.bin").read_bytes()
    assert hashlib.sha256(received).hexdigest() == digest
    assert received == data
    assert sorted(path.name for path in out_dir.iterdir()) == ["random.bin"]


def test_file_receive_refuses_bad_transfers(tmp_path):
    """The receiver keeps only the last part of the name it is sent (nothing lands outside its output
    directory), answers a sender that sends more than it announced with an error and hangs up, and
    throws away the part of a file whose sender leaves before the end."""
    out_dir = tmp_path / "received"
    with server("file_receive.py", "--output-dir", str(out_dir), "--max-clients", "3") as (proc, port, lines):
        with connect(port) as conn:
            conn.sendall(json.dumps({"name": "../../escape.txt", "size": 5}).encode() + b"\nhello")
            assert recv_line(conn) == f"ok 5 {hashlib.sha256(b'hello').hexdigest()}\n".encode()
        with connect(port) as conn:
            conn.sendall(json.dumps({"name": "long.txt", "size": 3}).encode() + b"\n")
            conn.sendall(b"hello")
            assert recv_until_eof(conn) == b"error: more data than the header announced\n"
        with connect(port) as conn:
            conn.sendall(json.dumps({"name": "short.txt", "size": 100}).encode() + b"\n" + b"x" * 40)
        output = finish(proc, lines)
    assert (out_dir / "escape.txt").read_bytes() == b"hello"
    assert not (tmp_path / "escape.txt").exists() and not (ROOT / "escape.txt").exists()
    assert sorted(path.name for path in out_dir.iterdir()) == ["escape.txt"]
    assert "incomplete: short.txt, 40 of 100 bytes" in output, output
    assert any(line.startswith("incomplete: long.txt, ") for line in output), output


# --- UDP time ---------------------------------------------------------------------------------------


def test_udp_time_server_and_client():
    """The client's TIME request comes back as an ISO 8601 time within seconds of the test's own clock
    (and the client reports a small offset); any other text comes back as it was, from the client and
    from a plain socket; the server exits by itself after answering three datagrams."""
    with server("udp_time_server.py", "--max-clients", "3") as (proc, port, lines):
        before = datetime.now(UTC)
        result = run("udp_time_client.py", "--port", str(port))
        after = datetime.now(UTC)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        time_line, offset_line = result.stdout.splitlines()
        server_time = datetime.fromisoformat(time_line.removeprefix("server time: "))
        assert server_time.tzinfo is not None
        assert before.timestamp() - 1 <= server_time.timestamp() <= after.timestamp() + 1
        offset = re.fullmatch(r"round trip \d+\.\d ms, server clock ([+-]\d+\.\d{3}) s from ours", offset_line)
        assert offset and abs(float(offset[1])) < 1, offset_line

        message = "héllo, tíme server"
        result = run("udp_time_client.py", "--port", str(port), message)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"received {message.encode()!r}\n"

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(b"time\n", ("127.0.0.1", port))  # case and surrounding whitespace do not matter
            reply, sender = sock.recvfrom(65536)
        assert sender == ("127.0.0.1", port)
        assert abs(datetime.fromisoformat(reply.decode()).timestamp() - time.time()) < 5
        output = finish(proc, lines)
    assert_lines_match(
        output[1:],
        [
            r"time asked by 127\.0\.0\.1:\d+",
            rf"echoing {len(message.encode())} bytes to 127\.0\.0\.1:\d+",
            r"time asked by 127\.0\.0\.1:\d+",
            "datagrams in: 3, out: 3, errors: 0",
        ],
    )


def test_udp_time_client_retries_then_gives_up():
    """With nobody answering (the port is held by a socket that never replies), request() sends the
    datagram 1 + --retries times, --timeout apart, then the client exits with code 1 and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        start = time.monotonic()
        result = run("udp_time_client.py", "--port", str(port), "--timeout", "0.2", "--retries", "2")
        elapsed = time.monotonic() - start
        silent.settimeout(0)
        received = []
        while True:
            try:
                received.append(silent.recv(1024))
            except BlockingIOError:
                break
    assert received == [b"TIME"] * 3
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"no reply: no reply from ('127.0.0.1', {port}) after 3 attempts\n"
    assert 0.6 <= elapsed < TIMEOUT


def test_udp_time_client_says_at_once_when_nothing_listens():
    """With no socket on the port, the host refuses the request (ICMP port unreachable): the client says so at
    once instead of resending for --timeout x (1 + --retries) seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as released:
        released.bind(("127.0.0.1", 0))
        port = released.getsockname()[1]
    result = run("udp_time_client.py", "--port", str(port), "--timeout", str(TIMEOUT), "--retries", "3")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"no reply: nothing listens on port {port} of 127.0.0.1 (the host refused the request)\n"


# --- Ctrl-C -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SERVERS)
def test_server_stops_cleanly_on_ctrl_c(script, tmp_path):
    """SIGINT, sent while a client is connected and idle (for UDP, after one exchange), makes each server
    say it is shutting down and exit with code 0 and nothing on stderr; the TCP servers close the idle
    connection. The file receiver, interrupted in the middle of a file, discards what it had of it."""
    args = ["--output-dir", str(tmp_path)] if script == "file_receive.py" else []
    with server(script, *args) as (proc, port, lines), ExitStack() as stack:
        if script == "udp_time_server.py":
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.settimeout(TIMEOUT)
            sock.sendto(b"ping", ("127.0.0.1", port))
            assert sock.recvfrom(1024)[0] == b"ping"  # the server is now in serve_forever()
        else:
            conn = stack.enter_context(connect(port))
            if script == "echo_server.py":
                conn.sendall(b"still here")
                assert recv_exactly(conn, 10) == b"still here"
            elif script == "chat_server.py":
                assert recv_line(conn).startswith(b"* welcome, guest1!")
            else:  # half a file, in one segment: once the receiver has opened the file, it has it all
                conn.sendall(json.dumps({"name": "half.bin", "size": 1000}).encode() + b"\n" + b"x" * 500)
                deadline = time.monotonic() + TIMEOUT
                while not list(tmp_path.iterdir()):
                    assert time.monotonic() < deadline, "the receiver never opened the file"
                    time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        output = finish(proc, lines)
        if script != "udp_time_server.py":
            assert recv_until_eof(conn) == b""  # the server closed the idle connection
    assert INTERRUPTED in output
    if script == "echo_server.py":
        assert output[-2:] == [INTERRUPTED, "connections: 1, messages: 1, bytes in: 10, bytes out: 10, errors: 0"]
    elif script == "udp_time_server.py":
        assert output[-2:] == [INTERRUPTED, "datagrams in: 1, out: 1, errors: 0"]
    elif script == "file_receive.py":
        assert output[-2:] == ["incomplete: half.bin, 500 of 1000 bytes", INTERRUPTED]
        assert list(tmp_path.iterdir()) == []  # the partial file is gone
