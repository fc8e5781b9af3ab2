"""multiprocessing passes sockets to other processes (a Process's arguments, a Pipe, a Queue): it does so for
rsock's sockets as for the stdlib's, whichever of rsock and multiprocessing was imported first; plain pickle
refuses both."""

import multiprocessing
import pickle
import subprocess
import sys

import pytest

TIMEOUT = 30


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_process_gets_a_socket_passed_as_an_argument(sockmod, method):
    a, b = sockmod.socketpair()
    with a, b:
        child = multiprocessing.get_context(method).Process(target=b.sendall, args=(b"from the child",))
        child.start()
        child.join(TIMEOUT)
        assert child.exitcode == 0
        b.close()
        a.settimeout(TIMEOUT)
        assert a.recv(100) == b"from the child"


def test_a_socket_sent_through_a_pipe_arrives_as_a_working_socket_of_the_same_module(sockmod):
    a, b = sockmod.socketpair()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    with a, b, receiver, sender:
        sender.send(b)
        arrived = receiver.recv()
        with arrived:
            assert type(arrived) is sockmod.socket
            assert (arrived.family, arrived.type) == (b.family, b.type)
            assert arrived.fileno() != b.fileno()
            b.close()
            arrived.sendall(b"through the pipe")
            a.settimeout(TIMEOUT)
            assert a.recv(100) == b"through the pipe"


def test_plain_pickle_still_refuses_a_socket(sockmod):
    with sockmod.socket() as sock, pytest.raises(TypeError, match="cannot pickle 'socket' object"):
        pickle.dumps(sock)


# A socket sent through a multiprocessing pipe, with rsock and multiprocessing imported: prints the module of the
# socket that arrived and what it carried.
SEND_A_SOCKET = f"""a, b = rsock.socketpair()
receiver, sender = multiprocessing.Pipe(duplex=False)
sender.send(b)
arrived = receiver.recv()
b.close()
arrived.sendall(b"ok")
a.settimeout({TIMEOUT})
print(type(arrived).__module__, a.recv(10).decode())
"""


@pytest.mark.parametrize(
    "imports",
    ["import rsock\nimport multiprocessing", "import multiprocessing\nimport rsock"],
    ids=["rsock first", "multiprocessing first"],
)
def test_either_import_order_registers_the_socket(imports):
    program = f"{imports}\n{SEND_A_SOCKET}"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rsock", "ok"]


def test_rsock_imported_again_still_registers_the_socket_once():
    """rsock taken out of sys.modules and imported again (as test runners and notebooks' autoreload do) leaves one
    finder on sys.meta_path: the copy from the first import was kept beside the new one, and the two asked each
    other for multiprocessing.reduction until RecursionError."""
    program = f"""import sys
import rsock
for name in [name for name in sys.modules if name == "rsock" or name.startswith("rsock.")]:
    del sys.modules[name]
import rsock
import multiprocessing
print(sum(type(finder).__name__ == "_ReductionFinder" for finder in sys.meta_path))
{SEND_A_SOCKET}"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "rsock", "ok"]
