"""rsock: Python sockets with a Rust core.

``import rsock as socket`` gives the standard ``socket`` module's API, with every socket operation done
by rsock's native code. ``TcpServer`` serves every connection from one Rust (tokio) thread and
``UdpServer`` receives in batches on a Rust thread of its own, each entering Python only to run your
handlers; ``TcpClient`` and ``UdpClient`` are their clients.
"""

# `threading` takes the thread that first imports it for the main thread. rsock's I/O thread logs through
# `logging`, which imports `threading`: were that the first import, interpreter exit would wait for the I/O
# thread as if it were the main thread, for ever. Importing both here keeps the real main thread the main one.
import atexit
import logging as _logging  # noqa: F401
import socket as _stdlib_socket
import threading as _threading  # noqa: F401

from rsock import _multiprocessing, _rsock

if not _rsock._in_main_interpreter():
    raise ImportError("rsock does not support subinterpreters: its servers belong to the whole process")
# Public as rsock.Connection and so on. Connection, PanicException and __version__ are not in __all__ (see below),
# so they are re-exported with `as`, which tells type checkers (mypy --strict, pyright) that they are public all
# the same; the others are in __all__.
from rsock._rsock import Connection as Connection
from rsock._rsock import PanicException as PanicException
from rsock._rsock import TcpClient, TcpServer, UdpClient, UdpServer
from rsock._rsock import __version__ as __version__
from rsock.sockets import *  # noqa: F403 - the whole socket-module surface
from rsock.sockets import (  # noqa: F401 - private names code written for the socket module uses
    _GLOBAL_DEFAULT_TIMEOUT,  # passed along to create_connection() and the like
    _GiveupOnSendfile,  # raised by a subclass's _sendfile_use_sendfile()
)

# What `from rsock import *` gives: what `from socket import *` gives, and the servers and clients. Not
# __version__, Connection or the errno names, which would overwrite the importing module's own.
__all__ = [*_stdlib_socket.__all__, "TcpClient", "TcpServer", "UdpClient", "UdpServer"]

# multiprocessing passes rsock sockets to other processes, as it passes the stdlib's.
_multiprocessing.install()

# Stop running servers before the interpreter tears down, so no handler is entered during shutdown.
atexit.register(_rsock._stop_all_servers, 1.0)
