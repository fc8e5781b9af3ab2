//! `Poller`: one epoll instance per event loop, through which the loop watches every rsock.aio
//! transport at once. The loop sees a single descriptor (`add_reader` on the epoll fd); when it is
//! readable, one callback serves every transport that is ready, in Rust. Watching each socket with
//! its own `add_reader` cost a selector key, a handle and a Python-level dispatch per socket per
//! wake-up: on asyncio's own loop, most of a microsecond per message.
//!
//! Level-triggered, as `add_reader`/`add_writer` are: what one call leaves unserved (more than a
//! batch of sockets ready) keeps the epoll fd readable, and the loop calls again. The epoll fd exists
//! only while something is watched, so an idle loop holds no descriptor of rsock's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicI32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use super::stream::StreamTransport;
use crate::errors::{last_errno, os_error};
use crate::gil_handoff::{self, Handoff};
use crate::py_lazy::interned;

/// Readiness gathered per callback; more waits for the next one.
const BATCH: usize = 64;

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;

/// Hashes a descriptor with one multiplication (Fibonacci hashing): descriptors are small distinct
/// numbers chosen by the kernel, not by a peer, so the default SipHash buys nothing on a lookup made
/// for every readiness event.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, fd: i32) {
        self.0 = (fd as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ByFd<V> = HashMap<i32, V, BuildHasherDefault<FdHasher>>;

#[pyclass(module = "rsock._rsock", name = "Poller", frozen, weakref)]
pub struct Poller {
    /// The epoll fd while anything is watched, else -1.
    epoll: AtomicI32,
    event_loop: Py<PyAny>,
    /// A Future of the loop, finished with None: what a transport's completion hands the tasks'
    /// wake-ups (see `waiter::Run::Now`).
    resolved: Py<PyAny>,
    /// The loop's callback, `self._on_ready`, kept for add_reader.
    on_ready: Mutex<Option<Py<PyAny>>>,
    /// The transports being watched, by descriptor: each is held while it is.
    watched: Mutex<ByFd<Py<StreamTransport>>>,
    /// Lets a thread waiting for the GIL have it while the transports keep the loop busy (see
    /// `gil_handoff`); the loop's thread lets go of it only in select(), which returns at once then.
    handoff: Mutex<Handoff>,
}

impl Poller {
    fn watched(&self) -> MutexGuard<'_, ByFd<Py<StreamTransport>>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Only the loop's thread serves, so the lock is never waited for.
    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `fd` for `interest` (READABLE | WRITABLE; 0 stops watching it). The loop watches the
    /// epoll fd while anything is watched here. `transport` is needed to start watching (it is held meanwhile), not to stop.
    pub fn watch(
        &self,
        py: Python<'_>,
        fd: i32,
        interest: u32,
        transport: Option<&Py<StreamTransport>>,
    ) -> PyResult<()> {
        let (op, was_empty, is_empty) = {
            let mut watched = self.watched();
            let was_empty = watched.is_empty();
            let op = match (interest, transport) {
                (0, _) => match watched.remove(&fd) {
                    Some(_) => libc::EPOLL_CTL_DEL,
                    None => return Ok(()),
                },
                (_, None) => return Ok(()),
                (_, Some(transport)) => match watched.insert(fd, transport.clone_ref(py)) {
                    Some(_) => libc::EPOLL_CTL_MOD,
                    None => libc::EPOLL_CTL_ADD,
                },
            };
            (op, was_empty, watched.is_empty())
        };
        if op == libc::EPOLL_CTL_ADD && self.epoll.load(Relaxed) < 0 {
            // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if epoll < 0 {
                let errno = last_errno();
                self.watched().remove(&fd);
                return Err(os_error(errno));
            }
            self.epoll.store(epoll, Relaxed);
        }
        if let Err(errno) = self.control(op, fd, interest) {
            // A descriptor closed while watched left the epoll set by itself: stopping is done, and a
            // new socket given its number is added afresh.
            let gone = matches!(errno, libc::EBADF | libc::ENOENT);
            match op {
                libc::EPOLL_CTL_DEL if gone => {}
                libc::EPOLL_CTL_MOD if errno == libc::ENOENT => {
                    self.control(libc::EPOLL_CTL_ADD, fd, interest).map_err(|errno| {
                        self.watched().remove(&fd);
                        os_error(errno)
                    })?;
                }
                _ => {
                    if op != libc::EPOLL_CTL_DEL {
                        self.watched().remove(&fd);
                    }
                    return Err(os_error(errno));
                }
            }
        }
        let event_loop = self.event_loop.bind(py);
        let epoll = self.epoll.load(Relaxed);
        if was_empty && !is_empty {
            let on_ready = self
                .on_ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.clone_ref(py));
            event_loop.call_method1(interned!(py, "add_reader"), (epoll, on_ready))?;
        } else if !was_empty && is_empty {
            // The loop lets go of the descriptor before it is closed (and its number reused).
            let removed = event_loop.call_method1(interned!(py, "remove_reader"), (epoll,));
            self.close_epoll();
            removed?;
        }
        Ok(())
    }

    fn control(&self, op: i32, fd: i32, interest: u32) -> Result<(), i32> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: fd as u64,
        };
        // SAFETY: plain integers and an event that lives for the call.
        if unsafe { libc::epoll_ctl(self.epoll.load(Relaxed), op, fd, &mut event) } < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn close_epoll(&self) {
        let epoll = self.epoll.swap(-1, Relaxed);
        if epoll >= 0 {
            // SAFETY: a descriptor this poller created and nothing else closes.
            unsafe { libc::close(epoll) };
        }
    }

    /// Serves every transport that is ready (a batch at a time).
    fn serve_ready(&self, py: Python<'_>) -> PyResult<()> {
        let epoll = self.epoll.load(Relaxed);
        if epoll < 0 {
            // Nothing is watched any more (the loop had already found the descriptor ready).
            return Ok(());
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: `events` has room for BATCH entries; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), BATCH as i32, 0) };
        if n < 0 {
            let errno = last_errno();
            return if errno == libc::EINTR {
                Ok(())
            } else {
                Err(os_error(errno))
            };
        }
        for event in &events[..n as usize] {
            let (fd, ready) = (event.u64 as i32, event.events);
            // Looked up now: an earlier transport of this batch may have stopped watching it.
            let Some(transport) = self.watched().get(&fd).map(|t| t.clone_ref(py)) else {
                continue;
            };
            // Errors and hang-ups wake both directions, as the loop's selectors report them.
            let trouble = ready & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            let served = StreamTransport::serve(
                transport.bind(py),
                ready & READABLE != 0 || trouble,
                ready & WRITABLE != 0 || trouble,
                self.resolved.bind(py),
            );
            match served {
                // Level-triggered: what is left of this batch is found again when the loop next runs.
                Err(err) if super::stops_the_loop(py, &err) => return Err(err),
                Err(err) => self.report(py, err)?,
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Reports an exception a transport's callback raised, as the loop reports a failing callback's.
    fn report(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        let context = PyDict::new(py);
        context.set_item("message", "Exception in an rsock.aio transport's I/O callback")?;
        context.set_item("exception", err.into_value(py))?;
        self.event_loop
            .bind(py)
            .call_method1(interned!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }
}

#[pymethods]
impl Poller {
    #[new]
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = event_loop.py();
        super::import_asyncio_exceptions(py);
        let resolved = event_loop.call_method0(interned!(py, "create_future"))?;
        resolved.call_method1(interned!(py, "set_result"), (py.None(),))?;
        Ok(Poller {
            epoll: AtomicI32::new(-1),
            event_loop: event_loop.clone().unbind(),
            resolved: resolved.unbind(),
            on_ready: Mutex::new(None),
            watched: Mutex::new(ByFd::default()),
            handoff: Mutex::new(Handoff::new(Instant::now())),
        })
    }

    /// Called once after construction: the callback the loop will run.
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let on_ready = slf.getattr(interned!(slf.py(), "_on_ready"))?.unbind();
        *slf.get().on_ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(on_ready);
        Ok(())
    }

    /// The loop's callback for the epoll fd: serves every transport that is ready (a batch at a time).
    fn _on_ready(&self, py: Python<'_>) -> PyResult<()> {
        if self.handoff().due(Instant::now()) {
            let others_ran = py.detach(gil_handoff::hand_over);
            self.handoff().handed_over(Instant::now(), others_ran);
        }
        let served = self.serve_ready(py);
        self.handoff().let_go(Instant::now());
        served
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.resolved)?;
        if let Ok(on_ready) = self.on_ready.try_lock() {
            visit.call(&*on_ready)?;
        }
        if let Ok(watched) = self.watched.try_lock() {
            for transport in watched.values() {
                visit.call(transport)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.on_ready.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.watched().clear();
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.close_epoll();
    }
}
