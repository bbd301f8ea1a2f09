//! The engine as a whole: built from resolved settings, it encodes events
//! on the calling thread, buffers them, starts its sender threads on the
//! first record, flushes, and closes within a bound.
//!
//! What happens to each batch is counted in one place, [`Pipeline::settle`]:
//! a batch is settled once, by its sender or, at a close that runs out of
//! time, by the close itself, whichever comes first.

use crate::destination::{Destination, Kind};
use crate::event::Event;
use crate::queue::{Batch, Holding, Limits, Push, Queue};
use crate::settings::{Resolved, Settings};
use crate::spool::{Spool, SpoolError, ENTRY_OVERHEAD};
use crate::stats::{say, Counters, Problem, Reason, Reporter, Stats};
use crate::value::Value;
use crate::worker::{self, Replay};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why [`Engine::emit_all`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The buffer has no room for all of them now.
    #[error("the buffer is full")]
    Full,
    /// The spool could not keep them beside what is held already, were
    /// delivery to fail: taking them could lose them at close.
    #[error("the spool is too full to keep them")]
    SpoolFull,
    /// The engine is closed.
    #[error("the engine is closed")]
    Closed,
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// A setting out of range, or a resource it names unusable.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::settings::SettingsError> for EngineError {
    fn from(e: crate::settings::SettingsError) -> Self {
        EngineError::Invalid(e.0)
    }
}

thread_local! {
    /// Encoding buffer reused across records; taken (not borrowed) so that
    /// a record logged while encoding another gets a fresh one.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Largest encoding buffer kept for the next record of a thread.
const SCRATCH_KEEP: usize = 1 << 20;

/// Longest close waits for producers it woke to count their records.
const COUNT_GRACE: Duration = Duration::from_millis(100);

/// How a batch ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fate {
    /// The endpoint accepted it; `wire` bytes were sent.
    Delivered { wire: usize },
    /// Written to the spool.
    Spooled,
    /// Lost, for this reason.
    Dropped(Reason),
    /// Delivered but for `rejected` records the endpoint refused.
    Partial { wire: usize, rejected: u64 },
}

/// What the sender threads share with the engine.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub queue: Queue,
    pub counters: Counters,
    pub reporter: Reporter,
    pub destination: Destination,
    pub resolved: Resolved,
    pub spool: Option<Spool>,
    pub replay: Mutex<Replay>,
}

impl Pipeline {
    fn settings(&self) -> &Settings {
        &self.resolved.settings
    }

    /// Settles a batch in flight and counts its fate, unless it was
    /// settled already (then it was counted already).
    pub fn settle(&self, batch: &Batch, fate: Fate) {
        self.queue.settle_counted(batch, || self.count(batch, fate));
    }

    fn count(&self, batch: &Batch, fate: Fate) {
        let n = batch.count as u64;
        let c = &self.counters;
        match fate {
            Fate::Delivered { wire } => {
                c.sent.fetch_add(n, Ordering::Release);
                c.batches_sent.fetch_add(1, Ordering::Relaxed);
                c.bytes_sent.fetch_add(wire as u64, Ordering::Relaxed);
            }
            Fate::Spooled => {
                c.spooled.fetch_add(n, Ordering::Release);
            }
            Fate::Dropped(reason) => c.drop(reason, n),
            Fate::Partial { wire, rejected } => {
                let rejected = rejected.min(n);
                c.sent.fetch_add(n - rejected, Ordering::Release);
                c.drop(Reason::Rejected, rejected);
                c.batches_sent.fetch_add(1, Ordering::Relaxed);
                c.bytes_sent.fetch_add(wire as u64, Ordering::Relaxed);
            }
        }
    }

    /// Writes a batch to the spool, if there is one with room.
    pub fn spool(&self, payload: &[u8], count: usize) -> bool {
        let Some(spool) = &self.spool else {
            return false;
        };
        let appended = spool.append(payload, count as u32);
        self.spool_events();
        match appended {
            Ok(()) => true,
            // Closed by the engine's close, which settled the batch already.
            Err(SpoolError::Closed) => false,
            Err(e) => {
                self.reporter.report(Problem::Spool, || {
                    format!("could not spool a batch ({e}); keeping it in memory")
                });
                false
            }
        }
    }

    /// Counts what the spool found since it was last asked: records taken
    /// over from earlier processes, and records lost because their files
    /// were deleted under the spool (reported every time: each is a loss).
    pub fn spool_events(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        let events = spool.take_events();
        self.counters
            .adopted
            .fetch_add(events.adopted, Ordering::Relaxed);
        if events.lost == 0 {
            return;
        }
        self.counters.drop(Reason::SpoolLost, events.lost);
        let what = if events.lanes_lost > 0 {
            "a spool lane"
        } else {
            "spool segment files"
        };
        say(&format!(
            "{what} under {} deleted while in use (by a tmp cleaner?): {} spooled records lost \
             (spool_lost); spooling goes on in a new lane",
            spool.root().display(),
            events.lost
        ));
    }

    /// Counts a record sent with another time than its own, which the
    /// destination cannot hold, and reports it (at most once a minute).
    fn retimed(&self, original: &str) {
        let n = self.counters.retimed.fetch_add(1, Ordering::Relaxed) + 1;
        self.reporter.report(Problem::Adjusted, || {
            format!(
                "a record's time ({original}) is outside what ClickHouse's DateTime holds \
                 (1970 to 2106): sent with the time it was encoded at instead, its own kept as \
                 timber.original_time ({n} so far, counted as retimed)"
            )
        });
    }

    /// Counts records lost before they reached the buffer, and reports it
    /// (at most once a minute).
    fn lost(&self, reason: Reason, n: u64) {
        self.counters.drop(reason, n);
        self.reporter.report(Problem::Dropped, || {
            let stats = self.counters.snapshot();
            format!(
                "dropping records ({}): {} dropped so far ({})",
                reason.name(),
                stats.dropped(),
                stats.describe_drops()
            )
        });
    }
}

/// One pipeline: a destination, a buffer and its sender threads.
#[derive(Debug)]
pub struct Engine {
    pipeline: Arc<Pipeline>,
    started: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Records handed over and not yet counted (being encoded, pushed, or
    /// waiting for room): close waits for them, so that its totals add up.
    busy: AtomicUsize,
    /// The totals last printed (dropped, handled), so that records refused
    /// after close are printed again, never left out of the last line.
    reported: Mutex<(u64, u64)>,
    /// The fork generation of the process that built it
    /// ([`crate::process::generation`]).
    generation: u64,
}

/// A record that found the buffer full with `drop_extra_events=False`:
/// [`Pending::wait`] waits for room (call it without holding any lock a
/// sender could need, such as the GIL).
#[derive(Debug)]
pub struct Pending<'a> {
    engine: &'a Engine,
    record: Option<Vec<u8>>,
}

impl Pending<'_> {
    /// Waits for room, then buffers the record (or, if the engine closes
    /// meanwhile, counts it refused).
    pub fn wait(mut self) {
        let engine = self.engine;
        let Some(record) = self.record.take() else {
            return;
        };
        // Without a sender nothing would ever make room: do not wait.
        let result = if engine.started.load(Ordering::Acquire) {
            engine.pipeline.queue.push_wait(&record, None)
        } else {
            Push::Full
        };
        engine.count(result);
        keep_scratch(record);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.record.take().is_some() {
            // Never waited for: it was not buffered.
            self.engine.count(Push::Full);
        }
        self.engine.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn keep_scratch(buf: Vec<u8>) {
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.set(buf);
    }
}

impl Engine {
    /// Builds the engine; starts nothing (threads start on the first record,
    /// so a process that forks before logging has none to lose), except to
    /// replay what an earlier process left in the spool.
    pub fn new(resolved: Resolved) -> Result<Self, EngineError> {
        // Read once, now: a fork while a first record read it lazily would
        // copy its once-lock half-taken into the child.
        crate::event::hostname();
        crate::process::hook_forks();
        let generation = crate::process::generation();
        let s = &resolved.settings;
        let limits = Limits {
            batch_records: s.buffer_capacity,
            batch_bytes: s.destination.max_batch_bytes(),
            max_bytes: s.max_buffer_bytes,
            max_records: s.max_buffer_records,
            flush_interval: s.flush_interval,
        };
        let spool = match &s.spool_dir {
            None => None,
            Some(dir) => Some(Spool::open(dir, s.spool_max_bytes).map_err(|e| {
                EngineError::Invalid(format!("cannot open spool_dir {}: {e}", dir.display()))
            })?),
        };
        let backlog = spool.as_ref().is_some_and(|s| !s.is_empty());
        let engine = Self {
            pipeline: Arc::new(Pipeline {
                queue: Queue::new(limits),
                counters: Counters::default(),
                reporter: Reporter::default(),
                destination: Destination::new(&resolved),
                resolved,
                spool,
                replay: Mutex::new(Replay::default()),
            }),
            started: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            reported: Mutex::new((0, 0)),
            generation,
        };
        if backlog {
            engine.start();
        }
        Ok(engine)
    }

    /// Whether this process was forked from the one that built the engine
    /// (wherever the fork was made): then the engine is the parent's, and
    /// touches nothing any more (its locks may be held by threads that do
    /// not exist here); [`Engine::for_child`] builds this process's own.
    pub fn forked(&self) -> bool {
        self.generation != crate::process::generation()
    }

    /// A new engine for a forked child, with the same settings, an empty
    /// buffer, and its own counters, threads, connections and spool lane
    /// (without the spool if that cannot be opened here: the child's
    /// records are logged rather than lost). Closed if this one was closed.
    /// Reads only this engine's settings, never its locks.
    pub fn for_child(&self) -> Engine {
        let resolved = self.pipeline.resolved.clone();
        let engine = Engine::new(resolved.clone()).unwrap_or_else(|_| {
            let mut resolved = resolved;
            resolved.settings.spool_dir = None;
            Engine::new(resolved).expect("settings that built an engine build one without a spool")
        });
        if self.is_closed() {
            engine.closed.store(true, Ordering::Release);
            engine.pipeline.queue.close();
        }
        engine
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        self.pipeline.settings()
    }

    /// The destination's kind.
    pub fn destination(&self) -> Kind {
        self.settings().destination
    }

    fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..self.settings().max_in_flight {
            let pipeline = self.pipeline.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("timber-sender-{i}"))
                .spawn(move || worker::run(&pipeline));
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

    /// Encodes one event on the calling thread and buffers it without
    /// waiting. With `drop_extra_events=False` and a full buffer, returns
    /// the record to [`Pending::wait`] for.
    pub fn emit<E: Event>(&self, event: &E, context: &[(Box<str>, Value)]) -> Option<Pending<'_>> {
        if self.forked() {
            // The parent's engine (see `forked`), closed to this process:
            // counted refused, with atomics only (a caller that rebuilds
            // with `for_child` never gets here).
            let c = &self.pipeline.counters;
            c.accepted.fetch_add(1, Ordering::Relaxed);
            c.drop(Reason::Shutdown, 1);
            return None;
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.pipeline
            .counters
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        let mut buf = SCRATCH.take();
        if let Some(original) = self.pipeline.destination.encode(event, context, &mut buf) {
            self.pipeline.retimed(&original);
        }
        if !self.started.load(Ordering::Relaxed) {
            self.start();
        }
        let result = self.pipeline.queue.push(&buf);
        if result == Push::Full && !self.settings().drop_extra_events {
            // Still busy: the pending record is counted when it is done.
            return Some(Pending {
                engine: self,
                record: Some(buf),
            });
        }
        self.count(result);
        keep_scratch(buf);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// Encodes every event and buffers all of them or none: `Refused::Full`
    /// when they do not all fit now, so that a gateway can answer its
    /// client "try again" with nothing half taken (nothing is counted
    /// then: the client still holds the records). With a spool, also
    /// `Refused::SpoolFull` unless everything held in memory, these
    /// included, would fit in the spool's room (`spool_max_bytes` and the
    /// disk's free space): what is taken can always be spooled at close,
    /// so nothing taken is lost by an outage. Returns how many were
    /// buffered; one too large for any batch is counted dropped.
    pub fn emit_all<'e, E: Event + 'e>(
        &self,
        events: impl IntoIterator<Item = (&'e E, &'e [(Box<str>, Value)])>,
    ) -> Result<usize, Refused> {
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        // Busy while encoding and pushing, so that close counts these too.
        self.busy.fetch_add(1, Ordering::SeqCst);
        let result = self.push_all(events);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn push_all<'e, E: Event + 'e>(
        &self,
        events: impl IntoIterator<Item = (&'e E, &'e [(Box<str>, Value)])>,
    ) -> Result<usize, Refused> {
        let records: Vec<Vec<u8>> = events
            .into_iter()
            .map(|(event, context)| {
                let mut buf = Vec::new();
                if let Some(original) = self.pipeline.destination.encode(event, context, &mut buf) {
                    self.pipeline.retimed(&original);
                }
                buf
            })
            .collect();
        if !self.started.load(Ordering::Relaxed) {
            self.start();
        }
        let spool = self.pipeline.spool.as_ref();
        let c = &self.pipeline.counters;
        let keeps = |h: Holding| {
            let kept = spool.is_none_or(|s| {
                let need = h.bytes as u64 + (h.batches * ENTRY_OVERHEAD) as u64;
                need <= s.room()
            });
            // Taken, all of them: counted accepted before a sender can
            // take them (and count them sent), as emit does.
            if kept {
                c.accepted
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            kept
        };
        let left_out = self
            .pipeline
            .queue
            .push_all(&records, keeps)
            .map_err(|p| match p {
                Push::Closed => Refused::Closed,
                Push::Unkept => {
                    self.pipeline.reporter.report(Problem::Spool, || {
                        let root =
                            spool.map_or_else(String::new, |s| s.root().display().to_string());
                        format!(
                            "the spool under {root} has no room to keep more records \
                             (spool_max_bytes, or its disk): new ones are refused until \
                             delivery makes room"
                        )
                    });
                    Refused::SpoolFull
                }
                _ => Refused::Full,
            })?;
        for _ in &left_out {
            self.count(Push::TooLarge);
        }
        Ok(records.len() - left_out.len())
    }

    /// Counts a record handed over that could not be encoded at all.
    pub fn failed(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.pipeline
            .counters
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        self.pipeline.lost(Reason::Error, 1);
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }

    fn count(&self, result: Push) {
        let reason = match result {
            Push::Accepted => return,
            Push::Full | Push::Unkept => Reason::Full,
            Push::TooLarge => Reason::TooLarge,
            Push::Closed => Reason::Shutdown,
        };
        self.pipeline.lost(reason, 1);
    }

    /// Sends what is buffered and waits until every record pushed before the
    /// call is delivered, spooled or given up, for at most `timeout`
    /// (`flush_timeout` if `None`). True if that happened in time.
    pub fn flush(&self, timeout: Option<Duration>) -> bool {
        if !self.started.load(Ordering::Relaxed) || self.forked() {
            return true;
        }
        let timeout = timeout.unwrap_or(self.settings().flush_timeout);
        self.pipeline.queue.flush(Instant::now() + timeout)
    }

    /// Stops accepting records, sends what is buffered for at most `timeout`
    /// (`shutdown_timeout` if `None`), then settles the rest: to the spool
    /// if there is one, else counted as lost; and stops the senders. Prints
    /// the total of undelivered records, if any. Idempotent.
    pub fn close(&self, timeout: Option<Duration>) -> bool {
        if self.forked() || self.closed.swap(true, Ordering::AcqRel) {
            return true;
        }
        let timeout = timeout.unwrap_or(self.settings().shutdown_timeout);
        let deadline = Instant::now() + timeout;
        let p = &self.pipeline;
        p.queue.close();
        let drained = !self.started.load(Ordering::Relaxed) || p.queue.drain(deadline);
        if !drained {
            let (never_taken, in_flight) = p.queue.abort();
            for batch in never_taken {
                let n = batch.count as u64;
                if p.spool(batch.body(), batch.count) {
                    p.counters.spooled.fetch_add(n, Ordering::Release);
                } else {
                    p.counters.drop(Reason::Shutdown, n);
                }
            }
            // A sender still holds these; whoever settles first counts.
            for batch in in_flight {
                let fate = if p.spool(batch.body(), batch.count) {
                    Fate::Spooled
                } else {
                    Fate::Dropped(Reason::Shutdown)
                };
                p.settle(&batch, fate);
            }
        }
        // Senders blocked in a request past the deadline are left behind;
        // process exit ends them (and the spool, closed below, refuses
        // them: close settled their batches).
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
        if let Some(spool) = &p.spool {
            spool.close();
            p.spool_events();
        }
        // Producers that were waiting for room were woken by the close and
        // count their record refused: wait for them (briefly: none of them
        // waits on anything any more) so that the totals include them. A
        // thread that goes on logging is not waited for: report_late
        // prints what it adds.
        let counted_by = Instant::now() + COUNT_GRACE;
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < counted_by {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.report_totals();
        drained
    }

    /// After close: prints the totals again if records were refused since
    /// they were printed (logged by a `__del__` during interpreter
    /// finalization, a late exit hook, a daemon thread), so that the last
    /// line on stderr adds up. Call it as late as possible; it prints
    /// nothing if nothing changed.
    pub fn report_late(&self) {
        if self.is_closed() && !self.forked() {
            self.report_totals();
        }
    }

    /// Prints "N of M records were not delivered (...)" if records were
    /// dropped and the line would differ from the last one printed. Reads
    /// only counters, never the buffer's lock (so it is safe in a forked
    /// child, whose parent's threads may have held that lock).
    fn report_totals(&self) {
        let stats = self.pipeline.counters.snapshot();
        let totals = (stats.dropped(), stats.handled());
        // Never waits: in a forked child the lock may have been held by a
        // parent's thread that does not exist here.
        let mut last = match self.reported.try_lock() {
            Ok(last) => last,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if totals.0 == 0 || *last == totals {
            return;
        }
        *last = totals;
        say(&format!(
            "{} of {} records were not delivered ({})",
            totals.0,
            totals.1,
            stats.describe_drops()
        ));
    }

    /// The process is exiting: a producer waiting for room
    /// (`drop_extra_events=False`) waits at most `timeout` more, then drops
    /// its record (`buffer_full`), so that it cannot hold up the exit.
    pub fn end_waits(&self, timeout: Duration) {
        self.pipeline.queue.end_waits_at(Instant::now() + timeout);
    }

    /// Whether [`Engine::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Records dropped because the buffer was full.
    pub fn dropcount(&self) -> u64 {
        self.pipeline.counters.dropped(Reason::Full)
    }

    /// Every counter, with what the buffer holds now.
    pub fn stats(&self) -> Stats {
        let p = &self.pipeline;
        let (bytes, records, in_flight, counted) = p.queue.held_with(|| p.counters.snapshot());
        Stats {
            buffered_records: records as u64,
            buffered_bytes: bytes as u64,
            batches_in_flight: in_flight as u64,
            ..counted
        }
    }
}

impl Drop for Engine {
    /// An engine dropped without `close` lets its senders drain in the
    /// background; nothing here waits. A closed one prints its totals again
    /// if records were refused since.
    fn drop(&mut self) {
        if self.forked() {
            // The parent's: never lock, join or delete anything of it here
            // (its spool lane is the parent's), so it is kept, untouched.
            std::mem::forget(self.pipeline.clone());
            if let Ok(threads) = self.threads.get_mut() {
                std::mem::forget(std::mem::take(threads));
            }
            return;
        }
        self.pipeline.queue.close();
        self.report_late();
    }
}
