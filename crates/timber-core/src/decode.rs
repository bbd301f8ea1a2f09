//! Reading msgpack back: frames received by the collector are transcoded
//! straight into a [`Sink`] (usually JSON), without an intermediate tree.
//!
//! Input is untrusted: every length is checked against the bytes left, nesting
//! is bounded, and binary or extension values become strings.

use crate::encode::Sink;
use rmp::Marker;

/// Deepest nesting accepted from the network.
pub const MAX_DECODE_DEPTH: usize = 128;

/// Why a msgpack body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The body ends inside a value.
    #[error("truncated msgpack")]
    Truncated,
    /// A marker that msgpack reserves.
    #[error("reserved msgpack marker 0xc1")]
    Reserved,
    /// A map key that is not a string or a number.
    #[error("map key is not a string")]
    BadKey,
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    BadUtf8,
    /// Nesting beyond [`MAX_DECODE_DEPTH`].
    #[error("nesting deeper than {MAX_DECODE_DEPTH}")]
    TooDeep,
    /// A frame that is not a map.
    #[error("frame is not a map")]
    NotAMap,
    /// Bytes left after the last value.
    #[error("trailing bytes after the body")]
    Trailing,
}

type Result<T> = std::result::Result<T, DecodeError>;

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if rd.len() < n {
        return Err(DecodeError::Truncated);
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Ok(head)
}

fn be(rd: &mut &[u8], n: usize) -> Result<u64> {
    Ok(take(rd, n)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The shape of the next value, read from its marker.
enum Head<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(usize),
    Map(usize),
}

fn head<'a>(rd: &mut &'a [u8]) -> Result<Head<'a>> {
    let m = Marker::from_u8(take(rd, 1)?[0]);
    Ok(match m {
        Marker::Null => Head::Nil,
        Marker::True => Head::Bool(true),
        Marker::False => Head::Bool(false),
        Marker::FixPos(v) => Head::Int(i64::from(v)),
        Marker::FixNeg(v) => Head::Int(i64::from(v)),
        Marker::U8 => Head::Int(be(rd, 1)? as i64),
        Marker::U16 => Head::Int(be(rd, 2)? as i64),
        Marker::U32 => Head::Int(be(rd, 4)? as i64),
        Marker::U64 => {
            let v = be(rd, 8)?;
            i64::try_from(v).map_or(Head::UInt(v), Head::Int)
        }
        Marker::I8 => Head::Int(i64::from(be(rd, 1)? as u8 as i8)),
        Marker::I16 => Head::Int(i64::from(be(rd, 2)? as u16 as i16)),
        Marker::I32 => Head::Int(i64::from(be(rd, 4)? as u32 as i32)),
        Marker::I64 => Head::Int(be(rd, 8)? as i64),
        Marker::F32 => Head::Float(f64::from(f32::from_bits(be(rd, 4)? as u32))),
        Marker::F64 => Head::Float(f64::from_bits(be(rd, 8)?)),
        Marker::FixStr(n) => Head::Str(take(rd, usize::from(n))?),
        Marker::Str8 => sized(rd, 1, Head::Str)?,
        Marker::Str16 => sized(rd, 2, Head::Str)?,
        Marker::Str32 => sized(rd, 4, Head::Str)?,
        Marker::Bin8 => sized(rd, 1, Head::Bin)?,
        Marker::Bin16 => sized(rd, 2, Head::Bin)?,
        Marker::Bin32 => sized(rd, 4, Head::Bin)?,
        Marker::FixArray(n) => Head::Array(usize::from(n)),
        Marker::Array16 => Head::Array(be(rd, 2)? as usize),
        Marker::Array32 => Head::Array(be(rd, 4)? as usize),
        Marker::FixMap(n) => Head::Map(usize::from(n)),
        Marker::Map16 => Head::Map(be(rd, 2)? as usize),
        Marker::Map32 => Head::Map(be(rd, 4)? as usize),
        Marker::FixExt1 => ext(rd, 1)?,
        Marker::FixExt2 => ext(rd, 2)?,
        Marker::FixExt4 => ext(rd, 4)?,
        Marker::FixExt8 => ext(rd, 8)?,
        Marker::FixExt16 => ext(rd, 16)?,
        Marker::Ext8 => {
            let n = be(rd, 1)? as usize;
            ext(rd, n)?
        }
        Marker::Ext16 => {
            let n = be(rd, 2)? as usize;
            ext(rd, n)?
        }
        Marker::Ext32 => {
            let n = be(rd, 4)? as usize;
            ext(rd, n)?
        }
        Marker::Reserved => return Err(DecodeError::Reserved),
    })
}

fn sized<'a>(rd: &mut &'a [u8], width: usize, wrap: fn(&'a [u8]) -> Head<'a>) -> Result<Head<'a>> {
    let n = be(rd, width)? as usize;
    Ok(wrap(take(rd, n)?))
}

fn ext<'a>(rd: &mut &'a [u8], n: usize) -> Result<Head<'a>> {
    let kind = take(rd, 1)?[0] as i8;
    Ok(Head::Ext(kind, take(rd, n)?))
}

/// Bytes that are not UTF-8 as a faithful string: valid runs kept, every
/// invalid byte written as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The msgpack timestamp extension (type -1) as RFC 3339.
fn timestamp_ext(data: &[u8]) -> Option<String> {
    let (secs, nanos) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as i32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?) as i32,
        ),
        _ => return None,
    };
    let ts = jiff::Timestamp::new(secs, nanos).ok()?;
    Some(ts.to_string())
}

/// Reads one value from `rd` into `sink`, advancing `rd` past it.
///
/// On error the sink holds a partial value and must be discarded.
pub fn transcode_one<S: Sink>(rd: &mut &[u8], sink: &mut S) -> Result<()> {
    value(rd, sink, 0)
}

fn value<S: Sink>(rd: &mut &[u8], sink: &mut S, depth: usize) -> Result<()> {
    if depth > MAX_DECODE_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    match head(rd)? {
        Head::Nil => sink.nil(),
        Head::Bool(b) => sink.bool(b),
        Head::Int(v) => sink.int(v),
        Head::UInt(v) => sink.uint(v),
        Head::Float(v) => sink.float(v),
        Head::Str(s) => sink.str(std::str::from_utf8(s).map_err(|_| DecodeError::BadUtf8)?),
        Head::Bin(b) => sink.str(&escape_bytes(b)),
        Head::Ext(-1, data) => match timestamp_ext(data) {
            Some(s) => sink.str(&s),
            None => sink.str(&format!("<ext -1: {}>", escape_bytes(data))),
        },
        Head::Ext(kind, data) => sink.str(&format!("<ext {kind}: {}>", escape_bytes(data))),
        Head::Array(n) => {
            // Every element takes at least one byte: refuse absurd lengths
            // before announcing them to the sink.
            if n > rd.len() {
                return Err(DecodeError::Truncated);
            }
            sink.array(n);
            for _ in 0..n {
                value(rd, sink, depth + 1)?;
            }
        }
        Head::Map(n) => {
            if n.saturating_mul(2) > rd.len() {
                return Err(DecodeError::Truncated);
            }
            sink.map(n);
            for _ in 0..n {
                key(rd, sink)?;
                value(rd, sink, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn key<S: Sink>(rd: &mut &[u8], sink: &mut S) -> Result<()> {
    match head(rd)? {
        Head::Str(s) => sink.str(std::str::from_utf8(s).map_err(|_| DecodeError::BadUtf8)?),
        Head::Int(v) => sink.str(&v.to_string()),
        Head::UInt(v) => sink.str(&v.to_string()),
        Head::Bin(b) => sink.str(&escape_bytes(b)),
        _ => return Err(DecodeError::BadKey),
    }
    Ok(())
}

/// How many frames a msgpack body holds and where: the body is an array of
/// maps, or a single map. Returns the byte range of each frame.
pub fn split_frames(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>> {
    let mut rd = body;
    let total = body.len();
    let first = *body.first().ok_or(DecodeError::Truncated)?;
    let mut frames = Vec::new();
    let mut skip = |rd: &mut &[u8]| -> Result<()> {
        let start = total - rd.len();
        if !matches!(
            Marker::from_u8(rd[0]),
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32
        ) {
            return Err(DecodeError::NotAMap);
        }
        value(rd, &mut Skip, 0)?;
        frames.push(start..total - rd.len());
        Ok(())
    };
    match Marker::from_u8(first) {
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let Head::Array(n) = head(&mut rd)? else {
                unreachable!("marker checked above")
            };
            if n > rd.len() {
                return Err(DecodeError::Truncated);
            }
            for _ in 0..n {
                if rd.is_empty() {
                    return Err(DecodeError::Truncated);
                }
                skip(&mut rd)?;
            }
        }
        _ => skip(&mut rd)?,
    }
    if !rd.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(frames)
}

/// A sink that discards everything: used to validate and measure values.
pub struct Skip;

impl Sink for Skip {
    fn nil(&mut self) {}
    fn bool(&mut self, _: bool) {}
    fn int(&mut self, _: i64) {}
    fn uint(&mut self, _: u64) {}
    fn finite_float(&mut self, _: f64) {}
    fn str(&mut self, _: &str) {}
    fn array(&mut self, _: usize) {}
    fn map(&mut self, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{Json, Msgpack};

    fn json_of(bytes: &[u8]) -> Result<String> {
        let mut j = Json::new();
        let mut rd = bytes;
        transcode_one(&mut rd, &mut j)?;
        Ok(String::from_utf8(j.buf).unwrap())
    }

    #[test]
    fn truncated_input_is_an_error_at_every_cut() {
        let mut m = Msgpack::default();
        m.map(2);
        m.str("message");
        m.str("hello world");
        m.str("n");
        m.array(2);
        m.int(300);
        m.float(1.5);
        for cut in 0..m.buf.len() {
            assert_eq!(
                json_of(&m.buf[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
        assert_eq!(
            json_of(&m.buf).unwrap(),
            r#"{"message":"hello world","n":[300,1.5]}"#
        );
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating() {
        assert_eq!(
            json_of(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            json_of(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = vec![0x91u8; MAX_DECODE_DEPTH + 2];
        assert_eq!(json_of(&deep), Err(DecodeError::TooDeep));
    }

    #[test]
    fn binary_and_timestamps_become_strings() {
        assert_eq!(json_of(&[0xc4, 2, b'h', 0xff]).unwrap(), r#""h\\xff""#);
        // timestamp 32: 1 second after the epoch
        assert_eq!(
            json_of(&[0xd6, 0xff, 0, 0, 0, 1]).unwrap(),
            r#""1970-01-01T00:00:01Z""#
        );
    }

    #[test]
    fn split_frames_accepts_array_or_single_map() {
        let mut m = Msgpack::default();
        m.array(2);
        m.map(1);
        m.str("a");
        m.int(1);
        m.map(0);
        let ranges = split_frames(&m.buf).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(split_frames(&m.buf[1..5]).unwrap().len(), 1);
        assert_eq!(split_frames(&[0x91, 0x01]), Err(DecodeError::NotAMap));
        assert_eq!(split_frames(&[0x80, 0x80]), Err(DecodeError::Trailing));
        assert_eq!(split_frames(&[]), Err(DecodeError::Truncated));
    }
}
