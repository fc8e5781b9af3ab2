//! Integer and iterable arguments converted as CPython's argument parsers convert them, with the
//! same exceptions and messages, so a bad argument to rsock raises exactly what the stdlib raises.
//! Methods take such arguments as plain objects and convert them here: pyo3's own conversion would
//! word the errors differently and attach a note naming the Rust parameter.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyIterator;

/// An iterator over `obj`, as `PySequence_Fast(obj, message)` takes it: an object that cannot be
/// iterated is a TypeError saying `message`; any other error from its `__iter__` (a ValueError, a
/// KeyboardInterrupt) passes through unchanged.
pub fn iterate<'py>(obj: &Bound<'py, PyAny>, message: &'static str) -> PyResult<Bound<'py, PyIterator>> {
    obj.try_iter().map_err(|err| {
        if err.is_instance_of::<PyTypeError>(obj.py()) {
            PyTypeError::new_err(message)
        } else {
            err
        }
    })
}

/// An optional argument as the caller gave it: absent, or the object passed, None included. The
/// stdlib refuses None where it wants an int (`recv(10, None)` is a TypeError), and pyo3's `Option`
/// would take None for "absent"; a parameter of this type has the default `Opt::Absent`.
pub enum Opt<'py> {
    Absent,
    Given(Bound<'py, PyAny>),
}

impl<'py> FromPyObject<'_, 'py> for Opt<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        Ok(Opt::Given(obj.to_owned()))
    }
}

impl<'py> Opt<'py> {
    pub fn given(&self) -> Option<&Bound<'py, PyAny>> {
        match self {
            Opt::Absent => None,
            Opt::Given(obj) => Some(obj),
        }
    }
}

/// `PyArg_Parse`'s "i": an object with `__index__`, range-checked into a C int.
pub fn c_int(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let value: i64 = obj.extract()?;
    if value > i64::from(i32::MAX) {
        return Err(PyOverflowError::new_err("signed integer is greater than maximum"));
    }
    if value < i64::from(i32::MIN) {
        return Err(PyOverflowError::new_err("signed integer is less than minimum"));
    }
    Ok(value as i32)
}

/// "i" for an optional argument.
pub fn c_int_or(obj: &Opt<'_>, default: i32) -> PyResult<i32> {
    obj.given().map_or(Ok(default), c_int)
}

/// `PyArg_Parse`'s "n": an object with `__index__` as a Py_ssize_t.
pub fn ssize(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    let too_large = || PyOverflowError::new_err("Python int too large to convert to C ssize_t");
    let value: i64 = obj.extract().map_err(|e: PyErr| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            too_large()
        } else {
            e
        }
    })?;
    isize::try_from(value).map_err(|_| too_large())
}

/// "n" for an optional argument.
pub fn ssize_or(obj: &Opt<'_>, default: isize) -> PyResult<isize> {
    obj.given().map_or(Ok(default), ssize)
}

/// A byte count given to `caller` (`default` when absent): ValueError when negative, OverflowError
/// beyond a C ssize_t, as the socket's recv() raises.
pub fn byte_count(n: Option<&Bound<'_, PyAny>>, default: usize, caller: &str) -> PyResult<usize> {
    let n = n.map_or(Ok(default as isize), ssize)?;
    usize::try_from(n).map_err(|_| PyValueError::new_err(format!("negative buffersize in {caller}")))
}

/// A count or size a server or client is given (`max_connections`, `max_frame_size`; `default` when
/// absent): ValueError naming it unless at least 1, OverflowError naming it beyond a usize (up to which
/// any value is taken, as "no limit" in effect). Read here, not by pyo3's conversions, whose errors
/// name nothing: "can't convert negative int to unsigned", or "int too big to convert" past an i128.
pub fn positive(name: &str, obj: &Opt<'_>, default: usize) -> PyResult<usize> {
    let Some(obj) = obj.given() else {
        return Ok(default);
    };
    let not_positive =
        |value: &dyn std::fmt::Display| PyValueError::new_err(format!("{name} must be positive, not {value}"));
    let too_large = |value: &dyn std::fmt::Display| PyOverflowError::new_err(format!("{name} too large: {value}"));
    let value = match obj.extract::<i128>() {
        Ok(value) => value,
        // Past an i128 only its sign matters: read the int itself to say which error, and with what.
        Err(err) if err.is_instance_of::<PyOverflowError>(obj.py()) => {
            let value = obj.py().import("operator")?.call_method1("index", (obj,))?;
            return Err(if value.lt(0)? {
                not_positive(&value)
            } else {
                too_large(&value)
            });
        }
        Err(err) => return Err(err),
    };
    if value < 1 {
        return Err(not_positive(&value));
    }
    usize::try_from(value).map_err(|_| too_large(&value))
}

/// `_PyLong_AsInt` (argument clinic's `int`): any value outside a C int is "too large".
pub fn as_int(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let too_large = || PyOverflowError::new_err("Python int too large to convert to C int");
    let value: i64 = obj.extract().map_err(|e: PyErr| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            too_large()
        } else {
            e
        }
    })?;
    i32::try_from(value).map_err(|_| too_large())
}

/// `_PyLong_AsInt` for an optional argument.
pub fn as_int_or(obj: &Opt<'_>, default: i32) -> PyResult<i32> {
    obj.given().map_or(Ok(default), as_int)
}

/// `PyLong_AsLong`: any object with `__index__`, as a C long.
pub fn c_long(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    obj.extract()
}

/// A flag given as any object, taken by its truth as the stdlib takes `reuse_port=` (1 is true);
/// absent or None is false.
pub fn flag(obj: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    obj.map_or(Ok(false), |flag| flag.is_truthy())
}

/// Whether the running Python is 3.`minor` or later, for arguments whose meaning changed between
/// versions. Read once: pyo3's version_info() parses the version string at every call, which showed
/// in setblocking()'s cost.
pub fn python_at_least(py: Python<'_>, minor: u8) -> bool {
    static MINOR: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *MINOR.get_or_init(|| py.version_info().minor) >= minor
}
