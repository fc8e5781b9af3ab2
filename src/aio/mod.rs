//! The asyncio side: `StreamTransport`, driven by the running asyncio loop.

use pyo3::prelude::*;

mod step;
mod stream;
mod waiter;

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<stream::StreamTransport>()?;
    m.add_class::<stream::Ready>()?;
    m.add_class::<stream::ReadOp>()?;
    m.add_class::<waiter::Waiter>()?;
    m.add_class::<waiter::Pending>()?;
    let py = m.py();
    step::install::<stream::Ready>(py);
    step::install::<stream::ReadOp>(py);
    step::install::<waiter::Waiter>(py);
    step::install::<waiter::Pending>(py);
    Ok(())
}
