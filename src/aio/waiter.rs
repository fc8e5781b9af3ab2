//! `Waiter`: rsock's own asyncio-compatible future, the bridge between rsock's completions and
//! asyncio tasks.
//!
//! A task awaiting a `Waiter` registers its wake-up with `add_done_callback`, as for any asyncio
//! future. When the loop's readable/writable callback completes a waiter, rsock runs those
//! callbacks at once instead of scheduling them with `call_soon`: the task resumes inside the same
//! loop iteration, saving a trip through the loop (a handle and a poll) per message. Completions
//! made while user code runs (close(), cancel()) are scheduled with `call_soon` as asyncio does, so a
//! task never starts inside another.
//!
//! A C Task's wake-up asks the future it is given for its result only to learn whether to resume
//! the coroutine or throw into it; the value itself reaches the coroutine through the awaitable it
//! waits on (`Op`). For an asyncio Future it reads that in C, for any other object it calls
//! `result()` by a name made afresh as a string on every call (CPython 3.11 spends about 1,500
//! instructions there, a tenth of an echo's whole user-space cost). So a waiter that succeeded
//! hands a task's wake-up the loop's finished Future instead of itself: the same "resume", read
//! in C.

use std::ffi::CStr;

use pyo3::exceptions::PyRuntimeError;

use super::step::{Awaitable, Step};
use super::{CancelledError, InvalidStateError};
use crate::py_lazy::{PyLazy, interned};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3::{PyTraverseError, PyVisit, ffi};
use smallvec::SmallVec;

enum State {
    Pending,
    Done(PyResult<Py<PyAny>>),
    Cancelled(Option<Py<PyAny>>),
}

#[pyclass(module = "rsock._rsock", name = "Waiter")]
pub struct Waiter {
    state: State,
    callbacks: Callbacks,
    event_loop: Py<PyAny>,
    /// asyncio's marker of a future-like object; a task sets it back to False when it waits on us.
    #[pyo3(get, set)]
    pub _asyncio_future_blocking: bool,
}

/// Something to complete once the transport is no longer borrowed.
pub type Completion = (Py<Waiter>, PyResult<Py<PyAny>>);

/// The completions one event makes: almost always one, kept off the heap.
pub type Completions = SmallVec<[Completion; 2]>;

/// Done callbacks and their contexts: almost always the one task waiting, kept off the heap.
type Callbacks = SmallVec<[(Py<PyAny>, Option<Py<PyAny>>); 1]>;

/// When a completion runs the waiter's callbacks.
#[derive(Clone, Copy)]
pub enum Run<'a, 'py> {
    /// At once: only from the loop's own I/O callback. `resolved` is a finished Future of that
    /// loop, for the tasks' wake-ups (see the module's note).
    Now { resolved: &'a Bound<'py, PyAny> },
    /// Through `call_soon`, as asyncio's futures run theirs.
    Soon,
}

static TASK_TYPE: PyLazy<Py<PyType>> = PyLazy::new();

/// Whether `callback` is the wake-up a C asyncio Task registers on what it waits for: a builtin
/// named "task_wakeup" bound to the task.
fn is_task_wakeup(callback: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = callback.py();
    let task_type = TASK_TYPE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("Task")?.cast_into::<PyType>()?.unbind())
        })?
        .bind(py);
    let ptr = callback.as_ptr();
    // SAFETY: the object is alive for the call; its fields are read only once its type is checked
    // to be a builtin function, whose method definition is static and never null.
    unsafe {
        if ffi::PyCFunction_Check(ptr) == 0 {
            return Ok(false);
        }
        let function = ptr.cast::<ffi::PyCFunctionObject>();
        let bound_to = (*function).m_self;
        let name = CStr::from_ptr((*(*function).m_ml).ml_name);
        Ok(name == c"task_wakeup"
            && !bound_to.is_null()
            && ffi::PyObject_TypeCheck(bound_to, task_type.as_type_ptr()) != 0)
    }
}

impl Waiter {
    pub fn new(py: Python<'_>, event_loop: &Py<PyAny>) -> PyResult<Py<Waiter>> {
        Py::new(
            py,
            Waiter {
                state: State::Pending,
                callbacks: Callbacks::new(),
                event_loop: event_loop.clone_ref(py),
                _asyncio_future_blocking: false,
            },
        )
    }

    /// A step of an awaitable that waits on `waiter`: the waiter yielded to the task (marked as
    /// awaited, as asyncio's futures are) while pending, then its result.
    pub fn step_awaiting(waiter: &Bound<'_, Waiter>) -> PyResult<Step> {
        if waiter.try_borrow()?.is_pending() {
            waiter.try_borrow_mut()?._asyncio_future_blocking = true;
            return Ok(Step::Yield(waiter.clone().into_any().unbind()));
        }
        Ok(Step::Return(waiter.try_borrow()?.result(waiter.py())?))
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending)
    }

    /// Settles a pending waiter with `outcome` and runs its callbacks as `run` says. A waiter already
    /// settled (cancelled) is left as it is.
    pub fn complete(
        py: Python<'_>,
        waiter: &Py<Waiter>,
        outcome: PyResult<Py<PyAny>>,
        run: Run<'_, '_>,
    ) -> PyResult<()> {
        let (callbacks, event_loop) = {
            let mut this = waiter.borrow_mut(py);
            if !this.is_pending() {
                return Ok(());
            }
            this.state = State::Done(outcome);
            (std::mem::take(&mut this.callbacks), this.event_loop.clone_ref(py))
        };
        run_callbacks(py, waiter, callbacks, &event_loop, run)
    }

    fn succeeded(&self) -> bool {
        matches!(self.state, State::Done(Ok(_)))
    }
}

fn run_callbacks(
    py: Python<'_>,
    waiter: &Py<Waiter>,
    callbacks: Callbacks,
    event_loop: &Py<PyAny>,
    run: Run<'_, '_>,
) -> PyResult<()> {
    // Settled before its callbacks run, and not again: whether it succeeded holds for all of them.
    let succeeded = matches!(run, Run::Now { .. }) && waiter.borrow(py).succeeded();
    let mut callbacks = callbacks.into_iter();
    while let Some((callback, context)) = callbacks.next() {
        if let Run::Now { resolved } = run {
            let callback = callback.bind(py);
            let done = if succeeded && is_task_wakeup(callback)? {
                resolved
            } else {
                waiter.bind(py).as_any()
            };
            let called = match &context {
                // asyncio takes any object with run() as a context, as Handle._run calls it.
                Some(ctx) => ctx.bind(py).call_method1(interned!(py, "run"), (callback, done)),
                None => callback.call1((done,)),
            };
            if let Err(err) = called {
                if super::stops_the_loop(py, &err) {
                    // The rest run later, each on its own, as the loop's would.
                    for (callback, context) in callbacks {
                        schedule(py, event_loop, callback, context, waiter)?;
                    }
                    return Err(err);
                }
                let report = PyDict::new(py);
                report.set_item("message", "Exception in callback of an rsock waiter")?;
                report.set_item("exception", err.into_value(py))?;
                event_loop
                    .bind(py)
                    .call_method1(interned!(py, "call_exception_handler"), (report,))?;
            }
        } else {
            schedule(py, event_loop, callback, context, waiter)?;
        }
    }
    Ok(())
}

/// Hands one of a waiter's callbacks to the loop, to run in its context.
fn schedule(
    py: Python<'_>,
    event_loop: &Py<PyAny>,
    callback: Py<PyAny>,
    context: Option<Py<PyAny>>,
    waiter: &Py<Waiter>,
) -> PyResult<()> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("context", context)?;
    event_loop
        .bind(py)
        .call_method(interned!(py, "call_soon"), (callback, waiter.bind(py)), Some(&kwargs))?;
    Ok(())
}

/// The awaiting protocol: yields itself to the task while pending, then returns the result.
impl Awaitable for Waiter {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let mut this = slf.try_borrow_mut()?;
        match &this.state {
            State::Pending if this._asyncio_future_blocking => {
                Err(PyRuntimeError::new_err("await wasn't used with future"))
            }
            State::Pending => {
                this._asyncio_future_blocking = true;
                Ok(Step::Yield(slf.clone().into_any().unbind()))
            }
            _ => Ok(Step::Return(this.result(slf.py())?)),
        }
    }
}

#[pymethods]
impl Waiter {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
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

    #[pyo3(signature = (exc, *_rest))]
    fn throw(&self, exc: &Bound<'_, PyAny>, _rest: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        Err(PyErr::from_value(exc.clone()))
    }

    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    fn done(&self) -> bool {
        !self.is_pending()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, State::Cancelled(_))
    }

    pub fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.state {
            State::Pending => Err(InvalidStateError::new_err("Result is not ready.")),
            State::Done(Ok(value)) => Ok(value.clone_ref(py)),
            State::Done(Err(err)) => Err(err.clone_ref(py)),
            State::Cancelled(Some(msg)) => Err(CancelledError::new_err((msg.clone_ref(py),))),
            State::Cancelled(None) => Err(CancelledError::new_err(())),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.state {
            State::Done(Err(err)) => Ok(Some(err.value(py).clone().into_any().unbind())),
            State::Done(Ok(_)) => Ok(None),
            _ => self.result(py).map(|_| None),
        }
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(slf: &Bound<'_, Self>, callback: Py<PyAny>, context: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let mut this = slf.try_borrow_mut()?;
        if this.is_pending() {
            this.callbacks.push((callback, context));
            return Ok(());
        }
        let event_loop = this.event_loop.clone_ref(py);
        drop(this);
        run_callbacks(
            py,
            &slf.clone().unbind(),
            smallvec::smallvec![(callback, context)],
            &event_loop,
            Run::Soon,
        )
    }

    fn remove_done_callback(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = slf.py();
        // Compared with no borrow held (__eq__ is Python code, which may use this waiter), and the
        // list changed only once every comparison has succeeded: an __eq__ that raises removes nothing.
        let registered: Vec<Py<PyAny>> = slf
            .try_borrow()?
            .callbacks
            .iter()
            .map(|(cb, _)| cb.clone_ref(py))
            .collect();
        let mut matching = Vec::new();
        for cb in registered {
            if cb.bind(py).eq(callback)? {
                matching.push(cb);
            }
        }
        let mut this = slf.try_borrow_mut()?;
        let before = this.callbacks.len();
        this.callbacks.retain(|(cb, _)| !matching.iter().any(|m| m.is(&*cb)));
        Ok(before - this.callbacks.len())
    }

    #[pyo3(signature = (msg=None))]
    pub fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let (callbacks, event_loop) = {
            let mut this = slf.try_borrow_mut()?;
            if !this.is_pending() {
                return Ok(false);
            }
            this.state = State::Cancelled(msg);
            (std::mem::take(&mut this.callbacks), this.event_loop.clone_ref(py))
        };
        run_callbacks(py, &slf.clone().unbind(), callbacks, &event_loop, Run::Soon)?;
        Ok(true)
    }

    /// The task callbacks, the loop and the result, for the cycle collector: a waiting task and
    /// the transport it waits on refer to each other through the waiter.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for (callback, context) in &self.callbacks {
            visit.call(callback)?;
            visit.call(context)?;
        }
        visit.call(&self.event_loop)?;
        match &self.state {
            State::Done(Ok(value)) => visit.call(value),
            State::Cancelled(msg) => visit.call(msg),
            _ => Ok(()),
        }
    }

    fn __clear__(&mut self) {
        self.callbacks.clear();
    }

    fn __repr__(&self) -> String {
        let state = match self.state {
            State::Pending => "pending",
            State::Done(_) => "finished",
            State::Cancelled(_) => "cancelled",
        };
        format!("<rsock Waiter {state}>")
    }
}
