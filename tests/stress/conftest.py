"""What the stress tests share: the quick/full switch, descriptor and thread counts, and a fixture
that fails a test which leaks either.

Quick mode (the default, what `pytest` and CI run) scales every load down so the whole directory
takes well under two minutes; `RSOCK_STRESS=full` (what `make stress` sets) runs the sizes the
README's table reports.
"""

import gc
import os
import resource
import threading
import time

import pytest

import rsock
from tests.proc_threads import fd_targets

FULL = os.environ.get("RSOCK_STRESS") == "full"


def scale(quick, full):
    """`full` under RSOCK_STRESS=full, `quick` otherwise."""
    return full if FULL else quick


def fd_count():
    """Descriptors open in this process, but for rsock's io thread's io_uring ring: made at the first fan-out the
    thread batches (a handler's broadcast, for one), it lives as long as the thread, as the io thread's epoll does."""
    return sum(target != "anon_inode:[io_uring]" for target in fd_targets())


def rss_kib():
    """Resident memory of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def python_threads():
    """Names of the Python threads alive (rsock's own io thread is not one of them)."""
    return sorted(t.name for t in threading.enumerate())


def os_threads():
    """Threads of this process as the kernel counts them, rsock-io included."""
    return len(os.listdir("/proc/self/task"))


def raise_fd_limit(wanted):
    """Raises the soft descriptor limit to `wanted` (at most the hard limit); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves descriptors or threads behind. Closing is asynchronous on the io
    thread, so the counts get a few seconds to settle before they are compared."""
    with rsock.TcpServer():  # starts rsock's io thread, which is meant to outlive the test
        pass
    fds, threads, tasks = fd_count(), python_threads(), os_threads()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        settled = fd_count() <= fds and python_threads() == threads and os_threads() <= tasks
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert fd_count() <= fds, f"descriptors leaked: {fds} before, {fd_count()} after"
    assert python_threads() == threads, f"threads leaked: {threads} before, {python_threads()} after"
    assert os_threads() <= tasks, f"OS threads leaked: {tasks} before, {os_threads()} after"
