"""What the hostile-input tests share: the count of inputs each test tried, printed as FIGURE lines (shown even
under pytest's output capture) for the README's table, hypothesis settings, and the int-like argument their
strategies build."""

import contextlib
import sys

import pytest
from hypothesis import HealthCheck, settings

from tests.stress.conftest import scale

# On a failure hypothesis imports its patch writer (libcst), whose import raises a DeprecationWarning that
# pytest's filterwarnings=error turns into an INTERNALERROR hiding the failure; it would also write patch
# files under .hypothesis/. Without it hypothesis just reports the failing example.
sys.modules.setdefault("hypothesis.extra._patching", None)


def property_settings(quick_examples, *health_checks):
    """hypothesis settings for a property: `quick_examples` examples (5,000 under RSOCK_STRESS=full), no deadline,
    no example database, and HealthCheck.too_slow plus `health_checks` suppressed."""
    return settings(
        max_examples=scale(quick_examples, 5000),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, *health_checks],
    )


# Each test adds to TRIED["test"] per input it tries; the fixtures below report and total the counts.
TRIED = {"test": 0, "module": 0}


def _emit(request, line):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print(f"\n{line}", flush=True)


@pytest.fixture(autouse=True)
def _count_inputs(request):
    TRIED["test"] = 0
    yield
    TRIED["module"] += TRIED["test"]
    if TRIED["test"]:
        _emit(request, f"FIGURE: hostile inputs tried: {TRIED['test']} [{request.node.nodeid}]")


@pytest.fixture(scope="module", autouse=True)
def _count_module(request):
    TRIED["module"] = 0
    yield
    _emit(request, f"FIGURE: hostile inputs tried: {TRIED['module']} [{request.node.nodeid} total]")


class Index:
    """An int-like object: what operator.index() accepts."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"Index({self.value!r})"
