//! Unit and model tests of the buffer: batching, budgets, settling, flush,
//! close and abort, and a property test against a simple model.

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
fn waits_for_room_end_when_told_to() {
    let q = std::sync::Arc::new(Queue::new(limits(1, 20)));
    let r = [0xc0u8; 8];
    assert_eq!(q.push(&r), Push::Accepted);
    // A producer already waiting, with no end of its own, is let go...
    let waiting = {
        let q = q.clone();
        std::thread::spawn(move || q.push_wait(&r, None))
    };
    std::thread::sleep(Duration::from_millis(20));
    q.end_waits_at(Instant::now() + Duration::from_millis(10));
    assert_eq!(waiting.join().unwrap(), Push::Full);
    // ...and later ones do not wait past the end either.
    assert_eq!(q.push_wait(&r, None), Push::Full);
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

#[test]
fn push_all_takes_every_record_or_none() {
    let q = Queue::new(limits(100, 200));
    let recs: Vec<Vec<u8>> = (0..10).map(rec).collect();
    // 10 one-byte records with their headers fit in 200 bytes; a second
    // set does not fit beside them, and nothing of it is taken.
    assert_eq!(q.push_all(&recs, |_| true), Ok(vec![]));
    let held = q.held();
    let many: Vec<Vec<u8>> = (0..40).map(rec).collect();
    assert_eq!(q.push_all(&many, |_| true), Err(Push::Full));
    assert_eq!(q.held(), held);
    // A record larger than a batch is left out, the others taken.
    let mixed = vec![rec(1), vec![0xc0; 100], rec(2)];
    let q = Queue::new(limits(100, 1 << 20));
    assert_eq!(q.push_all(&mixed, |_| true), Ok(vec![1]));
    assert_eq!(q.held().1, 2);
    // The caller's check sees what would be held, and may refuse it all.
    let mut asked = None;
    let check = |h: Holding| {
        asked = Some(h);
        false
    };
    assert_eq!(q.push_all(&recs, check), Err(Push::Unkept));
    let asked = asked.expect("asked");
    assert_eq!(
        asked.bytes,
        q.held().0 + recs.len() * (1 + MAX_ARRAY_HEADER)
    );
    assert!(asked.batches > recs.len());
    assert_eq!(q.held().1, 2);
    q.close();
    assert_eq!(q.push_all(&mixed, |_| true), Err(Push::Closed));
}

#[test]
fn a_success_ends_every_backoff_in_progress() {
    let q = std::sync::Arc::new(Queue::new(limits(1, 1 << 20)));
    let backing_off: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || q.pause(Duration::from_secs(3600)))
        })
        .collect();
    while q.lock().paused < 3 {
        std::thread::yield_now();
    }
    q.recovered();
    for t in backing_off {
        // Returned at once, not after the hour: and not as aborted.
        assert!(t.join().unwrap());
    }
    // A recovery with nobody backing off leaves the next pause whole.
    let start = Instant::now();
    assert!(q.pause(Duration::from_millis(50)));
    assert!(start.elapsed() >= Duration::from_millis(50));
}
