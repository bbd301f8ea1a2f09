//! The sender threads: each takes a ready batch, has the destination make
//! the request body (compressed once), sends it, retries it with backoff
//! until it is delivered, refused, or out of time, then settles it.
//!
//! With a spool, a batch that fails its first attempt is written to disk
//! instead of retried in memory, and one sender at a time replays the spool
//! in order; while the spool holds anything, new batches join its end so the
//! order is kept.
//!
//! They never take the GIL or call into Python, and never log through the
//! handler they serve; problems go to [`crate::stats::Reporter`].

use crate::destination::{Body, Verdict};
use crate::engine::{Fate, Pipeline};
use crate::queue::{Batch, Next};
use crate::retry::Jitter;
use crate::spool::Spool;
use crate::stats::{Problem, Reason};
use crate::transport::{idempotency_key, Sent, Transport};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::TryLockError;
use std::time::{Duration, Instant};

/// When the spool is tried next.
#[derive(Debug)]
pub(crate) struct Replay {
    next_attempt: Instant,
    failures: u32,
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
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Body of one sender thread.
pub(crate) fn run(p: &Pipeline) {
    let mut sender = Sender {
        transport: Transport::new(&p.resolved),
        opened: Instant::now(),
        jitter: Jitter::new(),
    };
    loop {
        let wake_at = match &p.spool {
            Some(spool) if !p.queue.is_aborted() && !spool.is_empty() => sender.replay(p, spool),
            _ => None,
        };
        match p.queue.next_batch_until(wake_at) {
            Next::Batch(batch) => {
                let fate = sender.deliver(p, &batch);
                p.settle(&batch, fate);
            }
            Next::Idle => {}
            Next::Done if p.spool.as_ref().is_some_and(|s| replays_at_close(p, s)) => {}
            Next::Done => return,
        }
    }
}

/// Closing, with nothing left in memory: whether to go on replaying. A
/// batch that joined the spool behind a replay (or a backlog) at close is
/// still sent while the endpoint accepts; the first failure, or an abort,
/// leaves the rest on disk for the next process.
fn replays_at_close(p: &Pipeline, spool: &Spool) -> bool {
    // Waits for a replay in progress, so that what was spooled behind it is
    // seen here even if that replay found the spool empty.
    let state = p.replay.lock().unwrap_or_else(|e| e.into_inner());
    !p.queue.is_aborted()
        && !spool.is_empty()
        && state.failures == 0
        && Instant::now() >= state.next_attempt
}

struct Sender {
    transport: Transport,
    opened: Instant,
    jitter: Jitter,
}

impl Sender {
    fn send(&mut self, p: &Pipeline, batch: &[u8], body: &mut Body, key: &str) -> Sent {
        if self.opened.elapsed() > MAX_CONNECTION_AGE {
            self.transport = Transport::new(&p.resolved);
            self.opened = Instant::now();
        }
        self.transport.send(&p.destination, batch, body, key)
    }

    fn rejected(p: &Pipeline, count: u64, why: &str) {
        p.reporter.report(Problem::Delivery, || {
            format!(
                "{} refused a batch of {count} records ({why}); it was dropped, not retried",
                p.destination.display_url()
            )
        });
    }

    /// Delivers one batch, and says how it ended.
    fn deliver(&mut self, p: &Pipeline, batch: &Batch) -> Fate {
        let settings = &p.resolved.settings;
        let give_up = Instant::now() + settings.retry_timeout;
        let count = batch.count as u64;
        let mut spool = p.spool.as_ref();
        // Behind a backlog on disk, or a replay in progress: join the end of
        // the spool, to keep the order (and never wait for the replay).
        if let Some(s) = spool {
            let replaying = matches!(p.replay.try_lock(), Err(TryLockError::WouldBlock));
            if (replaying || !s.is_empty()) && p.spool(batch.body(), batch.count) {
                return Fate::Spooled;
            }
        }
        let key = idempotency_key(batch.body());
        let mut body = p.destination.body(batch.body(), &key);
        for attempt in 1u32.. {
            let sent = self.send(p, batch.body(), &mut body, &key);
            let server_wait = match sent.verdict {
                Verdict::Delivered => {
                    p.queue.recovered();
                    return Fate::Delivered { wire: sent.wire };
                }
                // A split the transport could not make is a refusal.
                Verdict::Reject(why) | Verdict::Split(why) => {
                    p.counters.failed_attempts.fetch_add(1, Relaxed);
                    Self::rejected(p, count, &why);
                    return Fate::Dropped(Reason::Rejected);
                }
                Verdict::Partial { rejected, why } => {
                    p.queue.recovered();
                    Self::rejected(p, rejected, &why);
                    return Fate::Partial {
                        wire: sent.wire,
                        rejected,
                    };
                }
                Verdict::Retry(wait) => wait,
            };
            p.counters.failed_attempts.fetch_add(1, Relaxed);
            report_retry(p, &sent.said);
            if spool.is_some() {
                if p.spool(batch.body(), batch.count) {
                    return Fate::Spooled;
                }
                spool = None;
            }
            let wait = settings
                .backoff()
                .wait(attempt, server_wait, self.jitter.next_f64());
            if Instant::now() + wait > give_up {
                p.reporter.report(Problem::Delivery, || {
                    format!(
                        "gave up on a batch of {count} records after {attempt} attempts to {} ({})",
                        p.destination.display_url(),
                        sent.said
                    )
                });
                return Fate::Dropped(Reason::RetryTimeout);
            }
            p.counters.retries.fetch_add(1, Relaxed);
            if !p.queue.pause(wait) {
                // Aborted at close, which settled this batch.
                return Fate::Dropped(Reason::Shutdown);
            }
        }
        unreachable!("the attempts loop returns")
    }

    /// Sends the oldest spooled batch if it is time and no other sender is
    /// replaying; returns when to try again.
    fn replay(&mut self, p: &Pipeline, spool: &Spool) -> Option<Instant> {
        let mut state = match p.replay.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Some(Instant::now() + Duration::from_millis(100));
            }
        };
        if Instant::now() < state.next_attempt {
            return Some(state.next_attempt);
        }
        let backoff = p.resolved.settings.backoff();
        let next = spool.next();
        p.spool_events();
        let entry = match next {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                p.reporter
                    .report(Problem::Spool, || format!("cannot read the spool: {e}"));
                state.next_attempt = Instant::now() + backoff.cap;
                return Some(state.next_attempt);
            }
        };
        let count = u64::from(entry.count);
        let key = idempotency_key(&entry.payload);
        let mut body = p.destination.body(&entry.payload, &key);
        let sent = self.send(p, &entry.payload, &mut body, &key);
        let c = &p.counters;
        match sent.verdict {
            Verdict::Delivered => {
                p.queue.recovered();
                c.sent.fetch_add(count, Release);
                c.batches_sent.fetch_add(1, Relaxed);
                c.bytes_sent.fetch_add(sent.wire as u64, Relaxed);
                c.replayed.fetch_add(count, Release);
                state.failures = 0;
            }
            Verdict::Reject(why) | Verdict::Split(why) => {
                c.failed_attempts.fetch_add(1, Relaxed);
                c.drop(Reason::Rejected, count);
                Self::rejected(p, count, &why);
            }
            Verdict::Partial { rejected, why } => {
                let rejected = rejected.min(count);
                c.sent.fetch_add(count - rejected, Release);
                c.batches_sent.fetch_add(1, Relaxed);
                c.bytes_sent.fetch_add(sent.wire as u64, Relaxed);
                c.replayed.fetch_add(count - rejected, Release);
                c.drop(Reason::Rejected, rejected);
                Self::rejected(p, rejected, &why);
            }
            Verdict::Retry(server_wait) => {
                c.failed_attempts.fetch_add(1, Relaxed);
                report_retry(p, &sent.said);
                state.failures += 1;
                let wait = backoff.wait(state.failures, server_wait, self.jitter.next_f64());
                state.next_attempt = Instant::now() + wait;
                return Some(state.next_attempt);
            }
        }
        let committed = spool.commit(&entry);
        p.spool_events();
        if let Err(e) = committed {
            p.reporter.report(Problem::Spool, || {
                format!("cannot update the spool cursor: {e}")
            });
        }
        Some(Instant::now())
    }
}

fn report_retry(p: &Pipeline, said: &str) {
    p.reporter.report(Problem::Delivery, || {
        format!(
            "delivery to {} failed ({said}); retrying with backoff",
            p.destination.display_url(),
        )
    });
}
