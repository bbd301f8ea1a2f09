//! The durable spool (opt-in, `spool_dir=`): batches that cannot be
//! delivered now are appended to checksummed segment files, and replayed in
//! order when delivery recovers, by this process or the next one.
//!
//! Layout: each process writes its own *lane*, a directory under the spool
//! root locked (`flock`) for as long as the process lives, so forked children
//! and sibling workers never share a file. A lane whose lock is free belongs
//! to a process that is gone: a spool opened later on the root takes it over
//! (one lane at a time, holding one lock at a time, however many lanes were
//! left), replays it before its own, then deletes it. A process's own lane
//! is deleted at close when it holds nothing.
//!
//! ```text
//! <root>/<nanos>-<pid>/lock                 held while the owner lives
//!                      cursor               "<segment> <offset>": what was delivered
//!                      0000000000000001.seg  entries (see segment.rs)
//! ```
//!
//! Entries are written with one `write` each, without `fsync`: a process
//! killed with SIGKILL loses nothing it wrote (the kernel has it), a power
//! cut may. A torn or corrupt tail is detected by length and checksum and
//! skipped. Delivery is at least once: an entry sent but not yet marked in
//! the cursor when the process dies is sent again.
//!
//! A lane can be deleted under a live process (tmp cleaners do that). That
//! is found at the next write or read, the records it held are counted lost
//! ([`Events::lost`]), and this process goes on in a new lane.

mod disk;
mod lane;
mod segment;

use lane::{is_lane_name, Lane, Read};
use segment::{encode, HEADER, SEGMENT_BYTES};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Bytes each entry takes on disk besides its payload.
pub(crate) const ENTRY_OVERHEAD: usize = HEADER;

/// Free space of the file system left alone: its blocks round every file
/// up, and the lane's lock and cursor files need some too.
const DISK_MARGIN: u64 = 1 << 20;

/// Why an entry was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at `spool_max_bytes`.
    #[error("spool is full")]
    Full,
    /// The spool was closed.
    #[error("spool is closed")]
    Closed,
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

/// What the spool found since it was last asked, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// Records lost: their lane or segment was deleted by someone else.
    pub lost: u64,
    /// Records found in lanes of earlier processes, taken over.
    pub adopted: u64,
    /// Lanes found deleted (for the report).
    pub lanes_lost: u64,
}

/// The entry handed out by [`Spool::next`] and not yet committed.
#[derive(Debug)]
struct Out {
    lane: PathBuf,
    segment: u64,
    count: u32,
    /// Its file was deleted while it was out: if it is not committed (sent
    /// or refused), it is lost.
    orphan: bool,
}

#[derive(Debug)]
struct Inner {
    own: Lane,
    /// The earlier process's lane being replayed (its lock held).
    adopted: Option<Lane>,
    /// Lanes found at open, oldest first, not locked until their turn.
    candidates: VecDeque<PathBuf>,
    /// The segment being appended to.
    writer: Option<(u64, File)>,
    out: Option<Out>,
    events: Events,
    closed: bool,
}

/// A spool root opened by this process.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// Whether anything may wait to be replayed: set by every append, and
    /// cleared only when a read finds nothing, so that the senders' loop
    /// asks the file system nothing while the spool is empty.
    pending: AtomicBool,
}

impl Spool {
    /// Opens (creating) the spool under `root`: a new lane for this process,
    /// and the names of the lanes whose owner is gone, to take over in turn
    /// (a live process's lane is never touched).
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<Self> {
        let own = Lane::create(root)?;
        let mut candidates: Vec<PathBuf> = fs::read_dir(root)?
            .filter_map(|e| e.ok())
            .filter(|e| is_lane_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|dir| *dir != own.dir && Lane::is_free(dir))
            .collect();
        candidates.sort();
        let pending = !candidates.is_empty();
        Ok(Self {
            root: root.to_owned(),
            max_bytes,
            inner: Mutex::new(Inner {
                own,
                adopted: None,
                candidates: candidates.into(),
                writer: None,
                out: None,
                events: Events::default(),
                closed: false,
            }),
            pending: AtomicBool::new(pending),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts what a lane lost and starts a new own lane if it was ours.
    fn lane_lost(&self, inner: &mut Inner, own: bool) {
        let lane = if own {
            match Lane::create(&self.root) {
                Ok(fresh) => {
                    inner.writer = None;
                    Some(std::mem::replace(&mut inner.own, fresh))
                }
                // Cannot make a new lane now: keep the old, found lost
                // again (and counted once) at the next attempt.
                Err(_) => {
                    let records = inner.own.records();
                    inner.own.segments.clear();
                    inner.writer = None;
                    inner.events.lost += records;
                    inner.events.lanes_lost += u64::from(records > 0);
                    return;
                }
            }
        } else {
            inner.adopted.take()
        };
        let Some(lane) = lane else {
            return;
        };
        let mut records = lane.records();
        if let Some(out) = inner.out.as_mut().filter(|o| o.lane == lane.dir) {
            // Still being sent: lost only if that fails.
            records -= u64::from(out.count).min(records);
            out.orphan = true;
        }
        inner.events.lost += records;
        inner.events.lanes_lost += 1;
    }

    /// Counts a segment deleted by someone else (its lane still there).
    fn segment_lost(inner: &mut Inner, own: bool, id: u64) {
        let lane = if own {
            &mut inner.own
        } else {
            match inner.adopted.as_mut() {
                Some(lane) => lane,
                None => return,
            }
        };
        let Some(seg) = lane.forget(id) else {
            return;
        };
        if own && inner.writer.as_ref().is_some_and(|(w, _)| *w == id) {
            inner.writer = None;
        }
        let mut records = seg.records;
        let dir = lane.dir.clone();
        if let Some(out) = inner
            .out
            .as_mut()
            .filter(|o| o.lane == dir && o.segment == id)
        {
            records -= u64::from(out.count).min(records);
            out.orphan = true;
        }
        inner.events.lost += records;
    }

    /// Appends one batch to this process's lane.
    pub fn append(&self, payload: &[u8], count: u32) -> Result<(), SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        let mut inner = self.lock();
        if inner.closed {
            return Err(SpoolError::Closed);
        }
        // Deleted under us? Then what it held is lost, and this batch goes
        // to a new lane rather than into an unlinked file.
        if inner.own.is_removed() {
            self.lane_lost(&mut inner, true);
        } else if let Some((id, file)) = &inner.writer {
            if file.metadata().map_or(true, |m| m.nlink() == 0) {
                let id = *id;
                Self::segment_lost(&mut inner, true, id);
            }
        }
        if inner.own.bytes() + size > self.max_bytes {
            return Err(SpoolError::Full);
        }
        let roll = match &inner.writer {
            None => true,
            Some(_) => {
                let len = inner.own.segments.back().map_or(0, |s| s.bytes);
                len + size > SEGMENT_BYTES && len > 0
            }
        };
        if roll {
            let opened = match inner.own.new_segment() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The lane's directory is gone.
                    self.lane_lost(&mut inner, true);
                    inner.own.new_segment()
                }
                other => other,
            };
            inner.writer = Some(opened?);
        }
        let entry = encode(payload, count);
        let Inner { own, writer, .. } = &mut *inner;
        let (id, file) = writer.as_mut().expect("writer opened above");
        let seg = own
            .segments
            .iter_mut()
            .find(|s| s.id == *id)
            .expect("the writer's segment is listed");
        if let Err(e) = file.write_all(&entry) {
            // Never leave half an entry for the next ones to hide behind:
            // cut it off, or start a new segment if even that fails.
            if file.set_len(seg.bytes).is_err() {
                *writer = None;
            }
            return Err(e.into());
        }
        seg.bytes += size;
        seg.records += u64::from(count);
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// The oldest batch not yet delivered, if any: from the lanes of
    /// earlier processes first, then this process's own.
    pub fn next(&self) -> io::Result<Option<Entry>> {
        let mut inner = self.lock();
        if inner.closed {
            return Ok(None);
        }
        if let Some(out) = inner.out.take() {
            if out.orphan {
                // Not sent, and no longer on disk to send again.
                inner.events.lost += u64::from(out.count);
            }
        }
        let found = self.next_locked(&mut inner);
        if let Ok(Some(e)) = &found {
            inner.out = Some(Out {
                lane: e.lane.clone(),
                segment: e.segment,
                count: e.count,
                orphan: false,
            });
        }
        if let Ok(None) = found {
            self.pending.store(false, Ordering::Release);
        }
        found
    }

    fn next_locked(&self, inner: &mut Inner) -> io::Result<Option<Entry>> {
        loop {
            let Some(lane) = inner.adopted.as_mut() else {
                let Some(dir) = inner.candidates.pop_front() else {
                    break;
                };
                // One lane at a time: a live owner's, or one that cannot be
                // read, is passed over (and left as it is).
                if let Ok(Some(lane)) = Lane::adopt(dir) {
                    inner.events.adopted += lane.records();
                    inner.adopted = Some(lane);
                }
                continue;
            };
            let mut lost = 0;
            let read = lane.read(None, &mut lost);
            inner.events.lost += lost;
            match read {
                Ok(Read::Entry(payload, count, segment, end)) => {
                    return Ok(Some(Entry {
                        payload,
                        count,
                        lane: lane.dir.clone(),
                        segment,
                        end,
                    }))
                }
                Ok(Read::End) => {
                    // Fully replayed.
                    if let Some(done) = inner.adopted.take() {
                        done.remove();
                    }
                }
                Ok(Read::Missing(id)) => {
                    if lane.is_removed() {
                        self.lane_lost(inner, false);
                    } else {
                        Self::segment_lost(inner, false, id);
                    }
                }
                // An adopted lane that cannot be read is left as it is, for
                // a person to look at; it must not stop delivery.
                Err(_) => inner.adopted = None,
            }
        }
        loop {
            let writing = inner.writer.as_ref().map(|(id, _)| *id);
            let mut lost = 0;
            let read = inner.own.read(writing, &mut lost);
            inner.events.lost += lost;
            match read? {
                Read::Entry(payload, count, segment, end) => {
                    return Ok(Some(Entry {
                        payload,
                        count,
                        lane: inner.own.dir.clone(),
                        segment,
                        end,
                    }))
                }
                Read::End => return Ok(None),
                Read::Missing(id) => {
                    if inner.own.is_removed() {
                        self.lane_lost(inner, true);
                    } else {
                        Self::segment_lost(inner, true, id);
                    }
                }
            }
        }
    }

    /// Marks `entry` delivered (or given up): the cursor moves past it, and
    /// segments read to the end are deleted.
    pub fn commit(&self, entry: &Entry) -> io::Result<()> {
        let mut inner = self.lock();
        if inner
            .out
            .as_ref()
            .is_some_and(|o| o.lane == entry.lane && o.segment == entry.segment)
        {
            inner.out = None;
        }
        let writing = inner.writer.as_ref().map(|(id, _)| *id);
        let own = inner.own.dir == entry.lane;
        let lane = if own {
            &mut inner.own
        } else {
            match inner.adopted.as_mut().filter(|l| l.dir == entry.lane) {
                Some(lane) => lane,
                // Its lane was found deleted meanwhile: nothing to mark.
                None => return Ok(()),
            }
        };
        if lane.segment != entry.segment {
            return Ok(());
        }
        lane.offset = entry.end;
        if let Some(seg) = lane.segments.front_mut() {
            seg.records = seg.records.saturating_sub(u64::from(entry.count));
        }
        let path = lane.segment_path(entry.segment);
        let finished = fs::metadata(&path).is_ok_and(|m| m.len() <= entry.end);
        if finished {
            let _ = fs::remove_file(&path);
            lane.forget(entry.segment);
            if own && writing == Some(entry.segment) {
                // Everything written was replayed: the next append starts a
                // new segment, and this one's space is free again.
                inner.writer = None;
            }
        }
        let lane = if own {
            &inner.own
        } else {
            inner.adopted.as_ref().expect("found above")
        };
        match lane.save_cursor() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && lane.is_removed() => {
                self.lane_lost(&mut inner, own);
                Ok(())
            }
            other => other,
        }
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What was found since the last call (lost and adopted records).
    pub fn take_events(&self) -> Events {
        std::mem::take(&mut self.lock().events)
    }

    /// Whether nothing is waiting to be replayed (as far as the last read
    /// knows: an entry found torn when read makes it empty only then).
    pub fn is_empty(&self) -> bool {
        !self.pending.load(Ordering::Acquire)
    }

    /// At the engine's close: checks the own lane is still there (what a
    /// deletion took is counted), deletes it if it holds nothing, releases
    /// an adopted lane not fully replayed (for the next process), and
    /// refuses further use. Returns the records left in the own lane.
    pub fn close(&self) -> u64 {
        let mut inner = self.lock();
        if inner.closed {
            return 0;
        }
        inner.closed = true;
        // Nothing more is replayed from it (a sender still running at close
        // must not wait for it).
        self.pending.store(false, Ordering::Release);
        if inner.own.is_removed() {
            let records = inner.own.records();
            inner.own.segments.clear();
            inner.events.lost += records;
            inner.events.lanes_lost += 1;
        }
        inner.writer = None;
        inner.adopted = None;
        inner.candidates.clear();
        let left = inner.own.records();
        if left == 0 {
            inner.own.remove();
        }
        left
    }

    /// Bytes this process may still append: what `spool_max_bytes` leaves,
    /// and no more than its file system has free (less a margin).
    pub fn room(&self) -> u64 {
        let inner = self.lock();
        let capped = self.max_bytes.saturating_sub(inner.own.bytes());
        let free =
            disk::available(&inner.own.dir).map_or(u64::MAX, |f| f.saturating_sub(DISK_MARGIN));
        capped.min(free)
    }

    /// Bytes held on disk by this process's lane.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.lock().own.bytes()
    }
}

#[cfg(test)]
mod tests;
