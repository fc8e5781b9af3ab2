//! UDP: `UdpServer` and `UdpClient`.

use pyo3::prelude::*;

mod client;
mod delivery_errors;
mod reply_source;
mod server;

pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    server::init_pymodule(m)?;
    delivery_errors::init_pymodule(m)?;
    client::init_pymodule(m)
}
