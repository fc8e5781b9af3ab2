//! The exceptions the stdlib raises, built from OS and resolver failures.
//!
//! `OSError(errno, strerror)` lets CPython pick the subclass (ConnectionRefusedError, BlockingIOError, ...)
//! and fill `.errno`; pyo3's own `From<io::Error>` would lose both. Resolver failures raise the stdlib's
//! own `socket.gaierror` / `socket.herror`, so `except socket.gaierror` catches rsock's too.

use std::ffi::{CStr, c_char, c_int};
use std::io;

use pyo3::PyTypeInfo;
use pyo3::exceptions::{PyOSError, PyTimeoutError};
use pyo3::prelude::*;

pyo3::import_exception!(socket, gaierror);
pyo3::import_exception!(socket, herror);

/// Imports the socket module's exceptions as rsock is imported: pyo3 keeps each, imported on its first
/// use, in a PyOnceLock, and a fork while another thread made that first use would leave the child one
/// half-made, which its first lookup failure would wait on for ever (see py_lazy.rs).
pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gaierror::type_object(m.py());
    herror::type_object(m.py());
    Ok(())
}

unsafe extern "C" {
    fn hstrerror(err: c_int) -> *const c_char;
}

/// The text `strerror(3)` gives for `errno`, as CPython puts it in `OSError.strerror`.
/// The PanicException a caught panic becomes, with the panic's message.
pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let text = match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "panic in Rust code".to_owned(), |text| (*text).to_owned()),
    };
    pyo3::panic::PanicException::new_err(text)
}

pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as c_char; 256];
    // SAFETY: the buffer is valid for its length and strerror_r NUL-terminates what it writes.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: strerror_r succeeded, so buf holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// `OSError(errno, strerror)` as an instance, so its class is already the errno's subclass
/// (BlockingIOError, ConnectionResetError, ...) when it is raised: C code that checks the raised type
/// without normalising it (Cython's `except BlockingIOError`, as in uvloop) sees the right one.
#[cold]
pub fn os_error(errno: i32) -> PyErr {
    Python::attach(|py| os_error_instance(py, (errno, strerror(errno))))
}

/// `OSError(errno, strerror, filename)`, as `open()` raises for a file it cannot open.
#[cold]
pub fn file_error(err: &io::Error, path: &std::path::Path) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => Python::attach(|py| os_error_instance(py, (errno, strerror(errno), path.as_os_str()))),
        None => io_error(err),
    }
}

/// `OSError(*args)` made as an instance (see `os_error` for why).
fn os_error_instance<'py>(py: Python<'py>, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match py.get_type::<PyOSError>().call1(args) {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

#[cold]
pub fn io_error(err: &io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => os_error(errno),
        None if err.kind() == io::ErrorKind::TimedOut => timeout_error(),
        None => PyOSError::new_err(err.to_string()),
    }
}

/// The errno of the last failed libc call, read right after it on the same thread.
pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

#[cold]
pub fn timeout_error() -> PyErr {
    PyTimeoutError::new_err("timed out")
}

/// `socket.gaierror(code, gai_strerror(code))`; `EAI_SYSTEM` means errno holds the real cause.
#[cold]
pub fn gai_error(code: i32, errno: i32) -> PyErr {
    if code == libc::EAI_SYSTEM {
        return os_error(errno);
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    gaierror::new_err((code, text))
}

/// `socket.herror(h_errno, hstrerror(h_errno))`, as the `gethostby*` family raises.
#[cold]
pub fn h_error(code: i32) -> PyErr {
    // SAFETY: hstrerror returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(hstrerror(code)) }
        .to_string_lossy()
        .into_owned();
    herror::new_err((code, text))
}

/// Runs `f` with the exception on its way up (if any) set aside, then restored: for Python code run
/// while an object is being collected, which may happen as an exception propagates (calling into
/// Python with one set, or replacing it, would lose it).
pub fn keeping_exception<R>(py: Python<'_>, f: impl FnOnce() -> R) -> R {
    let in_flight = PyErr::take(py);
    let result = f();
    if let Some(err) = in_flight {
        err.restore(py);
    }
    result
}

/// Issues a warning of `category` from an object being collected (an unclosed socket, a read never
/// awaited), keeping any exception on its way up; a warning turned into an error is reported as
/// unraisable, as CPython's finalizers do.
pub fn warn_from_finalizer<W: PyTypeInfo>(py: Python<'_>, text: &str) {
    keeping_exception(py, || {
        let text = std::ffi::CString::new(text).unwrap_or_default();
        if let Err(err) = PyErr::warn(py, &py.get_type::<W>(), &text, 1) {
            err.write_unraisable(py, None);
        }
    })
}
