"""The ``rsock`` command line: ``python -m rsock <command>`` (or the ``rsock`` console script).

Commands: ``demo``, ``echo-server``, ``chat-server``, ``connect``, ``send-file``, ``recv-file`` and ``bench``;
``rsock <command> --help`` describes each. Exit codes, the same for every command (see ``EXIT_CODES``):

- 0: success, including a server stopped with Ctrl-C (SIGINT) or SIGTERM, which is how servers end;
- 1: a runtime failure, reported in one line on stderr: address already in use, connection refused, a file
  that did not arrive intact, ...;
- 2: a usage error (unknown command, bad or missing argument), reported by argparse with the usage line;
- 130: a command with a finite job (``connect``, ``send-file``, ``demo``, ``bench``) interrupted with Ctrl-C.

The file transfer protocol of ``send-file`` and ``recv-file`` (the one of ``examples/file_send.py`` and
``examples/file_receive.py``), one file per connection:

1. the sender sends one line of JSON, ``{"name": "photo.jpg", "size": 5242880}``, and a newline;
2. then exactly ``size`` bytes, the file's content, as they are;
3. the receiver answers one line, ``ok SIZE SHA256`` (the SHA-256 of what it wrote, in hex) or
   ``error: WHY``, and closes the connection.
"""

import argparse
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import signal
import socket as stdlib_socket
import stat
import sys
import textwrap
import threading
import time
import unicodedata
from pathlib import Path

import rsock

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 65432  # the examples' port

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
exit codes:
  0    success; servers exit 0 when stopped with Ctrl-C (SIGINT) or SIGTERM
  1    runtime failure, explained on stderr (address in use, connection refused, transfer not intact, ...)
  2    usage error: unknown command, bad or missing argument
  130  interrupted with Ctrl-C: connect, send-file, demo, bench"""

MAX_HEADER = 4096  # bytes: the file transfer header line is never longer
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
MAX_SECONDS = 1e9  # about 31 years: the sockets' and servers' clocks take nothing much longer


class CommandError(Exception):
    """A runtime failure: main() prints it as ``rsock COMMAND: error: MESSAGE`` and exits with code 1."""


# --- arguments ---------------------------------------------------------------------------------------


def _port(text):
    """argparse type: a port to listen on, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535")
    return port


def _peer_port(text):
    """argparse type: a port to connect to, 1-65535."""
    port = _port(text)
    if port == 0:
        raise argparse.ArgumentTypeError("invalid port '0': a peer's port is a number from 1 to 65535")
    return port


def _positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a whole number of at least 1")
    return value


def _seconds(text):
    """argparse type: a duration in seconds, > 0 and at most MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: expected a number of seconds above 0 and at most {MAX_SECONDS:.0e}"
        )
    return value


_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def _unescape(text):
    """`text` as UTF-8 bytes, with the escapes \\n \\r \\t \\0 \\\\ and \\xHH replaced by the bytes they stand for."""

    def replace(match):
        code = match[1]
        return bytes([int(code[1:], 16)]) if code.startswith(b"x") else _ESCAPES[code]

    return re.sub(rb"\\(x[0-9a-fA-F]{2}|[nrt0\\])", replace, text.encode())


def _framing(text):
    """argparse type: none, line, length or delimiter:TEXT (escapes allowed, e.g. delimiter:\\r\\n)."""
    if text in ("none", "line", "length"):
        return None if text == "none" else text
    kind, colon, delimiter = text.partition(":")
    if kind == "delimiter" and colon and delimiter:
        return _unescape(delimiter)
    raise argparse.ArgumentTypeError(
        f"invalid framing {text!r}: expected none, line, length or delimiter:TEXT (e.g. delimiter:;)"
    )


def _show(address):
    """``HOST:PORT`` for an address tuple, ``[HOST]:PORT`` for IPv6."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _status(text, stream=None, end="\n"):
    """Prints a status line on `stream` (default: stdout). A stream that cannot be written any more (closed by its
    reader, as in `rsock recv-file | head -1`) is pointed at /dev/null: this line and every later one are dropped,
    since printing status must never stop a server from serving nor a transfer from being answered."""
    stream = stream or sys.stdout
    try:
        print(text, end=end, file=stream, flush=True)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


# --- shared by the servers -----------------------------------------------------------------------------


def _listen(make_server, host, port, udp=False):
    """Calls `make_server()` (which binds); turns a failure to bind into a CommandError that says which address
    and what to do about it."""
    where = _show((host, port))
    proto = "UDP" if udp else "TCP"
    try:
        return make_server()
    except stdlib_socket.gaierror as exc:
        raise CommandError(f"cannot listen on {where}: unknown host {host!r} ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = f"{proto} address already in use (another program is listening there)"
            hint = "choose another port, e.g. --port 0 for any free one"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
            hint = "choose a port above 1023, e.g. --port 0 for any free one"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine"
            hint = "use 127.0.0.1, 0.0.0.0 (every interface) or one of this machine's addresses"
        else:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            hint = ""
        raise CommandError(f"cannot listen on {where}: {why}" + (f"; {hint}" if hint else "")) from None


@contextlib.contextmanager
def _sigterm_interrupts():
    """While inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so `kill PID` stops a server cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(server):
    """Prints ``listening on HOST:PORT`` and serves until the server stops or Ctrl-C / SIGTERM, after which it
    says so on stderr. Returns normally either way, once the server's stats are printed (on stderr)."""
    with _sigterm_interrupts():
        try:
            _status(f"listening on {_show(server.address)}")
            server.serve_forever()
        except KeyboardInterrupt:
            _status("interrupted, shutting down", sys.stderr)
            server.stop()
    _status("stats: " + ", ".join(f"{key} {value}" for key, value in server.stats.items()), sys.stderr)


# --- echo-server ----------------------------------------------------------------------------------------


def cmd_echo_server(args):
    """Runs a TCP (TcpServer) or UDP (UdpServer) echo server until Ctrl-C."""
    if args.udp:
        server = _listen(
            lambda: rsock.UdpServer((args.host, args.port), lambda data, address: data), args.host, args.port, udp=True
        )
    else:
        server = _listen(
            lambda: rsock.TcpServer((args.host, args.port), lambda conn, data: data, framing=args.framing),
            args.host,
            args.port,
        )
    _serve(server)
    return EXIT_OK


# --- chat-server ----------------------------------------------------------------------------------------


def cmd_chat_server(args):
    """Runs a line-framed chat room (examples/chat_server.py's) until Ctrl-C."""

    def on_connect(conn):
        nick = conn.state["nick"] = f"guest{conn.id}"
        _status(f"{nick} joined from {_show(conn.peer)}")
        others = server.stats["active"] - 1
        conn.send(f"* welcome, {nick}! others here: {others}. /nick NAME renames you, /quit leaves".encode())
        server.broadcast(f"* {nick} joined".encode(), exclude=conn)

    def on_message(conn, data):
        nick = conn.state["nick"]
        text = data.decode("utf-8", errors="replace").strip()
        command, _, argument = text.partition(" ")
        if command == "/nick":
            new_nick = argument.strip()
            if not new_nick or " " in new_nick:
                return b"* usage: /nick NAME (one word)"
            conn.state["nick"] = new_nick
            _status(f"{nick} is now {new_nick}")
            server.broadcast(f"* {nick} is now {new_nick}".encode(), exclude=conn)
            return f"* you are now {new_nick}".encode()
        if command == "/quit":
            conn.close()
            return None
        if text:
            server.broadcast(f"{nick}: {text}".encode(), exclude=conn)
        return None

    def on_disconnect(conn, exc):
        nick = conn.state.get("nick", f"guest{conn.id}")
        reason = "" if exc is None else f" ({exc})"
        _status(f"{nick} left{reason}")
        server.broadcast(f"* {nick} left".encode())

    server = _listen(
        lambda: rsock.TcpServer(
            (args.host, args.port),
            on_message=on_message,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            framing="line",
        ),
        args.host,
        args.port,
    )
    _serve(server)
    return EXIT_OK


# --- connect --------------------------------------------------------------------------------------------


def _connect_error(exc, where, proto):
    """A CommandError explaining why connecting (or talking) to `where` failed."""
    if isinstance(exc, stdlib_socket.gaierror):
        return CommandError(f"cannot connect to {where}: unknown host ({exc.strerror})")
    if isinstance(exc, ConnectionRefusedError):
        return CommandError(f"cannot connect to {where}: connection refused (is a {proto} server listening there?)")
    if isinstance(exc, TimeoutError):
        return CommandError(f"cannot connect to {where}: timed out")
    if isinstance(exc, ConnectionResetError):
        return CommandError(f"connection to {where} reset by the peer")
    return CommandError(f"connection to {where} failed: {os.strerror(exc.errno) if exc.errno else exc}")


@contextlib.contextmanager
def _step(where, proto, timed_out):
    """One step of a conversation with `where`: its OSError becomes a CommandError, a timeout the message
    `timed_out` (which names the step)."""
    try:
        yield
    except TimeoutError:
        raise CommandError(timed_out) from None
    except OSError as exc:
        raise _connect_error(exc, where, proto) from None


def _write_stdout(data):
    if sys.stdout is None:  # started with stdout closed: what arrives is dropped, as recv-file's report is
        return
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _read_stdin():
    """The next chunk of stdin, unbuffered (b"" at its end, or when there is no stdin)."""
    try:
        return os.read(0, 65536)
    except OSError:
        return b""


def _occupy_closed_stdio():
    """Opens /dev/null as descriptor 0 or 1 when the command was started with stdin or stdout closed (`rsock
    connect ... <&-`, `>&-`): otherwise the socket would get that descriptor, and the stdin reader would send the
    peer its own data back, or what it sends would go to the peer instead of nowhere."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, mode)  # the lowest free descriptor: fd, as those below it are open by now


# How sending fails once the peer has closed the connection (cleanly, or with a reset).
PEER_CLOSED_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN}


def _connect_tcp(args, where):
    try:
        sock = rsock.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as exc:
        raise _connect_error(exc, where, "TCP") from None
    sock.settimeout(None)
    failures = []
    closing = threading.Event()
    input_sent = threading.Event()

    def pump_stdin():
        # Unbuffered os.read: a daemon thread blocked in sys.stdin's buffered reader can abort interpreter exit.
        try:
            while data := _read_stdin():
                input_sent.set()  # before sending: a reset this data brings about must find it set
                sock.sendall(data)
            sock.shutdown(rsock.SHUT_WR)  # end of input: the peer reads end-of-file, and may answer and close
        except OSError as exc:
            if not closing.is_set():  # a send cut short because we are exiting is no failure
                failures.append(exc)

    with sock:
        threading.Thread(target=pump_stdin, daemon=True, name="rsock-connect-stdin").start()
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError as exc:
                    # A peer that closes with input of ours still unread resets the connection (RFC 1122,
                    # 4.2.2.13): once input has gone out, a reset is the peer closing first, after its last data.
                    if input_sent.is_set():
                        break
                    raise _connect_error(exc, where, "TCP") from None
                except OSError as exc:
                    raise _connect_error(exc, where, "TCP") from None
                if not data:  # the peer closed the connection
                    break
                _write_stdout(data)
        finally:
            closing.set()
    # The peer has closed: sending input to it failing for that reason alone is no failure.
    failures = [exc for exc in failures if exc.errno not in PEER_CLOSED_ERRNOS]
    if failures:
        raise _connect_error(failures[0], where, "TCP")
    return EXIT_OK


def _udp_refused(where):
    return CommandError(f"{where} refused the datagram (ICMP port unreachable): is a UDP server listening there?")


def _receive_datagrams(sock, args, where, failures, stdin_done):
    """Writes each datagram from the (connected, short-timeout) `sock` to stdout until sending failed, or stdin has
    ended and --wait seconds have passed since then without a datagram."""
    quiet_since = None  # when stdin ended or, after that, the last datagram came
    while not failures:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if stdin_done.is_set():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= args.wait:
                    return
            continue
        except ConnectionRefusedError:
            raise _udp_refused(where) from None
        except OSError as exc:
            raise _connect_error(exc, where, "UDP") from None
        _write_stdout(data)
        if stdin_done.is_set():
            quiet_since = time.monotonic()


def _connect_udp(args, where):
    try:
        family, kind, proto, _, address = rsock.getaddrinfo(args.host, args.port, 0, rsock.SOCK_DGRAM)[0]
        sock = rsock.socket(family, kind, proto)
    except OSError as exc:
        raise _connect_error(exc, where, "UDP") from None
    failures = []
    closing = threading.Event()
    stdin_done = threading.Event()

    def pump_stdin():
        pending = b""
        try:
            while data := _read_stdin():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    sock.send(line + b"\n")
                if len(pending) > MAX_DATAGRAM:
                    raise OSError(errno.EMSGSIZE, "Message too long")
            if pending:
                sock.send(pending)
        except OSError as exc:
            if not closing.is_set():
                failures.append(exc)
        finally:
            stdin_done.set()

    with sock:
        try:
            sock.connect(address)  # only replies from `address` arrive; an ICMP "port unreachable" is reported
        except OSError as exc:
            raise _connect_error(exc, where, "UDP") from None
        sock.settimeout(0.05)
        threading.Thread(target=pump_stdin, daemon=True, name="rsock-connect-stdin").start()
        try:
            _receive_datagrams(sock, args, where, failures, stdin_done)
        finally:
            closing.set()
    if failures:
        exc = failures[0]
        if exc.errno == errno.EMSGSIZE:
            raise CommandError(
                f"a line of input is too long for one datagram (at most {MAX_DATAGRAM} bytes, its newline included)"
            )
        if isinstance(exc, ConnectionRefusedError):
            raise _udp_refused(where)
        raise _connect_error(exc, where, "UDP")
    return EXIT_OK


def cmd_connect(args):
    """netcat-like: stdin to the peer, the peer's bytes to stdout."""
    where = _show((args.host, args.port))
    _occupy_closed_stdio()  # before any socket is created
    return _connect_udp(args, where) if args.udp else _connect_tcp(args, where)


# --- send-file / recv-file ------------------------------------------------------------------------------


class Progress:
    """A progress display for one transfer, on stderr: a tqdm bar when tqdm is importable, else a line
    ``NAME: 42% of 1234 bytes`` rewritten in place. ``update(n)`` adds `n` bytes; ``close()`` ends it."""

    def __init__(self, name, total, enabled=True):
        self.name, self.total, self.done = name, total, 0
        self.bar = None
        self.shown = -1  # the percentage last printed, without tqdm
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._print()
        else:
            self.bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def _print(self):
        percent = 100 * self.done // self.total if self.total else 100
        if percent != self.shown:
            self.shown = percent
            _status(f"\r{self.name}: {percent}% of {self.total} bytes", sys.stderr, end="")

    def update(self, n):
        """Counts `n` more bytes transferred."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            self._print()

    def close(self):
        """Ends the display (the bar or line stays on screen)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            _status("", sys.stderr)
        self.enabled = False


def cmd_send_file(args):
    """Sends one file with TcpClient.sendfile() and checks the receiver's SHA-256."""
    path = args.path
    size = path.stat().st_size
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    name = args.name or path.name
    where = _show((args.host, args.port))
    proto = "TCP (rsock recv-file)"
    try:
        client = rsock.TcpClient((args.host, args.port), framing="line", timeout=args.timeout)
    except OSError as exc:
        raise _connect_error(exc, where, proto) from None
    # Each step says what timed out: connecting (above), sending, or waiting for the answer.
    with client:
        with _step(where, proto, f"sending to {where} timed out: the receiver took no data for {args.timeout:g} s"):
            client.send(json.dumps({"name": name, "size": size}).encode())
            progress = Progress(name, size, enabled=not args.quiet)
            try:
                sent = client.sendfile(path, progress=progress.update)
            finally:
                progress.close()
        with _step(
            where, proto, f"the receiver did not answer within {args.timeout:g} s after the whole file was sent"
        ):
            reply = client.recv_message()
    print(f"sent {name}: {sent} bytes, sha256 {digest}", flush=True)
    if reply is None:
        raise CommandError(f"{where} closed the connection without confirming the file")
    answer = reply.decode("utf-8", errors="replace")
    if answer != f"ok {size} {digest}":
        raise CommandError(f"the receiver did not get the file intact; it answered: {answer}")
    print(f"receiver: {answer}", flush=True)
    return EXIT_OK


def _unused_path(directory, name):
    """directory/name, or directory/STEM-N.SUFFIX with the smallest N that names no existing file."""
    target = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 0
    while target.exists():
        n += 1
        target = directory / f"{stem}-{n}{suffix}"
    return target


def _name_problem(name, name_max):
    """Why `name` (a header's name without its directory part) cannot name a file, or None if it can."""
    if name in ("", ".", ".."):
        return "the name is empty, '.' or '..'"
    try:
        # Strict UTF-8 first: fsencode() would pass the surrogates U+DC80-U+DCFF through as raw bytes.
        name.encode("utf-8")
        encoded = os.fsencode(name)
    except UnicodeEncodeError:
        return "the name is not valid text (it holds a lone surrogate)"
    if b"\0" in encoded:
        return "the name holds a NUL byte"
    if "\n" in name or "\r" in name:  # it would break the one-line 'received ...' report
        return "the name holds a line break"
    if any(unicodedata.category(char) == "Cc" for char in name):  # ESC and the like would act on the terminal
        return "the name holds a control character"
    if len(encoded) > name_max:
        return f"the name is longer than {name_max} bytes"
    return None


def cmd_recv_file(args):
    """Receives files (one per connection) into --output-dir until Ctrl-C, or until --count transfers have ended
    and the ones under way then have ended too."""
    output_dir = args.output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the output directory {output_dir}: {exc.strerror}") from None
    name_max = os.pathconf(output_dir, "PC_NAME_MAX")
    # Transfers under way, and ended: saved, failed, or cut off by the receiver's own stop (Ctrl-C, SIGTERM). The
    # handlers run one at a time (on rsock's I/O thread): no lock needed.
    transfers = {"open": 0, "ok": 0, "failed": 0, "cut off": 0}

    def ended():
        return transfers["ok"] + transfers["failed"]

    def count_reached():
        return args.count is not None and ended() >= args.count

    def refuse(conn, why):
        _status(f"refused {_show(conn.peer)}: {why}", sys.stderr)
        conn.state["error"] = why
        conn.send(f"error: {why}\n".encode())
        conn.close()

    def start_file(conn, header_line):
        try:
            header = json.loads(header_line)
            name, size = header["name"], header["size"]
        except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: nested too deep to parse
            return "the header must be a JSON object with a name and a size"
        if type(size) is not int or size < 0:  # type(): True and False are ints to isinstance()
            return "the size must be a whole number of bytes"
        name = Path(name).name if isinstance(name, str) else ""  # never outside the output directory
        problem = _name_problem(name, name_max)
        if problem:
            return problem
        # As long whatever the name. The random part keeps a temporary left by a killed receiver that had
        # this PID (PIDs are reused) from refusing this transfer.
        temporary = output_dir / f".rsock-{os.getpid()}-{conn.id}-{secrets.token_hex(4)}.part"
        try:
            file = temporary.open("xb")  # "x": never truncates a file already there, whoever named it so
        except OSError as exc:
            return f"cannot write {temporary}: {exc.strerror}"
        conn.state.update(
            name=name,
            temporary=temporary,
            file=file,
            size=size,
            got=0,
            sha=hashlib.sha256(),
            progress=Progress(name, size, enabled=not args.quiet),
        )
        return None

    def finish_file(conn):
        """Saves the complete file under its name, answers 'ok' and closes the connection."""
        state = conn.state
        state["file"].close()
        state["progress"].close()
        target = _unused_path(output_dir, state["name"])
        try:
            os.replace(state["temporary"], target)
        except OSError as exc:  # e.g. NAME-1 one byte over the longest name the file system takes
            refuse(conn, f"cannot save {target.name}: {exc.strerror}")
            return
        digest = state["sha"].hexdigest()
        _status(f"received {target} ({state['size']} bytes) from {_show(conn.peer)}, sha256 {digest}")
        state["done"] = True
        conn.send(f"ok {state['size']} {digest}\n".encode())
        conn.close()

    def on_connect(conn):
        if count_reached():  # --count transfers have ended: only those under way may still finish
            conn.state["turned_away"] = True
            refuse(conn, f"this receiver takes no more files (it was to take {args.count})")
        else:
            transfers["open"] += 1

    def on_message(conn, data):
        state = conn.state
        if "error" in state or state.get("done"):  # answered: the connection is closing
            return
        if "file" not in state:  # still reading the header line
            buffered = state.get("header", b"") + data
            header_line, newline, data = buffered.partition(b"\n")
            if not newline:
                if len(buffered) > MAX_HEADER:
                    refuse(conn, "no header line")
                else:
                    state["header"] = buffered
                return
            error = start_file(conn, header_line)
            if error:
                refuse(conn, error)
                return
        if state["got"] + len(data) > state["size"]:
            refuse(conn, "more data than the header announced")
            return
        state["file"].write(data)
        state["sha"].update(data)
        state["got"] += len(data)
        state["progress"].update(len(data))
        if state["got"] == state["size"]:
            finish_file(conn)

    def on_disconnect(conn, exc):
        state = conn.state
        if state.get("turned_away"):
            return
        transfers["open"] -= 1
        if "file" in state and not state.get("done"):  # refused, cut off, or the sender went away or quiet
            state["file"].close()
            state["progress"].close()
            state["temporary"].unlink(missing_ok=True)
        # Closed by the receiver's stop rather than by the sender (it ended with an error, or went quiet, or
        # the receiver answered it): cut off, not failed.
        cut_off = not server.running and "error" not in state
        if state.get("done"):
            transfers["ok"] += 1
        elif cut_off:
            if "file" in state:
                transfers["cut off"] += 1
                _status(
                    f"cut off by the stop: {state['name']} from {_show(conn.peer)}, "
                    f"{state['got']} of {state['size']} bytes",
                    sys.stderr,
                )
        else:
            transfers["failed"] += 1
            peer = _show(conn.peer)
            if "file" in state:  # refused, or the sender went away before the end, or went quiet (--timeout)
                if "error" not in state:  # else refuse() has said why
                    reason = "" if exc is None else f" ({exc})"
                    _status(
                        f"incomplete: {state['name']} from {peer}, {state['got']} of {state['size']} bytes{reason}",
                        sys.stderr,
                    )
            elif "error" not in state:
                why = "closed the connection before sending a file" if exc is None else f"sent no file ({exc})"
                _status(f"{peer} {why}", sys.stderr)

        if count_reached():
            if transfers["open"] == 0:
                server.stop()
            elif ended() == args.count:  # just reached: say why recv-file goes on
                _status(
                    f"{ended()} transfer(s) ended (--count {args.count}): taking no more files, waiting for the "
                    f"{transfers['open']} under way",
                    sys.stderr,
                )

    server = _listen(
        lambda: rsock.TcpServer(
            (args.host, args.port),
            on_message=on_message,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            idle_timeout=args.timeout,
        ),
        args.host,
        args.port,
    )
    _serve(server)
    if transfers["cut off"]:
        _status(f"{transfers['cut off']} transfer(s) cut off by the stop (their partial files removed)", sys.stderr)
    if transfers["failed"]:
        _status(f"{transfers['failed']} transfer(s) failed, {transfers['ok']} succeeded", sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# --- demo / bench ---------------------------------------------------------------------------------------


def cmd_demo(args):
    """The README's demo (rsock._demo)."""
    from rsock import _demo

    return _demo.run()


def cmd_bench(args):
    """A side-by-side comparison of rsock and the stdlib: the socket API in this process, the servers each
    in a process of their own with client threads here."""
    from rsock import _demo

    reps, duration = (1, 0.25) if args.quick else (3, 0.4)
    unlimited = 10**9
    print(
        f"rsock {rsock.__version__} bench{' --quick' if args.quick else ''}: loopback, servers in their own "
        f"processes ({os.cpu_count()} CPUs)"
    )
    print(
        f"each run {duration} s, median of {reps} interleaved run(s); ratio = rsock / stdlib, above 1 = rsock faster\n"
    )
    print(f"  {'':<38} {'rsock':>14} {'stdlib':>14} {'ratio':>6}")
    wrong_total = 0

    def row(label, rsock_rate, stdlib_rate, cpu=None):
        ratio = rsock_rate / stdlib_rate if stdlib_rate else float("nan")
        cpu_text = f"   server CPU µs/req {cpu[0]:.1f} vs {cpu[1]:.1f}" if cpu else ""
        print(f"  {label:<38} {rsock_rate:>12,.0f}/s {stdlib_rate:>12,.0f}/s {ratio:>6.2f}{cpu_text}", flush=True)

    print("socket API (`import rsock as socket` vs `import socket`), one client thread:")
    for label, exchange in (("TCP round trips", _demo.tcp_round_trips), ("UDP round trips", _demo.udp_round_trips)):
        rates = {rsock: [], stdlib_socket: []}
        for _ in range(reps):
            for mod in rates:
                reply, rate = exchange(mod, unlimited, time_limit=duration)
                wrong_total += reply != _demo.MESSAGE
                rates[mod].append(rate)
        row(label, sorted(rates[rsock])[reps // 2], sorted(rates[stdlib_socket])[reps // 2])

    print("\nservers, stdlib clients in threads, 64-byte requests:")
    print("  (TCP: rsock.TcpServer vs socketserver.ThreadingTCPServer; UDP: rsock.UdpServer vs a recvfrom loop)")
    cells = [
        ("TCP echo, 1 connection", _demo.tcp_server_rate, _demo.rsock_tcp_echo_server, _demo.stdlib_tcp_echo_server, 1),
        (
            "TCP echo, 8 connections",
            _demo.tcp_server_rate,
            _demo.rsock_tcp_echo_server,
            _demo.stdlib_tcp_echo_server,
            8,
        ),
        (
            "TCP echo, 32 connections",
            _demo.tcp_server_rate,
            _demo.rsock_tcp_echo_server,
            _demo.stdlib_tcp_echo_server,
            32,
        ),
        ("UDP echo, 8 clients", _demo.udp_server_rate, _demo.rsock_udp_echo_server, _demo.stdlib_udp_echo_server, 8),
    ]
    for label, rate_function, rsock_server, stdlib_server, connections in cells:
        ((rsock_rate, rsock_cpu), (stdlib_rate, stdlib_cpu)), wrong = _demo.compare_servers(
            rate_function, [rsock_server, stdlib_server], reps, connections, unlimited, duration
        )
        wrong_total += wrong
        row(label, rsock_rate, stdlib_rate, (rsock_cpu, stdlib_cpu))
    if wrong_total:
        print(f"\nMISMATCH: {wrong_total} replies differed from what was sent (or were lost)")
        return EXIT_FAILURE
    print("\nevery reply matched what was sent")
    return EXIT_OK


# --- the parser -----------------------------------------------------------------------------------------


def _server_options(parser, what):
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"{what} port to listen on; 0 picks any free port (default: %(default)s)",
    )


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description or epilog to the terminal, but leaves a paragraph with indented lines
    (examples, the exit codes) as written."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(
                    textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(paragraphs)


def build_parser():
    """The argparse parser for every command (each subparser's defaults hold its function as ``run``)."""
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="rsock",
        description="Python sockets with a Rust core: a demo, servers, a netcat-like client, file transfer and a "
        "benchmark, all on rsock.",
        epilog=f"Run 'rsock COMMAND --help' for a command's options.\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"rsock {rsock.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name, summary, description, epilog, run):
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=f"{epilog}\n\n{EXIT_CODES}".strip(),
            formatter_class=formatter,
        )
        sub.set_defaults(run=run, subparser=sub)
        return sub

    command(
        "demo",
        "the tutorial's TCP and UDP round trips on rsock, then rsock and the stdlib side by side",
        "Runs the socket tutorial's TCP and UDP echo round trips with `import rsock as socket`, times the same "
        "exchange on rsock and on the stdlib, then compares rsock.TcpServer with socketserver.ThreadingTCPServer. "
        "Loopback only, a few seconds. Exits 1 if a reply differed from what was sent.",
        "",
        cmd_demo,
    )

    sub = command(
        "echo-server",
        "a TCP (rsock.TcpServer) or UDP (rsock.UdpServer) echo server",
        "Sends back whatever arrives: each chunk read (or each message, with --framing) on TCP, each datagram with "
        "--udp. Prints 'listening on HOST:PORT' (the real port with --port 0), then serves until Ctrl-C or SIGTERM, "
        "after which it prints the server's counters on stderr and exits 0.",
        "example:\n  rsock echo-server --port 0\n  echo hello | rsock connect 127.0.0.1 PORT",
        cmd_echo_server,
    )
    _server_options(sub, "TCP (or UDP)")
    sub.add_argument(
        "--framing",
        type=_framing,
        default=None,
        metavar="{none,line,length,delimiter:TEXT}",
        help="TCP only: how messages are cut from the stream: none (every chunk read), line, length (4-byte "
        "big-endian prefix) or delimiter:TEXT (escapes \\n \\r \\t \\0 \\\\ \\xHH allowed) (default: none)",
    )
    sub.add_argument("--udp", action="store_true", help="serve UDP datagrams instead of TCP")

    sub = command(
        "chat-server",
        "a line-framed chat room: each line goes to every other member",
        "A chat room on rsock.TcpServer with framing='line': every line a member sends goes to every other member as "
        "'NAME: line'; '/nick NAME' renames the sender, '/quit' leaves. Joins, renames and departures are logged on "
        "stdout after the 'listening on HOST:PORT' line. Serves until Ctrl-C or SIGTERM (exit 0).",
        "example:\n  rsock chat-server --port 0\n  rsock connect 127.0.0.1 PORT     (in two other terminals)",
        cmd_chat_server,
    )
    _server_options(sub, "TCP")

    sub = command(
        "connect",
        "netcat-like client: stdin to the peer, the peer to stdout",
        "Connects to HOST PORT and copies stdin to the peer and what the peer sends to stdout, as bytes. TCP: when "
        "stdin ends (at once if stdin is closed), the sending side is shut down (the peer reads end-of-file) and "
        "connect waits for the peer to close, then exits 0; it also exits 0 when the peer closes first, even with "
        "input of connect's still unread (the peer's system then resets the connection). UDP (--udp): each line of "
        "stdin is sent as one datagram (with its newline) and each datagram received is written out; after stdin "
        "ends, connect waits until --wait seconds pass without a datagram, then exits 0. Ctrl-C exits 130.",
        "examples:\n  echo hello | rsock connect 127.0.0.1 65432\n"
        "  printf 'a\\nb\\n' | rsock connect --udp 127.0.0.1 65432",
        cmd_connect,
    )
    sub.add_argument("host", metavar="HOST", help="the peer's host name or address")
    sub.add_argument("port", metavar="PORT", type=_peer_port, help="the peer's port")
    sub.add_argument("--udp", action="store_true", help="send and receive UDP datagrams instead of a TCP stream")
    sub.add_argument(
        "--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="TCP connect timeout (default: %(default)s)"
    )
    sub.add_argument(
        "--wait",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="UDP: how long to wait for more replies after stdin ends (default: %(default)s)",
    )

    sub = command(
        "send-file",
        "send a file to 'rsock recv-file', with a progress bar, checking its SHA-256",
        "Sends PATH to an 'rsock recv-file' with TcpClient.sendfile() (sendfile(2)), drawing progress on stderr (a "
        "tqdm bar when tqdm is installed, else a percentage), then checks the SHA-256 the receiver reports against "
        "the file's. Prints 'sent NAME: N bytes, sha256 HEX' and the receiver's answer; exits 1 if the receiver did "
        'not confirm the file intact.\n\nProtocol: one JSON header line {"name": NAME, "size": N}, then the N '
        "bytes, then the receiver's answer line 'ok N SHA256' or 'error: WHY'.",
        "example:\n  rsock recv-file --port 0 --output-dir inbox\n  rsock send-file photo.jpg --port PORT",
        cmd_send_file,
    )
    sub.add_argument("path", metavar="PATH", type=Path, help="the file to send")
    sub.add_argument("--host", default=DEFAULT_HOST, help="the receiver's address (default: %(default)s)")
    sub.add_argument("--port", type=_peer_port, default=DEFAULT_PORT, help="the receiver's port (default: %(default)s)")
    sub.add_argument("--name", help="the name to send the file under (default: PATH's file name)")
    sub.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long connecting, each wait to send and the wait for the receiver's answer may take "
        "(default: %(default)s)",
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    sub = command(
        "recv-file",
        "receive files sent by 'rsock send-file' into a directory",
        "Listens for 'rsock send-file' (one file per connection, any number at once), writing each into "
        "--output-dir under the name the sender gives (without any directory part; an existing file is never "
        "overwritten: STEM-1.SUFFIX, STEM-2.SUFFIX, ... are used instead, so photo.jpg becomes photo-1.jpg). A "
        "name starting with a dot is kept as it is (hidden files arrive hidden). A name is refused (answered 'error: "
        "WHY', as a transfer the receiver refuses is; one the sender ends early has nobody left to answer) if it is "
        "'.' or '..', holds a NUL byte, a line break or another control character, is not valid text, or is longer "
        "than the file system allows. A file is written to a temporary "
        "'.rsock-PID-N-RANDOM.part' file and renamed once complete. Prints 'listening on HOST:PORT', then 'received "
        "PATH (N bytes) from HOST:PORT, sha256 HEX' for each file (dropped if stdout is closed); progress and failed "
        "transfers go to stderr. Serves until Ctrl-C or SIGTERM, or with --count N until N transfers have ended: it "
        "then turns new connections away and exits once the transfers under way have ended too. Prints the server's "
        "stats when it stops. Exits 1 if a transfer failed, else 0: a transfer that Ctrl-C or SIGTERM cuts off is "
        "reported, and its partial file removed, but it is not a failure.",
        "example:\n  rsock recv-file --port 0 --output-dir inbox --count 1",
        cmd_recv_file,
    )
    _server_options(sub, "TCP")
    sub.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where files go, made (with any missing parents) if it does not exist (default: the current one)",
    )
    sub.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="exit after N transfers (successful or not) have ended, and the ones under way then",
    )
    sub.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="a transfer that receives nothing for this long fails (default: %(default)s)",
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    sub = command(
        "bench",
        "a quick benchmark of rsock against the stdlib (under 30 s; --quick: a few seconds)",
        "Times request/reply exchanges on loopback, rsock against the stdlib: the socket API (TCP and UDP round "
        "trips) and the servers (rsock.TcpServer against socketserver.ThreadingTCPServer with 1, 8 and 32 "
        "connections, rsock.UdpServer against a recvfrom loop). Each server runs in a process of its own, the "
        "clients in this one. Prints a table with rates and ratios (rsock / stdlib); a short run on a shared "
        "machine, so the numbers are indicative. Exits 1 if a reply differed from what was sent.",
        "",
        cmd_bench,
    )
    sub.add_argument("--quick", action="store_true", help="one short run per measurement (a few seconds in all)")
    return parser


def _check(args):
    """Usage checks argparse cannot express; calls subparser.error() (exit 2) on a bad combination."""
    sub = args.subparser
    if args.command == "echo-server" and args.udp and args.framing is not None:
        sub.error("--framing applies to TCP only, not with --udp")
    if args.command == "send-file":
        try:
            mode = args.path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            sub.error(f"{args.path}: no such file")
        except OSError as exc:  # a directory on the way that may not be searched
            sub.error(f"{args.path}: {exc.strerror.lower()}")
        if not stat.S_ISREG(mode):
            sub.error(f"{args.path} is not a file")
        if not os.access(args.path, os.R_OK):
            sub.error(f"{args.path}: permission denied")
    if args.command == "recv-file":
        # One that cannot be looked at (a directory on the way that may not be searched) is for recv-file to
        # report when it tries to make it.
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(args.output_dir.stat().st_mode):
                sub.error(f"--output-dir {args.output_dir} is not a directory")


def main(argv=None):
    """Runs ``rsock`` with `argv` (default: sys.argv[1:]); returns the exit code. Usage errors and --help raise
    SystemExit (2 and 0), as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args)
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"rsock {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK if args.command in ("echo-server", "chat-server", "recv-file") else EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `rsock connect ... | head -1`): exit quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
