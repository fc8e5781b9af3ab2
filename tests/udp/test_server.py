"""rsock.UdpServer: replies, None replies, handler exceptions, the largest datagrams, many clients, stats, the server's
lifecycle (start/stop/context manager/serve_forever/Ctrl-C), reuse_port and argument checking."""

import errno
import gc
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import rsock
import rsock.aio
from tests import message_objects, server_starts
from tests.loopback import ipv6_loopback_available
from tests.proc_threads import cpu_ticks, named_threads

HOST = "127.0.0.1"
TIMEOUT = 10.0
MAX_V4 = 65507  # the largest UDP payload over IPv4


def reverse(data, addr):
    return data[::-1]


def stats_become(server, expected):
    """Waits (with a deadline) for `server.stats` to equal `expected`: counters are updated by the receive thread, which
    may run a moment behind what a peer has already seen."""
    deadline = time.monotonic() + TIMEOUT
    while server.stats != expected and time.monotonic() < deadline:
        time.sleep(0.002)
    assert server.stats == expected


def host_port(sock):
    """A socket's address as rsock's log lines write it: 127.0.0.1:5000, [::1]:5000."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rsock_errors(caplog):
    return [r for r in caplog.records if r.name == "rsock" and r.levelno >= logging.ERROR]


def test_echo_reaches_the_sender_with_its_address(make_server, make_udp):
    seen = []

    def on_datagram(data, addr):
        seen.append((data, addr))
        return data.upper()

    server = make_server(on_datagram)
    sock = make_udp()
    sock.sendto(b"hello", server.address)
    assert sock.recvfrom(65536) == (b"HELLO", server.address)
    assert seen == [(b"hello", sock.getsockname())]


def test_each_datagram_object_is_as_new_whatever_the_handler_did_with_the_last(make_server, make_udp):
    """The object is given back only after the handler's reply was sent: every other datagram is echoed."""
    watcher = message_objects.Watcher()

    def on_datagram(data, addr):
        summary = watcher.look(data)
        return data if len(watcher.seen) % 2 and summary != b"no NUL" else summary

    server = make_server(on_datagram)
    sock = make_udp()
    sent = message_objects.messages()
    for index, datagram in enumerate(sent):
        sock.sendto(datagram, server.address)
        assert sock.recv(65536) == (datagram if index % 2 == 0 else message_objects.summary(datagram))
    assert watcher.saw(sent)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_reply_is_sent(make_server, make_udp, kind):
    server = make_server(lambda data, addr: kind(b"<" + data + b">"))
    sock = make_udp()
    sock.sendto(b"x", server.address)
    assert sock.recv(100) == b"<x>"


def test_none_reply_sends_nothing(make_server, make_udp):
    seen = []

    def on_datagram(data, addr):
        seen.append(data)
        return None if data.startswith(b"quiet") else b"reply to " + data

    server = make_server(on_datagram)
    sock = make_udp()
    sock.sendto(b"quiet 1", server.address)
    sock.sendto(b"quiet 2", server.address)
    sock.sendto(b"loud", server.address)
    assert sock.recv(100) == b"reply to loud"  # a reply to either quiet datagram would have come first
    assert seen == [b"quiet 1", b"quiet 2", b"loud"]
    stats_become(server, {"datagrams_in": 3, "datagrams_out": 1, "bytes_in": 18, "bytes_out": 13, "errors": 0})


def test_one_way_floods_are_handled_whole_and_in_order_and_a_request_after_them_is_answered(
    make_server, make_udp, wait_until
):
    """Bursts long enough to count as a one-way flood (the receive thread then pauses between batches): nothing is
    lost or reordered, and the reply to the request that follows is not held back for the next burst."""
    seen = []

    def on_datagram(data, addr):
        if data == b"ping":
            return b"pong"
        seen.append(int(data))
        return None

    server = make_server(on_datagram)
    sock = make_udp()
    burst = 64  # well within the server socket's receive buffer, so the kernel drops none
    for first in range(0, 20 * burst, burst):
        for n in range(first, first + burst):
            sock.sendto(b"%d" % n, server.address)
        wait_until(lambda sent=first + burst: len(seen) == sent, "the burst to be handled")
    sock.sendto(b"ping", server.address)
    assert sock.recv(100) == b"pong"
    assert seen == list(range(20 * burst))


def test_empty_datagram_and_empty_reply(make_server, make_udp):
    seen = []

    def on_datagram(data, addr):
        seen.append(data)
        return b""

    server = make_server(on_datagram)
    sock = make_udp()
    sock.sendto(b"", server.address)
    assert sock.recvfrom(100) == (b"", server.address)
    assert seen == [b""]


@pytest.mark.parametrize("error", [RuntimeError, rsock.PanicException])
def test_handler_exception_is_logged_and_the_server_keeps_serving(make_server, make_udp, wait_until, caplog, error):
    """PanicException too: pyo3 resumes one coming back from the handler as a panic in the one task that receives
    every datagram, and that must be contained to the datagram."""
    caplog.set_level(logging.DEBUG, logger="rsock")
    raised = []

    def on_datagram(data, addr):
        if data == b"boom":
            exc = error("kaboom")
            raised.append(exc)
            raise exc
        return data

    server = make_server(on_datagram)
    sock = make_udp()
    sock.sendto(b"boom", server.address)
    sock.sendto(b"after", server.address)
    assert sock.recv(100) == b"after"
    assert server.running
    wait_until(lambda: server.stats["errors"] == 1, "the failure to be counted")
    wait_until(lambda: rsock_errors(caplog), "the exception to be logged")
    [record] = rsock_errors(caplog)
    assert isinstance(record.exc_info[1], error)
    assert str(record.exc_info[1]) == "kaboom"
    if error is rsock.PanicException:
        return  # rebuilt from the panic's message; pyo3 printed the original traceback when it resumed the panic
    assert record.exc_info[1] is raised[0]
    traceback_text = logging.Formatter().formatException(record.exc_info)
    assert "RuntimeError: kaboom" in traceback_text
    assert "Traceback" in traceback_text
    assert "in on_datagram" in traceback_text


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_reply_larger_than_a_datagram_is_logged_as_not_sent(make_server, make_udp, wait_until, caplog, family):
    """The handler did not fail: its reply could not go. Logged as such (it was "handler for a datagram from ...
    failed", with EMSGSIZE's traceback), counted as an error; the server keeps serving."""
    if family == socket.AF_INET6 and not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    caplog.set_level(logging.DEBUG, logger="rsock")
    largest, host = (65_507, HOST) if family == socket.AF_INET else (65_527, "::1")
    server = make_server(lambda data, addr: bytes(largest + 1) if data == b"big" else data, address=(host, 0))
    sock = make_udp(host, family)
    sock.sendto(b"big", server.address)
    sock.sendto(b"after", server.address)
    assert sock.recv(100) == b"after"
    wait_until(lambda: rsock_errors(caplog), "the reply to be logged")
    [record] = rsock_errors(caplog)
    assert record.getMessage() == (
        f"reply to a datagram from {host_port(sock)} not sent: its {largest + 1} bytes are more than a UDP datagram "
        "can carry"
    )
    assert record.exc_info is None
    assert server.stats["errors"] == 1


@pytest.mark.parametrize("reply", ["text", 42, ["a"]], ids=lambda reply: type(reply).__name__)
def test_a_reply_that_is_not_bytes_like_is_reported_as_on_datagram_s_return_value(
    make_server, make_udp, wait_until, caplog, reply
):
    """The handler has returned when its reply is found not to be bytes-like: the TypeError names on_datagram and
    what it returned (the buffer protocol's own message said only "a bytes-like object is required")."""
    caplog.set_level(logging.DEBUG, logger="rsock")
    server = make_server(lambda data, addr: reply if data == b"bad" else data)
    sock = make_udp()
    sock.sendto(b"bad", server.address)
    sock.sendto(b"after", server.address)
    assert sock.recv(100) == b"after"
    wait_until(lambda: rsock_errors(caplog), "the reply to be logged")
    [record] = rsock_errors(caplog)
    assert record.getMessage() == f"handler for a datagram from {host_port(sock)} failed"
    assert (
        str(record.exc_info[1]) == f"on_datagram must return a bytes-like object or None, not '{type(reply).__name__}'"
    )
    assert server.stats["errors"] == 1


def test_async_handler_on_a_sync_server_is_a_type_error_and_its_coroutine_is_closed(
    make_server, make_udp, wait_until, caplog
):
    """The coroutine the handler returned is closed when it is refused: left to be collected, it would warn
    "coroutine ... was never awaited" (an error here, under filterwarnings=error, as an unraisable exception). The
    handler is a plain function returning a coroutine: an `async def` one is refused as the server starts."""
    caplog.set_level(logging.DEBUG, logger="rsock")

    async def never_awaited(data, addr):
        pytest.fail("never awaited")

    def on_datagram(data, addr):
        return never_awaited(data, addr)

    server = make_server(on_datagram)
    make_udp().sendto(b"x", server.address)
    wait_until(lambda: rsock_errors(caplog), "the TypeError to be logged")
    [record] = rsock_errors(caplog)
    assert isinstance(record.exc_info[1], TypeError)
    assert "rsock.aio.UdpServer" in str(record.exc_info[1])
    assert server.stats["errors"] == 1
    gc.collect()


def test_largest_datagrams_go_both_ways_intact(make_server, make_udp):
    sizes = []

    def on_datagram(data, addr):
        sizes.append(len(data))
        return data[::-1]

    server = make_server(on_datagram)
    sock = make_udp()
    payload = bytes(range(256)) * (MAX_V4 // 256) + bytes(MAX_V4 % 256)
    assert len(payload) == MAX_V4
    sock.sendto(payload, server.address)
    assert sock.recv(65536) == payload[::-1]
    sock.sendto(payload[: 65536 - 1024], server.address)  # 64 KiB less 1 KiB
    assert sock.recv(65536) == payload[: 65536 - 1024][::-1]
    assert sizes == [MAX_V4, 65536 - 1024]


def test_many_clients(make_server, make_client):
    server = make_server(lambda data, addr: b"%s:%d" % (data, addr[1]))
    clients = [make_client() for _ in range(20)]
    for i in range(10):
        for n, client in enumerate(clients):
            reply = client.request(b"%d-%d" % (n, i), server.address, timeout=1.0)
            assert reply == b"%d-%d:%d" % (n, i, client.local[1])
    assert server.stats["datagrams_in"] >= 200


def test_stats_count_datagrams_and_bytes(make_server, make_udp):
    def on_datagram(data, addr):
        if data == b"boom":
            raise ValueError("expected by the test")
        return None if data == b"quiet" else data * 2

    server = make_server(on_datagram)
    assert server.stats == {"datagrams_in": 0, "datagrams_out": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0}
    sock = make_udp()
    for data in [b"abc", b"quiet", b"boom", b"xy"]:
        sock.sendto(data, server.address)
    assert sock.recv(100) == b"abcabc"
    assert sock.recv(100) == b"xyxy"
    stats_become(
        server,
        {
            "datagrams_in": 4,
            "datagrams_out": 2,
            "bytes_in": 3 + 5 + 4 + 2,
            "bytes_out": 6 + 4,
            "errors": 1,
        },
    )


def test_server_without_handler_counts_and_sends_nothing(make_server, make_udp, wait_until):
    server = make_server(None)
    sock = make_udp()
    sock.sendto(b"anyone?", server.address)
    wait_until(lambda: server.stats["datagrams_in"] == 1, "the datagram to be counted")
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(100)


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle


def test_address_running_and_repr(make_server):
    server = make_server(reverse, start=False)
    host, port = server.address
    assert host == HOST and port != 0
    assert not server.running
    assert "UdpServer" in repr(server) and str(port) in repr(server)
    server.start()
    assert server.running
    assert "running" in repr(server)
    assert server.address == (host, port)
    server.stop()
    assert not server.running
    assert "stopped" in repr(server)


def test_default_address_is_loopback_on_a_free_port():
    server = rsock.UdpServer()
    try:
        host, port = server.address
        assert host == HOST and port != 0
    finally:
        server.stop()


def test_start_twice_stop_twice_and_start_after_stop(make_server, make_udp):
    server = make_server(reverse)
    server.start()
    sock = make_udp()
    sock.sendto(b"ab", server.address)
    assert sock.recv(10) == b"ba"
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        server.start()
    never_started = make_server(reverse, start=False)
    never_started.stop()
    with pytest.raises(RuntimeError):
        never_started.start()


def test_stop_stops_handling_and_frees_the_port(make_server, make_udp):
    seen = []

    def on_datagram(data, addr):
        seen.append(data)
        return data

    server = make_server(on_datagram)
    sender = make_udp()
    sender.sendto(b"before", server.address)
    assert sender.recv(10) == b"before"
    server.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as successor:
        successor.settimeout(TIMEOUT)
        successor.bind(server.address)
        sender.sendto(b"after", server.address)
        assert successor.recv(10) == b"after"
    assert seen == [b"before"]


def test_a_server_in_a_cycle_with_its_handler_is_collected_once_stopped_or_if_never_started():
    """An object holds the server and the handler is a bound method of it: once the server is stopped (or if it
    never started), the cycle is collected and the port is free again (it used to be kept for good). The one never
    started nor stopped warns as it goes, as a socket collected open does."""

    class Responder:
        def __init__(self):
            self.server = rsock.UdpServer((HOST, 0), self.on_datagram)

        def on_datagram(self, data, addr):
            return self.server.address and data

    never_started, stopped = Responder(), Responder()
    stopped.server.start()
    stopped.server.stop()
    ports = [never_started.server.address[1], stopped.server.address[1]]
    holders = [weakref.ref(never_started), weakref.ref(stopped)]
    with pytest.warns(ResourceWarning, match=r"^unclosed <UdpServer 127\.0\.0\.1:\d+ not started"):
        del never_started, stopped
        gc.collect()
    assert [holder() for holder in holders] == [None, None]
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind((HOST, port))


def test_stop_from_its_own_handler_returns_at_once_and_the_reply_still_goes(make_server, make_udp, wait_until):
    """The handler runs on the server's receive thread, which closes the socket once the handler returns: stop()
    called there returns at once rather than wait on itself, the handler's reply is sent, and then the port is free."""
    took = []

    def on_datagram(data, addr):
        started = time.monotonic()
        server.stop(timeout=TIMEOUT)
        took.append(time.monotonic() - started)
        return b"bye"

    server = make_server(on_datagram)
    sender = make_udp()
    sender.sendto(b"stop", server.address)
    assert sender.recv(10) == b"bye"
    assert took[0] < 1.0
    assert not server.running

    def port_free():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as successor:
            try:
                successor.bind(server.address)
            except OSError:
                return False
            return True

    wait_until(port_free, "the port to be free")


def test_stop_from_a_tcp_handler_waits_for_the_udp_handler_up_to_its_timeout(make_server, make_udp):
    """A UdpServer's handler runs on the server's own thread, not on the io thread of a TcpServer's handler: stop()
    called in a TcpServer handler waits up to its timeout for it, then gives up the port, as stop() does anywhere
    else, so that the TCP handler can bind the port again."""
    entered = threading.Event()
    release = threading.Event()

    def slow(data, addr):
        entered.set()
        release.wait(TIMEOUT)
        return data

    udp = make_server(slow)

    def on_message(conn, data):
        started = time.monotonic()
        udp.stop(timeout=0.3)
        took = time.monotonic() - started
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as successor:
            successor.bind(udp.address)
        return b"%.3f" % took

    sender = make_udp()
    sender.sendto(b"slow", udp.address)
    assert entered.wait(TIMEOUT)
    try:
        with rsock.TcpServer((HOST, 0), on_message) as tcp, rsock.TcpClient(tcp.address, timeout=TIMEOUT) as client:
            took = float(client.request(b"stop the UDP server"))  # the port was free after it
            assert 0.3 <= took < 3.0  # the timeout, then at most one second for the handler
    finally:
        release.set()


def test_stop_gives_up_the_port_of_a_handler_still_running_at_its_timeout(make_server, make_udp, wait_until, caplog):
    """A handler still running when stop()'s timeout ends keeps its thread, but not the port: a new server can bind
    it at once, as after a TCP server's stop(), and the late reply does not leave from it."""
    caplog.set_level(logging.ERROR, logger="rsock")
    entered = threading.Event()
    release = threading.Event()
    ended = []

    def on_datagram(data, addr):
        entered.set()
        release.wait(TIMEOUT)
        ended.append(data)
        return b"late " + data

    before = receive_threads()
    server = make_server(on_datagram)
    wait_until(lambda: receive_threads() - before, "the server's receive thread")
    ours = receive_threads() - before
    sender = make_udp()
    sender.sendto(b"slow", server.address)
    assert entered.wait(TIMEOUT)
    started = time.monotonic()
    server.stop(0.1)
    assert time.monotonic() - started < 3.0  # the timeout, then at most one second for the handler
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as successor:
        successor.settimeout(TIMEOUT)
        successor.bind(server.address)
        release.set()
        wait_until(lambda: ended == [b"slow"], "the slow handler to end")
        wait_until(lambda: not (ours & receive_threads()), "the receive thread to end")
        sender.sendto(b"after", server.address)
        assert successor.recv(10) == b"after"
    assert server.stats["errors"] == 1  # the late reply, which had nowhere to go
    assert [r.getMessage() for r in rsock_errors(caplog)] == [
        f"reply to a datagram from {host_port(sender)} not sent: stop() timed out while the handler ran, and gave up "
        "the port"
    ]
    sender.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sender.recv(100)


def receive_threads():
    """The ids of this process's threads that receive for a UdpServer."""
    return named_threads("rsock-udp")


def test_each_server_receives_on_its_own_thread_which_stop_ends_while_it_waits(make_server, make_udp, wait_until):
    before = receive_threads()  # may still hold the threads of servers stopped just before this test
    servers = [make_server(reverse) for _ in range(3)]
    wait_until(lambda: len(receive_threads() - before) == 3, "a receive thread for each server")
    ours = receive_threads() - before
    sock = make_udp()
    for server in servers:
        sock.sendto(b"ab", server.address)
        assert sock.recv(10) == b"ba"
    for server in servers:
        server.stop()  # each thread is blocked waiting for a datagram: stop must wake it
        assert not server.running
    wait_until(lambda: not (receive_threads() & ours), "the receive threads to end")
    assert [server.stats["datagrams_in"] for server in servers] == [1, 1, 1]


def test_the_receive_thread_sleeps_once_close_datagrams_stop_coming(make_server, make_udp, wait_until):
    """Between datagrams that come close together the receive thread polls the socket rather than sleeping on it;
    once they stop coming it sleeps, spending no CPU, and stop() still ends it."""
    before = receive_threads()
    server = make_server(lambda data, addr: data)
    wait_until(lambda: len(receive_threads() - before) == 1, "the server's receive thread")
    (tid,) = receive_threads() - before
    sock = make_udp()
    for first in range(0, 2000, 20):  # bursts of requests microseconds apart, answered, so never a flood pause
        for n in range(first, first + 20):
            sock.sendto(b"%d" % n, server.address)
        assert [sock.recv(16) for _ in range(20)] == [b"%d" % n for n in range(first, first + 20)]
    time.sleep(0.05)
    idle_from = cpu_ticks(tid)
    time.sleep(1.0)
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    assert cpu_ticks(tid) - idle_from <= ticks_per_second // 20, "the receive thread kept polling an idle socket"
    server.stop()
    wait_until(lambda: tid not in receive_threads(), "the receive thread to end")


def test_a_handler_can_stop_its_own_server(make_server, make_udp, wait_until):
    """stop() from the handler only begins the stop: waiting there would wait on the handler's own thread."""
    stopped_inside = []

    def on_datagram(data, addr):
        server.stop()
        stopped_inside.append(server.running)
        return data

    server = make_server(on_datagram)
    sock = make_udp()
    sock.sendto(b"last", server.address)
    assert sock.recv(10) == b"last"
    wait_until(lambda: not server.running, "the server to stop")
    assert stopped_inside == [False]


def test_context_manager_starts_and_stops(make_udp):
    sock = make_udp()
    with rsock.UdpServer((HOST, 0), reverse) as server:
        assert isinstance(server, rsock.UdpServer)
        assert server.running
        sock.sendto(b"abc", server.address)
        assert sock.recv(10) == b"cba"
    assert not server.running
    with pytest.raises(ZeroDivisionError), rsock.UdpServer((HOST, 0), reverse) as server:
        1 / 0  # noqa: B018
    assert not server.running


def test_serve_forever_serves_until_stop(make_server, make_udp, wait_until):
    server = make_server(reverse, start=False)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        wait_until(lambda: server.running, "serve_forever to start")
        sock = make_udp()
        sock.sendto(b"xyz", server.address)
        assert sock.recv(10) == b"zyx"
    finally:
        server.stop()
        serving.join(TIMEOUT)
    assert not serving.is_alive()


CTRL_C_CHILD = textwrap.dedent(
    """
    import socket
    import rsock

    server = rsock.UdpServer(("127.0.0.1", 0), lambda data, addr: data)
    port = server.address[1]
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted", server.running, flush=True)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))
        probe.close()
        print("port free", flush=True)
        raise
    """
)


def test_ctrl_c_stops_serve_forever_and_frees_the_port(make_udp):
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = int(lines.get(timeout=TIMEOUT))
        sock = make_udp()
        sock.sendto(b"ping", (HOST, port))
        assert sock.recv(10) == b"ping"  # serving
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=TIMEOUT)
        took = time.monotonic() - sent
        out = []
        while (line := lines.get(timeout=TIMEOUT)) is not None:
            out.append(line)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert out == ["interrupted False", "port free"]
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0
    assert took < 5


@pytest.mark.parametrize("flag", [True, 1], ids=["True", "1"])
def test_reuse_port_lets_two_servers_share_a_port(make_server, flag):
    """reuse_port is taken by its truth, as the stdlib's create_server() takes it."""
    first = make_server(lambda data, addr: b"first", reuse_port=flag)
    second = make_server(lambda data, addr: b"second", reuse_port=flag, address=first.address)
    assert second.address == first.address
    replies = set()
    for _ in range(40):
        with rsock.UdpClient() as client:
            replies.add(client.request(b"who", first.address, timeout=1.0))
    assert replies == {b"first", b"second"}


# ---------------------------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("value", [5, "handler", b"x"])
def test_non_callable_handler_is_a_type_error(value):
    with pytest.raises(TypeError, match="on_datagram"):
        rsock.UdpServer((HOST, 0), value)


def _take_data_only(data):
    return data


@pytest.mark.parametrize("server_type", [rsock.UdpServer, rsock.aio.UdpServer])
def test_a_handler_that_cannot_take_data_and_address_is_a_type_error_at_once(server_type):
    with pytest.raises(TypeError) as info:
        server_type((HOST, 0), _take_data_only)
    assert str(info.value) == (
        "on_datagram is called as on_datagram(data, address), which _take_data_only(data) cannot take: "
        "too many positional arguments"
    )


def test_port_in_use_is_eaddrinuse_naming_the_address(make_server):
    holder = make_server(reverse)
    port = holder.address[1]
    with pytest.raises(OSError) as info:
        rsock.UdpServer((HOST, port), reverse)
    assert info.value.errno == errno.EADDRINUSE
    assert HOST in str(info.value) and str(port) in str(info.value)


async def _async_echo(data, address):
    return data


@pytest.mark.parametrize("how", server_starts.STARTS)
def test_an_async_handler_is_a_type_error_as_the_sync_server_starts(how):
    """A sync UdpServer with an `async def` on_datagram answered nothing: each call returned a coroutine nothing ran,
    logged as an error. It is refused as the server starts, before any datagram."""
    server = rsock.UdpServer(("127.0.0.1", 0), _async_echo)
    with pytest.raises(TypeError, match=r"^on_datagram is an async function; .* need rsock\.aio\.UdpServer"):
        server_starts.start(server, how)
    assert not server.running
    server.stop()
