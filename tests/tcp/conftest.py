"""Fixtures for the TcpServer / TcpClient tests: servers that are always stopped, clients and raw sockets that are
always closed, and a deadline-bounded wait for a condition."""

import contextlib
import socket
import time

import pytest

import rsock

HOST = "127.0.0.1"
TIMEOUT = 10.0  # per-operation timeout on every client: generous, only there so nothing hangs


@pytest.fixture
def make_server():
    """`make_server(on_message=None, *, start=True, address=(HOST, 0), **kwargs)`: a TcpServer on a free loopback port,
    started unless told otherwise, stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def make(on_message=None, *, start=True, address=(HOST, 0), **kwargs):
            server = rsock.TcpServer(address, on_message, **kwargs)
            stack.callback(server.stop, 2.0)
            if start:
                server.start()
            return server

        yield make


@pytest.fixture
def make_client():
    """`make_client(address, **kwargs)`: a TcpClient with a timeout, closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(address, **kwargs):
            kwargs.setdefault("timeout", TIMEOUT)
            client = rsock.TcpClient(address, **kwargs)
            stack.callback(client.close)
            return client

        yield make


@pytest.fixture
def make_raw():
    """`make_raw(address)`: a connected stdlib TCP socket with a timeout and TCP_NODELAY, closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(address):
            sock = stack.enter_context(socket.create_connection(address, timeout=TIMEOUT))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        yield make


@pytest.fixture
def wait_until():
    """`wait_until(predicate, what, timeout=TIMEOUT)`: polls `predicate` until it holds; fails the test at the
    deadline."""

    def wait(predicate, what="condition", timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.002)

    return wait
