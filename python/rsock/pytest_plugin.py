"""rsock's pytest plugin: fixtures for tests that need free ports and running rsock servers.

Installing rsock registers it with pytest (the ``pytest11`` entry point ``rsock.pytest_plugin``), so the fixtures
are there in every test without an import; ``-p no:rsock.pytest_plugin`` turns it off. Without the entry point,
enable it with ``-p rsock.pytest_plugin`` on the command line or ``pytest_plugins = ["rsock.pytest_plugin"]`` in a
conftest.py. (The entry point is named after the module so that both of those still work once it is installed:
pytest refuses one module registered under two names.)

Fixtures (``pytest --fixtures`` shows each one's documentation):

- ``free_tcp_port``, ``free_udp_port``: a port number free on 127.0.0.1 when the fixture ran;
- ``tcp_echo_server``, ``udp_echo_server``: a started ``rsock.TcpServer`` / ``rsock.UdpServer`` on 127.0.0.1 that
  sends back what it receives, stopped after the test;
- ``rsock_server``: a factory, ``rsock_server(on_message=..., framing=..., **kwargs)`` for a started TcpServer,
  ``rsock_server(on_datagram=...)`` or ``rsock_server(kind="udp", ...)`` for a started UdpServer; every server it
  made is stopped after the test, passed or failed.

Every server is bound to 127.0.0.1 on a port the system picks (port 0), so tests can run in parallel.
"""

import socket

import pytest

import rsock

__all__ = ["free_tcp_port", "free_udp_port", "rsock_server", "tcp_echo_server", "udp_echo_server"]

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 5.0  # seconds a server gets to finish its replies at teardown


def _free_port(kind):
    """A port the system hands out for `kind` (SOCK_STREAM or SOCK_DGRAM) on 127.0.0.1, released again."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _echo_message(conn, data):
    return data


def _echo_datagram(data, address):
    return data


@pytest.fixture
def free_tcp_port():
    """A TCP port number that is free on 127.0.0.1 right now (the system picked it for a socket bound to port 0,
    then closed). Nothing holds it for you: bind it soon.

    Prefer passing port 0 to the code under test and reading back the real port when that code allows it (rsock
    servers do: ``server.address``)."""
    return _free_port(socket.SOCK_STREAM)


@pytest.fixture
def free_udp_port():
    """A UDP port number that is free on 127.0.0.1 right now (the system picked it for a socket bound to port 0,
    then closed). Nothing holds it for you: bind it soon."""
    return _free_port(socket.SOCK_DGRAM)


@pytest.fixture
def rsock_server():
    """Factory for started rsock servers on 127.0.0.1, each stopped after the test, even when the test fails:
    ``rsock_server(on_message=None, framing=None, **kwargs)`` returns a started ``rsock.TcpServer``,
    ``rsock_server(on_datagram=...)`` or ``rsock_server(kind="udp", ...)`` a started ``rsock.UdpServer``.

    Without a handler the server echoes (``on_message`` returns the data; ``on_datagram`` too). Other keyword
    arguments go to the server's constructor (``on_connect=``, ``on_disconnect=``, ``max_connections=``, ...), and
    ``address=`` replaces the default ``("127.0.0.1", 0)``. The server's ``.address`` holds the real port::

        def test_upper(rsock_server):
            server = rsock_server(lambda conn, data: data.upper(), framing="line")
            with rsock.TcpClient(server.address, framing="line", timeout=5) as client:
                assert client.request(b"hi") == b"HI"

    A TypeError is raised for arguments that do not fit the kind (``framing`` or ``on_message`` for UDP,
    ``on_datagram`` for TCP). Servers are stopped in reverse order of creation with ``stop(5)``."""
    servers = []

    def make(on_message=None, framing=None, *, kind=None, on_datagram=None, address=(LOOPBACK, 0), **kwargs):
        if kind is None:
            kind = "udp" if on_datagram is not None else "tcp"
        if kind == "tcp":
            if on_datagram is not None:
                raise TypeError("rsock_server: on_datagram is for UDP servers (kind='udp'), not TCP")
            server = rsock.TcpServer(address, on_message or _echo_message, framing=framing, **kwargs)
        elif kind == "udp":
            if on_message is not None or framing is not None:
                raise TypeError("rsock_server: on_message and framing are for TCP servers; UDP takes on_datagram")
            server = rsock.UdpServer(address, on_datagram or _echo_datagram, **kwargs)
        else:
            raise ValueError(f"rsock_server: kind must be 'tcp' or 'udp', not {kind!r}")
        servers.append(server)  # before start(): a server that fails to start is still stopped
        server.start()
        return server

    try:
        yield make
    finally:
        errors = []
        for server in reversed(servers):
            try:
                server.stop(STOP_TIMEOUT)
            except Exception as exc:  # stop the others all the same, then report
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def tcp_echo_server(rsock_server):
    """A started ``rsock.TcpServer`` on 127.0.0.1 that sends every chunk it reads straight back (no framing).
    Connect to its ``.address`` (host, port); ``.stats`` counts what it saw. Stopped after the test."""
    return rsock_server(kind="tcp")


@pytest.fixture
def udp_echo_server(rsock_server):
    """A started ``rsock.UdpServer`` on 127.0.0.1 that sends every datagram back to its sender.
    Send to its ``.address`` (host, port); ``.stats`` counts what it saw. Stopped after the test."""
    return rsock_server(kind="udp")
