//! `TcpServer`: accepts and serves every connection on the rsock-io thread, entering Python only to
//! run the user's handlers; and `Connection`, the handle those handlers receive.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::{PyEOFError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::args::Opt;
use crate::audit;
use crate::buffer::{BytesWriter, as_uninit, shared_bytes};
use crate::errors::{io_error, os_error};
use crate::framing::{FrameDecoder, Framing};
use crate::log::{self, DEBUG, ERROR, INFO, WARNING};
use crate::resolver::{endpoint, socket_address_to_py};
use crate::reused_bytes;
use crate::runtime;
use crate::server_common::{
    self, Lifecycle, Runner, StopCaller, TaskGuard, call_handler, close_refused_awaitable, is_awaitable,
};
use crate::spin;
use crate::uring;

const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
const DEFAULT_BACKLOG: i32 = 1024;
/// A connection's framing buffers are kept for reuse up to this capacity, and freed beyond it.
const KEEP_BUFFER: usize = 64 * 1024;
/// One read buffer of this size serves every connection: the io thread reads one socket at a time.
/// 256 KiB, as asyncio and uvloop read: a 100 KiB message then usually arrives in one handler call.
const READ_CHUNK: usize = 256 * 1024;
/// Output queued on a connection beyond which it stops reading requests and other threads' send()
/// waits: a peer that does not read slows its own requests down rather than growing the queue.
const WRITE_HIGH_WATER: usize = 1 << 20;
/// A write that finds more than this queued for a peer disconnects it: the peer does not read what
/// it is sent without asking (broadcasts, relays from other connections' handlers). What the
/// connection's own handlers send is queued whole, whatever its size (they are not called while
/// WRITE_HIGH_WATER is queued), and other threads' send() waits for room.
const WRITE_LIMIT: usize = 64 << 20;

/// The most queued buffers one write sends (one writev's iovecs).
const WRITE_SLICES: usize = 64;

/// The most frames a connection delivers before it lets the io thread's other connections run: a
/// 256 KiB read of short lines is 16,000 handler calls, and a flooding peer kept every other
/// connection waiting for all of them (and for 128 such reads, tokio's budget per turn).
const FRAMES_PER_TURN: usize = 256;

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

struct Handlers {
    on_message: Option<Py<PyAny>>,
    on_connect: Option<Py<PyAny>>,
    on_disconnect: Option<Py<PyAny>>,
    /// The name of the first that is an `async def` function: only rsock.aio's server may start then.
    async_one: Option<&'static str>,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    /// The connections open, counted apart from the map so that stats and reprs take no lock (one
    /// a forked child could wait on for ever).
    active: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
}

/// What the server's tasks share: configuration, counters and the live connections.
struct ServerShared {
    handlers: Handlers,
    framing: Framing,
    max_connections: usize,
    max_frame_size: usize,
    idle_timeout: Option<Duration>,
    stats: Stats,
    connections: Mutex<HashMap<u64, Arc<ConnShared>>>,
    next_id: AtomicU64,
    lifecycle: Arc<Lifecycle>,
    /// Set by rsock.aio: runs an awaitable a handler returned on the caller's event loop.
    async_bridge: Mutex<Option<Py<PyAny>>>,
    /// How refusals (over max_connections) have been logged.
    refusals: Mutex<RefusalReports>,
    /// `runtime::forks()` when the listener was made (see `Lifecycle::release_port`).
    forks_when_made: u64,
}

/// When refusals were last logged, and how many had been counted by then (see `refuse`).
#[derive(Default)]
struct RefusalReports {
    last: Option<Instant>,
    reported: u64,
}

/// How often a server that keeps refusing connections logs it: a storm of reconnects would otherwise
/// log a line per refusal, tens of thousands a second, and slow the connections it serves.
const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(1);

impl ServerShared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnShared>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes connection `id`; whether it was still there.
    fn forget(&self, id: u64) -> bool {
        let removed = self.connections().remove(&id).is_some();
        if removed {
            self.stats.active.fetch_sub(1, Relaxed);
        }
        removed
    }
}

impl Io {
    /// Whether the calling thread writes the connection's own output, its handler's replies and
    /// sends: the io thread delivering its messages, or the thread sending an async handler's reply.
    /// Those go out even after the handler asked to close, gathered with the others of a delivery
    /// pass, and are not held to WRITE_LIMIT. Any other thread's send meanwhile is.
    fn own_output(&self) -> bool {
        (self.delivering && runtime::on_io_thread()) || self.replying_on == Some(std::thread::current().id())
    }
}

/// A connection's output side, shared by its task, its `Connection` object and broadcasts.
struct Io {
    /// None once the connection is closed; the fd closes when the last Arc goes.
    stream: Option<Arc<TcpStream>>,
    /// Output the socket has not taken yet, in order.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// While the task delivers a read's framed messages, their replies are gathered here and
    /// written with one syscall after the last.
    gathering: Option<BytesMut>,
    close_requested: bool,
    /// An async handler of this connection is running on the caller's event loop: reading waits for it,
    /// so replies go out in the order the messages came.
    awaiting: bool,
    /// An async handler failed, or its reply, or a write from outside the task, could not be sent:
    /// how the connection ends.
    failed: Option<Outcome>,
    /// The task is delivering a read's messages: replies to them go out even if a handler has
    /// asked to close (the close takes effect after them).
    delivering: bool,
    /// The thread sending an async handler's reply (`_handler_done`), which goes out as a plain
    /// handler's reply does.
    replying_on: Option<ThreadId>,
    /// A write found WRITE_LIMIT queued already: the connection ends as a slow reader.
    overrun: bool,
    /// Threads blocked in `send()` until the queue drains: only they need `drained` signalled (a
    /// signal is a futex syscall even with nobody waiting).
    room_waiters: usize,
    /// Listed for the io thread's deferred flush (`defer_flush`).
    flush_deferred: bool,
}

struct ConnShared {
    /// This connection, for the io thread's list of deferred flushes.
    me: Weak<ConnShared>,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    server: Arc<ServerShared>,
    io: Mutex<Io>,
    /// Set, then the task woken, when output was queued or a close requested from elsewhere.
    woken: AtomicBool,
    waker: AtomicWaker,
    /// Signalled when queued output drops below the high-water mark.
    drained: Condvar,
    closed: AtomicBool,
    /// on_connect has run (and an async one finished): broadcasts reach the connection from then on,
    /// so nothing the server sends to all comes before what on_connect sends, or reaches a
    /// connection on_connect closed.
    joined: AtomicBool,
    /// Its async handler called stop() itself (`Connection._spare_at_stop`): a stop that times out
    /// leaves it open a second more (ABORT_GRACE), for the reply the handler has yet to return.
    spared_at_stop: AtomicBool,
    /// When output last left for the peer at once (no queue for the task to flush), on `write_clock`,
    /// since the idle timer was last armed; 0 for none. The idle timer counts from it.
    last_write: AtomicU64,
}

/// Connections the io thread queued output for while running other tasks (broadcasts, relays from
/// handlers), flushed together by one task after those have run. Flushing each from its own task
/// would wake and poll that task per message: two thirds of a broadcast's cost per peer.
struct DeferredFlushes {
    conns: Vec<Weak<ConnShared>>,
    /// The flushing task's waker, from when it last waited; None before it first did.
    flusher: Option<Waker>,
    started: bool,
}

thread_local! {
    static DEFERRED_FLUSHES: RefCell<DeferredFlushes> = const {
        RefCell::new(DeferredFlushes {
            conns: Vec::new(),
            flusher: None,
            started: false,
        })
    };
}

/// Lists `conn` (on the io thread) for the next deferred flush.
fn defer_flush(conn: Weak<ConnShared>) {
    DEFERRED_FLUSHES.with_borrow_mut(|deferred| {
        if deferred.conns.is_empty() {
            if let Some(flusher) = &deferred.flusher {
                flusher.wake_by_ref();
            } else if !deferred.started {
                deferred.started = true;
                runtime::spawn_here(flush_deferred());
            }
        }
        deferred.conns.push(conn);
    });
}

/// The io thread's task that runs the deferred flushes, for as long as the thread lives.
async fn flush_deferred() {
    let mut batch = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            DEFERRED_FLUSHES.with_borrow_mut(|deferred| {
                if deferred.conns.is_empty() {
                    if !deferred
                        .flusher
                        .as_ref()
                        .is_some_and(|waker| waker.will_wake(cx.waker()))
                    {
                        deferred.flusher = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut deferred.conns, &mut batch);
                Poll::Ready(())
            })
        })
        .await;
        let conns: Vec<Arc<ConnShared>> = batch.drain(..).filter_map(|conn| conn.upgrade()).collect();
        // This task serves every connection: a panic (a broken invariant) flushing some must not end
        // it. Their own tasks flush again instead, and end only a connection that fails.
        let flush = std::panic::AssertUnwindSafe(|| match conns.as_slice() {
            [conn] => conn.flush_deferred(),
            _ => flush_together(&conns),
        });
        if std::panic::catch_unwind(flush).is_err() {
            conns.iter().for_each(|conn| conn.wake());
        }
    }
}

/// Flushes several connections' deferred output with one syscall (uring.rs): each one's queue, up to
/// WRITE_SLICES buffers of it, in one send. Where io_uring is unavailable, one by one.
///
/// Every connection stays locked until its send has completed: nothing else can write to it, or
/// drop the buffers, meanwhile. Only the io thread ever holds two connections' locks, so taking
/// them in any order cannot deadlock.
fn flush_together(conns: &[Arc<ConnShared>]) {
    if !uring::available() {
        conns.iter().for_each(|conn| conn.flush_deferred());
        return;
    }
    let mut states: Vec<MutexGuard<'_, Io>> = conns.iter().map(|conn| conn.io()).collect();
    // Unlisted first: a write queued after a failure here lists its connection again.
    for io in &mut states {
        io.flush_deferred = false;
    }
    // The connections with something to send, by index, and what each send did.
    let mut sending = Vec::with_capacity(conns.len());
    let mut results = Vec::with_capacity(conns.len());
    {
        let mut slices = Vec::with_capacity(conns.len());
        let mut sockets = Vec::with_capacity(conns.len());
        for (index, io) in states.iter().enumerate() {
            if let Some(stream) = io.stream.as_ref().filter(|_| !io.pending.is_empty()) {
                let start = slices.len();
                slices.extend(io.pending.iter().take(WRITE_SLICES).map(|b| IoSlice::new(b)));
                sockets.push((stream.as_raw_fd(), start..slices.len()));
                sending.push(index);
            }
        }
        let sends: Vec<uring::Send<'_>> = sockets
            .into_iter()
            .map(|(fd, range)| uring::Send {
                fd,
                data: &slices[range],
            })
            .collect();
        // Just found available: were it not after all, no results come, nothing counts as taken,
        // and the connections' tasks flush their queues themselves.
        uring::send_each(&sends, &mut results);
    }
    for (index, result) in sending.into_iter().zip(results) {
        // What the socket did not take is left for the connection's task to write, an error for it to
        // end the connection with.
        match result {
            Ok(written) => {
                let Io {
                    pending, pending_bytes, ..
                } = &mut *states[index];
                conns[index].took(pending, pending_bytes, written);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => keep_write_error(&mut states[index], &err),
        }
    }
    for (conn, io) in conns.iter().zip(states) {
        let settled = conn.flushed(&io);
        conn.settle_deferred(io, settled);
    }
}

/// Keeps the error of a write that may not be the connection's task's own (a send from another
/// thread, a deferred flush) for the task to end the connection with; the caller wakes it. The socket
/// reports a peer's reset once, to the call that finds it, and the task's next read would only see the
/// end of the stream and take it for a clean close. EPIPE is not kept: it is what writing after the
/// peer closed cleanly gets (its kernel answers the first such write with a reset, which the socket
/// then reports as EPIPE), and that connection did end cleanly.
fn keep_write_error(io: &mut Io, err: &io::Error) {
    if io.failed.is_none() && err.raw_os_error() != Some(libc::EPIPE) {
        let errno = err.raw_os_error().unwrap_or(libc::EPIPE);
        io.failed = Some(Outcome::Io(io::Error::from_raw_os_error(errno)));
    }
}

/// Where `write_clock` counts from.
fn write_clock_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

/// Nanoseconds on a clock of the process's own, never 0 (0 stands for "none").
fn write_clock() -> u64 {
    write_clock_start().elapsed().as_nanos() as u64 + 1
}

/// The instant `write_clock` read `ticks`.
fn write_instant(ticks: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(write_clock_start() + Duration::from_nanos(ticks - 1))
}

/// Why a connection ended.
enum Outcome {
    /// The peer closed, the server stopped, or `close()` was called.
    Closed,
    Idle,
    Handler(PyErr),
    Io(io::Error),
    Framing(io::Error),
    SlowReader(usize),
    /// The peer ended its stream in the middle of a frame: this many bytes of it were never delivered.
    Truncated(usize),
}

impl ConnShared {
    fn io(&self) -> MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection may take another message now: open, no async handler running, no
    /// close asked for, and less than WRITE_HIGH_WATER waiting to be sent.
    fn takes_more(&self) -> bool {
        let io = self.io();
        !self.closed.load(Relaxed)
            && io.failed.is_none()
            && !io.overrun
            && !io.close_requested
            && !io.awaiting
            && io.pending_bytes < WRITE_HIGH_WATER
    }

    fn wake(&self) {
        self.woken.store(true, Release);
        self.waker.wake();
    }

    /// Writes `data` after everything written before it: at once if nothing is queued, else (or
    /// for what the socket does not take) queued for the task to flush. `shared`, when given, holds
    /// the same bytes and is queued without a copy.
    ///
    /// Output for other connections produced on the io thread (broadcasts, sends from a handler) is
    /// only queued, and flushed later in the same pass (`defer_flush`): several messages for one peer
    /// then go out in one writev instead of one write each.
    fn write(&self, data: &[u8], shared: Option<&Bytes>) -> io::Result<()> {
        self.write_locked(self.io(), data, shared)
    }

    /// `write` with the connection's state already locked by the caller.
    fn write_locked(&self, mut io: MutexGuard<'_, Io>, data: &[u8], shared: Option<&Bytes>) -> io::Result<()> {
        if io.close_requested && !io.own_output() {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        if io.gathering.is_some() && io.own_output() {
            io.gathering.as_mut().expect("checked").extend_from_slice(data);
            return Ok(());
        }
        // A connection's own handler may queue what it likes for it: only what others send it
        // without waiting is limited.
        if io.pending_bytes > WRITE_LIMIT && !io.own_output() {
            io.overrun = true;
            drop(io);
            self.wake();
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        let Some(stream) = io.stream.as_ref() else {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        };
        let mut written = 0;
        let defer = !io.delivering && runtime::on_io_thread();
        if io.pending.is_empty() && !defer {
            match stream.try_write(data) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    keep_write_error(&mut io, &e);
                    drop(io);
                    self.wake();
                    return Err(e);
                }
            }
            self.server.stats.bytes_out.fetch_add(written as u64, Relaxed);
            if written > 0 && self.server.idle_timeout.is_some() {
                self.last_write.store(write_clock(), Relaxed);
            }
        }
        if written < data.len() {
            let rest = match shared {
                Some(bytes) => bytes.slice(written..),
                None => Bytes::copy_from_slice(&data[written..]),
            };
            io.pending_bytes += rest.len();
            io.pending.push_back(rest);
            if !defer {
                drop(io);
                self.wake();
            } else if !io.flush_deferred {
                io.flush_deferred = true;
                drop(io);
                defer_flush(self.me.clone());
            }
        }
        Ok(())
    }

    /// Writes out what the io thread queued for this connection while running other tasks. Its task
    /// is woken only when something is left for it to do: output the socket did not take, an error,
    /// a close.
    fn flush_deferred(&self) {
        let mut io = self.io();
        io.flush_deferred = false;
        let flushed = self.flush_locked(&mut io);
        if let Err(err) = &flushed {
            keep_write_error(&mut io, err);
        }
        self.settle_deferred(io, matches!(flushed, Ok(true)));
    }

    /// Ends a deferred flush that left the queue empty (`settled`) or not.
    fn settle_deferred(&self, io: MutexGuard<'_, Io>, settled: bool) {
        let settled = settled && !io.close_requested;
        drop(io);
        if !settled {
            self.wake();
        } else if self.server.idle_timeout.is_some() {
            self.last_write.store(write_clock(), Relaxed);
        }
    }

    /// Writes what it can of the queued output; Ok(true) when nothing is left.
    fn flush(&self) -> io::Result<bool> {
        self.flush_locked(&mut self.io())
    }

    /// `flush` with the connection's state already locked by the caller.
    fn flush_locked(&self, io: &mut Io) -> io::Result<bool> {
        let Io {
            stream: Some(stream),
            pending,
            pending_bytes,
            ..
        } = io
        else {
            return Ok(true);
        };
        while !pending.is_empty() {
            let written = {
                let attempt = if pending.len() == 1 {
                    // One buffer goes by send(2), which skips writev's iovec import and file checks.
                    stream.try_write(&pending[0])
                } else {
                    let slices: Vec<IoSlice<'_>> = pending.iter().take(WRITE_SLICES).map(|b| IoSlice::new(b)).collect();
                    stream.try_write_vectored(&slices)
                };
                match attempt {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            };
            self.took(pending, pending_bytes, written);
        }
        Ok(self.flushed(io))
    }

    /// Drops from the queue the `written` bytes at its front that the socket took.
    fn took(&self, pending: &mut VecDeque<Bytes>, pending_bytes: &mut usize, written: usize) {
        self.server.stats.bytes_out.fetch_add(written as u64, Relaxed);
        *pending_bytes -= written;
        let mut left = written;
        while left > 0 {
            let front = pending.front_mut().expect("written bytes came from the queue");
            if front.len() <= left {
                left -= front.len();
                pending.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }

    /// After a flush: wakes the senders waiting for room if there is some; true if nothing is left.
    fn flushed(&self, io: &Io) -> bool {
        if io.pending_bytes < WRITE_HIGH_WATER {
            self.room_made(io);
        }
        io.pending.is_empty()
    }

    /// Starts delivering a read's framed messages, gathering their replies into `buffer`.
    fn start_gathering(&self, buffer: BytesMut) {
        let mut io = self.io();
        io.gathering = Some(buffer);
        io.delivering = true;
    }

    /// Writes what was gathered and hands the (emptied) buffer back for reuse. The buffer is taken
    /// and written under one lock: a reply written meanwhile from another thread (an async handler's)
    /// must not overtake the replies gathered before it.
    fn end_gathering(&self) -> (io::Result<()>, BytesMut) {
        let mut io = self.io();
        let Some(mut gathered) = io.gathering.take() else {
            return (Ok(()), BytesMut::new());
        };
        let result = if gathered.is_empty() {
            drop(io);
            Ok(())
        } else {
            self.write_locked(io, &gathered, None)
        };
        self.io().delivering = false;
        gathered.clear();
        (result, gathered)
    }

    /// Wakes the senders waiting for room (the queue drained, or the connection closed).
    fn room_made(&self, io: &Io) {
        if io.room_waiters > 0 {
            self.drained.notify_all();
        }
    }

    fn request_close(&self) {
        let mut io = self.io();
        io.close_requested = true;
        // Senders waiting for room fail now: a closing connection takes no more output.
        self.room_made(&io);
        drop(io);
        self.wake();
    }

    /// Closes at once, dropping unsent output (a forced stop). The socket is shut down here, so that its
    /// peer sees the end now even while a handler holds up the io thread, where the connection's task
    /// would close it; its descriptor is closed by that task, never under it.
    fn abort(&self) {
        let mut io = self.io();
        if let Some(stream) = io.stream.take() {
            let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Both);
        }
        io.pending.clear();
        io.pending_bytes = 0;
        io.close_requested = true;
        self.room_made(&io);
        drop(io);
        self.closed.store(true, Relaxed);
        self.wake();
    }
}

/// The handle a server's handlers receive for one connection.
#[pyclass(name = "Connection", module = "rsock._rsock", frozen)]
pub struct Connection {
    shared: Arc<ConnShared>,
    state: Mutex<Option<Py<PyDict>>>,
}

#[pymethods]
impl Connection {
    /// The peer's address.
    #[getter]
    fn peer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        socket_address_to_py(py, &self.shared.peer)
    }

    /// This end's address.
    #[getter]
    fn local<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        socket_address_to_py(py, &self.shared.local)
    }

    /// A number unique among this server's connections.
    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether the connection has ended or is ending: True from the moment close() is called, while
    /// the queued output still goes out and the peer is given time to close its side.
    #[getter]
    fn closed(&self) -> bool {
        // In a forked child the connection is the parent's to serve, and its lock not to be taken.
        self.shared.closed.load(Relaxed)
            || !self.shared.server.lifecycle.runs_here()
            || self.shared.io().close_requested
    }

    /// A dict for the application's own per-connection data.
    #[getter]
    fn state(&self, py: Python<'_>) -> Py<PyDict> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = lock().as_ref() {
            return state.clone_ref(py);
        }
        // Made outside the lock: making it can start a garbage collection, whose finalizers run
        // Python (perhaps reading this very state) and can hand the GIL to other threads.
        let fresh = PyDict::new(py).unbind();
        lock().get_or_insert(fresh).clone_ref(py)
    }

    /// Sends `data` (framed as the server frames messages). Safe from any thread; from a thread other
    /// than the server's, waits while the peer is not reading and too much output is queued.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.shared.server.lifecycle.check_runs_here()?;
        if !runtime::on_io_thread() {
            self.wait_for_room(py)?;
        }
        send_message(&self.shared, data)?.map_err(|e| io_error(&e))
    }

    /// Closes the connection once the output already queued is sent. What the connection's own handler
    /// still sends or returns after it, in the same call, goes out too (a last word before closing);
    /// a send from anywhere else after it raises BrokenPipeError.
    fn close(&self) -> PyResult<()> {
        self.shared.server.lifecycle.check_runs_here()?;
        self.shared.request_close();
        Ok(())
    }

    /// rsock.aio's mark for the connection whose async handler calls stop(): its wait for the other
    /// handlers ends with stop()'s timeout, when what is still open is closed, and this connection
    /// must outlive that to send the reply the handler then returns. It closes after that reply, or a
    /// second later (ABORT_GRACE) if the handler has not returned by then.
    fn _spare_at_stop(&self) {
        self.shared.spared_at_stop.store(true, Relaxed);
    }

    /// rsock.aio's report that an async handler finished: its reply is sent (or its exception ends
    /// the connection) and reading resumes.
    #[pyo3(signature = (reply, exc=None))]
    fn _handler_done(&self, reply: &Bound<'_, PyAny>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let shared = &self.shared;
        shared.server.lifecycle.check_runs_here()?;
        if shared.closed.load(Relaxed) {
            // The connection was closed meanwhile (a forced stop): the reply has nowhere to go.
            return Ok(());
        }
        // The reply goes out even if the handler itself called close(), as a sync handler's does.
        shared.io().replying_on = Some(std::thread::current().id());
        let failure = match exc.filter(|e| !e.is_none()) {
            Some(exc) => Some(Outcome::Handler(PyErr::from_value(exc.clone()))),
            None if reply.is_none() => None,
            None => match send_reply(shared, reply) {
                Ok(Ok(())) => None,
                // The peer went (as for a plain handler's reply): not the handler's failure.
                Ok(Err(err)) => Some(Outcome::Io(err)),
                Err(err) => Some(Outcome::Handler(err)),
            },
        };
        let mut io = shared.io();
        io.replying_on = None;
        io.awaiting = false;
        if failure.is_some() {
            io.failed = failure;
        } else {
            // An async on_connect finished (for a reply, the connection had joined already).
            shared.joined.store(true, Release);
        }
        drop(io);
        shared.wake();
        Ok(())
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<Connection id={} peer={} {state}>", self.shared.id, self.shared.peer)
    }

    fn _repr_html_(&self) -> String {
        let closed = self.closed();
        let state = if closed { "closed" } else { "open" };
        let queued = if closed { 0 } else { self.shared.io().pending_bytes };
        crate::display::table(
            &format!("Connection {}", self.shared.id),
            &[
                ("peer", self.shared.peer.to_string()),
                ("local", self.shared.local.to_string()),
                ("state", state.to_string()),
                ("bytes queued", queued.to_string()),
            ],
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(state) = self.state.try_lock()
            && let Some(dict) = state.as_ref()
        {
            visit.call(dict)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            state.take();
        }
    }
}

impl Connection {
    /// Blocks (GIL released, Ctrl-C honoured) while the connection's queued output is over the mark
    /// and it is open: a send to a closed or closing connection then fails at once.
    fn wait_for_room(&self, py: Python<'_>) -> PyResult<()> {
        let full = |io: &Io| io.pending_bytes >= WRITE_HIGH_WATER && io.stream.is_some() && !io.close_requested;
        loop {
            let full = py.detach(|| {
                let mut io = self.shared.io();
                io.room_waiters += 1;
                let (mut io, _) = self
                    .shared
                    .drained
                    .wait_timeout_while(io, Duration::from_millis(100), |io| full(io))
                    .unwrap_or_else(|e| e.into_inner());
                io.room_waiters -= 1;
                full(&io)
            });
            if !full {
                return Ok(());
            }
            py.check_signals()?;
        }
    }
}

/// Sends one message, framed as the server frames messages. The outer error is a bad message (not
/// bytes-like: TypeError; too long for its length prefix: ValueError), the inner one a failed write.
fn send_message(conn: &ConnShared, message: &Bound<'_, PyAny>) -> PyResult<io::Result<()>> {
    crate::buffer::with_readable(message, |bytes| write_message(conn, bytes))?
}

/// `send_message` for what on_message returned.
fn send_reply(conn: &ConnShared, reply: &Bound<'_, PyAny>) -> PyResult<io::Result<()>> {
    crate::buffer::with_reply("on_message", reply, |bytes| write_message(conn, bytes))?
}

/// Writes one message, framed: gathered with the other replies of a delivery pass, or at once.
fn write_message(conn: &ConnShared, bytes: &[u8]) -> PyResult<io::Result<()>> {
    let framing = &conn.server.framing;
    if *framing == Framing::Raw {
        return Ok(conn.write(bytes, None));
    }
    let mut io = conn.io();
    if io.gathering.is_some() && io.own_output() {
        framing.encode(bytes, io.gathering.as_mut().expect("checked"))?;
        return Ok(Ok(()));
    }
    drop(io);
    let framed = framing.encoded(bytes)?;
    Ok(conn.write(&framed, Some(&framed)))
}

/// `data` as it goes on the wire under `framing`, ready to be written to many connections.
fn frame_message(framing: &Framing, data: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if *framing == Framing::Raw {
        return shared_bytes(data);
    }
    Ok(crate::buffer::with_readable(data, |bytes| framing.encoded(bytes))??)
}

/// Runs `on_message` for one message and sends its reply.
fn deliver(py: Python<'_>, conn: &ConnShared, py_conn: &Py<Connection>, message: &[u8]) -> Result<(), Outcome> {
    conn.server.stats.messages.fetch_add(1, Relaxed);
    if conn.server.handlers.on_message.is_none() {
        return Ok(());
    }
    reused_bytes::with_message(py, message, |data| deliver_bytes(py, conn, py_conn, data))
}

/// `deliver` for a message already in a bytes object (and already counted).
fn deliver_bytes(
    py: Python<'_>,
    conn: &ConnShared,
    py_conn: &Py<Connection>,
    data: &Bound<'_, PyBytes>,
) -> Result<(), Outcome> {
    let Some(handler) = conn.server.handlers.on_message.as_ref() else {
        return Ok(());
    };
    let reply = call_handler(handler.bind(py), (py_conn.bind(py), data)).map_err(Outcome::Handler)?;
    if reply.is_none() {
        return Ok(());
    }
    if is_awaitable(&reply) {
        return hand_to_loop(py, conn, Awaited::Message(py_conn), &reply).map_err(Outcome::Handler);
    }
    match send_reply(conn, &reply) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(Outcome::Io(err)),
        Err(err) => Err(Outcome::Handler(err)),
    }
}

/// Which handler an awaitable came from, which says what its outcome means to the connection.
enum Awaited<'a> {
    /// on_message: the result is the reply, and the connection reads nothing until it is done.
    Message(&'a Py<Connection>),
    /// on_connect: the result is ignored, and messages wait until it is done.
    Connect(&'a Py<Connection>),
    /// on_disconnect: nothing waits for it.
    Disconnect,
}

/// Hands an awaitable a handler returned to rsock.aio's bridge, which runs it on the caller's event
/// loop and reports back through `Connection._handler_done`; meanwhile the connection reads nothing.
fn hand_to_loop(py: Python<'_>, conn: &ConnShared, awaited: Awaited<'_>, awaitable: &Bound<'_, PyAny>) -> PyResult<()> {
    let bridge = conn
        .server
        .async_bridge
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|b| b.clone_ref(py));
    let Some(bridge) = bridge else {
        close_refused_awaitable(py, awaitable);
        return Err(PyTypeError::new_err(
            "a handler returned an awaitable; async handlers need rsock.aio.TcpServer, which runs them on the event loop",
        ));
    };
    let (py_conn, role) = match awaited {
        Awaited::Message(py_conn) => (Some(py_conn), "reply"),
        Awaited::Connect(py_conn) => (Some(py_conn), "connect"),
        Awaited::Disconnect => (None, "disconnect"),
    };
    if py_conn.is_some() {
        conn.io().awaiting = true;
    }
    call_handler(bridge.bind(py), (awaitable, py_conn.map(|c| c.bind(py)), role))?;
    Ok(())
}

/// Delivers what one read brought: the chunk itself, or every whole frame it completed (their
/// replies gathered into one write).
fn deliver_read(conn: &ConnShared, py_conn: &Py<Connection>, data: &[u8], framed: &mut Framed) -> Result<(), Outcome> {
    conn.server.stats.bytes_in.fetch_add(data.len() as u64, Relaxed);
    if framed.decoder.is_none() {
        conn.io().delivering = true;
        let delivered = runtime::with_gil(|py| deliver(py, conn, py_conn, data));
        conn.io().delivering = false;
        return delivered;
    }
    framed.input.extend_from_slice(data);
    deliver_frames(conn, py_conn, framed)
}

/// Delivers the whole frames buffered. It stops early (leaving `framed.more` set) while an async
/// handler runs, once a handler asked to close, or once a megabyte of replies waits to be sent: the
/// rest are delivered when the peer has read them, so pipelined requests cannot pile up output. It
/// also stops after FRAMES_PER_TURN frames, the rest delivered once other connections had a turn.
fn deliver_frames(conn: &ConnShared, py_conn: &Py<Connection>, framed: &mut Framed) -> Result<(), Outcome> {
    let Some(decoder) = framed.decoder.as_mut() else {
        return Ok(());
    };
    framed.more = false;
    conn.start_gathering(std::mem::take(&mut framed.output));
    let delivered = runtime::with_gil(|py| {
        let mut frames = 0;
        while let Some(frame) = decoder.next_frame(&mut framed.input).map_err(Outcome::Framing)? {
            deliver(py, conn, py_conn, &frame)?;
            frames += 1;
            let io = conn.io();
            let queued = io.pending_bytes + io.gathering.as_ref().map_or(0, BytesMut::len);
            if io.close_requested
                || io.awaiting
                || io.failed.is_some()
                || queued >= WRITE_HIGH_WATER
                || frames == FRAMES_PER_TURN
            {
                framed.more = true;
                break;
            }
        }
        Ok(())
    });
    let (written, buffer) = conn.end_gathering();
    // Reuse the buffer for the next read's replies, unless one large reply grew it: an idle
    // connection should not keep a big message's memory.
    framed.output = if buffer.capacity() > KEEP_BUFFER {
        BytesMut::new()
    } else {
        buffer
    };
    if framed.input.is_empty() && framed.input.capacity() > KEEP_BUFFER {
        framed.input = BytesMut::new();
    }
    delivered.and(written.map_err(Outcome::Io))
}

/// A framed connection's decoder and its partial input and gathered output.
struct Framed {
    decoder: Option<FrameDecoder>,
    input: BytesMut,
    output: BytesMut,
    /// Delivery stopped early: whole frames may still wait in `input`.
    more: bool,
}

/// Serves one connection until it ends, then reports the end to the application.
async fn serve_connection(conn: Arc<ConnShared>, stream: Arc<TcpStream>, py_conn: Py<Connection>) {
    let outcome = match call_on_connect(&conn, &py_conn) {
        Ok(()) => connection_loop(&conn, &stream, &py_conn).await,
        Err(err) => Outcome::Handler(err),
    };
    let outcome = as_forced_stop_left_it(&conn, outcome);
    if matches!(outcome, Outcome::Handler(_) | Outcome::Framing(_)) && !conn.closed.load(Relaxed) {
        // A handler failed or the peer broke the framing. The log says so before the peer sees its
        // connection end (a test that catches the end then finds the reason logged); replies
        // produced before still go out.
        let error = runtime::with_gil(|py| report_end(py, &conn, outcome));
        // Ending from now on: `closed` says so, and sends fail, as once close() is called.
        conn.request_close();
        flush_queued(&conn, &stream).await;
        linger(&conn, &stream, ERROR_LINGER).await;
        finish_connection(&conn, py_conn, Ended::Reported(error));
    } else {
        finish_connection(&conn, py_conn, Ended::Unreported(outcome));
    }
}

/// How a connection ended, for `finish_connection`: already logged (what its on_disconnect gets),
/// or not yet.
enum Ended {
    Reported(Option<PyErr>),
    Unreported(Outcome),
}

fn call_on_connect(conn: &ConnShared, py_conn: &Py<Connection>) -> PyResult<()> {
    let Some(handler) = conn.server.handlers.on_connect.as_ref() else {
        conn.joined.store(true, Release);
        return Ok(());
    };
    runtime::with_gil(|py| {
        // What on_connect sends is the connection's own output, as a reply is.
        conn.io().delivering = true;
        let result = call_handler(handler.bind(py), (py_conn.bind(py),));
        conn.io().delivering = false;
        let result = result?;
        if is_awaitable(&result) {
            // Messages wait until the async on_connect is done.
            return hand_to_loop(py, conn, Awaited::Connect(py_conn), &result);
        }
        conn.joined.store(true, Release);
        Ok(())
    })
}

/// What woke a connection's task.
enum Event {
    Shutdown,
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Woken,
    Idle,
}

async fn connection_loop(conn: &ConnShared, stream: &TcpStream, py_conn: &Py<Connection>) -> Outcome {
    let server = &conn.server;
    let mut framed = Framed {
        decoder: server.framing.decoder(server.max_frame_size),
        input: BytesMut::new(),
        output: BytesMut::new(),
        more: false,
    };
    let mut reading = true;
    let mut peer_closed = false;
    let direct_capable = framed.decoder.is_none() && server.handlers.on_message.is_some();
    // While reads are large, the size the next direct read expects (see `read_direct`); 0 while they
    // are small. A u32: a connection's task is allocated in steps of 128 bytes, and a usize took it
    // into the next one.
    let mut direct_expected: u32 = 0;
    let mut idle = server.idle_timeout.map(|limit| Box::pin(tokio::time::sleep(limit)));
    // Polled once so the token knows to wake this task; after that a flag check per wake-up suffices.
    let shutdown = server.lifecycle.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut watching_shutdown = false;
    // Set after a turn's worth of work (a read that filled its room, FRAMES_PER_TURN frames): the io
    // thread's other connections run before this one goes on.
    let mut turn_over = false;
    loop {
        if turn_over {
            turn_over = false;
            tokio::task::yield_now().await;
        }
        let (pending, close_requested, awaiting) = {
            let mut io = conn.io();
            if let Some(outcome) = io.failed.take() {
                return outcome;
            }
            if io.overrun {
                return Outcome::SlowReader(io.pending_bytes);
            }
            if conn.closed.load(Relaxed) {
                // Closed at once by a forced stop, even with an async handler still running.
                return Outcome::Closed;
            }
            (io.pending_bytes, io.close_requested, io.awaiting)
        };
        if framed.more && !awaiting && !close_requested && pending < WRITE_HIGH_WATER {
            // Frames that arrived behind an async handler's message, behind a megabyte of replies,
            // or beyond one turn's.
            if let Err(outcome) = deliver_frames(conn, py_conn, &mut framed) {
                return outcome;
            }
            turn_over = framed.more;
            continue;
        }
        if pending == 0 && !awaiting && (close_requested || !reading) {
            // A forced stop (abort) closes at once; otherwise let the peer finish sending first. A
            // stopping server need not wait for an idle peer that has everything already.
            let settled = server.lifecycle.is_stopping() && nothing_in_flight(stream);
            if !peer_closed && !conn.closed.load(Relaxed) && !settled {
                linger(conn, stream, LINGER).await;
            }
            if peer_closed && !close_requested && framed.decoder.is_some() && !framed.input.is_empty() {
                return Outcome::Truncated(framed.input.len());
            }
            return Outcome::Closed;
        }
        let may_read = reading && !close_requested && !awaiting && pending < WRITE_HIGH_WATER;
        // The wait below keeps flags, not the count they come from: what it keeps is part of every
        // connection's task.
        let flushing = pending > 0;
        // One hand-written poll instead of select!: no future is built or dropped per wake-up.
        let event = std::future::poll_fn(|cx| {
            conn.waker.register(cx.waker());
            if !watching_shutdown {
                watching_shutdown = true;
                let _ = shutdown.as_mut().poll(cx);
            }
            if reading && server.lifecycle.is_stopping() {
                return Poll::Ready(Event::Shutdown);
            }
            if conn.woken.swap(false, Acquire) {
                return Poll::Ready(Event::Woken);
            }
            if flushing && let Poll::Ready(ready) = stream.poll_write_ready(cx) {
                return Poll::Ready(Event::Writable(ready));
            }
            if may_read && let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                return Poll::Ready(Event::Readable(ready));
            }
            // Reading, or (the peer having half-closed) flushing a reply it does not read.
            if !awaiting
                && let Some(idle) = idle.as_mut()
                && idle.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Event::Idle);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Shutdown => {
                // What the peer sent before the stop reached the connection is answered as if read
                // before it, whether or not the io thread had got to it (unless the connection could
                // not have read it then either): what comes after is left unread.
                match read_what_arrived(conn, stream, py_conn, &mut framed, &mut direct_expected) {
                    Ok(eof) => peer_closed |= eof,
                    Err(outcome) => return outcome,
                }
                reading = false;
            }
            // An async handler finished, or another thread sent or closed: the connection is not idle,
            // and the time a handler took does not count.
            Event::Woken => {
                conn.last_write.store(0, Relaxed);
                rearm(&mut idle, server.idle_timeout);
            }
            // Writes that left at once (no queue to flush) count as activity too: the timer runs
            // again from the last of them.
            Event::Idle => match (conn.last_write.swap(0, Relaxed), idle.as_mut(), server.idle_timeout) {
                (0, ..) | (_, None, _) | (_, _, None) => return Outcome::Idle,
                (last, Some(idle), Some(limit)) => idle.as_mut().reset(write_instant(last) + limit),
            },
            Event::Writable(ready) => {
                if let Err(err) = ready.and_then(|()| conn.flush()) {
                    return Outcome::Io(err);
                }
                // A peer still taking a long reply is not idle.
                rearm(&mut idle, server.idle_timeout);
            }
            Event::Readable(Err(err)) => return Outcome::Io(err),
            Event::Readable(Ok(())) => {
                let (read, filled) =
                    read_next(conn, stream, py_conn, &mut framed, &mut direct_expected, read_available);
                // A read that filled its room may have left more in the socket: the other connections
                // have their turn before the next (a peer sending without a pause kept them waiting for
                // 128 such reads, tokio's budget per turn). So do frames left for the next turn.
                turn_over = filled || framed.more;
                match read {
                    Ok(Some(0)) => {}
                    Ok(Some(n)) if !direct_capable || n < DIRECT_READ_MIN => direct_expected = 0,
                    // At most READ_CHUNK.
                    Ok(Some(n)) if direct_expected == 0 => direct_expected = n as u32,
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        peer_closed = true;
                        reading = false;
                    }
                    Err(outcome) => return outcome,
                }
                conn.last_write.store(0, Relaxed);
                rearm(&mut idle, server.idle_timeout);
                // With more connections the io thread seldom runs out of work; polling is for a lone
                // client (or two) waiting for each reply.
                if server.stats.active.load(Relaxed) <= POLLING_CONNECTIONS {
                    spin::read_handled();
                }
            }
        }
    }
}

/// A server with at most this many connections has its io thread poll between close reads (spin.rs).
const POLLING_CONNECTIONS: u64 = 2;

/// A raw connection whose reads reach this size switches to reading straight into a bytes object
/// (`read_direct`); smaller reads go through the io thread's buffer, which costs no extra syscall.
const DIRECT_READ_MIN: usize = 32 * 1024;

/// What one read did: how many bytes it delivered (0: nothing was there after all), or None at EOF.
type ReadResult = Result<Option<usize>, Outcome>;

/// Reads and delivers the bytes the socket holds now (at a stop), for as long as the connection takes
/// more messages; true if the peer's end came with them.
fn read_what_arrived(
    conn: &ConnShared,
    stream: &TcpStream,
    py_conn: &Py<Connection>,
    framed: &mut Framed,
    direct_expected: &mut u32,
) -> Result<bool, Outcome> {
    let mut left = queued_bytes(stream, libc::FIONREAD).unwrap_or(0);
    loop {
        // Frames a turn left for later go first (no other connection's turn matters at a stop).
        while framed.more && conn.takes_more() {
            deliver_frames(conn, py_conn, framed)?;
        }
        if left == 0 || framed.more || !conn.takes_more() {
            return Ok(false);
        }
        match read_next(conn, stream, py_conn, framed, direct_expected, read_now).0? {
            Some(0) => return Ok(false),
            Some(n) => left = left.saturating_sub(n),
            None => return Ok(true),
        }
    }
}

/// One read, straight into a bytes object while reads are large (`direct_expected`, see `read_direct`),
/// else through the io thread's buffer; and whether it filled its room (the socket may hold more).
fn read_next(
    conn: &ConnShared,
    stream: &TcpStream,
    py_conn: &Py<Connection>,
    framed: &mut Framed,
    direct_expected: &mut u32,
    read: Read,
) -> (ReadResult, bool) {
    let (room, result) = if *direct_expected > 0 {
        (
            direct_room(*direct_expected),
            read_direct(conn, stream, py_conn, direct_expected, read),
        )
    } else {
        (READ_CHUNK, read_buffered(conn, stream, py_conn, framed, read))
    };
    let filled = matches!(result, Ok(Some(n)) if n == room);
    (result, filled)
}

/// Reads into the io thread's buffer and delivers what came.
fn read_buffered(
    conn: &ConnShared,
    stream: &TcpStream,
    py_conn: &Py<Connection>,
    framed: &mut Framed,
    read: Read,
) -> ReadResult {
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        match read(stream, as_uninit(&mut buffer)) {
            Ok(0) => Ok(None),
            Ok(n) => deliver_read(conn, py_conn, &buffer[..n], framed).map(|()| Some(n)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Some(0)),
            Err(err) => Err(Outcome::Io(err)),
        }
    })
}

/// Reads straight into a new bytes object and hands that to the handler: for a raw connection moving
/// large messages this saves copying every byte out of the io thread's buffer. The object has room
/// for one byte more than the largest read so far (`expected`), so that a read of that size still
/// shows the socket drained, and is then shrunk in place to what came: one recv per read, where
/// sizing the object by FIONREAD first cost an ioctl. A read that fills it doubles `expected`.
///
/// `expected` only grows while reads stay large, so the object is not resized from above glibc's
/// mmap threshold to below it at every read: a shrunk mmapped block, once freed, would not raise the
/// threshold, and every read would map and unmap memory (asyncio's and rloop's cold-start cliff).
fn read_direct(
    conn: &ConnShared,
    stream: &TcpStream,
    py_conn: &Py<Connection>,
    expected: &mut u32,
    read: Read,
) -> ReadResult {
    let room = direct_room(*expected);
    conn.io().delivering = true;
    let delivered = runtime::with_gil(|py| {
        let mut message = BytesWriter::new(py, room).map_err(Outcome::Handler)?;
        match read(stream, message.space()) {
            Ok(0) => Ok(None),
            Ok(n) => {
                let grown = if n == room { 2 * room } else { n.max(*expected as usize) };
                *expected = grown.min(READ_CHUNK) as u32;
                conn.server.stats.bytes_in.fetch_add(n as u64, Relaxed);
                conn.server.stats.messages.fetch_add(1, Relaxed);
                let message = message.finish(n).map_err(Outcome::Handler)?;
                deliver_bytes(py, conn, py_conn, &message).map(|()| Some(n))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Some(0)),
            Err(err) => Err(Outcome::Io(err)),
        }
    });
    conn.io().delivering = false;
    delivered
}

/// The size of a direct read's object when `expected` bytes are expected.
fn direct_room(expected: u32) -> usize {
    (expected as usize + 1).min(READ_CHUNK)
}

/// How a connection reads: `read_available`, or at a stop `read_now`.
type Read = fn(&TcpStream, &mut [MaybeUninit<u8>]) -> io::Result<usize>;

/// A read that does not wait for tokio to have seen the socket readable (a plain non-blocking
/// recv): at a stop, what the peer sent while the io thread was busy has raised no readiness yet.
fn read_now(stream: &TcpStream, buffer: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    socket2::SockRef::from(stream).recv(buffer)
}

/// Reads what the socket holds into `buffer`; a read that does not fill `buffer` has emptied the
/// socket. Such a read also clears the socket's readiness, so the task waits for the next epoll
/// event instead of making a read that can only say EAGAIN (tokio clears readiness only on EAGAIN
/// itself). Data that arrives later raises a new edge-triggered event, tokio clears nothing if one
/// came meanwhile, and an EOF stays visible.
fn read_available(stream: &TcpStream, buffer: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    let room = buffer.len();
    let mut received = 0;
    let outcome = stream.try_io(Interest::READABLE, || {
        received = socket2::SockRef::from(stream).recv(buffer)?;
        if received > 0 && received < room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(received)
    });
    // Bytes received mean the read worked, whatever the closure said to clear the readiness.
    if received > 0 { Ok(received) } else { outcome }
}

/// Restarts the idle timer, if the server has one.
fn rearm(idle: &mut Option<Pin<Box<tokio::time::Sleep>>>, limit: Option<Duration>) {
    if let (Some(idle), Some(limit)) = (idle.as_mut(), limit) {
        idle.as_mut().reset(tokio::time::Instant::now() + limit);
    }
}

/// Writes the queued output out (for at most LINGER) before a connection closes on an error.
async fn flush_queued(conn: &ConnShared, stream: &TcpStream) {
    let flushing = async {
        while conn.io().pending_bytes > 0 {
            if stream.writable().await.is_err() || conn.flush().is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, unless_aborted(conn, flushing)).await;
}

/// Runs `work` to its end, or until a forced stop closes the connection at once (`abort` sets
/// `closed` and wakes the task).
async fn unless_aborted(conn: &ConnShared, work: impl Future<Output = ()>) {
    tokio::pin!(work);
    std::future::poll_fn(|cx| {
        conn.waker.register(cx.waker());
        if conn.closed.load(Relaxed) {
            return Poll::Ready(());
        }
        work.as_mut().poll(cx)
    })
    .await;
}

/// How long a closing connection waits for its peer to finish sending.
const LINGER: Duration = Duration::from_secs(2);
/// The same, for a connection closed because of an error: its peer is told sooner.
const ERROR_LINGER: Duration = Duration::from_millis(500);

/// Whether the peer has acknowledged everything sent to it and sent nothing unread: closing then
/// resets nothing, and a reset caused by what it sends later cannot cost it a reply it has already
/// received (Linux hands over received data before reporting a reset).
fn nothing_in_flight(stream: &TcpStream) -> bool {
    queued_bytes(stream, libc::TIOCOUTQ) == Some(0) && queued_bytes(stream, libc::FIONREAD) == Some(0)
}

/// Bytes the kernel holds for the socket: FIONREAD, received and unread; TIOCOUTQ, sent and not yet
/// acknowledged. None if the ioctl fails.
fn queued_bytes(stream: &TcpStream, request: libc::Ioctl) -> Option<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD and TIOCOUTQ store one int at the pointer.
    let asked = unsafe { libc::ioctl(stream.as_raw_fd(), request, &mut bytes) };
    (asked == 0).then_some(bytes.max(0) as usize)
}

/// Before closing a connection the peer is still sending on: shut down our side (the peer sees EOF
/// after the last reply) and discard what it sends until it closes too. Closing with unread data
/// would make the kernel reset the connection and throw away replies the peer has not read yet.
async fn linger(conn: &ConnShared, stream: &TcpStream, limit: Duration) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let discard = async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            // Into the io thread's read buffer: a buffer of its own would make every connection's
            // task state (allocated for its whole life) that much larger.
            match READ_BUFFER.with(|buffer| stream.try_read(&mut buffer.borrow_mut())) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(limit, unless_aborted(conn, discard)).await;
}

/// Closes the socket, forgets the connection and tells the application why it ended.
fn finish_connection(conn: &ConnShared, py_conn: Py<Connection>, ended: Ended) {
    let server = &conn.server;
    {
        let mut io = conn.io();
        io.close_requested = true;
        if let Some(stream) = io.stream.take()
            && matches!(ended, Ended::Unreported(Outcome::Closed))
        {
            // Flushed already: a FIN after the last reply tells the peer nothing more is coming.
            let _ = socket2::SockRef::from(stream.as_ref()).shutdown(std::net::Shutdown::Write);
        }
        io.pending.clear();
        io.pending_bytes = 0;
        conn.room_made(&io);
    }
    conn.closed.store(true, Relaxed);
    server.forget(conn.id);
    runtime::with_gil(|py| {
        let error = match ended {
            Ended::Reported(error) => error,
            Ended::Unreported(outcome) => report_end(py, conn, outcome),
        };
        if let Some(handler) = server.handlers.on_disconnect.as_ref() {
            let exc = error
                .as_ref()
                .map_or_else(|| py.None().into_bound(py), |e| e.value(py).clone().into_any());
            match call_handler(handler.bind(py), (py_conn.bind(py), exc)) {
                Ok(result) if is_awaitable(&result) => {
                    if let Err(err) = hand_to_loop(py, conn, Awaited::Disconnect, &result) {
                        log::log(py, ERROR, "on_disconnect could not be run", Some(&err));
                    }
                }
                Ok(_) => {}
                Err(err) => log::log(py, ERROR, "on_disconnect raised", Some(&err)),
            }
        }
        drop(py_conn);
    });
}

/// `outcome` as a forced stop, which closed the connection under its handler, left it: the handler's
/// reply, returned or sent with conn.send() (which raised BrokenPipeError), has nowhere to go, and the
/// server closed the connection, as it closes the others, not the peer. (A function of its own: inline
/// in `serve_connection`, it took each connection's task into tokio's next 128-byte size.)
fn as_forced_stop_left_it(conn: &ConnShared, outcome: Outcome) -> Outcome {
    if !conn.closed.load(Relaxed) {
        return outcome;
    }
    match outcome {
        Outcome::Io(_) => Outcome::Closed,
        Outcome::Handler(err)
            if runtime::with_gil(|py| err.is_instance_of::<pyo3::exceptions::PyBrokenPipeError>(py)) =>
        {
            Outcome::Closed
        }
        outcome => outcome,
    }
}

/// Logs why a connection ended, counts it among the errors if it was one, and gives the exception
/// its on_disconnect gets (None for a clean close).
fn report_end(py: Python<'_>, conn: &ConnShared, outcome: Outcome) -> Option<PyErr> {
    let peer = conn.peer;
    // An idle timeout is what the server was asked to do, not an error; its exception tells on_disconnect why.
    let counts_as_error = !matches!(outcome, Outcome::Closed | Outcome::Idle);
    let error = match outcome {
        Outcome::Closed => {
            if log::enabled(py, DEBUG) {
                log::log(py, DEBUG, &format!("connection from {peer} closed"), None);
            }
            return None;
        }
        Outcome::Idle => {
            log::log(py, INFO, &format!("closing idle connection from {peer}"), None);
            PyTimeoutError::new_err("idle timeout")
        }
        Outcome::Handler(err) => {
            match server_common::not_the_handlers_fault(py, &err) {
                Some(why) => log::log(py, INFO, &format!("closing connection from {peer}: {why}"), None),
                None => log::log(
                    py,
                    ERROR,
                    &format!("handler raised; closing connection from {peer}"),
                    Some(&err),
                ),
            }
            err
        }
        Outcome::Io(err) => {
            log::log(py, INFO, &format!("connection from {peer} failed: {err}"), None);
            io_error(&err)
        }
        Outcome::Framing(err) => {
            log::log(py, ERROR, &format!("closing connection from {peer}: {err}"), None);
            PyValueError::new_err(err.to_string())
        }
        Outcome::Truncated(unread) => {
            let text = format!("connection from {peer} ended in the middle of a message ({unread} bytes of it)");
            log::log(py, INFO, &text, None);
            PyEOFError::new_err(text)
        }
        Outcome::SlowReader(queued) => {
            let text = format!("closing connection from {peer}: it does not read ({queued} bytes queued)");
            log::log(py, WARNING, &text, None);
            os_error(libc::ENOBUFS)
        }
    };
    if counts_as_error {
        conn.server.stats.errors.fetch_add(1, Relaxed);
    }
    Some(error)
}

/// Accepts until the server stops; each connection gets a task of its own.
async fn accept_loop(server: Arc<ServerShared>, listener: std::net::TcpListener, _task: TaskGuard) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => Arc::new(listener),
        Err(err) => {
            runtime::with_gil(|py| log::log(py, ERROR, &format!("cannot listen: {err}"), None));
            return;
        }
    };
    // For stop() to give up the port when a handler holds up the io thread past its timeout (the
    // loop below then cannot run to close the listener).
    let kind = server_common::PortSocket::Listener {
        forks_when_made: server.forks_when_made,
    };
    server.lifecycle.hold_port(&listener, kind);
    loop {
        let accepted = tokio::select! {
            biased;
            () = server.lifecycle.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => admit(&server, stream, peer),
            Err(err) => {
                if !server_common::accept_failed(&server.stats.errors, &err).await {
                    return;
                }
            }
        }
    }
}

/// Counts a connection refused over max_connections, and logs it: at once if nothing was logged in the
/// last REFUSALS_REPORTED_EVERY, else in one line for all those refused meanwhile, at the end of it.
fn refuse(server: &Arc<ServerShared>, peer: SocketAddr) {
    let refused = server.stats.refused.fetch_add(1, Relaxed) + 1;
    let reports = server.refusals.lock().unwrap_or_else(|e| e.into_inner());
    match reports.last {
        Some(last) if last.elapsed() < REFUSALS_REPORTED_EVERY => {
            // The first refusal since the last line schedules the next one; those after it find it
            // scheduled. (Refusals are counted and reported on the io thread only.)
            if refused == reports.reported + 1 {
                let server = server.clone();
                runtime::spawn_here(async move {
                    tokio::time::sleep_until((last + REFUSALS_REPORTED_EVERY).into()).await;
                    report_refusals(&server, None);
                });
            }
        }
        _ => {
            drop(reports);
            report_refusals(server, Some(peer));
        }
    }
}

/// Logs the refusals not logged yet: the one from `peer`, or how many. Those left to report when the
/// server stops are not: at interpreter exit the report could take the GIL while Python shuts down.
fn report_refusals(server: &ServerShared, peer: Option<SocketAddr>) {
    if peer.is_none() && server.lifecycle.is_stopping() {
        return;
    }
    let unreported = {
        let mut reports = server.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let refused = server.stats.refused.load(Relaxed);
        let unreported = refused - reports.reported;
        *reports = RefusalReports {
            last: Some(Instant::now()),
            reported: refused,
        };
        unreported
    };
    let limit = server.max_connections;
    let text = match peer {
        Some(peer) if unreported == 1 => format!("refusing connection from {peer}: max_connections ({limit}) reached"),
        _ if unreported > 0 => format!("refused {unreported} more connection(s): max_connections ({limit}) reached"),
        _ => return,
    };
    runtime::with_gil(|py| log::log(py, WARNING, &text, None));
}

fn admit(server: &Arc<ServerShared>, stream: TcpStream, peer: SocketAddr) {
    server.stats.accepted.fetch_add(1, Relaxed);
    if server.connections().len() >= server.max_connections {
        refuse(server, peer);
        return;
    }
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let stream = Arc::new(stream);
    let conn = Arc::new_cyclic(|me| ConnShared {
        me: me.clone(),
        id: server.next_id.fetch_add(1, Relaxed),
        peer,
        local,
        server: server.clone(),
        io: Mutex::new(Io {
            stream: Some(stream.clone()),
            pending: VecDeque::new(),
            pending_bytes: 0,
            gathering: None,
            close_requested: false,
            awaiting: false,
            failed: None,
            delivering: false,
            replying_on: None,
            overrun: false,
            room_waiters: 0,
            flush_deferred: false,
        }),
        woken: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        drained: Condvar::new(),
        closed: AtomicBool::new(false),
        joined: AtomicBool::new(false),
        spared_at_stop: AtomicBool::new(false),
        last_write: AtomicU64::new(0),
    });
    let created = runtime::with_gil(|py| {
        if log::enabled(py, DEBUG) {
            log::log(py, DEBUG, &format!("accepted connection from {peer} on {local}"), None);
        }
        // As the stdlib's accept() raises it for the socket it makes (and so an asyncio server's).
        if let Err(refused) = audit::no_socket_new(py, socket2::Domain::for_address(local).into(), libc::SOCK_STREAM, 0)
        {
            server.stats.errors.fetch_add(1, Relaxed);
            let text = format!("connection from {peer} closed: an audit hook refused it");
            log::log(py, ERROR, &text, Some(&refused));
            return Err(refused);
        }
        Py::new(
            py,
            Connection {
                shared: conn.clone(),
                state: Mutex::new(None),
            },
        )
    });
    let Ok(py_conn) = created else { return };
    server.connections().insert(conn.id, conn.clone());
    server.stats.active.fetch_add(1, Relaxed);
    let task = server.lifecycle.task();
    runtime::spawn_here(async move {
        let _task = task;
        let _registered = Registered(conn.clone());
        serve_connection(conn, stream, py_conn).await;
    });
}

/// Forgets a connection when its task ends, however it ends: a bug that panics in a connection's task
/// ends that connection (tokio contains the panic) without leaving it counted as open.
struct Registered(Arc<ConnShared>);

impl Drop for Registered {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.server.forget(conn.id) && std::thread::panicking() {
            conn.abort();
            runtime::with_gil(|py| {
                log::log(
                    py,
                    ERROR,
                    &format!("internal error: the task of the connection from {} panicked", conn.peer),
                    None,
                );
            });
        }
    }
}

/// A TCP server whose accept, read, write and framing loop runs in Rust for every connection at
/// once; Python runs only the handlers.
///
/// - `address`: where to listen; None (the default) is 127.0.0.1 on a free port, "" every interface.
/// - `on_message(conn, data)`: runs for each chunk received, or each whole message when `framing` is
///   set; a bytes-like return value is sent back on that connection, None sends nothing (anything else
///   is the handler's error, a TypeError).
/// - `on_connect(conn)`, `on_disconnect(conn, exc)`: their return values are ignored (a greeting is
///   `conn.send()`'s); `exc` is None for a clean close, else why the
///   connection ended: the exception a handler raised, an OSError (reset, or ENOBUFS for a peer that
///   stopped reading while what others sent it piled up: broadcasts, relays), TimeoutError("idle
///   timeout"), ValueError for broken framing (a frame over `max_frame_size`), EOFError for a peer that
///   ended mid-message.
/// - A handler that cannot take the arguments it is called with is a TypeError when the server is made.
/// - `framing`: None (raw chunks), "line", "length" (4-byte big-endian prefix) or a bytes delimiter.
/// - `max_connections` (default 10,000): connections beyond it are refused and counted.
/// - `max_frame_size` (default 16 MiB): a longer frame closes its connection.
/// - `idle_timeout` (default None, no timeout): seconds (above zero) after which a connection that has
///   neither received nor sent anything, and has no async handler running, is closed.
/// - `backlog` (default 1024), `reuse_port` (SO_REUSEPORT).
#[pyclass(name = "TcpServer", module = "rsock._rsock", subclass, frozen)]
pub struct TcpServer {
    shared: Arc<ServerShared>,
    runner: Runner<std::net::TcpListener>,
    address: SocketAddr,
}

impl TcpServer {
    /// What a repr says after the class's name (a subclass's repr names the subclass; the finalizer's
    /// warning, with no class object at hand, names the base).
    fn describe(&self) -> String {
        let state = self.runner.state_name();
        format!(
            "{} {state}, {} connections, {} messages",
            self.address,
            self.shared.stats.active.load(Relaxed),
            self.shared.stats.messages.load(Relaxed)
        )
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.runner
            .warn_if_never_used(|| crate::display::base_repr::<Self>(&self.describe()));
    }
}

#[pymethods]
impl TcpServer {
    #[new]
    #[pyo3(signature = (address=None, on_message=None, *, on_connect=None, on_disconnect=None, framing=None,
                        max_connections=Opt::Absent, max_frame_size=Opt::Absent,
                        idle_timeout=None, backlog=Opt::Absent, reuse_port=None),
           text_signature = "(address=None, on_message=None, *, on_connect=None, on_disconnect=None, framing=None, \
                             max_connections=10000, max_frame_size=16777216, idle_timeout=None, backlog=1024, \
                             reuse_port=False)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        address: Option<&Bound<'_, PyAny>>,
        on_message: Option<Bound<'_, PyAny>>,
        on_connect: Option<Bound<'_, PyAny>>,
        on_disconnect: Option<Bound<'_, PyAny>>,
        framing: Option<&Bound<'_, PyAny>>,
        max_connections: Opt<'_>,
        max_frame_size: Opt<'_>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
        backlog: Opt<'_>,
        reuse_port: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // Read as listen() reads it: the stdlib's errors for a value beyond a C int.
        let backlog = crate::args::c_int_or(&backlog, DEFAULT_BACKLOG)?;
        let reuse_port = crate::args::flag(reuse_port)?;
        let on_message = server_common::handler_or_none("on_message", on_message, &["conn", "data"])?;
        let on_connect = server_common::handler_or_none("on_connect", on_connect, &["conn"])?;
        let on_disconnect = server_common::handler_or_none("on_disconnect", on_disconnect, &["conn", "exc"])?;
        let async_one = server_common::async_handler(
            py,
            &[
                ("on_message", &on_message),
                ("on_connect", &on_connect),
                ("on_disconnect", &on_disconnect),
            ],
        )?;
        let handlers = Handlers {
            on_message,
            on_connect,
            on_disconnect,
            async_one,
        };
        let max_connections = crate::args::positive("max_connections", &max_connections, DEFAULT_MAX_CONNECTIONS)?;
        let max_frame_size = crate::args::positive("max_frame_size", &max_frame_size, DEFAULT_MAX_FRAME_SIZE)?;
        let framing = Framing::from_py(framing)?;
        // Zero would close every connection as it opens: None is "no timeout".
        let idle_timeout = server_common::parse_positive_seconds("idle_timeout", idle_timeout)?;
        let address = server_common::default_address(py, address)?;
        let target = endpoint(py, &address, libc::SOCK_STREAM, libc::AF_UNSPEC)?;
        let listener = server_common::bind_socket(py, target, socket2::Type::STREAM, reuse_port, &address, |s| {
            s.listen(backlog.max(1))
        })?;
        let forks_when_made = runtime::forks();
        let listener = std::net::TcpListener::from(listener);
        let local = listener.local_addr().map_err(|e| io_error(&e))?;
        let runner = Runner::new(listener);
        let shared = Arc::new(ServerShared {
            handlers,
            framing,
            max_connections,
            max_frame_size,
            idle_timeout,
            stats: Stats::default(),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            lifecycle: runner.lifecycle.clone(),
            async_bridge: Mutex::new(None),
            refusals: Mutex::default(),
            forks_when_made,
        });
        Ok(TcpServer {
            shared,
            runner,
            address: local,
        })
    }

    /// rsock.aio's hook: `bridge(awaitable, connection_or_None)` runs what async handlers return.
    fn _set_async_bridge(&self, bridge: Py<PyAny>) {
        *self.shared.async_bridge.lock().unwrap_or_else(|e| e.into_inner()) = Some(bridge);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let handlers = &self.shared.handlers;
        server_common::traverse_handlers(
            &visit,
            self.runner.finished(),
            [&handlers.on_message, &handlers.on_connect, &handlers.on_disconnect],
            &self.shared.async_bridge,
        )
    }

    fn __clear__(&self) {
        server_common::clear_bridge(self.runner.finished(), &self.shared.async_bridge);
    }

    /// Tells the server to stop without waiting for it (rsock.aio waits in a worker thread).
    #[pyo3(signature = (timeout=None))]
    fn _begin_stop(&self, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.runner.begin_stop_checked(timeout)
    }

    /// Starts serving in the background and returns at once.
    fn start(&self) -> PyResult<()> {
        server_common::refuse_async_handler(
            self.shared.handlers.async_one,
            &self.shared.async_bridge,
            "rsock.aio.TcpServer",
        )?;
        self.runner
            .start(|listener, task| accept_loop(self.shared.clone(), listener, task))
    }

    /// Serves until stop() is called or Ctrl-C, which stops the server cleanly and propagates.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.runner.serve_forever(py, || self.start(), || self.stop(py, None))
    }

    /// Stops accepting, answers what each connection had received when the stop reached it (while it
    /// takes messages: not past a close its handler asked for, nor beside a running async handler) and
    /// lets every connection send its replies, then closes them.
    /// Connections still open after `timeout` seconds (default 5) are closed at once, and the port is
    /// given up even while a handler holds up the io thread; stop() then waits at most one second more
    /// (a handler still running finishes on its own). Called from a TcpServer's handler (on the io
    /// thread, where the connections are served once it returns) it gives up the port and returns at
    /// once; the connections finish after the handler.
    #[pyo3(signature = (timeout=None))]
    fn stop(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let caller = if runtime::on_io_thread() {
            StopCaller::ServingThread { give_up_port: true }
        } else {
            StopCaller::Elsewhere
        };
        self.runner.stop(py, timeout, caller, |spare| {
            let open: Vec<_> = self.shared.connections().values().cloned().collect();
            open.iter()
                .filter(|conn| !(spare && conn.spared_at_stop.load(Relaxed)))
                .for_each(|conn| conn.abort());
        })
    }

    /// Sends `data` (framed as the server frames messages) to every connection but those in
    /// `exclude` (a Connection or an iterable of them); returns how many it was sent to.
    #[pyo3(signature = (data, exclude=None))]
    fn broadcast(&self, data: &Bound<'_, PyAny>, exclude: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        self.shared.lifecycle.check_runs_here()?;
        let framed = frame_message(&self.shared.framing, data)?;
        // Connections compared by identity: ids restart at 1 in every server, and a connection of
        // another server excludes nothing here.
        let mut skip = Vec::new();
        if let Some(exclude) = exclude.filter(|e| !e.is_none()) {
            if let Ok(conn) = exclude.cast::<Connection>() {
                skip.push(conn.get().shared.clone());
            } else {
                for item in exclude.try_iter()? {
                    skip.push(item?.cast::<Connection>()?.get().shared.clone());
                }
            }
        }
        let targets: Vec<_> = self
            .shared
            .connections()
            .values()
            .filter(|c| c.joined.load(Acquire) && !skip.iter().any(|s| Arc::ptr_eq(s, c)))
            .cloned()
            .collect();
        let send_all = || {
            targets
                .iter()
                .filter(|conn| conn.write(&framed, Some(&framed)).is_ok())
                .count()
        };
        if runtime::on_io_thread() {
            // Only queued, and sent together once the handler returns (see `write`).
            return Ok(send_all());
        }
        // From any other thread (a ticker, a worker) the sends are made here and now, one syscall per
        // peer, and without the GIL, as socket.send() makes its own: the io thread's handlers and the
        // program's other threads run meanwhile. (Leaving them to the io thread instead would delay a
        // broadcast behind a slow handler, or behind the io thread's wait for the GIL.)
        Ok(data.py().detach(send_all))
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().start()?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py, None)?;
        Ok(false)
    }

    /// The address the server listens on, with the real port when bound to port 0.
    #[getter]
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        socket_address_to_py(py, &self.address)
    }

    /// Whether the server is accepting connections.
    #[getter]
    fn running(&self) -> bool {
        self.runner.running()
    }

    /// The framing messages are cut and sent with: None, "line", "length" or the delimiter.
    #[getter]
    fn framing<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.shared.framing.to_py(py)
    }

    /// Counters: accepted (every connection taken from the backlog, the refused ones too), active,
    /// refused (over max_connections), messages, bytes_in, bytes_out, errors (connections that ended
    /// in an error: a handler's exception, on_connect's too, a reset, broken framing, a slow reader, a
    /// peer gone mid-message, a connection an audit hook refused; not an idle timeout, and not an
    /// exception in on_disconnect, which is logged once the connection has ended; failed accepts, out
    /// of descriptors say, count here too).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.shared.stats;
        let stats = PyDict::new(py);
        stats.set_item("accepted", s.accepted.load(Relaxed))?;
        stats.set_item("active", s.active.load(Relaxed))?;
        stats.set_item("refused", s.refused.load(Relaxed))?;
        stats.set_item("messages", s.messages.load(Relaxed))?;
        stats.set_item("bytes_in", s.bytes_in.load(Relaxed))?;
        stats.set_item("bytes_out", s.bytes_out.load(Relaxed))?;
        stats.set_item("errors", s.errors.load(Relaxed))?;
        Ok(stats)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let s = &this.shared.stats;
        let framing = match &this.shared.framing {
            Framing::Raw => "none".to_string(),
            Framing::Line => "line".to_string(),
            Framing::Length => "length".to_string(),
            Framing::Delimiter(d) => format!("{:?}", String::from_utf8_lossy(d)),
        };
        Ok(crate::display::table(
            &format!("{} {}", crate::display::class_name(slf.as_any())?, this.address),
            &[
                ("state", this.runner.state_name().to_string()),
                ("framing", framing),
                ("connections", s.active.load(Relaxed).to_string()),
                ("accepted", s.accepted.load(Relaxed).to_string()),
                ("refused", s.refused.load(Relaxed).to_string()),
                ("messages", s.messages.load(Relaxed).to_string()),
                ("bytes in", s.bytes_in.load(Relaxed).to_string()),
                ("bytes out", s.bytes_out.load(Relaxed).to_string()),
                ("errors", s.errors.load(Relaxed).to_string()),
            ],
        ))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        crate::display::repr(slf.as_any(), &slf.get().describe())
    }
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TcpServer>()?;
    m.add_class::<Connection>()?;
    Ok(())
}
