//! What the servers share: the default address, listening-socket setup, the lifecycle that stop()
//! and serve_forever() wait on, and the handling of failed accepts.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::call::PyCallArgs;
use pyo3::exceptions::{PyException, PyOSError, PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyFloat, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use socket2::{Domain, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::audit;
use crate::errors::{io_error, panic_error, strerror};
use crate::log::{self, ERROR};
use crate::py_lazy::interned;
use crate::runtime::{self, Latch};

/// A server's handler as given: None, or a callable that can take the arguments the server calls it
/// with (`parameters`, named for the message). A handler of the wrong shape is a TypeError here, where
/// the mistake was made, rather than an error logged at every call on rsock's thread. A callable whose
/// signature Python cannot tell (some builtins) is taken as it is.
pub fn handler_or_none(
    name: &str,
    value: Option<Bound<'_, PyAny>>,
    parameters: &[&str],
) -> PyResult<Option<Py<PyAny>>> {
    let Some(handler) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if !handler.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be callable or None, not {}",
            crate::addr::type_name(&handler)
        )));
    }
    let py = handler.py();
    // The handler's own signature, not the one functools.wraps copied from the function it wraps: a
    // wrapper that adapts its arguments is called as it is.
    let options = [("follow_wrapped", false)].into_py_dict(py)?;
    let signature = match py
        .import("inspect")?
        .call_method("signature", (&handler,), Some(&options))
    {
        Ok(signature) => signature,
        Err(err) if err.is_instance_of::<PyException>(py) => return Ok(Some(handler.unbind())),
        Err(err) => return Err(err),
    };
    let arguments = PyTuple::new(py, parameters.iter().map(|_| py.None()))?;
    match signature.call_method1("bind", arguments) {
        Ok(_) => Ok(Some(handler.unbind())),
        Err(err) if err.is_instance_of::<PyTypeError>(py) => {
            let handler_name = match handler.getattr("__qualname__") {
                Ok(qualname) => qualname.str()?.to_string(),
                Err(_) => handler.repr()?.to_string(),
            };
            Err(PyTypeError::new_err(format!(
                "{name} is called as {name}({}), which {handler_name}{signature} cannot take: {}",
                parameters.join(", "),
                err.value(py)
            )))
        }
        Err(err) => Err(err),
    }
}

/// How long stop() lets connections finish before closing them.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stop() waits, after closing the connections still open at its timeout, for their tasks
/// to end.
pub const ABORT_GRACE: Duration = Duration::from_secs(1);
/// How long accepting pauses when the process is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A server's run: the shutdown signal its tasks watch, and the latch set when the last one ends.
#[derive(Default)]
pub struct Lifecycle {
    pub shutdown: CancellationToken,
    pub stopped: Latch,
    tasks: AtomicUsize,
    /// `shutdown.is_cancelled()` without its lock, for the checks on every wake-up of a connection.
    stopping: AtomicBool,
    /// The socket that holds the server's port, and the thread that serves it (`hold_port`).
    port: Mutex<Option<HeldPort>>,
    /// Whether stop() gave up the port (`release_port`).
    released: AtomicBool,
    /// One more than the fork generation of the process that started the server, 0 before it starts
    /// (see `runs_here`).
    started_in: AtomicU64,
}

/// What kind of socket holds a server's port, which says how stop() gives it up (`release_port`).
#[derive(Clone, Copy)]
pub enum PortSocket {
    /// A TCP server's listener, made when this process had been through `forks_when_made` forks
    /// (`runtime::forks()`).
    Listener { forks_when_made: u64 },
    /// A UDP server's socket; with `wake_at_stop`, begin_stop() wakes a thread waiting for datagrams
    /// on it.
    Datagram { wake_at_stop: bool },
}

/// The socket that holds a server's port (a UDP server's socket, a TCP server's listener), for stop()
/// to give up at its timeout (`release_port`), and the thread that named it, which serves the server.
struct HeldPort {
    /// Weak, so a socket already closed is never touched (its descriptor may be reused).
    socket: Weak<dyn AsFd + Send + Sync>,
    thread: ThreadId,
    kind: PortSocket,
}

/// Held by each of a server's tasks; the last to go after shutdown sets `stopped`.
pub struct TaskGuard(Arc<Lifecycle>);

impl Lifecycle {
    pub fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    /// Names the socket that holds the server's port, and its kind, on the thread that serves the
    /// server.
    pub fn hold_port<S: AsFd + Send + Sync + 'static>(&self, socket: &Arc<S>, kind: PortSocket) {
        let socket = Arc::downgrade(socket);
        let thread = std::thread::current().id();
        *self.port() = Some(HeldPort { socket, thread, kind });
    }

    /// Whether the calling thread is the one that named the port's socket (a UDP server's receive
    /// thread, in one of the server's own handlers).
    pub fn port_held_by_this_thread(&self) -> bool {
        self.port()
            .as_ref()
            .is_some_and(|held| held.thread == std::thread::current().id())
    }

    fn port(&self) -> std::sync::MutexGuard<'_, Option<HeldPort>> {
        self.port.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket that holds the port, if still open, and its kind.
    fn port_socket(&self) -> Option<(Arc<dyn AsFd + Send + Sync>, PortSocket)> {
        let port = self.port();
        let held = port.as_ref()?;
        Some((held.socket.upgrade()?, held.kind))
    }

    /// Whether the server's tasks run in this process: not in a child forked after it started, where
    /// they live on only in the parent, which still serves on the socket both processes share. A
    /// server not started yet is the business of whichever process starts it.
    pub fn runs_here(&self) -> bool {
        let started_in = self.started_in.load(Ordering::Acquire);
        started_in == 0 || started_in == runtime::fork_generation() + 1
    }

    /// An error for what only the process serving the connections can do. In a forked child the
    /// server's locks are copies that the parent's threads may have held at the fork, and so stay
    /// held for ever there: a clear error instead of a wait that never ends.
    pub fn check_runs_here(&self) -> PyResult<()> {
        if self.runs_here() {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(
            "this server is served by the process that started it, not by this forked \
             child: start a new server here",
        ))
    }

    /// Tells every task to finish; sets `stopped` at once if none is running.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if !self.runs_here() {
            // Nothing to wait for here, and the shared socket must stay as the parent uses it.
            self.stopped.set_unwatched();
            return;
        }
        self.shutdown.cancel();
        if let Some((socket, PortSocket::Datagram { wake_at_stop: true })) = self.port_socket() {
            // Linux wakes a datagram socket's waiting receivers on shutdown even when it reports
            // ENOTCONN (the socket is not connected), so the result says nothing.
            let _ = socket2::SockRef::from(&socket.as_fd()).shutdown(std::net::Shutdown::Read);
        }
        if self.tasks.load(Ordering::Acquire) == 0 {
            self.stopped.set();
        }
    }

    /// stop()'s last step for a server whose thread is still in a handler at the timeout (a TCP
    /// server's io thread, a UDP server's receive thread): the port is given up at once, so that a new
    /// server can bind it. The descriptor itself is never closed under the thread, where its number
    /// could come to name another file.
    ///
    /// A listener no other process can hold (none was forked since it was made) is shut down, which
    /// ends its listening at once (a client connecting is refused, and a port the system chose is free
    /// again; one named in bind() stays bound, not listening, which a new server's SO_REUSEADDR binds
    /// beside) and leaves the descriptor naming the socket tokio registered. Otherwise, and for a
    /// datagram socket, which shutdown does not unbind, the descriptor is pointed at a stand-in, an
    /// unnamed Unix datagram socket shut down both ways, on which whatever the thread does with it once
    /// the handler returns fails (a late reply is counted as an error, not sent from a port the server
    /// no longer holds). That acts on this process's descriptor only, where a shutdown would end the
    /// listening of every process sharing the socket (pre-fork workers, or the parent of a child that
    /// stops its copy of the parent's server); but tokio cannot then deregister the descriptor it
    /// registered, and keeps that registration for good, about 390 bytes each time.
    fn release_port(&self) {
        let Some((socket, kind)) = self.port_socket() else {
            return;
        };
        if let PortSocket::Listener { forks_when_made } = kind
            && forks_when_made == runtime::forks()
        {
            let _ = socket2::SockRef::from(&socket.as_fd()).shutdown(std::net::Shutdown::Both);
            self.released.store(true, Ordering::Release);
            return;
        }
        let Ok(stand_in) = Socket::new(Domain::UNIX, Type::DGRAM, None) else {
            return;
        };
        let _ = stand_in.shutdown(std::net::Shutdown::Both);
        self.released.store(true, Ordering::Release);
        // SAFETY: both descriptors are open and owned here; dup3 replaces the socket's descriptor
        // in one step, keeping it close-on-exec as every descriptor rsock makes is.
        unsafe { libc::dup3(stand_in.as_raw_fd(), socket.as_fd().as_raw_fd(), libc::O_CLOEXEC) };
    }

    /// Whether stop() gave up the port (`release_port`).
    pub fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Whether begin_stop() has been called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.is_stopping() {
            self.0.stopped.set();
        }
    }
}

/// Servers started in this process, so that interpreter exit can stop them first.
static STARTED: Mutex<Vec<Weak<Lifecycle>>> = Mutex::new(Vec::new());

pub fn register(lifecycle: &Arc<Lifecycle>) {
    lifecycle
        .started_in
        .store(runtime::fork_generation() + 1, Ordering::Release);
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    started.retain(|s| s.strong_count() > 0);
    started.push(Arc::downgrade(lifecycle));
}

/// Stops every running server and waits up to `timeout` seconds for them all (run at interpreter
/// exit, so no handler is entered while Python shuts down). Handlers still running then are
/// interrupted with SystemExit (see `runtime::interrupt_handlers`), and given as long again to return.
#[pyfunction]
fn _stop_all_servers(py: Python<'_>, timeout: f64) -> PyResult<()> {
    let running: Vec<_> = STARTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .filter_map(|s| s.upgrade())
        .collect();
    running.iter().for_each(|s| s.begin_stop());
    // Infinite or beyond what a Duration holds: no limit. (NaN, like a negative number, is 0.)
    let limit = Duration::try_from_secs_f64(timeout.max(0.0)).ok();
    if !wait_for_all(py, &running, limit)? {
        runtime::interrupt_handlers(py);
        wait_for_all(py, &running, limit)?;
    }
    Ok(())
}

/// Waits until every one of `servers` has stopped, or `limit` has passed for them all (None: no
/// limit); returns whether they all stopped.
fn wait_for_all(py: Python<'_>, servers: &[Arc<Lifecycle>], limit: Option<Duration>) -> PyResult<bool> {
    let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
    for server in servers {
        let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if !runtime::wait(py, &server.stopped, left)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `address` argument, defaulting to loopback on a free port: a server is reachable from
/// other machines only when asked to be.
pub fn default_address<'py>(py: Python<'py>, address: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    match address.filter(|a| !a.is_none()) {
        Some(address) => Ok(address.clone()),
        None => Ok(("127.0.0.1", 0u16).into_pyobject(py)?.into_any()),
    }
}

/// A non-blocking socket bound to `target`, set up as the stdlib's create_server() does;
/// `prepare` runs after bind (listen, for TCP). Errors name the address, as create_server()'s do.
pub fn bind_socket(
    py: Python<'_>,
    target: SocketAddr,
    kind: Type,
    reuse_port: bool,
    address: &Bound<'_, PyAny>,
    prepare: impl FnOnce(&Socket) -> io::Result<()> + Send,
) -> PyResult<Socket> {
    let failed = |err: io::Error| -> PyErr {
        match err.raw_os_error() {
            Some(errno) => {
                let shown = address
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| target.to_string());
                PyOSError::new_err((
                    errno,
                    format!("{} (while attempting to bind on address {shown})", strerror(errno)),
                ))
            }
            None => PyOSError::new_err(err.to_string()),
        }
    };
    let setup = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(target), kind, None)?;
        if kind == Type::STREAM {
            // A restarted server must be able to bind while old connections sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
        }
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        if target.is_ipv6() && kind == Type::STREAM {
            // As create_server() binds TCP: IPv6 only. A UDP socket keeps the system's default, as the
            // stdlib's and asyncio's do: on "::" it also takes IPv4 datagrams (from ::ffff:a.b.c.d).
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&target.into())?;
        prepare(&socket)?;
        Ok(socket)
    };
    // The events create_server() raises, before anything is opened.
    audit::no_socket_new(py, Domain::for_address(target).into(), kind.into(), 0)?;
    audit::no_socket_address(py, c"socket.bind", address)?;
    py.detach(setup).map_err(failed)
}

/// Counts a failed accept and logs it; returns whether to go on accepting. When the process is out
/// of descriptors or memory it pauses accepting briefly instead of spinning. A socket that no longer
/// listens (EINVAL: another process sharing it shut it down) would fail every accept() at once from
/// now on: accepting ends, and the connections already open are served on.
pub async fn accept_failed(errors: &std::sync::atomic::AtomicU64, err: &io::Error) -> bool {
    let errno = err.raw_os_error().unwrap_or(0);
    if matches!(errno, libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) {
        return true;
    }
    errors.fetch_add(1, Ordering::Relaxed);
    let listening = errno != libc::EINVAL;
    let text = if listening {
        format!("accept failed: {err}")
    } else {
        format!("no longer accepting connections: the listening socket was shut down ({err})")
    };
    runtime::with_gil(|py| log::log(py, ERROR, &text, None));
    if matches!(errno, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) {
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
    listening
}

/// A duration argument in seconds: None, or a non-negative number.
pub fn parse_timeout_arg(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    parse_seconds(name, value, true)
}

/// `parse_timeout_arg` for a duration that must be above zero (zero would mean "at once").
pub fn parse_positive_seconds(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    parse_seconds(name, value, false)
}

/// None, or a finite number of seconds above zero, or also zero if `zero_allowed`.
fn parse_seconds(name: &str, value: Option<&Bound<'_, PyAny>>, zero_allowed: bool) -> PyResult<Option<Duration>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let seconds: f64 = if value.is_instance_of::<PyFloat>() || value.is_instance_of::<pyo3::types::PyInt>() {
        value.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number of seconds or None, not {}",
            crate::addr::type_name(value)
        )));
    };
    // NaN fails both comparisons; +inf is too large, below, as settimeout() finds it.
    if !(seconds > 0.0 || zero_allowed && seconds == 0.0) {
        let kind = if zero_allowed { "non-negative" } else { "positive" };
        return Err(PyValueError::new_err(format!(
            "{name} must be a {kind} number of seconds, not {seconds}"
        )));
    }
    // The range of CPython's timeouts (nanoseconds in an i64, about 292 years): deadlines computed
    // from it cannot overflow.
    if seconds * 1e9 >= i64::MAX as f64 {
        return Err(PyOverflowError::new_err(format!(
            "{name} too large: {seconds:e} seconds"
        )));
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// Whether a handler's result is awaitable: its type defines `__await__`. Read from the type's slot
/// rather than with hasattr, which for every plain bytes reply would build and discard an
/// AttributeError (a third of a microsecond per message).
pub fn is_awaitable(value: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `value` is alive, so its type and the type's async slots table are too.
    unsafe {
        let slots = (*pyo3::ffi::Py_TYPE(value.as_ptr())).tp_as_async;
        !slots.is_null() && (*slots).am_await.is_some()
    }
}

/// Closes an awaitable a sync server refuses (it has no event loop to run it on): a coroutine
/// collected unclosed warns "coroutine ... was never awaited" long after the error reporting it. An
/// awaitable without close() is left as it is; an error from close() is reported as unraisable, as
/// Python does for errors nothing can catch.
pub fn close_refused_awaitable(py: Python<'_>, awaitable: &Bound<'_, PyAny>) {
    if let Ok(close) = awaitable.getattr(interned!(py, "close"))
        && let Err(err) = close.call0()
    {
        err.write_unraisable(py, Some(awaitable));
    }
}

/// Calls a handler (or the async bridge) from a server's task. A PanicException reaching us from
/// Python (rsock panicked inside a call the handler made, and the handler let it through) makes pyo3
/// resume that panic here; it is caught and becomes a PanicException again, so the server treats it
/// as any failed handler (logged, that connection closed) instead of losing the task.
pub fn call_handler<'py, A: PyCallArgs<'py>>(handler: &Bound<'py, PyAny>, args: A) -> PyResult<Bound<'py, PyAny>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| handler.call1(args)))
        .unwrap_or_else(|payload| Err(panic_error(payload)))
}

/// A server's `__traverse__`: its handlers and rsock.aio's bridge refer back to the server in the
/// usual patterns (a chat room's closure over it, a bound method of an object holding it, the bridge's
/// own reference), so the collector is shown them, once the server is `finished` (see
/// `Runner::finished`): a cycle of a stopped server is then collected like any other.
pub fn traverse_handlers<'a>(
    visit: &PyVisit<'_>,
    finished: bool,
    handlers: impl IntoIterator<Item = &'a Option<Py<PyAny>>>,
    bridge: &Mutex<Option<Py<PyAny>>>,
) -> Result<(), PyTraverseError> {
    if !finished {
        return Ok(());
    }
    for handler in handlers.into_iter().flatten() {
        visit.call(handler)?;
    }
    // Not waited for: the collector runs on whichever thread allocates, and must not block.
    if let Ok(bridge) = bridge.try_lock()
        && let Some(bridge) = bridge.as_ref()
    {
        visit.call(bridge)?;
    }
    Ok(())
}

/// The first of `handlers` (name, handler) that is an `async def` function, found as the server is
/// made (starting may happen at interpreter shutdown, when nothing can be imported).
pub fn async_handler(
    py: Python<'_>,
    handlers: &[(&'static str, &Option<Py<PyAny>>)],
) -> PyResult<Option<&'static str>> {
    let inspect = py.import("inspect")?;
    for (name, handler) in handlers {
        if let Some(handler) = handler
            && inspect.call_method1("iscoroutinefunction", (handler,))?.is_truthy()?
        {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// A TypeError as a server with an `async def` handler (`found`) starts without rsock.aio's bridge,
/// before any client is served: every call would return an awaitable nothing runs, each an error
/// logged and a connection closed. `aio_class` says where such handlers run.
pub fn refuse_async_handler(found: Option<&str>, bridge: &Mutex<Option<Py<PyAny>>>, aio_class: &str) -> PyResult<()> {
    match found {
        Some(name) if bridge.lock().unwrap_or_else(|e| e.into_inner()).is_none() => Err(PyTypeError::new_err(format!(
            "{name} is an async function; async handlers need {aio_class}, which runs them on the event loop"
        ))),
        _ => Ok(()),
    }
}

/// A server's `__clear__`: drops rsock.aio's bridge once the server is `finished`. A cycle through a
/// handler is broken by the collector clearing the handler's own objects (a closure's cells, an
/// instance's dict).
pub fn clear_bridge(finished: bool, bridge: &Mutex<Option<Py<PyAny>>>) {
    if finished {
        // Dropped after the lock is released: the bridge's finalizer may run Python.
        let taken = bridge.try_lock().ok().and_then(|mut bridge| bridge.take());
        drop(taken);
    }
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // What a Rust panic inside rsock becomes in Python; exported so applications can name it.
    m.add("PanicException", m.py().get_type::<PanicException>())?;
    // rsock.aio's servers wait as long as stop() does when given no timeout.
    m.add("DEFAULT_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT.as_secs_f64())?;
    m.add_function(wrap_pyfunction!(_stop_all_servers, m)?)?;
    m.add_function(wrap_pyfunction!(_in_main_interpreter, m)?)
}

/// sys.is_finalizing(), taken from sys's own dict: importing sys fails once the interpreter has begun
/// to take its modules apart.
fn interpreter_finalizing(py: Python<'_>) -> PyResult<bool> {
    // SAFETY: PySys_GetObject returns a borrowed reference (or null), which is made an owned one here
    // while the GIL is held.
    let is_finalizing =
        unsafe { Bound::from_borrowed_ptr_or_opt(py, pyo3::ffi::PySys_GetObject(c"is_finalizing".as_ptr())) };
    match is_finalizing {
        Some(is_finalizing) => is_finalizing.call0()?.is_truthy(),
        None => Ok(false),
    }
}

/// Whether this is the process's main interpreter. rsock's runtime and servers are the process's, one
/// set for all: a subinterpreter that used them would stop the main interpreter's servers as it ends.
/// rsock/__init__.py refuses a subinterpreter; pyo3 refuses one itself only where the module is made
/// afresh for it, not where CPython hands it a copy of the main interpreter's (Python 3.11's
/// subinterpreters, and the legacy kind after).
#[pyfunction]
fn _in_main_interpreter() -> bool {
    // SAFETY: both only read the interpreter state; the GIL is held for a pyfunction.
    unsafe { pyo3::ffi::PyInterpreterState_Get() == pyo3::ffi::PyInterpreterState_Main() }
}

const NEW: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

/// Where stop() is called from, which says whether it may wait for the server's tasks.
pub enum StopCaller {
    /// A thread the server's tasks do not run on: stop() waits for them.
    Elsewhere,
    /// One of the server's own handlers, on the thread that runs its tasks: they cannot go on until
    /// the handler returns, so stop() only begins the stop. With `give_up_port` (the socket holding
    /// the port carries nothing the tasks still send: a TCP listener) the port is given up at once,
    /// so that the handler can bind it again.
    ServingThread { give_up_port: bool },
}

/// A server's run: not started (holding its bound socket `S`), running, or stopped; what start(),
/// serve_forever(), stop() and the state in reprs mean, the same for every server.
pub struct Runner<S> {
    state: AtomicU8,
    socket: Mutex<Option<S>>,
    pub lifecycle: Arc<Lifecycle>,
}

impl<S: Send + 'static> Runner<S> {
    pub fn new(socket: S) -> Self {
        Runner {
            state: AtomicU8::new(NEW),
            socket: Mutex::new(Some(socket)),
            lifecycle: Arc::default(),
        }
    }

    /// Starts the server's task (`serve(socket, guard)`) on the io thread; a running server is left
    /// as it is, a stopped one cannot start again.
    pub fn start<F>(&self, serve: impl FnOnce(S, TaskGuard) -> F) -> PyResult<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.start_with(|socket, task| {
            runtime::spawn(serve(socket, task)).map_err(|e| io_error(&e))?;
            Ok(())
        })
    }

    /// start() with the server's work launched by `launch(socket, guard)`, which holds the guard
    /// for as long as the server serves.
    pub fn start_with(&self, launch: impl FnOnce(S, TaskGuard) -> PyResult<()>) -> PyResult<()> {
        // Its handlers could never take the GIL (a __del__ run as the interpreter shuts down): refused, as
        // threading refuses a new thread then, rather than started to answer nothing.
        if Python::attach(interpreter_finalizing)? {
            return Err(PyRuntimeError::new_err("can't start a server at interpreter shutdown"));
        }
        match self
            .state
            .compare_exchange(NEW, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {
                let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
                let socket = socket.ok_or_else(|| PyRuntimeError::new_err("server has no socket"))?;
                register(&self.lifecycle);
                let launched = launch(socket, self.lifecycle.task());
                if launched.is_err() {
                    self.begin_stop();
                }
                launched
            }
            Err(RUNNING) => Ok(()),
            Err(_) => Err(PyRuntimeError::new_err("server is stopped")),
        }
    }

    /// Tells the server to stop without waiting; a server never started just closes its socket.
    pub fn begin_stop(&self) {
        if self.state.swap(STOPPED, Ordering::Relaxed) == NEW {
            self.socket.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.lifecycle.stopped.set();
        } else {
            self.lifecycle.begin_stop();
        }
    }

    /// rsock.aio's stop(timeout), which waits in a worker thread: the timeout is checked as stop()
    /// checks it before the stop begins, so a bad one leaves the server running.
    pub fn begin_stop_checked(&self, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        parse_timeout_arg("timeout", timeout)?;
        self.begin_stop();
        Ok(())
    }

    /// stop(timeout): begins the stop and waits up to `timeout` (default 5 s) for the server's tasks;
    /// if some are still going, `force(true)` closes what is left but what rsock.aio's handlers that
    /// called stop() themselves need for their replies, the port is given up (`release_port`: a
    /// handler may hold up the thread that would close its socket) and stop() waits at most
    /// ABORT_GRACE more, after which `force(false)` closes those too. Called from one of the server's
    /// own handlers it only begins the stop (`StopCaller`).
    pub fn stop(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        caller: StopCaller,
        force: impl Fn(bool),
    ) -> PyResult<()> {
        let timeout = parse_timeout_arg("timeout", timeout)?.unwrap_or(DEFAULT_STOP_TIMEOUT);
        self.begin_stop();
        if let StopCaller::ServingThread { give_up_port } = caller {
            if give_up_port {
                self.lifecycle.release_port();
            }
            return Ok(());
        }
        if !runtime::wait(py, &self.lifecycle.stopped, Some(timeout))? {
            force(true);
            self.lifecycle.release_port();
            if !runtime::wait(py, &self.lifecycle.stopped, Some(ABORT_GRACE))? {
                // A handler that called stop() and has not returned since: its connection goes too.
                force(false);
            }
        }
        Ok(())
    }

    /// Starts the server if needed and blocks until it stops; Ctrl-C (or any exception a signal
    /// handler raises) stops it with `stop` and propagates.
    pub fn serve_forever(
        &self,
        py: Python<'_>,
        start: impl FnOnce() -> PyResult<()>,
        stop: impl FnOnce() -> PyResult<()>,
    ) -> PyResult<()> {
        if runtime::on_handler_thread() {
            return Err(PyRuntimeError::new_err(
                "serve_forever() cannot run in a handler: it would hold up the rsock thread that runs \
                 it for as long as the server serves; call start() instead",
            ));
        }
        start()?;
        if let Err(err) = runtime::wait(py, &self.lifecycle.stopped, None) {
            stop()?;
            return Err(err);
        }
        Ok(())
    }

    /// Whether none of the server's tasks can run here any more: it never started, or it stopped and
    /// every task has ended (or it serves in the process it was forked from). Only then may the
    /// garbage collector see what its handlers refer to: a running server's tasks keep it alive.
    pub fn finished(&self) -> bool {
        self.state.load(Ordering::Relaxed) == NEW || self.lifecycle.stopped.is_set() || !self.lifecycle.runs_here()
    }

    /// Whether the server is serving.
    pub fn running(&self) -> bool {
        self.state.load(Ordering::Relaxed) == RUNNING && !self.lifecycle.is_stopping()
    }

    /// Warns, as a socket collected open does, when the server being collected was bound but neither
    /// started nor stopped: it held its port for nothing (`repr` names it). One that was started keeps
    /// serving without its object; stop() on one never started closes its socket.
    pub fn warn_if_never_used(&self, repr: impl FnOnce() -> String) {
        let holds_socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if self.state.load(Ordering::Relaxed) == NEW && holds_socket {
            let text = format!("unclosed {}", repr());
            Python::attach(|py| crate::errors::warn_from_finalizer::<pyo3::exceptions::PyResourceWarning>(py, &text));
        }
    }

    /// "not started", "running" or "stopped", for reprs.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            NEW => "not started",
            RUNNING if self.running() => "running",
            _ => "stopped",
        }
    }
}

/// Why a handler ended without being at fault, if it did, for the log (INFO, no traceback): interpreter
/// exit interrupted it (the SystemExit of `runtime::interrupt_handlers`), or, for an async handler, its
/// task was cancelled (asyncio.run() ending, or a cancel of the program's own), or its event loop was
/// closed before it could run. rsock.aio reports the latter as a ConnectionAbortedError it makes but
/// never raises, so one without a traceback; a ConnectionAbortedError a handler raised is its error
/// like any other.
pub fn not_the_handlers_fault(py: Python<'_>, err: &PyErr) -> Option<&'static str> {
    if crate::aio::is_cancelled_error(py, err) {
        Some("its handler was cancelled")
    } else if err.is_instance_of::<pyo3::exceptions::PyConnectionAbortedError>(py) && err.traceback(py).is_none() {
        Some("its handler's event loop is gone")
    } else {
        interrupted_at_exit(py, err)
    }
}

/// `not_the_handlers_fault` for a plain handler, whose own exceptions are its failures, whatever
/// they are: only interpreter exit's interruption is not.
pub fn interrupted_at_exit(py: Python<'_>, err: &PyErr) -> Option<&'static str> {
    (err.is_instance_of::<pyo3::exceptions::PySystemExit>(py) && runtime::handlers_interrupted())
        .then_some("its handler was interrupted as the interpreter exits")
}
