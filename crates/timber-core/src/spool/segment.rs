//! The segment file format: entries appended one `write` each, read back
//! one at a time, and counted without reading their payloads.
//!
//! ```text
//! entry: b"TSB1"  len: u32 LE  count: u32 LE  crc32(payload): u32 LE  payload
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::queue::MAX_BATCH_BYTES;

const MAGIC: &[u8; 4] = b"TSB1";
/// Bytes before the payload.
pub(super) const HEADER: usize = 16;
/// Largest entry payload accepted when reading: a batch is at most
/// [`MAX_BATCH_BYTES`] (ClickHouse's), with room to spare.
const MAX_ENTRY: usize = 2 * MAX_BATCH_BYTES;
/// Size at which the writer starts a new segment.
pub(super) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// What is found at an offset of a segment.
pub(super) enum Found {
    /// An entry: payload, record count, and the offset just past it.
    Entry(Vec<u8>, u32, u64),
    /// The end of what was written.
    End,
    /// A torn or corrupt entry: nothing after it can be found again.
    Corrupt,
    /// The file is not there (deleted by someone else).
    Missing,
}

/// One entry, ready to be written with a single `write`.
pub(super) fn encode(payload: &[u8], count: u32) -> Vec<u8> {
    let mut entry = Vec::with_capacity(HEADER + payload.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    entry.extend_from_slice(&count.to_le_bytes());
    entry.extend_from_slice(&crc32(payload).to_le_bytes());
    entry.extend_from_slice(payload);
    entry
}

/// Reads the entry at `offset` of the segment at `path`.
pub(super) fn read_entry(path: &Path, offset: u64) -> io::Result<Found> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if offset >= len {
        return Ok(Found::End);
    }
    let Some((size, count, crc)) = header(&mut f, offset, len)? else {
        return Ok(Found::Corrupt);
    };
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

/// Records in the entries from `offset` on, reading only their headers (a
/// checksum failure is found when the entry is read; until then its records
/// are counted as held).
pub(super) fn count_records(path: &Path, mut offset: u64) -> u64 {
    let Ok(mut f) = File::open(path) else {
        return 0;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0;
    };
    let mut records = 0;
    while offset < len {
        match header(&mut f, offset, len) {
            Ok(Some((size, count, _))) => {
                records += u64::from(count);
                offset += (HEADER + size) as u64;
            }
            _ => break,
        }
    }
    records
}

/// The (size, count, crc) of the entry at `offset`, if its header is whole
/// and its payload fits in the file; leaves `f` at the payload.
fn header(f: &mut File, offset: u64, len: u64) -> io::Result<Option<(usize, u32, u32)>> {
    if len - offset < HEADER as u64 {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (size, count, crc) = (word(4) as usize, word(8), word(12));
    if &head[..4] != MAGIC || size > MAX_ENTRY || (len - offset - HEADER as u64) < size as u64 {
        return Ok(None);
    }
    Ok(Some((size, count, crc)))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

#[cfg(test)]
pub(super) const TEST_MAGIC: &[u8; 4] = MAGIC;
