//! One event as one `JSONEachRow` line of the OpenTelemetry `otel_logs`
//! table (the OpenTelemetry Collector ClickHouse exporter's layout), so that
//! what reads that table (Grafana's ClickHouse plugin, ClickStack) finds our
//! rows beside any OTel pipeline's. SigNoz keeps a schema of its own.
//!
//! Every attribute map is `Map(String, String)` there: nested extras are
//! flattened into dotted keys (`order.id`), and values that are not strings
//! are written as their JSON text (`42`, `true`, `["a"]`). A server without
//! `Map` (before 22.3) holds them as `Nested(key, value)`, whose JSON is two
//! arrays, `LogAttributes.key` and `LogAttributes.value`: rows are sent
//! that way to a table the destination has learnt holds them so.
//!
//! A time no ClickHouse time column holds (`DateTime` runs from 1970 to
//! 2106; outside it `DateTime64(9)` refuses the insert or `otel_logs`'
//! `TimestampTime` wraps around) is replaced by the time the row is made,
//! and the record's own kept as the attribute `timber.original_time`:
//! one bad clock must not sink the rows sharing its insert.

use super::otlp::cut_str;
use super::otlp::severity_number;
use crate::encode::Json;
use crate::event::{hostname, Event, Policy};
use crate::value::Value;
use serde_json::{Map, Value as J};

/// What every row of a handler shares.
#[derive(Debug, Clone)]
pub(super) struct RowContext {
    /// `ServiceName`.
    pub(super) service: String,
    /// `ResourceAttributes` beyond `service.name`, `host.name` and
    /// `process.pid`: the other `OTEL_RESOURCE_ATTRIBUTES` pairs.
    pub(super) resource: Vec<(String, String)>,
}

impl RowContext {
    /// Takes the service and the resource from the destination's resource
    /// (`service.name` first, as [`super::otlp::resource`] makes it).
    pub(super) fn set_resource(&mut self, resource: &[(String, String)]) {
        if let Some((_, name)) = resource.iter().find(|(k, _)| k == "service.name") {
            self.service.clone_from(name);
        }
        self.resource = resource
            .iter()
            .filter(|(k, _)| k != "service.name")
            .cloned()
            .collect();
    }
}

/// The columns a row names, in the order written.
pub(super) const ROW_COLUMNS: [&str; 11] = [
    "Timestamp",
    "TraceId",
    "SpanId",
    "TraceFlags",
    "SeverityText",
    "SeverityNumber",
    "ServiceName",
    "Body",
    "ResourceAttributes",
    "ScopeName",
    "LogAttributes",
];

/// The first and last second every ClickHouse time column holds: those of
/// `DateTime` (seconds since 1970 in 32 bits, 2106-02-07 06:28:15).
const TIME_RANGE: (i64, i64) = (0, u32::MAX as i64);

/// The attribute holding a record's own time when it was replaced.
pub(super) const ORIGINAL_TIME: &str = "timber.original_time";

/// Appends the row of `event` to `out`, ending with `\n`; strings longer
/// than `cut` bytes are cut and marked. Returns the record's own time, as
/// text, if it was replaced (see the module's header).
pub(super) fn encode<E: Event>(
    row: &RowContext,
    event: &E,
    context: &[(Box<str>, Value)],
    policy: &Policy,
    out: &mut Vec<u8>,
    cut: Option<usize>,
) -> Option<String> {
    let level = event.level();
    let levelno = event.level_number().unwrap_or(match level {
        "DEBUG" => 10,
        "INFO" => 20,
        "WARNING" | "WARN" => 30,
        "ERROR" => 40,
        "CRITICAL" | "FATAL" => 50,
        _ => 0,
    });
    let (severity_text, number) = event
        .severity()
        .unwrap_or_else(|| (super::otlp::severity_text(level), severity_number(levelno)));
    let mut attrs = Vec::new();
    for (k, v) in super::otlp::user_attributes(event, context, policy) {
        flatten(&k, &v, cut, &mut attrs);
    }
    let (nanos, retimed) = held_time(event.time());
    if let Some(original) = &retimed {
        attrs.push((ORIGINAL_TIME.to_owned(), original.clone()));
    }
    let rt = event.runtime();
    let mut put = |k: &str, v: String| attrs.push((k.to_owned(), cut_str(&v, cut)));
    if let Some(path) = event.file_path().or(rt.file) {
        put("code.file.path", path.to_owned());
    }
    if let Some(f) = rt.function {
        put("code.function.name", f.to_owned());
    }
    if let Some(line) = rt.line {
        put("code.line.number", line.to_string());
    }
    if let Some(id) = rt.thread_id {
        put("thread.id", id.to_string());
    }
    if let Some(name) = rt.thread_name {
        put("thread.name", name.to_owned());
    }
    if let Some(e) = event.error() {
        put("exception.type", e.name.clone());
        if let Some(m) = event.exception_message() {
            put("exception.message", m);
        }
        if let Some(trace) = event.stacktrace() {
            put("exception.stacktrace", trace);
        }
    }
    let service = event.service_name().unwrap_or(&row.service);
    let system = event.system();
    let pid = system
        .pid
        .unwrap_or_else(|| i64::from(std::process::id()))
        .to_string();
    let host = system.hostname.unwrap_or_else(|| hostname());
    let trace = event.trace();
    // Written as it goes, column by column (JSONEachRow reads them by name).
    let o = &mut *out;
    o.extend_from_slice(b"{\"Timestamp\":");
    string(o, &timestamp(nanos));
    o.extend_from_slice(b",\"TraceId\":\"");
    if let Some(t) = trace {
        hex(o, &t.trace_id);
    }
    o.extend_from_slice(b"\",\"SpanId\":\"");
    if let Some(t) = trace {
        hex(o, &t.span_id);
    }
    let flags = trace.map_or(0, |t| t.flags);
    o.extend_from_slice(format!("\",\"TraceFlags\":{flags},\"SeverityText\":").as_bytes());
    string(o, severity_text);
    o.extend_from_slice(format!(",\"SeverityNumber\":{number},\"ServiceName\":").as_bytes());
    string(o, service);
    o.extend_from_slice(b",\"Body\":");
    string(o, &cut_str(event.message(), cut));
    o.extend_from_slice(b",\"ResourceAttributes\":");
    // The event's own resource (an OTLP request's) as it was sent; else
    // the destination's, with the process that logged and the service over
    // any of the same name.
    let mut resource: Vec<(&str, &str)> = match event.resource() {
        Some(own) => own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        None => row
            .resource
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([
                ("host.name", host),
                ("process.pid", pid.as_str()),
                ("service.name", service),
            ])
            .collect(),
    };
    resource.sort_by(|a, b| a.0.cmp(b.0));
    map(o, &last_of_each(&resource));
    o.extend_from_slice(b",\"ScopeName\":");
    string(o, rt.logger_name.unwrap_or_default());
    o.extend_from_slice(b",\"LogAttributes\":");
    // One value per key, the last given (an attribute of ours over a user's
    // of the same name), in key order.
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    let pairs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    map(o, &last_of_each(&pairs));
    o.extend_from_slice(b"}\n");
    retimed
}

/// Pairs sorted by key (stably), one per key: the last given.
fn last_of_each<'a>(sorted: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut kept: Vec<(&str, &str)> = Vec::with_capacity(sorted.len());
    for &(k, v) in sorted {
        match kept.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => kept.push((k, v)),
        }
    }
    kept
}

/// The nanoseconds written for `time`, and its own text if it is outside
/// [`TIME_RANGE`] and so replaced by now.
fn held_time(time: crate::event::Time) -> (i64, Option<String>) {
    let micros = time.micros();
    let seconds = micros.div_euclid(1_000_000);
    if (TIME_RANGE.0..=TIME_RANGE.1).contains(&seconds) {
        return (time.nanos(), None);
    }
    let original = jiff::Timestamp::from_microsecond(micros)
        .map_or_else(|_| format!("{micros} µs since 1970"), |t| t.to_string());
    (crate::event::Time::Now.nanos(), Some(original))
}

/// A JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// A JSON object of strings.
fn map(out: &mut Vec<u8>, entries: &[(&str, &str)]) {
    out.push(b'{');
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.push(b'}');
}

/// The map columns of a row.
pub(super) const MAP_COLUMNS: [&str; 2] = ["ResourceAttributes", "LogAttributes"];

/// The rows (`JSONEachRow` lines, as [`encode`] writes them) for a table
/// without `Map`: each map column of `nested` as `Nested(key, value)`,
/// whose JSON is two arrays, `LogAttributes.key` and `LogAttributes.value`.
/// Done when a batch is sent, so that rows encoded before the table was
/// known are sent in the layout it holds.
pub(super) fn as_nested(rows: &[u8], nested: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() + rows.len() / 8);
    for line in rows.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(mut row) = serde_json::from_slice::<Map<String, J>>(line) else {
            out.extend_from_slice(line);
            out.push(b'\n');
            continue;
        };
        for &name in nested {
            if let Some(J::Object(map)) = row.remove(name) {
                let (keys, values): (Vec<J>, Vec<J>) =
                    map.into_iter().map(|(k, v)| (J::String(k), v)).unzip();
                row.insert(format!("{name}.key"), J::Array(keys));
                row.insert(format!("{name}.value"), J::Array(values));
            }
        }
        let _ = serde_json::to_writer(&mut out, &J::Object(row));
        out.push(b'\n');
    }
    out
}

/// `YYYY-MM-DD hh:mm:ss.nnnnnnnnnZ`: `DateTime64(9)`'s text form in UTC,
/// marked as UTC, so that a server in another time zone reads the same
/// instant (the insert asks for `date_time_input_format=best_effort`,
/// which honours the `Z`); as text (an old server's `String` column) it is
/// fixed-width and sorts.
pub(super) fn timestamp(nanos: i64) -> String {
    let ts =
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    )
}

/// Maps become dotted keys; everything else one string.
fn flatten(key: &str, v: &Value, cut: Option<usize>, out: &mut Vec<(String, String)>) {
    match v {
        Value::Map(entries) if !entries.is_empty() => {
            for (k, inner) in entries {
                flatten(&format!("{key}.{k}"), inner, cut, out);
            }
        }
        Value::Str(s) => out.push((key.to_owned(), cut_str(s, cut))),
        other => {
            let mut j = Json::new();
            other.write(&mut j);
            let text = String::from_utf8(j.buf).unwrap_or_default();
            out.push((key.to_owned(), cut_str(&text, cut)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::{Time, Trace};
    use crate::record::{ErrorInfo, Runtime, System};

    struct Order;

    impl Event for Order {
        fn time(&self) -> Time {
            Time::UnixMicros(1_551_671_061_221_232)
        }
        fn level(&self) -> &str {
            "WARNING"
        }
        fn level_number(&self) -> Option<i64> {
            Some(30)
        }
        fn message(&self) -> &str {
            "Order #1234 placed"
        }
        fn trace(&self) -> Option<Trace> {
            Some(Trace {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
                flags: 1,
            })
        }
        fn runtime(&self) -> Runtime<'_> {
            Runtime {
                function: Some("place"),
                file: Some("shop.py"),
                line: Some(23),
                thread_id: Some(7),
                thread_name: Some("MainThread"),
                logger_name: Some("shop.orders"),
            }
        }
        fn system(&self) -> System<'_> {
            System::default()
        }
        fn error(&self) -> Option<ErrorInfo> {
            Some(ErrorInfo {
                name: "ValueError".into(),
                message: "bad total".into(),
                backtrace: Vec::new(),
            })
        }
        fn extra_count(&self) -> usize {
            2
        }
        fn extra_name(&self, i: usize) -> &str {
            ["order", "attempt"][i]
        }
        fn extra_is_map(&self, i: usize) -> bool {
            i == 0
        }
        fn write_extra<S: crate::encode::Sink>(&self, i: usize, _: &str, sink: &mut S) {
            if i == 0 {
                sink.map(2);
                sink.str("id");
                sink.int(1234);
                sink.str("total");
                sink.float(520.23);
            } else {
                sink.int(2);
            }
        }
    }

    #[test]
    fn a_record_becomes_an_otel_logs_row() {
        let row = RowContext {
            service: "shop".into(),
            resource: Vec::new(),
        };
        let context = [(
            "user".into(),
            Value::Map(vec![("id".into(), Value::Int(5))]),
        )];
        let mut out = Vec::new();
        encode(&row, &Order, &context, &Policy::default(), &mut out, None);
        assert_eq!(out.last(), Some(&b'\n'));
        let got: J = serde_json::from_slice(&out).unwrap();
        let host = hostname();
        let pid = std::process::id().to_string();
        assert_eq!(
            got,
            serde_json::json!({
                "Timestamp": "2019-03-04 03:44:21.221232000Z",
                "TraceId": "ab".repeat(16),
                "SpanId": "cd".repeat(8),
                "TraceFlags": 1,
                "SeverityText": "WARN",
                "SeverityNumber": 13,
                "ServiceName": "shop",
                "Body": "Order #1234 placed",
                "ResourceAttributes": {"service.name": "shop", "host.name": host, "process.pid": pid},
                "ScopeName": "shop.orders",
                "LogAttributes": {
                    "order.id": "1234",
                    "order.total": "520.23",
                    "attempt": "2",
                    "user.id": "5",
                    "code.file.path": "shop.py",
                    "code.function.name": "place",
                    "code.line.number": "23",
                    "thread.id": "7",
                    "thread.name": "MainThread",
                    "exception.type": "ValueError",
                    "exception.message": "bad total",
                },
            })
        );
        // One line per row (JSONEachRow reads columns by name, in any order).
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);

        // For a server without Map: the same pairs, as Nested's two arrays.
        out.clear();
        encode(&row, &Order, &[], &Policy::default(), &mut out, None);
        let nested = as_nested(&[&out[..], &out[..]].concat(), &MAP_COLUMNS);
        assert_eq!(nested.iter().filter(|b| **b == b'\n').count(), 2);
        let got: J = serde_json::from_slice(nested.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert!(got.get("LogAttributes").is_none());
        assert_eq!(
            got["ResourceAttributes.key"],
            serde_json::json!(["host.name", "process.pid", "service.name"])
        );
        let keys = got["LogAttributes.key"].as_array().unwrap();
        let values = got["LogAttributes.value"].as_array().unwrap();
        assert_eq!(keys.len(), values.len());
        let at = keys.iter().position(|k| k == "order.id").unwrap();
        assert_eq!(values[at], "1234");
    }

    #[test]
    fn the_resource_goes_to_resource_attributes_and_service_name() {
        let mut row = RowContext {
            service: "unknown_service".into(),
            resource: Vec::new(),
        };
        row.set_resource(&[
            ("service.name".into(), "checkout".into()),
            ("service.version".into(), "2.1".into()),
            ("host.name".into(), "not this one".into()),
        ]);
        let mut out = Vec::new();
        encode(&row, &Order, &[], &Policy::default(), &mut out, None);
        let got: J = serde_json::from_slice(&out).unwrap();
        assert_eq!(got["ServiceName"], "checkout");
        assert_eq!(
            got["ResourceAttributes"],
            serde_json::json!({
                "host.name": hostname(),
                "process.pid": std::process::id().to_string(),
                "service.name": "checkout",
                "service.version": "2.1",
            })
        );
    }

    #[test]
    fn redacted_keys_are_replaced_before_flattening() {
        let row = RowContext {
            service: "shop".into(),
            resource: Vec::new(),
        };
        let policy = Policy {
            redact: vec!["total".into(), "user".into()].into(),
            ..Policy::default()
        };
        let context = [(
            "user".into(),
            Value::Map(vec![("id".into(), Value::Int(5))]),
        )];
        let mut out = Vec::new();
        encode(&row, &Order, &context, &policy, &mut out, None);
        let got: J = serde_json::from_slice(&out).unwrap();
        let attrs = &got["LogAttributes"];
        assert_eq!(attrs["order.total"], "[REDACTED]");
        assert_eq!(attrs["order.id"], "1234");
        assert_eq!(attrs["user"], "[REDACTED]");
        assert!(attrs.get("user.id").is_none());
    }

    #[test]
    fn a_time_no_time_column_holds_is_replaced_and_kept() {
        let row = RowContext {
            service: "s".into(),
            resource: Vec::new(),
        };
        let encode_at = |t: Time| {
            let mut out = Vec::new();
            let at = super::super::Bare {
                time: t,
                message: "m".into(),
            };
            let retimed = encode(&row, &at, &[], &Policy::default(), &mut out, None);
            (retimed, serde_json::from_slice::<J>(&out).unwrap())
        };
        let (retimed, got) = encode_at(Time::UnixMicros(-62_135_596_800_000_000));
        assert_eq!(retimed.as_deref(), Some("0001-01-01T00:00:00Z"));
        assert_eq!(got["LogAttributes"][ORIGINAL_TIME], "0001-01-01T00:00:00Z");
        let year = got["Timestamp"].as_str().unwrap()[..4]
            .parse::<i32>()
            .unwrap();
        assert!((2025..2106).contains(&year), "{got}");
        let (retimed, _) = encode_at(Time::UnixSeconds(1e300));
        assert!(retimed.is_some());
        // The edges are held.
        for ok in [0, i64::from(u32::MAX) * 1_000_000] {
            let (retimed, got) = encode_at(Time::UnixMicros(ok));
            assert_eq!(retimed, None);
            assert!(got["LogAttributes"].get(ORIGINAL_TIME).is_none());
        }
        assert_eq!(
            encode_at(Time::UnixMicros(-1)).0.as_deref(),
            Some("1969-12-31T23:59:59.999999Z")
        );
    }

    #[test]
    fn the_columns_named_are_the_columns_written() {
        let mut out = Vec::new();
        let row = RowContext {
            service: "s".into(),
            resource: Vec::new(),
        };
        encode(&row, &Order, &[], &Policy::default(), &mut out, None);
        let got: Map<String, J> = serde_json::from_slice(&out).unwrap();
        let mut written: Vec<&str> = got.keys().map(String::as_str).collect();
        let mut named = ROW_COLUMNS.to_vec();
        written.sort_unstable();
        named.sort_unstable();
        assert_eq!(written, named);
        assert!(
            out.starts_with(b"{\"Timestamp\":\""),
            "split sorts the lines by time"
        );
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        assert_eq!(
            timestamp(1_551_671_061_221_232_999),
            "2019-03-04 03:44:21.221232999Z"
        );
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000000000Z");
    }

    #[test]
    fn nested_extras_flatten_to_dotted_string_keys() {
        let v = Value::Map(vec![
            ("id".into(), Value::Int(7)),
            (
                "user".into(),
                Value::Map(vec![("name".into(), Value::Str("ann".into()))]),
            ),
            (
                "tags".into(),
                Value::Array(vec![Value::Str("a".into()), Value::Bool(true)]),
            ),
            ("none".into(), Value::Nil),
            ("empty".into(), Value::Map(vec![])),
        ]);
        let mut out = Vec::new();
        flatten("order", &v, None, &mut out);
        let pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            pairs,
            [
                ("order.id", "7"),
                ("order.user.name", "ann"),
                ("order.tags", "[\"a\",true]"),
                ("order.none", "null"),
                ("order.empty", "{}"),
            ]
        );
    }
}
