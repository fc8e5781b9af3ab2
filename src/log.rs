//! Rust-side events (accepts, closes, handler errors, limits hit) reported through Python's `logging`
//! under the logger "rsock"; rsock never writes to stderr itself.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::py_lazy::PyLazy;

pub const DEBUG: i32 = 10;
pub const INFO: i32 = 20;
pub const WARNING: i32 = 30;
pub const ERROR: i32 = 40;

static LOGGER: PyLazy<Py<PyAny>> = PyLazy::new();

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("logging")?.call_method1("getLogger", ("rsock",))?.unbind())
        })
        .map(|l| l.bind(py))
}

/// Whether a record at `level` would be handled, so callers can skip building the message.
pub fn enabled(py: Python<'_>, level: i32) -> bool {
    logger(py)
        .and_then(|l| l.call_method1("isEnabledFor", (level,))?.is_truthy())
        .unwrap_or(false)
}

/// Logs `message` at `level`, with the traceback of `exc` when given. A failure to log is reported as
/// unraisable rather than lost or raised into rsock's own code.
pub fn log(py: Python<'_>, level: i32, message: &str, exc: Option<&PyErr>) {
    let result = logger(py).and_then(|logger| {
        let kwargs = PyDict::new(py);
        if let Some(exc) = exc {
            // A (type, value, traceback) triple: the exception object alone may not carry its traceback.
            kwargs.set_item("exc_info", (exc.get_type(py), exc.value(py), exc.traceback(py)))?;
        }
        logger
            .call_method("log", (level, "%s", message), Some(&kwargs))
            .map(drop)
    });
    if let Err(err) = result {
        err.write_unraisable(py, None);
    }
}
