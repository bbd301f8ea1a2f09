//! The sender threads: each takes a ready batch, sends it, retries it with
//! backoff until it is delivered, refused, or out of time, then settles it.
//!
//! They never take the GIL or call into Python, and never log through the
//! handler they serve; problems go to [`crate::stats::Reporter`].

use crate::queue::{Batch, Queue};
use crate::retry::{classify, Backoff, Jitter, Verdict};
use crate::stats::{Problem, Reason, Reporter, Stats};
use crate::transport::{Endpoint, Transport};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
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
}

/// Age after which a sender opens new connections, so that a long-lived
/// process follows DNS changes and spreads over the endpoint's servers.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Body of one sender thread.
pub fn run(shared: Arc<Shared>) {
    let mut transport = Transport::new(&shared.endpoint);
    let mut opened = Instant::now();
    let mut jitter = Jitter::new();
    while let Some(batch) = shared.queue.next_batch() {
        if opened.elapsed() > MAX_CONNECTION_AGE {
            transport = Transport::new(&shared.endpoint);
            opened = Instant::now();
        }
        deliver(&shared, &transport, &batch, &mut jitter);
        shared.queue.settle(batch);
    }
}

fn deliver(shared: &Shared, transport: &Transport, batch: &Batch, jitter: &mut Jitter) {
    let give_up = Instant::now() + shared.retry_timeout;
    let stats = &shared.stats;
    let count = batch.count as u64;
    let compression = shared.endpoint.compression;
    let compressed = compression.encode(batch.body());
    let body = compressed.as_deref().unwrap_or(batch.body());
    let encoding = compressed.as_ref().and(compression.header());
    for attempt in 1u32.. {
        let outcome = transport.send(body, encoding);
        let verdict = classify(&outcome, SystemTime::now());
        if verdict == Verdict::Delivered {
            stats.sent.fetch_add(count, Relaxed);
            stats.batches_sent.fetch_add(1, Relaxed);
            stats.bytes_sent.fetch_add(body.len() as u64, Relaxed);
            return;
        }
        stats.failed_attempts.fetch_add(1, Relaxed);
        let Verdict::Retry(server_wait) = verdict else {
            stats.drop(Reason::Rejected, count);
            shared.reporter.report(Problem::Delivery, || {
                format!(
                    "{} refused a batch of {count} records ({outcome:?}); it was dropped, not retried",
                    shared.endpoint.url
                )
            });
            return;
        };
        let wait = shared.backoff.wait(attempt, server_wait, jitter.next_f64());
        if Instant::now() + wait > give_up {
            stats.drop(Reason::RetryTimeout, count);
            shared.reporter.report(Problem::Delivery, || {
                format!(
                    "gave up on a batch of {count} records after {attempt} attempts to {} ({outcome:?})",
                    shared.endpoint.url
                )
            });
            return;
        }
        stats.retries.fetch_add(1, Relaxed);
        shared.reporter.report(Problem::Delivery, || {
            format!(
                "delivery to {} failed ({outcome:?}); retrying with backoff",
                shared.endpoint.url
            )
        });
        if !shared.queue.pause(wait) {
            // Aborted at close, which counted this batch as dropped.
            return;
        }
    }
}
