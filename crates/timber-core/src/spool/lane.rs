//! One lane: the directory one process writes its segments into, with the
//! lock that says its owner lives and the cursor that says what was sent.
//!
//! A lane is locked before it appears under its name (made under a hidden
//! name, locked, renamed), so no other process adopts a lane being made; a
//! lane is removed lock last, and an adopter checks after locking that the
//! lock file is still linked, so no one adopts a lane being removed.

use super::segment::{count_records, read_entry, Found};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A segment not yet replayed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    /// Its number: the file is `<id, 16 digits>.seg`.
    pub id: u64,
    /// Records it holds past the cursor.
    pub records: u64,
    /// Bytes written to it (known for this process's own lane only).
    pub bytes: u64,
}

/// What a read at the cursor found.
pub(super) enum Read {
    /// The next entry: payload, records, segment, offset past it.
    Entry(Vec<u8>, u32, u64, u64),
    /// Nothing more to read now.
    End,
    /// The segment at the cursor is gone: deleted by someone else.
    Missing(u64),
}

/// A lane this process holds the lock of.
#[derive(Debug)]
pub(super) struct Lane {
    /// The lane's directory.
    pub dir: PathBuf,
    /// Held (flock) while this process owns the lane.
    lock: File,
    /// Segments not yet replayed, oldest first.
    pub segments: VecDeque<Segment>,
    /// Where the replay stands: a segment and an offset in it.
    pub segment: u64,
    pub offset: u64,
    /// Highest segment id used, so ids are never reused.
    last_id: u64,
}

/// Whether a directory name is a lane's: `<20 digits>-<digits>`. Anything
/// else under the root is not ours, and never touched.
pub(super) fn is_lane_name(name: &str) -> bool {
    let Some((nanos, pid)) = name.split_once('-') else {
        return false;
    };
    nanos.len() == 20
        && nanos.bytes().all(|b| b.is_ascii_digit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
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

impl Lane {
    /// A new, empty lane for this process under `root` (created if gone).
    pub fn create(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Named so that sorting lanes by name sorts them by age.
        let name = format!("{nanos:020}-{}", std::process::id());
        let staging = root.join(format!(".{name}"));
        fs::create_dir_all(&staging)?;
        let lock = lock_exclusive(&staging.join("lock"), true)?
            .ok_or_else(|| io::Error::other("spool lane already locked"))?;
        let dir = root.join(&name);
        fs::rename(&staging, &dir)?;
        Ok(Self {
            dir,
            lock,
            segments: VecDeque::new(),
            segment: 0,
            offset: 0,
            last_id: 0,
        })
    }

    /// Whether the lane at `dir` has no live owner now (its lock is taken
    /// for a moment and released: no file stays open).
    pub fn is_free(dir: &Path) -> bool {
        matches!(lock_exclusive(&dir.join("lock"), false), Ok(Some(_)))
    }

    /// Takes over the lane at `dir` if its owner is gone: `None` if it is
    /// alive, gone, or being removed by another adopter.
    pub fn adopt(dir: PathBuf) -> io::Result<Option<Self>> {
        let lock = match lock_exclusive(&dir.join("lock"), false) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if lock.metadata()?.nlink() == 0 {
            return Ok(None);
        }
        Self::load(dir, lock).map(Some)
    }

    fn load(dir: PathBuf, lock: File) -> io::Result<Self> {
        let mut ids: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let (mut segment, mut offset) = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(str::parse::<u64>);
                Some((parts.next()?.ok()?, parts.next()?.ok()?))
            })
            .unwrap_or((0, 0));
        ids.retain(|id| *id >= segment);
        if ids.first() != Some(&segment) {
            segment = ids.first().copied().unwrap_or(0);
            offset = 0;
        }
        let mut lane = Self {
            dir,
            lock,
            segments: VecDeque::new(),
            segment,
            offset,
            last_id: ids.last().copied().unwrap_or(0).max(segment),
        };
        for id in ids {
            let from = if id == segment { offset } else { 0 };
            let path = lane.segment_path(id);
            let bytes = fs::metadata(&path).map_or(0, |m| m.len());
            let records = count_records(&path, from);
            lane.segments.push_back(Segment { id, records, bytes });
        }
        Ok(lane)
    }

    /// The file of segment `id`.
    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016}.seg"))
    }

    /// Records it holds past the cursor.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Bytes written to its segments not yet replayed.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Whether its directory was removed under it (the lock file, which
    /// nothing but a removal unlinks, is gone).
    pub fn is_removed(&self) -> bool {
        self.lock.metadata().map_or(true, |m| m.nlink() == 0)
    }

    /// Starts a new segment, for appending.
    pub fn new_segment(&mut self) -> io::Result<(u64, File)> {
        let id = self.last_id + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.segment_path(id))?;
        self.last_id = id;
        self.segments.push_back(Segment {
            id,
            records: 0,
            bytes: 0,
        });
        Ok((id, file))
    }

    /// Drops the segment `id` from the list; returns it.
    pub fn forget(&mut self, id: u64) -> Option<Segment> {
        let at = self.segments.iter().position(|s| s.id == id)?;
        let seg = self.segments.remove(at)?;
        if self.segment == id {
            self.segment = self.segments.front().map_or(0, |s| s.id);
            self.offset = 0;
        }
        Some(seg)
    }

    /// Writes where the replay stands (atomically: a rename).
    pub fn save_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", self.segment, self.offset))?;
        fs::rename(tmp, self.dir.join("cursor"))
    }

    /// Reads the entry at the cursor. A segment read to its end, or cut by a
    /// torn or corrupt entry, is deleted and the next one read, except the
    /// one still being written (`writing`). `lost` receives the records of
    /// a segment dropped while it still held some (after a corrupt entry).
    pub fn read(&mut self, writing: Option<u64>, lost: &mut u64) -> io::Result<Read> {
        while let Some(seg) = self.segments.front().copied() {
            if seg.id != self.segment {
                self.segment = seg.id;
                self.offset = 0;
            }
            let path = self.segment_path(seg.id);
            match read_entry(&path, self.offset)? {
                Found::Entry(payload, count, end) => {
                    return Ok(Read::Entry(payload, count, seg.id, end))
                }
                Found::Missing => return Ok(Read::Missing(seg.id)),
                // A corrupt entry in the segment still being written: what
                // follows it cannot be found again, nor written after it.
                Found::End | Found::Corrupt if writing == Some(seg.id) => return Ok(Read::End),
                Found::End | Found::Corrupt => {
                    *lost += seg.records;
                    let _ = fs::remove_file(&path);
                    self.forget(seg.id);
                }
            }
        }
        Ok(Read::End)
    }

    /// Deletes the lane: the files timber writes there, the lock last, then
    /// the directory (which stays if anything else is in it).
    pub fn remove(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.filter_map(|e| e.ok()) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".seg") || name == "cursor" || name == "cursor.tmp" {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let _ = fs::remove_file(self.dir.join("lock"));
        let _ = fs::remove_dir(&self.dir);
    }
}
