//! `timber._engine.Engine`: one handler's pipeline, as Python sees it.

use crate::context::current;
use crate::convert::Walker;
use crate::frame::{write_record, Options};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use timber_core::compress::Compression;
use timber_core::encode::{Msgpack, Truncating, MAX_ARRAY_HEADER};
use timber_core::queue::{Push, MAX_REQUEST_BYTES};
use timber_core::retry::Backoff;
use timber_core::stats::Reason;
use timber_core::transport::{load_ca_bundle, Endpoint};
use timber_core::{Config, Engine, EngineError};

thread_local! {
    /// Encoding buffer reused across records; taken (not borrowed) so that a
    /// record logged while encoding another gets a fresh one.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Longest duration taken from Python: longer ones mean "forever" and are
/// cut here, where adding them to a clock cannot overflow.
const MAX_SECONDS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// Longest string kept whole in a record that is too large for a request.
const TRUNCATE_STRINGS_AT: usize = 16 * 1024;

/// Largest encoding buffer kept for the next record of a thread.
const SCRATCH_KEEP: usize = 1 << 20;

/// Seconds from Python into a duration, refusing negatives and NaN.
pub fn seconds(name: &str, v: f64) -> PyResult<Duration> {
    // NaN.min(x) is x: refuse NaN before clamping.
    let v = if v.is_nan() { v } else { v.min(MAX_SECONDS) };
    Duration::try_from_secs_f64(v).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {v}"
        ))
    })
}

fn engine_error(e: EngineError) -> PyErr {
    match e {
        EngineError::Invalid(m) => PyValueError::new_err(m),
    }
}

/// A handler's pipeline: encodes records on the calling thread and hands
/// them to the engine's sender threads.
#[pyclass(name = "Engine", module = "timber._engine", frozen)]
pub struct PyEngine {
    engine: Option<Engine>,
    context: Py<PyAny>,
    /// The bound `get` of the context's `ContextVar`, looked up once.
    var_get: Py<PyAny>,
    options: Options,
    raise_exceptions: bool,
    abandoned: AtomicBool,
}

impl PyEngine {
    fn engine(&self) -> &Engine {
        // Only `Drop` takes it out.
        self.engine.as_ref().expect("engine present until drop")
    }

    fn encode_and_push(
        &self,
        py: Python<'_>,
        engine: &Engine,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let snapshot = current(self.var_get.bind(py), self.context.bind(py));
        let mut sink = Msgpack {
            buf: SCRATCH.take(),
        };
        sink.buf.clear();
        let mut written = write_record(
            &mut sink,
            record,
            snapshot.as_ref(),
            self.options,
            &mut Walker::new(None),
        );
        if written.is_ok() && sink.buf.len() + MAX_ARRAY_HEADER > MAX_REQUEST_BYTES {
            // Too large for any request: send it with its long strings cut
            // rather than lose it.
            let mut cut = Truncating {
                inner: Msgpack::default(),
                max: TRUNCATE_STRINGS_AT,
            };
            written = write_record(
                &mut cut,
                record,
                snapshot.as_ref(),
                self.options,
                &mut Walker::new(None),
            );
            sink.buf.clear();
            sink.buf.extend_from_slice(&cut.inner.buf);
        }
        if written.is_ok() && engine.push(&sink.buf) == Push::Full && engine.waits_when_full() {
            // Only with drop_extra_events=False: wait for room without
            // holding the GIL the application needs.
            let buf = &sink.buf;
            py.detach(|| engine.push_wait(buf));
        }
        if sink.buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.set(sink.buf);
        }
        written
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (*, url, api_key, context, buffer_capacity, flush_interval, max_buffer_bytes,
        max_buffer_records,
        drop_extra_events, retry_timeout, timeout, max_in_flight, include_extra_attributes,
        raise_exceptions, compression = "gzip", ca_bundle = None, backoff_base = 0.5,
        backoff_max = 30.0, spool_dir = None, spool_max_bytes = 268_435_456))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: String,
        api_key: String,
        context: &Bound<'_, PyAny>,
        buffer_capacity: usize,
        flush_interval: f64,
        max_buffer_bytes: usize,
        max_buffer_records: usize,
        drop_extra_events: bool,
        retry_timeout: f64,
        timeout: f64,
        max_in_flight: usize,
        include_extra_attributes: bool,
        raise_exceptions: bool,
        compression: &str,
        ca_bundle: Option<std::path::PathBuf>,
        backoff_base: f64,
        backoff_max: f64,
        spool_dir: Option<std::path::PathBuf>,
        spool_max_bytes: u64,
    ) -> PyResult<Self> {
        let compression = Compression::parse(compression).ok_or_else(|| {
            PyValueError::new_err(format!(
                "compression must be 'gzip', 'deflate', 'zstd' or None, got {compression:?}"
            ))
        })?;
        let ca_certs = match ca_bundle {
            None => None,
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    PyValueError::new_err(format!("cannot read ca_bundle {}: {e}", path.display()))
                })?;
                let certs = load_ca_bundle(&pem).map_err(|e| {
                    PyValueError::new_err(format!("ca_bundle {}: {e}", path.display()))
                })?;
                Some(std::sync::Arc::new(certs))
            }
        };
        let var_get = context
            .getattr(intern!(context.py(), "_var"))
            .and_then(|var| var.getattr(intern!(context.py(), "get")))
            .map_err(|_| PyValueError::new_err("context must be a timber.TimberContext"))?;
        let config = Config {
            endpoint: Endpoint {
                url,
                api_key,
                timeout: seconds("timeout", timeout)?,
                compression,
                ca_certs,
            },
            batch_records: buffer_capacity,
            flush_interval: seconds("flush_interval", flush_interval)?,
            max_buffer_bytes,
            max_buffer_records,
            block: !drop_extra_events,
            retry_timeout: seconds("retry_timeout", retry_timeout)?,
            senders: max_in_flight,
            backoff: Backoff {
                base: seconds("backoff_base", backoff_base)?,
                cap: seconds("backoff_max", backoff_max)?,
            },
            spool: spool_dir.map(|dir| (dir, spool_max_bytes)),
        };
        Ok(Self {
            engine: Some(Engine::new(config).map_err(engine_error)?),
            context: context.clone().unbind(),
            var_get: var_get.unbind(),
            options: Options {
                include_extra_attributes,
                extras: true,
            },
            raise_exceptions,
            abandoned: AtomicBool::new(false),
        })
    }

    /// Encodes a `logging.LogRecord` and buffers it; never waits on the
    /// network, and waits for room only with `drop_extra_events=False`.
    fn emit(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(());
        }
        let engine = self.engine();
        // A panic here would reach the caller as PanicException: logging
        // must not do that, so it is caught and counted like any error.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.encode_and_push(py, engine, record)
        }));
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => internal("timber: the record could not be encoded (internal error)"),
        };
        engine.drop_records(Reason::Error, 1);
        if self.raise_exceptions {
            Err(error)
        } else {
            Ok(())
        }
    }

    /// Sends everything buffered and waits, at most `timeout` seconds, until
    /// every record emitted before the call is delivered or given up.
    /// Returns whether that happened in time.
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds("timeout", timeout)?;
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let engine = self.engine();
        Ok(py.detach(|| engine.flush(timeout)))
    }

    /// Stops accepting records and delivers what is buffered, for at most
    /// `timeout` seconds; then stops the sender threads.
    fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds("timeout", timeout)?;
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let engine = self.engine();
        Ok(py.detach(|| engine.close(timeout)))
    }

    /// Counters: records accepted, sent, dropped by reason, retries, bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine();
        let s = engine.stats();
        let (held_bytes, held_records) = engine.buffered();
        let d = PyDict::new(py);
        d.set_item("accepted", s.accepted)?;
        d.set_item("sent", s.sent)?;
        d.set_item("dropped", s.dropped_total())?;
        let by_reason = PyDict::new(py);
        for (name, n) in &s.dropped {
            by_reason.set_item(*name, *n)?;
        }
        d.set_item("dropped_by_reason", by_reason)?;
        d.set_item("retries", s.retries)?;
        d.set_item("spooled", s.spooled)?;
        d.set_item("replayed", s.replayed)?;
        d.set_item("failed_attempts", s.failed_attempts)?;
        d.set_item("batches_sent", s.batches_sent)?;
        d.set_item("bytes_sent", s.bytes_sent)?;
        d.set_item("buffered_records", held_records)?;
        d.set_item("batches_in_flight", engine.in_flight())?;
        d.set_item("buffered_bytes", held_bytes)?;
        Ok(d)
    }

    /// Records dropped because the buffer was full.
    #[getter]
    fn dropcount(&self) -> u64 {
        self.engine().dropped(Reason::Full)
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.engine().is_closed()
    }

    /// In a child process after `fork`: forget this engine without touching
    /// its locks or threads, which belong to the parent.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        if *self.abandoned.get_mut() {
            // Its mutexes may have been held by a thread that does not exist
            // in this process: never touch them.
            std::mem::forget(self.engine.take());
        }
    }
}

/// Raised only to report a bug in the engine to `raise_exceptions=True`.
pub fn internal(msg: &str) -> PyErr {
    PyRuntimeError::new_err(msg.to_owned())
}
