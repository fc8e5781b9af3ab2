"""A script that only imports rsock exits normally after its server has served: rsock's I/O thread
must never be taken for the main thread (threading would then wait for it at exit, for ever)."""

import os
import subprocess
import sys

import rsock

SCRIPT = """
import sys
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
