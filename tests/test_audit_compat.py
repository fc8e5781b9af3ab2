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
    runs.update({(module, REFUSING_ACCESS): run(module, REFUSING_ACCESS) for module in ("socket", "rsock")})
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


# --- rsock's own clients and servers: the events of the stdlib calls they stand for (create_server(),
# create_connection(), a bound UDP socket, sendto()), with None in place of the socket (theirs live in Rust) -------


def _sockets_as_none(value):
    if isinstance(value, str) and value.startswith("<socket "):
        return None
    if isinstance(value, list):
        return [_sockets_as_none(item) for item in value]
    return value


@pytest.mark.parametrize("mode", [*MODES, REFUSING_ACCESS])
@pytest.mark.parametrize("case", sorted(audit_events.HIGH_LEVEL))
def test_own_types_raise_the_events_of_the_stdlib_calls_they_stand_for(reports, mode, case):
    assert reports["rsock", mode][case]["events"] == _sockets_as_none(reports["socket", mode][case]["events"])


REFUSED_UDP_SENDS = ["Refused(socket.sendto)", "nothing"] * 2
OWN_TYPES_OBSERVED = {
    "record": {
        "tcp": ["ok", "ok", "accepted"],
        # request(retries=2) to a port that never answers: one event for its three datagrams.
        "udp": ["ok", "ok", "ok", "one", "TimeoutError(errno=None)", "unanswered"],
        # What the client sees of the server, which accepts and replies on its own threads.
        "tcp_accept": ["hello"],
        "udp_reply": ["hello"],
    },
    "refuse": {
        "tcp": ["Refused(socket.__new__)", "Refused(socket.getaddrinfo)", "no connection"],
        "udp": ["Refused(socket.__new__)"] * 2 + REFUSED_UDP_SENDS,
        "tcp_accept": ["closed"],
        "udp_reply": ["no reply"],
    },
    REFUSING_ACCESS: {
        "tcp": ["Refused(socket.bind)", "Refused(socket.connect)", "no connection"],
        "udp": ["Refused(socket.bind)"] * 2 + REFUSED_UDP_SENDS,
        "tcp_accept": ["hello"],
        "udp_reply": ["no reply"],
    },
}


@pytest.mark.parametrize("mode", [*MODES, REFUSING_ACCESS])
def test_a_refusing_hook_stops_rsocks_own_types(reports, mode):
    observed = {
        case: report["observed"] for case, report in reports["rsock", mode].items() if case in audit_events.HIGH_LEVEL
    }
    assert observed == OWN_TYPES_OBSERVED[mode]
