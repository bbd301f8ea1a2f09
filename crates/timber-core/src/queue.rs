//! The bounded buffer between the logging threads and the sender threads.
//!
//! Records arrive already encoded. They are appended to the batch being
//! filled, behind [`MAX_ARRAY_HEADER`] reserved bytes; when the batch is full
//! (by records or by bytes) or old enough, it is sealed: its msgpack array
//! header is written into the reserved bytes and it joins the ready queue.
//! Senders take ready batches while the next one fills (the multi-buffer).
//!
//! Memory is bounded by a byte budget over everything held: the filling
//! batch, the ready ones and those in flight. A record that does not fit is
//! refused ([`Push::Full`]); the caller drops it or waits for room.

use crate::encode::{put_array_header, MAX_ARRAY_HEADER};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest request body the Timber API accepts.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;

/// Largest batch of any destination (ClickHouse's): what the spool must be
/// able to hold as one entry.
pub const MAX_BATCH_BYTES: usize = 16 * MAX_REQUEST_BYTES;

/// Size limits of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records per batch (`buffer_capacity`).
    pub batch_records: usize,
    /// Bytes per batch, header included.
    pub batch_bytes: usize,
    /// Bytes held in all, filling, ready and in flight.
    pub max_bytes: usize,
    /// Records held in all.
    pub max_records: usize,
    /// Age at which a filling batch is sealed (`flush_interval`).
    pub flush_interval: Duration,
}

/// What happened to a pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Buffered.
    Accepted,
    /// No room within the byte budget.
    Full,
    /// Larger than a batch may be.
    TooLarge,
    /// The buffer is closed.
    Closed,
    /// The records fit in memory, but not where they must be able to go
    /// (the spool): refused by the caller's check of [`Queue::push_all`].
    Unkept,
}

/// What the buffer would hold after a [`Queue::push_all`], for the caller's
/// check that it could all be kept elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Bytes, as the batches' bodies (record and header bytes).
    pub bytes: usize,
    /// Batches, at most: those held and one per new record.
    pub batches: usize,
}

/// What a sender gets from [`Queue::next_batch_until`].
#[derive(Debug)]
pub enum Next {
    /// A batch to send.
    Batch(Batch),
    /// Nothing before the wake-up time.
    Idle,
    /// Closed and empty, or aborted: the sender stops.
    Done,
}

/// Records ready to send, as one msgpack array. Cloning shares the bytes:
/// the queue keeps a copy of each batch in flight, so that close can spool
/// or count what a sender still holds.
#[derive(Debug, Clone)]
pub struct Batch {
    buf: std::sync::Arc<Vec<u8>>,
    start: usize,
    /// Number of records.
    pub count: usize,
    /// Sequence number of the first record.
    pub first_seq: u64,
}

impl Batch {
    /// The request body: the array header followed by the records.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn held(&self) -> usize {
        self.buf.len()
    }
}

#[derive(Debug)]
struct State {
    filling: Vec<u8>,
    filling_count: usize,
    filling_first_seq: u64,
    filling_since: Option<Instant>,
    ready: VecDeque<Batch>,
    held_bytes: usize,
    held_records: usize,
    next_seq: u64,
    unsettled: BTreeSet<u64>,
    in_flight: BTreeMap<u64, Batch>,
    closing: bool,
    aborted: bool,
    /// Attempts that succeeded while senders were backing off: a pause
    /// that sees it change ends, since the endpoint is back.
    recoveries: u64,
    /// Senders in [`Queue::pause`].
    paused: usize,
    /// Past this, producers no longer wait for room (set when the process
    /// starts exiting).
    waits_end: Option<Instant>,
}

impl State {
    /// Moves the filling batch, if any, to the ready queue.
    fn seal(&mut self) {
        if self.filling_count == 0 {
            return;
        }
        // The new filling batch reserves its header bytes too.
        self.held_bytes += MAX_ARRAY_HEADER;
        let mut buf = std::mem::replace(&mut self.filling, fresh());
        let start = put_array_header(&mut buf, self.filling_count);
        if buf.capacity() > buf.len() + buf.len() / 4 {
            buf.shrink_to_fit();
        }
        self.unsettled.insert(self.filling_first_seq);
        self.ready.push_back(Batch {
            buf: std::sync::Arc::new(buf),
            start,
            count: self.filling_count,
            first_seq: self.filling_first_seq,
        });
        self.filling_count = 0;
        self.filling_since = None;
    }
}

fn fresh() -> Vec<u8> {
    vec![0u8; MAX_ARRAY_HEADER]
}

/// The buffer, shared by producers and senders.
#[derive(Debug)]
pub struct Queue {
    limits: Limits,
    state: Mutex<State>,
    /// Senders wait here for batches.
    work: Condvar,
    /// Flushers and blocked producers wait here for batches to settle.
    settled: Condvar,
    /// Senders backing off wait here, woken only by close, abort and a recovery, so that
    /// a new batch always wakes a sender that is free to take it.
    stop: Condvar,
}

impl Queue {
    /// An empty buffer.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                filling: fresh(),
                filling_count: 0,
                filling_first_seq: 0,
                filling_since: None,
                ready: VecDeque::new(),
                held_bytes: MAX_ARRAY_HEADER,
                held_records: 0,
                next_seq: 0,
                unsettled: BTreeSet::new(),
                in_flight: BTreeMap::new(),
                closing: false,
                aborted: false,
                recoveries: 0,
                paused: 0,
                waits_end: None,
            }),
            work: Condvar::new(),
            settled: Condvar::new(),
            stop: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the counters consistent
        // enough to go on; logging must not fail because of it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one encoded record without waiting.
    pub fn push(&self, record: &[u8]) -> Push {
        let mut st = self.lock();
        self.push_locked(&mut st, record)
    }

    /// Appends one encoded record, waiting for room while the buffer is full
    /// (or until `give_up`, if given).
    pub fn push_wait(&self, record: &[u8], give_up: Option<Instant>) -> Push {
        let mut st = self.lock();
        loop {
            match self.push_locked(&mut st, record) {
                Push::Full => {}
                other => return other,
            }
            let give_up = match (give_up, st.waits_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st = match give_up {
                None => self.settled.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Push::Full;
                    }
                    self.settled
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Appends every record, or none of them when they do not all fit
    /// (`Full`), when `keeps` says what would then be held could not be
    /// kept (`Unkept`; asked under the buffer's lock, so that concurrent
    /// callers are judged one after the other), or when the buffer is
    /// closed; a record larger than a batch may be is left out and its
    /// index returned. Once `keeps` says yes, the records are taken. For a gateway, whose client sends the whole request
    /// again when it is refused.
    pub fn push_all(
        &self,
        records: &[Vec<u8>],
        keeps: impl FnOnce(Holding) -> bool,
    ) -> Result<Vec<usize>, Push> {
        let lim = &self.limits;
        let mut st = self.lock();
        if st.closing {
            return Err(Push::Closed);
        }
        let too_large = |r: &Vec<u8>| r.len() + MAX_ARRAY_HEADER > lim.batch_bytes;
        let (bytes, count) = records
            .iter()
            .filter(|r| !too_large(r))
            // Each record may seal a batch, which reserves a new header.
            .fold((0, 0), |(b, n), r| (b + r.len() + MAX_ARRAY_HEADER, n + 1));
        if st.held_bytes + bytes > lim.max_bytes || st.held_records + count > lim.max_records {
            return Err(Push::Full);
        }
        let holding = Holding {
            bytes: st.held_bytes + bytes,
            batches: st.ready.len() + st.in_flight.len() + 1 + count,
        };
        if !keeps(holding) {
            return Err(Push::Unkept);
        }
        let mut left_out = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if self.push_locked(&mut st, record) != Push::Accepted {
                left_out.push(i);
            }
        }
        Ok(left_out)
    }

    fn push_locked(&self, st: &mut State, record: &[u8]) -> Push {
        let lim = &self.limits;
        if st.closing {
            return Push::Closed;
        }
        if record.len() + MAX_ARRAY_HEADER > lim.batch_bytes {
            return Push::TooLarge;
        }
        // Sealing reserves a new header, hence the second term.
        if st.held_bytes + record.len() + MAX_ARRAY_HEADER > lim.max_bytes
            || st.held_records >= lim.max_records
        {
            return Push::Full;
        }
        let mut wake = false;
        if st.filling.len() + record.len() > lim.batch_bytes {
            st.seal();
            wake = true;
        }
        if st.filling_count == 0 {
            st.filling_first_seq = st.next_seq;
            st.filling_since = Some(Instant::now());
            wake = true;
        }
        st.filling.extend_from_slice(record);
        st.filling_count += 1;
        st.next_seq += 1;
        st.held_bytes += record.len();
        st.held_records += 1;
        if st.filling_count >= lim.batch_records {
            st.seal();
            wake = true;
        }
        if wake {
            self.work.notify_one();
        }
        Push::Accepted
    }

    /// The next batch to send, waiting for one; `None` once the buffer is
    /// closed and empty, or aborted.
    #[cfg(test)]
    pub fn next_batch(&self) -> Option<Batch> {
        loop {
            match self.next_batch_until(None) {
                Next::Batch(b) => return Some(b),
                Next::Idle => {}
                Next::Done => return None,
            }
        }
    }

    /// The next batch to send, waiting at most until `wake_at`.
    pub fn next_batch_until(&self, wake_at: Option<Instant>) -> Next {
        let mut st = self.lock();
        loop {
            if st.aborted {
                return Next::Done;
            }
            if let Some(b) = st.ready.pop_front() {
                st.in_flight.insert(b.first_seq, b.clone());
                return Next::Batch(b);
            }
            let due = st
                .filling_since
                .map(|since| since + self.limits.flush_interval);
            if let Some(at) = due {
                if st.closing || Instant::now() >= at {
                    st.seal();
                    continue;
                }
            } else if st.closing {
                return Next::Done;
            }
            let until = match (due, wake_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if wake_at.is_some_and(|w| Instant::now() >= w) {
                return Next::Idle;
            }
            st = match until {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    self.work
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.work.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Marks a batch in flight as done with (delivered, spooled or given
    /// up), freeing its bytes. Only the first settlement of a batch counts:
    /// `count` runs for it, before anyone waiting on the batch is woken (so
    /// that what they read next includes it); false, and `count` not run,
    /// if it was already settled (by close, while a sender still held it).
    pub fn settle_counted(&self, batch: &Batch, count: impl FnOnce()) -> bool {
        let mut st = self.lock();
        let Some(b) = st.in_flight.remove(&batch.first_seq) else {
            return false;
        };
        count();
        st.held_bytes -= b.held();
        st.held_records -= b.count;
        st.unsettled.remove(&b.first_seq);
        drop(st);
        self.settled.notify_all();
        true
    }

    /// [`Queue::settle_counted`] with nothing to count.
    #[cfg(test)]
    pub fn settle(&self, batch: &Batch) -> bool {
        self.settle_counted(batch, || {})
    }

    /// Seals the filling batch and waits until every record pushed before
    /// the call is settled, or `deadline` passes. True if all settled.
    pub fn flush(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        if st.filling_count > 0 {
            st.seal();
            self.work.notify_one();
        }
        let target = st.next_seq;
        self.wait_settled(st, target, deadline)
    }

    fn wait_settled(&self, mut st: MutexGuard<'_, State>, target: u64, deadline: Instant) -> bool {
        loop {
            if st.unsettled.first().is_none_or(|first| *first >= target) {
                return true;
            }
            if st.aborted {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .settled
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Bounds every wait for room, present and future, by `at`.
    pub fn end_waits_at(&self, at: Instant) {
        let mut st = self.lock();
        st.waits_end = Some(st.waits_end.map_or(at, |t| t.min(at)));
        drop(st);
        self.settled.notify_all();
    }

    /// Refuses further records and lets senders drain what is held; wakes
    /// blocked producers.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closing = true;
        st.seal();
        drop(st);
        self.work.notify_all();
        self.settled.notify_all();
        self.stop.notify_all();
    }

    /// Waits until everything pushed is settled or `deadline` passes.
    pub fn drain(&self, deadline: Instant) -> bool {
        let st = self.lock();
        let target = st.next_seq;
        self.wait_settled(st, target, deadline)
    }

    /// Stops senders as soon as possible: pending waits end, nothing more is
    /// taken. Returns the batches never taken (no longer held), and copies of
    /// those in flight, still to be settled (by their sender or the caller,
    /// whichever is first).
    pub fn abort(&self) -> (Vec<Batch>, Vec<Batch>) {
        let mut st = self.lock();
        st.aborted = true;
        st.closing = true;
        st.seal();
        let in_flight = st.in_flight.values().cloned().collect();
        let mut left = Vec::new();
        while let Some(b) = st.ready.pop_front() {
            st.held_bytes -= b.held();
            st.held_records -= b.count;
            st.unsettled.remove(&b.first_seq);
            left.push(b);
        }
        drop(st);
        self.work.notify_all();
        self.settled.notify_all();
        self.stop.notify_all();
        (left, in_flight)
    }

    /// Sleeps for `wait` unless aborted first, or until another sender's
    /// attempt succeeds ([`Queue::recovered`]): the endpoint is back, and
    /// every batch backing off goes at once instead of each waiting out its
    /// own backoff. While closing, sleeps are cut to a short pause so that
    /// retries still happen before the deadline. Returns false if aborted.
    pub fn pause(&self, wait: Duration) -> bool {
        const CLOSING_PAUSE: Duration = Duration::from_millis(100);
        let start = Instant::now();
        let mut st = self.lock();
        let recoveries = st.recoveries;
        st.paused += 1;
        let resumed = loop {
            if st.aborted {
                break false;
            }
            let limit = if st.closing {
                wait.min(CLOSING_PAUSE)
            } else {
                wait
            };
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || st.recoveries != recoveries {
                break true;
            }
            st = self
                .stop
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        st.paused -= 1;
        resumed
    }

    /// An attempt succeeded: senders backing off try again now.
    pub fn recovered(&self) {
        let mut st = self.lock();
        if st.paused > 0 {
            st.recoveries += 1;
            drop(st);
            self.stop.notify_all();
        }
    }

    /// Whether senders should stop.
    pub fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    /// Bytes and records currently held (filling, ready and in flight).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held_bytes, st.held_records)
    }

    /// Bytes, records and batches in flight held now, with `read` run under
    /// the same lock: a settlement counts its batch's fate under it too, so
    /// what `read` counts and what is held never both include one batch.
    pub fn held_with<T>(&self, read: impl FnOnce() -> T) -> (usize, usize, usize, T) {
        let st = self.lock();
        let counted = read();
        (st.held_bytes, st.held_records, st.in_flight.len(), counted)
    }
}

#[cfg(test)]
mod tests;
