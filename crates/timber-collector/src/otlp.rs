//! `POST /v1/logs`: OTLP/HTTP logs, in protobuf or OTLP-JSON, turned into
//! the frames timber's handler sends to Timber, so that `timber tail` and
//! every reader of `<out>/<source>.ndjson` see one shape whoever sent them.
//!
//! The mapping is the reverse of the handler's OTLP destination
//! (`timber_core`'s `destination/otlp.rs`), which follows the OpenTelemetry
//! Python SDK:
//!
//! ```text
//! resource service.name        → the source id (the file), else `otlp`
//! time_unix_nano (else observed) → dt, to the nearest microsecond
//! severity_text / _number      → level: debug, info, warn, error, critical, or a custom level's name
//! body                         → message (a string as is, other values as JSON)
//! attributes                   → one top-level field each (renamed extra_dt... as the handler does)
//! code.* thread.* + scope name → context.runtime
//! process.pid, host.name       → context.system
//! exception.*                  → error {name, message, backtrace: [], stacktrace}
//! trace_id, span_id, flags     → context.trace
//! ```
//!
//! A gateway also gets each record's [`Origin`] and its [`Resource`] as
//! sent, which a frame cannot hold: its row keeps them.

use std::borrow::Cow;
use std::collections::HashMap;

use prost::Message;
use timber_core::otlp_proto::{any_value, AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord};
use timber_core::{reserved_index, ExtraKeys, Frame, Json, Runtime, Sink, System, Trace};

use crate::body::{decompress, Batch, BodyError, Encoding};
use crate::budget::{Allowance, Room};
pub use crate::otlp_origin::{Decoded, Origin, Resource};
use crate::store::{valid_source_id, MAX_SOURCE_ID_LEN};

/// The source of records whose resource has no usable `service.name`.
pub const DEFAULT_SOURCE: &str = "otlp";

/// How an OTLP body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpFormat {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP-JSON).
    Json,
}

impl OtlpFormat {
    /// Reads a `Content-Type` header value; parameters are ignored.
    pub fn parse(content_type: Option<&str>) -> Result<Self, BodyError> {
        let value = content_type.unwrap_or("");
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf")
            || media.eq_ignore_ascii_case("application/protobuf")
        {
            Ok(OtlpFormat::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Ok(OtlpFormat::Json)
        } else {
            Err(BodyError::UnsupportedType(format!(
                "{value} (OTLP: use application/x-protobuf or application/json)"
            )))
        }
    }

    /// The `Content-Type` of the answer: the request's own, as OTLP requires.
    pub fn content_type(self) -> &'static str {
        match self {
            OtlpFormat::Protobuf => "application/x-protobuf",
            OtlpFormat::Json => "application/json",
        }
    }

    /// An empty `ExportLogsServiceResponse`: everything was accepted.
    pub fn success_body(self) -> &'static [u8] {
        match self {
            // An empty message encodes as zero bytes.
            OtlpFormat::Protobuf => b"",
            OtlpFormat::Json => b"{}",
        }
    }

    /// Working memory of decoding a body: the decompressed body and the
    /// frames written from it (records are decoded one at a time). Frames
    /// take about 3 times a protobuf body and 0.75 times an OTLP-JSON one
    /// (measured: 2 MiB of protobuf made 6 MiB of frames, 10 MiB more at
    /// peak with the body; 8 MiB of JSON, 6 MiB and 16 MiB).
    pub fn decode_estimate(self, encoding: Encoding, raw: u64, max_body: u64) -> u64 {
        let plain = if encoding == Encoding::Identity {
            raw.min(max_body)
        } else {
            max_body
        };
        let decompressed = if encoding == Encoding::Identity {
            0
        } else {
            plain
        };
        let frames = match self {
            OtlpFormat::Protobuf => plain.saturating_mul(4),
            OtlpFormat::Json => plain.saturating_mul(2),
        };
        decompressed.saturating_add(frames)
    }
}

/// What the decoders hand over, record by record, so that a request is
/// never held decoded whole: each resource, then the records under it.
/// Before decoding a piece as a tree they ask for the memory it may take;
/// a `false` stops the walk.
pub(crate) trait Visit {
    /// Whether a resource or scope of `len` encoded bytes may be decoded.
    fn room_for_tree(&mut self, _len: usize) -> bool {
        true
    }
    /// Whether a record of `len` encoded bytes may be decoded and its frame
    /// written, in the scope named.
    fn room_for_record(&mut self, _scope: Option<&str>, _len: usize) -> bool {
        true
    }
    /// A `ResourceLogs` begins; its records follow.
    fn resource(&mut self, attributes: &[KeyValue]);
    /// One record, under the last resource, in the scope named.
    fn record(&mut self, scope: Option<&str>, record: &LogRecord);
}

/// Bytes a decoded tree (prost's messages, serde_json's values) may take per
/// byte of its encoding: an empty attribute is 2 bytes on the wire and a
/// 56-byte `KeyValue` in a vector that may have twice the room it uses,
/// plus the reference the frame writer keeps (measured: 9.8 MB of empty
/// attributes took about 350 MB).
const TREE_PER_BYTE: u64 = 64;
/// Most a frame adds to what its record holds: the frame's own keys, the
/// time, the level, the context's names.
const FRAME_FIXED: u64 = 512;
/// Most a frame takes per byte of its record: JSON escapes a control
/// character as `\u00XX`, a body that is not a string is escaped twice, and
/// each of the five renamed frame-field names may be as long as the record.
const FRAME_PER_BYTE: u64 = 12;

/// Decompresses and decodes an OTLP request, then maps its records to frames,
/// one batch per source in the order the sources first appear. Records are
/// decoded and written one at a time: the memory taken is the body and the
/// lines, not a tree of the request.
pub fn decode(
    format: OtlpFormat,
    encoding: Encoding,
    raw: &[u8],
    max_body: u64,
) -> Result<Decoded, BodyError> {
    let body = decompress(encoding, raw, max_body)?;
    walk(format, &body, Writer::default())
}

/// [`decode`], within the memory `allowance` holds, which it grows as the
/// records need: every piece is checked before it is decoded or written,
/// so the memory taken never passes what is held. A body that would need
/// more than the whole pool is refused (413), one that needs more than is
/// free now too (503).
pub fn decode_within(
    format: OtlpFormat,
    encoding: Encoding,
    raw: &[u8],
    max_body: u64,
    allowance: &mut Allowance,
) -> Result<Decoded, BodyError> {
    let body = decompress(encoding, raw, max_body)?;
    let plain = body.len() as u64;
    let fixed = if encoding == Encoding::Identity {
        0
    } else {
        plain
    };
    let mut writer = Writer {
        room: Room::within(allowance, fixed),
        ..Writer::default()
    };
    if !writer.room(0) {
        return Err(writer.refusal());
    }
    walk(format, &body, writer)
}

fn walk(format: OtlpFormat, body: &[u8], mut writer: Writer<'_>) -> Result<Decoded, BodyError> {
    let walked = match format {
        // Zero bytes are a valid, empty request in protobuf.
        OtlpFormat::Protobuf => crate::otlp_wire::walk(body, &mut writer)
            .map_err(|e| BodyError::Invalid(format!("OTLP protobuf body: {e}"))),
        OtlpFormat::Json => crate::otlp_json::walk(body, &mut writer).map_err(BodyError::Invalid),
    };
    if writer.refused.is_some() {
        return Err(writer.refusal());
    }
    walked?;
    Ok(writer.finish())
}

/// The frames of every record of `request`, grouped by source.
pub fn frames(request: &ExportLogsServiceRequest) -> Decoded {
    let mut writer = Writer::default();
    for rl in &request.resource_logs {
        writer.resource(rl.resource.as_ref().map_or(&[], |r| &r.attributes));
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().map(|s| s.name.as_str());
            for record in &sl.log_records {
                writer.record(scope, record);
            }
        }
    }
    writer.finish()
}

/// Frames being written, one batch per source.
struct Writer<'a> {
    out: Decoded,
    json: Json,
    resource: ResourceInfo,
    /// The batch of the current resource's source, in `out`.
    at: usize,
    /// The memory the writing may take, and why it stopped if it did.
    room: Room<'a>,
    refused: Option<BodyError>,
    /// The encoded size of the current resource's attributes: what of it a
    /// frame repeats is at most as costly as the attributes themselves.
    resource_len: u64,
    /// What is kept beside the frames (each record's origin, each
    /// resource's attributes as text), in bytes.
    beside: u64,
    /// Where each source's batch is in `out`, so that a request of many
    /// resources costs no scan per resource.
    index: HashMap<String, usize>,
}

impl Default for Writer<'_> {
    fn default() -> Self {
        Self {
            out: Decoded::default(),
            json: Json::default(),
            resource: ResourceInfo::default(),
            at: 0,
            room: Room::unbounded(),
            refused: None,
            resource_len: 0,
            beside: 0,
            index: HashMap::new(),
        }
    }
}

impl Writer<'_> {
    /// Whether the room covers what is held now plus `next` bytes, growing
    /// it if the pool has room; on failure the refusal is kept.
    fn room(&mut self, next: u64) -> bool {
        let lines: u64 = self
            .out
            .batches
            .iter()
            .map(|(_, b)| b.lines.capacity() as u64)
            .sum();
        let held = lines + self.json.buf.capacity() as u64 + self.beside;
        match self.room.ensure(held.saturating_add(next)) {
            Ok(()) => true,
            Err(e) => {
                self.refused = Some(e.into());
                false
            }
        }
    }

    fn refusal(&mut self) -> BodyError {
        self.refused.take().unwrap_or(BodyError::Busy)
    }
}

impl Visit for Writer<'_> {
    fn room_for_tree(&mut self, len: usize) -> bool {
        self.room(TREE_PER_BYTE.saturating_mul(len as u64))
    }

    fn room_for_record(&mut self, scope: Option<&str>, len: usize) -> bool {
        if !self.room.is_bounded() {
            return true;
        }
        // Every frame repeats the scope name and what it takes from the
        // resource (the host name): a long one times many records is the
        // costliest body of all.
        let repeated = scope.map_or(0, str::len) as u64 + self.resource_len;
        let frame = FRAME_FIXED
            .saturating_add(FRAME_PER_BYTE.saturating_mul(len as u64))
            .saturating_add(FRAME_PER_BYTE.saturating_mul(repeated));
        // The batch may have to grow for this frame: the old and the new
        // room are both held while it moves.
        let grow = self.out.batches.get(self.at).map_or(0, |(_, b)| {
            let (used, room) = (b.lines.len() as u64, b.lines.capacity() as u64);
            if used.saturating_add(frame) > room {
                (2 * room).max(used.saturating_add(frame))
            } else {
                0
            }
        });
        // The scratch frame (and its growth), a body written as JSON text
        // first, and the record's tree.
        let scratch = (3 * frame).saturating_sub(self.json.buf.capacity() as u64) + 2 * frame;
        let tree = TREE_PER_BYTE.saturating_mul(len as u64);
        self.room(grow.saturating_add(scratch).saturating_add(tree))
    }

    fn resource(&mut self, attributes: &[KeyValue]) {
        self.resource_len = attributes.iter().map(Message::encoded_len).sum::<usize>() as u64;
        self.resource = ResourceInfo::of(attributes);
        let kept = Resource {
            service: find(attributes, &["service.name"])
                .and_then(as_str)
                .map(str::to_owned),
            attributes: attributes
                .iter()
                .filter(|kv| !kv.key.is_empty())
                .map(|kv| (kv.key.clone(), as_text(kv.value.as_ref())))
                .collect(),
        };
        self.beside += (size_of::<Resource>()
            + kept.service.as_ref().map_or(0, String::len)
            + kept
                .attributes
                .iter()
                .map(|(k, v)| size_of::<(String, String)>() + k.len() + v.len())
                .sum::<usize>()) as u64;
        self.out.resources.push(kept);
        let source = &self.resource.source;
        let out = &mut self.out;
        self.at = match self.index.get(source) {
            Some(&i) => i,
            None => {
                out.batches.push((source.clone(), Batch::default()));
                out.origins.push(Vec::new());
                self.index.insert(source.clone(), out.batches.len() - 1);
                out.batches.len() - 1
            }
        };
    }

    fn record(&mut self, scope: Option<&str>, record: &LogRecord) {
        if self.out.batches.is_empty() {
            // A record before any resource (not possible from the
            // decoders, which announce each resource first).
            self.resource(&[]);
        }
        self.json.clear();
        write_frame(&mut self.json, &self.resource, scope, record);
        let batch = &mut self.out.batches[self.at].1;
        batch.lines.extend_from_slice(&self.json.buf);
        batch.lines.push(b'\n');
        batch.frames += 1;
        self.beside += (size_of::<Origin>() + record.severity_text.len()) as u64;
        self.out.origins[self.at].push(Origin {
            severity_text: record.severity_text.clone(),
            severity_number: record.severity_number,
            resource: self.out.resources.len() - 1,
        });
    }
}

impl Writer<'_> {
    fn finish(mut self) -> Decoded {
        let out = &mut self.out;
        let mut origins = std::mem::take(&mut out.origins).into_iter();
        out.batches.retain(|(_, b)| {
            let o = origins.next();
            if b.frames > 0 {
                out.origins.extend(o);
            }
            b.frames > 0
        });
        self.out
    }
}

/// An attribute's value as the text a `Map(String, String)` column holds:
/// strings as they are, anything else as its JSON.
fn as_text(v: Option<&AnyValue>) -> String {
    if let Some(any_value::Value::StringValue(s)) = v.and_then(|v| v.value.as_ref()) {
        return s.clone();
    }
    let mut j = Json::new();
    write_any(&mut j, v);
    String::from_utf8(j.buf).unwrap_or_default()
}

/// What a frame takes from the resource.
#[derive(Default)]
struct ResourceInfo {
    source: String,
    pid: Option<i64>,
    hostname: Option<String>,
}

impl ResourceInfo {
    fn of(attrs: &[KeyValue]) -> Self {
        Self {
            source: source_id(find(attrs, &["service.name"]).and_then(as_str)),
            pid: find(attrs, &["process.pid"]).and_then(as_int),
            hostname: find(attrs, &["host.name"])
                .and_then(as_str)
                .map(str::to_owned),
        }
    }
}

/// `service.name` made into a source id: every character outside
/// `A-Z a-z 0-9 _ . -` becomes `_`, cut to the longest id allowed.
pub fn source_id(service_name: Option<&str>) -> String {
    let Some(name) = service_name else {
        return DEFAULT_SOURCE.to_owned();
    };
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_SOURCE_ID_LEN)
        .collect();
    if valid_source_id(&id) {
        id
    } else {
        DEFAULT_SOURCE.to_owned()
    }
}

/// The value of the first of `keys` present.
fn find<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<&'a any_value::Value> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .find(|kv| kv.key == *k)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    })
}

fn as_str(v: &any_value::Value) -> Option<&str> {
    match v {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// An integer, or a string of digits (some SDKs send ids as strings).
fn as_int(v: &any_value::Value) -> Option<i64> {
    match v {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Attributes the frame holds elsewhere (`context.runtime`, `error`), by the
/// OpenTelemetry semantic conventions, old names included.
fn is_semantic(key: &str) -> bool {
    key.starts_with("code.") || key.starts_with("thread.") || key.starts_with("exception.")
}

/// The frame's level: the severity text as the handler's frame names that
/// level (the handler and the SDK send the Python level name: `WARN` is
/// `warn`, `FATAL` `critical`, a custom level such as `NOTICE` or `TRACE`
/// its own name in lower case), else the severity number's range.
pub fn level(severity_text: &str, severity_number: i32) -> Cow<'_, str> {
    match severity_text.to_ascii_lowercase().as_str() {
        "" => {}
        "information" => return "info".into(),
        "warning" => return "warn".into(),
        "fatal" => return "critical".into(),
        _ => return severity_text.to_lowercase().into(),
    }
    match severity_number {
        1..=8 => "debug".into(),
        9..=12 => "info".into(),
        13..=16 => "warn".into(),
        17..=20 => "error".into(),
        21.. => "critical".into(),
        _ => "info".into(),
    }
}

/// The frame's `severity` (Python's level number over ten) of a record:
/// the inverse of the SDK's table from level numbers to severity numbers
/// (5 to 8 are 10 to 19, 9 to 12 are 20 to 29, ...; 1 to 4, below debug,
/// are 0), else from the level's name.
fn severity(severity_number: i32, level: &str) -> i64 {
    match severity_number {
        1..=24 => i64::from(severity_number - 1) / 4,
        _ => timber_core::level_number(level) / 10,
    }
}

/// The trace context, when the ids are of the right length and not all zero
/// (the specification's invalid ids).
fn trace(record: &LogRecord) -> Option<Trace> {
    let trace_id: [u8; 16] = record.trace_id.as_slice().try_into().ok()?;
    let span_id: [u8; 8] = record.span_id.as_slice().try_into().ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Trace {
        trace_id,
        span_id,
        flags: (record.flags & 0xff) as u8,
    })
}

fn write_frame(json: &mut Json, resource: &ResourceInfo, scope: Option<&str>, r: &LogRecord) {
    let attrs = &r.attributes;
    let nanos = if r.time_unix_nano != 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    let dt_micros = if nanos == 0 {
        // Neither time set: when the collector received it.
        timber_core::Time::Now.micros()
    } else {
        // To the nearest microsecond: the SDK's nanoseconds come from a float
        // (`int(created * 1e9)`), and the handler's frames round that float
        // to the nearest microsecond, as Python's datetime does.
        (nanos.saturating_add(500) / 1000) as i64
    };
    let message: Cow<'_, str> = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        None => "".into(),
        Some(any_value::Value::StringValue(s)) => s.as_str().into(),
        Some(_) => {
            let mut j = Json::new();
            write_any(&mut j, r.body.as_ref());
            String::from_utf8(j.buf).unwrap_or_default().into()
        }
    };
    let level = level(&r.severity_text, r.severity_number);
    let text = |keys: &[&str]| find(attrs, keys).and_then(as_str);
    let error_name = text(&["exception.type"]);
    let error_message = text(&["exception.message"]);
    let stacktrace = text(&["exception.stacktrace"]);
    let has_error = error_name.is_some() || error_message.is_some();
    let frame = Frame {
        dt_micros,
        level: &level,
        severity: Some(severity(r.severity_number, &level)),
        message: &message,
        runtime: Runtime {
            function: text(&["code.function.name", "code.function"]),
            file: text(&["code.file.path", "code.filepath"]),
            line: find(attrs, &["code.line.number", "code.lineno"]).and_then(as_int),
            thread_id: find(attrs, &["thread.id"])
                .and_then(as_int)
                .and_then(|i| u64::try_from(i).ok()),
            thread_name: text(&["thread.name"]),
            logger_name: scope.filter(|s| !s.is_empty()),
        },
        system: System {
            pid: resource.pid,
            process_name: None,
            hostname: resource.hostname.as_deref(),
        },
        trace: trace(r),
    };
    let kept: Vec<&KeyValue> = attrs.iter().filter(|kv| !is_semantic(&kv.key)).collect();
    // Every attribute named like a frame field becomes the same key: only the
    // last of each is written (what a JSON reader keeps of repeated keys), so
    // that a long renamed key is not written once per repetition.
    let mut last = [None; timber_core::RESERVED_KEYS.len()];
    for (i, kv) in kept.iter().enumerate() {
        if let Some(r) = reserved_index(&kv.key) {
            last[r] = Some(i);
        }
    }
    let written =
        |i: usize, kv: &KeyValue| reserved_index(&kv.key).is_none_or(|r| last[r] == Some(i));
    let keys = ExtraKeys::new(kept.iter().map(|kv| kv.key.as_str()));
    let count = kept
        .iter()
        .enumerate()
        .filter(|(i, kv)| written(*i, kv))
        .count();
    // The error goes before the context as the handler's frames have it:
    // written here as one more top-level entry, since it has a fourth key.
    frame.begin(json, count + usize::from(has_error), false);
    for (i, kv) in kept.iter().enumerate() {
        if written(i, kv) {
            json.str(&keys.key(&kv.key));
            write_any(json, kv.value.as_ref());
        }
    }
    if has_error {
        json.str("error");
        json.map(3 + usize::from(stacktrace.is_some()));
        json.str("name");
        json.str(error_name.unwrap_or(""));
        json.str("message");
        json.str(error_message.unwrap_or(""));
        json.str("backtrace");
        json.array(0);
        if let Some(s) = stacktrace {
            json.str("stacktrace");
            json.str(s);
        }
    }
    frame.end(json, None, &[]);
}

/// An `AnyValue` as JSON: kvlists as objects, arrays as lists, bytes in base64.
fn write_any<S: Sink>(sink: &mut S, v: Option<&AnyValue>) {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => sink.nil(),
        Some(V::StringValue(s)) => sink.str(s),
        Some(V::BoolValue(b)) => sink.bool(*b),
        Some(V::IntValue(i)) => sink.int(*i),
        Some(V::DoubleValue(d)) => sink.float(*d),
        Some(V::BytesValue(b)) => sink.str(&base64(b)),
        Some(V::ArrayValue(a)) => {
            sink.array(a.values.len());
            for item in &a.values {
                write_any(sink, Some(item));
            }
        }
        Some(V::KvlistValue(l)) => {
            sink.map(l.values.len());
            for kv in &l.values {
                sink.str(&kv.key);
                write_any(sink, kv.value.as_ref());
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
