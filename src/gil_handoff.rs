//! Letting a thread that waits for the GIL have it while one of rsock's threads is kept busy.
//!
//! A thread waiting for the GIL asks the holder to let go once it has waited CPython's switch interval
//! (5 ms). But every release wakes it and starts that wait over, and a busy thread that takes the GIL
//! back within microseconds (the event loop's thread between select() calls, rsock's io thread between
//! parks) always gets there first. Under steady load such releases came often enough that the waiting
//! thread never asked, and waited up to a second: the main thread's signal handlers (Ctrl-C) behind a
//! busy TcpServer, an executor's getaddrinfo behind rsock.aio's streams.
//!
//! So a thread that has held or retaken the GIL without a pause for `interval` lets go of it for
//! `HAND_OVER_FOR` before taking it again. Whether another thread of the process ran meanwhile (its CPU
//! time) tells whether one was waiting: then the interval goes back to the switch interval, else it
//! doubles, up to `LONGEST`, so that a process whose other threads sleep loses almost nothing. A take
//! of the GIL that had to wait for it (another thread held it) also brings the interval back.

use std::time::{Duration, Instant};

/// The first interval: CPython's default switch interval.
const SHORTEST: Duration = Duration::from_millis(5);
/// How long the interval grows while no other thread is seen holding the GIL: a waiting thread's
/// longest wait, and 0.5% of a busy thread's time when none waits.
const LONGEST: Duration = Duration::from_millis(20);
/// How long the GIL is let go: a woken thread's wake-up on the other core, with room to spare.
const HAND_OVER_FOR: Duration = Duration::from_micros(100);
/// A pause of this long without the GIL means a waiting thread had its chance: a new stretch begins.
const PAUSE: Duration = Duration::from_millis(1);
/// Taking the GIL takes about a microsecond when nobody holds it; longer means another thread held it.
const HELD_BY_ANOTHER: Duration = Duration::from_micros(10);
/// CPU time of the process's other threads during a hand-over that says one of them ran.
const OTHERS_RAN: Duration = Duration::from_micros(5);

#[derive(Clone, Copy, Debug)]
pub struct Handoff {
    /// When the current stretch without a pause began.
    busy_since: Instant,
    /// When the GIL was last let go (a release, or the end of a service).
    let_go: Instant,
    interval: Duration,
}

impl Handoff {
    pub fn new(now: Instant) -> Self {
        Handoff {
            busy_since: now,
            let_go: now,
            interval: SHORTEST,
        }
    }

    /// The GIL was let go at `now`.
    pub fn let_go(&mut self, now: Instant) {
        self.let_go = now;
    }

    /// Whether to let go of the GIL for `HAND_OVER_FOR` before taking it (or going on with it) at
    /// `now`: the stretch without a pause has lasted the interval. A pause starts a new stretch.
    pub fn due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.let_go) > PAUSE {
            self.busy_since = now;
        }
        now.duration_since(self.busy_since) >= self.interval
    }

    /// After a hand-over that ended at `now`: whether another thread ran during it.
    pub fn handed_over(&mut self, now: Instant, others_ran: bool) {
        self.interval = if others_ran {
            SHORTEST
        } else {
            (self.interval * 2).min(LONGEST)
        };
        self.busy_since = now;
    }

    /// After a take of the GIL that took `waited`.
    pub fn took(&mut self, waited: Duration) {
        if waited > HELD_BY_ANOTHER {
            self.interval = SHORTEST;
        }
    }
}

/// Sleeps for `HAND_OVER_FOR` (the caller not holding the GIL); returns whether another thread of the
/// process ran meanwhile.
pub fn hand_over() -> bool {
    let (process, thread) = (
        cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID),
        cpu_time(libc::CLOCK_THREAD_CPUTIME_ID),
    );
    std::thread::sleep(HAND_OVER_FOR);
    let process = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(process);
    let thread = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(thread);
    process.saturating_sub(thread) > OTHERS_RAN
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves from `start` in steps of 20 µs without a pause; the hand-over must fall due after the
    /// switch interval, within a step or two.
    fn assert_due_after_the_switch_interval(handoff: &mut Handoff, start: Instant) {
        let mut now = start;
        while !handoff.due(now) {
            handoff.let_go(now);
            now += Duration::from_micros(20);
        }
        let busy = now.duration_since(start);
        assert!(
            busy >= SHORTEST && busy < SHORTEST + Duration::from_micros(40),
            "{busy:?}"
        );
    }

    #[test]
    fn due_after_the_switch_interval_without_a_pause() {
        let start = Instant::now();
        let mut handoff = Handoff::new(start);
        assert_due_after_the_switch_interval(&mut handoff, start);
    }

    #[test]
    fn a_pause_starts_a_new_stretch() {
        let start = Instant::now();
        let mut handoff = Handoff::new(start);
        handoff.let_go(start + SHORTEST - Duration::from_micros(10));
        assert!(!handoff.due(start + SHORTEST + PAUSE));
    }

    #[test]
    fn the_interval_grows_while_no_other_thread_runs_and_shrinks_when_one_does() {
        let start = Instant::now();
        let mut handoff = Handoff::new(start);
        let mut now = start;
        for expected in [10, 20, 20] {
            handoff.handed_over(now, false);
            assert_eq!(handoff.interval, Duration::from_millis(expected));
            now += Duration::from_millis(1);
        }
        handoff.took(Duration::from_micros(1));
        assert_eq!(handoff.interval, LONGEST, "a take that did not wait changes nothing");
        handoff.took(Duration::from_micros(200));
        assert_eq!(handoff.interval, SHORTEST);
        handoff.handed_over(now, false);
        handoff.handed_over(now, true);
        assert_eq!(handoff.interval, SHORTEST);
        assert_due_after_the_switch_interval(&mut handoff, now);
    }

    #[test]
    fn a_hand_over_sees_another_thread_run() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = {
            let stop = stop.clone();
            std::thread::spawn(move || while !stop.load(std::sync::atomic::Ordering::Relaxed) {})
        };
        let ran = (0..20).any(|_| hand_over());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinning.join().unwrap();
        assert!(ran);
    }
}
