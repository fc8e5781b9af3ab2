//! The bytes objects handed to message and datagram handlers, reused from one message to the next
//! once the handler has let go of them.
//!
//! A fresh object per message costs an allocation and a free. From 1 KiB up they go through glibc's
//! main heap (its per-thread cache stops at 1,032 bytes): about 400 instructions, an eighth of a
//! TcpServer echo request's user-space work. A bytes object that only its creator references cannot
//! be observed by anyone, so a thread refills its last one instead, as CPython's own
//! `_PyBytes_Resize` changes in place an object only its caller holds.

use std::cell::Cell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The largest object kept: one per thread, so memory is no concern, but a larger one would come
/// from mmap rather than the heap and is rare enough not to matter.
const KEEP_UP_TO: usize = 64 * 1024;

/// A bytes object with room for `capacity` bytes that nothing but this cell references.
struct Spare {
    object: Py<PyBytes>,
    capacity: usize,
}

thread_local! {
    static SPARE: Cell<Option<Spare>> = const { Cell::new(None) };
}

/// Calls `f` with a bytes object holding `data`, and keeps the object for the thread's next message
/// if `f` kept no reference to it.
pub fn with_message<R>(py: Python<'_>, data: &[u8], f: impl FnOnce(&Bound<'_, PyBytes>) -> R) -> R {
    // Lengths 0 and 1 are CPython's shared singletons: never made here, never refilled.
    if data.len() < 2 {
        return f(&PyBytes::new(py, data));
    }
    let spare = SPARE.take().filter(|spare| spare.capacity >= data.len());
    let (message, capacity) = match spare {
        Some(spare) => {
            // SAFETY: the cell held the only reference, so nothing can see the object change; the
            // new contents fit the room it was made with.
            unsafe { refill(spare.object.as_ptr(), data) };
            (spare.object.into_bound(py), spare.capacity)
        }
        None => (PyBytes::new(py, data), data.len()),
    };
    let result = f(&message);
    // SAFETY: a live object this thread holds a reference to, read while attached.
    if unsafe { ffi::Py_REFCNT(message.as_ptr()) } == 1 && capacity <= KEEP_UP_TO {
        SPARE.set(Some(Spare {
            object: message.unbind(),
            capacity,
        }));
    }
    result
}

/// Makes the bytes object at `object` hold `data`, as a new object would: its length, contents,
/// trailing NUL and an uncomputed hash.
///
/// # Safety
/// `object` is a bytes object with room for at least `data.len()` bytes that no one else references.
unsafe fn refill(object: *mut ffi::PyObject, data: &[u8]) {
    let bytes = object.cast::<ffi::PyBytesObject>();
    // SAFETY: as the caller promises; the storage has room for the contents and their NUL.
    unsafe {
        let contents = (*bytes).ob_sval.as_mut_ptr().cast::<u8>();
        std::ptr::copy_nonoverlapping(data.as_ptr(), contents, data.len());
        *contents.add(data.len()) = 0;
        (*bytes).ob_base.ob_size = data.len() as ffi::Py_ssize_t;
        // The hash a handler may have had cached belongs to the old contents. CPython still caches
        // it in this field, deprecated only for other code's reading.
        #[allow(deprecated)]
        {
            (*bytes).ob_shash = -1;
        }
    }
}
