//! From a request body to stored lines: the content type and encoding are
//! recognised, the body is decompressed under a size bound, and every frame
//! becomes one compact JSON line.
//!
//! Msgpack is transcoded straight into JSON by the engine's decoder, without a
//! tree in between ([`crate::msgpack`]); JSON and NDJSON bodies are read in
//! [`crate::json`].

use std::borrow::Cow;
use std::io::Read;

use crate::budget::{Allowance, Exceeded, Room, Short};

/// Why a body is refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// A `Content-Type` the collector does not read (415).
    #[error("unsupported Content-Type {0:?}: use application/msgpack, application/json or application/x-ndjson")]
    UnsupportedType(String),
    /// A `Content-Encoding` the collector does not read (415).
    #[error("unsupported Content-Encoding {0:?}: use gzip, deflate or zstd")]
    UnsupportedEncoding(String),
    /// The body, once decompressed, is larger than the limit (413).
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The body cannot be read as frames (400).
    #[error("{0}")]
    Invalid(String),
    /// Decoding the body would take more memory than the whole decode
    /// budget (413): it never fits, however long the client waits.
    #[error("decoding this body takes more than {0} bytes of memory, the collector's whole decode budget (--max-memory): send it in smaller requests")]
    TooCostly(u64),
    /// Decoding the body needs more memory than is free now (503).
    #[error("not enough memory free to decode this body now: try again shortly")]
    Busy,
}

impl BodyError {
    /// The HTTP status code of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::UnsupportedType(_) | BodyError::UnsupportedEncoding(_) => 415,
            BodyError::TooLarge(_) | BodyError::TooCostly(_) => 413,
            BodyError::Invalid(_) => 400,
            BodyError::Busy => 503,
        }
    }
}

type Result<T> = std::result::Result<T, BodyError>;

/// How frames are laid out in the body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An array of maps, or one map.
    Msgpack,
    /// An array of objects, or one object.
    Json,
    /// One object per line.
    Ndjson,
}

impl Format {
    /// Reads a `Content-Type` header value; parameters such as `charset` are ignored.
    pub fn parse(content_type: Option<&str>) -> Result<Self> {
        let Some(value) = content_type else {
            return Err(BodyError::UnsupportedType(String::new()));
        };
        let media = value.split(';').next().unwrap_or("").trim();
        let known = [
            ("application/msgpack", Format::Msgpack),
            ("application/x-msgpack", Format::Msgpack),
            ("application/json", Format::Json),
            ("application/x-ndjson", Format::Ndjson),
            ("application/ndjson", Format::Ndjson),
        ];
        known
            .iter()
            .find(|(name, _)| media.eq_ignore_ascii_case(name))
            .map(|(_, format)| *format)
            .ok_or_else(|| BodyError::UnsupportedType(value.to_owned()))
    }
}

impl Format {
    /// Memory decoding may take beyond the raw body at first: the
    /// decompressed body (up to the limit, as its size is unknown until
    /// done) and the output lines, which msgpack turned JSON makes about
    /// twice as large. Decoding takes more as it goes if it needs it
    /// ([`decode_within`]): strings of control characters grow 6 times.
    pub fn decode_estimate(self, encoding: Encoding, raw: u64, max_body: u64) -> u64 {
        let plain = match encoding {
            Encoding::Identity => raw.min(max_body),
            _ => max_body,
        };
        let decompressed = if encoding == Encoding::Identity {
            0
        } else {
            plain
        };
        let lines = match self {
            Format::Msgpack => plain.saturating_mul(2),
            Format::Json | Format::Ndjson => plain,
        };
        decompressed.saturating_add(lines)
    }
}

/// How the body is compressed, from its `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip (one or more members).
    Gzip,
    /// zlib, or raw deflate as some clients send it.
    Deflate,
    /// Zstandard.
    Zstd,
}

impl Encoding {
    /// Reads a `Content-Encoding` header value; absent means not compressed.
    pub fn parse(content_encoding: Option<&str>) -> Result<Self> {
        let value = content_encoding.unwrap_or("").trim();
        let known = [
            ("", Encoding::Identity),
            ("identity", Encoding::Identity),
            ("gzip", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("zstd", Encoding::Zstd),
        ];
        known
            .iter()
            .find(|(name, _)| value.eq_ignore_ascii_case(name))
            .map(|(_, encoding)| *encoding)
            .ok_or_else(|| BodyError::UnsupportedEncoding(value.to_owned()))
    }

    /// The most bytes worth reading off the wire for a decompressed limit of
    /// `max_body`: compression can expand incompressible data a little.
    pub fn wire_limit(self, max_body: u64) -> u64 {
        match self {
            Encoding::Identity => max_body,
            _ => max_body.saturating_add(max_body / 64 + 1024),
        }
    }
}

/// The frames of one request, ready to append.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// One JSON object per frame, each followed by `\n`.
    pub lines: Vec<u8>,
    /// How many frames `lines` holds.
    pub frames: usize,
}

/// Decompresses `raw` and turns its frames into JSON lines.
pub fn decode(format: Format, encoding: Encoding, raw: &[u8], max_body: u64) -> Result<Batch> {
    decode_with(format, encoding, raw, max_body, None)
}

/// [`decode`], within the memory `allowance` holds, which it grows as the
/// frames need: msgpack's lines are checked before each frame is written,
/// so the memory taken never passes what is held. A body that would need
/// more than the whole pool is refused (413), one that needs more than is
/// free now too (503). JSON and NDJSON lines never outgrow their body.
pub fn decode_within(
    format: Format,
    encoding: Encoding,
    raw: &[u8],
    max_body: u64,
    allowance: &mut Allowance,
) -> Result<Batch> {
    decode_with(format, encoding, raw, max_body, Some(allowance))
}

fn decode_with(
    format: Format,
    encoding: Encoding,
    raw: &[u8],
    max_body: u64,
    allowance: Option<&mut Allowance>,
) -> Result<Batch> {
    let body = decompress(encoding, raw, max_body)?;
    if body.is_empty() {
        return Err(BodyError::Invalid("empty body".into()));
    }
    let fixed = if encoding == Encoding::Identity {
        0
    } else {
        body.len() as u64
    };
    let mut room = match allowance {
        Some(a) => Room::within(a, fixed),
        None => Room::unbounded(),
    };
    match format {
        Format::Msgpack => crate::msgpack::msgpack_lines(&body, &mut room),
        Format::Json => {
            room.ensure(body.len() as u64 + 1)?;
            crate::json::json_lines(&body)
        }
        Format::Ndjson => {
            room.ensure(body.len() as u64 + 1)?;
            crate::json::ndjson_lines(&body)
        }
    }
}

impl From<Exceeded> for BodyError {
    fn from(e: Exceeded) -> Self {
        match e.short {
            Short::Now => BodyError::Busy,
            Short::Ever => BodyError::TooCostly(e.most),
        }
    }
}

/// Decompresses `raw`, refusing output beyond `max_body` bytes without
/// producing more than one byte past it, so a compression bomb costs at most
/// `max_body` of memory.
pub fn decompress(encoding: Encoding, raw: &[u8], max_body: u64) -> Result<Cow<'_, [u8]>> {
    let out = match encoding {
        Encoding::Identity => {
            if raw.len() as u64 > max_body {
                return Err(BodyError::TooLarge(max_body));
            }
            return Ok(Cow::Borrowed(raw));
        }
        Encoding::Gzip => bounded(flate2::read::MultiGzDecoder::new(raw), max_body, "gzip")?,
        Encoding::Deflate if looks_like_zlib(raw) => {
            bounded(flate2::read::ZlibDecoder::new(raw), max_body, "deflate")?
        }
        Encoding::Deflate => bounded(flate2::read::DeflateDecoder::new(raw), max_body, "deflate")?,
        Encoding::Zstd => {
            // A frame that declares more than the limit is refused before the
            // decoder allocates a window for it.
            if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(raw) {
                if declared > max_body {
                    return Err(BodyError::TooLarge(max_body));
                }
            }
            let mut decoder = zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| BodyError::Invalid(format!("corrupt zstd body: {e}")))?;
            // The window is memory the decoder allocates up front, whatever the
            // output: keep it near the size of the largest body accepted.
            decoder
                .window_log_max(window_log(max_body))
                .map_err(|e| BodyError::Invalid(format!("corrupt zstd body: {e}")))?;
            bounded(decoder, max_body, "zstd")?
        }
    };
    Ok(Cow::Owned(out))
}

fn bounded(reader: impl Read, max_body: u64, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(max_body.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Invalid(format!("corrupt {name} body: {e}")))?;
    if out.len() as u64 > max_body {
        return Err(BodyError::TooLarge(max_body));
    }
    Ok(out)
}

/// A zlib stream starts with a header whose 16 bits are a multiple of 31 and
/// whose method is 8; raw deflate almost never does.
fn looks_like_zlib(raw: &[u8]) -> bool {
    match raw {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Largest zstd window accepted: about the body limit, between 8 MiB (what
/// streaming encoders use up to level 19) and 128 MiB (zstd's default cap).
fn window_log(max_body: u64) -> u32 {
    let needed = 64 - max_body.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use timber_core::{Msgpack, Sink};

    const MAX: u64 = 1 << 20;

    fn frame<S: Sink>(s: &mut S, i: i64) {
        s.map(3);
        s.str("dt");
        s.str("2019-03-04T03:44:21.221232Z");
        s.str("message");
        s.str("hello \"world\"\n");
        s.str("n");
        s.int(i);
    }

    fn expected_line(i: i64) -> String {
        format!(r#"{{"dt":"2019-03-04T03:44:21.221232Z","message":"hello \"world\"\n","n":{i}}}"#)
    }

    fn msgpack_batch(n: usize) -> Vec<u8> {
        let mut m = Msgpack::default();
        m.array(n);
        for i in 0..n {
            frame(&mut m, i as i64);
        }
        m.buf
    }

    fn lines(batch: &Batch) -> Vec<&str> {
        std::str::from_utf8(&batch.lines).unwrap().lines().collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::parse(Some("application/msgpack")),
            Ok(Format::Msgpack)
        );
        assert_eq!(
            Format::parse(Some("application/x-msgpack")),
            Ok(Format::Msgpack)
        );
        assert_eq!(
            Format::parse(Some("Application/JSON; charset=utf-8")),
            Ok(Format::Json)
        );
        assert_eq!(
            Format::parse(Some("application/x-ndjson")),
            Ok(Format::Ndjson)
        );
        assert_eq!(
            Format::parse(Some("application/ndjson")),
            Ok(Format::Ndjson)
        );
        for bad in [None, Some("text/plain"), Some(""), Some("application/xml")] {
            let err = Format::parse(bad).unwrap_err();
            assert_eq!(err.status(), 415, "{bad:?}");
        }
    }

    #[test]
    fn content_encodings() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("identity")), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some("GZIP")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some("x-gzip")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some("deflate")), Ok(Encoding::Deflate));
        assert_eq!(Encoding::parse(Some("zstd")), Ok(Encoding::Zstd));
        for bad in ["br", "gzip, br", "compress"] {
            assert_eq!(
                Encoding::parse(Some(bad)).unwrap_err().status(),
                415,
                "{bad}"
            );
        }
    }

    #[test]
    fn msgpack_array_and_single_map() {
        let batch = decode(Format::Msgpack, Encoding::Identity, &msgpack_batch(3), MAX).unwrap();
        assert_eq!(batch.frames, 3);
        assert_eq!(
            lines(&batch),
            [expected_line(0), expected_line(1), expected_line(2)]
        );

        let mut single = Msgpack::default();
        frame(&mut single, 7);
        let batch = decode(Format::Msgpack, Encoding::Identity, &single.buf, MAX).unwrap();
        assert_eq!(lines(&batch), [expected_line(7)]);

        let empty = decode(Format::Msgpack, Encoding::Identity, &[0x90], MAX).unwrap();
        assert_eq!(empty, Batch::default());
    }

    #[test]
    fn every_encoding_round_trips() {
        let plain = msgpack_batch(50);
        for (encoding, body) in [
            (Encoding::Identity, plain.clone()),
            (Encoding::Gzip, gzip(&plain)),
            (Encoding::Deflate, zlib(&plain)),
            (Encoding::Deflate, raw_deflate(&plain)),
            (Encoding::Zstd, zstd(&plain)),
        ] {
            let batch = decode(Format::Msgpack, encoding, &body, MAX).unwrap();
            assert_eq!(batch.frames, 50, "{encoding:?}");
            assert_eq!(lines(&batch)[49], expected_line(49), "{encoding:?}");
        }
    }

    #[test]
    fn concatenated_gzip_members_are_read() {
        let mut body = gzip(b"{\"a\":1}\n");
        body.extend(gzip(b"{\"a\":2}\n"));
        let batch = decode(Format::Ndjson, Encoding::Gzip, &body, MAX).unwrap();
        assert_eq!(lines(&batch), [r#"{"a":1}"#, r#"{"a":2}"#]);
    }

    fn invalid(format: Format, encoding: Encoding, body: &[u8]) -> String {
        match decode(format, encoding, body, MAX) {
            Err(BodyError::Invalid(reason)) => {
                assert!(!reason.contains('\n'), "{reason}");
                reason
            }
            other => panic!("expected 400 for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let good = msgpack_batch(3);
        for cut in 0..good.len() {
            invalid(Format::Msgpack, Encoding::Identity, &good[..cut]);
        }
        let reason = invalid(Format::Msgpack, Encoding::Identity, &[0x92, 0x01, 0x80]);
        assert!(reason.contains("not a map"), "{reason}");
        invalid(Format::Msgpack, Encoding::Identity, &[0xc1]);
        invalid(Format::Msgpack, Encoding::Identity, b"\xa5hello");

        invalid(Format::Json, Encoding::Identity, b"{\"a\": ");
        invalid(Format::Json, Encoding::Identity, b"{\"a\": 1} x");
        invalid(Format::Json, Encoding::Identity, b"42");
        invalid(Format::Json, Encoding::Identity, b"\xff\xfe");
        let reason = invalid(Format::Json, Encoding::Identity, b"[{\"a\":1}, 2]");
        assert!(reason.contains("frame 1"), "{reason}");

        let reason = invalid(Format::Ndjson, Encoding::Identity, b"{\"a\":1}\n[1]\n");
        assert!(reason.contains("line 2"), "{reason}");
        invalid(Format::Ndjson, Encoding::Identity, b"{\"a\":1}{\"b\":2}\n");
        invalid(Format::Ndjson, Encoding::Identity, b"");

        invalid(Format::Msgpack, Encoding::Gzip, b"not gzip at all");
        invalid(Format::Msgpack, Encoding::Gzip, &gzip(&good)[..20]);
        invalid(Format::Msgpack, Encoding::Deflate, b"\xff\xff\xff\xff");
        invalid(Format::Msgpack, Encoding::Zstd, b"not zstd");
        invalid(Format::Msgpack, Encoding::Zstd, &zstd(&good)[..10]);
    }

    #[test]
    fn size_limit_is_counted_after_decompression() {
        let body = msgpack_batch(10);
        let n = body.len() as u64;
        assert!(decode(Format::Msgpack, Encoding::Identity, &body, n).is_ok());
        assert_eq!(
            decode(Format::Msgpack, Encoding::Identity, &body, n - 1),
            Err(BodyError::TooLarge(n - 1))
        );
        let packed = gzip(&body);
        assert!(decode(Format::Msgpack, Encoding::Gzip, &packed, n).is_ok());
        assert_eq!(
            decode(Format::Msgpack, Encoding::Gzip, &packed, n - 1),
            Err(BodyError::TooLarge(n - 1))
        );
    }

    #[test]
    fn compression_bombs_stop_at_the_limit() {
        // 64 MiB of zeros, written in pieces so the test itself stays small.
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let mut zs = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
            zl.write_all(&zeros).unwrap();
            zs.write_all(&zeros).unwrap();
        }
        for (encoding, bomb) in [
            (Encoding::Gzip, gz.finish().unwrap()),
            (Encoding::Deflate, zl.finish().unwrap()),
            (Encoding::Zstd, zs.finish().unwrap()),
        ] {
            assert!(bomb.len() < 1 << 20, "{encoding:?}");
            assert_eq!(
                decompress(encoding, &bomb, MAX).unwrap_err(),
                BodyError::TooLarge(MAX),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn zstd_frames_declaring_too_much_are_refused_up_front() {
        let body = zstd(&vec![b'x'; 4096]);
        assert!(decompress(Encoding::Zstd, &body, 4096).is_ok());
        assert_eq!(
            decompress(Encoding::Zstd, &body, 4095).unwrap_err(),
            BodyError::TooLarge(4095)
        );
    }

    #[test]
    fn wire_limit_leaves_room_for_incompressible_data() {
        assert_eq!(Encoding::Identity.wire_limit(1000), 1000);
        assert!(Encoding::Gzip.wire_limit(1000) > 1000);
        assert_eq!(Encoding::Zstd.wire_limit(u64::MAX), u64::MAX);
    }

    #[test]
    fn zstd_window_tracks_the_limit() {
        assert_eq!(window_log(1), 23);
        assert_eq!(window_log(10 << 20), 24);
        assert_eq!(window_log(u64::MAX), 27);
    }
}
