//! The engine shared by the layer, the logger and the guard, and the guard
//! itself: whoever holds the [`Guard`] decides when the pipeline closes.

use crate::record::Record;
use std::sync::Arc;
use std::time::Duration;
use timber_core::{Engine, Settings, Stats, Value};

/// One pipeline, shared.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    engine: Arc<Engine>,
}

impl Handle {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine: Arc::new(engine),
        }
    }

    /// Encodes and buffers one record on the calling thread; waits for
    /// room only with `drop_extra_events(false)`.
    pub(crate) fn emit(&self, record: &Record<'_>, context: &[(Box<str>, Value)]) {
        // A panic inside the engine must not reach the code that logged: it
        // is counted as a record that could not be sent, as in Python.
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(pending) = self.engine.emit(record, context) {
                pending.wait();
            }
        }));
        if sent.is_err() {
            self.engine.failed();
        }
    }

    pub(crate) fn flush(&self) -> bool {
        self.engine.flush(None)
    }

    pub(crate) fn stats(&self) -> Stats {
        self.engine.stats()
    }

    pub(crate) fn settings(&self) -> &Settings {
        self.engine.settings()
    }

    pub(crate) fn close(&self, timeout: Option<Duration>) -> bool {
        self.engine.close(timeout)
    }
}

/// Closes the pipeline when dropped: what was logged is delivered within
/// `shutdown_timeout`, then the sender threads stop. Hold it in `main`
/// (`let _guard = ...`; a bare `_` drops it at once) so that a normal
/// return from `main` delivers everything. `std::process::exit` skips
/// destructors: call [`Guard::close`] before it.
#[derive(Debug)]
#[must_use = "dropping the guard closes the pipeline: bind it to a variable that lives until the end of main"]
pub struct Guard {
    handle: Handle,
}

impl Guard {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// Sends what is buffered and waits until every record logged before
    /// the call is delivered or given up, for at most `flush_timeout`.
    /// True if that happened in time.
    pub fn flush(&self) -> bool {
        self.handle.flush()
    }

    /// The pipeline's counters: records accepted, sent, dropped by reason,
    /// what is buffered now. Without a spool,
    /// `accepted = sent + dropped + buffered_records`.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Every option as the pipeline runs with it.
    pub fn settings(&self) -> &Settings {
        self.handle.settings()
    }

    /// Closes now, delivering what is buffered within `shutdown_timeout`;
    /// true if everything was delivered (or given up) in time. Records
    /// logged afterwards are counted as dropped (`shutdown`).
    pub fn close(self) -> bool {
        self.handle.close(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Idempotent: after `close`, nothing happens here.
        self.handle.close(None);
    }
}
