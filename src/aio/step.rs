//! The `am_send` and `am_await` slots of rsock's awaitables (`Op`, `Waiter`).
//!
//! An awaitable driven through `__next__` ends by raising StopIteration(value), which the awaiting
//! coroutine then catches and unpacks: an exception object made and taken apart on every await that
//! returns. CPython 3.11's `await` drives an awaitable through its type's `am_send` slot when there is
//! one, which returns the value directly. pyo3 has no way to declare that slot, so `install` sets it
//! on each type once the type exists. From 3.12 `await` calls `__next__` (tp_iternext) again; there
//! an end with None, the common case of `drain()`, is still exception-free: `__next__` returns no
//! value and sets no exception, which means "returned None".
//!
//! `await x` first asks x's type for the iterator to drive (`am_await`, Python's `__await__`). Each
//! of these awaitables is its own, so `install` answers that in C too: pyo3's slot wrapper cost more
//! than the rest of a drain() that need not wait.

use std::panic::AssertUnwindSafe;

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::{PyClass, PyTypeInfo};

use crate::errors::panic_error;

/// One step of an awaitable: a value to yield to the task driving it, or the value it returns.
pub enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

impl Step {
    /// The step as `__next__` gives it: yielded (Some), returned None (None: the iterator ends with no
    /// exception), or another value returned by raising StopIteration.
    pub fn into_next(self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self {
            Step::Yield(value) => Ok(Some(value)),
            Step::Return(value) if value.is_none(py) => Ok(None),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }

    /// The step as a generator's `send()` gives it: the value yielded, or StopIteration carrying the
    /// value returned, None included (a method's None return would read as a bare yield: asyncio's
    /// pure-Python Task, which steps with send(), then steps again for ever).
    pub fn into_send(self) -> PyResult<Py<PyAny>> {
        match self {
            Step::Yield(value) => Ok(value),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }
}

pub trait Awaitable: PyClass {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step>;
}

unsafe extern "C" fn am_send<T: Awaitable>(
    iter: *mut ffi::PyObject,
    _sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls a type's am_send holding the GIL.
    let py = unsafe { Python::assume_attached() };
    let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `iter` is a live object borrowed for the call: the instance whose type has this slot.
        let any = unsafe { Bound::from_borrowed_ptr(py, iter) };
        T::step(any.cast::<T>()?)
    }))
    .unwrap_or_else(|payload| Err(panic_error(payload)));
    let (value, status) = match stepped {
        Ok(Step::Yield(value)) => (value.into_ptr(), ffi::PySendResult::PYGEN_NEXT),
        Ok(Step::Return(value)) => (value.into_ptr(), ffi::PySendResult::PYGEN_RETURN),
        Err(err) => {
            err.restore(py);
            (std::ptr::null_mut(), ffi::PySendResult::PYGEN_ERROR)
        }
    };
    // SAFETY: CPython passes where the result goes.
    unsafe { *result = value };
    status
}

/// The am_await slot: the awaitable itself.
unsafe extern "C" fn await_self(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a type's am_await holding the GIL, with a live object; the result is a
    // new reference.
    unsafe { ffi::Py_INCREF(slf) };
    slf
}

/// Gives `T`'s type the am_send and am_await slots.
pub fn install<T: Awaitable + PyTypeInfo>(py: Python<'_>) {
    let ty = T::type_object(py);
    // SAFETY: a heap type's async-methods table is its own (never null, never shared), and
    // nothing has awaited an instance yet while the module is being initialised.
    unsafe {
        let methods = (*ty.as_type_ptr()).tp_as_async;
        if !methods.is_null() {
            (*methods).am_send = Some(am_send::<T>);
            (*methods).am_await = Some(await_self);
            ffi::PyType_Modified(ty.as_type_ptr());
        }
    }
}
