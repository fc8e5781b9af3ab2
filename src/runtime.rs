//! The one tokio runtime behind rsock's servers, and the ways Python waits on it.
//!
//! A current-thread runtime on its own thread ("rsock-io") does all accept/read/write/framing work
//! and calls Python handlers inline: no hand-off between threads per message, and no contention
//! among tokio workers for the GIL. (A UdpServer, one socket and no connections, receives on a
//! thread of its own instead; see udp/server.rs.)
//! The io thread holds a Python thread state for its whole life, so entering Python for a handler
//! only takes the GIL. It keeps the GIL from one handler to the next while the tasks it runs call
//! Python (ten connections with a request each: one take and one release, not ten), and gives it
//! back before it sleeps and once two tasks in a row ran no Python, so Rust-only work (a large
//! transfer, a broadcast's flushes) leaves other Python threads (a client in the same process, a
//! notebook) free to run. While it keeps the GIL it lets a thread that asks for it have it as running
//! Python code does: a handler's bytecode does that, and, every millisecond, so does a no-op.
//! It is created on first use, never at import. tokio does not survive fork(), so a forked child
//! that uses rsock gets a fresh runtime of its own (the parent's is left untouched).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::gil_handoff::{self, Handoff};
use crate::py_lazy::PyLazy;

/// rsock's threads that keep a Python thread state (the io thread, UDP receive threads): interpreter
/// exit interrupts the handlers still running on them (see `interrupt_handlers`). Locked only with the
/// GIL held: os.fork() holds it, so no fork copies the lock held into a child, whose first rsock
/// thread would wait for it for ever (with the GIL).
static PYTHON_THREADS: Mutex<Vec<PythonThread>> = Mutex::new(Vec::new());

struct PythonThread {
    /// The fork generation it runs in: a child has none of its parent's threads.
    generation: u64,
    /// Its Python thread ident, which PyThreadState_SetAsyncExc takes.
    ident: std::ffi::c_ulong,
    /// Its thread state (a pointer, kept as an address so the list can be shared): removed from the
    /// list before the state is deleted.
    tstate: usize,
}

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

/// What an rsock thread (the io thread, a UDP receive thread) knows about itself; on other threads it
/// stays as made.
struct RsockThread {
    /// The Python thread state it keeps for its whole life; null on other threads.
    tstate: Cell<*mut pyo3::ffi::PyThreadState>,
    /// Where its GIL stands.
    gil: Cell<Gil>,
    /// The fork generation whose rsock-io thread (the one running the tokio runtime) this is, if
    /// it is one. A handler that forks leaves the child running on a copy of that thread, which is
    /// not the child's io thread.
    io_of: Cell<Option<u64>>,
    /// When it lets go of the GIL for a thread that may wait for it (see `gil_handoff`); None until
    /// it first takes the GIL.
    handoff: Cell<Option<Handoff>>,
}

impl RsockThread {
    fn is_io_thread(&self) -> bool {
        self.io_of.get() == Some(FORK_GENERATION.load(Ordering::Relaxed))
    }

    /// Notes that the GIL was just released.
    fn let_go_of_gil(&self) {
        if let Some(mut handoff) = self.handoff.get() {
            handoff.let_go(Instant::now());
            self.handoff.set(Some(handoff));
        }
    }
}

thread_local! {
    /// One thread-local, not three: in a shared library each costs a `__tls_get_addr` call per use,
    /// and a handler call uses them several times.
    static THREAD: RsockThread = const {
        RsockThread {
            tstate: Cell::new(ptr::null_mut()),
            gil: Cell::new(Gil::Released),
            io_of: Cell::new(None),
            handoff: Cell::new(None),
        }
    };
}

/// Where an rsock thread's GIL stands, as `with_gil` took it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Gil {
    Released,
    /// Held for a `with_gil` call that is running.
    InCall,
    /// Kept by the io thread between calls. Rust code that runs meanwhile must not `detach` from
    /// pyo3 and call `with_gil` inside: that call would assume a GIL it lacks.
    Kept(Kept),
}

/// A GIL the io thread keeps.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Kept {
    /// When it was taken, or last offered to other threads.
    since: Instant,
    /// Turns (handler calls and task polls) it was kept over: the clock is read every TURNS_PER_CHECK.
    turns: u32,
    /// Whether a call ran in the task poll running now.
    used: bool,
    /// Task polls in a row, before this one, that ran no Python.
    quiet_polls: u8,
}

/// What the io thread does with a kept GIL after a turn.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Turn {
    Keep(Kept),
    /// Keep it, after offering it to other threads (`offer_kept_gil`).
    Offer(Kept),
    Release,
}

/// How long the io thread keeps the GIL before it offers it to other threads: a thread that asked
/// (CPython's switch interval, 5 ms, after it began waiting) then gets it even when the handlers are
/// C functions, which run no bytecode that would hand it over.
const OFFER_EVERY: Duration = Duration::from_millis(1);
/// How often, in turns, the clock is read for OFFER_EVERY: a read per turn would cost more than it
/// saves.
const TURNS_PER_CHECK: u32 = 8;
/// A kept GIL is released after this many task polls in a row that ran no Python. Two, not one:
/// polls that alternate between Python and Rust-only work would otherwise release and retake it
/// each time, and a retake by a running thread beats a waiting thread to it while restarting its
/// wait for the switch interval, so that thread could wait until the io thread sleeps.
const QUIET_POLLS: u8 = 2;

impl Kept {
    fn taken(now: Instant) -> Kept {
        Kept {
            since: now,
            turns: 0,
            used: false,
            quiet_polls: 0,
        }
    }

    /// After a handler call.
    fn after_call(self, now: impl FnOnce() -> Instant) -> Turn {
        Kept { used: true, ..self }.turned(now)
    }

    /// After a task poll.
    fn after_poll(self, now: impl FnOnce() -> Instant) -> Turn {
        let quiet_polls = if self.used { 0 } else { self.quiet_polls + 1 };
        if quiet_polls >= QUIET_POLLS {
            return Turn::Release;
        }
        Kept {
            used: false,
            quiet_polls,
            ..self
        }
        .turned(now)
    }

    /// Counts one more turn, reading the clock every TURNS_PER_CHECK.
    fn turned(self, now: impl FnOnce() -> Instant) -> Turn {
        let next = Kept {
            turns: self.turns.wrapping_add(1),
            ..self
        };
        if next.turns.is_multiple_of(TURNS_PER_CHECK) {
            let now = now();
            if now.duration_since(self.since) >= OFFER_EVERY {
                return Turn::Offer(Kept { since: now, ..next });
            }
        }
        Turn::Keep(next)
    }
}

/// Forks this process has been through, as the parent or as the child (see `forks`).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    FORKS.fetch_add(1, Ordering::SeqCst);
    CREATING.store(false, Ordering::SeqCst);
}

extern "C" fn after_fork_in_parent() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

fn register_fork_handlers() {
    REGISTER_FORK_HANDLER.call_once(|| {
        // SAFETY: registers handlers that only touch atomics, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, Some(after_fork_in_parent), Some(after_fork_in_child)) };
    });
}

/// Which process this is: 0 in the one that loaded rsock, one more in each forked child (counted
/// from the first call on).
pub fn fork_generation() -> u64 {
    register_fork_handlers();
    FORK_GENERATION.load(Ordering::Acquire)
}

/// How many forks this process has been through, as the parent or as the child, counted from the
/// first call on: unchanged since a socket was made, no other process holds it (a process started
/// with exec inherits none of rsock's descriptors, all close-on-exec).
pub fn forks() -> u64 {
    register_fork_handlers();
    FORKS.load(Ordering::Acquire)
}

fn current() -> Option<&'static Runtime> {
    let rt = CURRENT.load(Ordering::Acquire);
    // SAFETY: runtimes are leaked, never freed, so a published pointer stays valid.
    let rt = unsafe { rt.as_ref() }?;
    (rt.generation == FORK_GENERATION.load(Ordering::Acquire)).then_some(rt)
}

/// This process's runtime, made with its io thread on first use. Making them fails only for want of
/// resources (descriptors, threads), and the next use tries again.
fn runtime() -> io::Result<&'static Runtime> {
    if let Some(rt) = current() {
        return Ok(rt);
    }
    fork_generation();
    while CREATING.swap(true, Ordering::AcqRel) {
        std::hint::spin_loop();
        std::thread::yield_now();
    }
    let rt = current().map_or_else(start_runtime, Ok);
    CREATING.store(false, Ordering::Release);
    rt
}

fn start_runtime() -> io::Result<&'static Runtime> {
    let generation = FORK_GENERATION.load(Ordering::Acquire);
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(release_kept_gil)
        .build()?;
    let handle = built.handle().clone();
    let thread = std::thread::Builder::new().name("rsock-io".into()).spawn(move || {
        THREAD.with(|thread| thread.io_of.set(Some(generation)));
        hold_python_thread_state();
        // Made now rather than at the first offer, in the middle of serving: an object made there
        // sat above the heap's free 1 KiB chunks and slowed every later malloc of a message's
        // bytes (callgrind: 286 instructions in _int_malloc per 1 KiB echo request, not 113).
        let _ = with_gil(|py| no_op(py).map(drop));
        built.block_on(std::future::pending::<()>())
    })?;
    drop(thread);
    let rt = Box::leak(Box::new(Runtime { handle, generation }));
    CURRENT.store(rt, Ordering::Release);
    Ok(rt)
}

/// Gives the calling thread a Python thread state for its whole life, and leaves it detached. Without
/// one, every Python::attach would create a thread state and the matching release destroy it again;
/// with one, `with_gil` only takes the GIL. Returns the PyGILState handle that releases it.
fn hold_python_thread_state() -> pyo3::ffi::PyGILState_STATE {
    // SAFETY: the interpreter is initialised (rsock is an extension module); the state is acquired
    // once and the GIL released straight away.
    let gil = unsafe { pyo3::ffi::PyGILState_Ensure() };
    // SAFETY: as above: this thread holds the GIL, with its own state.
    let (ident, tstate) = unsafe { (pyo3::ffi::PyThread_get_thread_ident(), pyo3::ffi::PyThreadState_Get()) };
    python_threads().push(PythonThread {
        generation: fork_generation(),
        ident,
        tstate: tstate as usize,
    });
    // SAFETY: as above.
    THREAD.with(|thread| thread.tstate.set(unsafe { pyo3::ffi::PyEval_SaveThread() }));
    gil
}

/// Set once interpreter exit has interrupted the handlers: their SystemExit is then not their failure.
static HANDLERS_INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether interpreter exit has interrupted the handlers still running (see `interrupt_handlers`).
pub fn handlers_interrupted() -> bool {
    HANDLERS_INTERRUPTED.load(Ordering::Acquire)
}

fn python_threads() -> std::sync::MutexGuard<'static, Vec<PythonThread>> {
    PYTHON_THREADS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises SystemExit in the Python code rsock's threads are running, for handlers still running at
/// interpreter exit once the servers have had their time to stop. Such a handler would otherwise take
/// the GIL again while the interpreter finalizes, and CPython (before 3.14) ends a thread that does
/// with pthread_exit, which cannot unwind through Rust frames: the process aborts. Code in a blocking
/// call (a sleep) only sees the exception when the call returns. A thread with no Python frame (an
/// idle one) is left alone: the exception would wait for the next Python it ran, an on_disconnect.
pub fn interrupt_handlers(_py: Python<'_>) {
    HANDLERS_INTERRUPTED.store(true, Ordering::Release);
    let generation = fork_generation();
    for thread in python_threads().iter().filter(|thread| thread.generation == generation) {
        // SAFETY: the GIL is held, so the thread's frames stay as they are; its state is live while
        // it is in the list (locked here), and the frame returned is a new reference, released here.
        let running_python = unsafe {
            let frame = pyo3::ffi::PyThreadState_GetFrame(thread.tstate as *mut pyo3::ffi::PyThreadState);
            let running = !frame.is_null();
            pyo3::ffi::Py_XDECREF(frame.cast());
            running
        };
        if running_python {
            // SAFETY: the GIL is held; the exception type is a live object CPython keeps.
            unsafe {
                pyo3::ffi::PyThreadState_SetAsyncExc(thread.ident as std::ffi::c_long, pyo3::ffi::PyExc_SystemExit)
            };
        }
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
        let tstate = THREAD.with(|thread| thread.tstate.replace(ptr::null_mut()));
        // SAFETY: called on this thread, whose ident it is, as when it was added.
        let ident = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        // SAFETY: takes back this thread's own state, and the GIL with it.
        unsafe { pyo3::ffi::PyEval_RestoreThread(tstate) };
        python_threads().retain(|thread| thread.ident != ident);
        // SAFETY: releases and deletes the state hold_python_thread_state acquired on this thread.
        unsafe { pyo3::ffi::PyGILState_Release(gil) };
        drop(keep);
    })?;
    drop(thread);
    Ok(())
}

/// Runs `future` on the rsock-io thread, made on first use (which can fail, see `runtime`).
pub fn spawn<F>(future: F) -> io::Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(runtime()?.handle.spawn(GilTurns(future)))
}

/// Runs `future` on the rsock-io thread, from a task already running there.
pub fn spawn_here<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::task::spawn(GilTurns(future))
}

/// An io thread task: after each poll, the kept GIL goes as `Kept::after_poll` says.
struct GilTurns<F>(F);

impl<F: Future> Future for GilTurns<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        // SAFETY: the future is never moved out of its pinned wrapper.
        let polled = unsafe { self.map_unchecked_mut(|turns| &mut turns.0) }.poll(cx);
        THREAD.with(|thread| {
            if let Gil::Kept(kept) = thread.gil.get() {
                take_turn(thread, kept.after_poll(Instant::now));
            }
        });
        polled
    }
}

fn take_turn(thread: &RsockThread, turn: Turn) {
    match turn {
        Turn::Keep(kept) => thread.gil.set(Gil::Kept(kept)),
        Turn::Offer(kept) => {
            thread.gil.set(Gil::Kept(kept));
            offer_kept_gil();
        }
        Turn::Release => release_gil_kept_by(thread),
    }
}

/// A no-op in bytecode: where CPython hands the GIL to a thread that asked for it.
static NO_OP: PyLazy<Py<PyAny>> = PyLazy::new();

/// Lets a thread that asked for the GIL have it, as running Python code does.
fn offer_kept_gil() {
    // Refused (None) only while the interpreter is finalizing, when no thread is owed a turn.
    let _ = Python::try_attach(|py| {
        if let Ok(no_op) = no_op(py) {
            // What it could raise is an asynchronous exception aimed at this thread, which has no
            // Python frame to take it: dropped.
            let _ = no_op.call0(py);
        }
    });
}

fn no_op(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    // Its globals an empty dict: with None, the function would hold __main__'s for ever, and the objects
    // there would never be dropped (an open file never flushed) as the interpreter exits.
    NO_OP.get_or_try_init(py, || {
        py.eval(c"lambda: None", Some(&pyo3::types::PyDict::new(py)), None)
            .map(Bound::unbind)
    })
}

/// Gives back a GIL the io thread kept, before it parks.
fn release_kept_gil() {
    THREAD.with(release_gil_kept_by);
}

/// Gives back the GIL `thread` (the calling one) kept, if it did.
fn release_gil_kept_by(thread: &RsockThread) {
    if !matches!(thread.gil.get(), Gil::Kept(_)) {
        return;
    }
    thread.gil.set(Gil::Released);
    // SAFETY: the io thread holds the GIL it took in with_gil, with its own thread state.
    unsafe { pyo3::ffi::PyEval_SaveThread() };
    thread.let_go_of_gil();
}

/// Takes the GIL with the calling rsock thread's own state; first lets another thread have it, when
/// this one has kept retaking it without a pause for a while (see `gil_handoff`). Returns when it was
/// taken.
fn take_gil(thread: &RsockThread, tstate: *mut pyo3::ffi::PyThreadState) -> Instant {
    let now = Instant::now();
    let mut handoff = thread.handoff.get().unwrap_or_else(|| Handoff::new(now));
    // Not holding the GIL: whoever was woken by its last release takes it meanwhile.
    let handed_over = handoff.due(now).then(gil_handoff::hand_over);
    let asked = if handed_over.is_some() { Instant::now() } else { now };
    // SAFETY: tstate is this thread's own state, saved when it last released the GIL.
    unsafe { pyo3::ffi::PyEval_RestoreThread(tstate) };
    let taken = Instant::now();
    handoff.took(taken.duration_since(asked));
    if let Some(others_ran) = handed_over {
        handoff.handed_over(taken, others_ran);
    }
    thread.handoff.set(Some(handoff));
    taken
}

/// Runs `f` with the GIL. On an rsock thread this restores and saves its own thread state directly,
/// skipping PyGILState's thread-state lookup and release: it runs for every message. The io thread
/// keeps the GIL after the call (see Kept and GilTurns); the others release it at once. Inside,
/// `Python::attach` still runs, as a nested attach that costs only counters, so pyo3 knows the
/// thread is attached: a `Py` dropped in `f` is released at once, on this thread, rather than
/// queued for whichever thread enters pyo3 next (with nothing calling rsock from Python, as under
/// serve_forever, that queue grew by every closed connection; with a client in the same process,
/// its reads ran the finalizers of the server's connections).
pub fn with_gil<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    THREAD.with(|thread| {
        let tstate = thread.tstate.get();
        if tstate.is_null() {
            return Python::attach(f);
        }
        // What the io thread keeps after the call; None on the other rsock threads, which keep nothing.
        let kept = match thread.gil.get() {
            // Nested, perhaps inside a `detach` of pyo3's: pyo3's attach knows which.
            Gil::InCall => return Python::attach(f),
            Gil::Released => {
                let taken = take_gil(thread, tstate);
                thread.is_io_thread().then(|| Kept::taken(taken))
            }
            Gil::Kept(kept) => Some(kept),
        };
        /// Ends the call, even by a panic: the io thread keeps the GIL, the others give it back.
        struct EndCall<'a>(&'a RsockThread, Option<Kept>);
        impl Drop for EndCall<'_> {
            fn drop(&mut self) {
                let EndCall(thread, kept) = *self;
                let Some(kept) = kept else {
                    thread.gil.set(Gil::Released);
                    // SAFETY: this thread restored its own state above and is saving it exactly once.
                    unsafe { pyo3::ffi::PyEval_SaveThread() };
                    thread.let_go_of_gil();
                    return;
                };
                match kept.after_call(Instant::now) {
                    // No Python while unwinding: the next poll's end or the park offers or releases it.
                    Turn::Offer(kept) if std::thread::panicking() => thread.gil.set(Gil::Kept(kept)),
                    turn => take_turn(thread, turn),
                }
            }
        }
        thread.gil.set(Gil::InCall);
        let _end = EndCall(thread, kept);
        Python::attach(f)
    })
}

/// Whether the caller is the rsock-io thread: its writes are flushed by tasks it runs itself.
pub fn on_io_thread() -> bool {
    THREAD.with(RsockThread::is_io_thread)
}

/// Whether the caller is a thread of rsock's that runs handlers, which must never block waiting on
/// a server it serves.
pub fn on_handler_thread() -> bool {
    THREAD.with(|thread| !thread.tstate.get().is_null())
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

    pub fn is_set(&self) -> bool {
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
/// A timeout too long for the clock to reach waits without one.
pub fn wait(py: Python<'_>, latch: &Latch, timeout: Option<Duration>) -> PyResult<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
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
    fn the_io_thread_releases_the_gil_after_two_polls_without_python() {
        let since = Instant::now();
        let soon = || since + Duration::from_micros(10);
        let taken = Kept::taken(since);
        let Turn::Keep(called) = taken.after_call(soon) else {
            panic!("released at a call")
        };
        let Turn::Keep(polled) = called.after_poll(soon) else {
            panic!("released after a poll that ran Python")
        };
        assert_eq!((polled.used, polled.quiet_polls), (false, 0));
        let Turn::Keep(quiet) = polled.after_poll(soon) else {
            panic!("released after one quiet poll")
        };
        assert_eq!(quiet.quiet_polls, 1);
        assert_eq!(quiet.after_poll(soon), Turn::Release, "two quiet polls in a row");
        // A call between them starts the count again.
        let Turn::Keep(called_again) = quiet.after_call(soon) else {
            panic!("released at a call")
        };
        assert!(matches!(called_again.after_poll(soon), Turn::Keep(k) if k.quiet_polls == 0));
    }

    #[test]
    fn a_kept_gil_is_offered_every_millisecond() {
        let since = Instant::now();
        let kept = |turns| Kept {
            turns,
            used: true,
            ..Kept::taken(since)
        };
        let late = since + OFFER_EVERY;
        let checked = TURNS_PER_CHECK - 1;
        match kept(checked).after_call(|| late) {
            Turn::Offer(next) => assert_eq!((next.since, next.turns), (late, TURNS_PER_CHECK)),
            other => panic!("not offered at a call: {other:?}"),
        }
        assert!(matches!(kept(checked).after_poll(|| late), Turn::Offer(_)), "at a poll");
        let early = || since + OFFER_EVERY / 2;
        assert!(matches!(kept(checked).after_call(early), Turn::Keep(_)));
        // Between checks the clock is not read at all.
        assert!(matches!(kept(0).after_call(|| panic!("clock read")), Turn::Keep(_)));
        assert!(
            matches!(kept(u32::MAX).after_call(early), Turn::Keep(k) if k.turns == 0),
            "the count wraps"
        );
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
