//! `StreamTransport`: a TCP connection driven by the running asyncio loop, with asyncio's
//! StreamReader/StreamWriter API done in Rust. The loop says when the socket is readable or
//! writable (`add_reader` / `add_writer`); the recv/send calls, the buffering, the framing and the
//! waiting all happen here, on the loop's own thread, so no message crosses threads.
//!
//! A read whose data is already buffered completes at once (a `Ready` awaitable, no future); only a
//! read that must wait creates one asyncio future, completed by the readable callback.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::{PyEOFError, PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::waiter::{Completion, Waiter};
use crate::buffer::with_readable;
use crate::errors::os_error;
use crate::framing::{FrameDecoder, Framing};

pyo3::import_exception!(asyncio, IncompleteReadError);
pyo3::import_exception!(asyncio, LimitOverrunError);

/// asyncio's default StreamReader limit (a line or separator-terminated chunk may not exceed it).
const DEFAULT_LIMIT: usize = 64 * 1024;
/// asyncio's default write buffer limits: drain() waits above the high mark until below the low one.
const HIGH_WATER: usize = 64 * 1024;
const LOW_WATER: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// An awaitable whose outcome is already known: awaiting it returns the value (or raises) without
/// going through the event loop.
#[pyclass(module = "rsock._rsock", name = "Ready")]
pub struct Ready {
    outcome: Option<PyResult<Py<PyAny>>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> PyResult<()> {
        match self.outcome.take() {
            Some(Ok(value)) => Err(PyStopIteration::new_err((value,))),
            Some(Err(err)) => Err(err),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn send(&mut self, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__()
    }

    #[pyo3(signature = (exc, *_rest))]
    fn throw(&mut self, exc: &Bound<'_, PyAny>, _rest: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.outcome = None;
        Err(PyErr::from_value(exc.clone()))
    }

    fn close(&mut self) {
        self.outcome = None;
    }
}

fn ready(py: Python<'_>, outcome: PyResult<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { outcome: Some(outcome) })?.into_any())
}

/// What a pending read waits for.
#[derive(Clone)]
enum Want {
    /// Up to n bytes (n < 0: everything until end of stream).
    Some(isize),
    Exactly(usize),
    Until(Vec<u8>),
    Line,
    Message,
}

#[pyclass(module = "rsock._rsock", name = "StreamTransport")]
pub struct StreamTransport {
    fd: i32,
    sock: Py<PyAny>,
    event_loop: Py<PyAny>,
    limit: usize,
    framing: Framing,
    decoder: Option<FrameDecoder>,
    buffer: BytesMut,
    eof: bool,
    /// A failed recv/send: every later read and drain raises it.
    error: Option<PyErr>,
    waiter: Option<(Py<Waiter>, Want)>,
    on_readable: Option<Py<PyAny>>,
    on_writable: Option<Py<PyAny>>,
    reading: bool,
    writing: bool,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    drain_waiters: Vec<Py<Waiter>>,
    eof_after_flush: bool,
    closing: bool,
    closed: bool,
    close_waiters: Vec<Py<Waiter>>,
    peername: Option<Py<PyAny>>,
    sockname: Option<Py<PyAny>>,
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

impl StreamTransport {
    fn add_reader(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.reading
            && !self.closing
            && let Some(callback) = &self.on_readable
        {
            self.event_loop
                .bind(py)
                .call_method1(intern!(py, "add_reader"), (self.fd, callback))?;
            self.reading = true;
        }
        Ok(())
    }

    fn remove_reader(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.reading {
            self.event_loop
                .bind(py)
                .call_method1(intern!(py, "remove_reader"), (self.fd,))?;
            self.reading = false;
        }
        Ok(())
    }

    fn add_writer(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.writing
            && let Some(callback) = &self.on_writable
        {
            self.event_loop
                .bind(py)
                .call_method1(intern!(py, "add_writer"), (self.fd, callback))?;
            self.writing = true;
        }
        Ok(())
    }

    fn remove_writer(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.writing {
            self.event_loop
                .bind(py)
                .call_method1(intern!(py, "remove_writer"), (self.fd,))?;
            self.writing = false;
        }
        Ok(())
    }

    fn take(&mut self, py: Python<'_>, n: usize) -> Py<PyAny> {
        PyBytes::new(py, &self.buffer.split_to(n)).into_any().unbind()
    }

    /// The outcome of `want` if it can be decided with what is buffered now, else None.
    fn try_satisfy(&mut self, py: Python<'_>, want: &Want) -> Option<PyResult<Py<PyAny>>> {
        if let Some(err) = &self.error
            && self.buffer.is_empty()
        {
            return Some(Err(err.clone_ref(py)));
        }
        let len = self.buffer.len();
        match want {
            Want::Some(n) if *n < 0 => self.eof.then(|| Ok(self.take(py, len))),
            Want::Some(n) => (len > 0 || self.eof).then(|| Ok(self.take(py, (*n as usize).min(len)))),
            Want::Exactly(n) if len >= *n => Some(Ok(self.take(py, *n))),
            Want::Exactly(n) => self.eof.then(|| {
                let partial = self.take(py, len);
                Err(IncompleteReadError::new_err((partial, *n)))
            }),
            Want::Until(separator) => self.until(py, separator, false),
            Want::Line => self.until(py, b"\n", true),
            Want::Message => self.next_message(py),
        }
    }

    /// readuntil()/readline(): through the separator; at end of stream an error (readuntil) or the
    /// rest (readline); over the limit without a separator, LimitOverrunError (ValueError for readline).
    fn until(&mut self, py: Python<'_>, separator: &[u8], line: bool) -> Option<PyResult<Py<PyAny>>> {
        let found = self.buffer.windows(separator.len()).position(|w| w == separator);
        match found {
            Some(at) if at + separator.len() <= self.limit || line => {
                if at > self.limit {
                    self.buffer.advance(at + separator.len());
                    return Some(Err(PyValueError::new_err(
                        "Separator is found, but chunk is longer than limit",
                    )));
                }
                Some(Ok(self.take(py, at + separator.len())))
            }
            Some(at) => Some(Err(LimitOverrunError::new_err((
                "Separator is found, but chunk is longer than limit",
                at,
            )))),
            None if self.buffer.len() > self.limit => {
                let message = "Separator is not found, and chunk exceed the limit";
                if line {
                    self.buffer.clear();
                    return Some(Err(PyValueError::new_err(message)));
                }
                Some(Err(LimitOverrunError::new_err((message, self.buffer.len()))))
            }
            None if self.eof && line => Some(Ok(self.take(py, self.buffer.len()))),
            None if self.eof => {
                let partial = self.take(py, self.buffer.len());
                Some(Err(IncompleteReadError::new_err((partial, py.None()))))
            }
            None => None,
        }
    }

    fn next_message(&mut self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Some(Err(PyValueError::new_err(
                "reading messages needs framing (\"line\", \"length\" or a delimiter)",
            )));
        };
        match decoder.next_frame(&mut self.buffer) {
            Ok(Some(frame)) => Some(Ok(PyBytes::new(py, &frame).into_any().unbind())),
            Err(err) => Some(Err(PyValueError::new_err(err.to_string()))),
            Ok(None) if !self.eof => None,
            Ok(None) if self.buffer.is_empty() => Some(Ok(py.None())),
            Ok(None) => Some(Err(PyEOFError::new_err(format!(
                "connection closed in the middle of a message ({} bytes of it received)",
                self.buffer.len()
            )))),
        }
    }

    /// An awaitable for `want`: ready at once if the buffer decides it, else a future the readable
    /// callback completes.
    fn wait_for(&mut self, py: Python<'_>, want: Want) -> PyResult<Py<PyAny>> {
        if let Some(outcome) = self.try_satisfy(py, &want) {
            self.resume_reading_if_drained(py)?;
            return ready(py, outcome);
        }
        if let Some((waiter, _)) = &self.waiter
            && waiter.borrow(py).is_pending()
        {
            return Err(PyRuntimeError::new_err(
                "read called while another coroutine is already waiting for incoming data",
            ));
        }
        let waiter = Waiter::new(py, &self.event_loop)?;
        self.waiter = Some((waiter.clone_ref(py), want));
        self.add_reader(py)?;
        Ok(waiter.into_any())
    }

    /// Completes the pending read if what arrived decides it (into `done`); a cancelled one is
    /// dropped, its data staying buffered for the next read.
    fn serve_waiter(&mut self, py: Python<'_>, done: &mut Vec<Completion>) {
        let Some((waiter, want)) = self.waiter.take() else {
            return;
        };
        if !waiter.borrow(py).is_pending() {
            return;
        }
        match self.try_satisfy(py, &want) {
            Some(outcome) => done.push((waiter, outcome)),
            None => self.waiter = Some((waiter, want)),
        }
    }

    fn resume_reading_if_drained(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.reading && !self.eof && self.error.is_none() && self.buffer.len() <= self.limit {
            self.add_reader(py)?;
        }
        Ok(())
    }

    /// The connection broke: remember why, stop watching it, and wake everyone waiting.
    fn fail(&mut self, py: Python<'_>, errno: i32, done: &mut Vec<Completion>) -> PyResult<()> {
        if self.error.is_none() {
            self.error = Some(os_error(errno));
        }
        self.eof = true;
        self.pending.clear();
        self.pending_bytes = 0;
        self.remove_reader(py)?;
        self.remove_writer(py)?;
        self.wake_drainers(py, done);
        self.serve_waiter(py, done);
        Ok(())
    }

    fn wake_drainers(&mut self, py: Python<'_>, done: &mut Vec<Completion>) {
        for waiter in std::mem::take(&mut self.drain_waiters) {
            let outcome = match &self.error {
                Some(err) => Err(err.clone_ref(py)),
                None => Ok(py.None()),
            };
            done.push((waiter, outcome));
        }
    }

    /// Writes what the socket takes of the queue; true when it is empty.
    fn flush(&mut self, py: Python<'_>, done: &mut Vec<Completion>) -> PyResult<bool> {
        while !self.pending.is_empty() {
            let iov: Vec<libc::iovec> = self
                .pending
                .iter()
                .take(64)
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: every iovec points into a Bytes held in the queue for the duration of the call.
            let written = unsafe { libc::writev(self.fd, iov.as_ptr(), iov.len() as i32) };
            if written < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.fail(py, errno_of(&err), done)?;
                        return Ok(true);
                    }
                }
            }
            let mut left = written as usize;
            self.pending_bytes -= left;
            while left > 0 {
                let front = self.pending.front_mut().expect("written bytes came from the queue");
                if front.len() <= left {
                    left -= front.len();
                    self.pending.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        Ok(true)
    }

    /// Sends `data` after what is queued: at once when nothing is, queueing what the socket refuses.
    fn send_bytes(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let mut done = Vec::new();
        let result = self.send_now(py, data, &mut done);
        fire(py, done, false)?;
        result
    }

    fn send_now(&mut self, py: Python<'_>, data: &[u8], done: &mut Vec<Completion>) -> PyResult<()> {
        if self.closing || self.error.is_some() || data.is_empty() {
            return Ok(());
        }
        let mut sent = 0;
        if self.pending.is_empty() {
            // SAFETY: data is a valid slice for the duration of the call.
            let n = unsafe { libc::send(self.fd, data.as_ptr().cast(), data.len(), 0) };
            if n >= 0 {
                sent = n as usize;
            } else {
                let err = io::Error::last_os_error();
                if !matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    return self.fail(py, errno_of(&err), done);
                }
            }
        }
        if sent < data.len() {
            self.pending_bytes += data.len() - sent;
            self.pending.push_back(Bytes::copy_from_slice(&data[sent..]));
            self.add_writer(py)?;
        }
        Ok(())
    }

    fn drain_awaitable(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(err) = &self.error {
            return ready(py, Err(err.clone_ref(py)));
        }
        if self.pending_bytes <= HIGH_WATER {
            return ready(py, Ok(py.None()));
        }
        let waiter = Waiter::new(py, &self.event_loop)?;
        self.drain_waiters.push(waiter.clone_ref(py));
        Ok(waiter.into_any())
    }

    fn shutdown_write(&mut self) {
        // SAFETY: shutdown(2) takes plain integers.
        unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
    }

    /// Closes the socket now that the queue is empty, and wakes whoever waits for that.
    fn finish_close(&mut self, py: Python<'_>, done: &mut Vec<Completion>) -> PyResult<()> {
        self.remove_reader(py)?;
        self.remove_writer(py)?;
        self.closed = true;
        self.eof = true;
        self.sock.bind(py).call_method0(intern!(py, "close"))?;
        self.serve_waiter(py, done);
        self.wake_drainers(py, done);
        for waiter in std::mem::take(&mut self.close_waiters) {
            done.push((waiter, Ok(py.None())));
        }
        self.on_readable = None;
        self.on_writable = None;
        Ok(())
    }
}

impl StreamTransport {
    fn receive(&mut self, py: Python<'_>, done: &mut Vec<Completion>) -> PyResult<()> {
        if self.closed {
            return Ok(());
        }
        self.buffer.reserve(READ_CHUNK);
        let spare = self.buffer.spare_capacity_mut();
        // SAFETY: spare is writable memory of its length owned by the buffer.
        let n = unsafe { libc::recv(self.fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                _ => self.fail(py, errno_of(&err), done),
            };
        }
        if n == 0 {
            self.eof = true;
            self.remove_reader(py)?;
        } else {
            // SAFETY: recv wrote n bytes at the start of the spare capacity.
            unsafe { self.buffer.set_len(self.buffer.len() + n as usize) };
        }
        self.serve_waiter(py, done);
        // Nobody is asking for more and plenty is buffered: let TCP push back on the peer.
        if self.waiter.is_none() && self.buffer.len() > 2 * self.limit {
            self.remove_reader(py)?;
        }
        Ok(())
    }

    fn send_queued(&mut self, py: Python<'_>, done: &mut Vec<Completion>) -> PyResult<()> {
        let empty = self.flush(py, done)?;
        if self.pending_bytes <= LOW_WATER {
            self.wake_drainers(py, done);
        }
        if empty {
            self.remove_writer(py)?;
            if self.eof_after_flush {
                self.shutdown_write();
            }
            if self.closing && !self.closed {
                self.finish_close(py, done)?;
            }
        }
        Ok(())
    }
}

/// Settles the waiters in `done`; see `Waiter::complete` for when `eager` is allowed.
fn fire(py: Python<'_>, done: Vec<Completion>, eager: bool) -> PyResult<()> {
    for (waiter, outcome) in done {
        Waiter::complete(py, &waiter, outcome, eager)?;
    }
    Ok(())
}

#[pymethods]
impl StreamTransport {
    /// Wraps a connected socket (made non-blocking) for the running `event_loop`.
    #[new]
    #[pyo3(signature = (event_loop, sock, limit=DEFAULT_LIMIT, framing=None, max_frame_size=DEFAULT_MAX_FRAME_SIZE))]
    fn new(
        event_loop: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        limit: usize,
        framing: Option<&Bound<'_, PyAny>>,
        max_frame_size: usize,
    ) -> PyResult<Self> {
        let py = sock.py();
        if limit == 0 {
            return Err(PyValueError::new_err("Limit cannot be <= 0"));
        }
        let framing = Framing::from_py(framing)?;
        sock.call_method1(intern!(py, "setblocking"), (false,))?;
        let fd: i32 = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let peername = sock.call_method0(intern!(py, "getpeername")).ok().map(Bound::unbind);
        let sockname = sock.call_method0(intern!(py, "getsockname")).ok().map(Bound::unbind);
        Ok(StreamTransport {
            fd,
            sock: sock.clone().unbind(),
            event_loop: event_loop.clone().unbind(),
            limit,
            decoder: framing.decoder(max_frame_size),
            framing,
            buffer: BytesMut::new(),
            eof: false,
            error: None,
            waiter: None,
            on_readable: None,
            on_writable: None,
            reading: false,
            writing: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            drain_waiters: Vec::new(),
            eof_after_flush: false,
            closing: false,
            closed: false,
            close_waiters: Vec::new(),
            peername,
            sockname,
        })
    }

    /// Starts watching the socket: called once, right after construction.
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let on_readable = slf.getattr(intern!(py, "_on_readable"))?.unbind();
        let on_writable = slf.getattr(intern!(py, "_on_writable"))?.unbind();
        let mut this = slf.borrow_mut();
        this.on_readable = Some(on_readable);
        this.on_writable = Some(on_writable);
        this.add_reader(py)
    }

    /// The loop's readable callback: one recv into the buffer, then the pending read is served. Its
    /// task resumes right here (see `Waiter`), once the transport is no longer borrowed.
    fn _on_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut done = Vec::new();
        slf.borrow_mut().receive(py, &mut done)?;
        fire(py, done, true)
    }

    /// The loop's writable callback: flushes the queue, then wakes drain() and finishes a close.
    fn _on_writable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut done = Vec::new();
        slf.borrow_mut().send_queued(py, &mut done)?;
        fire(py, done, true)
    }

    /// `await read(n=-1)`: up to n bytes (everything until EOF when n < 0); b"" at EOF.
    #[pyo3(signature = (n=-1))]
    fn read(&mut self, py: Python<'_>, n: isize) -> PyResult<Py<PyAny>> {
        if n == 0 {
            return ready(py, Ok(PyBytes::new(py, b"").into_any().unbind()));
        }
        self.wait_for(py, Want::Some(n))
    }

    /// `await readline()`: through the next b"\n", or the rest at EOF.
    fn readline(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait_for(py, Want::Line)
    }

    /// `await readexactly(n)`: exactly n bytes, or IncompleteReadError at EOF.
    fn readexactly(&mut self, py: Python<'_>, n: isize) -> PyResult<Py<PyAny>> {
        if n < 0 {
            return Err(PyValueError::new_err("readexactly size can not be less than zero"));
        }
        self.wait_for(py, Want::Exactly(n as usize))
    }

    /// `await readuntil(separator=b"\n")`: through the separator.
    #[pyo3(signature = (separator=None))]
    fn readuntil(&mut self, py: Python<'_>, separator: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let separator = match separator {
            Some(sep) => with_readable(sep, <[u8]>::to_vec)?,
            None => b"\n".to_vec(),
        };
        if separator.is_empty() {
            return Err(PyValueError::new_err("Separator should be at least one-byte string"));
        }
        self.wait_for(py, Want::Until(separator))
    }

    /// `await read_message()`: the next whole message under the transport's framing; None at a clean EOF.
    fn read_message(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait_for(py, Want::Message)
    }

    /// Whether the peer has closed and everything it sent has been read.
    fn at_eof(&self) -> bool {
        self.eof && self.buffer.is_empty()
    }

    /// Sends `data` (queued if the socket cannot take it now); `await drain()` to respect backpressure.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        with_readable(data, |bytes| self.send_bytes(py, bytes))?
    }

    fn writelines(&mut self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut joined = Vec::new();
        for line in lines.try_iter()? {
            with_readable(&line?, |bytes| joined.extend_from_slice(bytes))?;
        }
        self.send_bytes(py, &joined)
    }

    /// `await write_message(data)`: sends `data` framed as a message, then drains.
    fn write_message(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let framed = with_readable(data, |bytes| self.framing.encoded(bytes))?
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.send_bytes(py, &framed)?;
        self.drain_awaitable(py)
    }

    /// `await request(data)`: sends a message and returns the reply message.
    fn request(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let framed = with_readable(data, |bytes| self.framing.encoded(bytes))?
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.send_bytes(py, &framed)?;
        if self.framing == Framing::Raw {
            return self.wait_for(py, Want::Some(READ_CHUNK as isize));
        }
        self.wait_for(py, Want::Message)
    }

    /// `await drain()`: returns once the queued output is small enough (at once if it already is).
    fn drain(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.drain_awaitable(py)
    }

    /// Half-closes: no more writes; the peer sees EOF once the queue is sent.
    fn write_eof(&mut self) {
        if self.pending.is_empty() {
            self.shutdown_write();
        } else {
            self.eof_after_flush = true;
        }
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes once the queued output is sent.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        self.remove_reader(py)?;
        if !self.pending.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        self.finish_close(py, &mut done)?;
        fire(py, done, false)
    }

    /// Closes at once, dropping queued output.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        self.pending.clear();
        self.pending_bytes = 0;
        self.closing = true;
        if self.closed {
            return Ok(());
        }
        let mut done = Vec::new();
        self.finish_close(py, &mut done)?;
        fire(py, done, false)
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    /// `await wait_closed()`: returns once the socket is closed.
    fn wait_closed(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.closed {
            return ready(py, Ok(py.None()));
        }
        let waiter = Waiter::new(py, &self.event_loop)?;
        self.close_waiters.push(waiter.clone_ref(py));
        Ok(waiter.into_any())
    }

    /// "peername", "sockname" or "socket", as asyncio transports answer them.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Py<PyAny> {
        let found = match name {
            "peername" => self.peername.as_ref().map(|p| p.clone_ref(py)),
            "sockname" => self.sockname.as_ref().map(|s| s.clone_ref(py)),
            "socket" => Some(self.sock.clone_ref(py)),
            _ => None,
        };
        found.or(default).unwrap_or_else(|| py.None())
    }

    /// Bytes queued for sending.
    fn get_write_buffer_size(&self) -> usize {
        self.pending_bytes
    }

    /// The framing messages are cut and sent with.
    #[getter]
    fn framing<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.framing.to_py(py)
    }
}
