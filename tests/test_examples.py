"""Runs every program in examples/ for real, as a subprocess on loopback, and checks what it prints.

Each test runs twice: with rsock, exactly as the example is written (``import rsock as socket``), and with
the stdlib's ``socket`` module standing in for rsock (the same file, run with ``sys.modules["rsock"]``
set to ``socket``). The examples are the socket tutorial's programs, so they must behave the same under
both; a test that fails only under rsock points at an rsock discrepancy.
"""

import ast
import errno
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.subprocesses import started

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 30  # seconds, for every subprocess call and every socket the tests open

SERVERS = ["tcp_echo_server.py", "udp_echo_server.py", "threaded_server.py", "select_server.py"]
CLIENTS = ["tcp_echo_client.py", "udp_echo_client.py"]
ALL_EXAMPLES = [*SERVERS, *CLIENTS, "timeouts_and_errors.py"]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)\n")

# Runs the example named by argv[1] with the stdlib module imported under the name rsock.
STDLIB_SHIM = (
    "import runpy, socket, sys; sys.modules['rsock'] = socket; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.fixture(params=["rsock", "socket"])
def backend(request):
    """The module the examples run over: rsock as written, or the stdlib's socket in its place."""
    return request.param


def command(backend, script, *args):
    """The command line that runs examples/`script` with `args`, from the repository root."""
    path = f"examples/{script}"
    if backend == "rsock":
        return [sys.executable, path, *args]
    return [sys.executable, "-c", STDLIB_SHIM, path, *args]


def run(backend, script, *args):
    """Runs an example to completion; returns the CompletedProcess (text output)."""
    return subprocess.run(command(backend, script, *args), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def read_line(proc, deadline):
    """The first line `proc` writes to stdout, read a byte at a time straight from the pipe so nothing
    after it is buffered here and lost to a later communicate()."""
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([proc.stdout], [], [], remaining)[0]:
            raise AssertionError(f"no complete line from the server within {TIMEOUT}s (got {line!r})")
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:  # the server exited before printing it
            break
        line += byte
    return line.decode()


@contextmanager
def server(backend, script, *args, **popen_args):
    """Starts examples/`script` on port 0 and yields ``(proc, port)`` once it says it is listening."""
    with started(command(backend, script, "--port", "0", *args), **popen_args) as proc:
        line = read_line(proc, time.monotonic() + TIMEOUT)
        match = LISTENING.fullmatch(line)
        if match is None:
            proc.kill()
            _, err = proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"unexpected first line {line!r} from {script}; stderr:\n{err.decode()}")
        port = int(match[1])
        assert port != 0, "the server printed the port it asked for, not the one it got"
        yield proc, port


def finish(proc):
    """Waits for a server to exit by itself; returns its remaining stdout and its stderr as text."""
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr:\n{err.decode()}"
    assert err == b""
    return out.decode()


def run_clients_at_once(backend, script, port, messages):
    """Starts one client per message, all before any is waited for; returns their stdouts in order."""
    with ExitStack() as stack:
        procs = [
            stack.enter_context(started(command(backend, script, "--port", str(port), message))) for message in messages
        ]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, f"client exit code {proc.returncode}; stderr:\n{err.decode()}"
            assert err == b""
            outputs.append(out.decode())
        return outputs


def count_lines(output, text):
    """How many lines of `output` contain `text`."""
    return sum(text in line for line in output.splitlines())


# --- the files themselves ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", ALL_EXAMPLES)
def test_example_is_documented_and_imports_rsock_as_socket(script):
    """Each example exists, opens with a docstring saying how to run it, imports rsock under the name
    socket and never the stdlib's socket, and is listed in examples/README.md with its command."""
    source = (EXAMPLES / script).read_text()
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree)
    assert docstring and f"python examples/{script}" in docstring

    imported = [
        (alias.name, alias.asname) for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    from_socket = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "socket"]
    assert ("rsock", "socket") in imported
    assert not [name for name, _ in imported if name == "socket"] and not from_socket

    assert f"python examples/{script}" in (EXAMPLES / "README.md").read_text()


# --- TCP and UDP echo -------------------------------------------------------------------------------


def test_tcp_echo_server_and_client(backend):
    """Two clients in turn: each gets its whole message back, including one too long for one recv(1024)
    and one that is not ASCII; the server then exits by itself with code 0, having logged both."""
    messages = ["Hello, world", "héllo wörld " * 2000]
    with server(backend, "tcp_echo_server.py", "--max-clients", "2") as (proc, port):
        for message in messages:
            result = run(backend, "tcp_echo_client.py", "--port", str(port), message)
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
            assert result.stdout == f"received {message.encode()!r}\n"
        out = finish(proc)
    assert count_lines(out, "connected by 127.0.0.1:") == 2
    assert count_lines(out, "closed 127.0.0.1:") == 2


def test_udp_echo_server_and_client(backend):
    """Two datagrams: each client gets its message back from the server's address, and the server logs
    each datagram's size and sender, then exits by itself with code 0."""
    messages = ["ping", "héllo " * 500]
    with server(backend, "udp_echo_server.py", "--max-clients", "2") as (proc, port):
        for message in messages:
            result = run(backend, "udp_echo_client.py", "--port", str(port), message)
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
            assert result.stdout == f"received {message.encode()!r} from 127.0.0.1:{port}\n"
        out = finish(proc)
    sizes = [int(size) for size in re.findall(r"^(\d+) bytes from 127\.0\.0\.1:\d+$", out, re.MULTILINE)]
    assert sizes == [len(message.encode()) for message in messages]


def test_udp_client_times_out_without_a_reply(backend):
    """With nobody answering (the port is bound by a socket that never replies), recvfrom() gives up
    after --timeout and the client exits with code 1 and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        start = time.monotonic()
        result = run(backend, "udp_echo_client.py", "--port", str(port), "--timeout", "0.3", "anyone?")
        elapsed = time.monotonic() - start
        assert silent.recv(1024) == b"anyone?"  # the datagram did arrive
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "no reply within 0.3s\n"
    assert 0.3 <= elapsed < TIMEOUT


# --- many clients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["threaded_server.py", "select_server.py"])
def test_many_clients_at_once(backend, script):
    """Six echo clients started together all get their own message back, and the server exits by itself
    with code 0 once all six are served."""
    messages = [f"client {i}: " + "x" * (i * 700) for i in range(6)]
    with server(backend, script, "--max-clients", str(len(messages))) as (proc, port):
        outputs = run_clients_at_once(backend, "tcp_echo_client.py", port, messages)
        out = finish(proc)
    assert outputs == [f"received {message.encode()!r}\n" for message in messages]
    assert count_lines(out, "connected by 127.0.0.1:") == len(messages)
    assert count_lines(out, "closed 127.0.0.1:") == len(messages)


def echo(conn, data):
    """Sends `data` on `conn` and reads until as many bytes came back."""
    conn.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = conn.recv(1024)
        assert chunk, "the server closed the connection"
        received += chunk
    return received


@pytest.mark.parametrize("script", ["threaded_server.py", "select_server.py"])
def test_clients_are_served_concurrently(backend, script):
    """Three connections open together, answered newest first: a server that finished one client before
    taking the next would never answer the third while the first is still open."""
    with server(backend, script, "--max-clients", "3") as (proc, port), ExitStack() as stack:
        conns = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)) for _ in range(3)]
        for i, conn in reversed(list(enumerate(conns))):
            assert echo(conn, f"to connection {i}".encode()) == f"to connection {i}".encode()
        assert echo(conns[0], b"again") == b"again"  # the first is still served after the others
        stack.close()
        out = finish(proc)
    assert count_lines(out, "closed 127.0.0.1:") == 3


def test_plain_echo_server_serves_one_client_at_a_time(backend):
    """The contrast the threaded and select servers are for: while a first client stays connected, the
    plain echo server does not answer a second one; it does once the first leaves."""
    with server(backend, "tcp_echo_server.py", "--max-clients", "2") as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as first:
            assert echo(first, b"first") == b"first"
            second = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            with second:
                second.sendall(b"second")
                second.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    second.recv(1024)
                first.close()
                second.settimeout(TIMEOUT)
                assert second.recv(1024) == b"second"
        out = finish(proc)
    assert count_lines(out, "closed 127.0.0.1:") == 2


# --- stopping a server ------------------------------------------------------------------------------


def default_sigint():
    # A shell that starts pytest in the background hands it SIGINT ignored, and an ignored signal stays
    # ignored across exec: give the server the default disposition so that Python turns Ctrl-C into
    # KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("script", SERVERS)
def test_server_stops_cleanly_on_ctrl_c(backend, script):
    """Without --max-clients a server runs until interrupted: SIGINT, sent while it waits for a client
    (and for the TCP servers while a connected client is idle), makes it print that it is shutting down
    and exit with code 0 and nothing on stderr."""
    with server(backend, script, preexec_fn=default_sigint) as (proc, port), ExitStack() as stack:
        if script != "udp_echo_server.py":
            conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
            assert echo(conn, b"still here") == b"still here"  # the server is now inside its client loop
        else:
            time.sleep(0.2)  # let it reach recvfrom(); an interrupt anywhere in main() is handled anyway
        proc.send_signal(signal.SIGINT)
        out = finish(proc)
    assert out.splitlines()[-1] == "interrupted, shutting down"


# --- timeouts and errors ----------------------------------------------------------------------------


def test_timeouts_and_errors(backend):
    """Each of the four cases raises the exception it is about, and the script prints it: a timeout after
    about --timeout seconds, ECONNREFUSED, EAGAIN from a non-blocking recv(), and a gaierror."""
    result = run(backend, "timeouts_and_errors.py", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout

    timed_out = re.fullmatch(r"timeout: recv\(\) raised TimeoutError after (\d+\.\d\d)s: timed out", lines[0])
    assert timed_out, lines[0]
    assert 0.29 <= float(timed_out[1]) < 5

    refused = f"refused: connect() raised ConnectionRefusedError: [Errno {errno.ECONNREFUSED}] "
    assert lines[1].startswith(refused), lines[1]

    would_block = f"non-blocking: recv() raised BlockingIOError: [Errno {errno.EAGAIN}] "
    assert lines[2].startswith(would_block), lines[2]

    assert re.fullmatch(
        r"unknown host: connect\(\) raised gaierror for no-such-host\.invalid: \[Errno -\d+\] .+", lines[3]
    ), lines[3]
