//! `Turns`: how threads sharing a client take turns at sending, reading or a whole request. A turn is
//! waited for as the socket's own calls wait: with the GIL released, Ctrl-C let through, within the
//! client's timeout, and ended by `close()`. The thread that has the turn may not take it again
//! (a signal handler sending in the middle of a send would land inside its message): that is a
//! RuntimeError, as a reentrant call into Python's buffered files is, except where the holder opens
//! its turn to its own callbacks (sendfile's progress callback may send on the same client).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors::{os_error, timeout_error};

/// How long one wait lasts before signals, the deadline and the client's state are looked at again.
const SLICE: Duration = Duration::from_millis(50);

pub struct Turns {
    holder: Mutex<Holder>,
    freed: Condvar,
    /// What the turn is for, in the error a reentrant call gets ("a send of this TcpClient").
    what: &'static str,
}

#[derive(Default)]
struct Holder {
    owner: Option<ThreadId>,
    depth: usize,
    /// The owner may take the turn again (while it runs its own callbacks).
    open: bool,
    /// Threads waiting for the turn: giving it back signals `freed` only for them (a signal is a
    /// futex syscall even with nobody waiting).
    waiting: usize,
}

/// A turn, given back when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
}

impl Turns {
    pub fn new(what: &'static str) -> Self {
        Turns {
            holder: Mutex::new(Holder::default()),
            freed: Condvar::new(),
            what,
        }
    }

    fn holder(&self) -> MutexGuard<'_, Holder> {
        self.holder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn for this thread if it is free (or open to it); never waits. Err when this thread
    /// holds it closed.
    fn try_take(&self, holder: &mut Holder, me: ThreadId) -> PyResult<bool> {
        match holder.owner {
            None => {
                holder.owner = Some(me);
                holder.depth = 1;
                holder.open = false;
                Ok(true)
            }
            Some(owner) if owner == me && holder.open => {
                holder.depth += 1;
                Ok(true)
            }
            Some(owner) if owner == me => Err(self.reentrant()),
            Some(_) => Ok(false),
        }
    }

    /// RuntimeError if this thread holds the turn closed, as taking it would give; else nothing. For a
    /// call that will take the turn only after it has done something that cannot be undone (request()
    /// reads its reply after sending): a reentrant call must be refused before that.
    pub fn refuse_reentry(&self) -> PyResult<()> {
        let holder = self.holder();
        if holder.owner == Some(std::thread::current().id()) && !holder.open {
            return Err(self.reentrant());
        }
        Ok(())
    }

    fn reentrant(&self) -> PyErr {
        PyRuntimeError::new_err(format!("reentrant call inside {}", self.what))
    }

    /// Waits for a turn: TimeoutError once `timeout` has passed, OSError(EBADF) once `closed()` says
    /// so, and what a signal handler raises (KeyboardInterrupt).
    pub fn take(&self, py: Python<'_>, timeout: Option<Duration>, closed: impl Fn() -> bool) -> PyResult<Turn<'_>> {
        let me = std::thread::current().id();
        // The holder's lock is only ever held for a few instructions: taking it with the GIL is safe.
        if self.try_take(&mut self.holder(), me)? {
            return Ok(Turn { turns: self });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Another thread holds the turn: waiting cannot meet a turn of this thread's own.
            let taken = py.detach(|| {
                let mut holder = self.holder();
                if holder.owner.is_none() {
                    return self.try_take(&mut holder, me).unwrap_or(false);
                }
                // Checked and waited for under the one lock: a turn given back in between is not missed.
                holder.waiting += 1;
                let (mut holder, _) = self
                    .freed
                    .wait_timeout(holder, SLICE)
                    .unwrap_or_else(|e| e.into_inner());
                holder.waiting -= 1;
                holder.owner.is_none() && self.try_take(&mut holder, me).unwrap_or(false)
            });
            if taken {
                return Ok(Turn { turns: self });
            }
            py.check_signals()?;
            if closed() {
                return Err(os_error(libc::EBADF));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timeout_error());
            }
        }
    }
}

impl Turn<'_> {
    /// Runs `f` (the holder's own callback) with the turn open to this thread.
    pub fn open_during<R>(&self, f: impl FnOnce() -> R) -> R {
        let was_open = std::mem::replace(&mut self.turns.holder().open, true);
        let result = f();
        self.turns.holder().open = was_open;
        result
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut holder = self.turns.holder();
        holder.depth -= 1;
        if holder.depth == 0 {
            holder.owner = None;
            if holder.waiting > 0 {
                drop(holder);
                self.turns.freed.notify_one();
            }
        }
    }
}
