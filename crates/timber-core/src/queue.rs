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
    /// Senders backing off wait here, woken only by close and abort, so that
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

    /// Sleeps for `wait` unless aborted first; while closing, sleeps are cut
    /// to a short pause so that retries still happen before the deadline.
    /// Returns false if aborted.
    pub fn pause(&self, wait: Duration) -> bool {
        const CLOSING_PAUSE: Duration = Duration::from_millis(100);
        let start = Instant::now();
        let mut st = self.lock();
        loop {
            if st.aborted {
                return false;
            }
            let limit = if st.closing {
                wait.min(CLOSING_PAUSE)
            } else {
                wait
            };
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return true;
            }
            st = self
                .stop
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether senders should stop.
    pub fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    /// Batches taken by senders and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Bytes and records currently held (filling, ready and in flight).
    pub fn held(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held_bytes, st.held_records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(batch_records: usize, max_bytes: usize) -> Limits {
        Limits {
            batch_records,
            batch_bytes: 64,
            max_bytes,
            max_records: usize::MAX,
            flush_interval: Duration::from_millis(20),
        }
    }

    fn decode(batch: &Batch) -> Vec<u64> {
        let mut rd = batch.body();
        let n = rmp::decode::read_array_len(&mut rd).unwrap();
        (0..n)
            .map(|_| rmp::decode::read_int(&mut rd).unwrap())
            .collect()
    }

    fn rec(i: u64) -> Vec<u8> {
        let mut v = Vec::new();
        rmp::encode::write_uint(&mut v, i).unwrap();
        v
    }

    #[test]
    fn batches_by_count_and_age_in_order() {
        let q = Queue::new(limits(3, 1 << 20));
        for i in 0..7 {
            assert_eq!(q.push(&rec(i)), Push::Accepted);
        }
        let a = q.next_batch().unwrap();
        let b = q.next_batch().unwrap();
        assert_eq!(decode(&a), [0, 1, 2]);
        assert_eq!(decode(&b), [3, 4, 5]);
        // The seventh waits for the flush interval.
        let t = Instant::now();
        let c = q.next_batch().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(15));
        assert_eq!(decode(&c), [6]);
    }

    #[test]
    fn batch_never_exceeds_byte_limit() {
        let q = Queue::new(limits(1000, 1 << 20));
        let big = vec![0xc0u8; 20]; // 20 nils, one "record" of 20 bytes
        for _ in 0..10 {
            assert_eq!(q.push(&big), Push::Accepted);
        }
        q.close();
        let mut total = 0;
        while let Some(b) = q.next_batch() {
            assert!(b.body().len() <= 64, "{}", b.body().len());
            total += b.count;
            q.settle(&b);
        }
        assert_eq!(total, 10);
        assert_eq!(q.push(&big), Push::Closed);
        assert_eq!(q.push(&[0u8; 70]), Push::Closed);
    }

    #[test]
    fn byte_budget_refuses_then_frees() {
        let q = Queue::new(limits(2, 40));
        let r = [0xc0u8; 10];
        let mut accepted = 0;
        while q.push(&r) == Push::Accepted {
            accepted += 1;
        }
        assert!(accepted >= 2);
        assert!(q.held().0 <= 40);
        let b = q.next_batch().unwrap();
        q.settle(&b);
        assert_eq!(q.push(&r), Push::Accepted);
        assert_eq!(q.push(&[0u8; 70]), Push::TooLarge);
    }

    #[test]
    fn flush_waits_for_settlement_of_earlier_records() {
        let q = std::sync::Arc::new(Queue::new(limits(100, 1 << 20)));
        q.push(&rec(1));
        q.push(&rec(2));
        let sender = {
            let q = q.clone();
            std::thread::spawn(move || {
                let b = q.next_batch().unwrap();
                std::thread::sleep(Duration::from_millis(30));
                q.settle(&b);
            })
        };
        assert!(q.flush(Instant::now() + Duration::from_secs(5)));
        assert_eq!(q.held(), (MAX_ARRAY_HEADER, 0));
        sender.join().unwrap();
        // Nothing unsettled: returns at once. An unsettled batch past the
        // deadline: returns false.
        assert!(q.flush(Instant::now()));
        q.push(&rec(3));
        assert!(!q.flush(Instant::now() + Duration::from_millis(10)));
    }

    #[test]
    fn blocked_producer_waits_for_room() {
        let q = std::sync::Arc::new(Queue::new(limits(1, 20)));
        let r = [0xc0u8; 8];
        assert_eq!(q.push(&r), Push::Accepted);
        assert_eq!(q.push(&r), Push::Full);
        assert_eq!(
            q.push_wait(&r, Some(Instant::now() + Duration::from_millis(10))),
            Push::Full
        );
        let freer = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let b = q.next_batch().unwrap();
                q.settle(&b);
            })
        };
        assert_eq!(q.push_wait(&r, None), Push::Accepted);
        freer.join().unwrap();
    }

    #[test]
    fn abort_ends_waits_and_counts_pending() {
        let q = Queue::new(limits(1, 1 << 20));
        q.push(&rec(1));
        q.push(&rec(2));
        let first = q.next_batch().unwrap();
        let (left, in_flight) = q.abort();
        assert_eq!((left.len(), in_flight.len()), (1, 1));
        assert!(q.next_batch().is_none());
        assert!(!q.pause(Duration::from_secs(10)));
        assert!(!q.drain(Instant::now() + Duration::from_secs(10)));
        // Settled once, by whoever is first.
        assert!(q.settle(&in_flight[0]));
        assert!(!q.settle(&first));
    }

    #[test]
    fn a_sender_in_backoff_never_swallows_the_wake_up_of_an_idle_one() {
        use std::sync::mpsc;
        let q = std::sync::Arc::new(Queue::new(limits(1, 1 << 20)));
        q.push(&rec(1));
        let backing_off = {
            let q = q.clone();
            std::thread::spawn(move || {
                let b = q.next_batch().unwrap();
                // A long backoff, cut short only by close.
                q.pause(Duration::from_secs(60));
                q.settle(&b);
            })
        };
        // Let it take the batch and start its backoff.
        while q.held().1 != 1 || q.lock().ready.len() == 1 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let idle = {
            let q = q.clone();
            std::thread::spawn(move || {
                let b = q.next_batch().unwrap();
                tx.send(decode(&b)).unwrap();
                q.settle(&b);
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        q.push(&rec(2));
        // Delivered by the idle sender long before the backoff ends.
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), [2]);
        q.close();
        backing_off.join().unwrap();
        idle.join().unwrap();
    }

    /// A model check: any interleaving of pushes and sends delivers every
    /// accepted record once, in order, within the limits.
    #[test]
    fn model_random_operations() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let lim = Limits {
                batch_records: 1 + (next() % 8) as usize,
                batch_bytes: 16 + (next() % 64) as usize,
                max_bytes: 32 + (next() % 256) as usize,
                max_records: 1 + (next() % 40) as usize,
                flush_interval: Duration::ZERO,
            };
            let q = Queue::new(lim);
            let mut accepted = Vec::new();
            let mut delivered = Vec::new();
            for i in 0..200u64 {
                if next() % 3 == 0 && q.held().1 > 0 {
                    if let Some(b) = q.next_batch() {
                        assert!(b.body().len() <= lim.batch_bytes);
                        assert!(b.count <= lim.batch_records);
                        delivered.extend(decode(&b));
                        q.settle(&b);
                    }
                }
                match q.push(&rec(i)) {
                    Push::Accepted => accepted.push(i),
                    Push::Full => assert!(
                        q.held().0 + rec(i).len() + MAX_ARRAY_HEADER > lim.max_bytes
                            || q.held().1 >= lim.max_records
                    ),
                    other => panic!("round {round}: {other:?}"),
                }
                assert!(q.held().0 <= lim.max_bytes, "round {round}");
                assert!(q.held().1 <= lim.max_records, "round {round}");
            }
            q.close();
            while let Some(b) = q.next_batch() {
                delivered.extend(decode(&b));
                q.settle(&b);
            }
            assert_eq!(accepted, delivered, "round {round}");
        }
    }
}
