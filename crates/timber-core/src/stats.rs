//! Counters of what happened to records, and the rate-limited reports of
//! failures and drops on stderr.
//!
//! The engine never logs through the logging system it serves (that would
//! feed back into itself): problems go to stderr, at most once a minute per
//! kind, and the totals once at close.

use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why records were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The buffer was at its byte budget (`drop_extra_events=True`).
    Full,
    /// One record larger than a whole request may be.
    TooLarge,
    /// The server refused the batch (a 4xx other than 408/429).
    Rejected,
    /// Retries went on past `retry_timeout`.
    RetryTimeout,
    /// Still undelivered when `shutdown_timeout` ran out.
    Shutdown,
    /// The record could not be encoded (a bug: reported).
    Error,
    /// Spooled, then deleted from disk by someone else (a tmp cleaner)
    /// before it was sent.
    SpoolLost,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 7] = [
        Reason::Full,
        Reason::TooLarge,
        Reason::Rejected,
        Reason::RetryTimeout,
        Reason::Shutdown,
        Reason::Error,
        Reason::SpoolLost,
    ];

    /// Stable name used in `stats()` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Full => "buffer_full",
            Reason::TooLarge => "too_large",
            Reason::Rejected => "rejected",
            Reason::RetryTimeout => "retry_timeout",
            Reason::Shutdown => "shutdown",
            Reason::Error => "error",
            Reason::SpoolLost => "spool_lost",
        }
    }
}

/// Counters shared by the logging threads and the sender threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub retries: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub adopted: AtomicU64,
    pub retimed: AtomicU64,
    dropped: [AtomicU64; 7],
}

/// What happened to records so far, with what the buffer holds now.
///
/// Without a spool, `accepted = sent + dropped + buffered_records` at every
/// moment; with one, records written to the spool (`spooled`) leave the
/// buffer and come back as `sent` (and `replayed`) when delivered, or as
/// `dropped` (`rejected`, `spool_lost`). Records taken over from the spool
/// of an earlier process (`adopted`) come back the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records handed to the handler.
    pub accepted: u64,
    /// Records the endpoint accepted.
    pub sent: u64,
    /// Records dropped per reason, in [`Reason::ALL`] order.
    pub dropped_by_reason: Vec<(&'static str, u64)>,
    /// Attempts that will be retried.
    pub retries: u64,
    /// Attempts that failed (any reason).
    pub failed_attempts: u64,
    /// Records written to the spool.
    pub spooled: u64,
    /// Records delivered from the spool (this process's or an earlier one's).
    pub replayed: u64,
    /// Records found in the spool lanes of earlier processes, taken over.
    pub adopted: u64,
    /// Records whose time the destination cannot hold, sent with the time
    /// they were encoded instead (ClickHouse: outside 1970-2106).
    pub retimed: u64,
    /// Batches the endpoint accepted.
    pub batches_sent: u64,
    /// Request bodies accepted, in bytes on the wire.
    pub bytes_sent: u64,
    /// Records held in the buffer (filling, ready and in flight).
    pub buffered_records: u64,
    /// Bytes held in the buffer.
    pub buffered_bytes: u64,
    /// Batches being sent right now.
    pub batches_in_flight: u64,
}

impl Stats {
    /// Records this process answered for: handed to the handler, or taken
    /// over from the spool of an earlier process.
    pub fn handled(&self) -> u64 {
        self.accepted + self.adopted
    }

    /// All records dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_by_reason.iter().map(|(_, n)| n).sum()
    }

    /// Every plain counter by its name in `stats()`, `dropped` included
    /// (`dropped_by_reason` is the one nested map).
    pub fn fields(&self) -> [(&'static str, u64); 14] {
        [
            ("accepted", self.accepted),
            ("sent", self.sent),
            ("dropped", self.dropped()),
            ("retries", self.retries),
            ("failed_attempts", self.failed_attempts),
            ("spooled", self.spooled),
            ("replayed", self.replayed),
            ("adopted", self.adopted),
            ("retimed", self.retimed),
            ("batches_sent", self.batches_sent),
            ("bytes_sent", self.bytes_sent),
            ("buffered_records", self.buffered_records),
            ("buffered_bytes", self.buffered_bytes),
            ("batches_in_flight", self.batches_in_flight),
        ]
    }

    /// The dropped records by reason, for messages: `"shutdown: 3, ..."`.
    pub fn describe_drops(&self) -> String {
        self.dropped_by_reason
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Counters {
    /// Counts `n` records dropped for `why` (released: see
    /// [`Counters::snapshot`]).
    pub fn drop(&self, why: Reason, n: u64) {
        self.dropped[why as usize].fetch_add(n, Release);
    }

    /// Records dropped for `why` so far.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped[why as usize].load(Acquire)
    }

    /// The counters; the buffer's figures are the caller's to fill in.
    ///
    /// A record is counted handled (`accepted`, `adopted`) before its fate
    /// (`sent`, `spooled`, dropped), which is counted with `Release`. So
    /// the fates are read first, with `Acquire`, and what was handled
    /// last: a read taken while other threads go on logging then never
    /// shows a fate without its record, and "N of M records were not
    /// delivered" never has N above M.
    pub fn snapshot(&self) -> Stats {
        let sent = self.sent.load(Acquire);
        let spooled = self.spooled.load(Acquire);
        let replayed = self.replayed.load(Acquire);
        let dropped_by_reason = Reason::ALL
            .iter()
            .map(|d| (d.name(), self.dropped(*d)))
            .collect();
        Stats {
            sent,
            spooled,
            replayed,
            dropped_by_reason,
            bytes_sent: self.bytes_sent.load(Relaxed),
            batches_sent: self.batches_sent.load(Relaxed),
            retries: self.retries.load(Relaxed),
            failed_attempts: self.failed_attempts.load(Relaxed),
            retimed: self.retimed.load(Relaxed),
            accepted: self.accepted.load(Acquire),
            adopted: self.adopted.load(Acquire),
            ..Stats::default()
        }
    }
}

/// How often one kind of problem may be reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Writes problems to stderr, each kind at most once per [`REPORT_EVERY`].
#[derive(Debug, Default)]
pub struct Reporter {
    last: Mutex<[Option<Instant>; 4]>,
}

/// Kinds of problems, each rate-limited on its own.
#[derive(Debug, Clone, Copy)]
pub enum Problem {
    /// An attempt to deliver failed.
    Delivery = 0,
    /// Records were dropped.
    Dropped = 1,
    /// The spool could not be written or read.
    Spool = 2,
    /// A record was sent other than as logged (a time the destination
    /// cannot hold).
    Adjusted = 3,
}

impl Reporter {
    /// Reports `message` unless a problem of this kind was reported within
    /// the last minute. `message` is built only when it will be printed.
    pub fn report(&self, kind: Problem, message: impl FnOnce() -> String) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            let slot = &mut last[kind as usize];
            if slot.is_some_and(|t| now.duration_since(t) < REPORT_EVERY) {
                return;
            }
            *slot = Some(now);
        }
        say(&message());
    }
}

/// Writes one line to stderr, ignoring errors (stderr may be closed).
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "timber: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let s = Counters::default();
        s.drop(Reason::Full, 3);
        s.drop(Reason::Shutdown, 2);
        let snap = s.snapshot();
        assert_eq!(snap.dropped(), 5);
        assert_eq!(snap.dropped_by_reason[0], ("buffer_full", 3));
        assert_eq!(snap.dropped_by_reason[4], ("shutdown", 2));
        assert_eq!(snap.describe_drops(), "buffer_full: 3, shutdown: 2");
    }

    #[test]
    fn a_snapshot_never_counts_more_dropped_than_accepted() {
        // A record is counted accepted, then dropped (refused after close)
        // while another thread reads the totals: each read must include the
        // acceptance of every drop it sees.
        use std::sync::atomic::AtomicBool;
        let c = Counters::default();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Relaxed) {
                    c.accepted.fetch_add(1, Relaxed);
                    c.drop(Reason::Shutdown, 1);
                }
            });
            let start = Instant::now();
            let mut reads = 0u64;
            let mut torn = None;
            while start.elapsed() < Duration::from_millis(500) || reads < 100_000 {
                let snap = c.snapshot();
                reads += 1;
                if snap.dropped() > snap.handled() {
                    torn = Some((snap.dropped(), snap.handled()));
                    break;
                }
            }
            stop.store(true, Relaxed);
            assert_eq!(torn, None, "dropped > accepted after {reads} reads");
        });
    }

    #[test]
    fn reports_once_per_interval() {
        let r = Reporter::default();
        let mut printed = 0;
        for _ in 0..5 {
            r.report(Problem::Dropped, || {
                printed += 1;
                String::from("test report, please ignore")
            });
        }
        assert_eq!(printed, 1);
    }
}
