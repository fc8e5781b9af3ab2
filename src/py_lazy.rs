//! Python objects made on first use, in a way a fork() cannot break: rsock's own, and its interned strings
//! (`interned!`). Of pyo3's own first-use values, the socket module's exceptions are made as rsock is
//! imported (errors.rs), and asyncio's as rsock.aio first serves a loop (aio/mod.rs), on that loop's thread.
//!
//! pyo3's `PyOnceLock` makes the threads that want the value wait for the one making it, and that
//! thread lets go of the GIL and takes it again while it makes it. A fork() from another thread in that window
//! copies a cell marked "being made" into the child, where no thread is left to finish it: the child's
//! first use waits for ever (a forked child's new servers then never answer). Here no thread waits
//! for another: each that finds no value makes one, and the first stored stays (the others' are
//! dropped). A child forked meanwhile finds no value and makes its own.

use std::sync::OnceLock;

use pyo3::prelude::*;

pub struct PyLazy<T>(OnceLock<T>);

impl<T> PyLazy<T> {
    pub const fn new() -> Self {
        PyLazy(OnceLock::new())
    }

    /// The value, made by `make` unless one is stored already. The GIL (`py`) is held, so that a value
    /// made in vain is dropped at once.
    pub fn get_or_try_init<E>(&self, _py: Python<'_>, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(value) = self.0.get() {
            return Ok(value);
        }
        let made = make()?;
        // Another thread may have stored its own while this one made this: the first stays.
        let _ = self.0.set(made);
        Ok(self.0.get().expect("a value was just stored"))
    }

    /// The value, made by `make` unless one is stored already.
    pub fn get_or_init(&self, py: Python<'_>, make: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init(py, || Ok::<_, std::convert::Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

/// pyo3's `intern!` (a Python string made once and kept) on a PyLazy: `intern!` keeps it in a
/// PyOnceLock, which a fork can leave half-made.
macro_rules! interned {
    ($py:expr, $text:expr) => {{
        static INTERNED: $crate::py_lazy::PyLazy<pyo3::Py<pyo3::types::PyString>> = $crate::py_lazy::PyLazy::new();
        let py = $py;
        INTERNED
            .get_or_init(py, || pyo3::types::PyString::intern(py, $text).unbind())
            .bind(py)
    }};
}
pub(crate) use interned;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_thread_does_not_wait_for_another_making_the_value() {
        Python::initialize();
        static LAZY: PyLazy<u32> = PyLazy::new();
        let (entered, making) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            Python::attach(|py| {
                let made = LAZY.get_or_try_init(py, move || {
                    entered.send(()).unwrap();
                    // Waits without the GIL, as an import or Python code may let it go.
                    py.detach(move || released.recv().unwrap());
                    Ok::<_, ()>(1)
                });
                *made.unwrap()
            })
        });
        making.recv().unwrap();
        // With the first thread still making its value, this one is not kept waiting: it makes its own.
        let here = Python::attach(|py| *LAZY.get_or_try_init(py, || Ok::<_, ()>(2)).unwrap());
        release.send(()).unwrap();
        assert_eq!((here, maker.join().unwrap()), (2, 2), "the first value stored stays");
    }
}
