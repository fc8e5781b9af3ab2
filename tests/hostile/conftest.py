"""What the hostile-input tests share: the count of inputs each test tried, printed as FIGURE lines (shown even
under pytest's output capture) for the README's table, and the int-like argument their strategies build."""

import contextlib

import pytest

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
