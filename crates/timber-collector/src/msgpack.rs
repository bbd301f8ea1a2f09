//! Msgpack bodies to stored lines: every frame transcoded straight into
//! compact JSON by the engine's decoder, without a tree in between, each
//! checked against the decoding's memory [`Room`] before it is written.

use timber_core::Json;
use timber_core::{split_frames, transcode_one};

use crate::body::{Batch, BodyError};
use crate::budget::Room;

type Result<T> = std::result::Result<T, BodyError>;

/// Most JSON a byte of msgpack becomes: a control character in a string is
/// written `\u00XX`, a nil `null,`.
const JSON_PER_MSGPACK_BYTE: u64 = 6;

/// Bytes each frame's place in the list of frames takes, with spare room.
const RANGE_BYTES: u64 = 2 * std::mem::size_of::<std::ops::Range<usize>>() as u64;

/// The frames of a msgpack body (an array of maps, or one map) as JSON lines.
pub(crate) fn msgpack_lines(body: &[u8], room: &mut Room<'_>) -> Result<Batch> {
    let invalid = |e| BodyError::Invalid(format!("msgpack body: {e}"));
    // The list of frames takes 16 bytes per frame, which may be a byte each.
    let ranges_bytes = RANGE_BYTES.saturating_mul(frames_declared(body));
    room.ensure(ranges_bytes)?;
    // The split validates every frame, so transcoding below cannot fail on
    // bad input; it is still checked rather than trusted.
    let ranges = split_frames(body).map_err(invalid)?;
    let mut json = Json::new();
    for range in &ranges {
        // Room for this frame's lines before they are written: the old and
        // the new buffer are both held while it grows, and a binary value
        // is escaped into a string of its own first.
        let most = JSON_PER_MSGPACK_BYTE * range.len() as u64 + 1;
        let (used, held) = (json.buf.len() as u64, json.buf.capacity() as u64);
        let grown = if used + most > held {
            (2 * held).max(used + most)
        } else {
            0
        };
        room.ensure(ranges_bytes + held + grown + 4 * range.len() as u64)?;
        if grown > 0 {
            json.buf
                .reserve(usize::try_from(grown - used).unwrap_or(usize::MAX));
        }
        let mut rd = &body[range.clone()];
        transcode_one(&mut rd, &mut json).map_err(invalid)?;
        json.buf.push(b'\n');
    }
    Ok(Batch {
        lines: json.buf,
        frames: ranges.len(),
    })
}

/// How many frames a msgpack body says it holds: an array's length, else 1.
fn frames_declared(body: &[u8]) -> u64 {
    let be = |n: usize| {
        body.get(1..1 + n).map_or(0, |b| {
            b.iter().fold(0u64, |acc, x| acc << 8 | u64::from(*x))
        })
    };
    match body.first() {
        Some(b @ 0x90..=0x9f) => u64::from(b & 0x0f),
        Some(0xdc) => be(2),
        Some(0xdd) => be(4),
        _ => 1,
    }
    // An array longer than the body is refused by the split: never counted
    // for more than a byte per frame.
    .min(body.len() as u64)
}
