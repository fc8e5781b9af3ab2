"""Runs the ``rsock`` command line for real: each command as a subprocess (``python -m rsock ...``) on loopback,
checking what it prints, what arrives and its exit code (0 ok, 1 runtime failure, 2 usage error, 130 Ctrl-C
for commands with a finite job; servers exit 0 on Ctrl-C / SIGTERM).

Servers are started with ``--port 0`` and the port read back from their ``listening on`` line. Every subprocess
call and every wait for output has a deadline, and any process a test started that is still running when the
test ends is killed, by its pid.
"""

import errno
import hashlib
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import rsock
from rsock import _cli, _demo
from tests import subprocesses
from tests.subprocesses import ROOT, TIMEOUT, Lines, default_sigint, finish, listening_port, say

COMMANDS = ["demo", "echo-server", "chat-server", "connect", "send-file", "recv-file", "bench"]

# Runs `python -m rsock ARGS` as if tqdm were not installed (importing it raises ImportError).
WITHOUT_TQDM = "import runpy, sys; sys.modules['tqdm'] = None; sys.argv[0] = 'rsock'; runpy.run_module('rsock', run_name='__main__')"  # noqa: E501


def rsock_cmd(*args, prefix=None):
    return [*(prefix or [sys.executable, "-m", "rsock"]), *map(str, args)]


def run(*args, input=b"", prefix=None, timeout=TIMEOUT):
    """Runs a command to completion (stdin `input`, bytes); returns the CompletedProcess (bytes output)."""
    return subprocess.run(rsock_cmd(*args, prefix=prefix), cwd=ROOT, input=input, capture_output=True, timeout=timeout)


@contextmanager
def started(*args, stdin=subprocess.DEVNULL, prefix=None):
    """A Popen of ``rsock ARGS`` (binary pipes for stdout and stderr, SIGINT at its default), killed on the way out
    if still running."""
    with subprocesses.started(rsock_cmd(*args, prefix=prefix), stdin=stdin, preexec_fn=default_sigint) as proc:
        yield proc


@contextmanager
def server(*args):
    """Starts ``rsock ARGS --port 0``; yields ``(proc, port, lines)`` once it says it is listening."""
    with started(*args, "--port", "0") as proc:
        lines = Lines(proc)
        yield proc, listening_port(proc, lines, args), lines


def stop(proc, lines, sig=signal.SIGINT):
    """Sends `sig` to a server this test started; returns (its remaining stdout lines, its stderr) once it has
    exited, which it must do with code 0."""
    proc.send_signal(sig)
    out = lines.rest()
    proc.wait(timeout=TIMEOUT)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, f"exit code {proc.returncode} after {sig!r}; stderr:\n{err}"
    return out, err


def assert_no_traceback(stderr):
    assert "Traceback" not in stderr, stderr


@contextmanager
def port_taken(udp=False):
    """A port on 127.0.0.1 held by a stdlib socket (listening, for TCP) for the duration; yields the port."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if not udp:
            holder.listen()
        yield holder.getsockname()[1]


@contextmanager
def closed_port(udp=False):
    """A port on 127.0.0.1 where nothing answers: for TCP, bound by a socket that does not listen (connecting is
    refused); for UDP, bound and closed again at once."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        if udp:
            holder.close()
        yield port


@contextmanager
def peer(handle, receive_buffer=None):
    """A stdlib TCP server on 127.0.0.1 that accepts one connection and runs `handle(conn)` on it in a thread (the
    connection has the usual timeout, and `receive_buffer` as its SO_RCVBUF if given); yields the port, and waits
    for `handle` to return on the way out."""
    with socket.socket() as listener:
        if receive_buffer:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # accepted sockets inherit it
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(TIMEOUT)

        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                handle(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(TIMEOUT)


def read_until(stream, text):
    """Reads `stream` (a pipe from a process this test started) until `text` has appeared; returns what was read."""
    deadline = time.monotonic() + TIMEOUT
    seen = b""
    while text.encode() not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise AssertionError(f"no {text!r} within {TIMEOUT}s; read so far: {seen!r}")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"output ended without {text!r}; read: {seen!r}")
        seen += chunk
    return seen.decode()


def receive_answer(port, request):
    """Connects to a recv-file, sends `request` (bytes) and returns its whole answer once it has closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.decode()


# --- help, usage errors -----------------------------------------------------------------------------------


def test_console_script_target_is_main():
    """``python -m rsock`` and the ``rsock`` console script (rsock.__main__:main) run the same function."""
    from rsock import __main__

    assert __main__.main is _cli.main


def test_installed_console_script():
    """Once rsock is installed with its console script, ``rsock`` runs the same command line."""
    script = Path(sys.executable).parent / "rsock"
    if not script.exists():
        pytest.skip("the rsock console script is not installed yet")
    result = subprocess.run([script, "--version"], capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"rsock {rsock.__version__}\n"
    assert subprocess.run([script, "nosuch"], capture_output=True, timeout=TIMEOUT).returncode == 2


def test_top_level_help_lists_every_command_and_the_exit_codes():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith("usage: rsock ")
    for command in COMMANDS:
        assert re.search(rf"^    {re.escape(command)}\b", out, re.MULTILINE), (command, out)
    assert "exit codes:" in out and "130" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    """Each command's --help exits 0 with its own usage line, a description and the exit codes."""
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith(f"usage: rsock {command} ")
    assert "exit codes:" in out
    assert len(out.split("\n\n")[1]) > 40, "the description is missing"


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.decode() == f"rsock {rsock.__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["echo-server", "--port", "abc"], "argument --port: invalid port 'abc'"),
        (["echo-server", "--port", "70000"], "argument --port: invalid port '70000'"),
        (["echo-server", "--framing", "bogus"], "invalid framing 'bogus'"),
        (["echo-server", "--udp", "--framing", "line"], "--framing applies to TCP only"),
        (["chat-server", "--port", "-1"], "argument --port: invalid port '-1'"),
        (["connect", "127.0.0.1"], "the following arguments are required: PORT"),
        (["connect", "127.0.0.1", "0"], "argument PORT: invalid port '0'"),
        (["connect", "--timeout", "0", "127.0.0.1", "80"], "argument --timeout: invalid duration '0'"),
        (["connect", "--timeout", "1e10", "127.0.0.1", "80"], "argument --timeout: invalid duration '1e10'"),
        (["send-file", "--timeout", "1e10", "{tmp}/a-file"], "argument --timeout: invalid duration '1e10'"),
        (["recv-file", "--timeout", "1e10"], "argument --timeout: invalid duration '1e10'"),
        (["send-file"], "the following arguments are required: PATH"),
        (["send-file", "{tmp}/missing.bin"], "missing.bin: no such file"),
        (["send-file", "{tmp}"], "is not a file"),
        (["recv-file", "--count", "0"], "argument --count: invalid count '0'"),
        (["recv-file", "--output-dir", "{tmp}/a-file"], "is not a directory"),
        (["bench", "--fast"], "unrecognized arguments: --fast"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    """A usage error exits 2 before doing anything, printing the command's usage line and what was wrong."""
    (tmp_path / "a-file").write_text("not a directory")
    result = run(*(arg.format(tmp=tmp_path) for arg in args))
    err = result.stderr.decode()
    assert result.returncode == 2, (result.returncode, err)
    assert err.startswith("usage: rsock"), err
    assert message in err, err
    assert result.stdout == b""
    assert_no_traceback(err)


def test_a_path_that_may_not_be_looked_at_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """A file under a directory that may not be searched: send-file says so in one line (exit 2), where pathlib
    raised PermissionError with a traceback. (Root searches any directory, so the refusal is the stat's.)"""
    locked = tmp_path / "locked" / "photo.jpg"
    real_stat = Path.stat

    def refused_under_locked(path, **kwargs):
        if path.parent == locked.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", refused_under_locked)
    with pytest.raises(SystemExit) as exited:
        _cli.main(["send-file", str(locked)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: {locked}: permission denied\n")


# --- runtime failures: exit 1 with a clear message ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "udp"),
    [(["echo-server"], False), (["echo-server", "--udp"], True), (["chat-server"], False), (["recv-file"], False)],
)
def test_port_in_use(args, udp):
    """A server whose port is taken says which address, suggests --port 0 and exits 1, printing no listening line."""
    with port_taken(udp) as port:
        result = run(*args, "--port", port)
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, err)
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "already in use" in err and "--port 0" in err
    assert err.count("\n") == 1, err  # one line
    assert result.stdout == b""


@pytest.mark.parametrize("udp", [False, True])
def test_connect_refused(udp):
    """Nothing listening: connect names the address, says it was refused and exits 1."""
    with closed_port(udp) as port:
        result = run("connect", *(["--udp"] if udp else []), "127.0.0.1", port, input=b"anyone there?\n")
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, err)
    assert err.startswith("rsock connect: error: ") and f"127.0.0.1:{port}" in err and "refused" in err, err
    assert_no_traceback(err)


def test_send_file_with_no_receiver(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 1000)
    with closed_port() as port:
        result = run("send-file", source, "--port", port, "-q")
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, err)
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in err


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ("reads everything, never answers", "the receiver did not answer within 0.5 s after the whole file was sent"),
        ("never reads", "sending to 127.0.0.1:{port} timed out: the receiver took no data for 0.5 s"),
    ],
)
def test_send_file_says_which_step_timed_out(tmp_path, receiver, message):
    """--timeout: a receiver that takes the whole file and never answers, or one that stops reading, is not reported
    as a connection that could not be made."""
    data = bytes(16 * 1024 * 1024)  # more than both ends' socket buffers hold
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    sender_done = threading.Event()

    def receive(conn):
        if receiver == "reads everything, never answers":
            got = 0
            while got < len(data) and (chunk := conn.recv(1 << 20)):
                got += len(chunk)
        sender_done.wait(TIMEOUT)  # the connection stays open until send-file has given up

    with peer(receive, receive_buffer=64 * 1024) as port:
        result = run("send-file", source, "--port", port, "--timeout", "0.5", "-q")
        sender_done.set()
    err = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, err)
    assert err == f"rsock send-file: error: {message.format(port=port)}\n"


# --- echo-server and connect ---------------------------------------------------------------------------------


def test_tcp_echo_server_and_connect():
    """Everything connect reads from stdin (several lines, binary, more than one read's worth) comes back on its
    stdout; connect exits 0 once stdin has ended and the server has closed. The server then stops on Ctrl-C with
    exit code 0 and counters that add up."""
    data = b"hello\nworld\n" + bytes(range(256)) * 1024
    with server("echo-server") as (proc, port, lines):
        result = run("connect", "127.0.0.1", port, input=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == data
        assert result.stderr == b""
        out, err = stop(proc, lines)
    assert out == [f"listening on 127.0.0.1:{port}"]
    assert "interrupted, shutting down" in err
    assert f"bytes_in {len(data)}, bytes_out {len(data)}" in err and "accepted 1," in err, err


@pytest.mark.parametrize(
    ("framing", "data"), [("line", b"one\ntwo\nthree\n"), ("delimiter:\\r\\n", b"one\r\ntwo\r\nthree\r\n")]
)
def test_tcp_echo_server_framing_and_sigterm(framing, data):
    """--framing: each line (or delimited message) is one message, echoed with its delimiter; SIGTERM stops the
    server cleanly (exit 0)."""
    with server("echo-server", "--framing", framing) as (proc, port, lines):
        result = run("connect", "127.0.0.1", port, input=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == data
        _, err = stop(proc, lines, signal.SIGTERM)
    assert "messages 3," in err, err


def test_udp_echo_server_and_connect():
    """--udp: each line goes as one datagram and each echo is printed; connect exits 0 --wait seconds after stdin
    ends. The server counted one datagram per line."""
    with server("echo-server", "--udp") as (proc, port, lines):
        started_at = time.monotonic()
        result = run("connect", "--udp", "--wait", "0.5", "127.0.0.1", port, input=b"hello\nworld\nno newline")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello\nworld\nno newline"
        assert time.monotonic() - started_at < 10
        _, err = stop(proc, lines)
    assert "datagrams_in 3, datagrams_out 3" in err, err


def test_connect_ctrl_c_exits_130():
    """connect with stdin still open waits for the peer; Ctrl-C ends it with exit code 130 and no traceback."""
    with server("echo-server") as (srv, port, srv_lines):
        with started("connect", "127.0.0.1", port, stdin=subprocess.PIPE) as proc:
            lines = Lines(proc)
            proc.stdin.write(b"ping\n")
            proc.stdin.flush()
            assert lines.next() == "ping"  # connected, and waiting for more from the peer
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=TIMEOUT)
            err = proc.stderr.read().decode()
            assert proc.returncode == 130, (proc.returncode, err)
            assert_no_traceback(err)
        stop(srv, srv_lines)


def test_connect_exits_0_when_the_peer_answers_and_closes_without_reading_the_input():
    """A peer that answers and closes while connect's input is still unread resets the connection: the answer is
    printed and connect exits 0 (the peer closed first), whether the reset meets connect's receiving side or its
    sending side (the half-close at the end of stdin)."""

    def answer_and_close(conn):
        conn.recv(1, socket.MSG_PEEK)  # connect's input has arrived: closing now leaves it unread, hence a reset
        conn.sendall(b"hi\n")

    for _ in range(5):  # the reset comes before or after the half-close as the race goes: a few runs see both
        with peer(answer_and_close) as port:
            result = run("connect", "127.0.0.1", port, input=b"data\n")
        assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b"")


def test_connect_with_stdin_closed_prints_what_the_peer_sends():
    """Started with stdin closed (`<&-`), connect has no input: it half-closes at once and prints what the peer
    sends, never reading the connection as its stdin and sending the peer its own data back."""
    received = []

    def greet(conn):
        conn.sendall(b"hello\n")
        received.append(conn.recv(100))

    with peer(greet) as port:
        result = subprocess.run(
            rsock_cmd("connect", "127.0.0.1", port),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.close(0),
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hello\n", b"")
    assert received == [b""]  # end of input, and nothing else


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_connect_with_stdout_closed_drops_what_the_peer_sends(udp):
    """Started with stdout closed (`>&-`), connect still sends its input and exits 0, dropping the replies (it raised
    AttributeError on the first one)."""
    with server("echo-server", *(["--udp"] if udp else [])) as (proc, port, lines):
        closed_stdout = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "rsock"]
        udp_args = ["--udp", "--wait", "0.3"] if udp else []
        result = run("connect", *udp_args, "127.0.0.1", port, input=b"hi\n", prefix=closed_stdout)
        _, err = stop(proc, lines)
    assert (result.returncode, result.stderr) == (0, b"")
    assert ("datagrams_in 1" if udp else "bytes_in 3,") in err, err


def test_connect_udp_refuses_a_line_that_with_its_newline_is_too_long_for_a_datagram():
    """The newline goes out with its line: a line of the largest payload's length is one byte too long, and the
    message says the newline counts (it said 'at most 65507 bytes' of a 65507-byte line)."""
    with server("echo-server", "--udp") as (proc, port, lines):
        result = run("connect", "--udp", "127.0.0.1", port, input=b"x" * _cli.MAX_DATAGRAM + b"\n")
        stop(proc, lines)
    assert result.returncode == 1
    assert result.stderr.decode().endswith(
        f"a line of input is too long for one datagram (at most {_cli.MAX_DATAGRAM} bytes, its newline included)\n"
    )


# --- chat-server --------------------------------------------------------------------------------------------


@contextmanager
def chat_member(port, nick):
    """A ``connect`` to the chat room with stdin a pipe, renamed to `nick`; yields (proc, lines, guest name)."""
    with started("connect", "127.0.0.1", port, stdin=subprocess.PIPE) as proc:
        lines = Lines(proc)
        guest = lines.expect(re.compile(r"\* welcome, (guest\d+)! others here: \d+\. .*"))[1]
        say(proc, f"/nick {nick}")
        lines.expect(f"* you are now {nick}")
        yield proc, lines, guest


def test_chat_server_with_two_connect_clients():
    """Alice and Bob join with ``rsock connect``, each sees the other's lines (and never their own); Bob leaves
    with /quit, stdin still open, and his connect exits 0; Alice leaves by ending her input and exits 0. The
    server logs it all and stops on Ctrl-C with exit code 0."""
    with ExitStack() as stack:
        srv, port, srv_lines = stack.enter_context(server("chat-server"))
        alice, alice_lines, alice_guest = stack.enter_context(chat_member(port, "alice"))
        bob, bob_lines, bob_guest = stack.enter_context(chat_member(port, "bob"))
        alice_lines.expect(f"* {bob_guest} is now bob")

        say(alice, "hello bob")
        bob_lines.expect("alice: hello bob")
        say(bob, "hi alice")
        alice_lines.expect("bob: hi alice")

        say(bob, "/quit")  # the server closes the connection: connect exits although its stdin is open
        bob_out, _ = finish(bob, bob_lines)
        alice_lines.expect("* bob left")
        alice.stdin.close()  # end of input: connect half-closes, the server ends the connection
        alice_out, _ = finish(alice, alice_lines)
        srv_lines.expect("alice left")
        _, server_err = stop(srv, srv_lines)

    assert not [line for line in alice_out if line.startswith("alice: ")], alice_out
    assert not [line for line in bob_out if line.startswith("bob: ")], bob_out
    assert "alice: hello bob" in bob_out and "bob: hi alice" in alice_out
    assert srv_lines.lines[:1] == [f"listening on 127.0.0.1:{port}"]
    log = "\n".join(srv_lines.lines)
    for line in [f"{alice_guest} is now alice", f"{bob_guest} is now bob", "bob left", "alice left"]:
        assert line in log, log
    assert "interrupted, shutting down" in server_err
    assert "stats: accepted 2, active 0," in server_err, server_err


def test_chat_server_serves_on_when_its_stdout_is_closed():
    """With its stdout gone (`rsock chat-server | head -1`), the chat server drops its log lines and serves on:
    members are welcomed and told of each other's arrival and departure; Ctrl-C still exits 0, with no traceback."""
    with server("chat-server") as (proc, port, _):
        proc.stdout.close()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first:
            first_lines = first.makefile("rb")
            assert first_lines.readline().startswith(b"* welcome, guest")
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as second:
                assert second.makefile("rb").readline().startswith(b"* welcome, guest")
                assert re.fullmatch(rb"\* guest\d+ joined\n", first_lines.readline())
            assert re.fullmatch(rb"\* guest\d+ left\n", first_lines.readline())
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert proc.returncode == 0, (proc.returncode, err)
    assert_no_traceback(err)


# --- send-file and recv-file --------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", ["tqdm", "percentage"])
def test_send_file_and_recv_file(tmp_path, progress):
    """A few MiB of random data arrive intact: the received file has the same SHA-256 (checked here, and by
    send-file against the receiver's answer), an existing file of the same name is left alone (the new one is
    NAME-1), progress reaches 100% on stderr, no temporary file remains and recv-file --count 1 exits 0."""
    if progress == "tqdm":
        pytest.importorskip("tqdm")
        prefix = None
    else:
        prefix = [sys.executable, "-c", WITHOUT_TQDM]
    data = os.urandom(3 * 1024 * 1024 + 12345)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "random.bin"
    source.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "random.bin").write_bytes(b"already here")

    with server("recv-file", "--output-dir", inbox, "--count", "1") as (proc, port, lines):
        result = run("send-file", source, "--port", port, prefix=prefix)
        assert result.returncode == 0, result.stderr
        received_out, _ = finish(proc, lines)

    assert result.stdout.decode().splitlines() == [
        f"sent random.bin: {len(data)} bytes, sha256 {digest}",
        f"receiver: ok {len(data)} {digest}",
    ]
    progress_text = result.stderr.decode()
    assert "100%" in progress_text, progress_text
    if progress == "percentage":
        assert f"random.bin: 100% of {len(data)} bytes" in progress_text
    assert re.fullmatch(
        rf"received {re.escape(str(inbox / 'random-1.bin'))} \({len(data)} bytes\) from 127\.0\.0\.1:\d+, "
        rf"sha256 {digest}",
        received_out[1],
    ), received_out
    assert hashlib.sha256((inbox / "random-1.bin").read_bytes()).hexdigest() == digest
    assert (inbox / "random.bin").read_bytes() == b"already here"
    assert sorted(p.name for p in inbox.iterdir()) == ["random-1.bin", "random.bin"]


def test_recv_file_reports_an_incomplete_transfer(tmp_path):
    """A sender that announces 100 bytes and hangs up after 10: recv-file says so on stderr, keeps no file (nor
    its temporary) and, with --count 1, exits 1."""
    with server("recv-file", "--output-dir", tmp_path, "--count", "1", "-q") as (proc, port, lines):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
            conn.sendall(b'{"name": "short.bin", "size": 100}\n' + b"x" * 10)
        lines.rest()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert "incomplete: short.bin" in err and "10 of 100 bytes" in err, err
    assert list(tmp_path.iterdir()) == []


def test_recv_file_is_not_stopped_by_a_temporary_left_under_its_own_pid(tmp_path):
    """A receiver killed mid-transfer leaves its '.rsock-PID-N...part' behind, and PIDs are reused: a new receiver
    that got the same PID still saves its files, and leaves the stale temporaries as they are."""
    source = tmp_path / "note.txt"
    source.write_bytes(b"fresh\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with server("recv-file", "--output-dir", inbox, "--count", "1", "-q") as (proc, port, lines):
        stale = [inbox / f".rsock-{proc.pid}-{n}.part" for n in (1, 2, 3)]
        for path in stale:
            path.write_bytes(b"stale")
        result = run("send-file", source, "--port", port)
        assert result.returncode == 0, result.stderr
        finish(proc, lines)
    assert (inbox / "note.txt").read_bytes() == b"fresh\n"
    assert all(path.read_bytes() == b"stale" for path in stale)
    assert sorted(p.name for p in inbox.iterdir()) == sorted(["note.txt", *(path.name for path in stale)])


@pytest.mark.parametrize(
    "header",
    [
        b'{"name": "a\\u0000b", "size": 1}',
        b'{"name": "\\ud800x", "size": 1}',
        b'{"name": "x\\udcff.bin", "size": 1}',  # a surrogate os.fsencode() turns into the byte 0xff
        b'{"name": "con\\nsole.txt", "size": 1}',
        b'{"name": "\\u001b]0;title\\u0007\\u001b[2Jevil.txt", "size": 1}',
        b"[" * 4000,  # deeper than the interpreter's recursion limit, shorter than MAX_HEADER
        b'{"name": "yes.bin", "size": true}',
    ],
    ids=[
        "NUL in the name",
        "lone surrogate in the name",
        "escaping surrogate in the name",
        "line break in the name",
        "terminal escapes in the name",
        "deeply nested JSON",
        "boolean size",
    ],
)
def test_recv_file_answers_a_bad_header_with_an_error(tmp_path, header):
    """A header recv-file cannot use gets the protocol's 'error: WHY' answer and counts as a failed transfer, with
    no traceback and no file (nor temporary) left behind."""
    with server("recv-file", "--output-dir", tmp_path, "--count", "1", "-q") as (proc, port, lines):
        answer = receive_answer(port, header + b"\nx")
        lines.rest()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert answer.startswith("error: ") and answer.endswith("\n") and answer.count("\n") == 1, answer
    assert proc.returncode == 1, (proc.returncode, err)
    assert "1 transfer(s) failed, 0 succeeded" in err, err
    assert_no_traceback(err)
    assert list(tmp_path.iterdir()) == []


def test_recv_file_stopped_mid_transfer_reports_it_cut_off_and_exits_0(tmp_path):
    """Ctrl-C while a file is coming in and another client has sent nothing yet: the transfer is reported as cut off
    by the stop, not as the sender's doing nor as a failure; its partial file is removed, the idle connection goes
    unreported, and recv-file prints its stats and exits 0, as the servers do on Ctrl-C. (It exited 1, saying the
    idle client had closed the connection.)"""
    with server("recv-file", "--output-dir", tmp_path, "-q") as (proc, port, lines):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sending,
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT),
        ):
            sending.sendall(b'{"name": "big.bin", "size": 10}\nabc')
            deadline = time.monotonic() + TIMEOUT
            while not list(tmp_path.glob(".rsock-*.part")):  # the header taken (the bytes with it, in one call)
                assert time.monotonic() < deadline, "recv-file never started the file"
                time.sleep(0.01)
            _, err = stop(proc, lines)
    assert re.search(r"cut off by the stop: big\.bin from 127\.0\.0\.1:\d+, 3 of 10 bytes\n", err), err
    assert "1 transfer(s) cut off by the stop" in err and "stats: accepted 2," in err, err
    assert "failed" not in err and "before sending a file" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_recv_file_takes_long_names_and_dotfiles(tmp_path):
    """A name as long as the file system allows, and a name starting with a dot, are received under that name; a
    name one byte longer is refused up front."""
    source = tmp_path / "data.txt"
    source.write_bytes(b"some data")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    longest = "M" * os.pathconf(inbox, "PC_NAME_MAX")
    with server("recv-file", "--output-dir", inbox, "--count", "3", "-q") as (proc, port, lines):
        for name in (longest, ".hidden"):
            result = run("send-file", source, "--name", name, "--port", port, "-q")
            assert result.returncode == 0, (name, result.stderr)
        answer = receive_answer(port, b'{"name": "%s", "size": 1}\nx' % (longest + "M").encode())
        lines.rest()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert answer.startswith("error: "), answer
    assert proc.returncode == 1 and "1 transfer(s) failed, 2 succeeded" in err, (proc.returncode, err)
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden", longest]
    assert (inbox / longest).read_bytes() == (inbox / ".hidden").read_bytes() == b"some data"


def test_recv_file_answers_when_its_stdout_is_closed(tmp_path):
    """With its stdout gone (`rsock recv-file ... | head -1`), recv-file drops its 'received' lines but still saves
    the file, answers 'ok' and exits 0."""
    source = tmp_path / "data.txt"
    source.write_bytes(b"some data")
    inbox = tmp_path / "inbox"
    with server("recv-file", "--output-dir", inbox, "--count", "1", "-q") as (proc, port, _):
        proc.stdout.close()
        result = run("send-file", source, "--port", port, "-q")
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert result.returncode == 0, result.stderr
    assert proc.returncode == 0, (proc.returncode, err)
    assert_no_traceback(err)
    assert (inbox / "data.txt").read_bytes() == b"some data"


def test_recv_file_count_lets_transfers_in_flight_finish(tmp_path):
    """--count 1: once one transfer has ended, recv-file turns new connections away with an 'error:' answer, but a
    transfer already under way goes on to the end and is answered 'ok'; then recv-file exits 0."""
    source = tmp_path / "quick.txt"
    source.write_bytes(b"quick")
    inbox = tmp_path / "inbox"
    slow_data = b"0123456789" * 2
    cmd = ("recv-file", "--output-dir", inbox, "--count", "1", "--port", "0")
    with started(*cmd, prefix=[sys.executable, "-c", WITHOUT_TQDM]) as proc:
        lines = Lines(proc)
        port = listening_port(proc, lines, cmd)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as slow:
            slow.sendall(b'{"name": "slow.bin", "size": 20}\n' + slow_data[:10])
            read_until(proc.stderr, "slow.bin: 50% of 20 bytes")  # under way

            assert run("send-file", source, "--port", port, "-q").returncode == 0  # the first transfer to end
            read_until(proc.stderr, "(--count 1): taking no more files, waiting for the 1 under way")
            late_answer = receive_answer(port, b"")

            slow.sendall(slow_data[10:])
            slow_answer = slow.makefile("rb").readline().decode()
        lines.rest()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert late_answer.startswith("error: "), late_answer
    assert slow_answer == f"ok 20 {hashlib.sha256(slow_data).hexdigest()}\n"
    assert proc.returncode == 0, (proc.returncode, err)
    assert sorted(p.name for p in inbox.iterdir()) == ["quick.txt", "slow.bin"]


# --- demo and bench -----------------------------------------------------------------------------------------


# Runs the rsock._demo server process named by argv[1] and prints its pid once it serves; exits 130 on Ctrl-C, as
# demo and bench do.
DEMO_SERVER = """
import sys
from rsock import _demo
try:
    with getattr(_demo, sys.argv[1])() as served:
        print(served.pid, flush=True)
        sys.stdin.read()
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize(
    "factory", ["rsock_tcp_echo_server", "stdlib_tcp_echo_server", "rsock_udp_echo_server", "stdlib_udp_echo_server"]
)
def test_ctrl_c_interrupts_demo_and_bench_but_not_their_server_processes(factory):
    """Ctrl-C at a terminal sends SIGINT to the whole foreground process group. The server processes of demo and
    bench are not interrupted by it, which would print a traceback; their parent is, and ends them."""
    cmd = [sys.executable, "-c", DEMO_SERVER, factory]
    # A session of its own, so that the process group this test signals holds only what it started.
    with subprocesses.started(cmd, stdin=subprocess.PIPE, preexec_fn=default_sigint, start_new_session=True) as proc:
        child = int(Lines(proc).next())
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode()
    assert (proc.returncode, err) == (130, "")
    assert not Path(f"/proc/{child}").exists()


@pytest.mark.parametrize("factory", ["rsock_tcp_echo_server", "stdlib_udp_echo_server"])
def test_demo_servers_report_their_cpu_time_finer_than_clock_ticks(factory):
    """The demo's server CPU column: each server process answers with its own clock (time.process_time()). /proc's
    clock ticks (10 ms) are coarse against a run's tens of milliseconds: every value was a multiple of a tick, so
    the column showed a handful of values, and ratios between servers moved by a fifth from run to run."""
    tick = 1 / os.sysconf("SC_CLK_TCK")
    with getattr(_demo, factory)() as served:
        readings = [served.cpu_seconds() for _ in range(5)]
    assert all(0 < reading < 60 for reading in readings), readings
    assert readings == sorted(readings)
    assert any(abs(reading / tick - round(reading / tick)) > 1e-6 for reading in readings), readings


def test_a_demo_server_that_died_reads_as_nan_and_ends_quietly():
    """The CPU time of a server process that died is NaN, and leaving its context raises nothing: the unanswered
    question left in its stdin's buffer was flushed into the broken pipe as the context closed it (BrokenPipeError)."""
    with _demo.rsock_tcp_echo_server() as served:
        os.kill(served.pid, signal.SIGKILL)
        os.waitid(os.P_PID, served.pid, os.WEXITED | os.WNOWAIT)  # dead, left for the context to reap
        assert math.isnan(served.cpu_seconds())


def test_demo():
    """The README's command: exits 0 within 30 s, its first lines the tutorial's round trips, then the tables."""
    started_at = time.monotonic()
    result = run("demo")
    elapsed = time.monotonic() - started_at
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr)
    assert elapsed < 30
    lines = out.splitlines()
    assert lines[0] == f"rsock {rsock.__version__}: the socket tutorial with `import rsock as socket`"
    assert lines[2] == "TCP echo on 127.0.0.1: sent b'hello, rsock', got back b'hello, rsock'"
    assert lines[3] == "UDP echo on 127.0.0.1: sent b'hello, rsock', got back b'hello, rsock'"
    assert re.search(r"^  rsock\.TcpServer .* [\d,]+/s +[\d.]+ µs/req +[\d.]+$", out, re.MULTILINE), out
    assert re.search(r"^  socketserver\.ThreadingTCPServer .* [\d,]+/s +[\d.]+ µs/req +1\.00$", out, re.MULTILINE), out
    assert lines[-1] == "all round trips matched"


def test_bench_quick():
    """bench --quick exits 0 within 30 s with a rate and a ratio for each measurement."""
    result = run("bench", "--quick")
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr)
    rows = re.findall(r"^  (TCP|UDP) .*? +[\d,]+/s +[\d,]+/s +[\d.]+(?:   server CPU .*)?$", out, re.MULTILINE)
    assert len(rows) == 6, out
    assert out.splitlines()[-1] == "every reply matched what was sent"
