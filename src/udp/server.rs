//! `UdpServer`: receives datagrams in batches on a thread of its own and runs the Python handler for
//! each, sending back what it returns.
//!
//! One datagram socket needs no event loop: the thread blocks in recvmmsg(2) with MSG_WAITFORONE,
//! which sleeps until a datagram comes and then takes every one already queued. That is one
//! syscall per batch, where waiting on tokio's epoll cost an epoll_wait besides every recvmmsg.
//! While datagrams come close together, the thread polls with MSG_DONTWAIT for a while before it
//! sleeps (`IdleSpin`).

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::addr::socket_addr_from_storage;
use crate::audit;
use crate::buffer::with_reply;
use crate::errors::io_error;
use crate::log::{self, ERROR, INFO};
use crate::resolver::{endpoint, socket_address_to_py};
use crate::reused_bytes;
use crate::runtime;
use crate::server_common::{
    self, Lifecycle, Runner, StopCaller, TaskGuard, call_handler, close_refused_awaitable, is_awaitable,
};
use crate::spin::SPIN;

use super::reply_source::{self, Control, ReplySource};

/// Datagrams taken per recvmmsg(2) call.
const BATCH: usize = 32;
/// Room for any UDP datagram (the largest payload is 65,527 bytes over IPv6), so none is cut short.
const DATAGRAM_ROOM: usize = 65536;
/// Peer addresses kept as Python objects, so a busy client's address is built once, not per datagram.
const ADDRESS_CACHE: usize = 4096;
/// How long a receive waits before looking for stop(), on a socket another process may share.
const SHARED_WAIT_SLICE: Duration = Duration::from_millis(100);
/// A stretch of at least this many datagrams, none answered, is a one-way flood (see `FloodPacer`).
const FLOOD_STRETCH: usize = 8;
/// How long the receive thread pauses in a one-way flood before taking the next batch.
const FLOOD_PAUSE: Duration = Duration::from_micros(100);
/// The receive thread's timer slack, in nanoseconds: how much later than asked its pauses may end.
const FLOOD_PAUSE_SLACK_NS: libc::c_ulong = 1_000;
/// How long receiving pauses after an error it cannot wait out (as accepting does).
const RECEIVE_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Stats {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
}

impl Stats {
    /// Counts a reply of `len` bytes sent.
    fn sent(&self, len: usize) {
        self.datagrams_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(len as u64, Relaxed);
    }
}

struct UdpShared {
    on_datagram: Option<Py<PyAny>>,
    /// "on_datagram" if it is an `async def` function: only rsock.aio's server may start then.
    async_handler: Option<&'static str>,
    /// The fork generation of the process that made the socket.
    made_in: u64,
    stats: Stats,
    lifecycle: Arc<Lifecycle>,
    /// Set by rsock.aio: runs an awaitable a handler returned on the caller's event loop.
    async_bridge: Mutex<Option<Py<PyAny>>>,
    /// How many async handlers are running on the event loop (at most ASYNC_HANDLERS_AT_ONCE).
    async_running: Mutex<usize>,
    /// Signalled when one of them finishes.
    async_finished: Condvar,
}

/// The most async handlers a server runs at once. Past it the receive thread waits, and datagrams wait
/// in the socket's buffer, the kernel dropping what does not fit, as for a plain handler slower than
/// the datagrams. Unbounded, a flood piled up handlers on the event loop without limit: hundreds of
/// MiB, and the loop seconds behind.
const ASYNC_HANDLERS_AT_ONCE: usize = 1024;

/// An async handler's place among the ASYNC_HANDLERS_AT_ONCE, given back when dropped.
struct HandlerSlot(Arc<UdpShared>);

impl HandlerSlot {
    /// Waits (GIL released) for a place; None if the server stops meanwhile.
    fn take(py: Python<'_>, shared: &Arc<UdpShared>) -> Option<HandlerSlot> {
        py.detach(|| {
            let mut running = shared.async_running.lock().unwrap_or_else(|e| e.into_inner());
            while *running >= ASYNC_HANDLERS_AT_ONCE {
                if shared.lifecycle.is_stopping() {
                    return None;
                }
                // In slices, to see a stop: begin_stop() does not know of this wait.
                running = shared
                    .async_finished
                    .wait_timeout(running, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *running += 1;
            Some(HandlerSlot(shared.clone()))
        })
    }
}

impl Drop for HandlerSlot {
    fn drop(&mut self) {
        let mut running = self.0.async_running.lock().unwrap_or_else(|e| e.into_inner());
        // Only the receive thread waits, and only while all the places are taken: a signal (a system
        // call) is needed only when this one frees the first.
        let was_full = *running >= ASYNC_HANDLERS_AT_ONCE;
        *running -= 1;
        drop(running);
        if was_full {
            self.0.async_finished.notify_one();
        }
    }
}

/// Where a datagram's reply goes: to its sender, and from the address it was sent to when the socket
/// is bound to every address (see `reply_source`).
#[derive(Clone, Copy)]
struct ReplyTo {
    peer: SocketAddr,
    source: Option<ReplySource>,
}

/// Where the reply of an async `on_datagram` goes, once rsock.aio reports it done.
#[pyclass(name = "DatagramReply", module = "rsock._rsock", frozen)]
pub struct DatagramReply {
    shared: Arc<UdpShared>,
    socket: Arc<UdpSocket>,
    target: ReplyTo,
    /// Counts the async handler as one of the server's tasks until its reply is sent or given up, so
    /// that stop() lets it finish within its timeout, and gives up the port after it; and holds its
    /// place among the handlers running at once.
    in_flight: Mutex<Option<(TaskGuard, HandlerSlot)>>,
    /// A second descriptor of the server's socket, taken when the handler calls stop() itself
    /// (`_spare_at_stop`): the reply goes out from it even if stop() gives up the port meanwhile.
    spared_socket: Mutex<Option<UdpSocket>>,
}

#[pymethods]
impl DatagramReply {
    /// rsock.aio's mark for the datagram whose async handler calls stop(): its wait for the other
    /// handlers ends with stop()'s timeout, when the port is given up, and the reply the handler then
    /// returns must still go out. The port stays bound until that reply is sent (or the handler fails).
    fn _spare_at_stop(&self) {
        if !self.shared.lifecycle.runs_here() || self.shared.lifecycle.released() {
            return;
        }
        // Without a second descriptor (none left) the reply is sent as any other.
        if let Ok(socket) = self.socket.try_clone() {
            *self.spared_socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket);
        }
    }

    /// Sends the reply an async handler returned (nothing for None); an exception is logged.
    #[pyo3(signature = (reply, exc=None))]
    fn _handler_done(&self, py: Python<'_>, reply: &Bound<'_, PyAny>, exc: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        // Ends the task when this call returns, once the reply is sent.
        let _in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).take();
        let spared_socket = self.spared_socket.lock().unwrap_or_else(|e| e.into_inner()).take();
        let socket = spared_socket.as_ref().unwrap_or(&self.socket);
        // In a forked child the parent still serves this socket: a reply sent from both would reach the
        // sender twice.
        self.shared.lifecycle.check_runs_here()?;
        let stats = &self.shared.stats;
        let sent = match exc.filter(|e| !e.is_none()) {
            Some(exc) => Err(PyErr::from_value(exc.clone())),
            None if reply.is_none() => return Ok(()),
            None => with_reply("on_datagram", reply, |bytes| {
                let peer = self.target.peer;
                let address = socket_address_to_py(py, &peer)?;
                if let Err(full) = send_reply(py, &self.shared, socket, bytes, self.target, &address) {
                    reply_not_sent(py, &self.shared, peer, &send_failure(&full, bytes.len()), None);
                }
                Ok(())
            })
            .and_then(|sent| sent),
        };
        if let Err(err) = sent {
            let excused = server_common::not_the_handlers_fault(py, &err);
            report_failure(py, stats, self.target.peer, &err, excused);
        }
        Ok(())
    }
}

/// Buffers, addresses and message headers for one recvmmsg(2) batch, built once and reused for
/// every batch. The headers point into `buffers`, `iovecs` and `names`, whose heap storage never
/// moves or resizes after `new`.
struct RecvBatch {
    buffers: Vec<MaybeUninit<u8>>,
    /// Never read here: the headers point at these.
    _iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    /// Each datagram's destination, on a socket bound to every address (else empty).
    controls: Vec<Control>,
    messages: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs` and `messages` point only into this value's own heap
// storage, so moving the value to another thread moves everything they point at with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// `destinations`: whether the socket reports where each datagram was sent (see `reply_source`).
    fn new(destinations: bool) -> Self {
        let mut buffers = vec![MaybeUninit::<u8>::uninit(); BATCH * DATAGRAM_ROOM];
        let mut iovecs: Vec<libc::iovec> = buffers
            .chunks_mut(DATAGRAM_ROOM)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            })
            .collect();
        // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut controls = vec![Control::EMPTY; if destinations { BATCH } else { 0 }];
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(iov, name)| {
                // SAFETY: an all-zero mmsghdr is valid; the pointers set here live as long as the batch.
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                msg
            })
            .collect();
        for (msg, control) in messages.iter_mut().zip(controls.iter_mut()) {
            (msg.msg_hdr.msg_control, msg.msg_hdr.msg_controllen) = control.room();
        }
        RecvBatch {
            buffers,
            _iovecs: iovecs,
            names,
            controls,
            messages,
        }
    }

    /// One recvmmsg(2) that waits for the first datagram (unless `flags` has MSG_DONTWAIT), then takes
    /// those already queued: how many arrived.
    fn receive(&mut self, fd: i32, flags: libc::c_int) -> io::Result<usize> {
        for (i, msg) in self.messages.iter_mut().enumerate() {
            // The kernel overwrote these in the last call: the room for the address and for the control
            // data, and the flags.
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if let Some(control) = self.controls.get_mut(i) {
                msg.msg_hdr.msg_controllen = control.room().1;
            }
            msg.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every message points at a buffer and an address slot owned by this batch.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.messages.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE | flags,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// The bytes in the last batch's `count` datagrams.
    fn bytes(&self, count: usize) -> usize {
        self.messages[..count].iter().map(|m| m.msg_len as usize).sum()
    }

    /// Whether the last batch (of `count`) ends in the empty, sender-less entry that a socket shut
    /// down for reading returns.
    fn shut_down(&self, count: usize) -> bool {
        count > 0 && self.messages[count - 1].msg_hdr.msg_namelen == 0
    }

    /// Datagram `i` of the last batch: its bytes, where its reply goes (None for the empty entry a socket
    /// shut down for reading returns, which has no sender), and whether the kernel cut it short.
    fn datagram(&self, i: usize) -> (&[u8], Option<ReplyTo>, bool) {
        let message = &self.messages[i];
        let start = i * DATAGRAM_ROOM;
        let len = (message.msg_len as usize).min(DATAGRAM_ROOM);
        // SAFETY: recvmmsg wrote `len` bytes at the start of this datagram's buffer.
        let data = unsafe { std::slice::from_raw_parts(self.buffers[start..start + len].as_ptr().cast::<u8>(), len) };
        let sender = if message.msg_hdr.msg_namelen == 0 {
            None
        } else {
            socket_addr_from_storage(&self.names[i])
        };
        let reply_to = sender.map(|peer| ReplyTo {
            peer,
            // SAFETY: recvmmsg filled in this header, and its control data is untouched since.
            source: unsafe { reply_source::destination(&message.msg_hdr) },
        });
        (data, reply_to, message.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }
}

/// Python `(host, port)` objects for recent senders.
#[derive(Default)]
struct AddressCache {
    /// The sender of the last datagram: a client sending a stream of them is found without hashing.
    last: Option<(SocketAddr, Py<PyAny>)>,
    recent: HashMap<SocketAddr, Py<PyAny>>,
}

impl AddressCache {
    fn get<'py>(&mut self, py: Python<'py>, addr: SocketAddr) -> PyResult<Bound<'py, PyAny>> {
        if let Some((last, found)) = &self.last
            && *last == addr
        {
            return Ok(found.bind(py).clone());
        }
        let found = match self.recent.get(&addr) {
            Some(found) => found.bind(py).clone(),
            None => {
                if self.recent.len() >= ADDRESS_CACHE {
                    self.recent.clear();
                }
                let made = socket_address_to_py(py, &addr)?;
                self.recent.insert(addr, made.clone().unbind());
                made
            }
        };
        self.last = Some((addr, found.clone().unbind()));
        Ok(found)
    }
}

/// Paces the receive thread through a one-way flood (metrics, logs, telemetry: datagrams nobody waits
/// an answer to). Each wake-up from a blocking receive costs as much as handling a dozen datagrams (a
/// context switch; on a VM, an exit to the host), and a thread that handles datagrams faster than they
/// come wakes for every few. So when the datagrams taken since the socket was last found empty were
/// many (a flood: at least FLOOD_STRETCH, which takes a sender fast enough to queue that many while
/// the thread handles the ones before) and the handler answered none of them, the thread pauses before
/// receiving again, and the next wake-up finds many queued; the pauses go on while each finds as many.
/// A stretch with an answered datagram never ends in a pause: its sender may be waiting for the reply,
/// and pausing would slow every request-response exchange. (A datagram that arrives during a pause
/// waits for it, answered or not.) Nor does a batch whose bytes fill a good part of the socket's receive
/// buffer: the pause could let the kernel drop what would not fit.
struct FloodPacer {
    /// Datagrams taken since the socket was last found empty.
    stretch: usize,
    answered: bool,
    /// The most a batch may hold, in bytes, for the pause after it to be safe.
    room: usize,
}

impl FloodPacer {
    /// A pacer for a socket whose receive buffer holds `receive_buffer` bytes.
    fn new(receive_buffer: usize) -> Self {
        FloodPacer {
            stretch: 0,
            answered: false,
            room: receive_buffer / 4,
        }
    }

    /// Records a batch of `count` datagrams holding `bytes` (`answered`: the handler returned
    /// something other than None for one of them, or failed). True when the thread should pause: the
    /// batch emptied the socket at the end of a one-way flood.
    fn after_batch(&mut self, count: usize, bytes: usize, answered: bool) -> bool {
        self.stretch += count;
        self.answered |= answered;
        if count == BATCH {
            return false;
        }
        let flood = self.stretch >= FLOOD_STRETCH && !self.answered && bytes <= self.room;
        self.stretch = 0;
        self.answered = false;
        flood
    }
}

/// Decides whether the receive thread polls the empty socket for a while before it sleeps. A sleep and
/// the wake-up that ends it cost microseconds (on a VM, an exit to the host), and they are paid between
/// a reply and the request it brings: clients that wait for each answer send the next one within a few
/// microseconds, and a thread that sleeps for it serves a third fewer round trips than the stdlib's
/// plain blocking loop (which is slower per datagram, so it finds the next one already queued). So
/// while datagrams come close together (the last one came within SPIN of the batch before it), the
/// thread polls for up to SPIN after each batch; when they come further apart, it sleeps at once and
/// spends nothing waiting. A poll that runs out costs SPIN once and stops the polling until datagrams
/// come close together again.
#[derive(Default)]
struct IdleSpin {
    /// When the last batch was handled; None after a flood pause, which is not a wait for datagrams.
    idle_since: Option<Instant>,
    polling: bool,
}

impl IdleSpin {
    /// A batch arrived at `now`: whether it came close enough to the last to poll after it.
    fn arrived(&mut self, now: Instant) {
        self.polling = self.idle_since.is_some_and(|since| now.duration_since(since) <= SPIN);
    }

    /// The batch is handled, at `now`; `paused`: the thread paused after it (a flood).
    fn handled(&mut self, now: Instant, paused: bool) {
        self.idle_since = (!paused).then_some(now);
        self.polling &= !paused;
    }

    /// Whether the next receive polls (does not wait); `now` is asked for only while polling.
    fn polls(&mut self, now: impl FnOnce() -> Instant) -> bool {
        if let (true, Some(since)) = (self.polling, self.idle_since) {
            self.polling = now().duration_since(since) < SPIN;
        }
        self.polling
    }
}

/// Runs the handler over one batch. Returns the replies the socket cannot take right now, and whether
/// the handler answered any datagram (returned something other than None, or failed).
fn deliver_batch(
    py: Python<'_>,
    shared: &Arc<UdpShared>,
    socket: &Arc<UdpSocket>,
    batch: &RecvBatch,
    count: usize,
    addresses: &mut AddressCache,
) -> (Vec<(Bytes, ReplyTo)>, bool) {
    let stats = &shared.stats;
    let mut unsent = Vec::new();
    let mut answered = false;
    for i in 0..count {
        if shared.lifecycle.is_stopping() {
            // stop() waits for the handler in progress, not for the rest of the batch.
            break;
        }
        let (data, reply_to, truncated) = batch.datagram(i);
        let Some(reply_to) = reply_to else { continue };
        let sender = reply_to.peer;
        stats.datagrams_in.fetch_add(1, Relaxed);
        stats.bytes_in.fetch_add(data.len() as u64, Relaxed);
        if truncated {
            stats.errors.fetch_add(1, Relaxed);
            log::log(
                py,
                ERROR,
                &format!("datagram from {sender} was larger than {DATAGRAM_ROOM} bytes; dropped"),
                None,
            );
            continue;
        }
        let Some(handler) = shared.on_datagram.as_ref() else {
            continue;
        };
        // The handler's reply is sent before the bytes object is given back, so an echo reuses it.
        let sent = reused_bytes::with_message(py, data, |message| {
            let address = addresses.get(py, sender)?;
            let reply = match call_handler(handler.bind(py), (message, &address)) {
                Ok(reply) if reply.is_none() => return Ok(()),
                reply => {
                    answered = true;
                    reply?
                }
            };
            if is_awaitable(&reply) {
                return hand_to_loop(py, shared, socket, reply_to, &reply);
            }
            with_reply("on_datagram", &reply, |bytes| {
                // Sent when the thread next waits, as the socket makes room.
                if send_reply(py, shared, socket, bytes, reply_to, &address).is_err() {
                    unsent.push((Bytes::copy_from_slice(bytes), reply_to));
                }
            })
        });
        if let Err(err) = sent {
            let excused = server_common::interrupted_at_exit(py, &err);
            report_failure(py, stats, sender, &err, excused);
        }
    }
    (unsent, answered)
}

/// Logs and counts the failure of the handler for a datagram from `peer` (or of its reply), but for
/// an end `excused` as not the handler's fault, which is logged at INFO, as a TcpServer logs it of a
/// connection.
fn report_failure(py: Python<'_>, stats: &Stats, peer: SocketAddr, err: &PyErr, excused: Option<&str>) {
    if let Some(why) = excused {
        log::log(py, INFO, &format!("no reply to a datagram from {peer}: {why}"), None);
        return;
    }
    stats.errors.fetch_add(1, Relaxed);
    log::log(
        py,
        ERROR,
        &format!("handler for a datagram from {peer} failed"),
        Some(err),
    );
}

/// Passes an awaitable `on_datagram` returned to rsock.aio's bridge; its result is sent to `target`.
fn hand_to_loop(
    py: Python<'_>,
    shared: &Arc<UdpShared>,
    socket: &Arc<UdpSocket>,
    target: ReplyTo,
    awaitable: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let bridge = shared
        .async_bridge
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|b| b.clone_ref(py));
    let Some(bridge) = bridge else {
        close_refused_awaitable(py, awaitable);
        return Err(PyTypeError::new_err(
            "on_datagram returned an awaitable; async handlers need rsock.aio.UdpServer, which runs them on the event loop",
        ));
    };
    let Some(slot) = HandlerSlot::take(py, shared) else {
        // The server stopped while the handler waited for its turn: it never runs.
        close_refused_awaitable(py, awaitable);
        return Ok(());
    };
    let reply = DatagramReply {
        shared: shared.clone(),
        socket: socket.clone(),
        target,
        in_flight: Mutex::new(Some((shared.lifecycle.task(), slot))),
        spared_socket: Mutex::new(None),
    };
    call_handler(bridge.bind(py), (awaitable, Py::new(py, reply)?))?;
    Ok(())
}

/// Sends a handler's reply to `target` without waiting, first raising the `socket.sendto` audit event for
/// `address` (its Python form), as the stdlib's sendto() raises it (and so an asyncio server's reply).
/// A reply the socket has no room for now comes back as the error (WouldBlock), for the caller to
/// deal with; one that does not go for another reason is counted and logged.
fn send_reply(
    py: Python<'_>,
    shared: &UdpShared,
    socket: &UdpSocket,
    bytes: &[u8],
    target: ReplyTo,
    address: &Bound<'_, PyAny>,
) -> io::Result<()> {
    if let Err(refused) = audit::no_socket_address(py, c"socket.sendto", address) {
        reply_not_sent(py, shared, target.peer, "an audit hook refused it", Some(&refused));
        return Ok(());
    }
    match send_now(shared, socket, bytes, target) {
        Ok(n) => shared.stats.sent(n),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
        Err(err) => reply_not_sent(py, shared, target.peer, &send_failure(&err, bytes.len()), None),
    }
    Ok(())
}

/// A reply the handler made that did not go (an audit hook refused it, the socket would not send it):
/// counted and logged as the reply's failure, not the handler's.
fn reply_not_sent(py: Python<'_>, shared: &UdpShared, peer: SocketAddr, why: &str, exc: Option<&PyErr>) {
    shared.stats.errors.fetch_add(1, Relaxed);
    log::log(
        py,
        ERROR,
        &format!("reply to a datagram from {peer} not sent: {why}"),
        exc,
    );
}

/// Why the socket would not send a reply of `len` bytes.
fn send_failure(err: &io::Error, len: usize) -> String {
    if err.raw_os_error() == Some(libc::EMSGSIZE) {
        format!("its {len} bytes are more than a UDP datagram can carry")
    } else {
        err.to_string()
    }
}

/// Sends one datagram without waiting for room in the socket's buffer. A reply made after stop()
/// gave up the port fails on the stand-in socket with EINVAL; the error says what happened instead.
fn send_now(shared: &UdpShared, socket: &UdpSocket, data: &[u8], target: ReplyTo) -> io::Result<usize> {
    let sent = reply_source::send(socket.as_raw_fd(), data, target.peer, target.source, libc::MSG_DONTWAIT);
    if sent.is_err() && shared.lifecycle.released() {
        return Err(io::Error::other(
            "stop() timed out while the handler ran, and gave up the port",
        ));
    }
    sent
}

/// The receive thread's loop, until the server stops. stop() wakes a recvmmsg waiting for datagrams
/// by shutting the socket down for reading. That acts on the socket itself, which a process forked
/// after the server was made shares: where the socket may be shared (this process did not make it),
/// the wait is cut into slices instead, between which the loop looks for stop().
fn serve_datagrams(shared: &Arc<UdpShared>, socket: &Arc<UdpSocket>) {
    let made_here = shared.made_in == runtime::fork_generation();
    let kind = server_common::PortSocket::Datagram {
        wake_at_stop: made_here,
    };
    shared.lifecycle.hold_port(socket, kind);
    let prepared = socket.set_nonblocking(false).and_then(|()| {
        if made_here {
            Ok(())
        } else {
            socket.set_read_timeout(Some(SHARED_WAIT_SLICE))
        }
    });
    if let Err(err) = prepared {
        runtime::with_gil(|py| log::log(py, ERROR, &format!("cannot serve datagrams: {err}"), None));
        return;
    }
    let fd = socket.as_raw_fd();
    // Pauses end when asked: the default timer slack (50 µs) would stretch each by up to half.
    // SAFETY: PR_SET_TIMERSLACK takes a number and acts on the calling thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, FLOOD_PAUSE_SLACK_NS) };
    let receive_buffer = socket2::SockRef::from(&**socket).recv_buffer_size().unwrap_or(0);
    let bound_to_every_address = socket.local_addr().is_ok_and(reply_source::every_address);
    let mut batch = RecvBatch::new(bound_to_every_address);
    let mut addresses = AddressCache::default();
    let mut pacer = FloodPacer::new(receive_buffer);
    let mut spin = IdleSpin::default();
    while !shared.lifecycle.is_stopping() {
        let flags = if spin.polls(Instant::now) {
            libc::MSG_DONTWAIT
        } else {
            0
        };
        match batch.receive(fd, flags) {
            Ok(count) => {
                spin.arrived(Instant::now());
                let (unsent, answered) =
                    runtime::with_gil(|py| deliver_batch(py, shared, socket, &batch, count, &mut addresses));
                for (reply, target) in unsent {
                    match reply_source::send(fd, &reply, target.peer, target.source, 0) {
                        Ok(n) => shared.stats.sent(n),
                        Err(_) => {
                            shared.stats.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                if batch.shut_down(count) && !shared.lifecycle.is_stopping() {
                    // Another process sharing the socket shut it down: nothing can be received on it.
                    runtime::with_gil(|py| {
                        log::log(
                            py,
                            ERROR,
                            "the datagram socket was shut down for reading; not serving",
                            None,
                        );
                    });
                    break;
                }
                let paused = pacer.after_batch(count, batch.bytes(count), answered);
                if paused {
                    std::thread::sleep(FLOOD_PAUSE);
                }
                spin.handled(Instant::now(), paused);
            }
            Err(err) if matches!(err.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {}
            Err(err) => {
                shared.stats.errors.fetch_add(1, Relaxed);
                runtime::with_gil(|py| log::log(py, ERROR, &format!("receiving datagrams failed: {err}"), None));
                std::thread::sleep(RECEIVE_BACKOFF);
            }
        }
    }
    // The cached addresses are Python objects: released here, with the GIL.
    runtime::with_gil(|_| drop(addresses));
}

/// A UDP server: `on_datagram(data, address)` runs for every datagram, and what it returns
/// (bytes-like) is sent back to the sender. Receiving is batched in Rust; in a one-way flood the
/// receive thread pauses briefly between batches (`FloodPacer`), and while datagrams come close
/// together it polls between them instead of sleeping (`IdleSpin`).
///
/// - `address`: where to bind; None (the default) is 127.0.0.1 on a free port, "" every interface.
/// - `on_datagram(data, address)`: runs on the server's own receive thread; None sends nothing back
///   (anything else that is not bytes-like is the handler's error, a TypeError). A handler that cannot
///   take these two arguments is a TypeError when the server is made.
/// - `reuse_port`: SO_REUSEPORT, for several servers (processes) sharing one port.
#[pyclass(name = "UdpServer", module = "rsock._rsock", subclass, frozen)]
pub struct UdpServer {
    shared: Arc<UdpShared>,
    runner: Runner<std::net::UdpSocket>,
    address: SocketAddr,
}

impl UdpServer {
    /// What a repr says after the class's name (a subclass's repr names the subclass; the finalizer's
    /// warning, with no class object at hand, names the base).
    fn describe(&self) -> String {
        let state = self.runner.state_name();
        format!(
            "{} {state}, {} datagrams",
            self.address,
            self.shared.stats.datagrams_in.load(Relaxed)
        )
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.runner
            .warn_if_never_used(|| crate::display::base_repr::<Self>(&self.describe()));
    }
}

#[pymethods]
impl UdpServer {
    #[new]
    #[pyo3(signature = (address=None, on_datagram=None, *, reuse_port=None),
           text_signature = "(address=None, on_datagram=None, *, reuse_port=False)")]
    fn new(
        py: Python<'_>,
        address: Option<&Bound<'_, PyAny>>,
        on_datagram: Option<Bound<'_, PyAny>>,
        reuse_port: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let reuse_port = crate::args::flag(reuse_port)?;
        let on_datagram = server_common::handler_or_none("on_datagram", on_datagram, &["data", "address"])?;
        let async_handler = server_common::async_handler(py, &[("on_datagram", &on_datagram)])?;
        let address = server_common::default_address(py, address)?;
        let target = endpoint(py, &address, libc::SOCK_DGRAM, libc::AF_UNSPEC)?;
        let socket = server_common::bind_socket(py, target, socket2::Type::DGRAM, reuse_port, &address, |socket| {
            if reply_source::every_address(target) {
                reply_source::report_destinations(socket.as_raw_fd(), target.is_ipv6())?;
            }
            Ok(())
        })?;
        let socket = std::net::UdpSocket::from(socket);
        let local = socket.local_addr().map_err(|e| io_error(&e))?;
        let runner = Runner::new(socket);
        let shared = Arc::new(UdpShared {
            on_datagram,
            async_handler,
            made_in: runtime::fork_generation(),
            stats: Stats::default(),
            lifecycle: runner.lifecycle.clone(),
            async_bridge: Mutex::new(None),
            async_running: Mutex::new(0),
            async_finished: Condvar::new(),
        });
        Ok(UdpServer {
            shared,
            runner,
            address: local,
        })
    }

    /// rsock.aio's hook: `bridge(awaitable, reply_target)` runs what an async `on_datagram` returns.
    fn _set_async_bridge(&self, bridge: Py<PyAny>) {
        *self.shared.async_bridge.lock().unwrap_or_else(|e| e.into_inner()) = Some(bridge);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        server_common::traverse_handlers(
            &visit,
            self.runner.finished(),
            [&self.shared.on_datagram],
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
            self.shared.async_handler,
            &self.shared.async_bridge,
            "rsock.aio.UdpServer",
        )?;
        let shared = self.shared.clone();
        self.runner.start_with(|socket, task| {
            runtime::spawn_python_thread("rsock-udp", task, move || serve_datagrams(&shared, &Arc::new(socket)))
                .map_err(|e| io_error(&e))
        })
    }

    /// Serves until stop() is called or Ctrl-C, which stops the server and propagates.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.runner.serve_forever(py, || self.start(), || self.stop(py, None))
    }

    /// Stops receiving; waits up to `timeout` seconds (default 5) for the handler in progress. One
    /// still running then gives up the port at once (its reply is not sent), and stop() waits at most
    /// one second more for it. Called from this server's own handler it returns at once, and the
    /// socket closes once the handler has returned (and its reply is sent).
    #[pyo3(signature = (timeout=None))]
    fn stop(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let caller = if self.runner.lifecycle.port_held_by_this_thread() {
            StopCaller::ServingThread { give_up_port: false }
        } else {
            StopCaller::Elsewhere
        };
        self.runner.stop(py, timeout, caller, |_spare| {})
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

    /// The address the server is bound to, with the real port when bound to port 0.
    #[getter]
    fn address<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        socket_address_to_py(py, &self.address)
    }

    /// Whether the server is receiving.
    #[getter]
    fn running(&self) -> bool {
        self.runner.running()
    }

    /// Counters: datagrams_in, datagrams_out, bytes_in, bytes_out, errors.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.shared.stats;
        let stats = PyDict::new(py);
        stats.set_item("datagrams_in", s.datagrams_in.load(Relaxed))?;
        stats.set_item("datagrams_out", s.datagrams_out.load(Relaxed))?;
        stats.set_item("bytes_in", s.bytes_in.load(Relaxed))?;
        stats.set_item("bytes_out", s.bytes_out.load(Relaxed))?;
        stats.set_item("errors", s.errors.load(Relaxed))?;
        Ok(stats)
    }

    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let s = &this.shared.stats;
        Ok(crate::display::table(
            &format!("{} {}", crate::display::class_name(slf.as_any())?, this.address),
            &[
                ("state", this.runner.state_name().to_string()),
                ("datagrams in", s.datagrams_in.load(Relaxed).to_string()),
                ("datagrams out", s.datagrams_out.load(Relaxed).to_string()),
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
    m.add_class::<UdpServer>()?;
    m.add_class::<DatagramReply>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pacer for the default receive buffer on Linux (212,992 bytes), and a small datagram's bytes.
    fn pacer() -> FloodPacer {
        FloodPacer::new(212_992)
    }
    const SMALL: usize = 64;

    #[test]
    fn a_one_way_flood_pauses_once_the_socket_is_empty() {
        let mut pacer = pacer();
        assert!(
            !pacer.after_batch(BATCH, BATCH * SMALL, false),
            "a full batch: more are queued, take them now"
        );
        assert!(pacer.after_batch(3, 3 * SMALL, false));
        assert!(
            !pacer.after_batch(3, 3 * SMALL, false),
            "each pause starts a new stretch"
        );
    }

    #[test]
    fn a_stretch_short_of_a_flood_does_not_pause() {
        let mut pacer = pacer();
        assert!(!pacer.after_batch(FLOOD_STRETCH - 1, SMALL, false));
        assert!(!pacer.after_batch(1, SMALL, false));
        assert!(pacer.after_batch(FLOOD_STRETCH, SMALL, false));
    }

    #[test]
    fn a_stretch_with_an_answered_datagram_does_not_pause() {
        let mut pacer = pacer();
        assert!(!pacer.after_batch(BATCH, SMALL, true));
        assert!(!pacer.after_batch(BATCH, SMALL, false));
        assert!(
            !pacer.after_batch(5, SMALL, false),
            "the stretch held an answered datagram"
        );
        assert!(!pacer.after_batch(FLOOD_STRETCH, SMALL, true));
        assert!(
            pacer.after_batch(FLOOD_STRETCH, SMALL, false),
            "an answer counts only for its own stretch"
        );
    }

    /// An IdleSpin whose last batch arrived `gap` after the batch before it was handled, and was
    /// itself handled at `start`.
    fn spin_after(start: Instant, gap: Duration) -> IdleSpin {
        let arrived = start - Duration::from_micros(1);
        let mut spin = IdleSpin::default();
        spin.arrived(arrived - gap);
        spin.handled(arrived - gap, false);
        spin.arrived(arrived);
        spin.handled(start, false);
        spin
    }

    #[test]
    fn datagrams_close_together_are_polled_for_until_spin_runs_out() {
        let start = Instant::now();
        let mut spin = spin_after(start, SPIN / 4);
        assert!(spin.polls(|| start + SPIN / 2));
        assert!(!spin.polls(|| start + SPIN), "the poll ran out");
        assert!(!spin.polls(|| unreachable!("not polling: no clock needed")));
    }

    #[test]
    fn datagrams_far_apart_are_waited_for_at_once() {
        let start = Instant::now();
        let mut spin = spin_after(start, SPIN * 3);
        assert!(!spin.polls(|| unreachable!("not polling: no clock needed")));
        let mut first = IdleSpin::default();
        first.arrived(start);
        first.handled(start, false);
        assert!(!first.polls(|| start), "the first batch has no gap to go by");
    }

    #[test]
    fn a_poll_that_ran_out_polls_again_once_datagrams_come_close() {
        let start = Instant::now();
        let mut spin = spin_after(start, Duration::ZERO);
        assert!(!spin.polls(|| start + SPIN));
        // The next datagram came after the poll ran out: the thread slept for it.
        spin.arrived(start + SPIN * 2);
        spin.handled(start + SPIN * 2, false);
        assert!(!spin.polls(|| start + SPIN * 2));
        spin.arrived(start + SPIN * 2 + SPIN / 2);
        spin.handled(start + SPIN * 3, false);
        assert!(spin.polls(|| start + SPIN * 3));
    }

    #[test]
    fn a_flood_pause_is_not_followed_by_polling() {
        let start = Instant::now();
        let mut spin = spin_after(start, Duration::ZERO);
        spin.arrived(start);
        spin.handled(start + FLOOD_PAUSE, true);
        assert!(!spin.polls(|| start + FLOOD_PAUSE));
        spin.arrived(start + FLOOD_PAUSE);
        spin.handled(start + FLOOD_PAUSE, false);
        assert!(
            !spin.polls(|| start + FLOOD_PAUSE),
            "the pause was no gap between datagrams"
        );
    }

    #[test]
    fn a_batch_filling_a_quarter_of_the_receive_buffer_does_not_pause() {
        let mut pacer = pacer();
        assert!(!pacer.after_batch(FLOOD_STRETCH, 212_992 / 4 + 1, false));
        assert!(pacer.after_batch(FLOOD_STRETCH, 212_992 / 4, false));
    }
}
