"""A process as /proc shows it: its threads, found by name, and what they have spent waiting and running (for the
tests that check a thread polls or sleeps), and what its descriptors refer to."""

import contextlib
import os
import time


def named_threads(name, pid="self"):
    """The ids of process `pid`'s threads called `name` (a thread names itself once it runs)."""
    tids = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                tids.add(tid)
    return tids


def the_thread(name, pid="self", timeout=10.0):
    """The id of process `pid`'s one thread called `name`, once it has named itself (a started server's thread may
    not have run yet)."""
    deadline = time.monotonic() + timeout
    while len(tids := named_threads(name, pid)) != 1:
        assert time.monotonic() < deadline, f"threads called {name!r} after {timeout}s: {tids}"
        time.sleep(0.01)
    return tids.pop()


def voluntary_switches(tid, pid="self"):
    """How many times the thread has given up its CPU to wait (sleeping, not preempted)."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def cpu_ticks(tid, pid="self"):
    """The CPU time the thread has used, user and system, in clock ticks."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime and stime, the stat file's 14th and 15th fields


def process_ticks(pid="self"):
    """The CPU time every thread of process `pid` has used, user and system, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks():
    """The CPU time every process on the machine has used, and the hypervisor has taken (steal), in clock ticks."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def fd_targets(pid="self"):
    """What each of process `pid`'s open descriptors refers to ("socket:[1234]", "anon_inode:[eventpoll]", a path)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile (the listing's own descriptor, for one)
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def hold_every_free_descriptor():
    """Opens /dev/null until the process is out of descriptors (under a lowered RLIMIT_NOFILE, say); returns them,
    for the caller to close."""
    held = []
    with contextlib.suppress(OSError):
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    return held
