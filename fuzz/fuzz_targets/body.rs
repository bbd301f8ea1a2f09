//! Fuzzes the collector's body decoders: any bytes, under any content type
//! and encoding, give an error or JSON lines that are objects; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use timber_collector::body::{decode, Encoding, Format};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let format = [Format::Msgpack, Format::Json, Format::Ndjson][usize::from(selector % 3)];
    let encoding = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Zstd,
    ][usize::from(selector / 3 % 4)];
    if let Ok(batch) = decode(format, encoding, body, 1 << 20) {
        let lines: Vec<&[u8]> = batch
            .lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), batch.frames);
        for line in lines {
            let value: serde_json::Value =
                serde_json::from_slice(line).expect("stored line is JSON");
            assert!(value.is_object());
        }
    }
});
