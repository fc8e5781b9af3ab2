"""Fixtures for the UdpServer / UdpClient tests: servers that are always stopped, sockets that are always closed, and
a deadline-bounded wait for a condition."""

import asyncio
import contextlib
import socket
import time

import pytest

import rsock
import rsock.aio

HOST = "127.0.0.1"
TIMEOUT = 10.0


@pytest.fixture
def make_server():
    """`make_server(on_datagram=None, *, start=True, address=(HOST, 0), **kwargs)`: a UdpServer on a free loopback
    port, started unless told otherwise, stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def make(on_datagram=None, *, start=True, address=(HOST, 0), **kwargs):
            server = rsock.UdpServer(address, on_datagram, **kwargs)
            stack.callback(server.stop, 2.0)
            if start:
                server.start()
            return server

        yield make


@pytest.fixture
def make_client():
    """`make_client(address=None, **kwargs)`: a UdpClient, closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(address=None, **kwargs):
            client = rsock.UdpClient(address, **kwargs)
            stack.callback(client.close)
            return client

        yield make


@pytest.fixture
def make_udp():
    """`make_udp(host=HOST, family=AF_INET)`: a bound stdlib UDP socket with a timeout, closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(host=HOST, family=socket.AF_INET):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
            sock.settimeout(TIMEOUT)
            sock.bind((host, 0))
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


class SyncClient:
    """rsock.UdpClient, driven directly."""

    def __init__(self, **kwargs):
        self.client = rsock.UdpClient(**kwargs)

    def call(self, method, *args, **kwargs):
        return getattr(self.client, method)(*args, **kwargs)

    def close(self):
        self.client.close()


class AsyncClient:
    """rsock.aio.UdpClient, each call on a loop of its own (as a client shared by successive asyncio.run()s)."""

    def __init__(self, **kwargs):
        self.client = rsock.aio.UdpClient(**kwargs)

    def call(self, method, *args, **kwargs):
        return asyncio.run(getattr(self.client, method)(*args, **kwargs))

    def close(self):
        self.client.close()


@pytest.fixture(params=[SyncClient, AsyncClient], ids=["sync", "aio"])
def sync_or_aio_client(request):
    """`sync_or_aio_client(**kwargs)`: an rsock.UdpClient, or an rsock.aio.UdpClient driven the same way (each call on
    a loop of its own); closed at teardown."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs):
            client = request.param(**kwargs)
            stack.callback(client.close)
            return client

        yield make
