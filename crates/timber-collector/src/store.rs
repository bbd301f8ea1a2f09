//! Where frames end up: one append-only `<source_id>.ndjson` per source, with
//! one writer at a time per file so that the lines of concurrent requests
//! never interleave, and a failed write rolled back so that no line is torn.
//!
//! Open files are bounded: past `max_open` the least recently used file is
//! closed (and reopened, by path, when its source writes again), so any
//! number of sources fits in a fixed number of descriptors; only writes in
//! progress, when every kept file is busy, may briefly hold one more each. [`Store::reopen`]
//! (on SIGHUP) closes them all, so that files renamed by logrotate are left
//! alone and new ones are created. The store also remembers every source's
//! recent idempotency keys ([`crate::recent`]) under one memory bound,
//! checked and recorded while the source's lock is held for the write.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::gateway::Forwarder;
use crate::otlp::Decoded;
use crate::recent::RecentKeys;

/// Default memory bound of the idempotency keys, across all sources.
pub const DEFAULT_KEY_MEMORY: usize = 64 << 20;

/// Longest source id accepted, well under the file-name limit of common file systems.
pub const MAX_SOURCE_ID_LEN: usize = 200;

/// Whether `id` can name a source: 1 to [`MAX_SOURCE_ID_LEN`] characters of
/// `A-Z a-z 0-9 _ . -`, which keeps it a plain file name.
pub fn valid_source_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SOURCE_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why frames were not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The process has no descriptor left to open the file, even after
    /// closing idle ones: worth retrying shortly (503).
    #[error("out of file descriptors: {0}")]
    OutOfFiles(io::Error),
    /// Any other failure of the file system (500).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A gateway's engine cannot take the frames now (503).
    #[error("{0}")]
    Forward(#[from] timber_core::Refused),
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The lines were written.
    Written,
    /// The idempotency key was stored recently, with this many frames:
    /// nothing was written.
    Replay(usize),
}

/// The per-source appending writer.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    fsync: bool,
    max_open: usize,
    sources: Mutex<Sources>,
    /// Bumped by [`Store::reopen`]; a file opened in an older generation is
    /// reopened before its next write.
    generation: AtomicU64,
    frames: AtomicU64,
    /// A gateway's engine, which takes the frames instead of the files.
    forward: Option<Forwarder>,
    /// Every source's recent idempotency keys, under one memory bound;
    /// taken after a source's lock, never before.
    keys: Mutex<RecentKeys>,
}

#[derive(Debug, Default)]
struct Sources {
    by_name: HashMap<String, Arc<Source>>,
    /// Sources whose file is open, by the tick of their last use: the first
    /// entry is the least recently used.
    open: BTreeMap<u64, String>,
    tick: u64,
}

#[derive(Debug, Default)]
struct Source {
    state: Mutex<SourceState>,
}

#[derive(Debug, Default)]
struct SourceState {
    file: Option<File>,
    generation: u64,
    /// This source's key in `Sources::open`, while its file is open.
    tick: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done worth refusing
    // later writes for: the file itself is repaired by `append`.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether opening failed for want of a descriptor (EMFILE, ENFILE), which
/// closing another file or waiting can cure.
pub(crate) fn out_of_descriptors(err: &io::Error) -> bool {
    // EMFILE is 24 and ENFILE 23 on Linux, the BSDs and macOS alike.
    cfg!(unix) && matches!(err.raw_os_error(), Some(23 | 24))
}

impl Store {
    /// Creates `dir` if needed and returns a store writing into it, with at
    /// most `max_open` files open at once (at least 1).
    pub fn open(dir: &Path, fsync: bool, max_open: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            fsync,
            max_open: max_open.max(1),
            sources: Mutex::new(Sources::default()),
            generation: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            forward: None,
            keys: Mutex::new(RecentKeys::new(DEFAULT_KEY_MEMORY)),
        })
    }

    /// A store that hands every source's frames to `forward` (a gateway's
    /// engine) and writes no file; idempotency keys are kept as usual.
    pub fn forwarding(forward: Forwarder) -> Self {
        Self {
            dir: PathBuf::new(),
            fsync: false,
            max_open: 1,
            sources: Mutex::new(Sources::default()),
            generation: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            forward: Some(forward),
            keys: Mutex::new(RecentKeys::new(DEFAULT_KEY_MEMORY)),
        }
    }

    /// This store with its idempotency keys bounded to `bytes` across all
    /// sources (the oldest forgotten first).
    pub fn with_key_memory(self, bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        Self {
            keys: Mutex::new(RecentKeys::new(bytes)),
            ..self
        }
    }

    /// The gateway's engine, if this store forwards.
    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.forward.as_ref()
    }

    /// The directory written into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The frames stored under `key` for `source`, if that key was stored
    /// recently: a cheap look before decoding a body that is a replay.
    pub fn replayed(&self, source: &str, key: &str) -> Option<usize> {
        lock(&self.keys).get(source, key, Instant::now())
    }

    /// Appends `lines` (complete lines holding `frames` frames) to the file of
    /// `source` in one write, synced first when the store was opened with
    /// fsync. With a `key` that this source stored recently, writes nothing
    /// and says so; otherwise the key is remembered once the lines are written.
    pub fn append(
        &self,
        source: &str,
        lines: &[u8],
        frames: usize,
        key: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let src = self.source(source);
        // The source's lock is held from the look-up to the record, so that
        // two requests with one key are never both written.
        let mut state = lock(&src.state);
        if let Some(n) = key.and_then(|k| self.replayed(source, k)) {
            return Ok(Appended::Replay(n));
        }
        if let (Some(forward), false) = (&self.forward, lines.is_empty()) {
            forward.send(source, lines)?;
        } else if !lines.is_empty() {
            let kept = self.open_for_write(source, &mut state)?;
            let file = state.file.as_mut().expect("opened above");
            let written = write_whole(file, lines).and_then(|()| {
                if self.fsync {
                    file.sync_data()
                } else {
                    Ok(())
                }
            });
            if !kept {
                state.file = None;
            }
            written?;
        }
        // An empty batch stores nothing and records no key: fresh keys on
        // empty batches would otherwise fill the memory for nothing.
        if let (Some(k), true) = (key, frames > 0) {
            lock(&self.keys).insert(source, k, frames, Instant::now());
        }
        self.frames.fetch_add(frames as u64, Ordering::Relaxed);
        Ok(Appended::Written)
    }

    /// Stores every frame of one OTLP request, whatever sources it spans,
    /// or none: a client resends a refused export whole, so a part taken
    /// would be stored twice. The idempotency key is recorded for each
    /// source, and a key any of them stored makes the request a replay.
    pub fn append_whole(
        &self,
        decoded: &Decoded,
        key: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let mut names: Vec<&str> = decoded.batches.iter().map(|(s, _)| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        // Locked in name order, the one order every taker of several uses.
        let sources: Vec<(&str, Arc<Source>)> =
            names.iter().map(|n| (*n, self.source(n))).collect();
        let mut states: Vec<(&str, MutexGuard<'_, SourceState>)> = sources
            .iter()
            .map(|(n, src)| (*n, lock(&src.state)))
            .collect();
        let now = Instant::now();
        if let Some(k) = key {
            let mut keys = lock(&self.keys);
            if let Some(n) = states.iter().find_map(|(name, _)| keys.get(name, k, now)) {
                return Ok(Appended::Replay(n));
            }
        }
        let frames: usize = decoded.batches.iter().map(|(_, b)| b.frames).sum();
        if let Some(forward) = &self.forward {
            if frames > 0 {
                forward.send_otlp(decoded)?;
            }
        } else {
            self.write_all_or_none(decoded, &mut states)?;
        }
        // As in `append`: a source given no frames records no key.
        if let Some(k) = key {
            let mut keys = lock(&self.keys);
            for (name, _) in &states {
                let n: usize = decoded
                    .batches
                    .iter()
                    .filter(|(s, _)| s == name)
                    .map(|(_, b)| b.frames)
                    .sum();
                if n > 0 {
                    keys.insert(name, k, n, now);
                }
            }
        }
        self.frames.fetch_add(frames as u64, Ordering::Relaxed);
        Ok(Appended::Written)
    }

    /// Writes each source's lines to its file; if one write fails, the
    /// files written before it are cut back to where they were.
    fn write_all_or_none(
        &self,
        decoded: &Decoded,
        states: &mut [(&str, MutexGuard<'_, SourceState>)],
    ) -> Result<(), StoreError> {
        let mut written: Vec<(&str, u64)> = Vec::new();
        for (source, batch) in &decoded.batches {
            if batch.lines.is_empty() {
                continue;
            }
            let state = &mut states
                .iter_mut()
                .find(|(n, _)| n == source)
                .expect("every source is locked")
                .1;
            let result = self.open_for_write(source, state).and_then(|kept| {
                let file = state.file.as_mut().expect("opened above");
                let before = file.metadata()?.len();
                let done = write_whole(file, &batch.lines).and_then(|()| {
                    if self.fsync {
                        file.sync_data()
                    } else {
                        Ok(())
                    }
                });
                if done.is_ok() {
                    written.push((source, before));
                }
                if !kept {
                    state.file = None;
                }
                done.map_err(StoreError::Io)
            });
            if let Err(e) = result {
                for (name, len) in written {
                    // Best effort, by path: the file may have been closed.
                    let path = self.dir.join(format!("{name}.ndjson"));
                    if let Ok(f) = OpenOptions::new().write(true).open(path) {
                        let _ = f.set_len(len);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Closes every file; each source reopens its file by path on its next
    /// write. Call after the files were renamed (logrotate, then SIGHUP).
    pub fn reopen(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut sources = lock(&self.sources);
        let open: Vec<String> = sources.open.values().cloned().collect();
        for name in open {
            // A source busy writing is skipped: it sees the new generation
            // and reopens before its next write.
            let _ = close_if_idle(&mut sources, &name);
        }
    }

    /// Frames stored since the start.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Sources written to since the start.
    pub fn sources(&self) -> usize {
        lock(&self.sources).by_name.len()
    }

    /// Files open right now.
    pub fn open_files(&self) -> usize {
        lock(&self.sources).open.len()
    }

    fn source(&self, name: &str) -> Arc<Source> {
        let mut sources = lock(&self.sources);
        if let Some(src) = sources.by_name.get(name) {
            return Arc::clone(src);
        }
        let src = Arc::new(Source::default());
        sources.by_name.insert(name.to_owned(), Arc::clone(&src));
        src
    }

    /// Opens the file of `name` into its state (which the caller holds
    /// locked) if needed, or reopens it after [`Store::reopen`]. Returns
    /// whether the file stays open after the write: it does, as the most
    /// recently used, unless every other open file was being written and none
    /// could be closed to stay under `max_open`; then it is closed after this
    /// write, so the bound is only ever passed by writes in progress.
    fn open_for_write(&self, name: &str, state: &mut SourceState) -> Result<bool, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut sources = lock(&self.sources);
        if let Some(tick) = state.tick.take() {
            sources.open.remove(&tick);
        }
        if state.generation != generation {
            state.file = None;
        }
        if state.file.is_none() {
            // Make room first; this source is out of `open` now, so it is
            // never its own victim (and its state is locked by us anyway).
            while sources.open.len() >= self.max_open {
                if !close_least_recent(&mut sources) {
                    break;
                }
            }
            let file = match self.open_file(name) {
                Err(e) if out_of_descriptors(&e) && close_least_recent(&mut sources) => {
                    self.open_file(name)
                }
                other => other,
            }
            .map_err(|e| {
                if out_of_descriptors(&e) {
                    StoreError::OutOfFiles(e)
                } else {
                    StoreError::Io(e)
                }
            })?;
            state.file = Some(file);
            state.generation = generation;
        }
        if sources.open.len() >= self.max_open {
            return Ok(false);
        }
        sources.tick += 1;
        let tick = sources.tick;
        sources.open.insert(tick, name.to_owned());
        state.tick = Some(tick);
        Ok(true)
    }

    fn open_file(&self, name: &str) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.ndjson")))?;
        if self.fsync {
            // A new file survives a crash only once its directory entry does.
            sync_dir(&self.dir)?;
        }
        Ok(file)
    }
}

/// Closes the least recently used file that is not being written; false if
/// there was none.
fn close_least_recent(sources: &mut Sources) -> bool {
    let candidates: Vec<String> = sources.open.values().cloned().collect();
    candidates.iter().any(|name| close_if_idle(sources, name))
}

/// Closes the file of `name` unless a writer holds it right now. Never waits:
/// the caller may hold another source's lock, and waiting here could deadlock.
fn close_if_idle(sources: &mut Sources, name: &str) -> bool {
    let Some(src) = sources.by_name.get(name).cloned() else {
        return false;
    };
    let Ok(mut state) = src.state.try_lock() else {
        return false;
    };
    if let Some(tick) = state.tick.take() {
        sources.open.remove(&tick);
    }
    state.file.take().is_some()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Writes all of `data`, or on failure (a full disk) cuts the file back to
/// where it was so that readers never see half a line.
fn write_whole(file: &mut File, data: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < data.len() {
        match file.write(&data[written..]) {
            Ok(0) => return Err(rollback(file, written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(rollback(file, written, e)),
        }
    }
    Ok(())
}

fn rollback(file: &File, written: usize, err: io::Error) -> io::Error {
    if written > 0 {
        if let Ok(meta) = file.metadata() {
            // Best effort: the original error is what the client is told.
            let _ = file.set_len(meta.len().saturating_sub(written as u64));
        }
    }
    err
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
