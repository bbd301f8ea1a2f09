//! The decode oracle shared by the always-run mutation test
//! (`tests/garbage.rs`) and the libFuzzer target (`fuzz/`), so that both hold
//! the decoders to the same promise, and the compressor the mutation tests
//! share. Not part of the collector's API.

use std::io::Write;

use serde_json::value::RawValue;
use timber_core::MAX_DECODE_DEPTH;

use crate::body::{decode, Encoding, Format};

/// Decodes `body` and checks what came out: either a refusal, or exactly
/// `frames` lines, each one a JSON object nested no deeper than the msgpack
/// decoder allows. Panics (the failure both harnesses
/// report) on anything else; a panic inside the decoder surfaces the same way.
pub fn check_body(format: Format, encoding: Encoding, body: &[u8], max_body: u64) {
    let Ok(batch) = decode(format, encoding, body, max_body) else {
        return;
    };
    let lines: Vec<&[u8]> = batch
        .lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), batch.frames, "one line per frame");
    assert!(
        batch.lines.is_empty() || batch.lines.ends_with(b"\n"),
        "the last line is complete"
    );
    for line in lines {
        // Raw values: validated without a tree, and so without a depth limit
        // of their own that could hide ours.
        let value: &RawValue = serde_json::from_slice(line).expect("stored line is JSON");
        assert!(value.get().starts_with('{'), "stored line is an object");
        assert!(
            containers_deep(line) <= MAX_DECODE_DEPTH + 1,
            "stored line is nested too deep"
        );
    }
}

/// How many containers deep valid JSON goes (a flat object is 1).
fn containers_deep(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth -= 1,
            _ => {}
        }
    }
    deepest
}

/// `body` as a client would send it with `encoding`.
pub fn compress(encoding: Encoding, body: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Identity => body.to_vec(),
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).expect("writing to memory");
            e.finish().expect("writing to memory")
        }
        Encoding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).expect("writing to memory");
            e.finish().expect("writing to memory")
        }
        Encoding::Zstd => zstd::bulk::compress(body, 1).expect("compressing in memory"),
    }
}
