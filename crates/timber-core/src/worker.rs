//! The sender threads: each takes a ready batch, sends it, retries it with
//! backoff until it is delivered, refused, or out of time, then settles it.
//!
//! With a spool, a batch that fails its first attempt is written to disk
//! instead of retried in memory, and one sender at a time replays the spool
//! in order; while the spool holds anything, new batches join its end so the
//! order is kept.
//!
//! They never take the GIL or call into Python, and never log through the
//! handler they serve; problems go to [`crate::stats::Reporter`].

use crate::queue::{Batch, Next, Queue};
use crate::retry::{classify, Backoff, Jitter, Outcome, Verdict};
use crate::spool::Spool;
use crate::stats::{Problem, Reason, Reporter, Stats};
use crate::transport::{Endpoint, Transport};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant, SystemTime};

/// What the senders share with the engine.
#[derive(Debug)]
pub struct Shared {
    /// The buffer.
    pub queue: Queue,
    /// Counters.
    pub stats: Stats,
    /// Rate-limited stderr reports.
    pub reporter: Reporter,
    /// Where batches go.
    pub endpoint: Endpoint,
    /// How long a batch may be retried before it is dropped.
    pub retry_timeout: Duration,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// The durable spool, if enabled.
    pub spool: Option<Spool>,
    /// Replay state: taken by one sender at a time.
    pub replay: Mutex<Replay>,
}

/// When the spool is tried next.
#[derive(Debug)]
pub struct Replay {
    /// Not before this.
    pub next_attempt: Instant,
    /// Failed attempts in a row.
    pub failures: u32,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            next_attempt: Instant::now(),
            failures: 0,
        }
    }
}

/// Age after which a sender opens new connections, so that a long-lived
/// process follows DNS changes and spreads over the endpoint's servers.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Body of one sender thread.
pub fn run(shared: Arc<Shared>) {
    let mut sender = Sender {
        transport: Transport::new(&shared.endpoint),
        opened: Instant::now(),
        jitter: Jitter::new(),
    };
    loop {
        let wake_at = match &shared.spool {
            Some(spool) if !shared.queue.is_aborted() && !spool.is_empty() => {
                sender.replay(&shared, spool)
            }
            _ => None,
        };
        match shared.queue.next_batch_until(wake_at) {
            Next::Batch(batch) => {
                sender.deliver(&shared, &batch);
                shared.queue.settle(batch);
            }
            Next::Idle => {}
            Next::Done => return,
        }
    }
}

struct Sender {
    transport: Transport,
    opened: Instant,
    jitter: Jitter,
}

impl Sender {
    fn send(&mut self, shared: &Shared, body: &[u8]) -> (Outcome, usize) {
        if self.opened.elapsed() > MAX_CONNECTION_AGE {
            self.transport = Transport::new(&shared.endpoint);
            self.opened = Instant::now();
        }
        let compression = shared.endpoint.compression;
        let compressed = compression.encode(body);
        let wire = compressed.as_deref().unwrap_or(body);
        let encoding = compressed.as_ref().and(compression.header());
        (self.transport.send(wire, encoding), wire.len())
    }

    fn delivered(shared: &Shared, count: u64, wire_bytes: usize) {
        let stats = &shared.stats;
        stats.sent.fetch_add(count, Relaxed);
        stats.batches_sent.fetch_add(1, Relaxed);
        stats.bytes_sent.fetch_add(wire_bytes as u64, Relaxed);
    }

    fn rejected(shared: &Shared, count: u64, outcome: &Outcome) {
        shared.stats.drop(Reason::Rejected, count);
        shared.reporter.report(Problem::Delivery, || {
            format!(
                "{} refused a batch of {count} records ({outcome:?}); it was dropped, not retried",
                shared.endpoint.display_url()
            )
        });
    }

    /// Writes a batch to the spool; false if there is no room.
    fn spool(shared: &Shared, spool: &Spool, batch: &Batch) -> bool {
        match spool.append(batch.body(), batch.count as u32) {
            Ok(()) => {
                shared.stats.spooled.fetch_add(batch.count as u64, Relaxed);
                true
            }
            Err(e) => {
                shared.reporter.report(Problem::Spool, || {
                    format!("could not spool a batch ({e}); keeping it in memory")
                });
                false
            }
        }
    }

    fn deliver(&mut self, shared: &Shared, batch: &Batch) {
        let give_up = Instant::now() + shared.retry_timeout;
        let stats = &shared.stats;
        let count = batch.count as u64;
        let mut spool = shared.spool.as_ref();
        // Behind a backlog on disk, or a replay in progress: join the end of
        // the spool, to keep the order (and never wait for the replay).
        if let Some(s) = spool {
            let replaying = matches!(shared.replay.try_lock(), Err(TryLockError::WouldBlock));
            if (replaying || !s.is_empty()) && Self::spool(shared, s, batch) {
                return;
            }
        }
        for attempt in 1u32.. {
            let (outcome, wire_bytes) = self.send(shared, batch.body());
            let verdict = classify(&outcome, SystemTime::now());
            if verdict != Verdict::Delivered {
                stats.failed_attempts.fetch_add(1, Relaxed);
            }
            if matches!(verdict, Verdict::Delivered | Verdict::Rejected)
                && shared.queue.is_aborted()
            {
                // Close gave up on this batch and counted it lost; it was not.
                stats.undrop(Reason::Shutdown, count);
            }
            let Verdict::Retry(server_wait) = verdict else {
                if verdict == Verdict::Delivered {
                    Self::delivered(shared, count, wire_bytes);
                } else {
                    Self::rejected(shared, count, &outcome);
                }
                return;
            };
            report_retry(shared, &outcome);
            if let Some(s) = spool {
                if Self::spool(shared, s, batch) {
                    if shared.queue.is_aborted() {
                        // Close counted it lost; it is on disk instead.
                        stats.undrop(Reason::Shutdown, count);
                    }
                    return;
                }
                spool = None;
            }
            let wait = shared
                .backoff
                .wait(attempt, server_wait, self.jitter.next_f64());
            if Instant::now() + wait > give_up {
                stats.drop(Reason::RetryTimeout, count);
                shared.reporter.report(Problem::Delivery, || {
                    format!(
                        "gave up on a batch of {count} records after {attempt} attempts to {} ({outcome:?})",
                        shared.endpoint.display_url()
                    )
                });
                return;
            }
            stats.retries.fetch_add(1, Relaxed);
            if !shared.queue.pause(wait) {
                // Aborted at close, which counted this batch as dropped.
                return;
            }
        }
    }

    /// Sends the oldest spooled batch if it is time and no other sender is
    /// replaying; returns when to try again.
    fn replay(&mut self, shared: &Shared, spool: &Spool) -> Option<Instant> {
        let mut state = match shared.replay.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Some(Instant::now() + Duration::from_millis(100));
            }
        };
        if Instant::now() < state.next_attempt {
            return Some(state.next_attempt);
        }
        let entry = match spool.next() {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                shared
                    .reporter
                    .report(Problem::Spool, || format!("cannot read the spool: {e}"));
                state.next_attempt = Instant::now() + shared.backoff.cap;
                return Some(state.next_attempt);
            }
        };
        let count = u64::from(entry.count);
        let (outcome, wire_bytes) = self.send(shared, &entry.payload);
        match classify(&outcome, SystemTime::now()) {
            Verdict::Delivered => {
                Self::delivered(shared, count, wire_bytes);
                shared.stats.replayed.fetch_add(count, Relaxed);
                state.failures = 0;
            }
            Verdict::Rejected => Self::rejected(shared, count, &outcome),
            Verdict::Retry(server_wait) => {
                shared.stats.failed_attempts.fetch_add(1, Relaxed);
                report_retry(shared, &outcome);
                state.failures += 1;
                let wait = shared
                    .backoff
                    .wait(state.failures, server_wait, self.jitter.next_f64());
                state.next_attempt = Instant::now() + wait;
                return Some(state.next_attempt);
            }
        }
        if let Err(e) = spool.commit(&entry) {
            shared.reporter.report(Problem::Spool, || {
                format!("cannot update the spool cursor: {e}")
            });
        }
        Some(Instant::now())
    }
}

fn report_retry(shared: &Shared, outcome: &Outcome) {
    shared.reporter.report(Problem::Delivery, || {
        format!(
            "delivery to {} failed ({outcome:?}); retrying with backoff",
            shared.endpoint.display_url()
        )
    });
}
