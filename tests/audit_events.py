"""Run as `python tests/audit_events.py MODULE MODE`: installs an audit hook (PEP 578), runs every case below
over MODULE (`socket` or `rsock`) and prints, as one JSON object, each case's audit events and outcome.

MODE "record" lets every event through; "refuse" raises Refused from the hook for every socket event, as a
sandbox refusing network access would, and "refuse=EVENT,..." for those events only. Audit hooks cannot be
removed, so this runs in a process of its own; tests/test_audit_compat.py compares the two modules' reports.
The report also holds the cases of rsock's own clients and servers (`HIGH_LEVEL`), over the stdlib with the
calls they stand for.
"""

import importlib
import json
import os
import sys
from contextlib import contextmanager

MODULE, MODE = sys.argv[1:3] if __name__ == "__main__" else ("socket", "record")
REFUSED_ONLY = set(MODE.partition("=")[2].split(",")) - {""}  # empty: every socket event, when refusing
m = importlib.import_module(MODULE)

LOCALHOST = "127.0.0.1"
_active = False
_events = []


class Refused(Exception):
    pass


def _normalize(value):
    if isinstance(value, m.socket):
        return f"<socket family={int(value.family)} type={int(value.type)}>"
    if isinstance(value, (tuple, list)):
        if len(value) >= 2 and isinstance(value[0], str) and isinstance(value[1], int) and value[1] >= 1024:
            value = (value[0], "<port>", *value[2:])  # a port bound to 0, different in every run
        return [_normalize(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return repr(value)
    if value is None or isinstance(value, (int, str, float)):
        return value
    return f"<{type(value).__name__}>"


def _hook(event, args):
    if _active and event.startswith("socket."):
        _events.append([event, _normalize(args)])
        if MODE.startswith("refuse") and (not REFUSED_ONLY or event in REFUSED_ONLY):
            raise Refused(event)


@contextmanager
def _audited():
    global _active
    _active = True
    try:
        yield
    finally:
        _active = False


def attempt(call):
    """Runs call with the hook active: "ok", or the exception's type (with its errno, or the refused event)."""
    with _audited():
        try:
            call()
        except Refused as refused:
            return f"Refused({refused})"
        except OSError as err:
            return f"{type(err).__name__}(errno={err.errno})"
        except Exception as err:  # the type is the outcome being compared
            return type(err).__name__
    return "ok"


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


def listener():
    server = m.socket()
    server.bind((LOCALHOST, 0))
    server.listen()
    return server


def closed_port():
    # A port nothing listens on: bound, never listened to, held open for the case's duration.
    held = m.socket()
    held.bind((LOCALHOST, 0))
    return held, held.getsockname()


def udp_pair():
    receiver = m.socket(m.AF_INET, m.SOCK_DGRAM)
    receiver.bind((LOCALHOST, 0))
    receiver.setblocking(False)
    sender = m.socket(m.AF_INET, m.SOCK_DGRAM)
    return sender, receiver


def received(receiver):
    # Loopback delivers a datagram within the sender's sendto(), so what has not arrived was not sent.
    try:
        return receiver.recv(100).decode()
    except BlockingIOError:
        return "nothing"


# --- the cases: each returns what it observed besides the events --------------------------------------------


def case_socket_default():
    before = open_descriptors()
    outcome = attempt(lambda: m.socket().close())
    return outcome, open_descriptors() - before


def case_socket_kept_open_when_allowed():
    kept = []
    before = open_descriptors()
    outcome = attempt(lambda: kept.append(m.socket(m.AF_INET, m.SOCK_DGRAM)))
    opened = open_descriptors() - before
    for sock in kept:
        sock.close()
    return outcome, opened


def case_socket_arguments():
    return [
        attempt(lambda: m.socket(m.AF_INET6, m.SOCK_DGRAM, 0).close()),
        attempt(lambda: m.socket(m.AF_INET, m.SOCK_STREAM | m.SOCK_NONBLOCK).close()),
        attempt(lambda: m.socket(-1, -1, -1).close()),
        attempt(lambda: m.socket(m.AF_UNIX, m.SOCK_STREAM).close()),
        attempt(lambda: m.socket(12345)),
        attempt(lambda: m.socket("x")),
    ]


def case_socket_fileno():
    server = listener()
    fd = os.dup(server.fileno())
    outcome = attempt(lambda: m.socket(fileno=fd).close())
    if outcome != "ok":
        os.close(fd)
    server.close()
    return [outcome, attempt(lambda: m.socket(fileno=-5)), attempt(lambda: m.socket(fileno="x"))]


def case_socketpair_dup_fromfd():
    server = listener()
    outcomes = [
        attempt(lambda: [s.close() for s in m.socketpair()]),
        attempt(lambda: server.dup().close()),
        attempt(lambda: m.fromfd(server.fileno(), m.AF_INET, m.SOCK_STREAM).close()),
    ]
    server.close()
    return outcomes


def case_accept():
    server = listener()
    client = m.create_connection(server.getsockname())
    outcome = attempt(lambda: server.accept()[0].close())
    client.close()
    server.close()
    return outcome


def case_bind():
    sock = m.socket()
    outcome = attempt(lambda: sock.bind((LOCALHOST, 0)))
    bound = sock.getsockname()[1] != 0
    sock.close()
    return outcome, bound


def case_bind_bad_address():
    with m.socket() as sock:
        return [attempt(lambda: sock.bind((LOCALHOST,))), attempt(lambda: sock.bind((LOCALHOST, 1 << 20)))]


def case_connect():
    server = listener()
    client = m.socket()
    outcome = attempt(lambda: client.connect(server.getsockname()))
    connected = attempt(client.getpeername)
    client.close()
    server.close()
    return outcome, connected


def case_connect_ex():
    held, address = closed_port()
    client = m.socket()
    result = []
    outcome = attempt(lambda: result.append(client.connect_ex(address)))
    client.close()
    held.close()
    return outcome, result


def case_sendto():
    sender, receiver = udp_pair()
    address = receiver.getsockname()
    outcomes = [
        attempt(lambda: sender.sendto(b"two", address)),
        received(receiver),
        attempt(lambda: sender.sendto(b"three", 0, address)),
        received(receiver),
        attempt(lambda: sender.sendto("text", address)),
        attempt(lambda: sender.sendto(b"x", "flags", address)),
        attempt(lambda: sender.sendto(b"x", (LOCALHOST,))),
    ]
    sender.close()
    receiver.close()
    return outcomes


def case_sendmsg():
    sender, receiver = udp_pair()
    address = receiver.getsockname()
    outcomes = [
        attempt(lambda: sender.sendmsg([b"to", b"address"], [], 0, address)),
        received(receiver),
        attempt(lambda: sender.sendmsg([b"x"], [(1, 2)], 0, address)),
        attempt(lambda: sender.sendmsg(["text"], [], 0, address)),
        attempt(lambda: sender.sendmsg([b"x"], [], 0, (LOCALHOST,))),
        attempt(lambda: sender.sendmsg([b"x"], [], "flags", address)),
    ]
    sender.connect(address)
    outcomes += [
        attempt(lambda: sender.sendmsg([b"connected"])),
        received(receiver),
        attempt(lambda: sender.sendmsg([b"none"], [], 0, None)),
        received(receiver),
    ]
    sender.close()
    receiver.close()
    return outcomes


def case_create_connection_and_server():
    server = listener()
    outcomes = [
        attempt(lambda: m.create_connection(server.getsockname()).close()),
        attempt(lambda: m.create_server((LOCALHOST, 0)).close()),
    ]
    server.close()
    return outcomes


def case_getaddrinfo():
    return [
        attempt(lambda: m.getaddrinfo("localhost", 80)),
        attempt(lambda: m.getaddrinfo(b"127.0.0.1", "80", m.AF_INET, m.SOCK_STREAM)),
        attempt(lambda: m.getaddrinfo(None, 0, m.AF_INET, m.SOCK_DGRAM, 0, m.AI_PASSIVE)),
        attempt(lambda: m.getaddrinfo(LOCALHOST, None, proto=m.IPPROTO_UDP)),
        attempt(lambda: m.getaddrinfo("a" * 70 + ".example", 80)),
        attempt(lambda: m.getaddrinfo(LOCALHOST, 1.5)),
        attempt(lambda: m.getaddrinfo(LOCALHOST, 80, "family")),
        attempt(lambda: m.getaddrinfo(5, 80)),
        attempt(lambda: m.getaddrinfo(LOCALHOST, 2**70)),
    ]


def case_host_lookups():
    return [
        attempt(lambda: m.gethostbyname("localhost")),
        attempt(lambda: m.gethostbyname(b"127.0.0.1")),
        attempt(lambda: m.gethostbyname(bytearray(b"127.0.0.1"))),
        attempt(lambda: m.gethostbyname(5)),
        attempt(lambda: m.gethostbyname_ex(LOCALHOST)),
        attempt(lambda: m.gethostbyaddr(LOCALHOST)),
        attempt(lambda: m.gethostbyaddr(5)),
        attempt(m.gethostname),
    ]


def case_getnameinfo():
    numeric = m.NI_NUMERICHOST | m.NI_NUMERICSERV
    return [
        attempt(lambda: m.getnameinfo((LOCALHOST, 80), numeric)),
        attempt(lambda: m.getnameinfo(("::1", 80, 0, 0), numeric)),
        attempt(lambda: m.getnameinfo((LOCALHOST,), numeric)),
        attempt(lambda: m.getnameinfo((LOCALHOST, 80), "flags")),
        attempt(lambda: m.getnameinfo(("::1", 80, 1 << 20, 0), numeric)),
        attempt(lambda: m.getnameinfo(("nowhere.invalid", 80), numeric)),
        attempt(lambda: m.getnameinfo([LOCALHOST, 80], numeric)),
    ]


def case_service_lookups():
    return [attempt(lambda: m.getservbyname("http", "tcp")), attempt(lambda: m.getservbyport(80, "tcp"))]


# --- rsock's own clients and servers, against the stdlib calls they stand for -----------------------------------
# Over the stdlib: create_server() for a TcpServer, create_connection() for a TcpClient, a bound UDP socket for a
# UdpServer or UdpClient, one sendto() for a UdpClient.request().


def _echo(_conn, data):
    return data


def _udp_socket(address):
    sock = m.socket(m.AF_INET, m.SOCK_DGRAM)
    sock.bind(address)
    return sock


def _close(opened):
    (opened.stop if hasattr(opened, "stop") else opened.close)()


def highlevel_tcp():
    ours = MODULE == "rsock"
    made = []
    make_server = m.TcpServer if ours else lambda address, _handler: m.create_server(address)
    outcomes = [attempt(lambda: made.append(make_server((LOCALHOST, 0), _echo)))]
    connect = m.TcpClient if ours else m.create_connection
    with m.create_server((LOCALHOST, 0)) as listening:
        listening.setblocking(False)
        port = listening.getsockname()[1]
        outcomes.append(attempt(lambda: made.append(connect((LOCALHOST, port), timeout=5))))
        try:
            listening.accept()[0].close()
            outcomes.append("accepted")
        except BlockingIOError:
            outcomes.append("no connection")
    for opened in made:
        _close(opened)
    return outcomes


def highlevel_udp():
    ours = MODULE == "rsock"
    made = []
    make_server = m.UdpServer if ours else lambda address, _handler: _udp_socket(address)
    make_client = m.UdpClient if ours else _udp_socket
    outcomes = [
        attempt(lambda: made.append(make_server((LOCALHOST, 0), _echo))),
        attempt(lambda: made.append(make_client((LOCALHOST, 0)))),
    ]
    client = m.UdpClient() if ours else m.socket(m.AF_INET, m.SOCK_DGRAM)
    sender, receiver = udp_pair()
    address = receiver.getsockname()
    if ours:
        request = lambda: client.request(b"unanswered", address, timeout=0.01, retries=2)  # noqa: E731
    else:
        request = lambda: client.sendto(b"unanswered", address)  # noqa: E731
    outcomes += [
        attempt(lambda: client.sendto(b"one", address)),
        received(receiver),
        attempt(request),
        received(receiver),
    ]
    for opened in (*made, client, sender, receiver):
        _close(opened)
    return outcomes


def _client_sees(receive):
    """What a client reads from a server under test: its reply, or how the server ended or ignored it."""
    try:
        return receive().decode() or "closed"
    except ConnectionResetError:
        return "closed"
    except TimeoutError:
        return "no reply"


def highlevel_tcp_accept():
    """A connection a server accepts: an asyncio server's accept() makes a socket (socket.__new__), as
    socket.accept() does; a TcpServer raises the same event, and closes a connection a hook refuses."""
    ours = MODULE == "rsock"
    server = m.TcpServer((LOCALHOST, 0), _echo) if ours else m.create_server((LOCALHOST, 0))
    address = server.address if ours else server.getsockname()
    # Connected (in the listener's backlog) before the hook watches; the server accepts while it does.
    with m.create_connection(address, timeout=5) as client:
        client.sendall(b"hello")
        with _audited():
            if ours:
                server.start()
                outcome = [_client_sees(lambda: client.recv(100))]
            else:
                outcome = [attempt(lambda: _echo_one(server))]
    _close(server)
    return outcome


def _echo_one(listening):
    conn, _ = listening.accept()
    with conn:
        conn.sendall(conn.recv(100))


def highlevel_udp_reply():
    """A reply a server sends: an asyncio UDP server's transport sendto() raises socket.sendto, as
    socket.sendto() does; a UdpServer raises the same event, and sends no reply a hook refuses."""
    ours = MODULE == "rsock"
    server = m.UdpServer((LOCALHOST, 0), lambda data, _sender: data) if ours else _udp_socket((LOCALHOST, 0))
    address = server.address if ours else server.getsockname()
    client = _udp_socket((LOCALHOST, 0))
    client.settimeout(0.3)
    # Waiting in the server's socket before the hook watches; the server answers it while it does.
    client.sendto(b"hello", address)
    with _audited():
        if ours:
            server.start()
            outcome = [_client_sees(lambda: client.recv(100))]
        else:
            data, sender = server.recvfrom(100)
            outcome = [attempt(lambda: server.sendto(data, sender))]
    _close(server)
    client.close()
    return outcome


CASES = {name[len("case_") :]: case for name, case in globals().items() if name.startswith("case_")}
HIGH_LEVEL = {name[len("highlevel_") :]: case for name, case in globals().items() if name.startswith("highlevel_")}

if __name__ == "__main__":
    sys.addaudithook(_hook)
    report = {}
    for name, case in {**CASES, **HIGH_LEVEL}.items():
        _events.clear()
        observed = case()
        report[name] = {"events": list(_events), "observed": _normalize(observed)}
    print(json.dumps(report))
