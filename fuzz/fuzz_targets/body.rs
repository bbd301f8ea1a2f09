//! Fuzzes the collector's body decoders: any bytes, under any content type
//! and encoding, give an error or JSON lines that are objects; never a panic.
//! The oracle is the one `cargo test` runs on mutated bodies
//! ([`timber_collector::testing::check_body`]).

#![no_main]

use libfuzzer_sys::fuzz_target;
use timber_collector::body::{Encoding, Format};
use timber_collector::testing::check_body;

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
    check_body(format, encoding, body, 1 << 20);
});
