//! `Turns`: how threads sharing a client take turns at sending, reading or a whole request. A turn is
//! waited for as the socket's own calls wait: with the GIL released, Ctrl-C let through, within the
//! client's timeout, and ended by `close()`. The thread that has the turn may take it again (a
//! sendfile progress callback that sends on the same client), so a client never deadlocks on itself.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors::{os_error, timeout_error};

/// How long one wait lasts before signals, the deadline and the client's state are looked at again.
const SLICE: Duration = Duration::from_millis(50);

pub struct Turns {
    holder: Mutex<Holder>,
    freed: Condvar,
}

#[derive(Default)]
struct Holder {
    owner: Option<ThreadId>,
    depth: usize,
}

/// A turn, given back when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
}

impl Turns {
    pub fn new() -> Self {
        Turns {
            holder: Mutex::new(Holder::default()),
            freed: Condvar::new(),
        }
    }

    fn holder(&self) -> MutexGuard<'_, Holder> {
        self.holder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn for this thread if it is free (or this thread's already); never waits.
    fn try_take(holder: &mut Holder, me: ThreadId) -> bool {
        match holder.owner {
            None => {
                *holder = Holder {
                    owner: Some(me),
                    depth: 1,
                };
                true
            }
            Some(owner) if owner == me => {
                holder.depth += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Waits for a turn: TimeoutError once `timeout` has passed, OSError(EBADF) once `closed()` says
    /// so, and what a signal handler raises (KeyboardInterrupt).
    pub fn take(&self, py: Python<'_>, timeout: Option<Duration>, closed: impl Fn() -> bool) -> PyResult<Turn<'_>> {
        let me = std::thread::current().id();
        // The holder's lock is only ever held for a few instructions: taking it with the GIL is safe.
        if Self::try_take(&mut self.holder(), me) {
            return Ok(Turn { turns: self });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let taken = py.detach(|| {
                let mut holder = self.holder();
                if Self::try_take(&mut holder, me) {
                    return true;
                }
                // Checked and waited for under the one lock: a turn given back in between is not missed.
                let (mut holder, _) = self
                    .freed
                    .wait_timeout(holder, SLICE)
                    .unwrap_or_else(|e| e.into_inner());
                Self::try_take(&mut holder, me)
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

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut holder = self.turns.holder();
        holder.depth -= 1;
        if holder.depth == 0 {
            holder.owner = None;
            drop(holder);
            self.turns.freed.notify_one();
        }
    }
}
