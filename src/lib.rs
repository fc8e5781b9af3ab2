//! `rsock._rsock`: the native core behind the `rsock` package.
//!
//! Each file owns one concept and registers its own Python objects through `init_pymodule`.

use pyo3::prelude::*;

mod addr;
mod buffer;
mod errors;
mod resolver;
mod socket;

#[pymodule(gil_used = false)]
fn _rsock(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    socket::init_pymodule(m)?;
    resolver::init_pymodule(m)?;
    Ok(())
}
