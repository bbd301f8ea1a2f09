//! OTLP-JSON: the protobuf messages in the JSON mapping the OTLP
//! specification fixes (lowerCamelCase names, trace and span ids in hex,
//! enums as integers, 64-bit integers as strings).

use super::otlp_proto::{any_value, AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord};
use serde_json::{json, Map, Value};

/// The request as OTLP-JSON.
pub(super) fn request(r: &ExportLogsServiceRequest) -> Value {
    let resource_logs: Vec<Value> = r
        .resource_logs
        .iter()
        .map(|rl| {
            let scope_logs: Vec<Value> = rl
                .scope_logs
                .iter()
                .map(|sl| {
                    let scope = sl.scope.as_ref().map_or(json!({}), |s| {
                        let mut m = Map::new();
                        m.insert("name".into(), json!(s.name));
                        if !s.version.is_empty() {
                            m.insert("version".into(), json!(s.version));
                        }
                        Value::Object(m)
                    });
                    json!({
                        "scope": scope,
                        "logRecords": sl.log_records.iter().map(record).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let attributes = rl
                .resource
                .as_ref()
                .map_or_else(Vec::new, |r| r.attributes.iter().map(key_value).collect());
            json!({"resource": {"attributes": attributes}, "scopeLogs": scope_logs})
        })
        .collect();
    json!({ "resourceLogs": resource_logs })
}

fn record(r: &LogRecord) -> Value {
    let mut m = Map::new();
    m.insert("timeUnixNano".into(), json!(r.time_unix_nano.to_string()));
    m.insert(
        "observedTimeUnixNano".into(),
        json!(r.observed_time_unix_nano.to_string()),
    );
    m.insert("severityNumber".into(), json!(r.severity_number));
    m.insert("severityText".into(), json!(r.severity_text));
    if let Some(body) = &r.body {
        m.insert("body".into(), any(body));
    }
    m.insert(
        "attributes".into(),
        Value::Array(r.attributes.iter().map(key_value).collect()),
    );
    if r.flags != 0 {
        m.insert("flags".into(), json!(r.flags));
    }
    if !r.trace_id.is_empty() {
        m.insert("traceId".into(), json!(hex(&r.trace_id)));
    }
    if !r.span_id.is_empty() {
        m.insert("spanId".into(), json!(hex(&r.span_id)));
    }
    Value::Object(m)
}

fn key_value(kv: &KeyValue) -> Value {
    json!({"key": kv.key, "value": kv.value.as_ref().map_or(json!({}), any)})
}

fn any(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        None => json!({}),
        Some(V::StringValue(s)) => json!({ "stringValue": s }),
        Some(V::BoolValue(b)) => json!({ "boolValue": b }),
        Some(V::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(V::DoubleValue(d)) => json!({ "doubleValue": d }),
        Some(V::ArrayValue(a)) => {
            json!({"arrayValue": {"values": a.values.iter().map(any).collect::<Vec<_>>()}})
        }
        Some(V::KvlistValue(l)) => {
            json!({"kvlistValue": {"values": l.values.iter().map(key_value).collect::<Vec<_>>()}})
        }
        Some(V::BytesValue(b)) => json!({ "bytesValue": base64(b) }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
