//! `rsock._rsock`: the native core behind the `rsock` package.
//!
//! Each file owns one concept and registers its own Python objects through `init_pymodule`.

use pyo3::prelude::*;

mod addr;
mod aio;
mod ancillary;
mod args;
mod audit;
mod buffer;
mod display;
mod errors;
mod framing;
mod gil_handoff;
mod log;
mod py_lazy;
mod resolver;
mod reused_bytes;
mod runtime;
mod server_common;
mod socket;
mod spin;
mod tcp;
mod turns;
mod udp;
mod uring;

#[pymodule(gil_used = false)]
fn _rsock(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::init_pymodule(m)?;
    socket::init_pymodule(m)?;
    aio::init_pymodule(m)?;
    resolver::init_pymodule(m)?;
    server_common::init_pymodule(m)?;
    tcp::init_pymodule(m)?;
    udp::init_pymodule(m)?;
    Ok(())
}
