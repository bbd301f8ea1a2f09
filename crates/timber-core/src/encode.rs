//! The two encodings of a frame: msgpack for the wire, JSON for stdout and storage.
//!
//! Both are driven through one [`Sink`] interface with length-prefixed
//! containers, so that whoever walks a value (the Python glue, the msgpack
//! decoder of the collector, a [`crate::value::Value`]) produces byte-for-byte
//! equivalent output in either encoding.

/// A receiver of a value as a stream of events.
///
/// Containers announce their length first; a map of `n` entries is followed by
/// `n` key/value pairs, each key written with [`Sink::str`].
pub trait Sink {
    /// `null` / msgpack nil.
    fn nil(&mut self);
    /// A boolean.
    fn bool(&mut self, v: bool);
    /// A signed integer.
    fn int(&mut self, v: i64);
    /// An unsigned integer (only used above `i64::MAX`).
    fn uint(&mut self, v: u64);
    /// A finite float.
    fn finite_float(&mut self, v: f64);
    /// A UTF-8 string.
    fn str(&mut self, v: &str);
    /// Starts an array of `len` elements.
    fn array(&mut self, len: usize);
    /// Starts a map of `len` entries.
    fn map(&mut self, len: usize);

    /// A float; NaN and the infinities, which JSON cannot hold, become the
    /// strings `"NaN"`, `"Infinity"` and `"-Infinity"` in both encodings.
    fn float(&mut self, v: f64) {
        if v.is_finite() {
            self.finite_float(v);
        } else if v.is_nan() {
            self.str("NaN");
        } else if v > 0.0 {
            self.str("Infinity");
        } else {
            self.str("-Infinity");
        }
    }
}

/// A sink borrowed is a sink, so wrappers can take either.
impl<S: Sink + ?Sized> Sink for &mut S {
    fn nil(&mut self) {
        (**self).nil();
    }
    fn bool(&mut self, v: bool) {
        (**self).bool(v);
    }
    fn int(&mut self, v: i64) {
        (**self).int(v);
    }
    fn uint(&mut self, v: u64) {
        (**self).uint(v);
    }
    fn finite_float(&mut self, v: f64) {
        (**self).finite_float(v);
    }
    fn float(&mut self, v: f64) {
        (**self).float(v);
    }
    fn str(&mut self, v: &str) {
        (**self).str(v);
    }
    fn array(&mut self, len: usize) {
        (**self).array(len);
    }
    fn map(&mut self, len: usize) {
        (**self).map(len);
    }
}

/// `s` cut to at most `max` bytes (at a character boundary) and marked
/// `… [truncated N bytes]`, or `s` itself when it fits.
pub(crate) fn cut_string(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… [truncated {} bytes]", &s[..at], s.len() - at))
}

/// Cuts every string longer than `max` bytes, marking the cut, so that a
/// record too large for a request still goes out, shortened, instead of
/// being dropped.
#[derive(Debug)]
pub struct Truncating<S> {
    /// The sink written to.
    pub inner: S,
    /// Longest string kept whole, in bytes.
    pub max: usize,
}

impl<S: Sink> Sink for Truncating<S> {
    fn nil(&mut self) {
        self.inner.nil();
    }
    fn bool(&mut self, v: bool) {
        self.inner.bool(v);
    }
    fn int(&mut self, v: i64) {
        self.inner.int(v);
    }
    fn uint(&mut self, v: u64) {
        self.inner.uint(v);
    }
    fn finite_float(&mut self, v: f64) {
        self.inner.finite_float(v);
    }
    fn str(&mut self, v: &str) {
        self.inner.str(&cut_string(v, self.max));
    }
    fn array(&mut self, len: usize) {
        self.inner.array(len);
    }
    fn map(&mut self, len: usize) {
        self.inner.map(len);
    }
}

/// Writes msgpack into a growable buffer.
#[derive(Debug, Default)]
pub struct Msgpack {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

// Writing into a Vec cannot fail, so the `Result`s of `rmp` are discarded.
impl Sink for Msgpack {
    fn nil(&mut self) {
        rmp::encode::write_nil(&mut self.buf).ok();
    }
    fn bool(&mut self, v: bool) {
        rmp::encode::write_bool(&mut self.buf, v).ok();
    }
    fn int(&mut self, v: i64) {
        rmp::encode::write_sint(&mut self.buf, v).ok();
    }
    fn uint(&mut self, v: u64) {
        rmp::encode::write_uint(&mut self.buf, v).ok();
    }
    fn finite_float(&mut self, v: f64) {
        rmp::encode::write_f64(&mut self.buf, v).ok();
    }
    fn str(&mut self, v: &str) {
        rmp::encode::write_str(&mut self.buf, v).ok();
    }
    fn array(&mut self, len: usize) {
        rmp::encode::write_array_len(&mut self.buf, len_u32(len)).ok();
    }
    fn map(&mut self, len: usize) {
        rmp::encode::write_map_len(&mut self.buf, len_u32(len)).ok();
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Largest msgpack array header: marker plus a 32-bit length.
pub const MAX_ARRAY_HEADER: usize = 5;

/// Writes the msgpack header of an array of `len` elements so that it ends
/// exactly at `buf[MAX_ARRAY_HEADER]`, and returns where it starts.
///
/// Batches reserve [`MAX_ARRAY_HEADER`] bytes in front of their records so the
/// header can be put in place once the count is known, without moving them.
pub fn put_array_header(buf: &mut [u8], len: usize) -> usize {
    let mut head = Vec::with_capacity(MAX_ARRAY_HEADER);
    rmp::encode::write_array_len(&mut head, len_u32(len)).ok();
    let start = MAX_ARRAY_HEADER - head.len();
    buf[start..MAX_ARRAY_HEADER].copy_from_slice(&head);
    start
}

/// Writes compact JSON (no spaces) into a growable buffer.
#[derive(Debug, Default)]
pub struct Json {
    /// The encoded bytes.
    pub buf: Vec<u8>,
    /// Open containers: elements still expected, whether it is a map, and
    /// whether the next string is a key.
    open: Vec<Open>,
}

#[derive(Debug)]
struct Open {
    remaining: usize,
    is_map: bool,
    want_key: bool,
    first: bool,
}

/// Writes `s` as a JSON string, escaped as `serde_json` does (the short
/// forms where JSON has them, `\u00XX` for other control characters), one
/// copy per unescaped run.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

impl Json {
    /// An empty writer.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(512),
            open: Vec::with_capacity(8),
        }
    }

    /// Whether every container opened has been completed.
    pub fn is_complete(&self) -> bool {
        self.open.is_empty()
    }

    /// Clears the buffer for the next document.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.open.clear();
    }

    fn before(&mut self) {
        if let Some(top) = self.open.last_mut() {
            if top.is_map && !top.want_key {
                self.buf.push(b':');
            } else if !top.first {
                self.buf.push(b',');
            }
            top.first = false;
        }
    }

    /// Called after a complete element (scalar or closed container).
    fn after(&mut self) {
        while let Some(top) = self.open.last_mut() {
            if top.is_map {
                top.want_key = !top.want_key;
                if !top.want_key {
                    // A key was just written; its value is still to come.
                    return;
                }
            }
            top.remaining -= 1;
            if top.remaining > 0 {
                return;
            }
            let is_map = top.is_map;
            self.open.pop();
            self.buf.push(if is_map { b'}' } else { b']' });
        }
    }

    fn scalar(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.before();
        write(&mut self.buf);
        self.after();
    }

    fn open(&mut self, len: usize, is_map: bool) {
        self.before();
        self.buf.push(if is_map { b'{' } else { b'[' });
        if len == 0 {
            self.buf.push(if is_map { b'}' } else { b']' });
            self.after();
        } else {
            self.open.push(Open {
                remaining: len,
                is_map,
                want_key: is_map,
                first: true,
            });
        }
    }
}

impl Sink for Json {
    fn nil(&mut self) {
        self.scalar(|b| b.extend_from_slice(b"null"));
    }
    fn bool(&mut self, v: bool) {
        self.scalar(|b| b.extend_from_slice(if v { b"true" } else { b"false" }));
    }
    fn int(&mut self, v: i64) {
        self.scalar(|b| serde_json::to_writer(b, &v).unwrap_or(()));
    }
    fn uint(&mut self, v: u64) {
        self.scalar(|b| serde_json::to_writer(b, &v).unwrap_or(()));
    }
    fn finite_float(&mut self, v: f64) {
        self.scalar(|b| serde_json::to_writer(b, &v).unwrap_or(()));
    }
    fn str(&mut self, v: &str) {
        self.scalar(|b| write_json_str(b, v));
    }
    fn array(&mut self, len: usize) {
        self.open(len, false);
    }
    fn map(&mut self, len: usize) {
        self.open(len, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<S: Sink>(s: &mut S) {
        s.map(4);
        s.str("a");
        s.array(3);
        s.int(-1);
        s.uint(u64::MAX);
        s.float(f64::NAN);
        s.str("empty");
        s.map(0);
        s.str("nested");
        s.map(1);
        s.str("x\n\"y\"");
        s.array(0);
        s.str("f");
        s.float(0.5);
    }

    #[test]
    fn json_matches_serde() {
        let mut j = Json::new();
        sample(&mut j);
        assert!(j.is_complete());
        let text = String::from_utf8(j.buf).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"a": [-1, u64::MAX, "NaN"], "empty": {}, "nested": {"x\n\"y\"": []}, "f": 0.5})
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn msgpack_round_trips_through_decoder() {
        let mut m = Msgpack::default();
        sample(&mut m);
        let mut j = Json::new();
        crate::decode::transcode_one(&mut &m.buf[..], &mut j).unwrap();
        let mut direct = Json::new();
        sample(&mut direct);
        assert_eq!(j.buf, direct.buf);
    }

    #[test]
    fn strings_escape_exactly_as_serde_json() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(
            [
                "",
                "plain",
                "é ü 𝄞",
                "\"quoted\" \\ path\n",
                "\u{7f}\u{2028}",
            ]
            .map(String::from),
        );
        for case in cases {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &case);
            assert_eq!(ours, serde_json::to_vec(&case).unwrap(), "{case:?}");
        }
    }

    #[test]
    fn truncating_cuts_long_strings_at_char_boundaries() {
        let mut t = Truncating {
            inner: Json::new(),
            max: 4,
        };
        t.array(2);
        t.str("héllo world");
        t.str("ok");
        assert_eq!(
            String::from_utf8(t.inner.buf).unwrap(),
            r#"["hél… [truncated 8 bytes]","ok"]"#
        );
    }

    #[test]
    fn array_header_ends_at_reserved_offset() {
        for len in [0usize, 15, 16, 65535, 65536] {
            let mut buf = vec![0u8; MAX_ARRAY_HEADER];
            let start = put_array_header(&mut buf, len);
            let mut rd = &buf[start..];
            assert_eq!(rmp::decode::read_array_len(&mut rd).unwrap() as usize, len);
            assert!(rd.is_empty());
        }
    }
}
