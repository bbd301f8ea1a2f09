//! JSON and NDJSON bodies to stored lines. `serde_json` validates the text
//! (as raw values, so nothing is copied into a tree and no recursion limit
//! applies); each frame is then re-written compactly from the original text,
//! which keeps key order and numbers as the client sent them. Nesting is
//! capped here at the depth the msgpack decoder allows, so no format stores
//! what another would refuse, and readers of the files never meet a line too
//! deep to parse.

use serde_json::value::RawValue;
use timber_core::MAX_DECODE_DEPTH;

use crate::body::{Batch, BodyError};

type Result<T> = std::result::Result<T, BodyError>;

fn utf8(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|e| BodyError::Invalid(format!("body is not UTF-8: {e}")))
}

/// A JSON body: one object, or an array of objects.
pub(crate) fn json_lines(body: &[u8]) -> Result<Batch> {
    let text = utf8(body)?;
    let invalid = |e: serde_json::Error| BodyError::Invalid(format!("JSON body: {e}"));
    let mut batch = Batch {
        lines: Vec::with_capacity(body.len() + 1),
        frames: 0,
    };
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let mut unfit = None;
            let mut i = 0;
            let read = for_each_raw(text, |item| {
                if let Err(e) = push_object(&mut batch, item) {
                    unfit = Some(BodyError::Invalid(format!("frame {i} {e}")));
                    return false;
                }
                i += 1;
                true
            });
            if let Some(e) = unfit {
                return Err(e);
            }
            read.map_err(invalid)?;
        }
        Some(b'{') => {
            let item: &RawValue = serde_json::from_str(text).map_err(invalid)?;
            push_object(&mut batch, item.get())
                .map_err(|e| BodyError::Invalid(format!("frame {e}")))?;
        }
        _ => {
            return Err(BodyError::Invalid(
                "JSON body is neither an object nor an array of objects".into(),
            ))
        }
    }
    Ok(batch)
}

/// Calls `each` with the text of every item of the JSON array `text`, in
/// order, until it returns false; never holds the list of items, which took
/// 16 bytes (32 with a vector's spare room) per item of 3 bytes such as `{}`.
/// Fails if `text` is not one valid array; stopped early, it fails too (the
/// array is not read to its end), so a caller that stops looks at its own
/// reason first.
pub(crate) fn for_each_raw<'a>(
    text: &'a str,
    each: impl FnMut(&'a str) -> bool,
) -> std::result::Result<(), serde_json::Error> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    struct Items<F>(F);

    impl<'de, F: FnMut(&'de str) -> bool> Visitor<'de> for Items<F> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array")
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> std::result::Result<(), A::Error> {
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if !(self.0)(item.get()) {
                    return Err(serde::de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(Items(each))?;
    de.end()
}

/// An NDJSON body: one object per line; blank lines and `\r\n` are fine.
pub(crate) fn ndjson_lines(body: &[u8]) -> Result<Batch> {
    let text = utf8(body)?;
    let mut batch = Batch {
        lines: Vec::with_capacity(body.len() + 1),
        frames: 0,
    };
    for (n, line) in text.split('\n').enumerate() {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() {
            continue;
        }
        let item: &RawValue = serde_json::from_str(line)
            .map_err(|e| BodyError::Invalid(format!("NDJSON line {}: {e}", n + 1)))?;
        push_object(&mut batch, item.get())
            .map_err(|e| BodyError::Invalid(format!("NDJSON line {} {e}", n + 1)))?;
    }
    Ok(batch)
}

/// Why one validated value is not stored; completes "frame 3 …".
#[derive(Debug, PartialEq, Eq)]
enum Unfit {
    NotAnObject,
    TooDeep,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::NotAnObject => f.write_str("is not an object"),
            Unfit::TooDeep => write!(f, "is nested deeper than {MAX_DECODE_DEPTH}"),
        }
    }
}

/// Appends one validated JSON value as a compact line, if it is an object
/// no deeper than the cap. On error the batch is left as it was.
fn push_object(batch: &mut Batch, text: &str) -> std::result::Result<(), Unfit> {
    let text = text.trim_start();
    if !text.starts_with('{') {
        return Err(Unfit::NotAnObject);
    }
    let start = batch.lines.len();
    if let Err(e) = minify_into(text, &mut batch.lines) {
        batch.lines.truncate(start);
        return Err(e);
    }
    batch.lines.push(b'\n');
    batch.frames += 1;
    Ok(())
}

/// Copies valid JSON without the whitespace between tokens. Strings cannot
/// hold a raw newline in valid JSON, so the result is one line.
///
/// Depth counts as in the msgpack decoder: the frame is at depth 0, a value
/// inside a container one deeper than the container, and no value may start
/// deeper than [`MAX_DECODE_DEPTH`]. Keys need no check of their own: a key
/// is always followed by a value at the same depth.
fn minify_into(text: &str, out: &mut Vec<u8>) -> std::result::Result<(), Unfit> {
    let mut in_string = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for &b in text.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b',' | b':' => {}
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {
                if depth > MAX_DECODE_DEPTH {
                    return Err(Unfit::TooDeep);
                }
                match b {
                    b'{' | b'[' => depth += 1,
                    b'"' => in_string = true,
                    _ => {}
                }
            }
        }
        out.push(b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{decode, Encoding, Format};
    use std::io::Write;

    const MAX: u64 = 1 << 20;

    fn lines(batch: &Batch) -> Vec<&str> {
        std::str::from_utf8(&batch.lines).unwrap().lines().collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn json_object_and_array_are_compacted_in_order() {
        let body = b"  {\n  \"z\": 1,\n  \"a\": [1, 2.50, \"x y\\\" \"],\n  \"big\": 123456789012345678901234567890\n}\n";
        let batch = decode(Format::Json, Encoding::Identity, body, MAX).unwrap();
        assert_eq!(
            lines(&batch),
            [r#"{"z":1,"a":[1,2.50,"x y\" "],"big":123456789012345678901234567890}"#]
        );

        let body = br#"[{"a": 1}, {"b": {"c": null}}]"#;
        let batch = decode(Format::Json, Encoding::Identity, body, MAX).unwrap();
        assert_eq!(batch.frames, 2);
        assert_eq!(lines(&batch), [r#"{"a":1}"#, r#"{"b":{"c":null}}"#]);

        let batch = decode(Format::Json, Encoding::Identity, b"[]", MAX).unwrap();
        assert_eq!(batch, Batch::default());
    }

    #[test]
    fn ndjson_lines_with_blank_lines_and_crlf() {
        let body = b"{\"a\": 1}\r\n\n  {\"b\":\"c d\"}\n";
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let raw = match encoding {
                Encoding::Gzip => gzip(body),
                Encoding::Zstd => zstd(body),
                _ => body.to_vec(),
            };
            let batch = decode(Format::Ndjson, encoding, &raw, MAX).unwrap();
            assert_eq!(lines(&batch), [r#"{"a":1}"#, r#"{"b":"c d"}"#]);
        }
    }

    /// `{"a": [[…[leaf]…]]}` with `arrays` arrays around `leaf`.
    fn nested(arrays: usize, leaf: &str) -> String {
        format!(
            "{{\"a\": {}{leaf}{}}}",
            "[ ".repeat(arrays),
            " ]".repeat(arrays)
        )
    }

    /// The same in msgpack; with `empty`, the innermost array is `[]`
    /// (counted in `arrays`), else it holds `1`.
    fn msgpack_nested(arrays: usize, empty: bool) -> Vec<u8> {
        let mut body = vec![0x81, 0xa1, b'a'];
        body.extend(std::iter::repeat_n(0x91, arrays - usize::from(empty)));
        body.push(if empty { 0x90 } else { 0x01 });
        body
    }

    #[test]
    fn depth_is_capped_as_for_msgpack() {
        let m = MAX_DECODE_DEPTH;
        // The frame is depth 0, its "a" depth 1: a scalar fits under m-1 arrays.
        for (arrays, leaf, empty) in [
            (m - 2, "1", false),
            (m - 1, "1", false),
            (m, "1", false),
            (m - 1, "[]", true),
            (m, "[]", true),
            (m + 1, "[]", true),
        ] {
            let arrays_in_leaf = usize::from(empty);
            let mp = decode(
                Format::Msgpack,
                Encoding::Identity,
                &msgpack_nested(arrays, empty),
                MAX,
            );
            let text = nested(arrays - arrays_in_leaf, leaf);
            let js = decode(Format::Json, Encoding::Identity, text.as_bytes(), MAX);
            let nd = decode(Format::Ndjson, Encoding::Identity, text.as_bytes(), MAX);
            assert_eq!(mp.is_ok(), js.is_ok(), "{arrays} {leaf}: {mp:?} {js:?}");
            assert_eq!(js.is_ok(), nd.is_ok(), "{arrays} {leaf}");
            if let Err(e) = js {
                assert_eq!(
                    e,
                    BodyError::Invalid(format!("frame is nested deeper than {m}"))
                );
            }
        }
        assert!(decode(
            Format::Json,
            Encoding::Identity,
            nested(m - 1, "1").as_bytes(),
            MAX
        )
        .is_ok());
        assert!(decode(
            Format::Json,
            Encoding::Identity,
            nested(m, "1").as_bytes(),
            MAX
        )
        .is_err());
        // Keys and strings deep inside strings are not nesting.
        let brackets = format!("{{\"[[[\": \"{}\"}}", "[{".repeat(500));
        assert!(decode(Format::Json, Encoding::Identity, brackets.as_bytes(), MAX).is_ok());
    }

    #[test]
    fn very_deep_bodies_are_refused_without_recursion() {
        let n = 1_000_000;
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let array = format!("[{{\"ok\":1}},{deep}]");
        let reason = match decode(Format::Json, Encoding::Identity, array.as_bytes(), 1 << 22) {
            Err(BodyError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason,
            format!("frame 1 is nested deeper than {MAX_DECODE_DEPTH}")
        );
        let nd = format!("{{\"ok\":1}}\n{deep}\n");
        let reason = match decode(Format::Ndjson, Encoding::Identity, nd.as_bytes(), 1 << 22) {
            Err(BodyError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert!(
            reason.starts_with("NDJSON line 2 is nested deeper"),
            "{reason}"
        );
    }
}
