//! The asyncio side: `StreamTransport`, driven by the running asyncio loop.

use pyo3::prelude::*;

mod op;
mod poller;
mod step;
mod stream;
mod waiter;

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<stream::StreamTransport>()?;
    m.add_class::<op::Op>()?;
    m.add_class::<poller::Poller>()?;
    m.add_class::<waiter::Waiter>()?;
    let py = m.py();
    step::install::<op::Op>(py);
    step::install::<waiter::Waiter>(py);
    Ok(())
}

pyo3::import_exception!(asyncio, CancelledError);
pyo3::import_exception!(asyncio, IncompleteReadError);
pyo3::import_exception!(asyncio, InvalidStateError);
pyo3::import_exception!(asyncio, LimitOverrunError);

/// Imports the asyncio exceptions rsock.aio raises while asyncio is surely importable (a loop is being
/// served): each is imported on its first use and kept, and a first use while the interpreter shuts
/// down (a stream's pending read ended as its transport is finalized) could not import it, which is a
/// panic.
fn import_asyncio_exceptions(py: Python<'_>) {
    use pyo3::PyTypeInfo;
    CancelledError::type_object(py);
    IncompleteReadError::type_object(py);
    InvalidStateError::type_object(py);
    LimitOverrunError::type_object(py);
}

/// Whether `err` is asyncio's CancelledError, found without importing asyncio: a program that never
/// imported it cannot have raised one, and a first import here (in a sync handler's end, on the io
/// thread) reads files, letting go of the GIL. If interpreter exit begins meanwhile, CPython (before
/// 3.14) ends the thread taking the GIL back with pthread_exit, which aborts the process from a Rust
/// frame: a handler interrupted at exit whose end met the exit's last deadline did that.
pub fn is_cancelled_error(py: Python<'_>, err: &PyErr) -> bool {
    let asyncio_loaded = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|modules| modules.contains("asyncio"))
        .unwrap_or(false);
    asyncio_loaded && err.is_instance_of::<CancelledError>(py)
}

/// Whether an exception raised in a callback must stop the loop rather than be reported and
/// passed over: KeyboardInterrupt and SystemExit, which asyncio's handles re-raise.
fn stops_the_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}
