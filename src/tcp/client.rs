//! `TcpClient`: a blocking TCP client with message framing done in Rust. Every wait releases the
//! GIL, honours the timeout and lets Ctrl-C through, as the drop-in socket's calls do (it is built
//! on the same native socket).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use pyo3::exceptions::{PyConnectionError, PyEOFError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyTuple, PyType};
use socket2::SockAddr;

use crate::args::{Opt, byte_count};
use crate::audit;
use crate::buffer::{BytesWriter, with_readable};
use crate::errors::{file_error, io_error, os_error};
use crate::framing::{FrameDecoder, Framing, take_front};
use crate::py_lazy::interned;
use crate::resolver::{endpoints, socket_address_to_py};
use crate::socket::{Socket, parse_timeout};
use crate::spin::ReplySpin;
use crate::turns::{Turn, Turns};

const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// How much one read asks for when filling the message buffer.
const READ_CHUNK: usize = 64 * 1024;
/// How much one sendfile(2) call moves between progress reports.
const SENDFILE_CHUNK: usize = 4 * 1024 * 1024;

/// Bytes read ahead of the caller (partial messages), and the decoder that cuts them.
struct Reader {
    buffer: BytesMut,
    decoder: Option<FrameDecoder>,
    eof: bool,
}

/// A TCP connection with optional framing: `send()` / `recv()` for bytes, `recv_message()` and
/// `request()` for whole messages, `sendfile()` for zero-copy file transfer.
///
/// - `address`: `(host, port)` (or IPv6's four-tuple) to connect to, taken as `create_connection()`
///   takes it: a list too, and the port a number or a service ("8080", "http").
/// - `timeout`: seconds that the connect, and each wait of a later call (for its turn among threads
///   sharing the client, for the socket), may take (None: for ever); one that takes longer raises
///   TimeoutError.
/// - `framing`: None (raw bytes), "line", "length" (4-byte big-endian prefix) or a bytes delimiter.
/// - `max_frame_size` (default 16 MiB): a longer incoming frame raises ValueError and closes the client.
///
/// Threads may share a client: messages never interleave, and concurrent `request()` calls take turns.
/// A read polls for its data for a while before it sleeps, while replies come fast (see spin.rs).
#[pyclass(name = "TcpClient", module = "rsock._rsock", subclass, frozen)]
pub struct TcpClient {
    sock: Socket,
    framing: Framing,
    /// The turn to read: the reader is locked only by the thread that has it.
    reading: Turns,
    reader: Mutex<Reader>,
    /// The turn to send a message or file, so that threads sharing the client do not interleave
    /// their bytes on the wire.
    writing: Turns,
    /// The turn at request(), from its send to its reply, so that each thread gets its own reply.
    requesting: Turns,
    /// Whether a read polls before it sleeps (see spin.rs).
    spin: ReplySpin,
    peer: SocketAddr,
}

/// The reader, locked for the thread whose turn it is (the lock is given up before the turn).
struct ReaderGuard<'a> {
    reader: MutexGuard<'a, Reader>,
    _turn: Turn<'a>,
}

impl TcpClient {
    fn reader<'a>(&'a self, py: Python<'_>) -> PyResult<ReaderGuard<'a>> {
        let turn = self.turn(py, &self.reading)?;
        // A closed client gives nothing more, not even what it had buffered or the end of stream it
        // had seen: EBADF, as the stdlib's socket and its closed makefile() refuse their reads.
        if self.sock.is_closed() {
            return Err(os_error(libc::EBADF));
        }
        // Whoever has the turn locks the reader, and never from inside a read (a reentrant call is
        // refused by the turn): this never waits.
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ReaderGuard { reader, _turn: turn })
    }

    /// A turn among the threads sharing this client, waited for within its timeout.
    fn turn<'a>(&self, py: Python<'_>, turns: &'a Turns) -> PyResult<Turn<'a>> {
        turns.take(py, self.sock.wait_limit(), || self.sock.is_closed())
    }

    /// One recv: 0 at the peer's end of stream. A read that close() from another thread woke up (by
    /// shutting the socket down) is EBADF, as a read after close() is, not the peer's end of stream.
    fn receive(&self, py: Python<'_>, buf: &mut [MaybeUninit<u8>]) -> PyResult<usize> {
        let received = self.sock.recv_into_slice(py, Some(&self.spin), buf, 0)?;
        if received == 0 && self.sock.is_closed() {
            return Err(os_error(libc::EBADF));
        }
        Ok(received)
    }

    /// Reads once more into the buffer; false at end of stream.
    fn fill(&self, py: Python<'_>, reader: &mut Reader) -> PyResult<bool> {
        if reader.eof {
            return Ok(false);
        }
        reader.buffer.reserve(READ_CHUNK);
        let spare: &mut [MaybeUninit<u8>] = reader.buffer.spare_capacity_mut();
        let received = self.receive(py, spare)?;
        // SAFETY: recv wrote `received` bytes at the start of the spare capacity.
        unsafe { reader.buffer.set_len(reader.buffer.len() + received) };
        reader.eof = received == 0;
        // A Ctrl-C that came while recv was returning data interrupted nothing: raised here, or the
        // reads go on while data flows and the next wait sleeps with it pending. What came stays
        // buffered for the next call.
        py.check_signals()?;
        Ok(received > 0)
    }

    /// The next message, or None at a clean end of stream.
    fn next_message<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut guard = self.reader(py)?;
        let reader = &mut *guard.reader;
        if reader.decoder.is_none() {
            return Err(PyValueError::new_err(
                "recv_message() needs framing (\"line\", \"length\" or a delimiter)",
            ));
        }
        loop {
            let decoded = reader
                .decoder
                .as_mut()
                .map(|d| d.next_frame(&mut reader.buffer))
                .transpose();
            match decoded {
                Ok(Some(Some(frame))) => return Ok(Some(PyBytes::new(py, &frame))),
                Ok(_) => {}
                Err(err) => {
                    // The stream can no longer be cut into messages: nothing after this can be trusted.
                    // Closed as close() closes, waking the threads blocked on it; later reads find it
                    // closed (EBADF), not the same bad frame again.
                    reader.buffer.clear();
                    self.sock.close_waking(py)?;
                    return Err(PyValueError::new_err(err.to_string()));
                }
            }
            if !self.fill(py, reader)? {
                if reader.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(PyEOFError::new_err(format!(
                    "connection closed in the middle of a message ({} bytes of it received)",
                    reader.buffer.len()
                )));
            }
        }
    }

    /// Sends the file's bytes from `start` to `end` with sendfile(2), holding the turns to request and
    /// to send: no other thread's bytes land inside it. `progress` runs with those turns open to it,
    /// so it may send on this client itself.
    fn send_file(
        &self,
        py: Python<'_>,
        file: &std::fs::File,
        (start, end): (u64, u64),
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        // In request()'s order (the turn to request, then to send), so that a request waiting for
        // the turn to send while this holds it cannot deadlock with a request from `progress`.
        // A timeout waiting for the turns sent nothing, and says so as one during the transfer says how much.
        let requesting = self
            .turn(py, &self.requesting)
            .map_err(|err| with_bytes_written(py, err, 0))?;
        let writing = self
            .turn(py, &self.writing)
            .map_err(|err| with_bytes_written(py, err, 0))?;
        self.send_chunks(py, file, (start, end), progress, &requesting, &writing)
            .inspect_err(|_| self.out_of_step(py))
    }

    /// `send_file`'s sendfile(2) calls, chunk by chunk, with the turns it holds.
    fn send_chunks(
        &self,
        py: Python<'_>,
        file: &std::fs::File,
        (start, end): (u64, u64),
        progress: Option<&Bound<'_, PyAny>>,
        requesting: &Turn<'_>,
        writing: &Turn<'_>,
    ) -> PyResult<u64> {
        let mut offset = start;
        while offset < end {
            let chunk = (end - offset).min(SENDFILE_CHUNK as u64) as isize;
            let sent = self
                .sock
                ._sendfile(py, file.as_raw_fd(), offset as i64, chunk)
                .map_err(|err| with_bytes_written(py, err, offset - start))?;
            if sent == 0 {
                break;
            }
            offset += sent as u64;
            // A signal that cut a chunk short made sendfile return what it sent, not EINTR. Its handler
            // runs now, so that a Python progress callback (which would run it first thing, raising)
            // counts what went out, which a raw client's caller needs to go on from; then it is raised.
            let interrupted = py.check_signals().err();
            if let Some(progress) = progress {
                let reported = requesting.open_during(|| writing.open_during(|| progress.call1((sent,))));
                if interrupted.is_none() {
                    reported?;
                }
            }
            if let Some(err) = interrupted {
                return Err(err);
            }
        }
        Ok(offset - start)
    }

    /// After a send that failed once under way: a framed client's peer can no longer cut the stream
    /// into messages, and the next message would land inside the broken one, so the client closes
    /// (as request() closes it). A raw client's stream is the caller's, as a socket's is.
    fn out_of_step(&self, py: Python<'_>) {
        if self.framing != Framing::Raw {
            let _ = self.sock.close_waking(py);
        }
    }

    /// Sends `data` framed. The outer result is the argument's (not bytes-like, a frame the framing
    /// refuses): nothing was sent. The inner one is the sending's, which may have sent part.
    fn send_framed(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyResult<()>> {
        with_readable(data, |bytes| {
            let framed = match self.framing {
                Framing::Raw => None,
                _ => Some(self.framing.encoded(bytes)?),
            };
            let _turn = self.turn(py, &self.writing)?;
            Ok(self.sock.send_all(py, framed.as_deref().unwrap_or(bytes), 0))
        })?
    }

    /// Up to `n` bytes: what is already buffered, else one read; b"" at end of stream.
    fn read_some<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let mut guard = self.reader(py)?;
        let reader = &mut *guard.reader;
        if !reader.buffer.is_empty() {
            let take = n.min(reader.buffer.len());
            return Ok(PyBytes::new(
                py,
                &take_front(&mut reader.buffer, &mut reader.decoder, take),
            ));
        }
        if reader.eof || n == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let mut writer = BytesWriter::new(py, n)?;
        let received = self.receive(py, writer.space())?;
        reader.eof = received == 0;
        writer.finish(received)
    }

    /// request()'s reply: the next message with framing, else what the next read brings.
    fn reply<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.framing == Framing::Raw {
            let reply = self.read_some(py, READ_CHUNK)?;
            if reply.as_bytes().is_empty() {
                return Err(PyConnectionError::new_err("connection closed before the reply"));
            }
            return Ok(reply);
        }
        self.next_message(py)?
            .ok_or_else(|| PyConnectionError::new_err("connection closed before the reply"))
    }
}

/// `err` from a sendfile() that had sent `written` bytes, saying so as an interrupted write does
/// (BlockingIOError's `characters_written`, which every OSError has): the caller of a raw client that
/// timed out can go on from there, as the stdlib's sendfile() leaves the file's position there.
fn with_bytes_written(py: Python<'_>, err: PyErr, written: u64) -> PyErr {
    if err.is_instance_of::<PyOSError>(py) {
        // Setting a plain int attribute on an OSError cannot fail.
        let _ = err.value(py).setattr(interned!(py, "characters_written"), written);
    }
    err
}

#[pymethods]
impl TcpClient {
    /// Connects to `address` (a `(host, port)` tuple). `timeout` (seconds) applies to the connect
    /// and to every later call; `framing` is None, "line", "length" or a delimiter.
    #[new]
    #[pyo3(signature = (address, *, timeout=None, framing=None, max_frame_size=Opt::Absent),
           text_signature = "(address, *, timeout=None, framing=None, max_frame_size=16777216)")]
    fn new(
        py: Python<'_>,
        address: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        framing: Option<&Bound<'_, PyAny>>,
        max_frame_size: Opt<'_>,
    ) -> PyResult<Self> {
        let framing = Framing::from_py(framing)?;
        let max_frame_size = crate::args::positive("max_frame_size", &max_frame_size, DEFAULT_MAX_FRAME_SIZE)?;
        let timeout_ns = timeout.map_or(Ok(-1), parse_timeout)?;
        let (sock, peer) = connect_first(
            py,
            &endpoints(py, address, libc::SOCK_STREAM, libc::AF_UNSPEC, false)?,
            timeout_ns,
        )?;
        let decoder = framing.decoder(max_frame_size);
        Ok(TcpClient {
            sock,
            framing,
            reader: Mutex::new(Reader {
                buffer: BytesMut::new(),
                decoder,
                eof: false,
            }),
            reading: Turns::new("a read of this TcpClient"),
            writing: Turns::new("a send of this TcpClient"),
            requesting: Turns::new("a request of this TcpClient"),
            spin: ReplySpin::default(),
            peer,
        })
    }

    /// `TcpClient.connect(address, *, timeout=None, framing=None, max_frame_size=16777216)`: the same
    /// as calling the class.
    #[classmethod]
    #[pyo3(signature = (address, **kwargs),
           text_signature = "($cls, address, *, timeout=None, framing=None, max_frame_size=16777216)")]
    fn connect<'py>(
        cls: &Bound<'py, PyType>,
        address: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, pyo3::types::PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        cls.call((address,), kwargs)
    }

    /// Sends `data` whole (framed as a message when the client has framing). A framed client whose
    /// send fails (a timeout, Ctrl-C, a reset) closes: part of the message may have gone.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.send_framed(py, data)?.inspect_err(|_| self.out_of_step(py))
    }

    /// Up to `n` bytes: what is already buffered, else one read; b"" at end of stream.
    #[pyo3(signature = (n=Opt::Absent), text_signature = "(self, /, n=65536)")]
    fn recv<'py>(&self, py: Python<'py>, n: Opt<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_some(py, byte_count(n.given(), READ_CHUNK, "recv")?)
    }

    /// Exactly `n` bytes; EOFError if the connection ends first. What came before an error (a
    /// timeout, Ctrl-C, the end of the stream) stays buffered for the next read.
    fn recv_exactly<'py>(&self, py: Python<'py>, n: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let n = byte_count(Some(n), 0, "recv_exactly")?;
        let mut guard = self.reader(py)?;
        let reader = &mut *guard.reader;
        while reader.buffer.len() < n {
            if !self.fill(py, reader)? {
                return Err(PyEOFError::new_err(format!(
                    "connection closed after {} of {n} bytes",
                    reader.buffer.len()
                )));
            }
        }
        Ok(PyBytes::new(
            py,
            &take_front(&mut reader.buffer, &mut reader.decoder, n),
        ))
    }

    /// The next whole message, or None when the peer closed between messages. What came of a message
    /// before a timeout or Ctrl-C stays buffered for the next read.
    fn recv_message<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.next_message(py)
    }

    /// Sends `data` as a message and returns the reply: the next message with framing (whatever it is:
    /// a server that also pushes messages, a chat's broadcasts, needs ids in them to tell its reply),
    /// else what the next read brings, which on a raw stream may be part of a long reply or more than
    /// one. Threads sharing the client take turns, so each gets its own reply. A request whose reply
    /// does not come (a timeout, Ctrl-C) closes the client: the reply may still come, and would be
    /// taken for the reply to the next request.
    fn request<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let _turn = self.turn(py, &self.requesting)?;
        // A request from a signal handler that interrupted this thread's own read could never read
        // its reply: refused before its message goes out, not after.
        self.reading.refuse_reentry()?;
        // Once anything may have gone out, a failure leaves the stream out of step: close.
        self.send_framed(py, data)?
            .and_then(|()| self.reply(py))
            .inspect_err(|_| {
                let _ = self.sock.close_waking(py);
            })
    }

    /// Sends the file at `path` with sendfile(2) (no copy through Python) and returns the bytes sent:
    /// from `offset`, `count` bytes at most (else to its end), as socket.sendfile() sends a file.
    /// `progress(n)` is called after each chunk with the bytes just sent, so `tqdm(...).update`
    /// plugs straight in; `progress=True` draws a tqdm bar itself. The file goes as raw bytes,
    /// whatever the framing. An OSError (a timeout) after part of it went out says how much in its
    /// `characters_written`, as an interrupted write does: `offset` plus that is where to go on from.
    #[pyo3(signature = (path, progress=None, *, offset=0, count=None))]
    fn sendfile(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
        offset: i64,
        count: Option<i64>,
    ) -> PyResult<u64> {
        // Checked before anything is sent: a bad argument found after the first chunk would leave
        // part of the file on the wire.
        if offset < 0 {
            return Err(PyValueError::new_err(format!(
                "offset must not be negative (got {offset})"
            )));
        }
        if let Some(count) = count
            && count <= 0
        {
            return Err(PyValueError::new_err(format!(
                "count must be a positive integer (got {count})"
            )));
        }
        if let Some(p) = progress
            && !(p.is_instance_of::<PyBool>() || p.is_callable())
        {
            return Err(PyTypeError::new_err(format!(
                "progress must be None, a bool or a callable, not {}",
                crate::addr::type_name(p)
            )));
        }
        let path = fs_path(path)?;
        let file = open_for_reading(py, &path)?;
        let metadata = file.metadata().map_err(|e| io_error(&e))?;
        // open(2) accepts a directory for reading; sendfile(2) would then fail with EINVAL. Report
        // it as open() does in Python.
        if metadata.is_dir() {
            return Err(os_error(libc::EISDIR));
        }
        let start = (offset as u64).min(metadata.len());
        let end = count.map_or(metadata.len(), |count| {
            metadata.len().min(start.saturating_add(count as u64))
        });
        let bar = match progress {
            Some(flag) if flag.is_instance_of::<PyBool>() && flag.is_truthy()? => Some(progress_bar(
                py,
                end - start,
                &path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )?),
            _ => None,
        };
        let progress = match (&bar, progress) {
            (Some(bar), _) => Some(bar.getattr("update")?),
            (None, Some(p)) if !p.is_instance_of::<PyBool>() => Some(p.clone()),
            _ => None,
        };
        let sent = self.send_file(py, &file, (start, end), progress.as_ref());
        if let Some(bar) = bar {
            bar.call_method0("close")?;
        }
        sent
    }
    /// Sets the timeout (seconds, or None to block) for every later call.
    fn settimeout(&self, timeout: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sock.set_timeout_ns(parse_timeout(timeout)?)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.sock.close_waking(py)
    }

    /// Whether the client is closed: by close(), or by a request whose reply did not come or a frame
    /// it refused (the stream was out of step).
    #[getter]
    fn closed(&self) -> bool {
        self.sock.is_closed()
    }

    /// The server's address.
    #[getter]
    fn peer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        socket_address_to_py(py, &self.peer)
    }

    /// This end's address.
    #[getter]
    fn local<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::addr::from_sockaddr(py, &self.sock.local_address()?)
    }

    /// The framing messages are cut and sent with.
    #[getter]
    fn framing<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.framing.to_py(py)
    }

    fn fileno(&self) -> i32 {
        self.sock.fileno_raw()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        crate::display::repr(slf.as_any(), &slf.get().describe())
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let local = this
            .local(slf.py())
            .and_then(|l| l.str().map(|s| s.to_string()))
            .unwrap_or_default();
        Ok(crate::display::table(
            &format!("{} {}", crate::display::class_name(slf.as_any())?, this.peer),
            &[
                ("state", this.sock.state_name().to_string()),
                ("local", local),
                ("framing", this.framing(slf.py()).to_string()),
            ],
        ))
    }
}

/// A socket connected to the first of `peers` that accepts, tried in turn as `create_connection()`
/// tries the addresses a name resolves to ("localhost" to ::1 and 127.0.0.1, for a server on one of
/// them), each within the timeout; the last one's error if none does.
fn connect_first(py: Python<'_>, peers: &[SocketAddr], timeout_ns: i64) -> PyResult<(Socket, SocketAddr)> {
    let mut last_error = None;
    for &peer in peers {
        // Refused, unreachable, timed out, refused by an audit hook (create_connection() catches the
        // OSError of every step): the next address may answer. Ctrl-C and the like end the attempts.
        match connect_to(py, peer, timeout_ns) {
            // The peer as the kernel has it: 0.0.0.0 asked is 127.0.0.1, a flow label asked is not kept.
            Ok(sock) => {
                let connected = sock.peer_address().ok().and_then(|a| a.as_socket());
                return Ok((sock, connected.unwrap_or(peer)));
            }
            Err(err) if err.is_instance_of::<PyOSError>(py) => last_error = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_error.expect("endpoints() gives at least one address"))
}

/// One attempt of `connect_first()`, raising the audit events create_connection() raises for it.
fn connect_to(py: Python<'_>, peer: SocketAddr, timeout_ns: i64) -> PyResult<Socket> {
    let domain = if peer.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    audit::no_socket_new(py, domain, libc::SOCK_STREAM, libc::IPPROTO_TCP)?;
    let sock = Socket::open(py, domain, libc::SOCK_STREAM, timeout_ns)?;
    // Request/response traffic: send small messages at once rather than waiting to coalesce.
    let connected = sock
        .set_int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
        .and_then(|()| audit::no_socket_address(py, c"socket.connect", &socket_address_to_py(py, &peer)?))
        .and_then(|()| sock.connect_to(py, &SockAddr::from(peer)));
    if let Err(err) = connected {
        sock.close_now(py)?;
        return Err(err);
    }
    Ok(sock)
}

/// A path argument as `os.fspath()` takes it: str, bytes or an os.PathLike.
fn fs_path(path: &Bound<'_, PyAny>) -> PyResult<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let path = path.py().import("os")?.call_method1("fspath", (path,))?;
    let path: std::path::PathBuf = match path.cast::<PyBytes>() {
        Ok(raw) => std::ffi::OsStr::from_bytes(raw.as_bytes()).into(),
        Err(_) => path.extract()?,
    };
    Ok(path)
}

/// `path` opened for reading as Python's open() opens it: an open that a signal interrupts (one
/// waiting for a FIFO's writer) runs the signal's handler, whose exception (KeyboardInterrupt) ends
/// the call, else it is tried again (PEP 475). std's File::open retries by itself, deaf to Ctrl-C.
fn open_for_reading(py: Python<'_>, path: &std::path::Path) -> PyResult<std::fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // What open() raises for a NUL in the path, before the OS could be asked.
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| PyValueError::new_err("embedded null byte"))?;
    loop {
        // SAFETY: a NUL-terminated path that lives for the call, and plain flags.
        let fd = py.detach(|| unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) });
        if fd >= 0 {
            // SAFETY: a descriptor just opened, owned by nothing else.
            return Ok(unsafe { std::fs::File::from_raw_fd(fd) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(file_error(&err, path));
        }
        py.check_signals()?;
    }
}

/// A tqdm progress bar counting `total` bytes.
fn progress_bar<'py>(py: Python<'py>, total: u64, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let tqdm = py.import("tqdm.auto").map_err(|_| {
        pyo3::exceptions::PyImportError::new_err("progress=True draws a progress bar with tqdm: pip install tqdm")
    })?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("total", total)?;
    kwargs.set_item("unit", "B")?;
    kwargs.set_item("unit_scale", true)?;
    kwargs.set_item("unit_divisor", 1024)?;
    kwargs.set_item("desc", name)?;
    tqdm.getattr("tqdm")?.call((), Some(&kwargs))
}

impl TcpClient {
    /// What a repr says after the class's name (a subclass's repr names the subclass; a finalizer,
    /// which has no class object at hand, names the base).
    fn describe(&self) -> String {
        format!("{} {}", self.peer, self.sock.state_name())
    }
}

impl Drop for TcpClient {
    fn drop(&mut self) {
        let description = crate::display::base_repr::<Self>(&self.describe());
        self.sock.close_unclosed(&description);
    }
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TcpClient>()
}
