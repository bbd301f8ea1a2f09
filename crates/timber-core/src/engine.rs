//! The engine as a whole: configuration, lazy start of the sender threads,
//! push, flush and a bounded close.

use crate::queue::{Limits, Push, Queue, MAX_REQUEST_BYTES};
use crate::retry::Backoff;
use crate::spool::Spool;
use crate::stats::{say, Problem, Reason, Reporter, Snapshot, Stats};
use crate::transport::Endpoint;
use crate::worker::{self, Replay, Shared};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default byte budget of the buffer: at about 400 bytes a record, some
/// 160,000 records, enough to ride out minutes of outage at 1,000 records/s.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// Everything the engine needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where batches go.
    pub endpoint: Endpoint,
    /// Records per batch (`buffer_capacity`).
    pub batch_records: usize,
    /// Age at which a batch is sent even if not full (`flush_interval`).
    pub flush_interval: Duration,
    /// Byte budget of everything buffered.
    pub max_buffer_bytes: usize,
    /// Record budget of everything buffered.
    pub max_buffer_records: usize,
    /// How long one batch is retried before it is dropped.
    pub retry_timeout: Duration,
    /// Number of sender threads, each with one request in flight.
    pub senders: usize,
    /// Wait for room when the buffer is full instead of dropping
    /// (`drop_extra_events=False`).
    pub block: bool,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Spool directory and its size cap, if batches that cannot be
    /// delivered should go to disk.
    pub spool: Option<(PathBuf, u64)>,
}

/// Invalid configuration, found before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// A setting out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::Invalid(m.to_owned()));
        if self.batch_records == 0 {
            return bad("buffer_capacity must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval must be positive");
        }
        if self.max_buffer_bytes < 2 * MAX_REQUEST_BYTES {
            return bad("max_buffer_bytes must be at least 2 MB (two requests)");
        }
        if self.backoff.base.is_zero() || self.backoff.cap < self.backoff.base {
            return bad("backoff_base must be positive and at most backoff_max");
        }
        if self.max_buffer_records < self.batch_records {
            return bad("max_buffer_records must be at least buffer_capacity");
        }
        self.endpoint.proxy().map_err(EngineError::Invalid)?;
        if self.senders == 0 || self.senders > 64 {
            return bad("max_in_flight must be between 1 and 64");
        }
        let url = &self.endpoint.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad("host must start with http:// or https://");
        }
        Ok(())
    }
}

/// One pipeline: a buffer and its sender threads.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    senders: usize,
    block: bool,
    started: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Engine {
    /// Checks the configuration; starts nothing (threads start on the first
    /// record, so a process that forks before logging has none to lose).
    pub fn new(config: Config) -> Result<Self, EngineError> {
        config.validate()?;
        let limits = Limits {
            batch_records: config.batch_records,
            batch_bytes: MAX_REQUEST_BYTES,
            max_bytes: config.max_buffer_bytes,
            max_records: config.max_buffer_records,
            flush_interval: config.flush_interval,
        };
        let spool = match &config.spool {
            None => None,
            Some((dir, max_bytes)) => Some(Spool::open(dir, *max_bytes).map_err(|e| {
                EngineError::Invalid(format!("cannot open spool_dir {}: {e}", dir.display()))
            })?),
        };
        let backlog = spool.as_ref().is_some_and(|s| !s.is_empty());
        let engine = Self {
            shared: Arc::new(Shared {
                queue: Queue::new(limits),
                stats: Stats::default(),
                reporter: Reporter::default(),
                endpoint: config.endpoint,
                retry_timeout: config.retry_timeout,
                backoff: config.backoff,
                spool,
                replay: Mutex::new(Replay::default()),
            }),
            senders: config.senders,
            block: config.block,
            started: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        if backlog {
            // What an earlier process left in the spool goes out now.
            engine.start();
        }
        Ok(engine)
    }

    fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.senders {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("timber-sender-{i}"))
                .spawn(move || worker::run(shared));
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => say(&format!("could not start a sender thread: {e}")),
            }
        }
        if threads.is_empty() {
            // Try again with the next record rather than never send.
            self.started.store(false, Ordering::Release);
        }
    }

    /// Buffers one encoded record without waiting; counts it if dropped.
    /// With `block`, a full buffer is not a drop: [`Push::Full`] tells the
    /// caller to [`Engine::push_wait`] (after releasing its own locks).
    pub fn push(&self, record: &[u8]) -> Push {
        if !self.started.load(Ordering::Relaxed) {
            self.start();
        }
        let result = self.shared.queue.push(record);
        if !(self.block && result == Push::Full) {
            self.count(result);
        }
        result
    }

    /// Whether a full buffer makes [`Engine::push`] ask the caller to wait
    /// (`drop_extra_events=False`) rather than drop the record.
    pub fn waits_when_full(&self) -> bool {
        self.block
    }

    /// Buffers one encoded record, waiting for room if the buffer is full
    /// (`drop_extra_events=False`). Call without holding any lock a sender
    /// could need.
    pub fn push_wait(&self, record: &[u8]) -> Push {
        if !self.started.load(Ordering::Relaxed) {
            self.start();
        }
        // Without a sender nothing would ever make room: do not wait.
        let result = if self.started.load(Ordering::Acquire) {
            self.shared.queue.push_wait(record, None)
        } else {
            Push::Full
        };
        self.count(result);
        result
    }

    fn count(&self, result: Push) {
        let stats = &self.shared.stats;
        let reason = match result {
            Push::Accepted => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Push::Full => Reason::Full,
            Push::TooLarge => Reason::TooLarge,
            Push::Closed => Reason::Shutdown,
        };
        self.drop_records(reason, 1);
    }

    /// Counts records dropped before they reached the buffer, and reports
    /// it (at most once a minute).
    pub fn drop_records(&self, reason: Reason, n: u64) {
        let stats = &self.shared.stats;
        stats.drop(reason, n);
        self.shared.reporter.report(Problem::Dropped, || {
            let snap = stats.snapshot();
            format!(
                "dropping records ({}): {} dropped so far ({})",
                reason.name(),
                snap.dropped_total(),
                describe_drops(&snap)
            )
        });
    }

    /// Sends what is buffered and waits until every record pushed before the
    /// call is delivered or given up, for at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        if !self.started.load(Ordering::Relaxed) {
            return true;
        }
        self.shared.queue.flush(Instant::now() + timeout)
    }

    /// Stops accepting records, sends what is buffered for at most
    /// `timeout`, then gives up on the rest and stops the senders. Prints the
    /// totals of dropped records, if any. Idempotent.
    pub fn close(&self, timeout: Duration) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let queue = &self.shared.queue;
        queue.close();
        let drained = !self.started.load(Ordering::Relaxed) || queue.drain(deadline);
        if !drained {
            let (left, in_flight) = queue.abort();
            let stats = &self.shared.stats;
            stats.drop(Reason::Shutdown, in_flight);
            for batch in left {
                let spooled = self
                    .shared
                    .spool
                    .as_ref()
                    .is_some_and(|s| s.append(batch.body(), batch.count as u32).is_ok());
                if spooled {
                    stats
                        .spooled
                        .fetch_add(batch.count as u64, Ordering::Relaxed);
                } else {
                    stats.drop(Reason::Shutdown, batch.count as u64);
                }
            }
        }
        // Senders blocked in a request past the deadline are left behind;
        // process exit ends them.
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let grace = Instant::now() + Duration::from_millis(100);
        for h in std::mem::take(&mut *threads) {
            while !h.is_finished() && Instant::now() < grace.max(deadline) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let snap = self.shared.stats.snapshot();
        if snap.dropped_total() > 0 {
            say(&format!(
                "{} of {} records were not delivered ({})",
                snap.dropped_total(),
                snap.accepted + self.shared.stats.dropped(Reason::Full),
                describe_drops(&snap)
            ));
        }
        drained
    }

    /// Whether [`Engine::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Records dropped for `reason` so far.
    pub fn dropped(&self, reason: Reason) -> u64 {
        self.shared.stats.dropped(reason)
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// Batches being sent right now.
    pub fn in_flight(&self) -> usize {
        self.shared.queue.in_flight()
    }

    /// Bytes and records held in the buffer.
    pub fn buffered(&self) -> (usize, usize) {
        self.shared.queue.held()
    }
}

fn describe_drops(snap: &Snapshot) -> String {
    snap.dropped
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Drop for Engine {
    /// An engine dropped without `close` lets its senders drain in the
    /// background; nothing here waits.
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}
