//! `StreamTransport`: a TCP connection driven by the running asyncio loop, with asyncio's
//! StreamReader/StreamWriter API done in Rust. The loop says when the socket is readable or
//! writable (`add_reader` / `add_writer`); the recv/send calls, the buffering, the framing and the
//! waiting all happen here, on the loop's own thread, so no message crosses threads.
//!
//! Its awaitable methods return an `Op`: a read whose data is already buffered completes at once, with
//! no future; only a read that must wait creates one (a `Waiter`), completed by the readable callback.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::{
    PyConnectionError, PyConnectionResetError, PyEOFError, PyOverflowError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::op::{self, Op};
use super::poller::{Poller, READABLE, WRITABLE};
use super::waiter::{Completions, Run, Waiter};
use super::{IncompleteReadError, LimitOverrunError};
use crate::args::{Opt, python_at_least};
use crate::buffer::with_readable;
use crate::errors::{keeping_exception, os_error};
use crate::framing::{FrameDecoder, Framing, take_front};
use crate::py_lazy::interned;

/// asyncio's default StreamReader limit (a line or separator-terminated chunk may not exceed it).
const DEFAULT_LIMIT: isize = 64 * 1024;
/// asyncio's default write buffer limits: drain() waits above the high mark until below the low one.
/// asyncio's default write buffer limits: drain() waits while more than HIGH_WATER bytes are
/// queued, until at most a quarter of that is.
const HIGH_WATER: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// What a pending read waits for.
#[derive(Clone)]
pub enum Want {
    /// Up to n bytes (n < 0: everything until end of stream).
    Some(isize),
    Exactly(usize),
    /// Through the first of these separators (shortest first) to end in the buffer.
    Until(Vec<Vec<u8>>),
    Line,
    Message,
    /// request()'s reply: a message, or with no framing what the next read brings; the connection
    /// ending first is an error, not an empty reply.
    Reply,
}

/// A read's size as asyncio's StreamReader takes it: any int, one beyond a C ssize_t being as good as
/// unlimited (no buffer reaches it) rather than an OverflowError.
fn stream_size(n: &Bound<'_, PyAny>) -> PyResult<isize> {
    match n.extract::<isize>() {
        Err(err) if err.is_instance_of::<PyOverflowError>(n.py()) => Ok(if n.gt(0)? { isize::MAX } else { isize::MIN }),
        size => size,
    }
}

impl Want {
    /// The StreamReader method asyncio names when a second read finds this one waiting (readline()
    /// waits inside readuntil()).
    fn waiting_name(&self) -> &'static str {
        match self {
            Want::Some(_) => "read",
            Want::Exactly(_) => "readexactly",
            Want::Until(_) | Want::Line => "readuntil",
            Want::Message => "recv_message",
            Want::Reply => "request",
        }
    }

    /// The method that made this read, as Python names the coroutine.
    pub fn method_name(&self) -> &'static str {
        match self {
            Want::Some(_) => "StreamReader.read",
            Want::Exactly(_) => "StreamReader.readexactly",
            Want::Until(_) => "StreamReader.readuntil",
            Want::Line => "StreamReader.readline",
            Want::Message => "TcpClient.recv_message",
            Want::Reply => "TcpClient.request",
        }
    }
}

const WAIT_CLOSED: &str = "StreamWriter.wait_closed";

#[pyclass(module = "rsock._rsock", name = "StreamTransport", weakref)]
pub struct StreamTransport {
    fd: i32,
    sock: Py<PyAny>,
    event_loop: Py<PyAny>,
    limit: usize,
    framing: Framing,
    decoder: Option<FrameDecoder>,
    buffer: BytesMut,
    eof: bool,
    /// The errno of a failed recv/send: every later read and drain raises it, each time as a new
    /// exception (one kept and raised again would hold its traceback's frames, and through them
    /// this transport, in a cycle).
    failed: Option<i32>,
    waiter: Option<(Py<Waiter>, Want)>,
    /// The loop's epoll instance for rsock transports, which watches this socket.
    poller: Py<Poller>,
    /// This transport, for the poller to hold while it watches the socket (set by `_start`, dropped
    /// once closed; the cycle collector sees it).
    this: Option<Py<StreamTransport>>,
    reading: bool,
    /// pause_reading() was called: nothing is read until resume_reading().
    paused: bool,
    writing: bool,
    high_water: usize,
    low_water: usize,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    drain_waiters: Vec<Py<Waiter>>,
    eof_after_flush: bool,
    /// write_eof() was called: writing again is an error, as in asyncio.
    eof_written: bool,
    closing: bool,
    /// close() or abort() was called (rather than the connection breaking).
    closed_here: bool,
    closed: bool,
    /// The transport of an rsock.aio TcpClient, whose reads follow the sync client's rules rather than
    /// asyncio's: after this side's close() every read is EBADF, waiting or not, whatever is buffered;
    /// after the connection broke, what arrived before it is still read, then its error comes.
    client: bool,
    close_waiters: Vec<Py<Waiter>>,
    /// Called (through the loop) once the socket is closed, or the transport is collected unclosed:
    /// the server counting its connections. It refers to nothing that refers back here, so the cycle
    /// collector leaves it for the drop.
    on_closed: Option<Py<PyAny>>,
    peername: Option<Py<PyAny>>,
    sockname: Option<Py<PyAny>>,
    /// What get_extra_info("socket") gives, made on first asking: the socket wrapped as asyncio wraps
    /// its transports' (`asyncio.trsock.TransportSocket`), without close() or I/O. The transport calls
    /// on the descriptor number it took at the start, and a socket closed behind it would leave that
    /// number to whatever is opened next.
    transport_socket: Option<Py<PyAny>>,
}

impl Drop for StreamTransport {
    /// A transport collected without being closed (its socket closes with a ResourceWarning as the
    /// socket goes) still counts as closed for the server that accepted it, as asyncio's do.
    fn drop(&mut self) {
        if let Some(callback) = self.on_closed.take() {
            Python::attach(|py| {
                keeping_exception(py, || {
                    // A closed loop has nobody left to tell.
                    let _ = self
                        .event_loop
                        .bind(py)
                        .call_method1(interned!(py, "call_soon"), (callback,));
                })
            });
        }
    }
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

impl StreamTransport {
    /// The socket as get_extra_info("socket") gives it (see `transport_socket`), the same object each time.
    fn transport_socket(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(wrapped) = &self.transport_socket {
            return Ok(wrapped.clone_ref(py));
        }
        let wrapped = py
            .import(interned!(py, "asyncio.trsock"))?
            .getattr(interned!(py, "TransportSocket"))?
            .call1((self.sock.bind(py),))?
            .unbind();
        self.transport_socket = Some(wrapped.clone_ref(py));
        Ok(wrapped)
    }

    /// Tells the poller which directions to watch now.
    fn watch(&mut self, py: Python<'_>, reading: bool, writing: bool) -> PyResult<()> {
        let interest = if reading { READABLE } else { 0 } | if writing { WRITABLE } else { 0 };
        self.poller.get().watch(py, self.fd, interest, self.this.as_ref())?;
        (self.reading, self.writing) = (reading, writing);
        Ok(())
    }

    fn add_reader(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.reading && !self.closing && !self.paused && self.this.is_some() {
            self.watch(py, true, self.writing)?;
        }
        Ok(())
    }

    fn remove_reader(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.reading {
            self.watch(py, false, self.writing)?;
        }
        Ok(())
    }

    fn add_writer(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.writing && self.this.is_some() {
            self.watch(py, self.reading, true)?;
        }
        Ok(())
    }

    fn remove_writer(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.writing {
            self.watch(py, self.reading, false)?;
        }
        Ok(())
    }

    /// The poller's call: the socket is readable and/or writable. One recv into the buffer and the
    /// pending read served, the queue flushed (waking drain() and finishing a close); tasks waiting
    /// on either resume right here (see `Waiter`), once the transport is no longer borrowed.
    /// `resolved` is the loop's finished Future (see `Run::Now`).
    pub fn serve(slf: &Bound<'_, Self>, readable: bool, writable: bool, resolved: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut done = Completions::new();
        {
            let mut this = slf.try_borrow_mut()?;
            if readable && this.reading {
                this.receive(py, &mut done)?;
            }
            if writable && this.writing {
                this.send_queued(py, &mut done)?;
            }
        }
        fire(py, done, Run::Now { resolved })
    }

    fn take(&mut self, py: Python<'_>, n: usize) -> Py<PyAny> {
        PyBytes::new(py, &take_front(&mut self.buffer, &mut self.decoder, n))
            .into_any()
            .unbind()
    }

    /// The outcome of `want` if it can be decided with what is buffered now, else None. A broken
    /// connection raises its error whatever is still buffered, as asyncio's StreamReader does; a
    /// client's reads (see `client`) take what is buffered first.
    fn try_satisfy(&mut self, py: Python<'_>, want: &Want) -> Option<PyResult<Py<PyAny>>> {
        if self.client {
            if let Some(err) = self.refused_to_client() {
                return Some(Err(err));
            }
            if self.failed.is_some() {
                return Some(self.read_before_failure(py, want));
            }
        } else if let Err(err) = self.check_failed() {
            return Some(Err(err));
        }
        self.satisfy(py, want)
    }

    /// A client's read on a broken connection, as the sync client reads what the kernel had received
    /// before the error: what the buffer holds for it, else the error, leaving a part (of a message,
    /// of `recv_exactly()`'s bytes) buffered for a read that takes it.
    fn read_before_failure(&mut self, py: Python<'_>, want: &Want) -> PyResult<Py<PyAny>> {
        let len = self.buffer.len();
        match want {
            Want::Some(n) if len > 0 => return Ok(self.take(py, usize::try_from(*n).unwrap_or(len).min(len))),
            Want::Exactly(n) if len >= *n => return Ok(self.take(py, *n)),
            // request()'s reply without framing: what the next read brings, as reply() takes it.
            Want::Reply if self.framing == Framing::Raw => {
                return if len > 0 {
                    Ok(self.take(py, READ_CHUNK.min(len)))
                } else {
                    Err(self.closed_error())
                };
            }
            Want::Message | Want::Reply => {
                if let Some(outcome) = self.next_frame(py) {
                    return outcome;
                }
            }
            _ => {}
        }
        Err(self.closed_error())
    }

    /// EBADF for a client's call after its own close(), as the sync client's calls after close() get.
    fn refused_to_client(&self) -> Option<PyErr> {
        (self.client && self.closed_here).then(|| os_error(libc::EBADF))
    }

    /// `want` decided with what is buffered now, the connection's state aside.
    fn satisfy(&mut self, py: Python<'_>, want: &Want) -> Option<PyResult<Py<PyAny>>> {
        let len = self.buffer.len();
        match want {
            Want::Some(n) if *n < 0 => self.eof.then(|| Ok(self.take(py, len))),
            Want::Some(n) => (len > 0 || self.eof).then(|| Ok(self.take(py, (*n as usize).min(len)))),
            Want::Exactly(n) if len >= *n => Some(Ok(self.take(py, *n))),
            Want::Exactly(n) => self.eof.then(|| {
                let partial = self.take(py, len);
                Err(IncompleteReadError::new_err((partial, *n)))
            }),
            Want::Until(separators) => self.until(py, separators),
            Want::Line => self.line(py),
            Want::Message => self.next_message(py),
            Want::Reply => self.reply(py),
        }
    }

    /// readuntil(), exactly as asyncio's: the limit bounds where the separator starts. Of several
    /// separators (sorted shortest first), the one whose match ends first wins, the shorter on a tie.
    fn until<S: AsRef<[u8]>>(&mut self, py: Python<'_>, separators: &[S]) -> Option<PyResult<Py<PyAny>>> {
        let mut found: Option<(usize, usize)> = None;
        for separator in separators.iter().map(AsRef::as_ref) {
            if let Some(at) = self.buffer.windows(separator.len()).position(|w| w == separator) {
                let end = at + separator.len();
                if found.is_none_or(|(_, first_end)| end < first_end) {
                    found = Some((at, end));
                }
            }
        }
        match found {
            Some((at, _)) if at > self.limit => Some(Err(LimitOverrunError::new_err((
                "Separator is found, but chunk is longer than limit",
                at,
            )))),
            Some((_, end)) => Some(Ok(self.take(py, end))),
            None => {
                let shortest = separators.first().map_or(1, |s| s.as_ref().len());
                let longest = separators.last().map_or(1, |s| s.as_ref().len());
                let searched = (self.buffer.len() + 1).saturating_sub(longest);
                if self.buffer.len() >= shortest && searched > self.limit {
                    return Some(Err(LimitOverrunError::new_err((
                        "Separator is not found, and chunk exceed the limit",
                        searched,
                    ))));
                }
                self.eof.then(|| {
                    let partial = self.take(py, self.buffer.len());
                    Err(IncompleteReadError::new_err((partial, py.None())))
                })
            }
        }
    }

    /// readline(), exactly as asyncio's: the rest at end of stream; over the limit, the line (or
    /// everything buffered) is dropped and ValueError raised.
    fn line(&mut self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        match self.until(py, &[b"\n"])? {
            Ok(line) => Some(Ok(line)),
            Err(err) if err.is_instance_of::<IncompleteReadError>(py) => {
                Some(err.value(py).getattr("partial").map(Bound::unbind))
            }
            Err(err) if err.is_instance_of::<LimitOverrunError>(py) => {
                let consumed: usize = err.value(py).getattr("consumed").and_then(|c| c.extract()).unwrap_or(0);
                let dropped = if self.buffer.get(consumed) == Some(&b'\n') {
                    consumed + 1
                } else {
                    self.buffer.len()
                };
                take_front(&mut self.buffer, &mut self.decoder, dropped);
                let message = err
                    .value(py)
                    .getattr("args")
                    .and_then(|a| a.get_item(0))
                    .map(Bound::unbind);
                Some(Err(PyValueError::new_err(message.unwrap_or_else(|_| py.None()))))
            }
            Err(err) => Some(Err(err)),
        }
    }

    fn reply(&mut self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        let (outcome, ended) = if self.framing == Framing::Raw {
            let outcome = self.satisfy(py, &Want::Some(READ_CHUNK as isize))?;
            let ended = matches!(&outcome, Ok(data) if data.bind(py).len().is_ok_and(|n| n == 0));
            (outcome, ended)
        } else {
            let outcome = self.next_message(py)?;
            let ended = matches!(&outcome, Ok(message) if message.is_none(py));
            (outcome, ended)
        };
        if ended {
            return Some(Err(PyConnectionError::new_err("connection closed before the reply")));
        }
        Some(outcome)
    }

    fn next_message(&mut self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        if let Some(outcome) = self.next_frame(py) {
            return Some(outcome);
        }
        if !self.eof {
            None
        } else if self.buffer.is_empty() {
            Some(Ok(py.None()))
        } else {
            Some(Err(PyEOFError::new_err(format!(
                "connection closed in the middle of a message ({} bytes of it received)",
                self.buffer.len()
            ))))
        }
    }

    /// The next whole frame in the buffer, or a frame the framing refuses (ValueError, as a client
    /// without framing is); None while no whole frame is buffered.
    fn next_frame(&mut self, py: Python<'_>) -> Option<PyResult<Py<PyAny>>> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Some(Err(PyValueError::new_err(
                "reading messages needs framing (\"line\", \"length\" or a delimiter)",
            )));
        };
        match decoder.next_frame(&mut self.buffer) {
            Ok(Some(frame)) => Some(Ok(PyBytes::new(py, &frame).into_any().unbind())),
            Err(err) => Some(Err(PyValueError::new_err(err.to_string()))),
            Ok(None) => None,
        }
    }

    /// The RuntimeError asyncio raises for a read (`want`) made while another task waits to read.
    fn refuse_second_reader(&self, py: Python<'_>, want: &Want) -> PyResult<()> {
        match &self.waiter {
            Some((waiter, _)) if waiter.borrow(py).is_pending() => Err(PyRuntimeError::new_err(format!(
                "{}() called while another coroutine is already waiting for incoming data",
                want.waiting_name()
            ))),
            _ => Ok(()),
        }
    }

    /// The first step of a read: its outcome if the buffer decides it now, else the waiter the
    /// readable callback will complete.
    pub fn begin_read(&mut self, py: Python<'_>, want: &Want) -> PyResult<Result<PyResult<Py<PyAny>>, Py<Waiter>>> {
        if let Some(outcome) = self.try_satisfy(py, want) {
            self.resume_reading_if_drained(py)?;
            return Ok(Ok(outcome));
        }
        self.refuse_second_reader(py, want)?;
        let waiter = Waiter::new(py, &self.event_loop)?;
        self.waiter = Some((waiter.clone_ref(py), want.clone()));
        self.add_reader(py)?;
        Ok(Err(waiter))
    }

    /// Completes the pending read if what arrived decides it (into `done`); a cancelled one is
    /// dropped, its data staying buffered for the next read.
    fn serve_waiter(&mut self, py: Python<'_>, done: &mut Completions) {
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
        if !self.reading && !self.eof && self.failed.is_none() && self.buffer.len() <= self.limit {
            self.add_reader(py)?;
        }
        Ok(())
    }

    /// The connection broke: remember why and close it, as asyncio's transports do; everyone waiting
    /// is woken (readers and drain() with the error).
    fn fail(&mut self, py: Python<'_>, errno: i32, done: &mut Completions) -> PyResult<()> {
        self.failed.get_or_insert(errno);
        self.pending.clear();
        self.pending_bytes = 0;
        self.closing = true;
        if self.closed {
            Ok(())
        } else {
            self.finish_close(py, done)
        }
    }

    fn wake_drainers(&mut self, py: Python<'_>, done: &mut Completions) {
        for waiter in std::mem::take(&mut self.drain_waiters) {
            done.push((waiter, self.check_failed().map(|()| py.None())));
        }
    }

    /// Writes what the socket takes of the queue; true when it is empty.
    fn flush(&mut self, py: Python<'_>, done: &mut Completions) -> PyResult<bool> {
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
        let mut done = Completions::new();
        let result = self.send_now(py, data, &mut done);
        fire(py, done, Run::Soon)?;
        result
    }

    fn send_now(&mut self, py: Python<'_>, data: &[u8], done: &mut Completions) -> PyResult<()> {
        // A write after close() while queued output is still going out joins the queue, as asyncio's
        // does; once closed, there is nothing to send it on.
        if self.closed || self.failed.is_some() || data.is_empty() {
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

    /// Sends one framed message for the message API (TcpClient), which refuses a closed connection.
    fn send_message(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.closing {
            return Err(self.closed_error());
        }
        let framed = with_readable(data, |bytes| self.framing.encoded(bytes))??;
        self.send_bytes(py, &framed)
    }

    /// The awaitable of `qualname` (drain(), or a TcpClient's send(), which drains) that returns once
    /// the queued output is small enough.
    fn drain_awaitable(&mut self, py: Python<'_>, qualname: &'static str) -> PyResult<Py<PyAny>> {
        if let Err(err) = self.check_failed() {
            return Op::ready(py, qualname, Err(err));
        }
        // Closing with output still queued: drain() waits for it like any other (asyncio's does).
        if self.closed {
            return Op::ready(py, qualname, Err(PyConnectionResetError::new_err("Connection lost")));
        }
        if self.pending_bytes <= self.high_water {
            return if qualname == op::DRAIN {
                Op::drained(py)
            } else {
                Op::ready(py, qualname, Ok(py.None()))
            };
        }
        let waiter = Waiter::new(py, &self.event_loop)?;
        // Waits given up (a drain() timed out or cancelled) are dropped here: against a peer that
        // stalls, a loop of timed-out drains would otherwise pile them up until it reads.
        self.drain_waiters.retain(|w| w.borrow(py).is_pending());
        self.drain_waiters.push(waiter.clone_ref(py));
        Op::waiting(py, qualname, waiter)
    }

    fn check_writable(&self) -> PyResult<()> {
        if self.eof_written {
            return Err(PyRuntimeError::new_err("Cannot call write() after write_eof()"));
        }
        Ok(())
    }

    /// Why the message API refuses a closing connection: the error that broke it (a peer's reset is
    /// ConnectionResetError, as asyncio's streams and the sync client report it), else EBADF, as for a
    /// call after close().
    fn closed_error(&self) -> PyErr {
        self.refused_to_client()
            .or_else(|| self.check_failed().err())
            .unwrap_or_else(|| os_error(libc::EBADF))
    }

    /// What broke the connection, raised as a new exception each time, if it broke.
    fn check_failed(&self) -> PyResult<()> {
        match self.failed {
            Some(errno) => Err(os_error(errno)),
            None => Ok(()),
        }
    }

    fn shutdown_write(&mut self) {
        // Once closed, the descriptor number may already belong to another socket.
        if self.closed {
            return;
        }
        // SAFETY: shutdown(2) takes plain integers.
        unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
    }

    /// Closes the socket now that the queue is empty, and wakes whoever waits for that.
    fn finish_close(&mut self, py: Python<'_>, done: &mut Completions) -> PyResult<()> {
        self.remove_reader(py)?;
        self.remove_writer(py)?;
        self.closed = true;
        self.eof = true;
        self.sock.bind(py).call_method0(interned!(py, "close"))?;
        self.serve_waiter(py, done);
        self.wake_drainers(py, done);
        for waiter in std::mem::take(&mut self.close_waiters) {
            done.push((waiter, self.check_failed().map(|()| py.None())));
        }
        if let Some(callback) = self.on_closed.take() {
            self.event_loop
                .bind(py)
                .call_method1(interned!(py, "call_soon"), (callback,))?;
        }
        self.this = None;
        Ok(())
    }
}

impl StreamTransport {
    fn receive(&mut self, py: Python<'_>, done: &mut Completions) -> PyResult<()> {
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

    fn send_queued(&mut self, py: Python<'_>, done: &mut Completions) -> PyResult<()> {
        let empty = self.flush(py, done)?;
        if self.pending_bytes <= self.low_water {
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

/// Settles the waiters in `done`, running their callbacks as `run` says.
fn fire(py: Python<'_>, done: Completions, run: Run<'_, '_>) -> PyResult<()> {
    for (waiter, outcome) in done {
        Waiter::complete(py, &waiter, outcome, run)?;
    }
    Ok(())
}

#[pymethods]
impl StreamTransport {
    /// Wraps a connected socket (made non-blocking) for the running `event_loop`. `limit` is taken as
    /// asyncio takes it: an int beyond a C ssize_t is as good as none (None: 64 KiB).
    #[new]
    #[pyo3(signature = (event_loop, poller, sock, limit=None, framing=None, max_frame_size=DEFAULT_MAX_FRAME_SIZE, *, client=false))]
    fn new(
        event_loop: &Bound<'_, PyAny>,
        poller: Py<Poller>,
        sock: &Bound<'_, PyAny>,
        limit: Option<&Bound<'_, PyAny>>,
        framing: Option<&Bound<'_, PyAny>>,
        max_frame_size: usize,
        client: bool,
    ) -> PyResult<Self> {
        let py = sock.py();
        let limit = limit.map_or(Ok(DEFAULT_LIMIT), stream_size)?;
        if limit <= 0 {
            return Err(PyValueError::new_err("Limit cannot be <= 0"));
        }
        let limit = limit as usize;
        let framing = Framing::from_py(framing)?;
        sock.call_method1(interned!(py, "setblocking"), (false,))?;
        let fd: i32 = sock.call_method0(interned!(py, "fileno"))?.extract()?;
        let peername = sock.call_method0(interned!(py, "getpeername")).ok().map(Bound::unbind);
        let sockname = sock.call_method0(interned!(py, "getsockname")).ok().map(Bound::unbind);
        Ok(StreamTransport {
            fd,
            sock: sock.clone().unbind(),
            event_loop: event_loop.clone().unbind(),
            limit,
            decoder: framing.decoder(max_frame_size),
            framing,
            buffer: BytesMut::new(),
            eof: false,
            failed: None,
            waiter: None,
            poller,
            this: None,
            reading: false,
            paused: false,
            writing: false,
            high_water: HIGH_WATER,
            low_water: HIGH_WATER / 4,
            pending: VecDeque::new(),
            pending_bytes: 0,
            drain_waiters: Vec::new(),
            eof_after_flush: false,
            eof_written: false,
            closing: false,
            closed_here: false,
            closed: false,
            client,
            close_waiters: Vec::new(),
            on_closed: None,
            peername,
            sockname,
            transport_socket: None,
        })
    }

    /// Has `callback()` called through the loop once the socket is closed.
    fn _notify_closed(&mut self, callback: Py<PyAny>) {
        self.on_closed = Some(callback);
    }

    /// Starts watching the socket: called once, right after construction.
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut this = slf.try_borrow_mut()?;
        this.this = Some(slf.clone().unbind());
        this.add_reader(slf.py())
    }

    /// `await read(n=-1)`: up to n bytes (everything until EOF when n < 0); b"" at EOF.
    #[pyo3(signature = (n=Opt::Absent), text_signature = "(self, /, n=-1)")]
    fn read<'py>(slf: &Bound<'py, Self>, n: Opt<'py>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let n = n.given().map_or(Ok(-1), stream_size)?;
        if n == 0 {
            // As asyncio's: a broken connection's error first, even for nothing.
            let this = slf.try_borrow()?;
            // A client's, as the sync client's recv(0): nothing, unless it closed itself.
            let checked = match this.refused_to_client() {
                Some(err) => Err(err),
                None if this.client => Ok(()),
                None => this.check_failed(),
            };
            let nothing = checked.map(|()| PyBytes::new(py, b"").into_any().unbind());
            return Op::ready(py, Want::Some(n).method_name(), nothing);
        }
        Ok(Py::new(py, Op::read(slf, Want::Some(n)))?.into_any())
    }

    /// `await readline()`: through the next b"\n", or the rest at EOF.
    fn readline(slf: &Bound<'_, Self>) -> PyResult<Op> {
        Ok(Op::read(slf, Want::Line))
    }

    /// `await readexactly(n)`: exactly n bytes, or IncompleteReadError at EOF.
    fn readexactly(slf: &Bound<'_, Self>, n: &Bound<'_, PyAny>) -> PyResult<Op> {
        let n = stream_size(n)?;
        if n < 0 {
            return Err(PyValueError::new_err("readexactly size can not be less than zero"));
        }
        Ok(Op::read(slf, Want::Exactly(n as usize)))
    }

    /// `await readuntil(separator=b"\n")`: through the separator; from Python 3.13, as asyncio's, a
    /// tuple of separators too. None is refused (TypeError) as asyncio refuses it, not taken for the
    /// default.
    #[pyo3(signature = (separator=Opt::Absent), text_signature = "(self, /, separator=b'\\n')")]
    fn readuntil<'py>(slf: &Bound<'py, Self>, separator: Opt<'py>) -> PyResult<Op> {
        let py = slf.py();
        let mut separators = match separator.given() {
            None => vec![b"\n".to_vec()],
            Some(tuple) if tuple.is_instance_of::<PyTuple>() && python_at_least(py, 13) => tuple
                .try_iter()?
                .map(|sep| with_readable(&sep?, <[u8]>::to_vec))
                .collect::<PyResult<_>>()?,
            Some(sep) => vec![with_readable(sep, <[u8]>::to_vec)?],
        };
        if separators.is_empty() {
            return Err(PyValueError::new_err("Separator should contain at least one element"));
        }
        separators.sort_by_key(Vec::len);
        if separators[0].is_empty() {
            return Err(PyValueError::new_err("Separator should be at least one-byte string"));
        }
        Ok(Op::read(slf, Want::Until(separators)))
    }

    /// `await read_message()`: the next whole message under the transport's framing; None at a clean EOF.
    fn read_message(slf: &Bound<'_, Self>) -> PyResult<Op> {
        Ok(Op::read(slf, Want::Message))
    }

    /// Whether the peer has closed and everything it sent has been read.
    fn at_eof(&self) -> bool {
        self.eof && self.buffer.is_empty()
    }

    /// What broke the connection (a new exception each time), or None: StreamReader.exception().
    fn exception(&self) -> Option<PyErr> {
        self.check_failed().err()
    }

    /// Stops reading from the socket until resume_reading(); reads meanwhile wait.
    fn pause_reading(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.closing {
            self.paused = true;
            self.remove_reader(py)?;
        }
        Ok(())
    }

    fn resume_reading(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.paused {
            return Ok(());
        }
        self.paused = false;
        if self.waiter.is_some() {
            self.add_reader(py)?;
        }
        self.resume_reading_if_drained(py)
    }

    fn is_reading(&self) -> bool {
        !self.paused && !self.closing
    }

    /// (low, high), as asyncio's transports give them.
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (self.low_water, self.high_water)
    }

    /// drain() waits while more than `high` bytes are queued, until at most `low` are; the defaults
    /// as asyncio computes them (64 KiB, or four times `low`; `low` a quarter of `high`).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(&mut self, py: Python<'_>, high: Option<i64>, low: Option<i64>) -> PyResult<()> {
        let high = high.unwrap_or_else(|| low.map_or(HIGH_WATER as i64, |low| low.saturating_mul(4)));
        // Floored, as asyncio's `high // 4`, for the message a negative high gets.
        let low = low.unwrap_or(high.div_euclid(4));
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        self.high_water = high as usize;
        self.low_water = low as usize;
        if self.pending_bytes <= self.low_water {
            let mut done = Completions::new();
            self.wake_drainers(py, &mut done);
            fire(py, done, Run::Soon)?;
        }
        Ok(())
    }

    /// Sends `data` (queued if the socket cannot take it now); `await drain()` to respect backpressure.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_writable()?;
        with_readable(data, |bytes| self.send_bytes(py, bytes))?
    }

    fn writelines(&mut self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_writable()?;
        let mut joined = Vec::new();
        for line in lines.try_iter()? {
            with_readable(&line?, |bytes| joined.extend_from_slice(bytes))?;
        }
        self.send_bytes(py, &joined)
    }

    /// `await write_message(data)`: sends `data` framed as a message, then drains.
    /// Its errors (a bad argument, a closed client) are raised by the await, as a coroutine's are.
    fn write_message(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        const SEND: &str = "TcpClient.send";
        match self.send_message(py, data) {
            Ok(()) => self.drain_awaitable(py, SEND),
            Err(err) => Op::ready(py, SEND, Err(err)),
        }
    }

    /// `await request(data)`: sends a message and returns the reply message. Refused before anything is
    /// sent while another task waits to read (its read would take the reply): the connection stays in
    /// step.
    fn request(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<Op> {
        let py = slf.py();
        let mut this = slf.try_borrow_mut()?;
        this.refuse_second_reader(py, &Want::Reply)?;
        this.send_message(py, data)?;
        // A send that found the connection broken: no reply can come, and what is buffered is not one.
        this.check_failed()?;
        drop(this);
        Ok(Op::read(slf, Want::Reply))
    }

    /// `await drain()`: returns once the queued output is small enough (at once if it already is).
    fn drain(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.drain_awaitable(py, op::DRAIN)
    }

    /// Half-closes: no more writes; the peer sees EOF once the queue is sent. Nothing to do once
    /// closing, as in asyncio.
    fn write_eof(&mut self) {
        if self.closing {
            return;
        }
        self.eof_written = true;
        if self.pending.is_empty() {
            self.shutdown_write();
        } else {
            self.eof_after_flush = true;
        }
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes once the queued output is sent. A client's read waiting ends now (EBADF): nothing more
    /// will be read for it.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.closed_here = true;
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        self.remove_reader(py)?;
        let mut done = Completions::new();
        if self.pending.is_empty() {
            self.finish_close(py, &mut done)?;
        } else if self.client {
            self.serve_waiter(py, &mut done);
        }
        fire(py, done, Run::Soon)
    }

    /// Closes at once, dropping queued output. A client's send() waiting for room, whose message may
    /// be among what is dropped, raises EBADF, as the sync client's send() that close() cut off.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut done = Completions::new();
        if self.client && !self.pending.is_empty() {
            for waiter in std::mem::take(&mut self.drain_waiters) {
                done.push((waiter, Err(os_error(libc::EBADF))));
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        self.closed_here = true;
        self.closing = true;
        if !self.closed {
            self.finish_close(py, &mut done)?;
        }
        fire(py, done, Run::Soon)
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether close() or abort() was called: a TcpClient's `closed`, which a peer's reset leaves
    /// False, as the sync client's.
    #[getter]
    fn _closed_here(&self) -> bool {
        self.closed_here
    }

    /// `await wait_closed()`: returns once the socket is closed, raising what broke the connection
    /// if it broke, as asyncio's does.
    fn wait_closed(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.closed {
            return Op::ready(py, WAIT_CLOSED, self.check_failed().map(|()| py.None()));
        }
        let waiter = Waiter::new(py, &self.event_loop)?;
        self.close_waiters.retain(|w| w.borrow(py).is_pending());
        self.close_waiters.push(waiter.clone_ref(py));
        Op::waiting(py, WAIT_CLOSED, waiter)
    }

    /// "peername", "sockname" or "socket", as asyncio transports answer them.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(&mut self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let found = match name {
            "peername" => self.peername.as_ref().map(|p| p.clone_ref(py)),
            "sockname" => self.sockname.as_ref().map(|s| s.clone_ref(py)),
            "socket" => Some(self.transport_socket(py)?),
            _ => None,
        };
        Ok(found.or(default).unwrap_or_else(|| py.None()))
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

    /// What the transport holds, for the cycle collector: its own loop callbacks and the tasks
    /// waiting on it make cycles through it, and a transport its owner never closed must still be
    /// collected (its socket then closes with a ResourceWarning, as asyncio's transports do).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.sock)?;
        visit.call(&self.event_loop)?;
        visit.call(self.waiter.as_ref().map(|(waiter, _)| waiter))?;
        visit.call(&self.poller)?;
        visit.call(&self.this)?;
        for waiter in self.drain_waiters.iter().chain(&self.close_waiters) {
            visit.call(waiter)?;
        }
        visit.call(&self.on_closed)?;
        visit.call(&self.peername)?;
        visit.call(&self.sockname)?;
        visit.call(&self.transport_socket)
    }

    fn __clear__(&mut self) {
        self.waiter = None;
        self.this = None;
        self.drain_waiters.clear();
        self.close_waiters.clear();
    }
}
