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
//! severity_text / _number      → level: debug, info, warn, error, critical
//! body                         → message (a string as is, other values as JSON)
//! attributes                   → one top-level field each (renamed extra_dt... as the handler does)
//! code.* thread.* + scope name → context.runtime
//! process.pid, host.name       → context.system
//! exception.*                  → error {name, message, backtrace: [], stacktrace}
//! trace_id, span_id, flags     → context.trace
//! ```

use std::borrow::Cow;

use timber_core::otlp_proto::{any_value, AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord};
use timber_core::{extra_key, Frame, Json, Runtime, Sink, System, Trace};

use crate::body::{decompress, Batch, BodyError, Encoding};
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
pub(crate) trait Visit {
    /// A `ResourceLogs` begins; its records follow.
    fn resource(&mut self, attributes: &[KeyValue]);
    /// One record, under the last resource, in the scope named.
    fn record(&mut self, scope: Option<&str>, record: &LogRecord);
}

/// Decompresses and decodes an OTLP request, then maps its records to frames,
/// one batch per source in the order the sources first appear. Records are
/// decoded and written one at a time: the memory taken is the body and the
/// lines, not a tree of the request.
pub fn decode(
    format: OtlpFormat,
    encoding: Encoding,
    raw: &[u8],
    max_body: u64,
) -> Result<Vec<(String, Batch)>, BodyError> {
    let body = decompress(encoding, raw, max_body)?;
    let mut writer = Writer::default();
    match format {
        // Zero bytes are a valid, empty request in protobuf.
        OtlpFormat::Protobuf => crate::otlp_wire::walk(&body, &mut writer)
            .map_err(|e| BodyError::Invalid(format!("OTLP protobuf body: {e}")))?,
        OtlpFormat::Json => {
            crate::otlp_json::walk(&body, &mut writer).map_err(BodyError::Invalid)?
        }
    }
    Ok(writer.finish())
}

/// The frames of every record of `request`, grouped by source.
pub fn frames(request: &ExportLogsServiceRequest) -> Vec<(String, Batch)> {
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
#[derive(Default)]
struct Writer {
    out: Vec<(String, Batch)>,
    json: Json,
    resource: ResourceInfo,
    /// The batch of the current resource's source, in `out`.
    at: usize,
}

impl Visit for Writer {
    fn resource(&mut self, attributes: &[KeyValue]) {
        self.resource = ResourceInfo::of(attributes);
        let source = &self.resource.source;
        self.at = match self.out.iter().position(|(s, _)| s == source) {
            Some(i) => i,
            None => {
                self.out.push((source.clone(), Batch::default()));
                self.out.len() - 1
            }
        };
    }

    fn record(&mut self, scope: Option<&str>, record: &LogRecord) {
        if self.out.is_empty() {
            // A record before any resource (not possible from the
            // decoders, which announce each resource first).
            self.resource(&[]);
        }
        self.json.clear();
        write_frame(&mut self.json, &self.resource, scope, record);
        let batch = &mut self.out[self.at].1;
        batch.lines.extend_from_slice(&self.json.buf);
        batch.lines.push(b'\n');
        batch.frames += 1;
    }
}

impl Writer {
    fn finish(mut self) -> Vec<(String, Batch)> {
        self.out.retain(|(_, b)| b.frames > 0);
        self.out
    }
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

/// The frame's level: a known severity text first (the handler and the SDK
/// send the Python level name), else the severity number's range.
pub fn level(severity_text: &str, severity_number: i32) -> Cow<'_, str> {
    match severity_text.to_ascii_lowercase().as_str() {
        "trace" | "debug" => return "debug".into(),
        "info" | "information" => return "info".into(),
        "warn" | "warning" => return "warn".into(),
        "error" => return "error".into(),
        "critical" | "fatal" => return "critical".into(),
        _ => {}
    }
    match severity_number {
        1..=8 => "debug".into(),
        9..=12 => "info".into(),
        13..=16 => "warn".into(),
        17..=20 => "error".into(),
        21.. => "critical".into(),
        _ if !severity_text.is_empty() => severity_text.to_lowercase().into(),
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
    // The error goes before the context as the handler's frames have it:
    // written here as one more top-level entry, since it has a fourth key.
    frame.begin(json, kept.len() + usize::from(has_error), false);
    for kv in &kept {
        let key = extra_key(&kv.key, |k| kept.iter().any(|o| o.key == k));
        json.str(&key);
        write_any(json, kv.value.as_ref());
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
