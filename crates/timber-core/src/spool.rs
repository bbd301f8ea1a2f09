//! The durable spool (opt-in, `spool_dir=`): batches that cannot be
//! delivered now are appended to checksummed segment files, and replayed in
//! order when delivery recovers, by this process or the next one.
//!
//! Layout: each process writes its own *lane*, a directory under the spool
//! root locked (`flock`) for as long as the process lives, so forked children
//! and sibling workers never share a file. A lane whose lock is free belongs
//! to a process that is gone: the next spool opened on the root adopts it and
//! replays it first, then deletes it.
//!
//! ```text
//! <root>/<nanos>-<pid>/lock                 held while the owner lives
//!                      cursor               "<segment> <offset>": what was delivered
//!                      0000000000000001.seg  entries: b"TSB1" len count crc32 payload
//! ```
//!
//! Entries are written with one `write` each, without `fsync`: a process
//! killed with SIGKILL loses nothing it wrote (the kernel has it), a power
//! cut may. A torn or corrupt tail is detected by length and checksum and
//! skipped. Delivery is at least once: an entry sent but not yet marked in
//! the cursor when the process dies is sent again.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

const MAGIC: &[u8; 4] = b"TSB1";
const HEADER: usize = 16;
/// Largest entry payload accepted when reading (a batch is at most 1 MB).
const MAX_ENTRY: usize = 4 * 1024 * 1024;
/// Size at which the writer starts a new segment.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Why an entry was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at `spool_max_bytes`.
    #[error("spool is full")]
    Full,
    /// The file system refused.
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
}

/// One spooled batch, read back.
#[derive(Debug)]
pub struct Entry {
    /// The request body (a msgpack array of frames).
    pub payload: Vec<u8>,
    /// Number of records in it.
    pub count: u32,
    lane: PathBuf,
    segment: u64,
    end: u64,
}

#[derive(Debug)]
struct Lane {
    dir: PathBuf,
    _lock: File,
    segments: VecDeque<u64>,
    segment: u64,
    offset: u64,
    /// Highest segment id used, so ids are never reused.
    last_id: u64,
}

impl Lane {
    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016}.seg"))
    }

    fn load(dir: PathBuf, lock: File) -> io::Result<Self> {
        let mut segments: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let (mut segment, mut offset) = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(str::parse::<u64>);
                Some((parts.next()?.ok()?, parts.next()?.ok()?))
            })
            .unwrap_or((0, 0));
        segments.retain(|id| *id >= segment);
        if segments.first() != Some(&segment) {
            segment = segments.first().copied().unwrap_or(0);
            offset = 0;
        }
        let last_id = segments.last().copied().unwrap_or(0).max(segment);
        Ok(Self {
            dir,
            _lock: lock,
            segments: segments.into(),
            segment,
            offset,
            last_id,
        })
    }

    /// Whether the lane holds bytes past its cursor (asked once, at open).
    fn has_unread(&self) -> bool {
        self.segments.iter().any(|id| {
            let len = fs::metadata(self.segment_path(*id)).map_or(0, |m| m.len());
            let read = if *id == self.segment { self.offset } else { 0 };
            len > read
        })
    }

    fn save_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", self.segment, self.offset))?;
        fs::rename(tmp, self.dir.join("cursor"))
    }

    /// Reads the entry at the cursor. `Ok(None)` at the end of the lane; a
    /// torn or corrupt entry ends its segment.
    fn read(&mut self, writing: Option<u64>, total: &mut u64) -> io::Result<Option<Entry>> {
        while let Some(&id) = self.segments.front() {
            if id != self.segment {
                self.segment = id;
                self.offset = 0;
            }
            let path = self.segment_path(id);
            match read_entry(&path, self.offset)? {
                Found::Entry(payload, count, end) => {
                    return Ok(Some(Entry {
                        payload,
                        count,
                        lane: self.dir.clone(),
                        segment: id,
                        end,
                    }));
                }
                Found::End if writing == Some(id) => return Ok(None),
                Found::End | Found::Corrupt => {
                    if writing == Some(id) {
                        // A corrupt entry in the segment still being written:
                        // what follows it cannot be found again.
                        return Ok(None);
                    }
                    *total = total.saturating_sub(fs::metadata(&path).map_or(0, |m| m.len()));
                    let _ = fs::remove_file(&path);
                    self.segments.pop_front();
                    self.offset = 0;
                }
            }
        }
        Ok(None)
    }
}

enum Found {
    Entry(Vec<u8>, u32, u64),
    End,
    Corrupt,
}

fn read_entry(path: &Path, offset: u64) -> io::Result<Found> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::End),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if offset >= len {
        return Ok(Found::End);
    }
    if len - offset < HEADER as u64 {
        return Ok(Found::Corrupt);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (size, count, crc) = (word(4) as usize, word(8), word(12));
    if &head[..4] != MAGIC || size > MAX_ENTRY || (len - offset - HEADER as u64) < size as u64 {
        return Ok(Found::Corrupt);
    }
    let mut payload = vec![0u8; size];
    f.read_exact(&mut payload)?;
    if crc32(&payload) != crc {
        return Ok(Found::Corrupt);
    }
    Ok(Found::Entry(
        payload,
        count,
        offset + (HEADER + size) as u64,
    ))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

#[derive(Debug)]
struct Inner {
    /// Adopted lanes first (oldest owners first), this process's last.
    lanes: VecDeque<Lane>,
    writer: Option<(u64, File, u64)>,
    total: u64,
}

/// A spool root opened by this process.
#[derive(Debug)]
pub struct Spool {
    max_bytes: u64,
    own: PathBuf,
    inner: Mutex<Inner>,
    /// Whether anything may wait to be replayed: set by every append, and
    /// cleared only when a read finds nothing, so that the senders' loop
    /// asks the file system nothing while the spool is empty.
    pending: AtomicBool,
}

/// Whether a directory under the root is a lane: `<20 digits>-<digits>`.
/// Anything else there is not ours, and never touched.
fn is_lane_name(name: &str) -> bool {
    let Some((nanos, pid)) = name.split_once('-') else {
        return false;
    };
    nanos.len() == 20
        && nanos.bytes().all(|b| b.is_ascii_digit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
}

/// Deletes a lane: only the files timber writes there, then the directory
/// (which stays if anything else is in it).
fn remove_lane(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".seg") || name == "cursor" || name == "cursor.tmp" || name == "lock"
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn lock_exclusive(path: &Path, create: bool) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Spool {
    /// Opens (creating) the spool under `root`: a new lane for this process,
    /// and every lane whose owner is gone, adopted for replay.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        // This process's lane is made under a hidden name, locked, then
        // renamed into place: no other process can adopt it in between.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:020}-{}", std::process::id());
        let staging = root.join(format!(".{name}"));
        fs::create_dir_all(&staging)?;
        let lock = lock_exclusive(&staging.join("lock"), true)?
            .ok_or_else(|| io::Error::other("spool lane already locked"))?;
        // Named so that sorting lanes by name sorts them by age.
        let own = root.join(&name);
        fs::rename(&staging, &own)?;

        let mut adopted = Vec::new();
        for entry in fs::read_dir(root)?.filter_map(|e| e.ok()) {
            let dir = entry.path();
            let name = entry.file_name();
            if dir == own || !is_lane_name(&name.to_string_lossy()) || !dir.is_dir() {
                continue;
            }
            // A lane that vanishes or cannot be read now is skipped, never
            // a reason to refuse the spool.
            if let Ok(Some(lock)) = lock_exclusive(&dir.join("lock"), false) {
                if let Ok(lane) = Lane::load(dir, lock) {
                    adopted.push(lane);
                }
            }
        }
        adopted.sort_by(|a, b| a.dir.cmp(&b.dir));
        let mut lanes: VecDeque<Lane> = adopted.into_iter().collect();
        let total = lanes.iter().map(|l| dir_bytes(&l.dir)).sum();
        lanes.push_back(Lane::load(own.clone(), lock)?);
        let pending = lanes.iter().any(Lane::has_unread);
        Ok(Self {
            max_bytes,
            own,
            inner: Mutex::new(Inner {
                lanes,
                writer: None,
                total,
            }),
            pending: AtomicBool::new(pending),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one batch.
    pub fn append(&self, payload: &[u8], count: u32) -> Result<(), SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        let mut inner = self.lock();
        if inner.total + size > self.max_bytes {
            return Err(SpoolError::Full);
        }
        let roll = inner
            .writer
            .as_ref()
            .is_none_or(|(_, _, len)| *len + size > SEGMENT_BYTES && *len > 0);
        if roll {
            let own = inner.lanes.back_mut().expect("own lane is always last");
            own.last_id += 1;
            let id = own.last_id;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(own.segment_path(id))?;
            own.segments.push_back(id);
            inner.writer = Some((id, file, 0));
        }
        let mut entry = Vec::with_capacity(size as usize);
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.extend_from_slice(&count.to_le_bytes());
        entry.extend_from_slice(&crc32(payload).to_le_bytes());
        entry.extend_from_slice(payload);
        let (_, file, len) = inner.writer.as_mut().expect("writer opened above");
        if let Err(e) = file.write_all(&entry) {
            // Never leave half an entry for the next ones to hide behind:
            // cut it off, or start a new segment if even that fails.
            if file.set_len(*len).is_err() {
                inner.writer = None;
            }
            return Err(e.into());
        }
        *len += size;
        inner.total += size;
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// The oldest batch not yet delivered, if any.
    pub fn next(&self) -> io::Result<Option<Entry>> {
        let mut inner = self.lock();
        let found = self.next_locked(&mut inner);
        if let Ok(None) = found {
            self.pending.store(false, Ordering::Release);
        }
        found
    }

    fn next_locked(&self, inner: &mut Inner) -> io::Result<Option<Entry>> {
        let writing = inner.writer.as_ref().map(|(id, _, _)| *id);
        let Inner { lanes, total, .. } = inner;
        while let Some(lane) = lanes.front_mut() {
            let own = lane.dir == self.own;
            match lane.read(writing.filter(|_| own), total) {
                Ok(Some(entry)) => return Ok(Some(entry)),
                Ok(None) if own => return Ok(None),
                Err(e) if own => return Err(e),
                Ok(None) => {
                    // An adopted lane fully replayed.
                    let done = lanes.pop_front().expect("front exists");
                    remove_lane(&done.dir);
                }
                Err(_) => {
                    // An adopted lane that cannot be read is left as it is,
                    // for a person to look at; it must not stop delivery.
                    lanes.pop_front();
                }
            }
        }
        Ok(None)
    }

    /// Marks `entry` delivered (or given up): the cursor moves past it, and
    /// segments read to the end are deleted.
    pub fn commit(&self, entry: &Entry) -> io::Result<()> {
        let mut inner = self.lock();
        let writing = inner.writer.as_ref().map(|(id, _, _)| *id);
        let Inner {
            lanes,
            total,
            writer,
        } = &mut *inner;
        let Some(lane) = lanes.iter_mut().find(|l| l.dir == entry.lane) else {
            return Ok(());
        };
        if lane.segment != entry.segment {
            return Ok(());
        }
        lane.offset = entry.end;
        let path = lane.segment_path(entry.segment);
        let finished = fs::metadata(&path).is_ok_and(|m| m.len() <= entry.end);
        if finished {
            if writing == Some(entry.segment) {
                // Everything written was replayed: the next append starts a
                // new segment, and this one's space is free again.
                *writer = None;
            }
            *total = total.saturating_sub(entry.end);
            let _ = fs::remove_file(&path);
            lane.segments.pop_front();
            lane.segment = lane.segments.front().copied().unwrap_or(0);
            lane.offset = 0;
        }
        lane.save_cursor()
    }

    /// Whether nothing is waiting to be replayed (as far as the last read
    /// knows: an entry found torn when read makes it empty only then).
    pub fn is_empty(&self) -> bool {
        !self.pending.load(Ordering::Acquire)
    }

    /// Bytes held on disk.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn torn_and_corrupt_tails_are_skipped() {
        let root = tmp("torn");
        let spool = Spool::open(&root, 1 << 20).unwrap();
        spool.append(b"good one", 1).unwrap();
        spool.append(b"good two", 1).unwrap();
        let seg = spool.own.join(format!("{:016}.seg", 1));
        drop(spool);
        // A torn write: half an entry at the end.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&MAGIC[..]).unwrap();
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
        let seg = spool.own.join(format!("{:016}.seg", 1));
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
}
