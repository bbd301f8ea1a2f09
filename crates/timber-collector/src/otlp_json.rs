//! OTLP-JSON request bodies read into the protobuf messages, so that both
//! encodings of `POST /v1/logs` share one mapping to frames.
//!
//! The OTLP specification's JSON is proto3's JSON mapping with three
//! deviations: trace and span ids in hex (not base64), enums as integers,
//! lowerCamelCase names. Receivers are told to be lenient, so the
//! proto field names (`time_unix_nano`) are read too, 64-bit integers as
//! strings or numbers, enums also by name, and unknown fields are ignored.
//! `serde_json` stops at 128 levels of nesting, which bounds the recursion
//! below.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use timber_core::otlp_proto::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList, LogRecord};
#[cfg(test)]
use timber_core::otlp_proto::{InstrumentationScope, Resource, ResourceLogs, ScopeLogs};

use crate::otlp::Visit;

type Result<T> = std::result::Result<T, String>;

/// The walk stopped because the visitor has no memory for the next piece.
const NO_ROOM: &str = "no memory to decode the body";

/// Hands every record of an OTLP-JSON request to `visit`, each resource
/// first. The envelopes are read as raw JSON, so that only one record at a
/// time becomes a tree: a tree of the whole request took about 30 times the
/// body in memory (measured: 8 MiB of OTLP-JSON, 248 MiB more at peak).
pub(crate) fn walk(body: &[u8], visit: &mut impl Visit) -> Result<()> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("OTLP-JSON body is not UTF-8: {e}"))?;
    let top = raw_object(text, "the request")?;
    each_raw(&top, "resourceLogs", "resource_logs", |rl| {
        walk_resource_logs(rl, visit)
    })
}

fn walk_resource_logs(text: &str, visit: &mut impl Visit) -> Result<()> {
    let rl = raw_object(text, "resourceLogs")?;
    let resource = match raw_get(&rl, "resource", "resource") {
        None => Vec::new(),
        Some(r) => {
            if !visit.room_for_tree(r.len()) {
                return Err(NO_ROOM.into());
            }
            let r: Value = tree(r)?;
            list(
                object(&r, "resource")?,
                "attributes",
                "attributes",
                key_value,
            )?
        }
    };
    visit.resource(&resource);
    drop(resource);
    each_raw(&rl, "scopeLogs", "scope_logs", |sl| {
        walk_scope_logs(sl, visit)
    })
}

fn walk_scope_logs(text: &str, visit: &mut impl Visit) -> Result<()> {
    let sl = raw_object(text, "scopeLogs")?;
    let scope = match raw_get(&sl, "scope", "scope") {
        None => None,
        Some(s) => {
            if !visit.room_for_tree(s.len()) {
                return Err(NO_ROOM.into());
            }
            let s: Value = tree(s)?;
            Some(string(object(&s, "scope")?, "name", "name")?)
        }
    };
    each_raw(&sl, "logRecords", "log_records", |rec| {
        if !visit.room_for_record(scope.as_deref(), rec.len()) {
            return Err(NO_ROOM.into());
        }
        let rec: Value = tree(rec)?;
        visit.record(scope.as_deref(), &log_record(object(&rec, "logRecords")?)?);
        Ok(())
    })
}

type RawMap<'a> = HashMap<Cow<'a, str>, &'a RawValue>;

fn tree(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| format!("OTLP-JSON body: {e}"))
}

fn raw_object<'a>(text: &'a str, what: &str) -> Result<RawMap<'a>> {
    serde_json::from_str(text).map_err(|e| format!("OTLP-JSON: {what} is not an object: {e}"))
}

/// `obj[camel]`, else `obj[snake]`; null counts as absent.
fn raw_get<'a>(obj: &RawMap<'a>, camel: &str, snake: &str) -> Option<&'a str> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .map(|r| r.get())
        .filter(|r| *r != "null")
}

/// Calls `each` on every item of the list `obj[camel]` (else `obj[snake]`),
/// one at a time, never holding the list of items.
fn each_raw<'a>(
    obj: &RawMap<'a>,
    camel: &str,
    snake: &str,
    mut each: impl FnMut(&'a str) -> Result<()>,
) -> Result<()> {
    let Some(text) = raw_get(obj, camel, snake) else {
        return Ok(());
    };
    let mut failed = None;
    let read = crate::json::for_each_raw(text, |item| match each(item) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    });
    match failed {
        Some(e) => Err(e),
        None => read.map_err(|_| format!("OTLP-JSON: {camel} is not an array")),
    }
}

/// Parses an OTLP-JSON `ExportLogsServiceRequest` whole (the tests' oracle).
#[cfg(test)]
pub(crate) fn request(body: &[u8]) -> Result<timber_core::otlp_proto::ExportLogsServiceRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("OTLP-JSON body: {e}"))?;
    let top = object(&value, "the request")?;
    Ok(timber_core::otlp_proto::ExportLogsServiceRequest {
        resource_logs: list(top, "resourceLogs", "resource_logs", resource_logs)?,
    })
}

/// `obj[camel]`, else `obj[snake]`; JSON null counts as absent, as proto3 has it.
fn get<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("OTLP-JSON: {what} is not an object"))
}

fn list<T>(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
    item: impl Fn(&Map<String, Value>) -> Result<T>,
) -> Result<Vec<T>> {
    match get(obj, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| item(object(v, camel)?)).collect(),
        Some(_) => Err(format!("OTLP-JSON: {camel} is not an array")),
    }
}

fn string(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<String> {
    match get(obj, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("OTLP-JSON: {camel} is not a string")),
    }
}

/// A 64-bit integer: a decimal string (as the specification writes it) or a number.
fn int64(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<Option<i128>> {
    let bad = || format!("OTLP-JSON: {camel} is not an integer");
    match get(obj, camel, snake) {
        None => Ok(None),
        Some(Value::String(s)) => s.trim().parse::<i128>().map(Some).map_err(|_| bad()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn uint<T: TryFrom<i128>>(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<T> {
    match int64(obj, camel, snake)? {
        None => T::try_from(0).map_err(|_| format!("OTLP-JSON: {camel} out of range")),
        Some(n) => T::try_from(n).map_err(|_| format!("OTLP-JSON: {camel} out of range")),
    }
}

#[cfg(test)]
fn resource_logs(obj: &Map<String, Value>) -> Result<ResourceLogs> {
    let resource = match get(obj, "resource", "resource") {
        None => None,
        Some(r) => Some(Resource {
            attributes: list(
                object(r, "resource")?,
                "attributes",
                "attributes",
                key_value,
            )?,
            dropped_attributes_count: 0,
        }),
    };
    Ok(ResourceLogs {
        resource,
        scope_logs: list(obj, "scopeLogs", "scope_logs", scope_logs)?,
        schema_url: String::new(),
    })
}

#[cfg(test)]
fn scope_logs(obj: &Map<String, Value>) -> Result<ScopeLogs> {
    let scope = match get(obj, "scope", "scope") {
        None => None,
        Some(s) => {
            let s = object(s, "scope")?;
            Some(InstrumentationScope {
                name: string(s, "name", "name")?,
                version: string(s, "version", "version")?,
                ..InstrumentationScope::default()
            })
        }
    };
    Ok(ScopeLogs {
        scope,
        log_records: list(obj, "logRecords", "log_records", log_record)?,
        schema_url: String::new(),
    })
}

fn log_record(obj: &Map<String, Value>) -> Result<LogRecord> {
    let body = match get(obj, "body", "body") {
        None => None,
        Some(b) => Some(any(object(b, "body")?)?),
    };
    Ok(LogRecord {
        time_unix_nano: uint(obj, "timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: uint(obj, "observedTimeUnixNano", "observed_time_unix_nano")?,
        severity_number: severity_number(obj)?,
        severity_text: string(obj, "severityText", "severity_text")?,
        body,
        attributes: list(obj, "attributes", "attributes", key_value)?,
        dropped_attributes_count: uint(obj, "droppedAttributesCount", "dropped_attributes_count")?,
        flags: uint(obj, "flags", "flags")?,
        trace_id: id(obj, "traceId", "trace_id")?,
        span_id: id(obj, "spanId", "span_id")?,
        event_name: string(obj, "eventName", "event_name")?,
    })
}

/// An integer, or the enum's name (`SEVERITY_NUMBER_WARN`), as proto3 JSON allows.
fn severity_number(obj: &Map<String, Value>) -> Result<i32> {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    if let Some(Value::String(s)) = get(obj, "severityNumber", "severity_number") {
        if let Some(rest) = s.strip_prefix("SEVERITY_NUMBER_") {
            if rest == "UNSPECIFIED" {
                return Ok(0);
            }
            let (name, step) = match rest.char_indices().find(|(_, c)| c.is_ascii_digit()) {
                Some((at, _)) => (&rest[..at], rest[at..].parse::<i32>().unwrap_or(1)),
                None => (rest, 1),
            };
            if let Some(i) = NAMES.iter().position(|n| *n == name) {
                return Ok(i as i32 * 4 + step.clamp(1, 4));
            }
            return Err(format!("OTLP-JSON: unknown severityNumber {s:?}"));
        }
    }
    uint(obj, "severityNumber", "severity_number")
}

/// A trace or span id: hex, as the OTLP specification writes it.
fn id(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<Vec<u8>> {
    let text = string(obj, camel, snake)?;
    from_hex(&text).ok_or_else(|| format!("OTLP-JSON: {camel} is not hex"))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn key_value(obj: &Map<String, Value>) -> Result<KeyValue> {
    let value = match get(obj, "value", "value") {
        None => None,
        Some(v) => Some(any(object(v, "value")?)?),
    };
    Ok(KeyValue {
        key: string(obj, "key", "key")?,
        value,
    })
}

fn any(obj: &Map<String, Value>) -> Result<AnyValue> {
    use any_value::Value as V;
    let value = if let Some(s) = get(obj, "stringValue", "string_value") {
        let s = s.as_str().ok_or("OTLP-JSON: stringValue is not a string")?;
        Some(V::StringValue(s.to_owned()))
    } else if let Some(b) = get(obj, "boolValue", "bool_value") {
        Some(V::BoolValue(
            b.as_bool().ok_or("OTLP-JSON: boolValue is not a boolean")?,
        ))
    } else if get(obj, "intValue", "int_value").is_some() {
        let i = int64(obj, "intValue", "int_value")?.unwrap_or_default();
        Some(V::IntValue(
            i64::try_from(i).map_err(|_| "OTLP-JSON: intValue out of range")?,
        ))
    } else if let Some(d) = get(obj, "doubleValue", "double_value") {
        Some(V::DoubleValue(double(d)?))
    } else if let Some(a) = get(obj, "arrayValue", "array_value") {
        let values = list(object(a, "arrayValue")?, "values", "values", any)?;
        Some(V::ArrayValue(ArrayValue { values }))
    } else if let Some(l) = get(obj, "kvlistValue", "kvlist_value") {
        let values = list(object(l, "kvlistValue")?, "values", "values", key_value)?;
        Some(V::KvlistValue(KeyValueList { values }))
    } else if let Some(b) = get(obj, "bytesValue", "bytes_value") {
        let text = b.as_str().ok_or("OTLP-JSON: bytesValue is not a string")?;
        Some(V::BytesValue(
            from_base64(text).ok_or("OTLP-JSON: bytesValue is not base64")?,
        ))
    } else {
        None
    };
    Ok(AnyValue { value })
}

/// A double: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` as proto3 JSON writes them.
fn double(v: &Value) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
    .ok_or_else(|| "OTLP-JSON: doubleValue is not a number".to_owned())
}

/// Standard or URL-safe base64, padded or not (proto3 JSON accepts both).
fn from_base64(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let text = s.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(digit(*c)?) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_reads() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0"},
            "logRecords":[{"timeUnixNano":"1544712660300000000",
              "observedTimeUnixNano":1544712660300000000,
              "severityNumber":10,"severityText":"Information",
              "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
              "body":{"stringValue":"Example log record"},
              "attributes":[{"key":"int.attribute","value":{"intValue":"10"}},
                {"key":"double.attribute","value":{"doubleValue":637.704}},
                {"key":"bytes","value":{"bytesValue":"aGk="}},
                {"key":"array.attribute","value":{"arrayValue":{"values":[
                  {"stringValue":"many"},{"boolValue":true}]}}},
                {"key":"map.attribute","value":{"kvlistValue":{"values":[
                  {"key":"some.map.key","value":{"stringValue":"some value"}}]}}}],
              "unknownField":1}]}]}]}"#;
        let r = request(body).unwrap();
        let rec = &r.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(rec.observed_time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(rec.severity_number, 10);
        assert_eq!(rec.trace_id.len(), 16);
        assert_eq!(
            rec.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(
            rec.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(10))
        );
        assert_eq!(
            rec.attributes[2].value.as_ref().unwrap().value,
            Some(any_value::Value::BytesValue(b"hi".to_vec()))
        );
        assert_eq!(
            r.resource_logs[0].scope_logs[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            "my.library"
        );
    }

    #[test]
    fn snake_case_and_enum_names_are_read() {
        let body = br#"{"resource_logs":[{"scope_logs":[{"log_records":[
            {"severity_number":"SEVERITY_NUMBER_WARN2","time_unix_nano":5}]}]}]}"#;
        let r = request(body).unwrap();
        let rec = &r.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.severity_number, 14);
        assert_eq!(rec.time_unix_nano, 5);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        for bad in [
            &br#"[]"#[..],
            br#"{"resourceLogs":{}}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"x"}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-1}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":1}}]}]}]}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":"99999999999999999999"}}]}]}]}"#,
            br#"{"resourceLogs": "#,
        ] {
            assert!(request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn base64_variants() {
        assert_eq!(from_base64("TWFu").unwrap(), b"Man");
        assert_eq!(from_base64("TWE=").unwrap(), b"Ma");
        assert_eq!(from_base64("TQ").unwrap(), b"M");
        assert_eq!(from_base64("-_8=").unwrap(), [0xfb, 0xff]);
        assert!(from_base64("T").is_none());
        assert!(from_base64("T!==").is_none());
    }

    #[test]
    fn nesting_past_serde_json_limit_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(request(deep.as_bytes()).is_err());
    }
}
