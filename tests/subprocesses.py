"""Driving programs the tests start as subprocesses: their stdout read line by line against deadlines, their
lifetime bounded, the port a server reports read back. Shared by the command-line and example tests."""

import os
import re
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30  # seconds, for every subprocess call, every wait for output and every socket the tests open
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def default_sigint():
    # A shell that starts pytest in the background hands it SIGINT ignored, and an ignored signal stays ignored
    # across exec: give the child the default disposition so that Ctrl-C (SIGINT) raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lines:
    """The lines a process writes to stdout, read as they arrive and never waited for past a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []  # every complete line read so far
        self.position = 0  # lines before this one were returned by next() or skipped by expect()
        self.partial = b""
        self.eof = False

    def _read(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.proc.stdout], [], [], remaining)[0]:
            raise AssertionError(f"no output within {TIMEOUT}s; lines so far: {self.lines}")
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            self.eof = True
            if self.partial:
                self.lines.append(self.partial.decode())
                self.partial = b""
            return
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        self.lines.extend(line.decode() for line in complete)

    def next(self, deadline=None):
        """The next line, or None at end of output."""
        deadline = deadline or time.monotonic() + TIMEOUT
        while self.position == len(self.lines) and not self.eof:
            self._read(deadline)
        if self.position == len(self.lines):
            return None
        self.position += 1
        return self.lines[self.position - 1]

    def expect(self, wanted):
        """Skips lines until one equal to `wanted` (a str) or fully matching it (a compiled pattern); returns
        the line, or its match."""
        deadline = time.monotonic() + TIMEOUT
        while (line := self.next(deadline)) is not None:
            if isinstance(wanted, str) and line == wanted:
                return line
            if isinstance(wanted, re.Pattern) and (match := wanted.fullmatch(line)):
                return match
        raise AssertionError(f"output ended without {wanted!r}; lines: {self.lines}")

    def rest(self):
        """Reads to the end of the output; returns every line."""
        while self.next() is not None:
            pass
        return self.lines


@contextmanager
def started(cmd, **popen_args):
    """A Popen of `cmd` in the repository root (binary pipes for stdout and stderr), killed on the way out if
    still running."""
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_args) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()  # only this process, which the test started, by its pid


@contextmanager
def rsock_server_process(make_server, env=None):
    """A server made by the Python expression `make_server` (with `rsock` imported) and started, in a process of its
    own with `env` added to its environment: yields (the process, the server's loopback address); the process ends
    with the block."""
    code = f"import rsock, sys; server = {make_server}; server.start(); print(server.address[1], flush=True)"
    code += "; sys.stdin.read()"  # until the test ends it
    with started([sys.executable, "-c", code], stdin=subprocess.PIPE, env={**os.environ, **(env or {})}) as proc:
        lines = Lines(proc)
        yield proc, ("127.0.0.1", int(lines.next()))


def listening_port(proc, lines, what):
    """The port a server started on port 0 reports in its first line ("listening on 127.0.0.1:PORT")."""
    first = lines.next()
    match = LISTENING.fullmatch(first or "")
    if match is None:
        proc.kill()
        raise AssertionError(f"unexpected first line {first!r} from {what}; stderr:\n{proc.stderr.read()}")
    port = int(match[1])
    assert port != 0, "the server printed the port it asked for, not the one it got"
    return port


def finish(proc, lines):
    """Waits for a process to exit by itself with code 0; returns (all its stdout lines, its stderr)."""
    out = lines.rest()
    proc.wait(timeout=TIMEOUT)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr:\n{err}"
    return out, err


def say(proc, text):
    """Writes one line to a process's stdin."""
    proc.stdin.write(text.encode() + b"\n")
    proc.stdin.flush()
