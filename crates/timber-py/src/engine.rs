//! `timber._engine.Engine`: one handler's pipeline, as Python sees it. It
//! converts the handler's options into the engine's settings, a record
//! into an engine event, and releases the GIL around every wait.

use crate::context::{PyGlobal, Source};
use crate::frame::Record;
use crate::settings::{resolve, to_python};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::Duration;
use timber_core::{Engine, EngineError};

/// Maps an engine error to the Python exception a user sees.
pub fn engine_error(e: EngineError) -> PyErr {
    match e {
        EngineError::Invalid(m) => PyValueError::new_err(m),
    }
}

/// Seconds from Python into a duration, for the optional timeouts of
/// `flush` and `close` (the options themselves are checked by the engine).
fn seconds(v: Option<f64>) -> PyResult<Option<Duration>> {
    v.map(|v| {
        Duration::try_from_secs_f64(v.min(1e9)).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be a non-negative number of seconds, got {v}"
            ))
        })
    })
    .transpose()
}

/// A handler's pipeline: encodes records on the calling thread and hands
/// them to the engine's sender threads.
#[pyclass(name = "Engine", module = "timber._engine", frozen)]
pub struct PyEngine {
    /// This process's engine. Locked only under the GIL and only to read or
    /// replace the pointer, never across a wait, so a fork never copies it
    /// locked by another thread.
    engine: Mutex<Arc<Engine>>,
    context: Source,
    raise_exceptions: AtomicBool,
}

impl PyEngine {
    /// This process's engine: after a fork, wherever it was made (uWSGI
    /// forks its workers in C, where `os.register_at_fork` hooks never
    /// run), the first call in the child replaces the parent's engine with
    /// its own, as a child made by `os.fork()` gets: an empty buffer, its
    /// own counters, sender threads and connections. The parent's is left
    /// untouched (see `Engine::forked`). Runs under the GIL, which orders
    /// the threads of the child.
    fn engine(&self) -> Arc<Engine> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if engine.forked() {
            let own = Arc::new(engine.for_child());
            timber_core::close_at_exit(&own);
            if own.is_closed() {
                remember_closed(&own);
            }
            let parents = std::mem::replace(&mut *engine, own);
            // Dropping it touches nothing of the parent's (Engine's Drop).
            drop(parents);
        }
        engine.clone()
    }

    fn encode_and_push<'py>(
        &self,
        py: Python<'py>,
        engine: &Engine,
        record: &Bound<'py, PyAny>,
        message: Option<Bound<'py, PyString>>,
    ) -> PyResult<()> {
        let event = Record::read(record, None, message)?;
        let snapshot = event
            .captured_context()
            .or_else(|| self.context.current(py));
        let context = snapshot
            .as_ref()
            .map_or(&[][..], |s| s.get().entries.as_slice());
        if let Some(pending) = engine.emit(&event, context) {
            // Only with drop_extra_events=False: wait for room without
            // holding the GIL the application needs.
            py.detach(|| pending.wait());
        }
        Ok(())
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (options, context_var, global_context))]
    fn new(
        options: &Bound<'_, PyDict>,
        context_var: &Bound<'_, PyAny>,
        global_context: Py<PyGlobal>,
    ) -> PyResult<Self> {
        let resolved = resolve(options)?;
        let raise = resolved.settings.raise_exceptions;
        let engine = Arc::new(Engine::new(resolved).map_err(engine_error)?);
        // Delivered at exit even where Python's exit hooks are skipped.
        timber_core::close_at_exit(&engine);
        Ok(Self {
            engine: Mutex::new(engine),
            context: Source::new(context_var, global_context)?,
            raise_exceptions: AtomicBool::new(raise),
        })
    }

    /// Encodes a `logging.LogRecord` and buffers it; never waits on the
    /// network, and waits for room only with `drop_extra_events=False`.
    /// `message`, when given, is the handler's formatter's output.
    #[pyo3(signature = (record, message = None))]
    fn emit<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyAny>,
        message: Option<Bound<'py, PyString>>,
    ) -> PyResult<()> {
        let engine = &*self.engine();
        // A panic here would reach the caller as PanicException: logging
        // must not do that, so it is caught and counted like any error.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.encode_and_push(py, engine, record, message)
        }));
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => internal("timber: the record could not be encoded (internal error)"),
        };
        engine.failed();
        if self.raise_exceptions.load(Ordering::Relaxed) {
            Err(error)
        } else {
            Ok(())
        }
    }

    /// Sends everything buffered and waits, at most `timeout` seconds
    /// (`flush_timeout` if None), until every record emitted before the call
    /// is delivered or given up. Returns whether that happened in time.
    #[pyo3(signature = (timeout = None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = seconds(timeout)?;
        let engine = self.engine();
        Ok(py.detach(|| engine.flush(timeout)))
    }

    /// Stops accepting records and delivers what is buffered, for at most
    /// `timeout` seconds (`shutdown_timeout` if None); then stops the
    /// sender threads.
    #[pyo3(signature = (timeout = None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = seconds(timeout)?;
        let engine = self.engine();
        if !engine.is_closed() {
            remember_closed(&engine);
        }
        Ok(py.detach(|| engine.close(timeout)))
    }

    /// The process is exiting: waits for room end within `timeout` seconds
    /// (`shutdown_timeout` if None).
    #[pyo3(signature = (timeout = None))]
    fn end_waits(&self, timeout: Option<f64>) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        let engine = self.engine();
        engine.end_waits(timeout.unwrap_or(engine.settings().shutdown_timeout));
        Ok(())
    }

    /// Counters: records accepted, sent, dropped by reason, retries, bytes,
    /// and what the buffer holds now.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.engine().stats();
        let d = PyDict::new(py);
        for (name, value) in s.fields() {
            d.set_item(name, value)?;
        }
        let by_reason = PyDict::new(py);
        for (name, n) in &s.dropped_by_reason {
            by_reason.set_item(*name, *n)?;
        }
        d.set_item("dropped_by_reason", by_reason)?;
        Ok(d)
    }

    /// Every option's value as the engine runs with it.
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, value) in self.engine().settings().values() {
            d.set_item(name, to_python(py, &value)?)?;
        }
        Ok(d)
    }

    /// Whether internal errors of `emit` reach the caller.
    #[getter]
    fn get_raise_exceptions(&self) -> bool {
        self.raise_exceptions.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_raise_exceptions(&self, value: bool) {
        self.raise_exceptions.store(value, Ordering::Relaxed);
    }

    /// Records dropped because the buffer was full.
    #[getter]
    fn dropcount(&self) -> u64 {
        self.engine().dropcount()
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.engine().is_closed()
    }
}

/// Engines closed in this process. Records logged into a closed handler are
/// refused and counted; those logged after the handlers closed at exit (by
/// `__del__` methods during interpreter finalization, daemon threads, exit
/// hooks that run after logging's) would be missing from the totals printed
/// at close, so each engine prints them again at the very end.
static CLOSED: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// Registers the end-of-process report at import, so that no fork can copy
/// its once-lock half-taken (see `names`).
pub fn warm() {
    AT_EXIT.call_once(register_at_exit);
}

/// Called under the GIL (so never while a fork copies the lock held).
fn remember_closed(engine: &Arc<Engine>) {
    AT_EXIT.call_once(register_at_exit);
    let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
    closed.retain(|w| w.strong_count() > 0);
    closed.push(Arc::downgrade(engine));
}

#[allow(unsafe_code)]
fn register_at_exit() {
    // SAFETY: Py_AtExit only stores the pointer; `report_at_exit` is called
    // once Python is finalized and touches no Python object or API.
    unsafe {
        pyo3::ffi::Py_AtExit(Some(report_at_exit));
    }
}

/// Runs after the interpreter is finalized: later than any Python code can
/// log, so the line it prints is the last word.
extern "C" fn report_at_exit() {
    let Ok(closed) = CLOSED.try_lock() else {
        return;
    };
    for engine in closed.iter().filter_map(Weak::upgrade) {
        engine.report_late();
    }
}

/// Raised only to report a bug in the engine to `raise_exceptions=True`.
pub fn internal(msg: &str) -> PyErr {
    PyRuntimeError::new_err(msg.to_owned())
}
