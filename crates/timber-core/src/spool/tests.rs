//! Model and behaviour tests of the spool against a real file system.

use super::segment::TEST_MAGIC;
use super::*;
use std::fs::OpenOptions;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "timber-spool-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn drain(spool: &Spool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(e) = spool.next().unwrap() {
        spool.commit(&e).unwrap();
        out.push(e.payload);
    }
    out
}

#[test]
fn replays_in_order_and_across_processes() {
    let root = tmp("order");
    let first = Spool::open(&root, 1 << 20).unwrap();
    for i in 0..5u8 {
        first.append(&[i; 10], 1).unwrap();
    }
    let e = first.next().unwrap().unwrap();
    assert_eq!(e.payload, vec![0u8; 10]);
    first.commit(&e).unwrap();
    // The owner is still alive: a second spool must not adopt its lane.
    let second = Spool::open(&root, 1 << 20).unwrap();
    assert!(second.next().unwrap().is_none());
    drop(second);
    drop(first);
    let third = Spool::open(&root, 1 << 20).unwrap();
    let rest = drain(&third);
    assert_eq!(rest, (1..5u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    assert!(third.is_empty());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_largest_batch_is_one_entry() {
    let root = tmp("largest");
    let spool = Spool::open(&root, 1 << 30).unwrap();
    let big: Vec<u8> = (0..crate::queue::MAX_BATCH_BYTES)
        .map(|i| i as u8)
        .collect();
    spool.append(&big, 7).unwrap();
    drop(spool);
    let again = Spool::open(&root, 1 << 30).unwrap();
    assert_eq!(drain(&again), vec![big]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn torn_and_corrupt_tails_are_skipped() {
    let root = tmp("torn");
    let spool = Spool::open(&root, 1 << 20).unwrap();
    spool.append(b"good one", 1).unwrap();
    spool.append(b"good two", 1).unwrap();
    let seg = spool.lock().own.dir.join(format!("{:016}.seg", 1));
    drop(spool);
    // A torn write: half an entry at the end.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&TEST_MAGIC[..]).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 0]).unwrap();
    drop(f);
    let reader = Spool::open(&root, 1 << 20).unwrap();
    assert_eq!(
        drain(&reader),
        vec![b"good one".to_vec(), b"good two".to_vec()]
    );
    drop(reader);

    // A flipped byte inside a payload: the checksum catches it.
    let root2 = tmp("corrupt");
    let spool = Spool::open(&root2, 1 << 20).unwrap();
    spool.append(b"first", 1).unwrap();
    spool.append(b"second", 1).unwrap();
    let seg = spool.lock().own.dir.join(format!("{:016}.seg", 1));
    drop(spool);
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0xff;
    fs::write(&seg, bytes).unwrap();
    let reader = Spool::open(&root2, 1 << 20).unwrap();
    assert_eq!(drain(&reader), vec![b"first".to_vec()]);
    fs::remove_dir_all(&root).unwrap();
    fs::remove_dir_all(&root2).unwrap();
}

#[test]
fn directories_that_are_not_lanes_are_never_touched() {
    let root = tmp("stray");
    let keep = root.join("my_data").join("sub");
    fs::create_dir_all(&keep).unwrap();
    fs::write(keep.join("notes.txt"), "precious").unwrap();
    let spool = Spool::open(&root, 1 << 20).unwrap();
    spool.append(b"x", 1).unwrap();
    drain(&spool);
    drop(spool);
    drop(Spool::open(&root, 1 << 20).unwrap());
    assert_eq!(
        fs::read_to_string(keep.join("notes.txt")).unwrap(),
        "precious"
    );
    assert!(!root.join("my_data").join("lock").exists());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn replayed_space_is_free_again() {
    let root = tmp("free");
    let spool = Spool::open(&root, 1000).unwrap();
    for round in 0..5u8 {
        for _ in 0..4 {
            spool.append(&[round; 200], 1).unwrap();
        }
        assert_eq!(drain(&spool).len(), 4);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0, "round {round}");
    }
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn size_cap_refuses_new_entries() {
    let root = tmp("cap");
    let spool = Spool::open(&root, 100).unwrap();
    spool.append(&[1; 50], 1).unwrap();
    assert!(matches!(spool.append(&[2; 50], 1), Err(SpoolError::Full)));
    assert_eq!(drain(&spool).len(), 1);
    fs::remove_dir_all(&root).unwrap();
}

/// Model check: random appends, reads, commits and reopenings deliver
/// every appended entry, in order, at least once, and nothing else.
#[test]
fn model_random_operations() {
    let root = tmp("model");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut spool = Some(Spool::open(&root, 1 << 30).unwrap());
    let mut appended: Vec<u32> = Vec::new();
    let mut delivered: Vec<u32> = Vec::new();
    for i in 0..2000u32 {
        let s = spool.as_ref().unwrap();
        match next() % 10 {
            0..=4 => {
                s.append(&i.to_le_bytes().repeat(1 + (next() % 64) as usize), 1)
                    .unwrap();
                appended.push(i);
            }
            5..=8 => {
                if let Some(e) = s.next().unwrap() {
                    let v = u32::from_le_bytes(e.payload[..4].try_into().unwrap());
                    if next() % 4 != 0 {
                        s.commit(&e).unwrap();
                        delivered.push(v);
                    }
                }
            }
            _ => {
                drop(spool.take());
                spool = Some(Spool::open(&root, 1 << 30).unwrap());
            }
        }
    }
    let s = spool.take().unwrap();
    while let Some(e) = s.next().unwrap() {
        delivered.push(u32::from_le_bytes(e.payload[..4].try_into().unwrap()));
        s.commit(&e).unwrap();
    }
    assert_eq!(delivered, appended);
    drop(s);
    fs::remove_dir_all(&root).unwrap();
}

fn lanes(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[test]
fn a_lane_deleted_under_a_writer_is_counted_lost_and_made_anew() {
    let root = tmp("deleted-write");
    let spool = Spool::open(&root, 1 << 20).unwrap();
    for i in 0..4u8 {
        spool.append(&[i; 10], 100).unwrap();
    }
    // Half of it replayed, one entry out (being sent) when the lane goes.
    let first = spool.next().unwrap().unwrap();
    spool.commit(&first).unwrap();
    let out = spool.next().unwrap().unwrap();
    fs::remove_dir_all(&root).unwrap();
    spool.append(b"after", 7).unwrap();
    let events = spool.take_events();
    assert_eq!(events.lost, 200, "the two entries never read");
    assert_eq!(events.lanes_lost, 1);
    // The entry that was out is sent after all: not lost.
    spool.commit(&out).unwrap();
    assert_eq!(drain(&spool), vec![b"after".to_vec()]);
    assert_eq!(spool.take_events().lost, 0);
    assert_eq!(lanes(&root).len(), 1, "a new lane, under a new root");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_lane_deleted_before_a_read_is_counted_lost() {
    let root = tmp("deleted-read");
    let spool = Spool::open(&root, 1 << 20).unwrap();
    spool.append(b"one", 3).unwrap();
    spool.append(b"two", 4).unwrap();
    let out = spool.next().unwrap().unwrap();
    fs::remove_dir_all(&root).unwrap();
    // The entry out failed to send: asked again, it is gone too.
    assert!(spool.next().unwrap().is_none());
    assert_eq!(spool.take_events().lost, 7);
    drop(out);
    spool.append(b"three", 1).unwrap();
    assert_eq!(drain(&spool), vec![b"three".to_vec()]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_segment_deleted_under_a_writer_is_counted_lost() {
    let root = tmp("deleted-segment");
    let spool = Spool::open(&root, 1 << 20).unwrap();
    spool.append(b"one", 5).unwrap();
    let own = spool.lock().own.dir.clone();
    fs::remove_file(own.join(format!("{:016}.seg", 1))).unwrap();
    spool.append(b"two", 1).unwrap();
    assert_eq!(spool.take_events().lost, 5);
    assert_eq!(drain(&spool), vec![b"two".to_vec()]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn empty_lanes_are_removed_and_adopted_one_lock_at_a_time() {
    let root = tmp("leftovers");
    // Lanes left by earlier processes: most empty, one with records.
    for i in 0..50 {
        let s = Spool::open(&root, 1 << 20).unwrap();
        if i == 20 {
            s.append(b"left behind", 3).unwrap();
        }
        // Dropped without close, as a process that was killed leaves it.
        drop(s);
    }
    assert_eq!(lanes(&root).len(), 50);
    let spool = Spool::open(&root, 1 << 20).unwrap();
    assert!(!spool.is_empty());
    assert_eq!(drain(&spool), vec![b"left behind".to_vec()]);
    assert_eq!(spool.take_events().adopted, 3);
    assert_eq!(lanes(&root).len(), 1, "only the own lane is left");
    assert_eq!(spool.close(), 0);
    assert!(lanes(&root).is_empty(), "an empty own lane goes at close");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_lane_with_records_stays_at_close() {
    let root = tmp("close-keeps");
    let spool = Spool::open(&root, 1 << 20).unwrap();
    spool.append(b"kept", 9).unwrap();
    assert_eq!(spool.close(), 9);
    assert!(matches!(spool.append(b"x", 1), Err(SpoolError::Closed)));
    drop(spool);
    let next = Spool::open(&root, 1 << 20).unwrap();
    assert_eq!(drain(&next), vec![b"kept".to_vec()]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn room_is_what_spool_max_bytes_leaves_and_the_disk_has() {
    let root = tmp("room");
    let spool = Spool::open(&root, 1000).unwrap();
    assert_eq!(spool.room(), 1000);
    spool.append(&[7; 100], 1).unwrap();
    assert_eq!(spool.room(), 1000 - 100 - ENTRY_OVERHEAD as u64);
    // A cap beyond the disk: the disk's free space, less the margin.
    let big = Spool::open(&tmp("room-big"), u64::MAX).unwrap();
    let free = disk::available(&root).unwrap();
    assert!(big.room() <= free.saturating_sub(DISK_MARGIN));
    assert!(big.room() > 0);
}
