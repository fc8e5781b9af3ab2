"""rsock for asyncio: the stream API of ``asyncio`` (``open_connection``, ``start_server``, readers and
writers) and rsock's high-level clients and servers, awaitable on whatever loop is running (the default
loop, uvloop, a notebook's, pytest-asyncio's).

The streams are driven by the running loop: it reports when a socket is ready, and rsock's native
transport does the recv/send calls, the buffering and the framing on the loop's own thread. A read whose
data is already buffered completes without a trip through the loop.

Code written for asyncio streams runs by changing the import::

    from rsock import aio as asyncio_streams
    reader, writer = await asyncio_streams.open_connection("127.0.0.1", 8888)
"""

# Annotations only for type checkers: postponed (never evaluated), and what they name imported under
# TYPE_CHECKING, so that they cost the import nothing.
from __future__ import annotations

import asyncio
import asyncio.trsock
import collections.abc
import contextlib
import contextvars
import errno as _errno
import functools
import inspect
import logging
import operator
import os
import sys
import threading
import warnings
import weakref
from typing import TYPE_CHECKING

from rsock import _rsock, sockets

if TYPE_CHECKING:
    import socket as _stdlib_socket
    import ssl as _ssl
    import types
    from collections.abc import Awaitable, Callable, Iterable, Sequence, Sized
    from typing import Any, Protocol, Self, TypeAlias, TypeVar, overload

    from typing_extensions import Buffer

    from rsock._rsock import (
        Connection,
        DatagramReply,
        StreamTransport,
        _Destination,
        _Endpoint,
        _Framing,
        _FramingArg,
        _IPAddress,
        _IPv4Address,
        _IPv6Address,
        _PeerAddress,
    )
    from rsock.sockets import socket as _Socket

    _T = TypeVar("_T")

    class _SizedBuffer(Buffer, Sized, Protocol):
        """A bytes-like object that len() takes: a separator readuntil() measures."""

    # TcpClient.connect()'s address, as the sync client's: create_connection()'s forms (a tuple or a list, the port
    # a number or a service), and IPv6's longer tuples.
    _ConnectAddress: TypeAlias = _PeerAddress
    # UdpClient()'s address to bind: (host, port[, flowinfo[, scope_id]]), None the wildcard address.
    _BindAddress: TypeAlias = (
        tuple[str | bytes | None, int] | tuple[str | bytes | None, int, int] | tuple[str | bytes | None, int, int, int]
    )
    # A getaddrinfo() entry: (family, type, proto, canonname, sockaddr).
    _AddrInfo: TypeAlias = tuple[int, int, int, str, tuple[Any, ...]]
    # What a connection's callback gets, as asyncio's typeshed stubs say (_ClientConnectedCallback).
    _ClientConnectedCallback: TypeAlias = Callable[["StreamReader", "StreamWriter"], Awaitable[None] | None]
    _AsyncioClientConnectedCallback: TypeAlias = Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None
    ]
    # What an rsock.aio server's handler returns: as the sync server's, or an awaitable of it.
    _Reply: TypeAlias = Buffer | Awaitable[Buffer | None] | None
    # A UdpServer's handler: its address argument is a pair or a four-tuple by the server's family, which a type
    # checker cannot know; a handler that takes either is accepted.
    _DatagramHandler: TypeAlias = Callable[[bytes, _IPv4Address], _Reply] | Callable[[bytes, _IPv6Address], _Reply]
    # Where a handler's outcome goes: a TcpServer's connection or a UdpServer's datagram.
    _ReplyTo: TypeAlias = Connection | DatagramReply
    # What a UdpClient's request is asking: the address as given, and the socket address it resolved to.
    _Asking: TypeAlias = tuple[_Destination, tuple[Any, ...]]

__all__ = [
    "Server",
    "StreamReader",
    "StreamWriter",
    "TcpClient",
    "TcpServer",
    "UdpClient",
    "UdpServer",
    "open_connection",
    "start_server",
]

_DEFAULT_LIMIT = 2**16
# A UdpClient's receive buffer unless told otherwise: the largest datagram, as the sync client's.
_DATAGRAM_BUFSIZE = 65536
_WAIT_CLOSED_WAITS_FOR_CONNECTIONS = sys.version_info >= (3, 12, 1)
# accept() errors that mean the process is out of something; the listener is retried after a pause.
_OUT_OF_RESOURCES = frozenset((_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM))
_ACCEPT_RETRY_DELAY = 1.0


class StreamReader:
    """Reads from a connection, with asyncio.StreamReader's methods (each an awaitable)."""

    __slots__ = ("_transport", "at_eof", "exception", "read", "readexactly", "readline", "readuntil")

    if TYPE_CHECKING:
        # What the native methods in the slots take and give, as asyncio.StreamReader's methods. The awaitables
        # they return are coroutines to asyncio (create_task() and the like take them).
        async def read(self, n: int = -1) -> bytes: ...
        async def readline(self) -> bytes: ...
        async def readexactly(self, n: int) -> bytes: ...
        def at_eof(self) -> bool: ...
        def exception(self) -> Exception | None: ...

        # A tuple of separators from Python 3.13, as asyncio's.
        if sys.version_info >= (3, 13):

            async def readuntil(self, separator: _SizedBuffer | tuple[_SizedBuffer, ...] = b"\n") -> bytes: ...
        else:

            async def readuntil(self, separator: _SizedBuffer = b"\n") -> bytes: ...

    def __init__(self, transport: StreamTransport) -> None:
        self._transport = transport
        # The native methods themselves, so a call costs no Python frame. (mypy takes a slot that the
        # TYPE_CHECKING block above declares as a method for a method, which may not be assigned: method-assign.)
        self.read = transport.read  # type: ignore[method-assign]
        self.readline = transport.readline  # type: ignore[method-assign]
        self.readexactly = transport.readexactly  # type: ignore[method-assign]
        self.readuntil = transport.readuntil  # type: ignore[method-assign]
        self.at_eof = transport.at_eof  # type: ignore[method-assign]
        self.exception = transport.exception  # type: ignore[method-assign]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def __repr__(self) -> str:
        return f"<rsock.aio.StreamReader {self._transport.get_extra_info('peername')}>"


def _close_unclosed(owner: StreamWriter | TcpClient, warnings: types.ModuleType) -> None:
    """What an owner of a connection collected unclosed does, as asyncio's writer does from Python 3.11.5: closes the
    connection once the queued output is sent, and warns. A closed loop could not finish the close. One whose
    ``__init__`` never ran to its end (called with the wrong arguments) has no connection, and nothing to say."""
    try:
        loop, transport = owner._loop, owner._transport
    except AttributeError:
        return
    if not transport.is_closing():
        if loop.is_closed():
            warnings.warn("loop is closed", ResourceWarning)
        else:
            text = f"unclosed {owner!r}"  # its state as it was dropped
            transport.close()
            warnings.warn(text, ResourceWarning, source=owner)


class StreamWriter:
    """Writes to a connection, with asyncio.StreamWriter's methods; ``drain()`` waits while the peer
    does not keep up."""

    __slots__ = (
        "_loop",
        "_transport",
        "can_write_eof",
        "close",
        "drain",
        "get_extra_info",
        "is_closing",
        "wait_closed",
        "write",
        "write_eof",
        "writelines",
    )

    if TYPE_CHECKING:
        # What the native methods in the slots take and give, as asyncio.StreamWriter's methods.
        def write(self, data: Buffer) -> None: ...
        def writelines(self, lines: Iterable[Buffer]) -> None: ...
        async def drain(self) -> None: ...
        def write_eof(self) -> None: ...
        def can_write_eof(self) -> bool: ...
        def close(self) -> None: ...
        def is_closing(self) -> bool: ...
        async def wait_closed(self) -> None: ...
        def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: StreamTransport) -> None:
        self._loop = loop
        self._transport = transport
        # The native methods themselves (method-assign: see StreamReader.__init__).
        self.write = transport.write  # type: ignore[method-assign]
        self.writelines = transport.writelines  # type: ignore[method-assign]
        self.drain = transport.drain  # type: ignore[method-assign]
        self.write_eof = transport.write_eof  # type: ignore[method-assign]
        self.can_write_eof = transport.can_write_eof  # type: ignore[method-assign]
        self.close = transport.close  # type: ignore[method-assign]
        self.is_closing = transport.is_closing  # type: ignore[method-assign]
        self.wait_closed = transport.wait_closed  # type: ignore[method-assign]
        self.get_extra_info = transport.get_extra_info  # type: ignore[method-assign]

    @property
    def transport(self) -> StreamTransport:
        return self._transport

    def __del__(
        self, close_unclosed: Callable[..., None] = _close_unclosed, warnings: types.ModuleType = warnings
    ) -> None:
        # A server's connection keeps its writer until it closes (see _ConnectionClosed), as asyncio's protocol does.
        # The defaults keep what this needs at hand at interpreter exit, when the module's globals may be gone.
        close_unclosed(self, warnings)

    def __repr__(self) -> str:
        return f"<rsock.aio.StreamWriter {self._transport.get_extra_info('peername')}>"


# Each loop's epoll instance for rsock's transports (see src/aio/poller.rs), made on first use. Held
# weakly on both sides: a poller refers to its loop, so a strong value would keep the loop alive for ever;
# the transports of a loop hold its poller while they live.
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[_rsock.Poller]] = weakref.WeakKeyDictionary()


def _poller(loop: asyncio.AbstractEventLoop) -> _rsock.Poller:
    found = _pollers.get(loop)
    poller = found() if found is not None else None
    if poller is None:
        poller = _rsock.Poller(loop)
        poller._start()
        _pollers[loop] = weakref.ref(poller)
    return poller


def _transport(
    loop: asyncio.AbstractEventLoop,
    sock: _Socket,
    limit: int,
    framing: _FramingArg = None,
    max_frame_size: int = 16 * 1024 * 1024,
    *,
    client: bool = False,
) -> StreamTransport:
    """A started native transport over `sock` (a TcpClient's if `client`); the socket is closed if that fails."""
    try:
        transport = _rsock.StreamTransport(loop, _poller(loop), sock, limit, framing, max_frame_size, client=client)
        transport._start()
    except BaseException:
        sock.close()
        raise
    return transport


def _host_and_port(address: object) -> tuple[str | bytes | None, int | str | bytes, tuple[int, ...] | None]:
    """A TcpClient's host and port, and IPv6's flowinfo and scope_id from a longer tuple (None from a pair), read as
    the sync client reads them, as create_connection() does: a tuple or a list, the port an integer or a service
    ("8080", "http"); the resolver would also take a float, or None as port 0."""
    if not isinstance(address, (tuple, list)) or not 2 <= len(address) <= 4:
        raise _not_an_address(address, lists=True)
    host, port = _host_name(address[0]), address[1]
    if not isinstance(port, (str, bytes)):
        port = operator.index(port)
    elif b"\0" in (port.encode() if isinstance(port, str) else port):
        raise ValueError("embedded null character in the port")
    return host, port, (tuple(address[2:]) or None)


def _not_an_address(address: object, *, lists: bool) -> TypeError:
    """The sync types' TypeError for an address of the wrong shape, saying what was given (`lists`: a list is an
    address too, as a client to connect takes one)."""
    if isinstance(address, tuple) or (lists and isinstance(address, list)):
        given = f"a {'tuple' if isinstance(address, tuple) else 'list'} of length {len(address)}"
    else:
        given = type(address).__name__
    kinds = "tuple or list" if lists else "tuple"
    return TypeError(f"address must be a (host, port) or (host, port, flowinfo, scope_id) {kinds}, not {given}")


async def _within(awaitable: Awaitable[_T], timeout: float | None) -> _T:
    """What `awaitable` gives within `timeout` seconds (None: no limit); past them, TimeoutError("timed out"), as
    the sync clients word it (asyncio.wait_for()'s has no message). A TimeoutError of the awaitable's own passes
    as it is."""
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError as exc:
        if exc.args:
            raise
        raise TimeoutError("timed out") from None


def _seconds(name: str, value: object, *, range_first: bool = False) -> None:
    """A timeout checked as the sync API checks it: None, or a number of seconds, not negative (nor NaN), and
    within CPython's timeouts (nanoseconds in a C int64: OverflowError beyond, infinity too, as settimeout()).
    ``range_first`` for a timeout the sync API gives to settimeout(), which finds -inf out of range before
    it finds it negative."""
    if value is None:
        return
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if range_first and abs(float(value)) * 1e9 >= 2**63 - 1:
        raise OverflowError(f"{name} out of range: {float(value):e} seconds")
    if not value >= 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value}")
    if float(value) * 1e9 >= 2**63 - 1:
        raise OverflowError(f"{name} too large: {float(value):e} seconds")


def _check_size(n: int, caller: str) -> None:
    """A size checked as the sync clients check it: an int within a C ssize_t (OverflowError beyond, as recv()
    finds it; asyncio's reads take it as no limit) and not negative (ValueError)."""
    n = operator.index(n)
    if not -sys.maxsize - 1 <= n <= sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    if n < 0:
        raise ValueError(f"negative buffersize in {caller}")


def _check_port(port: object, caller: str) -> None:
    """The range check the socket would make, made before the resolver, which wraps a port beyond
    65535 round to a wrong one."""
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise OverflowError(f"{caller}(): port must be 0-65535.")


async def _stream_addresses(
    loop: asyncio.AbstractEventLoop,
    host: str | bytes | None,
    port: str | bytes | int | None,
    family: int,
    proto: int,
    flags: int,
    *,
    port_is_service: bool = False,
) -> Sequence[_AddrInfo]:
    """getaddrinfo()'s entries for a stream socket to `host` and `port`, as asyncio's create_connection() and
    create_server() find them: an IP address literal is read at once, its port taken as int() of it (None or an
    empty string as 0), where the resolver's thread would take a trip and refuse a float or an IntEnum port;
    anything else (a name, a service name, a zone index, a protocol other than 0, TCP or UDP, which asyncio takes as
    TCP for a stream socket) goes to the loop's resolver. With `port_is_service`, a str or bytes port goes to the
    resolver too, as create_connection() hands it to getaddrinfo() (the TcpClient's reading)."""
    literal = _ip_literal(host, family)
    if (
        literal is not None
        and not (port_is_service and isinstance(port, (str, bytes)))
        and proto in (0, sockets.IPPROTO_TCP, sockets.IPPROTO_UDP)
        and (number := _port_number(port)) is not None
    ):
        address: str | tuple[str, int, int, int] | tuple[str, int]
        af, address = literal
        address = (address, number, 0, 0) if af == sockets.AF_INET6 else (address, number)
        return [(af, sockets.SOCK_STREAM, sockets.IPPROTO_TCP, "", address)]
    return await loop.getaddrinfo(host, port, family=family, type=sockets.SOCK_STREAM, proto=proto, flags=flags)


def _port_number(port: str | bytes | int | None) -> int | None:
    """The port as asyncio reads it beside an IP address: int() of it, None or an empty string as 0; None for one
    only the resolver can read (a service name)."""
    if port is None or port in ("", b""):
        return 0
    try:
        return int(port)
    except (TypeError, ValueError):
        return None


def _ip_literal(host: object, family: int) -> tuple[int, str] | None:
    """(family, host) for a host that is an IPv4 or IPv6 address as inet_pton() reads it, in `family` (either for
    AF_UNSPEC, IPv4 first); None for anything else. A zone index ("fe80::1%eth0") is left to the resolver, which
    knows the interface's number."""
    if isinstance(host, bytes):
        host = host.decode("idna")
    if not isinstance(host, str) or "%" in host:
        return None
    for af in (sockets.AF_INET, sockets.AF_INET6) if family == sockets.AF_UNSPEC else (family,):
        try:
            sockets.inet_pton(af, host)
        except OSError:
            continue  # a NUL's ValueError goes up, as asyncio's own check lets it
        return af, host
    return None


def _streams(loop: asyncio.AbstractEventLoop, transport: StreamTransport) -> tuple[StreamReader, StreamWriter]:
    return StreamReader(transport), StreamWriter(loop, transport)


async def _sock_connect(loop: asyncio.AbstractEventLoop, sock: _Socket, address: tuple[Any, ...]) -> None:
    """``loop.sock_connect()`` for an address already resolved, on every loop: uvloop's resolves it again and
    drops an IPv6 address's flowinfo and scope_id, without which a link-local address cannot be reached."""
    try:
        sock.connect(address)
        return
    except (BlockingIOError, InterruptedError):
        # In progress; a signal that cut connect() short leaves it going on as well (PEP 475).
        pass
    connected = loop.create_future()
    fd = sock.fileno()
    # (func-returns-value: the lambda's value is not used; `or` only skips set_result() for a done future.)
    loop.add_writer(fd, lambda: connected.done() or connected.set_result(None))  # type: ignore[func-returns-value]
    try:
        await connected
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(sockets.SOL_SOCKET, sockets.SO_ERROR)
    if error:
        # asyncio's words for it.
        raise OSError(error, f"Connect call failed {address}")


async def _connect_socket(
    loop: asyncio.AbstractEventLoop,
    host: str | bytes | None,
    port: str | bytes | int | None,
    family: int,
    proto: int,
    flags: int,
    local_addr: _Destination | None,
    all_errors: bool = False,
    ipv6_details: tuple[int, ...] | None = None,
    port_is_service: bool = False,
) -> _Socket:
    """An rsock socket connected to (host, port): each address tried in turn, as asyncio does. With
    ``ipv6_details`` (flowinfo[, scope_id]), only IPv6 addresses, with those, as connect() takes the longer tuple
    (a scope_id not given stays what the name resolved to); `port_is_service` as `_stream_addresses` takes it."""
    _check_port(port, "connect")
    infos = await _stream_addresses(loop, host, port, family, proto, flags, port_is_service=port_is_service)
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    if ipv6_details is not None:
        kept = 2 + len(ipv6_details)
        infos = [
            (*info[:4], (*info[4][:2], *ipv6_details, *info[4][kept:])) for info in infos if info[0] == sockets.AF_INET6
        ]
        if not infos:
            raise TypeError("AF_INET address must be a pair (host, port)")
    errors: list[OSError] = []
    for af, kind, protocol, _, address in infos:
        sock = sockets.socket(af, kind, protocol)
        try:
            sock.setblocking(False)
            sock.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1)
            if local_addr is not None:
                sock.bind(local_addr)
            await _sock_connect(loop, sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            sock.close()
        except BaseException:
            sock.close()
            raise
    if all_errors:
        raise ExceptionGroup("create_connection failed", errors)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")


# The keyword arguments asyncio's open_connection() and start_server() pass on to the loop's
# create_connection() and create_server(), in this Python's version of them.
_CONNECTION_OPTIONS = frozenset(inspect.signature(asyncio.AbstractEventLoop.create_connection).parameters)
_SERVER_OPTIONS = frozenset(inspect.signature(asyncio.AbstractEventLoop.create_server).parameters)
_TLS_ONLY_OPTIONS = ("server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout")


def _check_options(method: str, options: dict[str, Any], known: frozenset[str]) -> None:
    """The errors asyncio gives for `options` passed on to the loop's `method` without ssl: TypeError for
    an unknown one, ValueError for one that only means something with TLS. Those accepted and not listed
    here (happy_eyeballs_delay, interleave) change only how addresses are tried in parallel: rsock tries
    them one after the other. (keep_alive, from Python 3.13, is honoured by the server.)"""
    for name in options:
        if name not in known or name in ("self", "protocol_factory"):
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}")
    for name in _TLS_ONLY_OPTIONS:
        if options.get(name) is not None:
            raise ValueError(f"{name} is only meaningful with ssl")


def _adopt(sock: _stdlib_socket.socket | _rsock.socket) -> _Socket:
    """An rsock socket for a socket given by the caller (a stdlib one is taken over by descriptor)."""
    if isinstance(sock, sockets.socket):
        return sock
    return sockets.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())


if TYPE_CHECKING:
    # As asyncio.open_connection() (its typeshed stub), but for `ssl`, which hands over to asyncio: its own
    # reader and writer then.
    @overload
    async def open_connection(
        host: str | None = None,
        port: int | str | None = None,
        *,
        limit: int = _DEFAULT_LIMIT,
        ssl: None = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: _stdlib_socket.socket | _rsock.socket | None = None,
        local_addr: _Destination | None = None,
        **kwargs: Any,
    ) -> tuple[StreamReader, StreamWriter]: ...
    @overload
    async def open_connection(
        host: str | None = None,
        port: int | str | None = None,
        *,
        limit: int = _DEFAULT_LIMIT,
        ssl: _ssl.SSLContext | bool,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: _stdlib_socket.socket | _rsock.socket | None = None,
        local_addr: _Destination | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    limit: int = _DEFAULT_LIMIT,
    ssl: _ssl.SSLContext | bool | None = None,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: _stdlib_socket.socket | _rsock.socket | None = None,
    local_addr: _Destination | None = None,
    **kwargs: Any,
) -> tuple[StreamReader, StreamWriter] | tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects and returns ``(reader, writer)``, as ``asyncio.open_connection``. With ``ssl`` this hands
    over to asyncio's own implementation (rsock's transport does not do TLS)."""
    if ssl is not None:
        return await asyncio.open_connection(
            host, port, limit=limit, ssl=ssl, family=family, proto=proto, flags=flags, sock=sock,
            local_addr=local_addr, **kwargs,
        )  # fmt: skip
    _check_options("create_connection", kwargs, _CONNECTION_OPTIONS)
    if limit <= 0:
        # Before connecting, as asyncio's reader is made first.
        raise ValueError("Limit cannot be <= 0")
    _check_host_port_or_sock(host, port, sock, "host and port was not specified and no sock specified")
    loop = asyncio.get_running_loop()
    if sock is None:
        all_errors = kwargs.get("all_errors", False)
        sock = await _connect_socket(loop, host, port, family, proto, flags, local_addr, all_errors)
    else:
        sock = _adopt(sock)
    return _streams(loop, _transport(loop, sock, limit))


def _check_host_port_or_sock(
    host: object, port: object, sock: _stdlib_socket.socket | _rsock.socket | None, neither: str
) -> None:
    """asyncio's checks: host and port, or a stream socket, not both; `neither` is its message for none."""
    if host is not None or port is not None:
        if sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
    elif sock is None:
        raise ValueError(neither)
    elif sock.type != sockets.SOCK_STREAM:
        raise ValueError(f"A Stream Socket was expected, got {sock!r}")


class Server:
    """What ``start_server`` returns, as asyncio.Server: listening sockets that hand each connection to
    the callback."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[_Socket],
        client_connected_cb: _ClientConnectedCallback,
        limit: int,
        context: contextvars.Context,
        backlog: int,
        keep_alive: bool | None = None,
    ) -> None:
        self._loop = loop
        self._keep_alive = keep_alive
        self._listeners = listeners
        self._backlog = backlog
        self._callback = client_connected_cb
        self._limit = limit
        self._context = context
        self._serving = False
        self._serving_forever: asyncio.Future[None] | None = None
        self._active = 0  # connections accepted and not yet closed
        # The weak reference its connections call back through (see _ConnectionClosed): held here, so that the
        # collector clears it only with the Server.
        self._weak_self = weakref.ref(self)
        # Their transports, for close_clients() and abort_clients().
        self._clients: weakref.WeakSet[StreamTransport] = weakref.WeakSet()
        self._closed: asyncio.Future[None] = loop.create_future()  # done once closed with every connection closed

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[asyncio.trsock.TransportSocket, ...]:
        # Wrapped as asyncio wraps its own: without close() or accept(), which would pull a listener
        # out from under the server's accept loop.
        return tuple(asyncio.trsock.TransportSocket(listener) for listener in self._listeners)

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start_serving()

    def _start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for listener in self._listeners:
            # Listening starts here, not at bind: until start_serving() connections are refused.
            listener.listen(self._backlog)
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: _Socket) -> None:
        # Take every connection waiting, not just one per wake-up.
        for _ in range(128):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._loop.call_exception_handler({"message": "accept failed", "exception": exc, "socket": listener})
                if exc.errno in _OUT_OF_RESOURCES:
                    # The listener stays readable while the process is out of descriptors or memory: stop
                    # watching it for a while instead of spinning, as asyncio does.
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(_ACCEPT_RETRY_DELAY, self._resume_accepting, listener)
                return
            conn.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1)
            if self._keep_alive:
                conn.setsockopt(sockets.SOL_SOCKET, sockets.SO_KEEPALIVE, 1)
            transport = _transport(self._loop, conn, self._limit)
            self._active += 1
            self._clients.add(transport)
            reader, writer = _streams(self._loop, transport)
            transport._notify_closed(_ConnectionClosed((self._weak_self, writer if _PROTOCOL_KEEPS_WRITER else None)))
            # Each connection runs in its own copy of the server's context, as asyncio's do: what one
            # handler sets in a ContextVar is not seen by the others.
            context = self._context.copy()
            result = context.run(self._callback, reader, writer)
            if asyncio.iscoroutine(result):
                task = self._loop.create_task(result, context=context)
                task.add_done_callback(functools.partial(_report_callback_failure, transport))
            if not self._serving:
                # A plain callback closed the server (a one-shot server), and the listener with it.
                return

    def _detach(self) -> None:
        self._active -= 1
        self._wake_if_closed()

    def _wake_if_closed(self) -> None:
        if self._listeners or self._active or self._closed.done():
            return
        self._closed.set_result(None)

    def _resume_accepting(self, listener: _Socket) -> None:
        if self._serving and listener in self._listeners:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def close(self) -> None:
        if not self._listeners:
            return
        for listener in self._listeners:
            if self._serving:
                self._loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners = []
        self._serving = False
        self._wake_if_closed()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    def close_clients(self) -> None:
        """Closes every connection still open (each once its queued output is sent), as asyncio's Server
        does from Python 3.13."""
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self) -> None:
        """Closes every connection still open at once, dropping queued output."""
        for transport in list(self._clients):
            transport.abort()

    async def wait_closed(self) -> None:
        """Returns once the server is closed and every connection it accepted has been closed too, as
        asyncio's Server does; before Python 3.12.1, as there, a call made once the server is closed
        returns at once."""
        if not self._listeners and not _WAIT_CLOSED_WAITS_FOR_CONNECTIONS:
            return
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if not self._listeners:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<rsock.aio.Server sockets={self.sockets!r}>"


# asyncio's server protocol keeps each connection's writer until the connection closes before Python 3.13; from
# 3.13 it does not, and a writer the handler drops closes its connection (StreamWriter.__del__) there.
_PROTOCOL_KEEPS_WRITER = sys.version_info < (3, 13)


# A bare `tuple` base: tuple[...] would give the class __orig_bases__ at run time (type-arg).
class _ConnectionClosed(tuple):  # type: ignore[type-arg]
    """``(server_ref, writer)``: what a server's connection calls once closed. It tells the Server, through the
    weak reference the Server holds to itself, and until then keeps the connection's writer where asyncio's
    protocol does (before 3.13; None from 3.13), so that a handler which drops its writer does not have the
    connection closed by StreamWriter.__del__.

    A connection left open and its Server may be collected in the same pass of the cycle collector, which
    empties what it collects (a Server's attributes, a functools.partial's function) before the transport's
    drop schedules this call. A tuple's items are not emptied; the weak reference is cleared first, but only
    when the Server is collected too (the collector clears every weak reference it finds unreachable, so one
    held only here would be dead even for a Server still in use): the call then finds no Server to tell."""

    __slots__ = ()

    def __call__(self) -> None:
        server = self[0]()
        if server is not None:
            server._detach()

    def __repr__(self) -> str:
        # Shown by the loop when the call fails, or in debug mode: nothing here that collection can empty.
        return "<rsock.aio server connection closed>"


def _report_callback_failure(transport: StreamTransport, task: asyncio.Task[Any]) -> None:
    """A connection's handler task ended with an exception: reported to the loop and the connection
    closed, as asyncio's start_server does (the peer would otherwise wait for good); a cancelled one's
    connection is closed too, as from Python 3.13."""
    if task.cancelled():
        transport.close()
        return
    exc = task.exception()
    if exc is not None:
        loop = task.get_loop()
        loop.call_exception_handler(
            {"message": "Unhandled exception in client_connected_cb", "exception": exc, "transport": transport}
        )
        transport.close()


def _listening_sockets(
    infos: Iterable[_AddrInfo], reuse_address: bool | None, reuse_port: bool | None
) -> list[_Socket]:
    listeners: list[_Socket] = []
    try:
        for af, kind, proto, _, address in infos:
            sock = sockets.socket(af, kind, proto)
            listeners.append(sock)
            if reuse_address is not False:
                sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_REUSEPORT, 1)
            if af == sockets.AF_INET6:
                sock.setsockopt(sockets.IPPROTO_IPV6, sockets.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                # (union-attr: strerror may be None for an OSError made without an errno, which bind() does not
                # raise for an address that getaddrinfo() gave.)
                raise OSError(
                    err.errno,
                    f"error while attempting to bind on address {address!r}: {err.strerror.lower()}",  # type: ignore[union-attr]
                ) from None
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


if TYPE_CHECKING:
    # As asyncio.start_server() (its typeshed stub), but for `ssl`, which hands over to asyncio: its own server,
    # whose callback gets asyncio's reader and writer.
    @overload
    async def start_server(
        client_connected_cb: _ClientConnectedCallback,
        host: str | Sequence[str] | None = None,
        port: int | str | None = None,
        *,
        limit: int = _DEFAULT_LIMIT,
        family: int = sockets.AF_UNSPEC,
        flags: int = sockets.AI_PASSIVE,
        sock: _stdlib_socket.socket | _rsock.socket | None = None,
        backlog: int = 100,
        ssl: None = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        start_serving: bool = True,
        **kwargs: Any,
    ) -> Server: ...
    @overload
    async def start_server(
        client_connected_cb: _AsyncioClientConnectedCallback,
        host: str | Sequence[str] | None = None,
        port: int | str | None = None,
        *,
        limit: int = _DEFAULT_LIMIT,
        family: int = sockets.AF_UNSPEC,
        flags: int = sockets.AI_PASSIVE,
        sock: _stdlib_socket.socket | _rsock.socket | None = None,
        backlog: int = 100,
        ssl: _ssl.SSLContext | bool,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        start_serving: bool = True,
        **kwargs: Any,
    ) -> asyncio.Server: ...


async def start_server(
    client_connected_cb: Callable[[Any, Any], Awaitable[None] | None],
    host: str | Sequence[str] | None = None,
    port: int | str | None = None,
    *,
    limit: int = _DEFAULT_LIMIT,
    family: int = sockets.AF_UNSPEC,
    flags: int = sockets.AI_PASSIVE,
    sock: _stdlib_socket.socket | _rsock.socket | None = None,
    backlog: int = 100,
    ssl: _ssl.SSLContext | bool | None = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    start_serving: bool = True,
    **kwargs: Any,
) -> Server | asyncio.Server:
    """Listens and calls ``client_connected_cb(reader, writer)`` for each connection (scheduled as a
    task when it is a coroutine function), as ``asyncio.start_server``. With ``ssl`` this hands over to
    asyncio's own implementation."""
    if ssl is not None:
        return await asyncio.start_server(
            client_connected_cb, host, port, limit=limit, family=family, flags=flags, sock=sock,
            backlog=backlog, ssl=ssl, reuse_address=reuse_address, reuse_port=reuse_port,
            start_serving=start_serving, **kwargs,
        )  # fmt: skip
    _check_options("create_server", kwargs, _SERVER_OPTIONS)
    _check_host_port_or_sock(host, port, sock, "Neither host/port nor sock were specified")
    loop = asyncio.get_running_loop()
    if sock is not None:
        listeners = [_adopt(sock)]
        listeners[0].setblocking(False)
    else:
        _check_port(port, "bind")
        # As asyncio reads `host`: "" is every interface, and a sequence of hosts listens on each.
        hosts: Sequence[str | None]
        if host == "":
            hosts = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = host
        infos: list[_AddrInfo] = []
        for each in hosts:
            infos += await _stream_addresses(loop, each, port, family, 0, flags)
        # One listener per distinct address, as asyncio does for hosts that resolve to several.
        unique = list(dict.fromkeys(infos))
        listeners = _listening_sockets(unique, reuse_address, reuse_port)
    context = contextvars.copy_context()
    server = Server(loop, listeners, client_connected_cb, limit, context, backlog, kwargs.get("keep_alive"))
    if start_serving:
        server._start_serving()
    return server


class TcpClient:
    """An asyncio TCP client with rsock's framing: ``await TcpClient.connect(address, framing="line")``,
    then ``await send()``, ``recv()``, ``recv_exactly()``, ``recv_message()``, ``request()``."""

    __slots__ = ("_loop", "_requesting", "_timeout", "_transport", "send")

    if TYPE_CHECKING:

        async def send(self, data: Buffer) -> None:
            """Sends ``data`` as a message (framed as the client frames messages) and waits until it is sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: StreamTransport, timeout: float | None) -> None:
        self._loop = loop
        self._transport = transport
        self._timeout = timeout
        self._requesting = asyncio.Lock()
        # (method-assign: see StreamReader.__init__.)
        if timeout is None:
            self.send = transport.write_message  # type: ignore[method-assign]
        else:
            self.send = functools.partial(self._limited, transport.write_message)  # type: ignore[method-assign]

    async def _limited(self, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        return await _within(call(*args), self._timeout)

    @classmethod
    async def connect(
        cls,
        address: _ConnectAddress,
        *,
        timeout: float | None = None,
        framing: _FramingArg = None,
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> Self:
        """Connects to ``address``, taken as the sync TcpClient takes it (``(host, port)``, IPv6's longer
        tuple, or a list; the port a number or a service, as ``create_connection()`` takes them);
        ``timeout`` bounds the connect and each later call."""
        host, port, ipv6_details = _host_and_port(address)
        _seconds("timeout", timeout, range_first=True)
        max_frame_size = operator.index(max_frame_size)
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, not {max_frame_size}")
        if max_frame_size >= 1 << 64:
            raise OverflowError(f"max_frame_size too large: {max_frame_size}")
        loop = asyncio.get_running_loop()
        connecting = _connect_socket(loop, host, port, 0, 0, 0, None, ipv6_details=ipv6_details, port_is_service=True)
        sock = await _within(connecting, timeout)
        return cls(loop, _transport(loop, sock, _DEFAULT_LIMIT, framing, max_frame_size, client=True), timeout)

    async def recv_message(self) -> bytes | None:
        """The next whole message; None when the peer closed between messages. A frame the framing
        refuses (over ``max_frame_size``) raises ValueError and closes the client, as the sync client
        does: what follows it in the stream cannot be told apart."""
        try:
            message = await self._call(self._transport.read_message())
        except ValueError:
            if self._transport.framing is not None:
                self._abort()
            raise
        return message

    async def request(self, data: Buffer) -> bytes:
        """Sends ``data`` as a message and returns the reply: the next message (whatever it is: a server that
        also pushes messages, a chat's broadcasts, needs ids in them to tell its reply). Requests on one client
        take turns, so each gets its own reply. One cancelled or timed out after it was sent closes the
        connection: its reply may still come, and would be taken for the reply to the next request."""
        # A lock's acquire() without the `async with` around it: this is the hot path of a client.
        await self._requesting.acquire()
        try:
            try:
                reply = self._transport.request(data)
            except ConnectionError:  # the connection broke: a failed request closes the client, as the sync one's
                self._abort()
                raise
            try:
                return await _within(reply, self._timeout)
            except BaseException:
                if not self.closed:  # a close() under way still sends what is queued
                    self._abort()
                raise
        finally:
            self._requesting.release()

    async def recv(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; b"" at end of stream."""
        _check_size(n, "recv")
        return await self._call(self._transport.read(n))

    async def recv_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; asyncio.IncompleteReadError if the connection ends first."""
        _check_size(n, "recv_exactly")
        return await self._call(self._transport.readexactly(n))

    def _abort(self) -> None:
        self._transport.abort()

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        return await _within(awaitable, self._timeout)

    async def close(self) -> None:
        """Closes once the queued output is sent; with the ``timeout`` given to connect(), output still
        queued after it is dropped."""
        self._transport.close()
        # A connection that broke is closed all the same; its error was for the calls that met it.
        with contextlib.suppress(OSError):
            try:
                await self._call(self._transport.wait_closed())
            except TimeoutError:
                self._abort()

    @property
    def closed(self) -> bool:
        """Whether this client closed (a peer's reset leaves it open, as the sync client's)."""
        return self._transport._closed_here

    # get_extra_info() gives Any (a transport's extra info is of any kind): here the socket's address, as
    # getpeername() and getsockname() give it when the connection is made (no-any-return).
    @property
    def peer(self) -> _IPAddress:
        return self._transport.get_extra_info("peername")  # type: ignore[no-any-return]

    @property
    def local(self) -> _IPAddress:
        return self._transport.get_extra_info("sockname")  # type: ignore[no-any-return]

    @property
    def framing(self) -> _Framing:
        return self._transport.framing

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__module__}.{type(self).__qualname__} {self.peer} {state}>"

    def __del__(
        self, close_unclosed: Callable[..., None] = _close_unclosed, warnings: types.ModuleType = warnings
    ) -> None:
        # As a writer dropped unclosed: the connection is closed, with a warning, rather than kept open until the loop
        # closes. (The defaults: see StreamWriter.__del__.)
        close_unclosed(self, warnings)


class UdpClient:
    """An asyncio UDP client: ``await sendto()``, ``await recvfrom()``, ``await request()`` with retries.
    The datagrams go through rsock's socket; the loop only says when it is ready. As the sync client's, a
    request fails at once when the address's host reports that nothing listens there (ICMP port
    unreachable), and its socket is IPv4 unless ``family=AF_INET6`` or an IPv6 ``address`` to bind says
    otherwise."""

    def __init__(self, address: _BindAddress | None = None, *, family: int | None = None) -> None:
        # A family not an int is a TypeError. Another family's client (AF_UNIX) could send, but never match a reply
        # to its request.
        if family is not None and operator.index(family) not in (sockets.AF_INET, sockets.AF_INET6):
            raise ValueError("family must be AF_INET or AF_INET6")
        if address is not None:
            family, address = _local_address(address, family)
        elif family is None:
            family = sockets.AF_INET
        # For reading (False) and writing (True): the calls waiting, and how to stop watching the socket.
        self._waiting: dict[bool, set[asyncio.Future[None]]] = {False: set(), True: set()}
        self._unwatch: dict[bool, Callable[[], object]] = {}
        # An asyncio.Lock serves one loop only, and the client may be made outside any loop and used by
        # several in turn (successive asyncio.run() calls): see _request_lock().
        self._requesting = asyncio.Lock()
        self._requesting_loop: asyncio.AbstractEventLoop | None = None
        self._sock = sockets.socket(family, sockets.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            if address is not None:
                self._sock.bind(address)
            _rsock._report_delivery_errors(self._sock.fileno(), family == sockets.AF_INET6)
        except BaseException:
            self._sock.close()
            raise

    async def sendto(self, data: Buffer, address: _Destination) -> int:
        """Sends one datagram; OSError(EMSGSIZE) for one larger than a UDP datagram can be."""
        return await self._send(data, address, None)

    async def _send(self, data: Buffer, address: _Destination, asking: _Asking | None) -> int:
        limit = _max_datagram(self._sock.family)
        size = _datagram_size(data)
        if size > limit:
            raise OSError(
                _errno.EMSGSIZE,
                f"datagram of {size} bytes is larger than the largest UDP datagram ({limit} bytes)",
            )
        again = True
        while True:
            try:
                return self._sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                await self._ready(writing=True)
            except OSError as error:
                if error.errno == _errno.ENOBUFS:
                    # Dropped on a full queue, which only a socket that asked for reports is told: counted as
                    # sent, as the sync client counts it (its delivery_errors.rs).
                    return size
                # An earlier datagram's report, met by this send: it is made again, once (a send can also
                # fail with such an error for its own datagram, when there is no route).
                if not (again and self._reported(error, asking)):
                    raise
                again = False

    async def recvfrom(
        self, bufsize: int = _DATAGRAM_BUFSIZE, *, timeout: float | None = None
    ) -> tuple[bytes, _IPAddress]:
        """The next datagram and its sender; a datagram larger than ``bufsize`` raises OSError(EMSGSIZE)."""
        _check_size(bufsize, "recvfrom")
        _seconds("timeout", timeout)
        return await self._receive_within(bufsize, timeout, None)

    async def _receive_within(
        self, bufsize: int, timeout: float | None, asking: _Asking | None
    ) -> tuple[bytes, _IPAddress]:
        # One already queued is returned whatever the timeout, as the sync client's recvfrom(timeout=0) does.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            return self._take(bufsize, asking)
        receiving = self._receive(bufsize, asking)
        return await _within(receiving, timeout)

    async def _receive(self, bufsize: int, asking: _Asking | None) -> tuple[bytes, _IPAddress]:
        while True:
            try:
                return self._take(bufsize, asking)
            except (BlockingIOError, InterruptedError):
                await self._ready(writing=False)

    def _take(self, bufsize: int, asking: _Asking | None) -> tuple[bytes, _IPAddress]:
        """The datagram queued on the socket; BlockingIOError when there is none. Reports of earlier
        datagrams' failures met on the way are passed over, but for those about the address `asking`."""
        while True:
            try:
                data, address = self._sock.recvfrom(bufsize + 1)
                break
            except OSError as error:
                if not self._reported(error, asking):
                    raise
        if len(data) > bufsize:
            raise OSError(_errno.EMSGSIZE, f"a datagram larger than the {bufsize}-byte buffer arrived; it was dropped")
        return data, address

    async def _ready(self, writing: bool) -> None:
        """Waits until the socket is readable (or writable): the loop's add_reader/add_writer, which every
        loop has (uvloop has no sock_sendto/sock_recvfrom). The loop holds one callback per direction,
        which wakes every call waiting (a loop keeps only one per descriptor); close() ends the waits
        with EBADF."""
        loop = asyncio.get_running_loop()
        fd = self._sock.fileno()
        waiting = self._waiting[writing]
        waiter = loop.create_future()
        if writing not in self._unwatch:
            add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
            add(fd, self._wake, waiting)
            self._unwatch[writing] = functools.partial(remove, fd)
        waiting.add(waiter)
        try:
            await waiter
        finally:
            waiting.discard(waiter)
            if not waiting and (unwatch := self._unwatch.pop(writing, None)) is not None:
                unwatch()

    def _reported(self, error: OSError, asking: _Asking | None) -> bool:
        """Whether `error`, met by a send or receive, was the report of a datagram's failure to arrive (the
        sync client's delivery_errors.rs says how the kernel gives them); a refusal of the address a request is
        `asking` is raised as that request's error, and other reports leave it to its resends, as the sync
        client's do."""
        reports = _rsock._take_delivery_errors(self._sock.fileno(), error.errno)
        if reports is None:
            return False
        if asking is not None:
            address, target = asking
            for errno, destination in reports:
                if errno == _errno.ECONNREFUSED and destination[:2] == target[:2]:
                    raise ConnectionRefusedError(errno, f"no reply from {address!r}: {os.strerror(errno)}") from None
        return True

    @staticmethod
    def _wake(waiting: set[asyncio.Future[None]]) -> None:
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    async def request(
        self,
        data: Buffer,
        address: _Destination,
        timeout: float = 1.0,
        retries: int = 3,
        *,
        accept: Callable[[bytes], object] | None = None,
    ) -> bytes:
        """Sends ``data`` and returns the first reply from ``address``, resending after each ``timeout``.
        Datagrams already waiting when it starts (late replies to earlier requests) are discarded, so the
        reply is one that came after this request was sent; so are datagrams from other senders. Requests
        on one client take turns, so that each gets its own reply. Raises ConnectionRefusedError at once when
        the address's host reports that nothing listens on that port (ICMP port unreachable). With
        ``accept``, a function of a reply, only a reply it returns true for is taken; the others (late
        replies to earlier requests, told apart by an id in the messages) are dropped."""
        if timeout is None:
            raise TypeError("request() needs a timeout: the seconds to wait for a reply before sending again")
        _seconds("timeout", timeout)
        retries = operator.index(retries)
        if retries < 0:
            raise ValueError("retries must not be negative")
        if retries > 0xFFFF_FFFF:
            raise OverflowError("retries is too large")  # as the sync client's, which counts them in 32 bits
        if accept is not None and not callable(accept):
            raise TypeError(f"accept must be callable or None, not {type(accept).__name__}")
        _datagram_size(data)  # the data before the address, as sendto() takes them
        loop = asyncio.get_running_loop()
        target = await self._resolve(loop, address)
        async with self._request_lock(loop):
            return await self._exchange(loop, data, address, target, timeout, retries, accept)

    def _request_lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        """The lock requests on `loop` take turns with: a new one when the client moved to another loop
        since the last request. One still held is kept: the client is then in use on two loops at once,
        which asyncio's lock refuses."""
        if self._requesting_loop is not loop and not self._requesting.locked():
            self._requesting = asyncio.Lock()
            self._requesting_loop = loop
        return self._requesting

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        data: Buffer,
        address: _Destination,
        target: tuple[Any, ...],
        timeout: float,
        retries: int,
        accept: Callable[[bytes], object] | None,
    ) -> bytes:
        self._discard_waiting()
        asking = (address, target)
        for _ in range(retries + 1):
            await self._send(data, target, asking)
            deadline = loop.time() + timeout
            while True:
                # Read at least once, as the sync client does: with a timeout of 0, what is already queued.
                left = max(deadline - loop.time(), 0.0)
                try:
                    reply, sender = await self._receive_within(_DATAGRAM_BUFSIZE, left, asking)
                except TimeoutError:
                    break
                if sender[:2] == target[:2] and (accept is None or accept(reply)):
                    return reply
        attempts = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
        raise TimeoutError(f"no reply from {address!r} after {attempts}")

    async def _resolve(self, loop: asyncio.AbstractEventLoop, address: _Destination) -> tuple[Any, ...]:
        """`address` as the socket address replies come from (a host name resolved, an IPv6 address in its
        canonical spelling); numeric hosts without a trip to the resolver's thread."""
        host, port = _ip_address(address, self._sock.family, "request")
        host = _host_name(host)
        if host is None:
            raise TypeError("str, bytes or bytearray expected, not NoneType")
        if host in ("", b"", "<broadcast>", b"<broadcast>"):
            # Every address and the broadcast address, which the socket reads itself, as the stdlib's and the sync
            # client's do (the resolver knows neither spelling).
            return (host, port, *address[2:])
        kind = {"family": self._sock.family, "type": sockets.SOCK_DGRAM}
        try:
            infos = sockets.getaddrinfo(host, port, **kind, flags=sockets.AI_NUMERICHOST)
        except sockets.gaierror:
            infos = await loop.getaddrinfo(host, port, **kind)
        return infos[0][4][:2] + tuple(address[2:])

    def _discard_waiting(self) -> None:
        """Drops the datagrams waiting, and the reports of earlier datagrams' failures."""
        while True:
            try:
                self._sock.recvfrom(1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if not self._reported(error, None):
                    raise

    def close(self) -> None:
        """Closes the socket; calls waiting on it raise OSError(EBADF)."""
        unwatch, self._unwatch = self._unwatch, {}
        for stop_watching in unwatch.values():
            stop_watching()
        for waiting in self._waiting.values():
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_exception(OSError(_errno.EBADF, os.strerror(_errno.EBADF)))
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def local(self) -> _IPAddress:
        # getsockname() gives Any (an address of any family): here a UDP socket's (no-any-return).
        return self._sock.getsockname()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _local_address(address: object, family: int | None) -> tuple[int, tuple[Any, ...]]:
    """The family and socket address a UdpClient of `family` (None: either) binds for `address`, read as the sync
    client reads it: a (host, port) tuple or IPv6's longer one, the host a str or bytes, None the wildcard address,
    "" every interface, a name resolved (to its first IPv4 address unless `family` says otherwise)."""
    if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
        raise _not_an_address(address, lists=False)
    host, port = _host_name(address[0]), address[1]
    port = operator.index(port)
    if not 0 <= port <= 65535:
        raise OverflowError("port must be 0-65535.")
    if len(address) > 2 and family == sockets.AF_INET:
        # flowinfo and scope_id are IPv6's, as bind() on an AF_INET socket says before any look-up.
        raise TypeError("AF_INET address must be a pair (host, port)")
    if host in ("", b""):
        host = "::" if family == sockets.AF_INET6 else "0.0.0.0"
    infos = sockets.getaddrinfo(
        host, port, family or sockets.AF_UNSPEC, sockets.SOCK_DGRAM, 0, sockets.AI_PASSIVE | sockets.AI_NUMERICSERV
    )
    if len(address) > 2:
        # flowinfo and scope_id are IPv6's; one not given keeps what the name resolved to.
        infos = [info for info in infos if info[0] == sockets.AF_INET6]
        if not infos:
            raise TypeError("AF_INET address must be a pair (host, port)")
    # A name's first IPv4 address, as the sync client (and create_server()) binds a name.
    chosen = next((info for info in infos if info[0] == sockets.AF_INET), infos[0])
    family, resolved = chosen[0], chosen[4]
    return family, resolved[:2] + address[2:] + resolved[len(address) :]


def _host_name(host: object) -> str | bytes | None:
    """A host as the sync clients and the socket read it: str, bytes (a bytearray's copy) or None. A NUL in it
    is the TypeError they raise; getaddrinfo() would read the name only up to the NUL, a different host."""
    if isinstance(host, bytearray):
        host = bytes(host)
    if host is not None and not isinstance(host, (str, bytes)):
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if (isinstance(host, str) and "\0" in host) or (isinstance(host, bytes) and b"\0" in host):
        raise TypeError("host name must not contain null character")
    return host


def _ip_address(address: object, family: int, caller: str) -> tuple[Any, int]:
    """``(host, port)`` of a datagram's address, checked as the sync client (and rsock's socket, which would
    only see what the resolver made of it) checks it: a tuple, a pair for IPv4, an integer port in range."""
    name = "AF_INET6" if family == sockets.AF_INET6 else "AF_INET"
    if not isinstance(address, tuple):
        raise TypeError(f"{caller}(): {name} address must be tuple, not {type(address).__name__}")
    if family == sockets.AF_INET6 and not 2 <= len(address) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    if family != sockets.AF_INET6 and len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    port = operator.index(address[1])
    _check_port(port, caller)
    return address[0], port


def _datagram_size(data: object) -> int:
    """The bytes in a bytes-like object (len() would count items, and some have none), or the TypeError
    socket.sendto() raises for anything else."""
    try:
        with memoryview(data) as view:  # type: ignore[arg-type]
            return view.nbytes
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None


def _max_datagram(family: int) -> int:
    return 65527 if family == sockets.AF_INET6 else 65507


# The handler task of an rsock.aio server whose context this is (inherited by the tasks it makes).
_HANDLER: contextvars.ContextVar[asyncio.Future[Any]] = contextvars.ContextVar("rsock.aio handler")


class _Bridge:
    """Runs, on the caller's event loop and in the caller's context, the awaitables that a server's
    handlers return on rsock's threads, and reports each result back to the server."""

    __slots__ = ("_context", "_loop", "_server", "tasks")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, context: contextvars.Context, server: _rsock.TcpServer | _rsock.UdpServer
    ) -> None:
        self._loop = loop
        self._context = context
        self._server = server
        # The handler tasks running, each with where its outcome goes (None for on_disconnect's): stop()
        # called from one of them must not wait for itself, and spares its connection or datagram.
        self.tasks: dict[asyncio.Future[Any], _ReplyTo | None] = {}

    def __call__(self, awaitable: Awaitable[Any], reply_to: _ReplyTo | None, role: str = "reply") -> None:
        """Runs `awaitable`, an async handler's; `role` says what its outcome is for: "reply" (sent to
        `reply_to`), "connect" (`reply_to` waits for it, the result ignored) or "disconnect"."""
        try:
            self._loop.call_soon_threadsafe(self._start, awaitable, reply_to, role, context=self._context)
        except RuntimeError:
            # The loop is closed: nothing can run handlers any more, so the server stops.
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            if reply_to is not None:
                reply_to._handler_done(None, ConnectionAbortedError("the server's event loop is closed"))
            self._server._begin_stop()

    def _start(self, awaitable: Awaitable[Any], reply_to: _ReplyTo | None, role: str) -> None:
        task: asyncio.Future[Any]
        if asyncio.iscoroutine(awaitable):
            # A copy of the context for the task (as create_task makes), which names the task before
            # it starts: it and the tasks it makes (wait_for's, shield's, its own) then know which
            # handler they belong to.
            context = contextvars.copy_context()
            task = self._loop.create_task(awaitable, context=context)
            context.run(_HANDLER.set, task)
        else:
            try:
                task = asyncio.ensure_future(awaitable, loop=self._loop)
            except Exception as exc:
                # Nothing this loop can run (a future of another loop): the handler failed, and its
                # connection must hear of it, not wait for an outcome that never comes.
                if reply_to is None:
                    logging.getLogger("rsock").error("on_disconnect raised", exc_info=exc)
                else:
                    reply_to._handler_done(None, exc)
                return
        self.tasks[task] = reply_to
        task.add_done_callback(self._forget)
        if reply_to is None:
            task.add_done_callback(_log_failure)
        else:
            task.add_done_callback(functools.partial(_report, reply_to, role == "reply"))

    def _forget(self, task: asyncio.Future[Any]) -> None:
        # A future returned by two handlers was added once and is done once per handler.
        self.tasks.pop(task, None)

    def __repr__(self) -> str:
        return f"<rsock.aio bridge to {self._loop!r}>"


def _report(reply_to: _ReplyTo, replies: bool, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        reply_to._handler_done(None, asyncio.CancelledError())
    elif (exc := task.exception()) is not None:
        reply_to._handler_done(None, exc)
    else:
        reply_to._handler_done(task.result() if replies else None)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _log_failure(task: asyncio.Future[Any]) -> None:
    """Logs an async on_disconnect's failure as the server logs a plain one's."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logging.getLogger("rsock").error("on_disconnect raised", exc_info=exc)


class _AsyncServer:
    """The asyncio lifecycle over one of rsock's native servers: handlers may be ``async def`` (run on
    the loop that started the server, with its context) or plain functions (run on rsock's own thread)."""

    # The native class (each subclass's), and the server of it. Typed by the subclasses, whose __init__ the
    # TYPE_CHECKING blocks give the native class's parameters.
    _native_type: Any = None
    _server: _rsock.TcpServer | _rsock.UdpServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._server = self._native_type(*args, **kwargs)
        self._bridge: _Bridge | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._serving_forever = False
        self._handlers_stopping: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Starts serving in the background, bound to the running loop (a server started under an
        earlier loop moves to this one)."""
        loop = asyncio.get_running_loop()
        if self._stopped is None or self._stopped.get_loop() is not loop:
            self._bridge = _Bridge(loop, contextvars.copy_context(), self._server)
            self._server._set_async_bridge(self._bridge)
            self._stopped = loop.create_future()
        self._server.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stops, as the native server's stop() does: what each connection had received when the stop
        reached it is answered, and replies (including those of async handlers still running) go out;
        waits in a worker thread so the loop keeps running those handlers meanwhile. Called
        from one of the server's own handlers still running (directly, or in a task it made, such as
        asyncio.wait_for's), it waits only for the other handlers in flight, and the stop goes on in
        the background: waiting for the whole stop there would wait for that very handler. Past the
        timeout, what is still open is closed, but for that handler's connection (or datagram), which
        keeps what it needs to send the reply the handler returns."""
        self._server._begin_stop(timeout)
        loop = asyncio.get_running_loop()
        if self._stopping is None or self._stopping.get_loop() is not loop:
            # A stop begun under another loop cannot be awaited here: that loop may be closed (and the task
            # cancelled with it) or run in another thread. This loop finishes the stop itself.
            self._stopping = loop.create_task(self._finish_stop(timeout))
        origin = _HANDLER.get(None)
        if self._bridge is not None and origin in self._bridge.tasks:
            if (reply_to := self._bridge.tasks[origin]) is not None:
                # The wait below ends when the timeout closes what is still open: the reply this
                # handler returns then must outlive that.
                reply_to._spare_at_stop()
            await self._wait_for_other_handlers(origin, _rsock.DEFAULT_STOP_TIMEOUT if timeout is None else timeout)
            return
        await asyncio.shield(self._stopping)

    async def _wait_for_other_handlers(self, origin: asyncio.Future[Any], limit: float) -> None:
        """Waits (at most `limit` seconds) for the handlers in flight but `origin` and those that are
        themselves waiting here, which would wait for each other."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        self._handlers_stopping.add(origin)
        try:
            # (union-attr: stop() calls this only once it found the bridge set.)
            while others := [t for t in self._bridge.tasks if t is not origin and t not in self._handlers_stopping]:  # type: ignore[union-attr]
                if (left := deadline - loop.time()) <= 0:
                    return
                # Looked at again now and then: a handler may start waiting here meanwhile.
                await asyncio.wait(others, timeout=min(left, 0.05))
        finally:
            self._handlers_stopping.discard(origin)

    async def _finish_stop(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        await self._stop_in_thread(loop, timeout)
        if self._stopped is None:
            return
        if self._stopped.get_loop() is loop:
            _set_if_pending(self._stopped)
        else:
            # serve_forever() may be waiting on another loop, in another thread: only that loop may
            # touch its futures. A closed loop has no one waiting to wake.
            with contextlib.suppress(RuntimeError):
                self._stopped.get_loop().call_soon_threadsafe(_set_if_pending, self._stopped)

    async def _stop_in_thread(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """The native stop(), which blocks until the server has stopped, run in a daemon thread of its own. In the
        loop's executor, whose threads asyncio.run() waits for as it ends, Ctrl-C during a long stop (a handler
        holding up rsock's thread) had to wait the stop out before the program could end."""
        stopped: asyncio.Future[None] = loop.create_future()

        def report(outcome: BaseException | None) -> None:
            if stopped.done():
                return
            if outcome is None:
                stopped.set_result(None)
            else:
                stopped.set_exception(outcome)

        def stop() -> None:
            outcome = None
            try:
                self._server.stop(timeout)
            except BaseException as exc:
                outcome = exc
            # A loop closed meanwhile has no one waiting for the outcome.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(report, outcome)

        thread = threading.Thread(target=stop, name="rsock-aio-stop", daemon=True)
        thread.start()
        try:
            await stopped
        finally:
            if stopped.done() and not stopped.cancelled():
                # The thread has reported and only returns now. Joined, so that it holds the server (and through
                # its bridge the loop) no longer once the stop is awaited: a stopped server and its loop are then
                # collected at once.
                thread.join()

    async def serve_forever(self) -> None:
        """Serves until stop() or until the task is cancelled (which stops the server). One task at a
        time may, as with asyncio's servers."""
        if self._serving_forever:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        self._serving_forever = True
        try:
            await self.start()
            await asyncio.shield(self._stopped)  # type: ignore[arg-type]  # start() has just set it
        except asyncio.CancelledError:
            await self.stop()
            raise
        finally:
            self._serving_forever = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> _IPAddress:
        return self._server.address

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def stats(self) -> dict[str, int]:
        return self._server.stats

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self._server!r}>"

    def _repr_html_(self) -> str:
        return self._server._repr_html_()


class TcpServer(_AsyncServer):
    """rsock.TcpServer for asyncio: the same arguments; ``on_message``, ``on_connect`` and
    ``on_disconnect`` may be ``async def``. ``await start()``, ``await stop()``, ``async with``."""

    _native_type = _rsock.TcpServer
    _server: _rsock.TcpServer
    __signature__ = inspect.signature(_rsock.TcpServer)

    if TYPE_CHECKING:
        # rsock.TcpServer's parameters; the handlers may be async.
        def __init__(
            self,
            address: _Endpoint | None = None,
            on_message: Callable[[Connection, bytes], _Reply] | None = None,
            *,
            on_connect: Callable[[Connection], object] | None = None,
            on_disconnect: Callable[[Connection, BaseException | None], object] | None = None,
            framing: _FramingArg = None,
            max_connections: int = ...,
            max_frame_size: int = ...,
            idle_timeout: float | None = None,
            backlog: int = ...,
            reuse_port: bool = False,
        ) -> None: ...

    def broadcast(self, data: Buffer, exclude: Connection | Iterable[Connection] | None = None) -> int:
        """Sends ``data`` to every connection (but ``exclude``); returns how many it went to."""
        return self._server.broadcast(data, exclude)

    @property
    def framing(self) -> _Framing:
        return self._server.framing


class UdpServer(_AsyncServer):
    """rsock.UdpServer for asyncio: ``on_datagram(data, address)`` may be ``async def``."""

    _native_type = _rsock.UdpServer
    _server: _rsock.UdpServer
    __signature__ = inspect.signature(_rsock.UdpServer)

    if TYPE_CHECKING:
        # rsock.UdpServer's parameters; the handler may be async.
        def __init__(
            self,
            address: _Endpoint | None = None,
            on_datagram: _DatagramHandler | None = None,
            *,
            reuse_port: bool = False,
        ) -> None: ...
