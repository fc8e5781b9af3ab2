//! Letting other threads take the GIL while the event loop's thread is kept busy by rsock's transports.
//!
//! The loop's thread holds the GIL while the poller serves transports, and lets go of it only in the
//! loop's select(), which returns at once while anything is ready. A thread waiting for the GIL asks the
//! holder to let go once it has waited CPython's switch interval, but every release wakes it and starts
//! that wait over, and the loop's thread takes the GIL back before the woken thread can: under steady
//! rsock-to-rsock traffic in one loop, releases a few microseconds apart kept another thread waiting up
//! to a second (an executor's getaddrinfo, `asyncio.to_thread`, a sync server's handler). So once the
//! loop has served for a switch interval without a pause, and another thread exists, its thread lets go
//! of the GIL for long enough that a waiting thread, woken on either core, takes it.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// How long the loop may serve before another thread gets its turn: CPython's default switch interval.
const BUSY_FOR: Duration = Duration::from_millis(5);
/// How long the GIL is let go: a woken thread's wake-up on the other core, with room to spare.
const HAND_OVER_FOR: Duration = Duration::from_micros(100);
/// A gap between two services longer than this means the loop waited in select(): whoever wanted the
/// GIL had it meanwhile.
const PAUSE: Duration = Duration::from_millis(1);

static ACTIVE_COUNT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub struct Handoff {
    /// When the loop's current stretch of serving began.
    busy_since: Instant,
    /// When the last service ended.
    served: Instant,
}

impl Handoff {
    pub fn new() -> Self {
        let now = Instant::now();
        Handoff {
            busy_since: now,
            served: now,
        }
    }

    /// Whether the GIL should be let go before this service: the loop has served for `BUSY_FOR`
    /// without a pause. Starts a new stretch when it has.
    fn due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.served) > PAUSE {
            self.busy_since = now;
        }
        let due = now.duration_since(self.busy_since) >= BUSY_FOR;
        if due {
            self.busy_since = now;
        }
        due
    }

    /// Called before a service, with the GIL; lets go of it for a moment when due and another thread
    /// exists that could be waiting for it.
    pub fn before_serving(&mut self, py: Python<'_>) {
        if self.due(Instant::now()) && other_threads(py) {
            py.detach(|| std::thread::sleep(HAND_OVER_FOR));
        }
    }

    pub fn after_serving(&mut self) {
        self.served = Instant::now();
    }
}

/// Whether Python knows of a thread besides this one (`threading.active_count()`).
fn other_threads(py: Python<'_>) -> bool {
    let count = ACTIVE_COUNT
        .get_or_try_init(py, || {
            py.import("threading")?.getattr("active_count").map(Bound::unbind)
        })
        .and_then(|active_count| active_count.call0(py)?.extract::<usize>(py));
    // Unknown (threading unavailable at interpreter exit): as if there were.
    count.map_or(true, |count| count > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gil_is_let_go_after_serving_without_a_pause_for_the_switch_interval() {
        let start = Instant::now();
        let mut handoff = Handoff {
            busy_since: start,
            served: start,
        };
        let mut now = start;
        while now.duration_since(start) < BUSY_FOR {
            assert!(!handoff.due(now));
            handoff.served = now;
            now += Duration::from_micros(20);
        }
        assert!(handoff.due(now));
        handoff.served = now;
        assert!(!handoff.due(now + Duration::from_micros(20)), "a new stretch begins");
    }

    #[test]
    fn a_pause_in_select_starts_a_new_stretch() {
        let start = Instant::now();
        let mut handoff = Handoff {
            busy_since: start,
            served: start + BUSY_FOR - Duration::from_micros(10),
        };
        assert!(!handoff.due(start + BUSY_FOR + PAUSE));
    }
}
