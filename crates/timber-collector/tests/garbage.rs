//! Mutated and random bodies, under every content type and encoding: the
//! decoders answer with an error or with valid JSON object lines, and never
//! panic. A deterministic, always-run cousin of the `fuzz/` target; both use
//! the same oracle, [`timber_collector::testing::check_body`].

use timber_collector::body::{Encoding, Format};
use timber_collector::testing::{check_body, compress};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<(Format, Vec<u8>)> {
    let json = br#"[{"dt":"2019-03-04T03:44:21.221232Z","level":"info","message":"hi","context":{"user":{"id":1}}}]"#;
    let ndjson = b"{\"message\":\"a\"}\n{\"message\":\"b\",\"n\":[1,2.5,null]}\n";
    // [{"message": "hi", "n": [1, -2, 1.5], "b": <bin 2>}]
    let msgpack = vec![
        0x91, 0x83, 0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0xa2, b'h', b'i', 0xa1, b'n',
        0x93, 0x01, 0xfe, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xa1, b'b', 0xc4, 0x02, 0xff, 0x00,
    ];
    vec![
        (Format::Json, json.to_vec()),
        (Format::Ndjson, ndjson.to_vec()),
        (Format::Msgpack, msgpack),
    ]
}

fn check(format: Format, encoding: Encoding, body: &[u8]) {
    check_body(format, encoding, body, 1 << 16);
}

#[test]
fn mutated_bodies_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let encodings = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Zstd,
    ];
    let formats = [Format::Msgpack, Format::Json, Format::Ndjson];
    for (format, seed) in seeds() {
        for encoding in encodings {
            let wire = compress(encoding, &seed);
            check(format, encoding, &wire);
            for _ in 0..1500 {
                let mut body = wire.clone();
                for _ in 0..=rng.below(4) {
                    match rng.below(4) {
                        0 if !body.is_empty() => {
                            let at = rng.below(body.len());
                            body[at] ^= 1 << rng.below(8);
                        }
                        1 if !body.is_empty() => body.truncate(rng.below(body.len())),
                        2 => {
                            let at = rng.below(body.len() + 1);
                            body.insert(at, rng.next() as u8);
                        }
                        _ => {
                            let at = rng.below(body.len() + 1);
                            let other = &wire[rng.below(wire.len())..];
                            body.splice(at..at, other.iter().copied());
                        }
                    }
                }
                // Also under the wrong type or encoding.
                check(format, encoding, &body);
                check(formats[rng.below(3)], encodings[rng.below(4)], &body);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let len = rng.below(300);
        let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        for format in [Format::Msgpack, Format::Json, Format::Ndjson] {
            check(format, Encoding::Identity, &body);
        }
    }
}
