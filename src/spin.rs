//! Polling before sleeping. A thread that sleeps until data comes pays for the sleep and for the
//! wake-up that ends it: microseconds of CPU and latency each time (on a VM, an exit to the host).
//! A reply from a server on the same machine, or the next request of a client waiting for each
//! reply, often comes sooner than that. So rsock's own clients, TcpServer's io thread while a lone
//! client's requests come close together, and UdpServer between close datagrams (`IdleSpin` in
//! udp/server.rs) try again without sleeping for a while before they sleep. The drop-in socket
//! never does: it makes the stdlib's syscalls.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long a server polls for the next request while they come close together (UdpServer's receive
/// thread, TcpServer's io thread): a client that has its reply sends its next request within
/// microseconds.
pub(crate) const SPIN: Duration = Duration::from_micros(20);

/// How long a client's receive polls for its reply. Longer than SPIN: the reply may need the server
/// to wake up first. (Request loops on loopback, 64 B, against rsock's servers: 20 µs caught too few
/// TCP replies to matter, 50 µs served 2-3x the TCP and 10x the UDP round trips at less client CPU
/// each, 100 µs no more.)
pub(crate) const REPLY_SPIN: Duration = Duration::from_micros(50);

/// When a client's receive polls before sleeping: when the receive before it got its data within
/// REPLY_SPIN, however it waited (a server on this machine). Once a wait takes longer (a remote or
/// slow peer), the next receive sleeps at once, and polling starts again only after a wait that was
/// short after all: a slow peer costs one poll that runs out, not one per receive. (Probing now and
/// then instead, after waits that ran long, left a client and UdpServer both sleeping: each side,
/// sleeping, answers too late for the other's poll.)
pub(crate) struct ReplySpin {
    last_wait_short: AtomicBool,
}

impl Default for ReplySpin {
    fn default() -> Self {
        ReplySpin {
            last_wait_short: AtomicBool::new(true),
        }
    }
}

impl ReplySpin {
    /// How long this receive may poll (zero: it sleeps at once).
    pub(crate) fn budget(&self) -> Duration {
        if self.last_wait_short.load(Relaxed) {
            REPLY_SPIN
        } else {
            Duration::ZERO
        }
    }

    /// A receive got its data after `waited` (polling, sleeping, or both).
    pub(crate) fn waited(&self, waited: Duration) {
        self.last_wait_short.store(waited <= REPLY_SPIN, Relaxed);
    }
}

/// Reads this close together make the io thread poll after them. Twice SPIN: the gap includes the io
/// thread's own wake-up when it slept.
const READS_WITHIN: Duration = Duration::from_micros(40);

/// The io thread's polling: while it is set, a task on the io thread yields instead of waiting, and
/// the runtime, finding only that task ready, polls its reactor without sleeping (epoll_wait with no
/// timeout) rather than parking.
struct IoPolling {
    /// When a connection task last handled data.
    last_read: Option<Instant>,
    /// Poll the reactor until then.
    until: Option<Instant>,
    /// The polling task's waker while it waits for the next close read (`read_handled`).
    waker: Option<std::task::Waker>,
    started: bool,
}

thread_local! {
    static IO_POLLING: std::cell::RefCell<IoPolling> = const {
        std::cell::RefCell::new(IoPolling { last_read: None, until: None, waker: None, started: false })
    };
}

/// Called on the io thread after a connection task handled data. When the data before came within
/// READS_WITHIN (a client that sends its next request as soon as it has its reply), the thread polls
/// its reactor for up to SPIN from now before it parks, so that the next request is served without a
/// wake-up; reads further apart are waited for asleep.
pub(crate) fn read_handled() {
    IO_POLLING.with_borrow_mut(|polling| {
        let now = Instant::now();
        let close = reads_close(polling.last_read, now);
        polling.last_read = Some(now);
        if !close {
            return;
        }
        polling.until = Some(now + SPIN);
        if let Some(waker) = polling.waker.take() {
            waker.wake();
        } else if !polling.started {
            polling.started = true;
            crate::runtime::spawn_here(poll_io_thread());
        }
    });
}

/// Whether a read at `now` came close enough after the one at `last` for the io thread to poll.
fn reads_close(last: Option<Instant>, now: Instant) -> bool {
    last.is_some_and(|last| now.duration_since(last) <= READS_WITHIN)
}

/// The io thread's polling task, for as long as the thread lives.
async fn poll_io_thread() {
    loop {
        std::future::poll_fn(|cx| {
            IO_POLLING.with_borrow_mut(|polling| match polling.until {
                Some(until) if Instant::now() < until => std::task::Poll::Ready(()),
                _ => {
                    polling.until = None;
                    polling.waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            })
        })
        .await;
        tokio::task::yield_now().await;
    }
}

/// Calls `op`, which must not block (MSG_DONTWAIT), on the descriptor in `fd` until it does anything
/// but EWOULDBLOCK or `budget` has passed: None when nothing came in time, or the call was interrupted
/// or the socket closed (the caller's usual wait then deals with it).
pub(crate) fn poll_for<T>(
    fd: &AtomicI32,
    budget: Duration,
    op: &mut impl FnMut(RawFd) -> io::Result<T>,
) -> Option<io::Result<T>> {
    let deadline = Instant::now() + budget;
    loop {
        // Read afresh each time: another thread may close the socket meanwhile.
        let current = fd.load(Relaxed);
        if current < 0 {
            return None;
        }
        match op(current) {
            Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => return None,
            done => return Some(done),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_polls_when_the_wait_before_it_was_short() {
        let spin = ReplySpin::default();
        assert_eq!(spin.budget(), REPLY_SPIN, "a new client polls");
        spin.waited(REPLY_SPIN / 2);
        assert_eq!(spin.budget(), REPLY_SPIN);
        spin.waited(REPLY_SPIN * 3);
        assert_eq!(spin.budget(), Duration::ZERO, "a slow reply: sleep at once");
        assert_eq!(spin.budget(), Duration::ZERO, "until a wait is short again");
        spin.waited(REPLY_SPIN);
        assert_eq!(spin.budget(), REPLY_SPIN);
    }

    #[test]
    fn poll_for_stops_at_data_at_an_error_or_at_the_budget() {
        let fd = AtomicI32::new(3);
        let mut calls = 0;
        let got = poll_for(&fd, Duration::from_secs(5), &mut |_| {
            calls += 1;
            if calls < 3 {
                Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK))
            } else {
                Ok(7)
            }
        });
        assert_eq!((got.map(Result::unwrap), calls), (Some(7), 3));
        let failed = poll_for(&fd, Duration::from_secs(5), &mut |_| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ECONNRESET))
        });
        assert_eq!(failed.unwrap().unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
        let start = Instant::now();
        let nothing = poll_for(&fd, Duration::from_millis(2), &mut |_| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK))
        });
        assert!(nothing.is_none() && start.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn the_io_thread_polls_after_reads_that_come_close_together() {
        let now = Instant::now();
        assert!(!reads_close(None, now), "the first read: no gap to go by");
        assert!(reads_close(Some(now - READS_WITHIN / 2), now));
        assert!(reads_close(Some(now - READS_WITHIN), now));
        assert!(
            !reads_close(Some(now - READS_WITHIN * 2), now),
            "reads far apart are waited for asleep"
        );
    }

    #[test]
    fn poll_for_leaves_a_closed_socket_to_the_usual_wait() {
        let fd = AtomicI32::new(-1);
        assert!(
            poll_for(&fd, SPIN, &mut |_| -> io::Result<()> {
                unreachable!("closed: not called")
            })
            .is_none()
        );
    }
}
