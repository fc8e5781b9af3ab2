"""Shared fixtures: `sockmod` runs a test over the stdlib `socket` module and over `rsock`, so each
behaviour is checked against the stdlib's."""

import socket as stdlib_socket

import pytest

import rsock


@pytest.fixture(params=["socket", "rsock"])
def sockmod(request):
    """The module under test: the stdlib's `socket` or `rsock` (used as `import rsock as socket`)."""
    return stdlib_socket if request.param == "socket" else rsock
