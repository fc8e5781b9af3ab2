//! Borrowed views of Python bytes-like objects, taken as the stdlib's `y*` (read) and `w*` (write)
//! argument formats take them: any contiguous buffer, whatever its item format.

use std::alloc::{self, Layout};
use std::mem::MaybeUninit;

use pyo3::exceptions::{PyMemoryError, PyOverflowError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::addr::argument_type_name;

/// Releases a filled `Py_buffer` when dropped, so an early return or a panic cannot leak the export.
struct View(MaybeUninit<ffi::Py_buffer>);

impl View {
    fn get(obj: &Bound<'_, PyAny>, flags: i32) -> PyResult<Self> {
        let mut view = View(MaybeUninit::uninit());
        // SAFETY: obj is a live object; on success the exporter fills the view, on failure an exception is set.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.0.as_mut_ptr(), flags) } != 0 {
            std::mem::forget(view);
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(view)
    }

    fn raw(&mut self) -> (*mut u8, usize) {
        // SAFETY: a View only exists once PyObject_GetBuffer has filled it.
        let view = unsafe { self.0.assume_init_ref() };
        (view.buf.cast(), view.len as usize)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released exactly once; every View is
        // created and dropped by a thread attached to the interpreter.
        unsafe { ffi::PyBuffer_Release(self.0.as_mut_ptr()) };
    }
}

/// A writable view held open across a call that fills several buffers at once (recvmsg_into).
pub struct WritableView(View);

/// Where a syscall may write: a pointer and a length, not a `&mut` slice, because the buffers of one
/// recvmsg_into() may overlap (views of one bytearray), which `&mut` slices must never do.
#[derive(Clone, Copy)]
pub struct Space {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a Space is only written through by a syscall, while what it was taken from (a held view,
// storage borrowed for the call) keeps it valid, whichever thread makes the call; shared, it is only
// read (the pointer, not what it points at).
unsafe impl Send for Space {}
// SAFETY: as for Send.
unsafe impl Sync for Space {}

impl From<&mut [MaybeUninit<u8>]> for Space {
    fn from(storage: &mut [MaybeUninit<u8>]) -> Space {
        Space {
            ptr: storage.as_mut_ptr().cast(),
            len: storage.len(),
        }
    }
}

impl WritableView {
    /// The view of `obj`, or a TypeError saying `refusal` when it is not a writable buffer.
    pub fn new(obj: &Bound<'_, PyAny>, refusal: &'static str) -> PyResult<Self> {
        View::get(obj, ffi::PyBUF_WRITABLE)
            .map(WritableView)
            .map_err(|_| PyTypeError::new_err(refusal))
    }

    /// The buffer's bytes, for a syscall to write into while the view is held.
    pub fn space(&mut self) -> Space {
        let (ptr, len) = self.0.raw();
        Space { ptr, len }
    }
}

/// Runs `f` over the bytes of a bytes-like object (`y*`): exact `bytes` without the buffer protocol.
pub fn with_readable<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = obj.cast_exact::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let mut view = View::get(obj, ffi::PyBUF_SIMPLE)?;
    let (ptr, len) = view.raw();
    // SAFETY: the exporter keeps ptr..ptr+len valid until the view is released, after f returns.
    Ok(f(unsafe { std::slice::from_raw_parts(ptr, len) }))
}

/// `with_readable` for what a handler returned as its reply. One that is not bytes-like gets a TypeError
/// naming the handler: the buffer protocol's own ("a bytes-like object is required") would not say that
/// it was the return value, and the handler's frame is gone from the traceback by then.
pub fn with_reply<R>(handler: &str, reply: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    with_readable(reply, f).map_err(|err| {
        // SAFETY: a live object, checked while attached.
        if unsafe { ffi::PyObject_CheckBuffer(reply.as_ptr()) } != 0 {
            return err;
        }
        PyTypeError::new_err(format!(
            "{handler} must return a bytes-like object or None, not '{}'",
            argument_type_name(reply)
        ))
    })
}

/// Runs `f` over the bytes of a writable bytes-like object (`w*`); `what` names the argument in the
/// TypeError a read-only or non-buffer object gets.
pub fn with_writable<R>(obj: &Bound<'_, PyAny>, what: &str, f: impl FnOnce(&mut [u8]) -> R) -> PyResult<R> {
    let mut view = View::get(obj, ffi::PyBUF_WRITABLE).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be read-write bytes-like object, not {}",
            argument_type_name(obj)
        ))
    })?;
    let (ptr, len) = view.raw();
    // SAFETY: a writable export gives exclusive use of ptr..ptr+len until the view is released, after f returns.
    Ok(f(unsafe { std::slice::from_raw_parts_mut(ptr, len) }))
}

/// A copy of a bytes-like object's contents.
pub fn read_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    with_readable(obj, <[u8]>::to_vec)
}

/// What `PyBytes_FromStringAndSize` checks before it allocates: a bytes object's header and
/// trailing NUL must fit in a Py_ssize_t beside its `len` bytes, or it is an OverflowError. Storage
/// meant to become a bytes object of `len` bytes checks it first, so that it fails as the bytes would.
pub fn check_bytes_len(len: usize) -> PyResult<()> {
    let header = std::mem::offset_of!(ffi::PyBytesObject, ob_sval) + 1;
    if len > isize::MAX as usize - header {
        return Err(PyOverflowError::new_err("byte string is too large"));
    }
    Ok(())
}

/// `len` zero bytes, or a MemoryError if they cannot be had (`vec![0; len]` would abort). Zeroed
/// by the allocator (calloc), so a large buffer costs no memory until it is written.
pub fn zeroed_vec(len: usize) -> PyResult<Vec<u8>> {
    let layout = Layout::array::<u8>(len).map_err(|_| PyMemoryError::new_err(()))?;
    if len == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(PyMemoryError::new_err(()));
    }
    // SAFETY: ptr is a global-allocator block of `len` initialised bytes with u8's alignment.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// An initialised buffer as the uninitialised kind recv(2) fills.
pub fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: initialised bytes are valid MaybeUninit bytes, and recv only ever writes bytes into them.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// A `bytes` object under construction (`PyBytesWriter`): filled in place, then shrunk to what was
/// written, the way CPython's own `recv` builds its result. Discarded if dropped unfinished.
pub struct BytesWriter<'py> {
    py: Python<'py>,
    raw: *mut ffi::compat::PyBytesWriter,
    len: usize,
}

impl<'py> BytesWriter<'py> {
    pub fn new(py: Python<'py>, len: usize) -> PyResult<Self> {
        // SAFETY: attached to the interpreter; a NULL result comes with an exception set.
        let raw = unsafe { ffi::compat::PyBytesWriter_Create(len as ffi::Py_ssize_t) };
        if raw.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(BytesWriter { py, raw, len })
    }

    /// The writer's storage; it may be filled without the GIL, nothing else refers to it yet.
    pub fn space(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the writer owns `len` bytes of storage at GetData until it is finished or discarded.
        unsafe { std::slice::from_raw_parts_mut(ffi::compat::PyBytesWriter_GetData(self.raw).cast(), self.len) }
    }

    /// The `bytes` object holding the first `filled` bytes, which the caller has written. A count
    /// past the storage (recv(2) with MSG_TRUNC reports a datagram's full length) is cut to it: the
    /// writer would otherwise copy or expose bytes it does not hold.
    pub fn finish(self, filled: usize) -> PyResult<Bound<'py, PyBytes>> {
        let filled = filled.min(self.len);
        let raw = self.raw;
        let py = self.py;
        std::mem::forget(self);
        // SAFETY: raw is a live writer, consumed here exactly once; filled <= len bytes were written.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::compat::PyBytesWriter_FinishWithSize(raw, filled as ffi::Py_ssize_t),
            )
            .map(|b| b.cast_into_unchecked())
        }
    }
}

impl Drop for BytesWriter<'_> {
    fn drop(&mut self) {
        // SAFETY: the writer was not finished (finish forgets self), so it is discarded exactly once.
        unsafe { ffi::compat::PyBytesWriter_Discard(self.raw) };
    }
}

/// Keeps a Python `bytes` object alive while Rust holds its contents as `Bytes`.
struct PyBytesOwner {
    _object: Py<PyBytes>,
    data: &'static [u8],
}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        self.data
    }
}

/// The contents of a bytes-like object as `Bytes`: an exact `bytes` is shared without a copy (it is
/// immutable and kept alive by the `Bytes`); anything else, which could change later, is copied.
pub fn shared_bytes(obj: &Bound<'_, PyAny>) -> PyResult<bytes::Bytes> {
    if let Ok(b) = obj.cast_exact::<PyBytes>() {
        let slice = b.as_bytes();
        // SAFETY: a bytes object's buffer never moves or changes, and the owner keeps it alive for as
        // long as the slice is reachable through the Bytes.
        let data: &'static [u8] = unsafe { std::slice::from_raw_parts(slice.as_ptr(), slice.len()) };
        return Ok(bytes::Bytes::from_owner(PyBytesOwner {
            _object: b.clone().unbind(),
            data,
        }));
    }
    with_readable(obj, bytes::Bytes::copy_from_slice)
}
