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

/// Whether an exception raised in a callback must stop the loop rather than be reported and
/// passed over: KeyboardInterrupt and SystemExit, which asyncio's handles re-raise.
fn stops_the_loop(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        || err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
}
