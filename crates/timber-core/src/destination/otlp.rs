//! OpenTelemetry's OTLP/HTTP logs: `POST {endpoint}/v1/logs` with an
//! `ExportLogsServiceRequest`, in protobuf (default) or OTLP-JSON.
//!
//! Each event is encoded on the logging thread as one `ScopeLogs` (its
//! logger as the scope, one `LogRecord`), written as field 2 of a
//! `ResourceLogs`: the queue's concatenation of records is then a valid
//! `ResourceLogs` body, which the sender decodes, groups by scope and wraps
//! with the resource. The mapping follows the OpenTelemetry Python SDK's
//! `LoggingHandler`, so that dashboards built for it keep working; the
//! endpoint, headers, protocol, compression, timeout and resource come from
//! the standard `OTEL_*` variables as that SDK reads them.

use super::otlp_proto::{
    any_value, AnyValue, ArrayValue, ExportLogsServiceRequest, ExportLogsServiceResponse,
    InstrumentationScope, KeyValue, KeyValueList, LogRecord, Resource, ResourceLogs, ScopeLogs,
};
use super::{Answer, Verdict};
use crate::compress::Compression;
use crate::event::{hostname, Event, Policy, Time, UNSENT_EXTRAS};
use crate::redact::{is_redacted, Redacting, REDACTED};
use crate::retry::retry_after;
use crate::settings::{base_url, Endpoint, Raw, Settings, SettingsError};
use crate::value::{Builder, Value};
use prost::Message;
use std::time::{Duration, SystemTime};

/// Where an OpenTelemetry Collector listens by default.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
const LOGS_PATH: &str = "v1/logs";

/// The first of `LOGS` then the general variable that is set.
fn otel(env: &impl Fn(&str) -> Option<String>, what: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_LOGS_{what}"),
        format!("OTEL_EXPORTER_OTLP_{what}"),
    ]
    .into_iter()
    .find_map(|var| {
        env(&var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v.trim().to_owned()))
    })
}

/// A refusal of an `OTEL_*` variable; the header list (which holds the
/// credentials) is described by its length only, a URL without userinfo.
fn bad(var: &str, why: &str, value: &str) -> SettingsError {
    let value = if var.ends_with("_HEADERS") {
        crate::shown::secret_text(value)
    } else {
        format!("{:?}", crate::shown::url(value))
    };
    SettingsError(format!("{var} (from the environment) {why}, got {value}"))
}

/// The URL, headers, protocol and resource, from the options and the
/// `OTEL_*` variables; `timeout` and `compression` from those variables
/// too, unless given.
pub(super) fn endpoint(
    s: &mut Settings,
    given: &[&str],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, SettingsError> {
    let url = if let Some(host) = &s.host {
        format!("{host}/{LOGS_PATH}")
    } else if let Some((var, url)) = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        .filter(|v| !v.trim().is_empty())
        .map(|v| ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", v))
    {
        // Used as is, as the SDK does.
        base_url(&Raw::Env(url.clone())).map_err(|why| bad(var, &why, &url))?;
        url.trim().to_owned()
    } else if let Some(base) = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        let clean = base_url(&Raw::Env(base.clone()))
            .map_err(|why| bad("OTEL_EXPORTER_OTLP_ENDPOINT", &why, &base))?;
        format!("{clean}/{LOGS_PATH}")
    } else {
        format!("{DEFAULT_ENDPOINT}/{LOGS_PATH}")
    };
    let json = match otel(env, "PROTOCOL") {
        None => false,
        Some((_, p)) if p == "http/protobuf" => false,
        Some((_, p)) if p == "http/json" => true,
        Some((var, p)) => {
            return Err(bad(
                &var,
                "must be 'http/protobuf' or 'http/json' (gRPC is not supported)",
                &p,
            ))
        }
    };
    if !given.contains(&"compression") {
        if let Some((var, c)) = otel(env, "COMPRESSION") {
            s.compression = Compression::parse(&c.to_ascii_lowercase())
                .ok_or_else(|| bad(&var, "must be 'gzip', 'deflate' or 'none'", &c))?;
        }
    }
    if !given.contains(&"timeout") {
        if let Some((var, t)) = otel(env, "TIMEOUT") {
            // Seconds, as the Python SDK reads it.
            let low = crate::settings::MIN_SECONDS;
            let secs = t.parse::<f64>().ok().filter(|v| *v >= low && *v <= 3600.0);
            s.timeout = Duration::from_secs_f64(secs.ok_or_else(|| {
                bad(
                    &var,
                    &format!("must be a number of seconds from {low} up to 3600"),
                    &t,
                )
            })?);
        }
    }
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let mut headers = vec![("Content-Type".to_owned(), content_type.to_owned())];
    if let Some((var, list)) = otel(env, "HEADERS") {
        for (k, v) in pairs(&list) {
            if !header_name(&k) || v.chars().any(char::is_control) {
                return Err(bad(
                    &var,
                    "must be a list of key=value pairs, header names of letters, digits \
                     and !#$%&'*+-.^_`|~ only, values without control characters",
                    &list,
                ));
            }
            headers.push((k.to_ascii_lowercase(), v));
        }
    }
    if let Some(key) = &s.api_key {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        headers.push(("Authorization".to_owned(), format!("Bearer {key}")));
    }
    Ok(Endpoint {
        url,
        headers,
        json,
        resource: resource(s, env),
    })
}

/// The resource as the OpenTelemetry SDK makes it: `service.name` first
/// (the `service_name` option, which `OTEL_SERVICE_NAME` fills, else
/// `OTEL_RESOURCE_ATTRIBUTES`' own, else `unknown_service`), then every other
/// `OTEL_RESOURCE_ATTRIBUTES` pair in order. Shared by every destination
/// that names a resource (OTLP's `Resource`, ClickHouse's
/// `ResourceAttributes` and `ServiceName`).
pub(super) fn resource(
    s: &Settings,
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut resource: Vec<(String, String)> = env("OTEL_RESOURCE_ATTRIBUTES")
        .map(|list| pairs(&list))
        .unwrap_or_default();
    resource.retain(|(k, _)| !k.is_empty());
    let service = s
        .service_name
        .clone()
        .or_else(|| {
            resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "unknown_service".to_owned());
    resource.retain(|(k, _)| k != "service.name");
    resource.insert(0, ("service.name".to_owned(), service));
    resource
}

/// An HTTP header name: an RFC 9110 token.
fn header_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `k=v,k2=v2` with percent-encoded values, as the OTEL variables hold.
fn pairs(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            Some((k.trim().to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| {
            bytes
                .get(j)
                .and_then(|b| (*b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The OTLP side of a destination: the resource and the wire format.
#[derive(Debug, Clone)]
pub(super) struct Otlp {
    json: bool,
    resource: Vec<(String, String)>,
}

impl Otlp {
    pub(super) fn new(endpoint: &Endpoint) -> Self {
        Self {
            json: endpoint.json,
            resource: endpoint.resource.clone(),
        }
    }

    /// Encodes one event as a `ScopeLogs` field of a `ResourceLogs`;
    /// strings longer than `cut` bytes are cut and marked.
    pub(super) fn encode<E: Event>(
        &self,
        event: &E,
        context: &[(Box<str>, Value)],
        policy: &Policy,
        out: &mut Vec<u8>,
        cut: Option<usize>,
    ) {
        let record = log_record(event, context, policy, cut);
        let scope = ScopeLogs {
            scope: Some(InstrumentationScope {
                name: event.runtime().logger_name.unwrap_or_default().to_owned(),
                ..InstrumentationScope::default()
            }),
            log_records: vec![record],
            schema_url: String::new(),
        };
        prost::encoding::message::encode(2, &scope, out);
    }

    /// The request body for the encoded records of a batch.
    pub(super) fn body(&self, records: &[u8]) -> Vec<u8> {
        let decoded = ResourceLogs::decode(records).unwrap_or_default();
        // Grouped by scope, in the order scopes first appear.
        let mut scopes: Vec<ScopeLogs> = Vec::new();
        for mut one in decoded.scope_logs {
            let name = one.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            match scopes
                .iter_mut()
                .find(|s| s.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("") == name)
            {
                Some(group) => group.log_records.append(&mut one.log_records),
                None => scopes.push(one),
            }
        }
        let mut attributes: Vec<KeyValue> = self
            .resource
            .iter()
            .map(|(k, v)| kv(k, string(v.clone())))
            .collect();
        attributes.push(kv("host.name", string(hostname().to_owned())));
        attributes.push(kv("process.pid", int(i64::from(std::process::id()))));
        attributes.push(kv("telemetry.sdk.name", string("timber".into())));
        attributes.push(kv("telemetry.sdk.language", string("python".into())));
        attributes.push(kv(
            "telemetry.sdk.version",
            string(env!("CARGO_PKG_VERSION").into()),
        ));
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    dropped_attributes_count: 0,
                }),
                scope_logs: scopes,
                schema_url: String::new(),
            }],
        };
        if self.json {
            serde_json::to_vec(&super::otlp_json::request(&request)).unwrap_or_default()
        } else {
            request.encode_to_vec()
        }
    }
}

/// The event's own attributes as OpenTelemetry sends them: the extras sent
/// (as the frame would send them), then the custom context's entries, each
/// with `redact=` applied.
pub(super) fn user_attributes<E: Event>(
    event: &E,
    context: &[(Box<str>, Value)],
    policy: &Policy,
) -> Vec<(String, Value)> {
    let redacted = |name: &str, write: &dyn Fn(&mut Redacting<'_, Builder>)| {
        if is_redacted(&policy.redact, name) {
            return Value::Str(REDACTED.into());
        }
        let mut b = Redacting::new(Builder::new(), &policy.redact);
        write(&mut b);
        b.inner.finish().unwrap_or(Value::Nil)
    };
    let mut out = Vec::new();
    for i in 0..event.extra_count() {
        let name = event.extra_name(i);
        if UNSENT_EXTRAS.contains(&name)
            || !(policy.include_extra_attributes || event.extra_is_map(i))
        {
            continue;
        }
        let value = redacted(name, &|b| event.write_extra(i, name, b));
        out.push((name.to_owned(), value));
    }
    for (k, v) in context {
        if !matches!(&**k, "runtime" | "system") {
            out.push((k.to_string(), redacted(k, &|b| v.write(b))));
        }
    }
    out
}

/// `severity_text` as the SDK writes it: `WARN` for `WARNING`, `FATAL` for
/// `CRITICAL`, other level names as they are.
pub(super) fn severity_text(level: &str) -> &str {
    match level {
        "WARNING" => "WARN",
        "CRITICAL" => "FATAL",
        other => other,
    }
}

/// The SDK's table from Python's level numbers to severity numbers.
pub fn severity_number(levelno: i64) -> i32 {
    match levelno {
        i64::MIN..=9 => 0,
        10..=13 => (levelno - 5) as i32,
        14..=19 => 8,
        20..=23 => (levelno - 11) as i32,
        24..=29 => 12,
        30..=33 => (levelno - 17) as i32,
        34..=39 => 16,
        40..=43 => (levelno - 23) as i32,
        44..=49 => 20,
        50..=53 => (levelno - 29) as i32,
        _ => 24,
    }
}

fn log_record<E: Event>(
    event: &E,
    context: &[(Box<str>, Value)],
    policy: &Policy,
    cut: Option<usize>,
) -> LogRecord {
    let level = event.level();
    let levelno = event
        .level_number()
        .unwrap_or_else(|| crate::record::level_number(level));
    let (severity_text, severity_number) = event
        .severity()
        .unwrap_or_else(|| (severity_text(level), severity_number(levelno)));
    let text = |s: &str| string(cut_str(s, cut));
    let mut attributes: Vec<KeyValue> = user_attributes(event, context, policy)
        .into_iter()
        .map(|(k, v)| kv(&k, any(&v, cut)))
        .collect();
    let rt = event.runtime();
    if let Some(path) = event.file_path().or(rt.file) {
        attributes.push(kv("code.file.path", text(path)));
    }
    if let Some(f) = rt.function {
        attributes.push(kv("code.function.name", text(f)));
    }
    if let Some(line) = rt.line {
        attributes.push(kv("code.line.number", int(line)));
    }
    if let Some(id) = rt.thread_id {
        attributes.push(kv("thread.id", int(id as i64)));
    }
    if let Some(name) = rt.thread_name {
        attributes.push(kv("thread.name", text(name)));
    }
    if let Some(e) = event.error() {
        attributes.push(kv("exception.type", text(&e.name)));
        if let Some(m) = event.exception_message() {
            attributes.push(kv("exception.message", text(&m)));
        }
        if let Some(trace) = event.stacktrace() {
            attributes.push(kv("exception.stacktrace", text(&trace)));
        }
    }
    let trace = event.trace();
    LogRecord {
        time_unix_nano: event.time().nanos().max(0) as u64,
        observed_time_unix_nano: Time::Now.nanos().max(0) as u64,
        severity_number,
        severity_text: severity_text.to_owned(),
        body: Some(text(event.message())),
        attributes,
        dropped_attributes_count: 0,
        flags: trace.map_or(0, |t| u32::from(t.flags)),
        trace_id: trace.map_or_else(Vec::new, |t| t.trace_id.to_vec()),
        span_id: trace.map_or_else(Vec::new, |t| t.span_id.to_vec()),
        event_name: String::new(),
    }
}

/// `s`, cut and marked when longer than `cut` bytes.
pub(super) fn cut_str(s: &str, cut: Option<usize>) -> String {
    match cut {
        Some(max) => crate::encode::cut_string(s, max).into_owned(),
        None => s.to_owned(),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
    }
}

fn string(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

/// A value as an `AnyValue`: maps as key-value lists, as the SDK does.
fn any(v: &Value, cut: Option<usize>) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Nil => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Int(i) => Some(V::IntValue(*i)),
        // Above i64: the digits, as no OTLP integer holds it.
        Value::UInt(u) => Some(V::StringValue(u.to_string())),
        Value::Float(f) if f.is_finite() => Some(V::DoubleValue(*f)),
        Value::Float(f) if f.is_nan() => Some(V::StringValue("NaN".into())),
        Value::Float(f) => Some(V::StringValue(
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        )),
        Value::Str(s) => Some(V::StringValue(cut_str(s, cut))),
        Value::Array(items) => Some(V::ArrayValue(ArrayValue {
            values: items.iter().map(|i| any(i, cut)).collect(),
        })),
        Value::Map(entries) => Some(V::KvlistValue(KeyValueList {
            values: entries.iter().map(|(k, v)| kv(k, any(v, cut))).collect(),
        })),
    };
    AnyValue { value }
}

/// Retried: 429, 502, 503, 504 (honouring `Retry-After`); delivered: 2xx,
/// with the records a `partial_success` names counted as rejected; every
/// other answer refused, never retried (400 and 500 included), as the
/// specification requires.
pub(super) fn classify(a: &Answer, now: SystemTime) -> Verdict {
    match a.status {
        200..=299 => match partial(&a.body) {
            Some((n, why)) if n > 0 => Verdict::Partial {
                rejected: n,
                why: format!(
                    "the endpoint rejected {n} records: {}",
                    crate::shown::printable(&why, super::timber::SNIPPET_CHARS)
                ),
            },
            _ => Verdict::Delivered,
        },
        429 | 502 | 503 | 504 => {
            Verdict::Retry(a.retry_after.as_deref().and_then(|h| retry_after(h, now)))
        }
        s => Verdict::Reject(format!("HTTP {s}{}", super::timber::snippet(&a.body))),
    }
}

/// The `partial_success` of a response, in protobuf or JSON.
fn partial(body: &[u8]) -> Option<(u64, String)> {
    if body.is_empty() {
        return None;
    }
    if let Ok(r) = ExportLogsServiceResponse::decode(body) {
        if let Some(p) = r.partial_success {
            return Some((p.rejected_log_records.max(0) as u64, p.error_message));
        }
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let p = json.get("partialSuccess")?;
    let n = match p.get("rejectedLogRecords")? {
        serde_json::Value::String(s) => s.parse().ok()?,
        n => n.as_u64()?,
    };
    let why = p
        .get("errorMessage")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_owned();
    Some((n, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_numbers_follow_the_sdk() {
        for (levelno, expected) in [
            (0, 0),
            (5, 0),
            (10, 5),
            (11, 6),
            (13, 8),
            (15, 8),
            (20, 9),
            (23, 12),
            (25, 12),
            (30, 13),
            (33, 16),
            (40, 17),
            (45, 20),
            (50, 21),
            (53, 24),
            (99, 24),
        ] {
            assert_eq!(severity_number(levelno), expected, "{levelno}");
        }
    }

    #[test]
    fn retries_only_what_the_specification_says() {
        let now = SystemTime::now();
        let a = |status| Answer {
            status,
            ..Answer::default()
        };
        for s in [429, 502, 503, 504] {
            assert_eq!(classify(&a(s), now), Verdict::Retry(None), "{s}");
        }
        for s in [400, 401, 404, 413, 500, 501] {
            assert!(matches!(classify(&a(s), now), Verdict::Reject(_)), "{s}");
        }
        assert_eq!(classify(&a(200), now), Verdict::Delivered);
    }

    #[test]
    fn partial_success_in_either_encoding() {
        let now = SystemTime::now();
        let proto = ExportLogsServiceResponse {
            partial_success: Some(super::super::otlp_proto::ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let ok = |body: Vec<u8>| Answer {
            status: 200,
            body,
            ..Answer::default()
        };
        assert_eq!(
            classify(&ok(proto), now),
            Verdict::Partial {
                rejected: 3,
                why: "the endpoint rejected 3 records: too old".into()
            }
        );
        let json = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#;
        assert!(matches!(
            classify(&ok(json.to_vec()), now),
            Verdict::Partial { rejected: 2, .. }
        ));
        assert_eq!(classify(&ok(b"{}".to_vec()), now), Verdict::Delivered);
        assert_eq!(classify(&ok(Vec::new()), now), Verdict::Delivered);
    }

    #[test]
    fn environment_as_the_sdk_reads_it() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let mut s = Settings {
            destination: super::super::Kind::Otlp,
            ..Settings::default()
        };
        let e = endpoint(
            &mut s,
            &[],
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,X-Tenant=t1"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2.5"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=from-attrs,deployment.environment=prod",
                ),
                ("OTEL_SERVICE_NAME", "ignored-here-the-option-reads-it"),
            ]),
        )
        .unwrap();
        assert_eq!(e.url, "http://collector:4318/v1/logs");
        assert!(e.json);
        assert!(e.headers.contains(&("api-key".into(), "a b".into())));
        assert!(e.headers.contains(&("x-tenant".into(), "t1".into())));
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(e.resource[0], ("service.name".into(), "from-attrs".into()));
        let e = endpoint(
            &mut s,
            &[],
            &vars(&[(
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "https://x.example/custom/path",
            )]),
        )
        .unwrap();
        assert_eq!(e.url, "https://x.example/custom/path");
        assert!(!e.json);
        let err = endpoint(
            &mut s,
            &[],
            &vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        )
        .unwrap_err();
        assert!(err
            .0
            .starts_with("OTEL_EXPORTER_OTLP_PROTOCOL (from the environment) must be"));
    }
}
