//! Where frames end up: one append-only `<source_id>.ndjson` per source, with
//! one writer at a time per file so that the lines of concurrent requests
//! never interleave, and a failed write rolled back so that no line is torn.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// The per-source appending writer.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    fsync: bool,
    files: Mutex<HashMap<String, Arc<Mutex<File>>>>,
    frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done worth refusing
    // later writes for: the file itself is repaired by `append`.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Creates `dir` if needed and returns a store writing into it.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            fsync,
            files: Mutex::new(HashMap::new()),
            frames: AtomicU64::new(0),
        })
    }

    /// The directory written into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `lines` (complete lines holding `frames` frames) to the file of
    /// `source` in one write, synced first when the store was opened with fsync.
    pub fn append(&self, source: &str, lines: &[u8], frames: usize) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let file = self.file(source)?;
        let mut file = lock(&file);
        write_whole(&mut file, lines)?;
        if self.fsync {
            file.sync_data()?;
        }
        self.frames.fetch_add(frames as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Frames stored since the start.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Sources written to since the start.
    pub fn sources(&self) -> usize {
        lock(&self.files).len()
    }

    fn file(&self, source: &str) -> io::Result<Arc<Mutex<File>>> {
        let mut files = lock(&self.files);
        if let Some(file) = files.get(source) {
            return Ok(Arc::clone(file));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{source}.ndjson")))?;
        if self.fsync {
            // A new file survives a crash only once its directory entry does.
            sync_dir(&self.dir)?;
        }
        let file = Arc::new(Mutex::new(file));
        files.insert(source.to_owned(), Arc::clone(&file));
        Ok(file)
    }
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
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("timber-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn source_ids() {
        for ok in ["default", "a.b-c_D9", "x", "..a"] {
            assert!(valid_source_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_SOURCE_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a\0",
            "../x",
            long.as_str(),
        ] {
            assert!(!valid_source_id(bad), "{bad}");
        }
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = temp_dir("concurrent");
        let store = Arc::new(Store::open(&dir, false).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let line =
                            format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(5000));
                        store.append("s", line.repeat(3).as_bytes(), 3).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(dir.join("s.ndjson")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4 * 200 * 3);
        for chunk in lines.chunks(3) {
            assert!(chunk.iter().all(|l| *l == chunk[0]));
            serde_json::from_str::<serde_json::Value>(chunk[0]).unwrap();
        }
        assert_eq!(store.frames(), 2400);
        assert_eq!(store.sources(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fsync_store_appends_to_existing_files() {
        let dir = temp_dir("fsync");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.ndjson"), "{\"old\":1}\n").unwrap();
        let store = Store::open(&dir, true).unwrap();
        store.append("a", b"{\"new\":1}\n", 1).unwrap();
        store.append("b", b"", 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.ndjson")).unwrap(),
            "{\"old\":1}\n{\"new\":1}\n"
        );
        assert!(!dir.join("b.ndjson").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
