//! PEP 578 audit events, raised where CPython's socket module raises them, with the same names and
//! arguments: an audit hook (`sys.addaudithook`) sees rsock's sockets, connections and lookups as it
//! sees the stdlib's, and can refuse them by raising.
//!
//! The events go through `PySys_Audit` with a format string rather than a tuple built here, so that
//! with no hook installed (the usual case) nothing is allocated: CPython builds the arguments only for
//! a hook.

use std::ffi::{CStr, c_char, c_int};

use pyo3::prelude::*;

// In the C API since Python 3.8; pyo3's ffi does not declare it.
unsafe extern "C" {
    fn PySys_Audit(event: *const c_char, format: *const c_char, ...) -> c_int;
}

fn outcome(py: Python<'_>, rc: c_int) -> PyResult<()> {
    if rc < 0 { Err(PyErr::fetch(py)) } else { Ok(()) }
}

/// `socket.__new__`: the socket and the family, type and protocol as given (-1 for one left out
/// beside a descriptor), before anything is opened.
pub fn new_socket(sock: &Bound<'_, PyAny>, family: c_int, kind: c_int, proto: c_int) -> PyResult<()> {
    // SAFETY: the format matches the arguments: an object pointer and three C ints.
    let rc = unsafe {
        PySys_Audit(
            c"socket.__new__".as_ptr(),
            c"Oiii".as_ptr(),
            sock.as_ptr(),
            family,
            kind,
            proto,
        )
    };
    outcome(sock.py(), rc)
}

/// An event about a socket and an address: `socket.bind`, `socket.connect`, `socket.sendto` and
/// `socket.sendmsg` (whose address may be None).
pub fn socket_address(event: &CStr, sock: &Bound<'_, PyAny>, address: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the format matches the arguments: two object pointers.
    let rc = unsafe { PySys_Audit(event.as_ptr(), c"OO".as_ptr(), sock.as_ptr(), address.as_ptr()) };
    outcome(sock.py(), rc)
}

/// `socket.__new__` and the events about an address, for rsock's own clients and servers: their sockets
/// live in Rust, and None stands in the socket's place.
pub fn no_socket_new(py: Python<'_>, family: c_int, kind: c_int, proto: c_int) -> PyResult<()> {
    new_socket(&py.None().into_bound(py), family, kind, proto)
}

pub fn no_socket_address(py: Python<'_>, event: &CStr, address: &Bound<'_, PyAny>) -> PyResult<()> {
    socket_address(event, &py.None().into_bound(py), address)
}

/// An event with one argument: `socket.gethostbyname`, `socket.gethostbyaddr`, `socket.getnameinfo`.
pub fn one(event: &CStr, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the format matches the argument: one object pointer, put in a 1-tuple.
    let rc = unsafe { PySys_Audit(event.as_ptr(), c"(O)".as_ptr(), arg.as_ptr()) };
    outcome(arg.py(), rc)
}

/// `socket.getaddrinfo`: host and port as given, and the family, type and protocol asked for.
pub fn getaddrinfo(
    host: &Bound<'_, PyAny>,
    port: &Bound<'_, PyAny>,
    family: c_int,
    kind: c_int,
    proto: c_int,
) -> PyResult<()> {
    // SAFETY: the format matches the arguments: two object pointers and three C ints.
    let rc = unsafe {
        PySys_Audit(
            c"socket.getaddrinfo".as_ptr(),
            c"OOiii".as_ptr(),
            host.as_ptr(),
            port.as_ptr(),
            family,
            kind,
            proto,
        )
    };
    outcome(host.py(), rc)
}
