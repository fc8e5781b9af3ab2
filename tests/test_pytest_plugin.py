"""Tests of rsock's pytest plugin (``rsock.pytest_plugin``), run with pytester: each writes a small test file and
runs pytest on it, inline (in this process) or in a subprocess, with ``-p rsock.pytest_plugin``.

They check that every fixture does what its documentation says, that every server the fixtures made is stopped
after the test even when the test fails, that ``pytest --fixtures`` lists the fixtures with their documentation,
and that the ``pytest11`` entry point rsock's pyproject declares (``rsock.pytest_plugin = rsock.pytest_plugin``)
loads the plugin without ``-p`` and still lets ``-p rsock.pytest_plugin`` and ``pytest_plugins`` work.
"""

import importlib.metadata
import socket

import pytest

import rsock

pytest_plugins = ["pytester"]

ENTRY_POINT = "rsock.pytest_plugin"
# -p no:asyncio: pytest-asyncio warns at configure time about an unset option, which -W error would turn into an
# error of the inner run; the inner runs use no asyncio. Once rsock is installed, this session has imported the
# plugin already, and an inline run's -p rsock.pytest_plugin then warns that it cannot rewrite its asserts.
PLUGIN_ARGS = [
    "-p",
    "rsock.pytest_plugin",
    "-p",
    "no:asyncio",
    "-W",
    "error",
    "-W",
    "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
]
TIMEOUT = 10.0


def run_inline(pytester, *args, plugins=()):
    return pytester.runpytest_inprocess(*PLUGIN_ARGS, *args, plugins=list(plugins))


def test_fixtures_do_what_their_docs_say(pytester):
    """free ports can be bound; the echo servers are started rsock servers on 127.0.0.1 that echo; the factory
    makes TCP and UDP servers with the given handlers, framing and keyword arguments, and rejects arguments that do
    not fit the kind."""
    pytester.makepyfile(
        r"""
        import socket

        import pytest

        import rsock

        TIMEOUT = 10.0


        def test_free_tcp_port(free_tcp_port):
            assert isinstance(free_tcp_port, int) and 1024 <= free_tcp_port <= 65535
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", free_tcp_port))
                sock.listen()


        def test_free_udp_port(free_udp_port):
            assert isinstance(free_udp_port, int) and 1024 <= free_udp_port <= 65535
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", free_udp_port))


        def test_tcp_echo_server(tcp_echo_server):
            assert isinstance(tcp_echo_server, rsock.TcpServer) and tcp_echo_server.running
            host, port = tcp_echo_server.address
            assert host == "127.0.0.1" and port != 0
            with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
                sock.sendall(b"ping")
                assert sock.recv(100) == b"ping"


        def test_udp_echo_server(udp_echo_server):
            assert isinstance(udp_echo_server, rsock.UdpServer) and udp_echo_server.running
            host, port = udp_echo_server.address
            assert host == "127.0.0.1" and port != 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(TIMEOUT)
                sock.sendto(b"ping", (host, port))
                assert sock.recvfrom(100) == (b"ping", (host, port))


        def test_factory_tcp_with_handler_framing_and_kwargs(rsock_server):
            connected = []
            server = rsock_server(
                lambda conn, data: data.upper(), framing="line", on_connect=lambda conn: connected.append(conn.id)
            )
            assert isinstance(server, rsock.TcpServer) and server.running and server.framing == "line"
            with rsock.TcpClient(server.address, framing="line", timeout=TIMEOUT) as client:
                assert client.request(b"hello") == b"HELLO"
            assert len(connected) == 1


        def test_factory_default_is_a_tcp_echo(rsock_server):
            server = rsock_server()
            assert isinstance(server, rsock.TcpServer)
            with rsock.TcpClient(server.address, timeout=TIMEOUT) as client:
                client.send(b"raw")
                assert client.recv_exactly(3) == b"raw"


        def test_factory_udp(rsock_server):
            by_handler = rsock_server(on_datagram=lambda data, address: data[::-1])
            by_kind = rsock_server(kind="udp")
            assert isinstance(by_handler, rsock.UdpServer) and isinstance(by_kind, rsock.UdpServer)
            with rsock.UdpClient() as client:
                assert client.request(b"abc", by_handler.address, timeout=TIMEOUT) == b"cba"
                assert client.request(b"abc", by_kind.address, timeout=TIMEOUT) == b"abc"


        def test_factory_address(rsock_server, free_tcp_port):
            server = rsock_server(address=("127.0.0.1", free_tcp_port))
            assert server.address == ("127.0.0.1", free_tcp_port)


        @pytest.mark.parametrize(
            "kwargs, error",
            [
                ({"on_datagram": lambda d, a: d, "kind": "tcp"}, TypeError),
                ({"kind": "udp", "framing": "line"}, TypeError),
                ({"kind": "udp", "on_message": lambda c, d: d}, TypeError),
                ({"kind": "sctp"}, ValueError),
            ],
        )
        def test_factory_rejects_misfits(rsock_server, kwargs, error):
            with pytest.raises(error):
                rsock_server(**kwargs)
        """
    )
    result = run_inline(pytester)
    result.assert_outcomes(passed=12)


class Recorder:
    """A plugin for the inner run: its ``record`` fixture keeps what the inner tests hand it, for the outer test."""

    def __init__(self):
        self.servers = []

    @pytest.fixture
    def record(self):
        return self.servers.append


def assert_stopped(servers):
    """Each server says it is not running, and its port is free again: TCP refuses connections, and a UDP port
    can be bound anew."""
    assert servers
    for server in servers:
        assert not server.running, server
        host, port = server.address
        if isinstance(server, rsock.TcpServer):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=TIMEOUT).close()
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, port))  # EADDRINUSE if the server still held it


def test_servers_are_stopped_after_a_failing_test(pytester):
    """Servers from every fixture, made by a test that then fails (by an assertion or an exception), are stopped
    at teardown, and the teardown itself reports no error."""
    pytester.makepyfile(
        """
        def test_fails(tcp_echo_server, udp_echo_server, rsock_server, record):
            for server in (tcp_echo_server, udp_echo_server, rsock_server(framing="line"), rsock_server(kind="udp")):
                record(server)
                assert server.running
            assert False, "this test fails on purpose"


        def test_raises(rsock_server, record):
            record(rsock_server())
            raise RuntimeError("and this one raises")
        """
    )
    recorder = Recorder()
    result = run_inline(pytester, plugins=[recorder])
    result.assert_outcomes(failed=2)  # an error in teardown would show up as errors=...
    assert len(recorder.servers) == 5
    assert_stopped(recorder.servers)


def test_servers_are_stopped_after_a_passing_test(pytester):
    pytester.makepyfile(
        """
        def test_passes(tcp_echo_server, rsock_server, record):
            record(tcp_echo_server)
            record(rsock_server(on_datagram=lambda data, address: data))
        """
    )
    recorder = Recorder()
    run_inline(pytester, plugins=[recorder]).assert_outcomes(passed=1)
    assert_stopped(recorder.servers)


def test_servers_are_stopped_before_the_next_test_in_a_subprocess_run(pytester):
    """The same in a separate pytest process: the test after a failing one finds the failing test's TCP server
    refusing connections and its UDP port free to bind again."""
    pytester.makepyfile(
        """
        import socket

        import pytest

        addresses = {}


        def test_fails(tcp_echo_server, udp_echo_server):
            addresses.update(tcp=tcp_echo_server.address, udp=udp_echo_server.address)
            raise AssertionError("on purpose")


        def test_next():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(addresses["tcp"], timeout=10).close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(addresses["udp"])
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:randomly", timeout=60)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["E       AssertionError: on purpose"])


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("free_tcp_port", "A TCP port number that is free on 127.0.0.1 right now"),
        ("free_udp_port", "A UDP port number that is free on 127.0.0.1 right now"),
        ("tcp_echo_server", "A started ``rsock.TcpServer`` on 127.0.0.1 that sends every chunk it reads straight back"),
        ("udp_echo_server", "A started ``rsock.UdpServer`` on 127.0.0.1 that sends every datagram back"),
        ("rsock_server", "Factory for started rsock servers on 127.0.0.1, each stopped after the test"),
    ],
)
def test_fixtures_are_listed_with_their_docs(pytester, name, phrase):
    """``pytest --fixtures`` lists each fixture, from rsock's plugin, followed by its documentation."""
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--fixtures", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"{name} -- *rsock*pytest_plugin.py:*", f"    {phrase}*"])


@pytest.fixture
def entry_point_site(tmp_path):
    """A directory holding a distribution whose metadata declares the entry point rsock's pyproject declares, as
    pip would install it: ``[pytest11] rsock.pytest_plugin = rsock.pytest_plugin``."""
    dist_info = tmp_path / "site" / "rsock_plugin_probe-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: rsock-plugin-probe\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(f"[pytest11]\n{ENTRY_POINT} = rsock.pytest_plugin\n")
    return dist_info.parent


@pytest.mark.parametrize(
    ("args", "conftest", "outcome"),
    [
        ([], "", {"passed": 1}),
        (["-p", "rsock.pytest_plugin"], "", {"passed": 1}),
        ([], 'pytest_plugins = ["rsock.pytest_plugin"]', {"passed": 1}),
        (["-p", f"no:{ENTRY_POINT}"], "", {"errors": 1}),
    ],
)
def test_entry_point_loads_the_plugin(pytester, monkeypatch, entry_point_site, args, conftest, outcome):
    """With the entry point installed, the fixtures are there without -p; -p rsock.pytest_plugin and a conftest's
    pytest_plugins still work alongside it (pytest would refuse the module under a second name), and
    -p no:rsock.pytest_plugin turns the plugin off (the fixture is then missing)."""
    monkeypatch.setenv("PYTHONPATH", str(entry_point_site))
    if conftest:
        pytester.makeconftest(conftest)
    pytester.makepyfile(
        """
        def test_echo(tcp_echo_server):
            assert tcp_echo_server.running
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:asyncio", *args, timeout=60)
    result.assert_outcomes(**outcome)
    if outcome.get("errors"):
        result.stdout.fnmatch_lines(["*fixture 'tcp_echo_server' not found*"])


def test_installed_entry_point_has_the_module_name():
    """Once rsock is installed with its pytest11 entry point, that entry point is named after the module (see the
    plugin's docstring for why); before the lead adds it to pyproject, there is nothing to check."""
    points = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value == "rsock.pytest_plugin"]
    points = [ep for ep in points if ep.dist is None or ep.dist.name == "rsock"]
    if not points:
        pytest.skip("rsock is not installed with its pytest11 entry point yet")
    assert [ep.name for ep in points] == [ENTRY_POINT]
