"""Audit events (PEP 578): rsock raises the events CPython's socket module raises, with the same arguments, at
the same point of each call: an argument the stdlib rejects before its event is rejected before rsock's, and a
hook that raises stops the call before anything is opened, bound, connected or sent.

Each module runs tests/audit_events.py in a process of its own (an audit hook cannot be removed), once letting
every event through and once refusing them all; each case's events and outcome are compared.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import audit_events
from tests.subprocesses import TIMEOUT

SCRIPT = Path(audit_events.__file__)
MODES = ("record", "refuse")
REFUSING_ACCESS = "refuse=socket.bind,socket.connect,socket.sendto"  # name lookups let through


@pytest.fixture(scope="module")
def reports():
    def run(module, mode):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), module, mode], capture_output=True, text=True, timeout=TIMEOUT, check=True
        )
        return json.loads(done.stdout)

    runs = {(module, mode): run(module, mode) for module in ("socket", "rsock") for mode in MODES}
    runs["rsock", REFUSING_ACCESS] = run("rsock", REFUSING_ACCESS)
    return runs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(audit_events.CASES))
def test_same_events_and_outcomes_as_the_stdlib(reports, mode, case):
    assert reports["rsock", mode][case] == reports["socket", mode][case]


@pytest.mark.parametrize("case", sorted(audit_events.CASES))
def test_every_case_raises_events(reports, case):
    # The comparison above would hold for two modules that raised nothing: each case must see events.
    assert reports["rsock", "record"][case]["events"] or case == "bind_bad_address"


def test_a_refusing_hook_stops_the_call(reports):
    refused = reports["rsock", "refuse"]
    assert refused["socket_default"]["observed"] == ["Refused(socket.__new__)", 0]  # no descriptor opened
    assert refused["bind"]["observed"] == ["Refused(socket.bind)", False]  # still unbound
    assert refused["connect"]["observed"] == ["Refused(socket.connect)", "OSError(errno=107)"]  # ENOTCONN
    assert refused["sendto"]["observed"][:4] == ["Refused(socket.sendto)", "nothing"] * 2
    allowed = reports["rsock", "record"]
    assert allowed["socket_kept_open_when_allowed"]["observed"] == ["ok", 1]
    assert allowed["sendto"]["observed"][:4] == ["ok", "two", "ok", "three"]


# --- rsock's own clients and servers: the events create_server()/create_connection() and a UDP socket raise,
# with None in place of the socket (theirs live in Rust) --------------------------------------------------------

LOOKUP_TCP = ["socket.getaddrinfo", ["127.0.0.1", 0, 0, 1, 0]]
LOOKUP_UDP = ["socket.getaddrinfo", ["127.0.0.1", 0, 0, 2, 0]]
BIND = ["socket.bind", [None, ["127.0.0.1", 0]]]
SENDTO = ["socket.sendto", [None, ["127.0.0.1", "<port>"]]]


def test_tcp_server_and_client_events(reports):
    tcp = reports["rsock", "record"]["tcp"]
    connect = ["socket.connect", [None, ["127.0.0.1", "<port>"]]]
    lookup = ["socket.getaddrinfo", ["127.0.0.1", "<port>", 0, 1, 0]]
    assert tcp == {"events": [LOOKUP_TCP, BIND, lookup, connect], "observed": ["ok", "ok", "accepted"]}


def test_udp_server_and_client_events(reports):
    udp = reports["rsock", "record"]["udp"]
    # request() with retries=2 sends three times unanswered: an event for each datagram.
    assert udp["events"] == [LOOKUP_UDP, BIND, LOOKUP_UDP, BIND] + [SENDTO] * 4
    assert udp["observed"] == ["ok", "ok", "ok", "one", "TimeoutError(errno=None)", "unanswered"]


def test_refused_events_stop_rsocks_own_types(reports):
    refused = reports["rsock", "refuse"]
    assert refused["tcp"]["observed"] == ["Refused(socket.getaddrinfo)"] * 2 + ["no connection"]
    access = reports["rsock", REFUSING_ACCESS]
    assert access["tcp"]["observed"] == ["Refused(socket.bind)", "Refused(socket.connect)", "no connection"]
    assert access["udp"]["observed"] == ["Refused(socket.bind)"] * 2 + ["Refused(socket.sendto)", "nothing"] * 2
