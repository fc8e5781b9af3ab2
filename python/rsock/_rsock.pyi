"""Type stubs for rsock's native core, ``rsock._rsock``."""

from collections.abc import Callable, Coroutine, Generator, Iterable
from os import PathLike
from types import TracebackType
from typing import Any, Literal, Self, SupportsIndex, final

from typing_extensions import Buffer, disjoint_base

__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "Connection",
    "DatagramReply",
    "Op",
    "PanicException",
    "Poller",
    "StreamTransport",
    "TcpClient",
    "TcpServer",
    "UdpClient",
    "UdpServer",
    "Waiter",
    "__version__",
    "_in_main_interpreter",
    "_report_delivery_errors",
    "_stop_all_servers",
    "_take_delivery_errors",
    "close",
    "dup",
    "getaddrinfo",
    "getdefaulttimeout",
    "gethostbyaddr",
    "gethostbyname",
    "gethostbyname_ex",
    "getnameinfo",
    "setdefaulttimeout",
    "socket",
    "socketpair",
]

__version__: str
DEFAULT_STOP_TIMEOUT: float

# The stdlib-compatible `socket` takes and returns every family's addresses (a path for AF_UNIX, ...), as
# typeshed's socket stubs do: Any.
_Address = Any
_AncData = list[tuple[int, int, bytes]]

@disjoint_base
class socket:
    """The native socket under ``rsock.socket``: the stdlib's ``_socket.socket`` API."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    def __init__(
        self,
        family: SupportsIndex | None = ...,
        type: SupportsIndex | None = ...,
        proto: SupportsIndex | None = ...,
        fileno: SupportsIndex | None = ...,
    ) -> None: ...
    @property
    def family(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def proto(self) -> int: ...
    @property
    def timeout(self) -> float | None: ...
    def fileno(self) -> int:
        """The descriptor, or -1 once closed."""
    def close(self) -> None:
        """Closes the descriptor (once; a reset peer is not an error)."""
    def __del__(self) -> None:
        """Warns (ResourceWarning) and closes if still open, as CPython's socket finalizer does."""
    def detach(self) -> int:
        """Gives up the descriptor without closing it and returns it."""
    def settimeout(self, value: float | None, /) -> None:
        """None blocks, 0 makes calls non-blocking, a number of seconds bounds each call."""
    def gettimeout(self) -> float | None:
        """The timeout in seconds, or None."""
    def setblocking(self, flag: bool, /) -> None:
        """setblocking(True) is settimeout(None), setblocking(False) is settimeout(0)."""
    def getblocking(self) -> bool:
        """Whether calls may block (timeout not 0)."""
    def bind(self, address: _Address, /) -> None:
        """Binds to `address` ((host, port) for IP, a path for AF_UNIX)."""
    def listen(self, backlog: SupportsIndex | None = ..., /) -> None: ...
    def _accept(self) -> tuple[int, _Address]: ...
    def connect(self, address: _Address, /) -> None:
        """Connects to `address`, within the timeout."""
    def connect_ex(self, address: _Address, /) -> int:
        """connect() returning the errno (0 on success) instead of raising."""
    def send(self, data: Buffer, flags: SupportsIndex | None = ..., /) -> int:
        """Sends what the socket takes of `data`; returns the count."""
    def sendall(self, data: Buffer, flags: SupportsIndex | None = ..., /) -> None:
        """Sends all of `data`; with a timeout, the deadline covers the whole call."""
    def sendto(self, *args: Any) -> int:
        """sendto(data, address) or sendto(data, flags, address): one datagram."""
    def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[tuple[int, int, Buffer]] | None = ...,
        flags: SupportsIndex | None = ...,
        address: _Address = ...,
        /,
    ) -> int: ...
    def sendmsg_afalg(
        self,
        msg: Iterable[Buffer] | None = None,
        *,
        op: int | None = None,
        iv: Buffer | None = None,
        assoclen: int | None = None,
        flags: SupportsIndex | None = ...,
    ) -> int: ...
    def recv(self, bufsize: SupportsIndex, flags: SupportsIndex | None = ..., /) -> bytes:
        """Up to `bufsize` bytes; b"" when the peer has closed."""
    def recv_into(
        self, buffer: Buffer, nbytes: SupportsIndex | None = ..., flags: SupportsIndex | None = ...
    ) -> int: ...
    def recvfrom(self, bufsize: SupportsIndex, flags: SupportsIndex | None = ..., /) -> tuple[bytes, _Address]: ...
    def recvfrom_into(
        self, buffer: Buffer, nbytes: SupportsIndex | None = ..., flags: SupportsIndex | None = ...
    ) -> tuple[int, _Address]: ...
    def recvmsg(
        self, bufsize: SupportsIndex, ancbufsize: SupportsIndex | None = ..., flags: SupportsIndex | None = ..., /
    ) -> tuple[bytes, _AncData, int, _Address]: ...
    def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: SupportsIndex | None = ..., flags: SupportsIndex | None = ..., /
    ) -> tuple[int, _AncData, int, _Address]: ...
    def shutdown(self, how: SupportsIndex, /) -> None:
        """Shuts down reading (SHUT_RD), writing (SHUT_WR) or both (SHUT_RDWR)."""
    def getsockname(self) -> _Address:
        """This socket's own address."""
    def getpeername(self) -> _Address:
        """The connected peer's address."""
    def setsockopt(self, *args: Any) -> None:
        """setsockopt(level, option, int | buffer) or setsockopt(level, option, None, optlen)."""
    def getsockopt(
        self, level: SupportsIndex, option: SupportsIndex, buflen: SupportsIndex | None = ..., /
    ) -> int | bytes: ...
    def get_inheritable(self) -> bool:
        """Whether child processes inherit the descriptor."""
    def set_inheritable(self, inheritable: SupportsIndex) -> None:
        """Sets whether child processes inherit the descriptor."""
    def _sendfile(self, file_fd: int, offset: int, count: int) -> int: ...

def getdefaulttimeout() -> float | None: ...
def setdefaulttimeout(timeout: float | None, /) -> None: ...
def dup(fd: SupportsIndex, /) -> int: ...
def close(fd: SupportsIndex, /) -> None: ...
def socketpair(
    family: SupportsIndex | None = ..., type: SupportsIndex | None = ..., proto: SupportsIndex | None = ..., /
) -> tuple[int, int]: ...
def getaddrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: SupportsIndex | None = ...,
    type: SupportsIndex | None = ...,
    proto: SupportsIndex | None = ...,
    flags: SupportsIndex | None = ...,
) -> list[tuple[int, int, int, str, _Address]]: ...
def getnameinfo(*args: Any) -> tuple[str, str]: ...
def gethostbyname(hostname: str | bytes | bytearray, /) -> str: ...
def gethostbyname_ex(hostname: str | bytes | bytearray, /) -> tuple[str, list[str], list[str]]: ...
def gethostbyaddr(ip_address: str | bytes | bytearray, /) -> tuple[str, list[str], list[str]]: ...
def _stop_all_servers(timeout: float) -> None: ...
def _in_main_interpreter() -> bool: ...
def _report_delivery_errors(fd: int, ipv6: bool) -> None: ...
def _take_delivery_errors(fd: int, errno: int | None) -> list[tuple[int, _IPAddress]] | None: ...

class PanicException(BaseException):
    """A panic in rsock's Rust code, surfaced as a Python exception (never an abort). A handler that lets
    one through is treated as any failed handler: logged, its connection closed, the server serving on."""

# The addresses of the high-level types, which are IP only. What they return (server.address, client.peer,
# conn.peer, recvfrom()'s sender): (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
_IPv4Address = tuple[str, int]
_IPv6Address = tuple[str, int, int, int]
_IPAddress = _IPv4Address | _IPv6Address
# A host as they take it: a name or an address literal, as str, bytes or bytearray.
_Host = str | bytes | bytearray
# Where to bind (the servers, UdpClient()): (host, port), or IPv6's (host, port[, flowinfo[, scope_id]]). A None
# host is the wildcard address.
_Endpoint = tuple[_Host | None, int] | tuple[_Host | None, int, int] | tuple[_Host | None, int, int, int]
# Where a TcpClient connects, as create_connection() takes it: as _Endpoint, the port a number or a service ("8080",
# "http"), or the same items in a list (a JSON configuration's); a None host is the loopback address.
_Port = int | str | bytes
_PeerAddress = (
    tuple[_Host | None, _Port]
    | tuple[_Host | None, _Port, int]
    | tuple[_Host | None, _Port, int, int]
    | list[_Host | _Port | None]
)
# Where a UdpClient sends: as _Endpoint, with a host.
_Destination = tuple[_Host, int] | tuple[_Host, int, int] | tuple[_Host, int, int, int]
# framing=: None (raw chunks), "line", "length" (4-byte big-endian prefix) or a delimiter; the `framing`
# properties give a delimiter back as bytes.
_FramingArg = Literal["line", "length"] | bytes | bytearray | None
_Framing = Literal["line", "length"] | bytes | None
# A UdpServer handler: its address argument is a pair or a four-tuple by the family of the address the server is
# bound to, which a type checker cannot know; a handler that takes either shape is accepted.
_DatagramHandler = Callable[[bytes, _IPv4Address], Buffer | None] | Callable[[bytes, _IPv6Address], Buffer | None]

@final
class Connection:
    """One connection of a TcpServer, as its handlers receive it."""

    @property
    def peer(self) -> _IPAddress:
        """The peer's address."""
    @property
    def local(self) -> _IPAddress:
        """This end's address."""
    @property
    def id(self) -> int:
        """A number unique among the server's connections."""
    @property
    def closed(self) -> bool:
        """Whether the connection has ended or is ending: True from the moment close() is called."""
    @property
    def state(self) -> dict[Any, Any]:
        """A dict for the application's own per-connection data."""
    def send(self, data: Buffer) -> None:
        """Sends `data`, framed as the server frames messages; safe from any thread."""
    def close(self) -> None:
        """Closes the connection once the output already queued is sent. What the connection's own handler
        still sends or returns after it, in the same call, goes out too (a last word before closing);
        a send from anywhere else after it raises BrokenPipeError."""
    def _spare_at_stop(self) -> None: ...
    def _handler_done(self, reply: object, exc: BaseException | None = None) -> None: ...

@disjoint_base
class TcpServer:
    """A TCP server whose I/O loop runs in Rust for every connection; Python runs only the handlers.

    - `address`: where to listen; None (the default) is 127.0.0.1 on a free port, "" every interface.
    - `on_message(conn, data)`: runs for each chunk received, or each whole message when `framing` is
      set; a bytes-like return value is sent back on that connection, None sends nothing (anything else
      is the handler's error, a TypeError).
    - `on_connect(conn)`, `on_disconnect(conn, exc)`: their return values are ignored (a greeting is
      `conn.send()`'s); `exc` is None for a clean close, else why the
      connection ended: the exception a handler raised, an OSError (reset, or ENOBUFS for a peer that
      stopped reading while what others sent it piled up: broadcasts, relays), TimeoutError("idle
      timeout"), ValueError for broken framing (a frame over `max_frame_size`), EOFError for a peer that
      ended mid-message.
    - A handler that cannot take the arguments it is called with is a TypeError when the server is made.
    - `framing`: None (raw chunks), "line", "length" (4-byte big-endian prefix) or a bytes delimiter.
    - `max_connections` (default 10,000): connections beyond it are refused and counted.
    - `max_frame_size` (default 16 MiB): a longer frame closes its connection.
    - `idle_timeout` (default None, no timeout): seconds (above zero) after which a connection that has
      neither received nor sent anything, and has no async handler running, is closed.
    - `backlog` (default 1024), `reuse_port` (SO_REUSEPORT).
    """

    def __new__(
        cls,
        address: _Endpoint | None = None,
        on_message: Callable[[Connection, bytes], Buffer | None] | None = None,
        *,
        on_connect: Callable[[Connection], object] | None = None,
        on_disconnect: Callable[[Connection, BaseException | None], object] | None = None,
        framing: _FramingArg = None,
        max_connections: int = ...,
        max_frame_size: int = ...,
        idle_timeout: float | None = None,
        backlog: int = ...,
        reuse_port: bool = False,
    ) -> Self: ...
    def start(self) -> None:
        """Starts serving in the background and returns at once."""
    def serve_forever(self) -> None:
        """Serves until stop() or Ctrl-C."""
    def stop(self, timeout: float | None = None) -> None:
        """Stops accepting, answers what each connection had received when the stop reached it (while it takes
        messages: not past a close its handler asked for, nor beside a running async handler) and lets the replies
        go out, then closes every connection. A connection
        closes gracefully: after its last reply the peer sees EOF, and unless it has already acknowledged
        everything and sent nothing more, it is given up to 2 s to close its side (so that nothing it still
        sends turns into a reset that could lose those replies). Connections still open after `timeout`
        seconds (default 5) are closed at once, and the port is given up even while a handler still runs (its
        reply is not sent); stop() then waits at most one second more for that handler."""
    def _set_async_bridge(self, bridge: Callable[[Any, Any], object]) -> None: ...
    def _begin_stop(self, timeout: float | None = None) -> None: ...
    def _repr_html_(self) -> str: ...
    def broadcast(self, data: Buffer, exclude: Connection | Iterable[Connection] | None = None) -> int:
        """Sends `data` to every connection (but `exclude`); returns how many it went to. From a thread other
        than the server's, the sends are made with the GIL released."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None: ...
    @property
    def address(self) -> _IPAddress:
        """The address listened on, with the real port when bound to port 0."""
    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
    @property
    def framing(self) -> _Framing:
        """None, "line", "length" or the delimiter bytes."""
    @property
    def stats(self) -> dict[str, int]:
        """accepted (every connection taken from the backlog, the refused ones too), active, refused (over
        max_connections), messages, bytes_in, bytes_out, errors (connections that ended in an error: a handler's
        exception, on_connect's too, a reset, broken framing, a slow reader, a peer gone mid-message, a connection
        an audit hook refused; not an idle timeout, and not an exception in on_disconnect; failed accepts count
        here too)."""

@disjoint_base
class TcpClient:
    """A TCP connection with optional framing, every wait done in Rust with the GIL released.

    A receive polls for up to 50 µs before it sleeps while the wait before it was that short (a server on this
    machine); after a longer wait it sleeps at once.
    """

    def __new__(
        cls,
        address: _PeerAddress,
        *,
        timeout: float | None = None,
        framing: _FramingArg = None,
        max_frame_size: int = ...,
    ) -> Self: ...
    @classmethod
    def connect(
        cls,
        address: _PeerAddress,
        *,
        timeout: float | None = None,
        framing: _FramingArg = None,
        max_frame_size: int = ...,
    ) -> Self:
        """Connects to `address`: the same as calling the class."""
    def send(self, data: Buffer) -> None:
        """Sends `data` whole, framed as a message when the client has framing."""
    def recv(self, n: int = 65536) -> bytes:
        """Up to `n` bytes; b"" at end of stream."""
    def recv_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes; EOFError if the connection ends first. What came before an error (a timeout,
        Ctrl-C, the end of the stream) stays buffered for the next read."""
    def recv_message(self) -> bytes | None:
        """The next whole message, or None when the peer closed between messages. What came of a message before a
        timeout or Ctrl-C stays buffered for the next read."""
    def request(self, data: Buffer) -> bytes:
        """Sends `data` as a message and returns the reply: the next message with framing (whatever it is: a
        server that also pushes messages, a chat's broadcasts, needs ids in them to tell its reply), else what the
        next read brings, which on a raw stream may be part of a long reply or more than one. A request whose
        reply does not come (a timeout, Ctrl-C) closes the client."""
    def sendfile(
        self,
        path: str | bytes | PathLike[str] | PathLike[bytes],
        progress: Callable[[int], object] | bool | None = None,
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> int:
        """Sends a file's raw bytes with sendfile(2), whatever the client's framing: from `offset`, `count` bytes at
        most. `progress(n)` gets the bytes sent after each chunk. An OSError (a timeout) after part of it went out
        says how much in its `characters_written`."""
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...
    def _repr_html_(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def peer(self) -> _IPAddress: ...
    @property
    def local(self) -> _IPAddress: ...
    @property
    def framing(self) -> _Framing: ...
    def fileno(self) -> int:
        """The descriptor, or -1 once closed."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None: ...

@disjoint_base
class UdpServer:
    """A UDP server: `on_datagram(data, address)` runs for each datagram; what it returns (bytes-like, or None for
    nothing; anything else is the handler's error, a TypeError) is sent back. A handler that cannot take these two
    arguments is a TypeError when the server is made.

    Datagrams are received in batches (recvmmsg) on a thread of the server's own, which runs the handler. In a
    one-way flood (8 or more datagrams taken before the socket runs empty, none answered) that thread pauses 0.1 ms
    before receiving again, so that one wake-up takes many; a stretch with an answered datagram never ends in one.
    While datagrams come within 20 µs of each other the thread polls the socket for up to 20 µs after each batch
    instead of sleeping (a sleep and wake-up per request cost request/response traffic a third of its round trips).
    """

    def __new__(
        cls,
        address: _Endpoint | None = None,
        on_datagram: _DatagramHandler | None = None,
        *,
        reuse_port: bool = False,
    ) -> Self: ...
    def start(self) -> None:
        """Starts serving in the background and returns at once."""
    def serve_forever(self) -> None:
        """Serves until stop() or Ctrl-C."""
    def stop(self, timeout: float | None = None) -> None:
        """Stops receiving; waits up to `timeout` seconds (default 5) for the handler in progress. One still
        running then gives up the port at once (its reply is not sent), and stop() waits at most one second
        more for it."""
    def _repr_html_(self) -> str: ...
    def _set_async_bridge(self, bridge: Callable[[Any, Any], object]) -> None: ...
    def _begin_stop(self, timeout: float | None = None) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None: ...
    @property
    def address(self) -> _IPAddress: ...
    @property
    def running(self) -> bool: ...
    @property
    def stats(self) -> dict[str, int]:
        """datagrams_in, datagrams_out, bytes_in, bytes_out, errors."""

@disjoint_base
class UdpClient:
    """A UDP socket that refuses oversized datagrams, reports truncated ones, and retries requests.

    Bound to `address` if given, else unbound until its first send; its family is `family`, else `address`'s,
    else IPv4: to talk to IPv6 addresses without binding, give `family=AF_INET6`.

    A receive polls for up to 50 µs before it sleeps while the wait before it was that short (a server on this
    machine); after a longer wait it sleeps at once.
    """

    def __new__(cls, address: _Endpoint | None = None, *, family: int | None = None) -> Self: ...
    def sendto(self, data: Buffer, address: _Destination) -> int: ...
    def recvfrom(self, bufsize: int = ..., *, timeout: float | None = None) -> tuple[bytes, _IPAddress]: ...
    def request(
        self,
        data: Buffer,
        address: _Destination,
        timeout: float = 1.0,
        retries: int = 3,
        *,
        accept: Callable[[bytes], object] | None = None,
    ) -> bytes:
        """Sends `data` and returns the first reply from `address`, resending after each timeout.

        Datagrams already queued when it is called (such as late replies to an earlier request) are discarded first,
        so the reply returned is one that arrived after this request was sent. Raises TimeoutError after the last
        attempt, and ConnectionRefusedError at once when the address's host reports that nothing listens on that port
        (ICMP port unreachable). With `accept`, a function of a reply, only a reply it returns true for is taken; the
        others (late replies to earlier requests, told apart by an id in the messages) are dropped.
        """
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def local(self) -> _IPAddress: ...
    def fileno(self) -> int:
        """The descriptor, or -1 once closed."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None: ...

@final
class DatagramReply:
    """Where an async UDP handler's reply goes."""

    def _spare_at_stop(self) -> None: ...
    def _handler_done(self, reply: object, exc: BaseException | None = None) -> None: ...

@final
class Op:
    """What a StreamTransport's awaitable methods return: coroutine-like, a read begins when awaited."""

    # The method that made it ("StreamReader.read", "read"), as a coroutine's.
    __qualname__: str
    __name__: str
    def __await__(self) -> Generator[Any, Any, Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    def send(self, _value: object) -> Any: ...
    def throw(self, exc: BaseException, *_rest: object) -> None: ...
    def close(self) -> None: ...

@final
class Waiter:
    """rsock's asyncio-compatible future."""

    _asyncio_future_blocking: bool
    def __await__(self) -> Generator[Any, Any, Any]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Any: ...
    def send(self, _value: object) -> Any: ...
    def throw(self, exc: BaseException, *rest: object) -> None: ...
    def get_loop(self) -> Any: ...
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def result(self) -> Any: ...
    def exception(self) -> BaseException | None: ...
    def add_done_callback(self, callback: Callable[[Waiter], object], *, context: Any = None) -> None: ...
    def remove_done_callback(self, callback: Callable[[Waiter], object]) -> int: ...
    def cancel(self, msg: object = None) -> bool: ...

@final
class Poller:
    """One epoll instance per event loop, which watches every rsock.aio transport of that loop."""

    def __new__(cls, event_loop: Any) -> Self: ...
    def _start(self) -> None: ...
    def _on_ready(self) -> None: ...

@final
class StreamTransport:
    """A TCP connection driven by the running asyncio loop, with asyncio's stream API."""

    def __new__(
        cls,
        event_loop: Any,
        poller: Poller,
        sock: Any,
        limit: int | None = ...,
        framing: _FramingArg = None,
        max_frame_size: int = ...,
        *,
        client: bool = False,
    ) -> Self: ...
    def _start(self) -> None: ...
    def _notify_closed(self, callback: Callable[[], object]) -> None: ...
    # The awaitable methods return an Op, which asyncio takes for a coroutine (it is a collections.abc.Coroutine);
    # typed as one, with what awaiting it gives.
    def read(self, n: int = ...) -> Coroutine[Any, Any, bytes]: ...
    def readline(self) -> Coroutine[Any, Any, bytes]: ...
    def readexactly(self, n: int) -> Coroutine[Any, Any, bytes]: ...
    def readuntil(self, separator: Buffer | tuple[Buffer, ...] = b"\n") -> Coroutine[Any, Any, bytes]: ...
    def read_message(self) -> Coroutine[Any, Any, bytes | None]: ...
    def at_eof(self) -> bool: ...
    def exception(self) -> OSError | None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool: ...
    def get_write_buffer_limits(self) -> tuple[int, int]: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def write(self, data: Buffer) -> None: ...
    def writelines(self, lines: Iterable[Buffer]) -> None: ...
    def write_message(self, data: Buffer) -> Coroutine[Any, Any, None]: ...
    def request(self, data: Buffer) -> Coroutine[Any, Any, bytes]: ...
    def drain(self) -> Coroutine[Any, Any, None]: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    @property
    def _closed_here(self) -> bool: ...
    def is_closing(self) -> bool: ...
    def wait_closed(self) -> Coroutine[Any, Any, None]: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def get_write_buffer_size(self) -> int: ...
    @property
    def framing(self) -> _Framing: ...
