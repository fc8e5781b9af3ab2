//! `rsock._rsock.socket`: the native socket that `rsock.socket` subclasses, as CPython's
//! `socket.socket` subclasses `_socket.socket`.
//!
//! Every call is the syscall CPython makes, with the GIL released around it and nothing more. With a
//! timeout the descriptor is non-blocking and each call first waits with poll(2) up to the deadline.
//! EINTR re-attaches, runs the signal handlers (so Ctrl-C raises KeyboardInterrupt) and retries with
//! the time that is left (PEP 475).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use libc::{POLLERR, POLLIN, POLLOUT, c_int, c_void, socklen_t};
use pyo3::exceptions::{PyAttributeError, PyOSError, PyOverflowError, PyResourceWarning, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyList, PyTuple};
use socket2::SockAddr;

use crate::addr::{from_sockaddr, to_sockaddr};
use crate::ancillary;
use crate::args::{Opt, as_int, as_int_or, c_int, c_int_or, c_long, iterate, python_at_least, ssize, ssize_or};
use crate::audit;
use crate::buffer::{
    BytesWriter, Space, WritableView, as_uninit, check_bytes_len, with_readable, with_writable, zeroed_vec,
};
use crate::errors::{last_errno, os_error, timeout_error, warn_from_finalizer};
use crate::py_lazy::{PyLazy, interned};
use crate::spin::{ReplySpin, poll_for};

/// The stdlib's `_socket` module, whose default timeout new sockets take.
static STDLIB_SOCKET: PyLazy<Py<PyModule>> = PyLazy::new();

/// The default timeout is the stdlib's own setting (`socket.setdefaulttimeout()`), not a copy of it: a
/// program that sets it through either module sets it for every socket made afterwards, rsock's and
/// those of the libraries on the stdlib's `socket` (http.client, smtplib) alike.
fn stdlib_socket(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(STDLIB_SOCKET
        .get_or_try_init(py, || py.import("_socket").map(Bound::unbind))?
        .bind(py))
}

/// The nanoseconds of the last `setdefaulttimeout()` made through rsock; -1 for None.
static SET_HERE_NS: AtomicI64 = AtomicI64::new(-1);

/// The default timeout for new sockets in nanoseconds; -1 means blocking (`None`). The stdlib gives
/// it as a float of seconds, which beyond 2**53 ns no longer names the nanosecond it was set to: while
/// it is the float of rsock's own last setting, that setting is taken, exact.
fn default_timeout_ns(py: Python<'_>) -> PyResult<i64> {
    let seconds = stdlib_socket(py)?.call_method0(interned!(py, "getdefaulttimeout"))?;
    let set_here = SET_HERE_NS.load(Relaxed);
    if seconds.eq(timeout_object(py, set_here))? {
        return Ok(set_here);
    }
    parse_timeout(&seconds)
}

/// `min(SOMAXCONN, 128)`, CPython's default `listen()` backlog.
const DEFAULT_BACKLOG: c_int = if libc::SOMAXCONN < 128 { libc::SOMAXCONN } else { 128 };

/// The largest buffer `getsockopt(level, option, buflen)` accepts, as in CPython.
const GETSOCKOPT_MAX_BUFLEN: i32 = 1024;

#[pyclass(name = "socket", module = "rsock._rsock", subclass, weakref, frozen)]
pub struct Socket {
    fd: AtomicI32,
    family: AtomicI32,
    kind: AtomicI32,
    proto: AtomicI32,
    /// Nanoseconds; -1 blocking, 0 non-blocking, > 0 a timeout.
    timeout_ns: AtomicI64,
    /// Counted for the clients' sockets (`open`) only, whose close() is `close_waking`: the drop-in
    /// socket's calls make the stdlib's syscalls and nothing more.
    calls: Option<CallsInProgress>,
}

/// The calls of this process waiting on a socket's descriptor, so that `close_waking` shuts the
/// connection down only to wake them: shutdown(2) acts on the connection, which a forked child and
/// its parent share, so one made with no call to wake would end the other process's use of it too.
/// The count is tagged with the fork generation it was made in: a child inherits the counts of the
/// calls its parent's threads were making, which wait in the parent only.
#[derive(Default)]
struct CallsInProgress(AtomicU64);

impl CallsInProgress {
    /// Counts a call until the guard it returns is dropped. Sequentially consistent, as the loads of
    /// the descriptor after it and `close_waking`'s swap and `any()` are: either the close sees the
    /// call, or the call sees the descriptor closed.
    fn enter(&self) -> InProgress<'_> {
        let generation = crate::runtime::fork_generation() as u32;
        let _ = self.0.fetch_update(SeqCst, SeqCst, |tagged| {
            Some(if (tagged >> 32) as u32 == generation {
                tagged + 1
            } else {
                (u64::from(generation) << 32) | 1
            })
        });
        InProgress(&self.0)
    }

    /// Whether a call of this process is in progress.
    fn any(&self) -> bool {
        let tagged = self.0.load(SeqCst);
        (tagged >> 32) as u32 == crate::runtime::fork_generation() as u32 && tagged as u32 > 0
    }
}

struct InProgress<'a>(&'a AtomicU64);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// How a call waits for its descriptor before each attempt.
#[derive(Clone, Copy)]
enum Wait {
    /// Call at once (blocking or non-blocking descriptor).
    No,
    /// poll(2) until the deadline, then raise TimeoutError.
    Until(Instant),
    /// poll(2) with no deadline: a blocking connect() interrupted by a signal.
    Forever,
}

/// What one GIL-free attempt ended with.
enum Step<T> {
    Done(T),
    Interrupted,
    TimedOut,
    Failed(i32),
}

/// Why a socket call failed, before it becomes a Python exception.
enum CallError {
    TimedOut,
    Os(i32),
    /// A signal handler raised (KeyboardInterrupt, ...).
    Signal(PyErr),
}

impl CallError {
    fn into_pyerr(self) -> PyErr {
        match self {
            CallError::TimedOut => timeout_error(),
            CallError::Os(errno) => os_error(errno),
            CallError::Signal(err) => err,
        }
    }
}

/// `-1` from libc as the errno it set.
fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Waits up to `deadline` (or for ever) for `events` on `fd`; Ok(false) means the time ran out.
fn poll_fd(fd: RawFd, events: i16, deadline: Option<Instant>) -> Result<bool, i32> {
    let ms = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            // Round up so a wait never ends just before the deadline (CPython's ROUND_CEILING).
            left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int
        }
    };
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: pfd is one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n < 0 => Err(last_errno()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// One GIL-free attempt: wait as told, then run `op` until it succeeds, fails, or a signal arrives.
fn attempt<T>(socket_fd: &AtomicI32, events: i16, wait: Wait, op: &mut impl FnMut(RawFd) -> io::Result<T>) -> Step<T> {
    loop {
        // Read afresh each time round: once another thread has closed the socket (-1), its number may
        // already belong to another socket, which must not be polled or read. (SeqCst: see
        // CallsInProgress::enter.)
        let fd = socket_fd.load(SeqCst);
        let deadline = match wait {
            Wait::No => None,
            Wait::Until(d) => Some(Some(d)),
            Wait::Forever => Some(None),
        };
        // A closed socket (fd -1) goes straight to the call, which fails with EBADF, as in CPython.
        if let Some(deadline) = deadline
            && fd >= 0
        {
            match poll_fd(fd, events, deadline) {
                Ok(true) if socket_fd.load(SeqCst) != fd => continue,
                Ok(true) => {}
                Ok(false) => return Step::TimedOut,
                Err(libc::EINTR) => return Step::Interrupted,
                Err(errno) => return Step::Failed(errno),
            }
        }
        match op(fd) {
            Ok(value) => return Step::Done(value),
            Err(err) => match err.raw_os_error().unwrap_or(libc::EIO) {
                libc::EINTR => return Step::Interrupted,
                // poll said ready but the data went elsewhere (or poll and the call disagree, as
                // for MSG_ERRQUEUE): wait again, but not past the deadline.
                libc::EWOULDBLOCK if !matches!(wait, Wait::No) => {
                    if let Wait::Until(deadline) = wait
                        && Instant::now() >= deadline
                    {
                        return Step::TimedOut;
                    }
                    continue;
                }
                errno => return Step::Failed(errno),
            },
        }
    }
}

/// A timeout argument in nanoseconds, parsed and checked as CPython's `socket_parse_timeout` does.
pub(crate) fn parse_timeout(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    if value.is_none() {
        return Ok(-1);
    }
    let ns = if let Ok(f) = value.cast::<PyFloat>() {
        let seconds = f.value();
        if seconds.is_nan() {
            return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
        }
        // Round away from zero, like CPython's _PyTime_ROUND_TIMEOUT.
        let ns = seconds * 1e9;
        let ns = if ns >= 0.0 { ns.ceil() } else { ns.floor() };
        if !(i64::MIN as f64..i64::MAX as f64).contains(&ns) {
            return Err(PyOverflowError::new_err("timestamp out of range for platform time_t"));
        }
        ns as i64
    } else {
        // 3.13 made the type public as PyTime_t, and its message names it so.
        let message = if python_at_least(value.py(), 13) {
            "timestamp too large to convert to C PyTime_t"
        } else {
            "timestamp too large to convert to C _PyTime_t"
        };
        let too_large = || PyOverflowError::new_err(message);
        let seconds: i64 = value.extract().map_err(|e: PyErr| {
            if e.is_instance_of::<PyOverflowError>(value.py()) {
                too_large()
            } else {
                e
            }
        })?;
        seconds.checked_mul(1_000_000_000).ok_or_else(too_large)?
    };
    if ns < 0 {
        return Err(PyValueError::new_err("Timeout value out of range"));
    }
    Ok(ns)
}

fn timeout_object(py: Python<'_>, ns: i64) -> Py<PyAny> {
    if ns < 0 {
        py.None()
    } else {
        // Whole seconds exactly, as CPython's _PyTime_AsSecondsDouble: ns as f64 rounds above 2**53.
        let seconds = if ns % 1_000_000_000 == 0 {
            (ns / 1_000_000_000) as f64
        } else {
            ns as f64 / 1e9
        };
        PyFloat::new(py, seconds).into_any().unbind()
    }
}

fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    let mut flag: c_int = nonblocking.into();
    // SAFETY: FIONBIO reads one int from the pointer.
    check(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut flag) } as isize).map(drop)
}

fn close_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller gave up ownership of fd.
    check(unsafe { libc::close(fd) } as isize).map(drop)
}

/// close(2) as socket.close() does it: a peer that already reset the connection is not an error.
fn close_ignoring_reset(py: Python<'_>, fd: RawFd) -> PyResult<()> {
    match py.detach(|| close_fd(fd)) {
        Err(err) if err.raw_os_error() != Some(libc::ECONNRESET) => {
            Err(os_error(err.raw_os_error().unwrap_or(libc::EIO)))
        }
        _ => Ok(()),
    }
}

/// An option read into a plain number of the type's width (an int, or a vsock socket's 64-bit value).
fn getsockopt_value<T: Default + Copy>(fd: RawFd, level: c_int, option: c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as socklen_t;
    // SAFETY: value and len describe a valid buffer of T's size, for a plain number type.
    check(unsafe { libc::getsockopt(fd, level, option, (&mut value as *mut T).cast(), &mut len) } as isize)?;
    Ok(value)
}

/// A descriptor argument: any C long (as CPython takes it); one outside the range of descriptors
/// names no open file.
fn descriptor(obj: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd = c_long(obj)?;
    RawFd::try_from(fd).or_else(|_| if fd < 0 { Ok(-1) } else { Err(os_error(libc::EBADF)) })
}

/// Runs `call` (getsockname, getpeername, accept, recvfrom...) with room for any address and returns
/// its result with the address it wrote.
fn with_sockaddr<T>(
    call: impl FnOnce(*mut libc::sockaddr, *mut socklen_t) -> io::Result<T>,
) -> io::Result<(T, SockAddr)> {
    // SAFETY: try_init hands over zeroed storage of the maximum size and the matching length.
    unsafe { SockAddr::try_init(|storage, len| call(storage.cast(), len)) }
}

impl Socket {
    fn raw_fd(&self) -> RawFd {
        self.fd.load(Relaxed)
    }

    /// The wait for one I/O call under the current timeout.
    fn io_wait(&self) -> Wait {
        match self.timeout_ns.load(Relaxed) {
            ns if ns > 0 => Wait::Until(Instant::now() + Duration::from_nanos(ns as u64)),
            _ => Wait::No,
        }
    }

    /// Runs `op` on the descriptor with the GIL released, waiting for `events` as the timeout says,
    /// handling signals and retrying on EINTR: CPython's `sock_call_ex`.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        events: i16,
        wait: Wait,
        op: impl FnMut(RawFd) -> io::Result<T> + Send,
    ) -> PyResult<T> {
        self.call_raw(py, events, wait, op).map_err(CallError::into_pyerr)
    }

    /// `call`, first trying `op` without sleeping (MSG_DONTWAIT added to the flags it is given) for as
    /// long as `spin` allows: rsock's own clients poll for a reply before they sleep (see spin.rs). The
    /// drop-in socket passes None, and makes the stdlib's syscalls.
    fn call_polling_first<T: Send>(
        &self,
        py: Python<'_>,
        spin: Option<&ReplySpin>,
        events: i16,
        wait: Wait,
        mut op: impl FnMut(RawFd, c_int) -> io::Result<T> + Send,
    ) -> PyResult<T> {
        let Some(spin) = spin else {
            return self.call(py, events, wait, |fd| op(fd, 0));
        };
        let started = Instant::now();
        let budget = spin.budget();
        let polled = if budget.is_zero() {
            None
        } else {
            py.detach(|| poll_for(&self.fd, budget, &mut |fd| op(fd, libc::MSG_DONTWAIT)))
        };
        let result = match polled {
            Some(done) => done.map_err(|err| CallError::Os(err.raw_os_error().unwrap_or(libc::EIO)).into_pyerr()),
            None => self.call(py, events, wait, |fd| op(fd, 0)),
        };
        spin.waited(if result.is_ok() {
            started.elapsed()
        } else {
            Duration::MAX
        });
        result
    }

    /// `call`, with timeouts and OS errors left unraised for callers that report them otherwise.
    fn call_raw<T: Send>(
        &self,
        py: Python<'_>,
        events: i16,
        wait: Wait,
        mut op: impl FnMut(RawFd) -> io::Result<T> + Send,
    ) -> Result<T, CallError> {
        let _in_progress = self.calls.as_ref().map(CallsInProgress::enter);
        loop {
            match py.detach(|| attempt(&self.fd, events, wait, &mut op)) {
                Step::Done(value) => return Ok(value),
                Step::Interrupted => py.check_signals().map_err(CallError::Signal)?,
                Step::TimedOut => return Err(CallError::TimedOut),
                Step::Failed(errno) => return Err(CallError::Os(errno)),
            }
        }
    }

    pub(crate) fn set_timeout_ns(&self, ns: i64) -> PyResult<()> {
        self.timeout_ns.store(ns, Relaxed);
        set_nonblocking(self.raw_fd(), ns >= 0).map_err(|e| crate::errors::io_error(&e))
    }

    fn send_once(&self, py: Python<'_>, data: &[u8], flags: c_int, wait: Wait) -> PyResult<usize> {
        self.call(py, POLLOUT, wait, |fd| {
            // SAFETY: data is a valid slice for the duration of the call.
            check(unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) })
        })
    }

    /// send(2) until every byte is out; with a timeout, the deadline covers the whole call. The first
    /// send is always made, as CPython's: a timeout shorter than the time to get to it (a nanosecond)
    /// still sends what the socket takes at once, or raises the send's own error.
    pub(crate) fn send_all(&self, py: Python<'_>, mut bytes: &[u8], flags: c_int) -> PyResult<()> {
        let wait = self.io_wait();
        loop {
            let sent = self.send_once(py, bytes, flags, wait)?;
            bytes = &bytes[sent..];
            // send() may return a partial count when a signal arrives: run the handlers first.
            py.check_signals()?;
            if bytes.is_empty() {
                return Ok(());
            }
            if let Wait::Until(deadline) = wait
                && Instant::now() >= deadline
            {
                return Err(timeout_error());
            }
        }
    }

    /// A socket of `kind` for the family of `addr`, with `timeout_ns` set (-1: blocking).
    pub(crate) fn open(py: Python<'_>, domain: c_int, kind: c_int, timeout_ns: i64) -> PyResult<Socket> {
        // SAFETY: socket(2) takes plain integers.
        let fd = py.detach(|| unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) });
        if fd < 0 {
            return Err(os_error(last_errno()));
        }
        let sock = Socket {
            fd: AtomicI32::new(fd),
            family: AtomicI32::new(domain),
            kind: AtomicI32::new(kind),
            proto: AtomicI32::new(0),
            timeout_ns: AtomicI64::new(-1),
            calls: Some(CallsInProgress::default()),
        };
        sock.set_timeout_ns(timeout_ns)?;
        Ok(sock)
    }

    /// connect(2) with the socket's timeout, raising on failure.
    pub(crate) fn connect_to(&self, py: Python<'_>, addr: &SockAddr) -> PyResult<()> {
        self.connect_impl(py, addr, true).map(drop)
    }

    /// bind(2) to a C address.
    pub(crate) fn bind_to(&self, py: Python<'_>, addr: &SockAddr) -> PyResult<()> {
        let fd = self.raw_fd();
        // SAFETY: addr is a complete sockaddr of addr.len() bytes.
        let rc = py.detach(|| unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len()) });
        if rc < 0 { Err(os_error(last_errno())) } else { Ok(()) }
    }

    /// sendto(2) with the socket's timeout.
    pub(crate) fn send_to(&self, py: Python<'_>, bytes: &[u8], addr: &SockAddr) -> PyResult<usize> {
        self.call(py, POLLOUT, self.io_wait(), |fd| {
            // SAFETY: bytes and addr are valid for the duration of the call.
            check(unsafe {
                libc::sendto(
                    fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    addr.as_ptr().cast(),
                    addr.len(),
                )
            })
        })
    }

    /// setsockopt(2) with an int value.
    pub(crate) fn set_int_option(&self, level: c_int, option: c_int, value: c_int) -> PyResult<()> {
        // SAFETY: value is an int for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                self.raw_fd(),
                level,
                option,
                (&value as *const c_int).cast(),
                size_of::<c_int>() as socklen_t,
            )
        };
        if rc < 0 { Err(os_error(last_errno())) } else { Ok(()) }
    }

    /// The socket's own address.
    pub(crate) fn local_address(&self) -> PyResult<SockAddr> {
        self.kernel_address(libc::getsockname)
    }

    /// The address of the peer the socket is connected to, as the kernel has it.
    pub(crate) fn peer_address(&self) -> PyResult<SockAddr> {
        self.kernel_address(libc::getpeername)
    }

    /// What getsockname(2) or getpeername(2) says.
    fn kernel_address(
        &self,
        call: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int,
    ) -> PyResult<SockAddr> {
        let fd = self.raw_fd();
        with_sockaddr(|addr, len| {
            // SAFETY: addr/len describe valid address storage, as both calls take it.
            check(unsafe { call(fd, addr, len) } as isize)
        })
        .map(|(_, addr)| addr)
        .map_err(|e| crate::errors::io_error(&e))
    }

    /// Closes the descriptor (once).
    pub(crate) fn close_now(&self, py: Python<'_>) -> PyResult<()> {
        let fd = self.fd.swap(-1, Relaxed);
        if fd >= 0 { close_ignoring_reset(py, fd) } else { Ok(()) }
    }

    /// `close_now` for a client shared between threads: a shutdown first wakes the calls other
    /// threads are waiting in (a poll on a descriptor another thread closes never returns), which then
    /// find the socket closed. Without such a call, only the descriptor is closed, as a socket's
    /// close() does (see CallsInProgress).
    pub(crate) fn close_waking(&self, py: Python<'_>) -> PyResult<()> {
        let fd = self.fd.swap(-1, SeqCst);
        if fd < 0 {
            return Ok(());
        }
        if self.calls.as_ref().is_some_and(CallsInProgress::any) {
            // SAFETY: shutdown(2) takes plain integers; an error (not connected) changes nothing.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        close_ignoring_reset(py, fd)
    }

    /// The timeout calls on this socket wait for (None: for ever).
    pub(crate) fn wait_limit(&self) -> Option<Duration> {
        u64::try_from(self.timeout_ns.load(Relaxed))
            .ok()
            .map(Duration::from_nanos)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.raw_fd() < 0
    }

    /// "open" or "closed", for reprs.
    pub(crate) fn state_name(&self) -> &'static str {
        if self.is_closed() { "closed" } else { "open" }
    }

    pub(crate) fn fileno_raw(&self) -> RawFd {
        self.raw_fd()
    }

    /// recv(2) into `buf`, polling first as `spin` allows (None: the drop-in's plain call).
    pub(crate) fn recv_into_slice(
        &self,
        py: Python<'_>,
        spin: Option<&ReplySpin>,
        buf: &mut [MaybeUninit<u8>],
        flags: c_int,
    ) -> PyResult<usize> {
        self.call_polling_first(py, spin, POLLIN, self.io_wait(), |fd, polling| {
            // SAFETY: buf is valid for writes of its length for the duration of the call.
            check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags | polling) })
        })
    }

    /// recvfrom(2) waiting at most `timeout` (None: as long as it takes), whatever the socket's own
    /// timeout, polling first as `spin` allows; MSG_TRUNC makes the result the datagram's full length
    /// even when `buf` was smaller.
    pub(crate) fn recvfrom_within(
        &self,
        py: Python<'_>,
        spin: Option<&ReplySpin>,
        buf: &mut [MaybeUninit<u8>],
        timeout: Option<Duration>,
    ) -> PyResult<(usize, SockAddr)> {
        let (wait, flags) = match timeout {
            Some(t) => (Wait::Until(Instant::now() + t), libc::MSG_TRUNC | libc::MSG_DONTWAIT),
            None => (Wait::No, libc::MSG_TRUNC),
        };
        self.call_polling_first(py, spin, POLLIN, wait, |fd, polling| {
            with_sockaddr(|addr, len| {
                // SAFETY: buf is valid for writes of its length; addr/len describe the address storage.
                check(unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), flags | polling, addr, len) })
            })
        })
    }

    pub(crate) fn recvfrom_slice(
        &self,
        py: Python<'_>,
        buf: &mut [MaybeUninit<u8>],
        flags: c_int,
    ) -> PyResult<(usize, SockAddr)> {
        self.call(py, POLLIN, self.io_wait(), |fd| {
            with_sockaddr(|addr, len| {
                // SAFETY: buf is valid for writes of its length; addr/len describe the address storage.
                check(unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), flags, addr, len) })
            })
        })
    }

    /// recvmsg(2) into `spaces` with room for `ancbufsize` bytes of control messages; returns the
    /// byte count, the control messages, the flags and the sender's address.
    fn recvmsg_into_spaces<'py>(
        &self,
        py: Python<'py>,
        spaces: &[Space],
        ancbufsize: isize,
        flags: c_int,
    ) -> PyResult<(usize, Bound<'py, PyList>, i32, Bound<'py, PyAny>)> {
        // CPython's bound: msg_controllen must fit a socklen_t (INT_MAX on Linux).
        let ancbufsize = usize::try_from(ancbufsize)
            .ok()
            .filter(|&n| n <= i32::MAX as usize)
            .ok_or_else(|| PyValueError::new_err("invalid ancillary data buffer length"))?;
        let mut control = zeroed_vec(ancbufsize)?;
        let ((received, msg_flags, control_len), addr) = self.call(py, POLLIN, self.io_wait(), |fd| {
            with_sockaddr(|name, name_len| {
                let mut iov: Vec<libc::iovec> = spaces
                    .iter()
                    .map(|space| libc::iovec {
                        iov_base: space.ptr.cast(),
                        iov_len: space.len,
                    })
                    .collect();
                // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_name = name.cast();
                // SAFETY: name_len points at the storage's length, set by with_sockaddr.
                msg.msg_namelen = unsafe { *name_len };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len();
                if !control.is_empty() {
                    msg.msg_control = control.as_mut_ptr().cast();
                    msg.msg_controllen = control.len();
                }
                // SAFETY: msg describes buffers that are valid for the duration of the call.
                let received = check(unsafe { libc::recvmsg(fd, &mut msg, flags) })?;
                // SAFETY: as above; the kernel reports the address length it wrote.
                unsafe { *name_len = msg.msg_namelen };
                Ok((received, msg.msg_flags, msg.msg_controllen))
            })
        })?;
        let ancdata = ancillary::unpack(py, &control[..control_len.min(control.len())])?;
        Ok((received, ancdata, msg_flags, from_sockaddr(py, &addr)?))
    }

    fn sockaddr_arg(&self, py: Python<'_>, address: &Bound<'_, PyAny>, caller: &str) -> PyResult<SockAddr> {
        to_sockaddr(py, self.family.load(Relaxed), address, caller)
    }

    /// connect(2) as CPython's `internal_connect`: returns 0 or, when `raise` is false, the errno.
    fn connect_impl(&self, py: Python<'_>, addr: &SockAddr, raise: bool) -> PyResult<i32> {
        let fd = self.raw_fd();
        // SAFETY: addr is a complete sockaddr of addr.len() bytes.
        let rc = py.detach(|| unsafe { libc::connect(fd, addr.as_ptr().cast(), addr.len()) });
        if rc == 0 {
            return Ok(0);
        }
        let err = last_errno();
        let timeout = self.timeout_ns.load(Relaxed);
        let wait_connect = if err == libc::EINTR {
            py.check_signals()?;
            // The connection goes on in the background: a socket that may block waits for it.
            timeout != 0
        } else {
            timeout > 0 && err == libc::EINPROGRESS
        };
        let fail = |errno: i32| if raise { Err(os_error(errno)) } else { Ok(errno) };
        if !wait_connect {
            return fail(err);
        }
        let wait = match self.io_wait() {
            Wait::No => Wait::Forever,
            until => until,
        };
        let outcome = self.call_raw(py, POLLOUT | POLLERR, wait, |fd| {
            match getsockopt_value::<c_int>(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
                0 | libc::EISCONN => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        });
        match outcome {
            Ok(()) => Ok(0),
            Err(CallError::TimedOut) if !raise => Ok(libc::EWOULDBLOCK),
            Err(CallError::Os(errno)) if !raise => Ok(errno),
            Err(err) => Err(err.into_pyerr()),
        }
    }
}

impl Socket {
    /// One sendmsg(2) of `chunks` with the control data `control`, to `addr` if given.
    fn send_message(
        &self,
        py: Python<'_>,
        chunks: &[Vec<u8>],
        control: &[u8],
        flags: c_int,
        addr: Option<&SockAddr>,
    ) -> PyResult<usize> {
        self.call(py, POLLOUT, self.io_wait(), |fd| {
            let mut iov: Vec<libc::iovec> = chunks
                .iter()
                .map(|c| libc::iovec {
                    iov_base: c.as_ptr() as *mut c_void,
                    iov_len: c.len(),
                })
                .collect();
            // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            if !control.is_empty() {
                msg.msg_control = control.as_ptr() as *mut c_void;
                msg.msg_controllen = control.len();
            }
            if let Some(addr) = &addr {
                msg.msg_name = addr.as_ptr() as *mut c_void;
                msg.msg_namelen = addr.len();
            }
            // SAFETY: msg describes buffers that are valid for the duration of the call.
            check(unsafe { libc::sendmsg(fd, &msg, flags) })
        })
    }
}

/// The buffers of sendmsg()'s (or sendmsg_afalg()'s) first argument, an iterable of bytes-like
/// objects, as bytes. CPython names sendmsg() in the error for both.
fn read_buffers(buffers: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let iter = iterate(buffers, "sendmsg() argument 1 must be an iterable")?;
    iter.map(|b| crate::buffer::read_bytes(&b?)).collect()
}

impl Drop for Socket {
    /// A socket collected while open warns and closes, as CPython's socket finalizer does. (The
    /// Python subclass warns from `__del__` with the object as the warning's source and closes it
    /// there, so this only speaks for bare native sockets.)
    fn drop(&mut self) {
        let description = self.__repr__();
        self.close_unclosed(&description);
    }
}

impl Socket {
    /// A receive by `read` into a new `bytes` of at most `bufsize` bytes; `padded`, of the length the
    /// call reports, as CPython's recv() and recvfrom() give MSG_TRUNC's full datagram length (zero
    /// past what fits). Under MSG_TRUNC the kernel reports bytes it never wrote (TCP discards them; a
    /// datagram socket with SO_PEEK_OFF writes only what lies past the offset), whatever the socket
    /// was said to be when made: that read goes to zeroed storage, which calloc gives without touching
    /// it however large, so no result shows memory that was never received.
    fn recv_new_bytes<'py, R>(
        py: Python<'py>,
        bufsize: usize,
        flags: c_int,
        padded: bool,
        read: impl FnOnce(&mut [MaybeUninit<u8>]) -> PyResult<(usize, R)>,
    ) -> PyResult<(Bound<'py, PyBytes>, R)> {
        if flags & libc::MSG_TRUNC == 0 {
            let mut writer = BytesWriter::new(py, bufsize)?;
            let (received, rest) = read(writer.space())?;
            return Ok((writer.finish(received)?, rest));
        }
        check_bytes_len(bufsize)?;
        let mut storage = zeroed_vec(bufsize)?;
        let (received, rest) = read(as_uninit(&mut storage))?;
        let kept = received.min(bufsize);
        let length = if padded { received } else { kept };
        // new_with hands over its bytes zeroed.
        let bytes = PyBytes::new_with(py, length, |bytes| {
            bytes[..kept].copy_from_slice(&storage[..kept]);
            Ok(())
        })?;
        Ok((bytes, rest))
    }

    /// For an owner being collected: if the descriptor is still open, warn that `owner` was left
    /// unclosed (as CPython's socket finalizer does), then close it.
    pub(crate) fn close_unclosed(&self, owner: &str) {
        let fd = self.fd.swap(-1, Relaxed);
        if fd < 0 {
            return;
        }
        // The owner may be collected while an exception is on its way up (a client made and dropped
        // in one failing call).
        Python::attach(|py| warn_from_finalizer::<PyResourceWarning>(py, &format!("unclosed {owner}")));
        let _ = close_fd(fd);
    }
}

#[pymethods]
impl Socket {
    /// Like `_socket.socket.__new__`: an unopened socket; `__init__` opens or adopts the descriptor,
    /// so subclasses may take other constructor arguments.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> Self {
        Socket {
            fd: AtomicI32::new(-1),
            family: AtomicI32::new(0),
            kind: AtomicI32::new(0),
            proto: AtomicI32::new(0),
            timeout_ns: AtomicI64::new(-1),
            calls: None,
        }
    }

    #[pyo3(signature = (family=Opt::Absent, r#type=Opt::Absent, proto=Opt::Absent, fileno=None))]
    fn __init__(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        family: Opt<'_>,
        r#type: Opt<'_>,
        proto: Opt<'_>,
        fileno: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut family = as_int_or(&family, -1)?;
        let mut r#type = as_int_or(&r#type, -1)?;
        let mut proto = as_int_or(&proto, -1)?;
        audit::new_socket(slf.as_any(), family, r#type, proto)?;
        let this = slf.get();
        let fd = match fileno.filter(|f| !f.is_none()) {
            Some(fileno) => {
                let fd = descriptor(fileno)?;
                if fd < 0 {
                    return Err(PyValueError::new_err("negative file descriptor"));
                }
                // Check that fd is a socket and learn what it is, as CPython does.
                match with_sockaddr(|addr, len| {
                    // SAFETY: addr/len describe valid address storage.
                    check(unsafe { libc::getsockname(fd, addr, len) } as isize)
                }) {
                    Ok((_, addr)) if family == -1 => family = i32::from(addr.family()),
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => {
                        return Err(os_error(e.raw_os_error().unwrap_or(libc::EBADF)));
                    }
                    Err(_) => {}
                }
                if r#type == -1 {
                    r#type = getsockopt_value::<c_int>(fd, libc::SOL_SOCKET, libc::SO_TYPE)
                        .map_err(|e| crate::errors::io_error(&e))?;
                }
                if proto == -1 {
                    proto = getsockopt_value::<c_int>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
                        .map_err(|e| crate::errors::io_error(&e))?;
                }
                fd
            }
            None => {
                if family == -1 {
                    family = libc::AF_INET;
                }
                if r#type == -1 {
                    r#type = libc::SOCK_STREAM;
                }
                if proto == -1 {
                    proto = 0;
                }
                let flags = r#type | libc::SOCK_CLOEXEC;
                // SAFETY: socket(2) takes plain integers.
                let fd = py.detach(|| unsafe { libc::socket(family, flags, proto) });
                if fd < 0 {
                    return Err(os_error(last_errno()));
                }
                fd
            }
        };
        this.fd.store(fd, Relaxed);
        this.family.store(family, Relaxed);
        this.kind
            .store(r#type & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC), Relaxed);
        this.proto.store(proto, Relaxed);
        if r#type & libc::SOCK_NONBLOCK != 0 {
            this.timeout_ns.store(0, Relaxed);
            return Ok(());
        }
        let default = default_timeout_ns(py)?;
        this.timeout_ns.store(default, Relaxed);
        if default >= 0
            && let Err(err) = set_nonblocking(fd, true)
        {
            this.fd.store(-1, Relaxed);
            let _ = close_fd(fd);
            return Err(crate::errors::io_error(&err));
        }
        Ok(())
    }

    /// The address family.
    #[getter]
    fn family(&self) -> i32 {
        self.family.load(Relaxed)
    }

    /// The socket type.
    #[getter]
    fn r#type(&self) -> i32 {
        self.kind.load(Relaxed)
    }

    /// The protocol number.
    #[getter]
    fn proto(&self) -> i32 {
        self.proto.load(Relaxed)
    }

    /// The timeout in seconds, or None.
    #[getter]
    fn timeout(&self, py: Python<'_>) -> Py<PyAny> {
        timeout_object(py, self.timeout_ns.load(Relaxed))
    }

    #[setter(proto)]
    fn set_proto(&self, _value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Err(PyAttributeError::new_err("readonly attribute"))
    }

    fn __repr__(&self) -> String {
        format!(
            "<socket object, fd={}, family={}, type={}, proto={}>",
            self.raw_fd(),
            self.family(),
            self.r#type(),
            self.proto()
        )
    }

    fn fileno(&self) -> i32 {
        self.raw_fd()
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.close_now(py)
    }

    /// The finalizer CPython's socket type has: a subclass's `__del__` may call it with `super()`, and a
    /// subclass that defines none is given it as its finalizer by Python. A socket collected while open
    /// warns, with itself as the warning's source, and is closed; what close(2) reports is ignored, as
    /// CPython ignores it (the descriptor may have been closed behind the socket's back, and a finalizer
    /// has no caller to tell). A warning turned into an error propagates, and Python reports it.
    fn __del__(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().raw_fd() < 0 {
            return Ok(());
        }
        // As CPython's: through the C API, which imports nothing, so it also works late in interpreter
        // exit. SAFETY: `slf` is alive for the call, and "%R" takes the one object given.
        let warned =
            unsafe { pyo3::ffi::PyErr_ResourceWarning(slf.as_ptr(), 1, c"unclosed %R".as_ptr(), slf.as_ptr()) };
        let warned = if warned < 0 {
            Err(PyErr::fetch(slf.py()))
        } else {
            Ok(())
        };
        let fd = slf.get().fd.swap(-1, Relaxed);
        if fd >= 0 {
            let _ = close_fd(fd);
        }
        warned
    }

    fn detach(&self) -> i32 {
        self.fd.swap(-1, Relaxed)
    }

    #[pyo3(signature = (value, /))]
    fn settimeout(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_timeout_ns(parse_timeout(value)?)
    }

    fn gettimeout(&self, py: Python<'_>) -> Py<PyAny> {
        timeout_object(py, self.timeout_ns.load(Relaxed))
    }

    #[pyo3(signature = (flag, /))]
    fn setblocking(&self, flag: &Bound<'_, PyAny>) -> PyResult<()> {
        // From 3.12 CPython takes the flag's truth value; before, it required an int that fits a C long.
        let blocking = if python_at_least(flag.py(), 12) {
            flag.is_truthy()?
        } else {
            c_long(flag)? != 0
        };
        self.set_timeout_ns(if blocking { -1 } else { 0 })
    }

    fn getblocking(&self) -> bool {
        self.timeout_ns.load(Relaxed) != 0
    }

    #[pyo3(signature = (address, /))]
    fn bind(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let (this, py) = (slf.get(), slf.py());
        let addr = this.sockaddr_arg(py, address, "bind")?;
        audit::socket_address(c"socket.bind", slf.as_any(), address)?;
        this.bind_to(py, &addr)
    }

    #[pyo3(signature = (backlog=Opt::Absent, /))]
    fn listen(&self, py: Python<'_>, backlog: Opt<'_>) -> PyResult<()> {
        let backlog = c_int_or(&backlog, DEFAULT_BACKLOG)?;
        let fd = self.raw_fd();
        // SAFETY: listen(2) takes plain integers.
        let rc = py.detach(|| unsafe { libc::listen(fd, backlog.max(0)) });
        if rc < 0 { Err(os_error(last_errno())) } else { Ok(()) }
    }

    /// accept(2): the new descriptor and the peer's address; `accept()` wraps them in a socket.
    fn _accept<'py>(&self, py: Python<'py>) -> PyResult<(i32, Bound<'py, PyAny>)> {
        let (fd, addr) = self.call(py, POLLIN, self.io_wait(), |fd| {
            with_sockaddr(|addr, len| {
                // SAFETY: addr/len describe valid address storage.
                check(unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC) } as isize)
            })
        })?;
        let fd = fd as RawFd;
        match from_sockaddr(py, &addr) {
            Ok(address) => Ok((fd, address)),
            Err(err) => {
                let _ = close_fd(fd);
                Err(err)
            }
        }
    }

    #[pyo3(signature = (address, /))]
    fn connect(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let (this, py) = (slf.get(), slf.py());
        let addr = this.sockaddr_arg(py, address, "connect")?;
        audit::socket_address(c"socket.connect", slf.as_any(), address)?;
        this.connect_impl(py, &addr, true).map(drop)
    }

    #[pyo3(signature = (address, /))]
    fn connect_ex(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<i32> {
        let (this, py) = (slf.get(), slf.py());
        let addr = this.sockaddr_arg(py, address, "connect_ex")?;
        audit::socket_address(c"socket.connect", slf.as_any(), address)?;
        this.connect_impl(py, &addr, false)
    }

    #[pyo3(signature = (data, flags=Opt::Absent, /))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, flags: Opt<'_>) -> PyResult<usize> {
        with_readable(data, |bytes| {
            self.send_once(py, bytes, c_int_or(&flags, 0)?, self.io_wait())
        })?
    }

    /// send(2) until every byte is out; with a timeout, the deadline covers the whole call.
    #[pyo3(signature = (data, flags=Opt::Absent, /))]
    fn sendall(&self, py: Python<'_>, data: &Bound<'_, PyAny>, flags: Opt<'_>) -> PyResult<()> {
        with_readable(data, |bytes| self.send_all(py, bytes, c_int_or(&flags, 0)?))?
    }

    /// `sendto(data, address)` or `sendto(data, flags, address)`.
    #[pyo3(signature = (*args))]
    fn sendto(slf: &Bound<'_, Self>, args: &Bound<'_, PyTuple>) -> PyResult<usize> {
        let (this, py) = (slf.get(), slf.py());
        let n = args.len();
        if !(2..=3).contains(&n) {
            return Err(PyTypeError::new_err(format!(
                "sendto() takes 2 or 3 arguments ({n} given)"
            )));
        }
        // Checked in the stdlib's order: the data, then the flags, then the address.
        with_readable(&args.get_item(0)?, |bytes| {
            let flags = if n == 3 { c_int(&args.get_item(1)?)? } else { 0 };
            let address = args.get_item(n - 1)?;
            let addr = this.sockaddr_arg(py, &address, "sendto")?;
            audit::socket_address(c"socket.sendto", slf.as_any(), &address)?;
            this.call(py, POLLOUT, this.io_wait(), |fd| {
                // SAFETY: bytes and addr are valid for the duration of the call.
                check(unsafe {
                    libc::sendto(
                        fd,
                        bytes.as_ptr().cast(),
                        bytes.len(),
                        flags,
                        addr.as_ptr().cast(),
                        addr.len(),
                    )
                })
            })
        })?
    }

    #[pyo3(signature = (bufsize, flags=Opt::Absent, /))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        bufsize: &Bound<'py, PyAny>,
        flags: Opt<'py>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (bufsize, flags) = (ssize(bufsize)?, c_int_or(&flags, 0)?);
        if bufsize < 0 {
            return Err(PyValueError::new_err("negative buffersize in recv"));
        }
        if bufsize == 0 {
            // As CPython: nothing asked for, nothing read, no waiting.
            return Ok(PyBytes::new(py, b""));
        }
        let (bytes, ()) = Self::recv_new_bytes(py, bufsize as usize, flags, true, |storage| {
            Ok((self.recv_into_slice(py, None, storage, flags)?, ()))
        })?;
        Ok(bytes)
    }

    #[pyo3(signature = (buffer, nbytes=Opt::Absent, flags=Opt::Absent))]
    fn recv_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, nbytes: Opt<'_>, flags: Opt<'_>) -> PyResult<usize> {
        with_writable(buffer, "recv_into() argument 1", |buf| {
            let (nbytes, flags) = (ssize_or(&nbytes, 0)?, c_int_or(&flags, 0)?);
            if nbytes < 0 {
                return Err(PyValueError::new_err("negative buffersize in recv_into"));
            }
            let want = if nbytes == 0 { buf.len() } else { nbytes as usize };
            if want > buf.len() {
                return Err(PyValueError::new_err("buffer too small for requested bytes"));
            }
            if want == 0 {
                return Ok(0);
            }
            self.recv_into_slice(py, None, as_uninit(&mut buf[..want]), flags)
        })?
    }

    #[pyo3(signature = (bufsize, flags=Opt::Absent, /))]
    fn recvfrom<'py>(
        &self,
        py: Python<'py>,
        bufsize: &Bound<'py, PyAny>,
        flags: Opt<'py>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyAny>)> {
        let (bufsize, flags) = (ssize(bufsize)?, c_int_or(&flags, 0)?);
        if bufsize < 0 {
            return Err(PyValueError::new_err("negative buffersize in recvfrom"));
        }
        let (bytes, addr) = Self::recv_new_bytes(py, bufsize as usize, flags, true, |storage| {
            self.recvfrom_slice(py, storage, flags)
        })?;
        Ok((bytes, from_sockaddr(py, &addr)?))
    }

    #[pyo3(signature = (buffer, nbytes=Opt::Absent, flags=Opt::Absent))]
    fn recvfrom_into<'py>(
        &self,
        py: Python<'py>,
        buffer: &Bound<'py, PyAny>,
        nbytes: Opt<'py>,
        flags: Opt<'py>,
    ) -> PyResult<(usize, Bound<'py, PyAny>)> {
        with_writable(buffer, "recvfrom_into() argument 1", |buf| {
            let (nbytes, flags) = (ssize_or(&nbytes, 0)?, c_int_or(&flags, 0)?);
            if nbytes < 0 {
                return Err(PyValueError::new_err("negative buffersize in recvfrom_into"));
            }
            let want = if nbytes == 0 { buf.len() } else { nbytes as usize };
            if want > buf.len() {
                return Err(PyValueError::new_err("nbytes is greater than the length of the buffer"));
            }
            let (received, addr) = self.recvfrom_slice(py, as_uninit(&mut buf[..want]), flags)?;
            Ok((received, from_sockaddr(py, &addr)?))
        })?
    }

    /// `sendmsg(buffers[, ancdata[, flags[, address]]])`: gathers the buffers and the control
    /// messages into one sendmsg(2).
    #[pyo3(signature = (buffers, ancdata=Opt::Absent, flags=Opt::Absent, address=None, /))]
    fn sendmsg(
        slf: &Bound<'_, Self>,
        buffers: &Bound<'_, PyAny>,
        ancdata: Opt<'_>,
        flags: Opt<'_>,
        address: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let (this, py) = (slf.get(), slf.py());
        // Checked in CPython's order (flags, address, the audit event, buffers, control messages), so
        // that a call with two bad arguments raises the same error.
        let flags = c_int_or(&flags, 0)?;
        let addr = address.map(|a| this.sockaddr_arg(py, a, "sendmsg")).transpose()?;
        audit::socket_address(
            c"socket.sendmsg",
            slf.as_any(),
            address.unwrap_or(&py.None().into_bound(py)),
        )?;
        let chunks = read_buffers(buffers)?;
        let control = ancillary::pack(&ancillary::parse_or_empty(&ancdata)?)?;
        this.send_message(py, &chunks, &control, flags, addr.as_ref())
    }

    /// `sendmsg_afalg([msg, ]*, op[, iv[, assoclen[, flags]]])`: sendmsg() on an AF_ALG socket (the
    /// kernel's crypto API) with the control messages for the operation `op` (ALG_OP_ENCRYPT,
    /// ALG_OP_DECRYPT), the `iv` and the AEAD `assoclen`; its arguments are checked as CPython's are.
    #[pyo3(signature = (msg=None, *, op=None, iv=None, assoclen=None, flags=Opt::Absent))]
    fn sendmsg_afalg(
        &self,
        py: Python<'_>,
        msg: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        iv: Option<&Bound<'_, PyAny>>,
        assoclen: Option<&Bound<'_, PyAny>>,
        flags: Opt<'_>,
    ) -> PyResult<usize> {
        if self.family.load(Relaxed) != libc::AF_ALG {
            return Err(PyOSError::new_err("algset is only supported for AF_ALG"));
        }
        // Both must be ints (not merely have __index__), as CPython's argument parsing says.
        let int_argument = |value: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<i32>> {
            value
                .map(|value| match value.cast::<pyo3::types::PyInt>() {
                    // An op out of a C int's range is the TypeError below, as CPython overrides its error.
                    Ok(int) if name == "op" => Ok(int.extract::<i32>().unwrap_or(-1)),
                    Ok(int) => c_int(int.as_any()),
                    Err(_) => Err(PyTypeError::new_err(format!(
                        "sendmsg_afalg() argument '{name}' must be int, not {}",
                        crate::addr::type_name(value)
                    ))),
                })
                .transpose()
        };
        let op = int_argument(op, "op")?;
        // Only whether it is bytes-like, in the order of the arguments; its size after op's and assoclen's checks.
        iv.map(|iv| crate::buffer::with_readable(iv, |_| ())).transpose()?;
        let assoclen = int_argument(assoclen, "assoclen")?;
        let flags = c_int_or(&flags, 0)?;
        let Some(op) = op.and_then(|op| u32::try_from(op).ok()) else {
            return Err(PyTypeError::new_err("Invalid or missing argument 'op'"));
        };
        let assoclen = assoclen
            .map(|assoclen| u32::try_from(assoclen).map_err(|_| PyTypeError::new_err("assoclen must be positive")))
            .transpose()?;
        let iv = iv
            .map(|iv| crate::buffer::with_readable(iv, ancillary::afalg_iv)?)
            .transpose()?;
        let control = ancillary::pack(&ancillary::afalg(op, iv, assoclen))?;
        let chunks = match msg {
            Some(msg) => read_buffers(msg)?,
            None => Vec::new(),
        };
        self.send_message(py, &chunks, &control, flags, None)
    }

    /// `recvmsg(bufsize[, ancbufsize[, flags]])` → `(data, ancdata, msg_flags, address)`.
    #[pyo3(signature = (bufsize, ancbufsize=Opt::Absent, flags=Opt::Absent, /))]
    fn recvmsg<'py>(
        &self,
        py: Python<'py>,
        bufsize: &Bound<'py, PyAny>,
        ancbufsize: Opt<'py>,
        flags: Opt<'py>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // All three are converted before any is checked, as CPython parses its arguments first.
        let (bufsize, ancbufsize, flags) = (ssize(bufsize)?, ssize_or(&ancbufsize, 0)?, c_int_or(&flags, 0)?);
        if bufsize < 0 {
            return Err(PyValueError::new_err("negative buffer size in recvmsg()"));
        }
        // As CPython's, the result holds at most bufsize bytes whatever MSG_TRUNC reports.
        let (bytes, (ancdata, msg_flags, addr)) =
            Self::recv_new_bytes(py, bufsize as usize, flags, false, |storage| {
                let (received, ancdata, msg_flags, addr) =
                    self.recvmsg_into_spaces(py, &[Space::from(storage)], ancbufsize, flags)?;
                Ok((received, (ancdata, msg_flags, addr)))
            })?;
        (bytes, ancdata, msg_flags, addr).into_pyobject(py)
    }

    /// `recvmsg_into(buffers[, ancbufsize[, flags]])` → `(nbytes, ancdata, msg_flags, address)`.
    #[pyo3(signature = (buffers, ancbufsize=Opt::Absent, flags=Opt::Absent, /))]
    fn recvmsg_into<'py>(
        &self,
        py: Python<'py>,
        buffers: &Bound<'py, PyAny>,
        ancbufsize: Opt<'py>,
        flags: Opt<'py>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (ancbufsize, flags) = (ssize_or(&ancbufsize, 0)?, c_int_or(&flags, 0)?);
        let iter = iterate(buffers, "recvmsg_into() argument 1 must be an iterable")?;
        let mut views = iter
            .map(|b| {
                WritableView::new(
                    &b?,
                    "recvmsg_into() argument 1 must be an iterable of single-segment read-write buffers",
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        let spaces: Vec<Space> = views.iter_mut().map(WritableView::space).collect();
        let (received, ancdata, msg_flags, addr) = self.recvmsg_into_spaces(py, &spaces, ancbufsize, flags)?;
        (received, ancdata, msg_flags, addr).into_pyobject(py)
    }

    #[pyo3(signature = (how, /))]
    fn shutdown(&self, py: Python<'_>, how: &Bound<'_, PyAny>) -> PyResult<()> {
        let how = as_int(how)?;
        let fd = self.raw_fd();
        // SAFETY: shutdown(2) takes plain integers.
        let rc = py.detach(|| unsafe { libc::shutdown(fd, how) });
        if rc < 0 { Err(os_error(last_errno())) } else { Ok(()) }
    }

    fn getsockname<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.raw_fd();
        let (_, addr) = with_sockaddr(|addr, len| {
            // SAFETY: addr/len describe valid address storage.
            check(unsafe { libc::getsockname(fd, addr, len) } as isize)
        })
        .map_err(|e| crate::errors::io_error(&e))?;
        from_sockaddr(py, &addr)
    }

    fn getpeername<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.raw_fd();
        let (_, addr) = with_sockaddr(|addr, len| {
            // SAFETY: addr/len describe valid address storage.
            check(unsafe { libc::getpeername(fd, addr, len) } as isize)
        })
        .map_err(|e| crate::errors::io_error(&e))?;
        from_sockaddr(py, &addr)
    }

    /// `setsockopt(level, option, value: int | buffer)` or `setsockopt(level, option, None, optlen)`,
    /// tried in that order as CPython does, so a bad call fails with the last form's error.
    #[pyo3(signature = (*args))]
    fn setsockopt(&self, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let fd = self.raw_fd();
        let set = |level: c_int, option: c_int, ptr: *const c_void, len: socklen_t| {
            // SAFETY: ptr is NULL or valid for len bytes for the duration of the call.
            let rc = unsafe { libc::setsockopt(fd, level, option, ptr, len) };
            if rc < 0 { Err(os_error(last_errno())) } else { Ok(()) }
        };
        let ints = |n: usize| -> PyResult<Vec<c_int>> { (0..n).map(|i| c_int(&args.get_item(i)?)).collect() };
        if self.family.load(Relaxed) == libc::AF_VSOCK {
            // As CPython: a vsock socket's options are 64-bit (its buffer sizes), set from an int only
            // ("iiK": wrapped rather than range-checked), whatever the level.
            if args.len() != 3 {
                return Err(PyTypeError::new_err(format!(
                    "setsockopt() takes exactly 3 arguments ({} given)",
                    args.len()
                )));
            }
            let v = ints(2)?;
            let value = args.get_item(2)?;
            if !value.is_instance_of::<pyo3::types::PyInt>() {
                return Err(PyTypeError::new_err(format!(
                    "setsockopt() argument 3 must be int, not {}",
                    crate::addr::type_name(&value)
                )));
            }
            // SAFETY: an int object, read while attached; the mask never fails for one.
            let value: u64 = unsafe { pyo3::ffi::PyLong_AsUnsignedLongLongMask(value.as_ptr()) };
            return set(v[0], v[1], (&value as *const u64).cast(), size_of::<u64>() as socklen_t);
        }
        if args.len() == 3
            && let Ok(v) = ints(3)
        {
            return set(
                v[0],
                v[1],
                (&v[2] as *const c_int).cast(),
                size_of::<c_int>() as socklen_t,
            );
        }
        if args.len() == 4
            && args.get_item(2)?.is_none()
            && let Ok(v) = ints(2)
        {
            // "I": an unsigned int, wrapped rather than range-checked.
            let optlen = crate::addr::c_uint_masked(&args.get_item(3)?).map(|n| n as socklen_t);
            if let Ok(optlen) = optlen {
                return set(v[0], v[1], std::ptr::null(), optlen);
            }
        }
        if args.len() != 3 {
            return Err(PyTypeError::new_err(format!(
                "setsockopt() takes exactly 3 arguments ({} given)",
                args.len()
            )));
        }
        let v = ints(2)?;
        with_readable(&args.get_item(2)?, |bytes| {
            set(v[0], v[1], bytes.as_ptr().cast(), bytes.len() as socklen_t)
        })?
    }

    #[pyo3(signature = (level, option, buflen=Opt::Absent, /))]
    fn getsockopt(
        &self,
        py: Python<'_>,
        level: &Bound<'_, PyAny>,
        option: &Bound<'_, PyAny>,
        buflen: Opt<'_>,
    ) -> PyResult<Py<PyAny>> {
        let (level, option, buflen) = (c_int(level)?, c_int(option)?, c_int_or(&buflen, 0)?);
        let fd = self.raw_fd();
        let vsock = self.family.load(Relaxed) == libc::AF_VSOCK;
        if buflen == 0 {
            // As CPython: a vsock socket's options are 64-bit.
            let value: io::Result<i128> = if vsock {
                getsockopt_value::<u64>(fd, level, option).map(i128::from)
            } else {
                getsockopt_value::<c_int>(fd, level, option).map(i128::from)
            };
            let value = value.map_err(|e| crate::errors::io_error(&e))?;
            return Ok(value.into_pyobject(py)?.into_any().unbind());
        }
        if vsock {
            return Err(PyOSError::new_err("getsockopt string buffer not allowed"));
        }
        if !(1..=GETSOCKOPT_MAX_BUFLEN).contains(&buflen) {
            return Err(PyOSError::new_err("getsockopt buflen out of range"));
        }
        let mut buf = vec![0u8; buflen as usize];
        let mut len = buflen as socklen_t;
        // SAFETY: buf and len describe a valid buffer.
        let rc = unsafe { libc::getsockopt(fd, level, option, buf.as_mut_ptr().cast(), &mut len) };
        if rc < 0 {
            return Err(os_error(last_errno()));
        }
        // Some options report the length they need rather than the length written (netlink's
        // membership list): only what the buffer holds is returned.
        let written = (len as usize).min(buf.len());
        Ok(PyBytes::new(py, &buf[..written]).into_any().unbind())
    }

    fn get_inheritable(&self) -> PyResult<bool> {
        // SAFETY: F_GETFD takes no argument.
        let flags = unsafe { libc::fcntl(self.raw_fd(), libc::F_GETFD) };
        if flags < 0 {
            return Err(os_error(last_errno()));
        }
        Ok(flags & libc::FD_CLOEXEC == 0)
    }

    fn set_inheritable(&self, inheritable: &Bound<'_, PyAny>) -> PyResult<()> {
        let fd = self.raw_fd();
        let request = if as_int(inheritable)? != 0 {
            libc::FIONCLEX
        } else {
            libc::FIOCLEX
        };
        // SAFETY: FIOCLEX/FIONCLEX take no argument.
        if unsafe { libc::ioctl(fd, request) } < 0 {
            return Err(os_error(last_errno()));
        }
        Ok(())
    }

    /// One sendfile(2) call of up to `count` bytes of `file_fd` from `offset`, waiting as the timeout
    /// says; `socket.sendfile()` loops over it. `count` is a C ssize_t, as `os.sendfile()` takes it (a
    /// larger one is an OverflowError there too).
    pub(crate) fn _sendfile(&self, py: Python<'_>, file_fd: RawFd, offset: i64, count: isize) -> PyResult<usize> {
        self.call(py, POLLOUT, self.io_wait(), |fd| {
            let mut off: libc::off_t = offset;
            // SAFETY: off is a valid offset for the call; the descriptors are plain integers. A
            // negative count becomes a huge size_t, which the kernel clamps, as for os.sendfile().
            check(unsafe { libc::sendfile(fd, file_fd, &mut off, count as usize) })
        })
    }
}

#[pyfunction]
fn getdefaulttimeout(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    stdlib_socket(py)?.call_method0(interned!(py, "getdefaulttimeout"))
}

#[pyfunction]
#[pyo3(signature = (timeout, /))]
fn setdefaulttimeout(timeout: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = timeout.py();
    stdlib_socket(py)?.call_method1(interned!(py, "setdefaulttimeout"), (timeout,))?;
    SET_HERE_NS.store(parse_timeout(timeout)?, Relaxed);
    Ok(())
}

/// A close-on-exec duplicate of a socket descriptor.
#[pyfunction]
#[pyo3(signature = (fd, /))]
fn dup(fd: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    let fd = descriptor(fd)?;
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 { Err(os_error(last_errno())) } else { Ok(new) }
}

/// Closes a socket descriptor, as `socket.close(fd)`.
#[pyfunction]
#[pyo3(signature = (fd, /))]
fn close(py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
    close_ignoring_reset(py, descriptor(fd)?)
}

/// socketpair(2): two connected descriptors; `socketpair()` wraps them in sockets.
#[pyfunction]
#[pyo3(signature = (family=Opt::Absent, r#type=Opt::Absent, proto=Opt::Absent, /))]
fn socketpair(family: Opt<'_>, r#type: Opt<'_>, proto: Opt<'_>) -> PyResult<(RawFd, RawFd)> {
    let family = c_int_or(&family, libc::AF_UNIX)?;
    let r#type = c_int_or(&r#type, libc::SOCK_STREAM)?;
    let proto = c_int_or(&proto, 0)?;
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::socketpair(family, r#type | libc::SOCK_CLOEXEC, proto, fds.as_mut_ptr()) } < 0 {
        return Err(os_error(last_errno()));
    }
    Ok((fds[0], fds[1]))
}

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Socket>()?;
    m.add_function(wrap_pyfunction!(getdefaulttimeout, m)?)?;
    m.add_function(wrap_pyfunction!(setdefaulttimeout, m)?)?;
    m.add_function(wrap_pyfunction!(dup, m)?)?;
    m.add_function(wrap_pyfunction!(close, m)?)?;
    m.add_function(wrap_pyfunction!(socketpair, m)?)?;
    Ok(())
}
