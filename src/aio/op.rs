//! `Op`: what `StreamTransport`'s awaitable methods return, shaped like the coroutines asyncio's
//! StreamReader/StreamWriter methods return. A read does nothing until it is awaited (or run as a
//! task), so a read cancelled before it starts takes no data; its first step completes at once when
//! the buffer decides it, else yields a `Waiter` to the task and returns the waiter's result when the
//! task resumes. An outcome known at call time (`drain()` with room in the buffer, `read(0)`) is
//! returned without the loop, and `drain()`/`wait_closed()` that must wait are a waiter from the start.
//!
//! Frozen, its state behind a lock, never held while Python runs: the shared op that returns None
//! may be awaited from several threads at once where there is no GIL.

use std::sync::{Mutex, MutexGuard};

use crate::py_lazy::PyLazy;
use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use super::step::{Awaitable, Step};
use super::stream::{StreamTransport, Want};
use super::waiter::Waiter;
use crate::errors::warn_from_finalizer;

enum State {
    /// Known already: awaiting returns (or raises) it.
    Ready(PyResult<Py<PyAny>>),
    /// A read not yet begun.
    Read { transport: Py<StreamTransport>, want: Want },
    /// Waiting on a waiter, which is yielded to the task until it is done.
    Waiting(Py<Waiter>),
    /// Returned, raised or closed: awaiting it again is an error, as for a coroutine.
    Finished,
    /// The shared op that returns None however often it is awaited.
    Done,
}

#[pyclass(module = "rsock._rsock", name = "Op", frozen)]
pub struct Op {
    state: Mutex<State>,
    /// The method that made it, as a coroutine's `__qualname__` ("StreamReader.read"): what a task's
    /// repr shows for the coroutine it runs.
    qualname: &'static str,
}

/// The op for `await drain()` with room in the buffer, shared so that the common case allocates nothing.
static DRAINED: PyLazy<Py<Op>> = PyLazy::new();

pub const DRAIN: &str = "StreamWriter.drain";

impl Op {
    fn with(qualname: &'static str, state: State) -> Op {
        Op {
            state: Mutex::new(state),
            qualname,
        }
    }

    /// An op of the method `qualname` that returns or raises `outcome`.
    pub fn ready(py: Python<'_>, qualname: &'static str, outcome: PyResult<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Op::with(qualname, State::Ready(outcome)))?.into_any())
    }

    /// `drain()`'s op when there is room in the buffer: returns None.
    pub fn drained(py: Python<'_>) -> PyResult<Py<PyAny>> {
        let done = DRAINED.get_or_try_init(py, || Py::new(py, Op::with(DRAIN, State::Done)))?;
        Ok(done.clone_ref(py).into_any())
    }

    /// A read of `transport`, begun when first awaited.
    pub fn read(transport: &Bound<'_, StreamTransport>, want: Want) -> Op {
        Op::with(
            want.method_name(),
            State::Read {
                transport: transport.clone().unbind(),
                want,
            },
        )
    }

    /// An op of the method `qualname` that waits for `waiter` and returns its result.
    pub fn waiting(py: Python<'_>, qualname: &'static str, waiter: Py<Waiter>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, Op::with(qualname, State::Waiting(waiter)))?.into_any())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the state out, leaving `Finished` (the shared `Done` stays): no lock is held while the
    /// step runs Python code, which may re-enter this op.
    fn take(&self) -> State {
        let mut state = self.state();
        if matches!(*state, State::Done) {
            return State::Done;
        }
        std::mem::replace(&mut *state, State::Finished)
    }
}

impl Drop for Op {
    /// A read made and never awaited is almost always a missing `await`: warn as Python does for a
    /// coroutine never awaited.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Read { want, .. } = state {
            let text = format!("coroutine '{}' was never awaited", want.method_name());
            Python::attach(|py| warn_from_finalizer::<PyRuntimeWarning>(py, &text));
        }
    }
}

impl Awaitable for Op {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        let waiter = match slf.get().take() {
            State::Done => return Ok(Step::Return(py.None())),
            State::Finished => return Err(PyRuntimeError::new_err("cannot reuse already awaited coroutine")),
            State::Ready(outcome) => return outcome.map(Step::Return),
            State::Read { transport, want } => match transport.bind(py).try_borrow_mut()?.begin_read(py, &want)? {
                Ok(outcome) => return outcome.map(Step::Return),
                Err(waiter) => waiter,
            },
            State::Waiting(waiter) => waiter,
        };
        let step = Waiter::step_awaiting(waiter.bind(py));
        if matches!(step, Ok(Step::Yield(_))) {
            *slf.get().state() = State::Waiting(waiter);
        }
        step
    }
}

#[pymethods]
impl Op {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        self.qualname
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        self.qualname.rsplit_once('.').map_or(self.qualname, |(_, name)| name)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        format!(
            "<rsock awaitable {} at {:#x}>",
            slf.get().qualname,
            slf.as_ptr() as usize
        )
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        Self::step(slf)?.into_next(slf.py())
    }

    fn send(slf: &Bound<'_, Self>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Self::step(slf)?.into_send()
    }

    /// The awaiting task was cancelled (or the exception is thrown in for another reason): give up
    /// the wait, leaving any data for the next read.
    #[pyo3(signature = (exc, *_rest))]
    fn throw(&self, py: Python<'_>, exc: &Bound<'_, PyAny>, _rest: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)?;
        // An exception class is instantiated as raising it would (PyErr::from_value does).
        Err(PyErr::from_value(exc.clone()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let State::Waiting(waiter) = self.take() {
            Waiter::cancel(waiter.bind(py), None)?;
        }
        Ok(())
    }

    /// The transport or waiter, for the cycle collector: a task waiting on a read and the transport
    /// refer to each other through them. Skipped while a step has the state out (or holds the lock),
    /// which only keeps the objects alive a collection longer.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Ok(state) = self.state.try_lock() else {
            return Ok(());
        };
        match &*state {
            State::Ready(Ok(value)) => visit.call(value),
            State::Read { transport, .. } => visit.call(transport),
            State::Waiting(waiter) => visit.call(waiter),
            _ => Ok(()),
        }
    }

    fn __clear__(&self) {
        self.take();
    }
}
