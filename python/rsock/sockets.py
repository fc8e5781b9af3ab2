"""The drop-in ``socket`` module: what CPython's ``Lib/socket.py`` puts over ``_socket``, put over rsock's
native core.

Constants, enums, exceptions and the helpers that touch no socket (``htons``, ``inet_aton``,
``getservbyname``, ...) are the stdlib's own objects, so values compare, pickle and print the same and
``except socket.gaierror`` catches errors from either module. Everything that does I/O on a socket or
resolves a name is rsock's native code.
"""

import io as _io
import os as _os
import socket as _stdlib
from errno import EAGAIN, EBADF, EWOULDBLOCK  # noqa: F401 - the stdlib's socket module has them too
from socket import *  # noqa: F403 - the constants, enums and pure helpers are the stdlib's own
from socket import (  # noqa: F401 - AddressInfo and MsgFlag are outside the stdlib's __all__ but public
    AF_INET,
    AF_INET6,
    AF_UNIX,
    IPPROTO_IPV6,
    IPV6_V6ONLY,
    SO_REUSEADDR,
    SO_REUSEPORT,
    SOCK_STREAM,
    SOL_SOCKET,
    AddressFamily,
    AddressInfo,
    MsgFlag,
    SocketKind,
    _GiveupOnSendfile,  # with which a subclass's _sendfile_use_sendfile() gives up on sendfile(2)
    gethostname,
    has_ipv6,
)

from rsock import _rsock
from rsock._rsock import (  # noqa: F401 - rsock's own versions of these socket-module functions
    close,
    dup,
    getdefaulttimeout,
    gethostbyaddr,
    gethostbyname,
    gethostbyname_ex,
    getnameinfo,
    setdefaulttimeout,
)

# `error`, `timeout`, `herror` and `gaierror` come from the stdlib as well: `error is OSError`,
# `timeout is TimeoutError`.
error = OSError
timeout = TimeoutError
herror = _stdlib.herror
gaierror = _stdlib.gaierror

# The sentinel the stdlib's create_connection() uses for "no timeout given"; shared so code that passes
# socket._GLOBAL_DEFAULT_TIMEOUT along works with either module.
_GLOBAL_DEFAULT_TIMEOUT = _stdlib._GLOBAL_DEFAULT_TIMEOUT

SocketType = _rsock.socket

# send_fds() and recv_fds() are the stdlib's own: they only call the socket's sendmsg()/recvmsg().

_BLOCKING_ERRNOS = {EAGAIN, EWOULDBLOCK}


def _as_enum(value, enum_class):
    """`value` as a member of `enum_class` when it has one, else the plain int (as the stdlib does)."""
    try:
        return enum_class(value)
    except ValueError:
        return value


class socket(_rsock.socket):
    """A socket: ``socket(family=AF_INET, type=SOCK_STREAM, proto=0, fileno=None)``, as the stdlib's."""

    __slots__ = ["_closed", "_io_refs"]
    __module__ = "rsock"

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        # Enum members reach the native class as plain ints; it applies the same defaults as the stdlib.
        if fileno is None:
            family = AF_INET if family == -1 else family
            type = SOCK_STREAM if type == -1 else type
            proto = 0 if proto == -1 else proto
        _rsock.socket.__init__(self, family, type, proto, fileno)
        self._io_refs = 0
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *args):
        if not self._closed:
            self.close()

    def __repr__(self):
        closed = getattr(self, "_closed", False)
        parts = [
            f"<{type(self).__module__}.{type(self).__qualname__}{' [closed]' if closed else ''} "
            f"fd={self.fileno()}, family={self.family}, type={self.type}, proto={self.proto}"
        ]
        if not closed:
            for label, getter in (("laddr", self.getsockname), ("raddr", self.getpeername)):
                try:
                    address = getter()
                except OSError:
                    continue
                if address:
                    parts.append(f", {label}={address}")
        return "".join(parts) + ">"

    def __getstate__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def dup(self):
        """A new socket on a duplicate of this socket's descriptor."""
        sock = type(self)(self.family, self.type, self.proto, fileno=dup(self.fileno()))
        sock.settimeout(self.gettimeout())
        return sock

    def accept(self):
        """Waits for a connection: returns ``(socket, address)`` for it."""
        fd, address = self._accept()
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        # A listening socket with a timeout hands out non-blocking descriptors on some systems; make the
        # new socket blocking unless a default timeout says otherwise, as the stdlib does.
        if getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, address

    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None, newline=None):
        """A file object over the socket (``"r"``, ``"w"``, ``"b"`` modes), as the stdlib's makefile()."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        raw = SocketIO(self, ("r" if reading else "") + ("w" if writing else ""))
        self._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = _io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buffer = _io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = _io.BufferedReader(raw, buffering)
        else:
            buffer = _io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = _io.TextIOWrapper(buffer, _io.text_encoding(encoding), errors, newline)
        text.mode = mode
        return text

    def _decref_socketios(self):
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    def _real_close(self, _native_close=_rsock.socket.close):
        _native_close(self)

    def close(self):
        """Closes the socket once every file made by makefile() is closed too."""
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def detach(self):
        """Gives up the descriptor without closing it and returns it."""
        self._closed = True
        return super().detach()

    @property
    def family(self):
        """The address family, as an AddressFamily member when it is one."""
        return _as_enum(super().family, AddressFamily)

    @property
    def type(self):
        """The socket type, as a SocketKind member when it is one."""
        return _as_enum(super().type, SocketKind)

    def sendfile(self, file, offset=0, count=None):
        """Sends a file (opened in binary mode) with sendfile(2), falling back to send(); returns the
        number of bytes sent and leaves the file positioned after them."""
        try:
            return self._sendfile_use_sendfile(file, offset, count)
        except _GiveupOnSendfile:
            return self._sendfile_use_send(file, offset, count)

    def _check_sendfile_params(self, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not self.type & SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")

    def _sendfile_use_sendfile(self, file, offset=0, count=None):
        self._check_sendfile_params(file, offset, count)
        # As the stdlib: a file without a descriptor, or one fstat() cannot size, is sent with send(); any
        # other error from fileno() is the caller's.
        try:
            file_fd = file.fileno()
        except (AttributeError, _io.UnsupportedOperation) as err:
            raise _GiveupOnSendfile(err) from None
        try:
            size = _os.fstat(file_fd).st_size
        except OSError as err:
            raise _GiveupOnSendfile(err) from None
        if not size:
            return 0
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if self.fileno() < 0:
            # What the stdlib's selector-based wait reports for a closed socket.
            raise ValueError(f"Invalid file descriptor: {self.fileno()}")
        # One call moves at most 1 GiB, which keeps the count inside what every platform accepts.
        chunk = min(count or size, 2**30)
        total = 0
        try:
            while True:
                if count:
                    # Each call stays within 1 GiB whatever the count (CPython's gh-114077: a count past
                    # a C ssize_t used to reach os.sendfile() whole and raise OverflowError).
                    chunk = min(count - total, chunk)
                    if chunk <= 0:
                        break
                try:
                    sent = self._sendfile(file_fd, offset, chunk)
                except TimeoutError:
                    raise
                except OSError as err:
                    if total == 0:
                        raise _GiveupOnSendfile(err) from None
                    raise
                if sent == 0:
                    break
                offset += sent
                total += sent
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    def _sendfile_use_send(self, file, offset=0, count=None):
        self._check_sendfile_params(file, offset, count)
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        chunk = min(count, 8192) if count else 8192
        total = 0
        try:
            while True:
                if count:
                    chunk = min(count - total, chunk)
                    if chunk <= 0:
                        break
                data = memoryview(file.read(chunk))
                if not data:
                    break
                while data:
                    try:
                        sent = self.send(data)
                    except BlockingIOError:
                        continue
                    total += sent
                    data = data[sent:]
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)


class SocketIO(_io.RawIOBase):
    """The raw I/O object under makefile(): readinto() and write() over recv_into() and send()."""

    __module__ = "rsock"

    def __init__(self, sock, mode):
        # The finaliser calls close() even when the mode is refused: it must find no socket to release.
        self._sock = None
        if mode not in ("r", "w", "rw", "rb", "wb", "rwb"):
            raise ValueError(f"invalid mode: {mode!r}")
        super().__init__()
        self._sock = sock
        self._mode = mode if "b" in mode else mode + "b"
        self._reading = "r" in mode
        self._writing = "w" in mode
        self._timeout_occurred = False

    def readinto(self, b):
        """Reads into `b`; None when a non-blocking socket has nothing yet. After a timeout the stream
        may have lost data, so it refuses further reads."""
        self._checkClosed()
        self._checkReadable()
        if self._timeout_occurred:
            raise OSError("cannot read from timed out object")
        try:
            return self._sock.recv_into(b)
        except TimeoutError:
            self._timeout_occurred = True
            raise
        except OSError as err:
            if err.errno in _BLOCKING_ERRNOS:
                return None
            raise

    def write(self, b):
        """Writes what the socket takes of `b` and returns the count; None if it would block."""
        self._checkClosed()
        self._checkWritable()
        try:
            return self._sock.send(b)
        except OSError as err:
            if err.errno in _BLOCKING_ERRNOS:
                return None
            raise

    def readable(self):
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return self._reading

    def writable(self):
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return self._writing

    def seekable(self):
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return super().seekable()

    def fileno(self):
        self._checkClosed()
        return self._sock.fileno()

    @property
    def name(self):
        return -1 if self.closed else self.fileno()

    @property
    def mode(self):
        return self._mode

    def close(self):
        if self.closed:
            return
        super().close()
        if self._sock is not None:
            self._sock._decref_socketios()
            self._sock = None


def fromfd(fd, family, type, proto=0):
    """A socket on a duplicate of the descriptor `fd`."""
    return socket(family, type, proto, dup(fd))


def socketpair(family=None, type=SOCK_STREAM, proto=0):
    """Two connected sockets (AF_UNIX unless `family` says otherwise)."""
    if family is None:
        family = AF_UNIX
    fd_a, fd_b = _rsock.socketpair(family, type, proto)
    try:
        first = socket(family, type, proto, fd_a)
    except BaseException:
        close(fd_a)
        close(fd_b)
        raise
    return first, socket(family, type, proto, fd_b)


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    """``[(family, type, proto, canonname, sockaddr), ...]`` for a host and port, as the stdlib's."""
    return [
        (_as_enum(af, AddressFamily), _as_enum(kind, SocketKind), protocol, canonname, address)
        for af, kind, protocol, canonname, address in _rsock.getaddrinfo(host, port, family, type, proto, flags)
    ]


def getfqdn(name=""):
    """The fully qualified domain name for `name` (this host when empty)."""
    name = name.strip()
    if not name or name in ("0.0.0.0", "::"):
        name = gethostname()
    try:
        hostname, aliases, _ = gethostbyaddr(name)
    except OSError:
        return name
    return next((alias for alias in [hostname, *aliases] if "." in alias), hostname)


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *, all_errors=False):
    """Connects to ``(host, port)``, trying each address the name resolves to; returns the socket.

    On failure raises the last error, or with ``all_errors=True`` an ExceptionGroup of every error."""
    host, port = address
    errors = []
    for af, kind, proto, _, sockaddr in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(af, kind, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            errors.clear()
            return sock
        except OSError as exc:
            if not all_errors:
                errors.clear()
            errors.append(exc)
            if sock is not None:
                sock.close()
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    try:
        if not all_errors:
            raise errors[0]
        raise ExceptionGroup("create_connection failed", errors)
    finally:
        # The traceback refers to the frame that holds the list: break the cycle.
        errors.clear()


def has_dualstack_ipv6():
    """Whether one AF_INET6 socket can take both IPv4 and IPv6 connections here."""
    if not has_ipv6:
        return False
    try:
        with socket(AF_INET6, SOCK_STREAM) as sock:
            sock.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
            return True
    except OSError:
        return False


def create_server(address, *, family=AF_INET, backlog=None, reuse_port=False, dualstack_ipv6=False):
    """A TCP socket bound to `address` and listening, as the stdlib's create_server()."""
    if dualstack_ipv6:
        if not has_dualstack_ipv6():
            raise ValueError("dualstack_ipv6 not supported on this platform")
        if family != AF_INET6:
            raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    sock = socket(family, SOCK_STREAM)
    try:
        # Without SO_REUSEADDR a restarted server could not bind while old connections sit in TIME_WAIT.
        try:
            sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        except OSError:
            pass
        if reuse_port:
            sock.setsockopt(SOL_SOCKET, SO_REUSEPORT, 1)
        if has_ipv6 and family == AF_INET6:
            sock.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0 if dualstack_ipv6 else 1)
        try:
            sock.bind(address)
        except OSError as err:
            raise OSError(err.errno, f"{err.strerror} (while attempting to bind on address {address!r})") from None
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
        return sock
    except OSError:
        sock.close()
        raise
