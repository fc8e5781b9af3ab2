"""rsock: Python sockets with a Rust core.

``import rsock as socket`` gives the standard ``socket`` module's API, with every socket operation done
by rsock's native code.
"""

from rsock import sockets as _sockets
from rsock._rsock import __version__
from rsock.sockets import *  # noqa: F403 - the whole socket-module surface
from rsock.sockets import _GLOBAL_DEFAULT_TIMEOUT, SocketIO  # noqa: F401 - used as socket.<name>

__all__ = [*_sockets.__all__, "__version__"]
