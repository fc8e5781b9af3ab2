//! The one tokio runtime behind rsock's servers, and the ways Python waits on it.
//!
//! A current-thread runtime on its own thread ("rsock-io") does all accept/read/write/framing work
//! and calls Python handlers inline: no hand-off between threads per message, and no contention
//! among tokio workers for the GIL. (A UdpServer, one socket and no connections, receives on a
//! thread of its own instead; see udp/server.rs.)
//! The io thread holds a Python thread state for its whole life, so entering Python for a handler
//! only takes the GIL. It keeps the GIL from one handler to the next while the tasks it runs in a
//! row all call Python (ten connections with a request each: one take and one release, not ten),
//! and gives it back as soon as a task runs without Python, after 64 tasks in a row, or before it
//! sleeps: other Python threads (a client in the same process, a notebook) never wait on rsock's
//! I/O, only, as on any event loop's thread, on handlers, which hand the GIL over as Python code does.
//! It is created on first use, never at import. tokio does not survive fork(), so a forked child
//! that uses rsock gets a fresh runtime of its own (the parent's is left untouched).

use std::cell::Cell;
use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// How long a blocking wait sleeps before it runs Python's signal handlers again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Counts forks: a runtime belongs to the generation it was built in.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Serialises runtime creation. A spin flag rather than a Mutex so the fork handler can reset it: a
/// lock held by another thread at fork time would otherwise stay held for ever in the child.
static CREATING: AtomicBool = AtomicBool::new(false);
static CURRENT: AtomicPtr<Runtime> = AtomicPtr::new(ptr::null_mut());
static REGISTER_FORK_HANDLER: Once = Once::new();

struct Runtime {
    handle: Handle,
    generation: u64,
}

thread_local! {
    /// The Python thread state an rsock thread (the io thread, a UDP receive thread) keeps for its
    /// whole life; null on other threads.
    static IO_THREAD_STATE: Cell<*mut pyo3::ffi::PyThreadState> = const { Cell::new(ptr::null_mut()) };
    /// Where that thread's GIL stands.
    static GIL: Cell<Gil> = const { Cell::new(Gil::Released) };
    /// Whether this is the rsock-io thread, which runs the tokio runtime.
    static ON_IO_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Where an rsock thread's GIL stands, as `with_gil` took it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Gil {
    Released,
    /// Held for a `with_gil` call that is running.
    InCall,
    /// Kept by the io thread after a call, with the task polls it was kept over and whether a
    /// `with_gil` call ran in the poll running now. Rust code that runs while the GIL is kept must
    /// not `detach` from pyo3 and call `with_gil` inside: that call would assume a GIL it lacks.
    Kept {
        polls: u8,
        used: bool,
    },
}

/// The io thread keeps the GIL over at most this many task polls in a row: it is then released (and
/// pyo3's queue of objects dropped without it emptied) even under load that never lets the thread
/// sleep.
const KEPT_POLLS: u8 = 64;

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    CREATING.store(false, Ordering::SeqCst);
}

/// Which process this is: 0 in the one that loaded rsock, one more in each forked child (counted
/// from the first call on).
pub fn fork_generation() -> u64 {
    REGISTER_FORK_HANDLER.call_once(|| {
        // SAFETY: registers a handler that only touches atomics, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Acquire)
}

fn current() -> Option<&'static Runtime> {
    let rt = CURRENT.load(Ordering::Acquire);
    // SAFETY: runtimes are leaked, never freed, so a published pointer stays valid.
    let rt = unsafe { rt.as_ref() }?;
    (rt.generation == FORK_GENERATION.load(Ordering::Acquire)).then_some(rt)
}

fn runtime() -> &'static Runtime {
    if let Some(rt) = current() {
        return rt;
    }
    fork_generation();
    while CREATING.swap(true, Ordering::AcqRel) {
        std::hint::spin_loop();
        std::thread::yield_now();
    }
    let rt = current().unwrap_or_else(start_runtime);
    CREATING.store(false, Ordering::Release);
    rt
}

fn start_runtime() -> &'static Runtime {
    let generation = FORK_GENERATION.load(Ordering::Acquire);
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(release_kept_gil)
        .build()
        .expect("building the tokio runtime failed");
    let handle = built.handle().clone();
    let thread = std::thread::Builder::new()
        .name("rsock-io".into())
        .spawn(move || {
            ON_IO_THREAD.set(true);
            hold_python_thread_state();
            built.block_on(std::future::pending::<()>())
        })
        .expect("starting the rsock-io thread failed");
    drop(thread);
    let rt = Box::leak(Box::new(Runtime { handle, generation }));
    CURRENT.store(rt, Ordering::Release);
    rt
}

/// Gives the calling thread a Python thread state for its whole life, and leaves it detached. Without
/// one, every Python::attach would create a thread state and the matching release destroy it again;
/// with one, `with_gil` only takes the GIL. Returns the PyGILState handle that releases it.
fn hold_python_thread_state() -> pyo3::ffi::PyGILState_STATE {
    // SAFETY: the interpreter is initialised (rsock is an extension module); the state is acquired
    // once and the GIL released straight away.
    unsafe {
        let gil = pyo3::ffi::PyGILState_Ensure();
        IO_THREAD_STATE.set(pyo3::ffi::PyEval_SaveThread());
        gil
    }
}

/// Runs `work` on a thread of its own that, like the io thread, keeps a Python thread state while
/// it runs, so its `with_gil` calls only take the GIL. `keep` is dropped only after the thread
/// state is released: a guard whose drop lets stop() (or interpreter exit) go on. A panic in `work`
/// is logged and ends only this thread.
pub fn spawn_python_thread<K: Send + 'static>(
    name: &str,
    keep: K,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let thread_name = name.to_owned();
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
        let gil = hold_python_thread_state();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
            with_gil(|py| {
                let text = format!("internal error: rsock's {thread_name} thread panicked and stopped");
                crate::log::log(py, crate::log::ERROR, &text, None);
            });
        }
        let tstate = IO_THREAD_STATE.replace(ptr::null_mut());
        // SAFETY: takes back this thread's own state, then releases and deletes it.
        unsafe {
            pyo3::ffi::PyEval_RestoreThread(tstate);
            pyo3::ffi::PyGILState_Release(gil);
        }
        drop(keep);
    })?;
    drop(thread);
    Ok(())
}

/// Runs `future` on the rsock-io thread.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().handle.spawn(GilTurns(future))
}

/// An io thread task: after each poll, a GIL the thread kept is given back if the poll ran no
/// Python, or after KEPT_POLLS polls, so Rust-only work (a large transfer, a flush) never holds it.
struct GilTurns<F>(F);

impl<F: Future> Future for GilTurns<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        // SAFETY: the future is never moved out of its pinned wrapper.
        let polled = unsafe { self.map_unchecked_mut(|turns| &mut turns.0) }.poll(cx);
        match after_task_poll(GIL.get()) {
            Some(next) => GIL.set(next),
            None => release_kept_gil(),
        }
        polled
    }
}

/// Where the io thread's GIL goes after a task poll: None when a kept GIL is to be given back.
fn after_task_poll(gil: Gil) -> Option<Gil> {
    match gil {
        Gil::Kept { polls, used: true } if polls < KEPT_POLLS => Some(Gil::Kept {
            polls: polls + 1,
            used: false,
        }),
        Gil::Kept { .. } => None,
        other => Some(other),
    }
}

/// Gives back a GIL the io thread kept after its last call (before it parks, and from GilTurns),
/// first dropping the Python objects pyo3 queued meanwhile: the calls run without pyo3's own attach
/// (it would cost a PyGILState round per call), so what they dropped waits in pyo3's queue.
fn release_kept_gil() {
    if !matches!(GIL.get(), Gil::Kept { .. }) {
        return;
    }
    // A nested attach of pyo3's empties its queue; it is refused (None) only while the interpreter
    // is finalizing, when the queue no longer matters.
    let _ = Python::try_attach(|_| ());
    GIL.set(Gil::Released);
    // SAFETY: the io thread holds the GIL it took in with_gil, with its own thread state.
    unsafe { pyo3::ffi::PyEval_SaveThread() };
}

/// Runs `f` with the GIL. On an rsock thread this restores and saves its own thread state directly,
/// skipping PyGILState's thread-state lookup and release: it runs for every message. The io thread
/// keeps the GIL after the call (see GilTurns and release_kept_gil), and runs `f` without pyo3's
/// attach, so an object `f` drops waits in pyo3's queue until the GIL is given back. The other rsock
/// threads release it at once, and attach through pyo3 inside, which costs only counters, so that a
/// `Py` dropped in `f` is released at once: with nothing calling rsock from Python (as under
/// serve_forever) nothing else would empty pyo3's queue.
pub fn with_gil<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let tstate = IO_THREAD_STATE.get();
    if tstate.is_null() {
        return Python::attach(f);
    }
    match GIL.get() {
        // Nested, perhaps inside a `detach` of pyo3's: pyo3's attach knows which.
        Gil::InCall => return Python::attach(f),
        // SAFETY: tstate is this thread's own state, saved when it last released the GIL.
        Gil::Released => unsafe { pyo3::ffi::PyEval_RestoreThread(tstate) },
        Gil::Kept { .. } => {}
    }
    /// Ends the call, even by a panic: the io thread keeps the GIL, the others give it back.
    struct EndCall(Gil);
    impl Drop for EndCall {
        fn drop(&mut self) {
            if ON_IO_THREAD.get() {
                let polls = match self.0 {
                    Gil::Kept { polls, .. } => polls,
                    _ => 0,
                };
                GIL.set(Gil::Kept { polls, used: true });
            } else {
                GIL.set(Gil::Released);
                // SAFETY: this thread restored its own state above and is saving it exactly once.
                unsafe { pyo3::ffi::PyEval_SaveThread() };
            }
        }
    }
    let _end = EndCall(GIL.replace(Gil::InCall));
    if ON_IO_THREAD.get() {
        // SAFETY: this thread holds the GIL, restored above or kept from an earlier call.
        f(unsafe { Python::assume_attached() })
    } else {
        Python::attach(f)
    }
}

/// Whether the caller is the rsock-io thread: its writes are flushed by tasks it runs itself.
pub fn on_io_thread() -> bool {
    ON_IO_THREAD.get()
}

/// Whether the caller is a thread of rsock's that runs handlers, which must never block waiting on
/// a server it serves.
pub fn on_handler_thread() -> bool {
    !IO_THREAD_STATE.get().is_null()
}

/// A flag one side sets and others wait for, from any thread. The flag itself is an atomic: the lock
/// only orders waiting against waking, so a set latch answers without it.
#[derive(Default)]
pub struct Latch {
    set: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Latch {
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        // Taken, though nothing is guarded, so that a waiter between its look at the flag and its
        // wait cannot miss this wake-up.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// Sets the latch without waking anyone: for a forked child, which has no thread waiting on it,
    /// and where the lock is a copy that one of the parent's threads may have held at the fork, and
    /// so stays held for ever.
    pub fn set_unwatched(&self) {
        self.set.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Waits up to `limit`; returns whether the latch is set.
    fn wait_for(&self, limit: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _guard = self
            .changed
            .wait_timeout_while(guard, limit, |()| !self.is_set())
            .unwrap_or_else(|e| e.into_inner());
        self.is_set()
    }
}

/// Blocks the calling Python thread until `latch` is set or `timeout` passes, with the GIL released,
/// running the signal handlers every 100 ms so Ctrl-C interrupts the wait. Returns whether it is set.
pub fn wait(py: Python<'_>, latch: &Latch, timeout: Option<Duration>) -> PyResult<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
            None => WAIT_SLICE,
        };
        if py.detach(|| latch.wait_for(slice)) {
            return Ok(true);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn the_io_thread_keeps_the_gil_only_over_polls_that_ran_python() {
        let used = |polls| Gil::Kept { polls, used: true };
        assert_eq!(after_task_poll(used(0)), Some(Gil::Kept { polls: 1, used: false }));
        assert_eq!(
            after_task_poll(Gil::Kept { polls: 1, used: false }),
            None,
            "a poll without Python"
        );
        assert_eq!(
            after_task_poll(used(KEPT_POLLS - 1)),
            Some(Gil::Kept {
                polls: KEPT_POLLS,
                used: false
            })
        );
        assert_eq!(
            after_task_poll(used(KEPT_POLLS)),
            None,
            "kept over too many polls in a row"
        );
        assert_eq!(after_task_poll(Gil::Released), Some(Gil::Released));
        assert_eq!(after_task_poll(Gil::InCall), Some(Gil::InCall));
    }

    #[test]
    fn a_latch_set_unwatched_answers_while_its_lock_is_held_for_ever() {
        // As in a forked child whose parent had a thread inside the latch's lock at the fork.
        let latch = Arc::new(Latch::default());
        let (held, lock_taken) = mpsc::channel();
        let holder = latch.clone();
        std::thread::spawn(move || {
            std::mem::forget(holder.lock.lock().unwrap());
            held.send(()).unwrap();
        });
        lock_taken.recv().unwrap();
        let (done, answered) = mpsc::channel();
        let child = latch.clone();
        std::thread::spawn(move || {
            child.set_unwatched();
            done.send(child.wait_for(Duration::from_secs(1))).unwrap();
        });
        assert_eq!(answered.recv_timeout(Duration::from_secs(5)), Ok(true));
    }

    #[test]
    fn a_waiter_wakes_when_the_latch_is_set() {
        let latch = Arc::new(Latch::default());
        assert!(!latch.wait_for(Duration::from_millis(1)));
        let setter = latch.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            setter.set();
        });
        assert!(latch.wait_for(Duration::from_secs(10)));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by set(), not by the limit"
        );
    }
}
