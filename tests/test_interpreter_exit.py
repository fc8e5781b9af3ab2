"""A script that only imports rsock exits normally after its server has served: rsock's I/O thread
must never be taken for the main thread (threading would then wait for it at exit, for ever)."""

import os
import re
import subprocess
import sys
import time

import pytest

import rsock

SCRIPT = """
import sys
import time
assert "threading" not in sys.modules  # the check below is only meaningful if rsock imports it first
import rsock, socket

server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
with socket.create_connection(server.address, timeout=5) as client:
    client.sendall(b"hi")
    assert client.recv(10) == b"hi"
server.stop()
import threading
assert threading.main_thread().ident == threading.get_ident(), "the I/O thread was taken for the main thread"
print("done")
"""


def test_script_with_a_server_exits_by_itself():
    # -S: no site-packages .pth files, which could import threading first and hide the problem; rsock's
    # own location is put on the path instead.
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(rsock.__file__))}
    result = subprocess.run([sys.executable, "-S", "-c", SCRIPT], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"


EXIT_HOOK = """
import sys
import time
import rsock

server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
rsock._rsock._stop_all_servers(float(sys.argv[1]))
print(server.running)
"""


def test_the_exit_hook_takes_a_timeout_no_clock_can_reach():
    """The atexit hook stops every running server and waits up to its timeout; an infinite or huge one waits without
    a limit (the server stops at once here), and NaN or a negative one not at all. None panics."""
    for timeout in ["inf", "1e300", "nan", "-1", "1"]:
        result = subprocess.run([sys.executable, "-c", EXIT_HOOK, timeout], capture_output=True, text=True, timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (0, "False\n", ""), timeout


MAIN_GLOBALS = """
import sys
import time
import rsock

log = open(sys.argv[1], "w")
log.write("written, never flushed: the file is closed when the module's globals go")


class Announces:
    def __del__(self):
        print("collected")


kept = Announces()
server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
server.stop()
"""


def test_main_module_globals_are_released_at_exit_after_a_server_ran(tmp_path):
    """As without rsock: an open file in a global is flushed and closed at exit, and a global's __del__ runs. Once
    rsock's io thread had handed the GIL on, a function it keeps held __main__'s globals, and neither happened."""
    path = tmp_path / "log.txt"
    result = subprocess.run([sys.executable, "-c", MAIN_GLOBALS, str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, path.read_text()) == (
        "collected\n",
        "written, never flushed: the file is closed when the module's globals go",
    )


SUBINTERPRETER = """
import _testcapi, rsock, socket

server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)
server.start()
print(_testcapi.run_in_subinterp("import rsock"))
with socket.create_connection(server.address, timeout=5) as client:
    client.sendall(b"still served")
    print(client.recv(100).decode())
server.stop()
"""


def test_a_subinterpreter_cannot_import_rsock_nor_stop_the_main_interpreters_servers():
    """rsock's runtime and servers are the process's: a subinterpreter's import is an ImportError (pyo3 refuses one
    only where the module is made afresh for it; Python 3.11 handed it a copy, and its exit stopped every server)."""
    pytest.importorskip("_testcapi", reason="the subinterpreter is made with CPython's _testcapi")
    result = subprocess.run([sys.executable, "-c", SUBINTERPRETER], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["-1", "still served"]
    assert "ImportError: rsock does not support subinterpreters" in result.stderr


STARTED_AT_SHUTDOWN = """
import rsock


class StartsAServer:
    def __init__(self):
        self.me = self  # a cycle: collected as the interpreter shuts down
        self.server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data)

    def __del__(self):
        try:
            self.server.start()
            print("started")
        except RuntimeError as exc:
            print(exc)


kept = StartsAServer()
"""


def test_a_server_started_as_the_interpreter_shuts_down_is_refused():
    """As threading refuses a thread then: its handlers could never run. It was started, and answered nothing."""
    result = subprocess.run([sys.executable, "-c", STARTED_AT_SHUTDOWN], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "can't start a server at interpreter shutdown\n"), result.stderr


BUSY_AT_EXIT = """
import logging, socket, sys, time
import rsock

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

def busy(*args):
    print("handler running", flush=True)
    while True:
        sum(range(1000))

if sys.argv[1] == "tcp":
    server = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: busy(), framing="line")
    server.start()
    client = socket.create_connection(server.address)
    client.sendall(b"x\\n")
else:
    server = rsock.UdpServer(("127.0.0.1", 0), lambda data, sender: busy())
    server.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.sendto(b"x", server.address)
time.sleep(0.2)
"""


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_handler_still_computing_at_exit_is_interrupted_not_left_to_abort_the_process(kind):
    """Interpreter exit stops the servers and waits 1 s; a handler still running Python code then is interrupted
    with SystemExit, which the log says at INFO (it is not the handler's failure). Left running, it took the GIL
    again while the interpreter finalized, and CPython (before 3.14) ended its thread with pthread_exit, which
    cannot unwind through Rust frames: the process aborted (-SIGABRT), every time for TcpServer."""
    result = subprocess.run([sys.executable, "-c", BUSY_AT_EXIT, kind], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "handler running\n"
    ended = "closing connection from" if kind == "tcp" else "no reply to a datagram from"
    expected = rf"INFO {ended} 127\.0\.0\.1:\d+: its handler was interrupted as the interpreter exits\n"
    assert re.fullmatch(expected, result.stderr), result.stderr


STUCK_AMONG_OTHERS = """
import socket, time
import rsock

others = [rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: data) for _ in range(5)]
for other in others:
    other.start()
stuck = rsock.TcpServer(("127.0.0.1", 0), lambda conn, data: time.sleep(30))
stuck.start()
client = socket.create_connection(stuck.address)
client.sendall(b"x")
time.sleep(0.2)
print("exiting", flush=True)
"""


def test_exit_waits_for_all_the_servers_at_once_not_for_each_in_turn():
    """A handler blocked in a call holds up the io thread, and with it every TcpServer's stop. Exit gives the servers
    1 s between them, then 1 s more after interrupting the handlers: not 1 s (then 2 s) to each in turn, which made
    a kernel with a few servers overrun Jupyter's wait for its shutdown and be killed."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", STUCK_AMONG_OTHERS], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (0, "exiting\n"), result.stderr
    assert elapsed < 4.5


ENDS_AT_THE_LAST_DEADLINE = """
import socket, time
import rsock

exiting_at = None

def slow(conn, data):
    while exiting_at is None:
        time.sleep(0.01)
    # One sleep to exit's second deadline: exit waits 1 s, interrupts (the SystemExit is seen as the sleep ends)
    # and waits 1 s more.
    time.sleep(exiting_at + 2.0 - time.monotonic())
    return data

server = rsock.TcpServer(("127.0.0.1", 0), slow)
server.start()
client = socket.create_connection(server.address)
client.sendall(b"x")
time.sleep(0.3)
exiting_at = time.monotonic()
print("exiting", flush=True)
"""


def test_a_handler_ending_at_exits_last_deadline_does_not_abort_the_process():
    """The handler's sleep returns, with the SystemExit exit raised in it, as exit's second wait ends. Deciding whether
    that failure was the handler's first asked whether it was asyncio's CancelledError, which imported asyncio on the
    io thread: its file reads let go of the GIL, the interpreter began to finalize meanwhile, and CPython (before
    3.14) ended the thread taking the GIL back with pthread_exit, which aborts from a Rust frame (-SIGABRT, every
    time on the machine this was found on)."""
    result = subprocess.run(
        [sys.executable, "-c", ENDS_AT_THE_LAST_DEADLINE], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "exiting\n"), result.stderr


FAILING_HANDLER = """
import logging, socket, sys
import rsock

logging.disable(logging.CRITICAL)

def fails(conn, data):
    raise ValueError("the handler's own failure")

with rsock.TcpServer(("127.0.0.1", 0), fails) as server:
    with socket.create_connection(server.address, timeout=10) as client:
        client.sendall(b"x")
        assert client.recv(1) == b""
    print(server.stats["errors"], "asyncio" in sys.modules)
"""


def test_a_sync_handlers_failure_is_judged_without_importing_asyncio():
    """A program that never imported asyncio cannot have raised its CancelledError: the check for one leaves asyncio
    unimported (importing it on the io thread is what the test above aborted on)."""
    result = subprocess.run([sys.executable, "-c", FAILING_HANDLER], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "1 False\n"), result.stderr
