//! The decode oracle shared by the always-run mutation test
//! (`tests/garbage.rs`) and the libFuzzer target (`fuzz/`), so that both hold
//! the decoders to the same promise. Not part of the collector's API.

use crate::body::{decode, Encoding, Format};

/// Decodes `body` and checks what came out: either a refusal, or exactly
/// `frames` lines, each one a JSON object. Panics (the failure both harnesses
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
        let value: serde_json::Value = serde_json::from_slice(line).expect("stored line is JSON");
        assert!(value.is_object(), "stored line is an object: {value}");
    }
}
