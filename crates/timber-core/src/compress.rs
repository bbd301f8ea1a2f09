//! Request body compression, done once per batch on the sender thread.

use std::io::Write;

/// How request bodies are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Sent as is.
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
    /// `Content-Encoding: deflate` (zlib).
    Deflate,
    /// `Content-Encoding: zstd`.
    Zstd,
}

impl Compression {
    /// Parses `"gzip"`, `"deflate"`, `"zstd"` or `"none"`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" | "" => Self::None,
            "gzip" => Self::Gzip,
            "deflate" => Self::Deflate,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    /// The `Content-Encoding` header value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Deflate => Some("deflate"),
            Self::Zstd => Some("zstd"),
        }
    }

    /// The encoded body; `None` when sent as is.
    pub fn encode(self, body: &[u8]) -> Option<Vec<u8>> {
        // Fast levels: the logs are repetitive, most of the gain comes early,
        // and the sender must keep pace with the logging threads.
        let out = Vec::with_capacity(body.len() / 4);
        match self {
            Self::None => None,
            Self::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                e.write_all(body).ok()?;
                e.finish().ok()
            }
            Self::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(out, flate2::Compression::fast());
                e.write_all(body).ok()?;
                e.finish().ok()
            }
            Self::Zstd => zstd::bulk::compress(body, 1).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips() {
        let body: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let gz = Compression::Gzip.encode(&body).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
        let z = Compression::Deflate.encode(&body).unwrap();
        back.clear();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
        let zs = Compression::Zstd.encode(&body).unwrap();
        assert_eq!(zstd::bulk::decompress(&zs, body.len()).unwrap(), body);
        assert!(zs.len() < body.len() / 4);
        assert_eq!(Compression::None.encode(&body), None);
        assert_eq!(Compression::parse("brotli"), None);
    }
}
