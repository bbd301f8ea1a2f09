//! The OTLP-to-frame mapping, checked line by line against hand-written frames.

use super::*;
use prost::Message;
use std::io::Write;
use timber_core::otlp_proto::{
    ArrayValue, InstrumentationScope, KeyValueList, Resource, ResourceLogs, ScopeLogs,
};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn i(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn request(service: Option<&str>, records: Vec<LogRecord>) -> ResourceLogs {
    let mut attributes = vec![kv("host.name", s("box")), kv("process.pid", i(4242))];
    if let Some(name) = service {
        attributes.insert(0, kv("service.name", s(name)));
    }
    ResourceLogs {
        resource: Some(Resource {
            attributes,
            dropped_attributes_count: 0,
        }),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "app.orders".into(),
                ..InstrumentationScope::default()
            }),
            log_records: records,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn full_record() -> LogRecord {
    LogRecord {
        time_unix_nano: 1_551_671_061_221_232_499,
        observed_time_unix_nano: 1_700_000_000_000_000_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue {
            value: Some(s("payment failed")),
        }),
        attributes: vec![
            kv("order_id", i(1234)),
            kv(
                "cart",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("items", i(3)),
                        kv(
                            "tags",
                            any_value::Value::ArrayValue(ArrayValue {
                                values: vec![AnyValue {
                                    value: Some(s("a")),
                                }],
                            }),
                        ),
                    ],
                }),
            ),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("level", s("user's own")),
            kv("code.file.path", s("/app/orders.py")),
            kv("code.function.name", s("pay")),
            kv("code.line.number", i(42)),
            kv("thread.id", i(140_000)),
            kv("thread.name", s("MainThread")),
            kv("exception.type", s("ValueError")),
            kv("exception.message", s("bad card")),
            kv("exception.stacktrace", s("Traceback ...")),
        ],
        dropped_attributes_count: 0,
        flags: 1,
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        event_name: String::new(),
    }
}

fn lines(batch: &Batch) -> Vec<&str> {
    std::str::from_utf8(&batch.lines).unwrap().lines().collect()
}

#[test]
fn a_full_record_becomes_the_handlers_frame() {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![request(Some("shop"), vec![full_record()])],
    };
    let out = frames(&req).batches;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "shop");
    assert_eq!(out[0].1.frames, 1);
    assert_eq!(
        lines(&out[0].1),
        [concat!(
            r#"{"dt":"2019-03-04T03:44:21.221232Z","level":"error","severity":4,"message":"payment failed","#,
            r#""order_id":1234,"cart":{"items":3,"tags":["a"]},"ratio":0.5,"extra_level":"user's own","#,
            r#""error":{"name":"ValueError","message":"bad card","backtrace":[],"stacktrace":"Traceback ..."},"#,
            r#""context":{"runtime":{"function":"pay","file":"/app/orders.py","line":42,"#,
            r#""thread_id":"140000","thread_name":"MainThread","logger_name":"app.orders"},"#,
            r#""system":{"pid":4242,"process_name":null,"hostname":"box"},"#,
            r#""trace":{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060708","trace_flags":1}}}"#
        )]
    );
}

#[test]
fn a_bare_record_has_nulls_and_no_error_or_trace() {
    let record = LogRecord {
        observed_time_unix_nano: 1_000_000_000_123_455_500,
        body: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("k", any_value::Value::BoolValue(true))],
            })),
        }),
        trace_id: vec![0; 16],
        span_id: vec![1; 8],
        ..LogRecord::default()
    };
    let rl = ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![record],
            ..ScopeLogs::default()
        }],
        ..ResourceLogs::default()
    };
    let out = frames(&ExportLogsServiceRequest {
        resource_logs: vec![rl],
    })
    .batches;
    assert_eq!(out[0].0, DEFAULT_SOURCE);
    assert_eq!(
        lines(&out[0].1),
        [concat!(
            r#"{"dt":"2001-09-09T01:46:40.123456Z","level":"info","severity":2,"message":"{\"k\":true}","#,
            r#""context":{"runtime":{"function":null,"file":null,"line":null,"thread_id":null,"#,
            r#""thread_name":null,"logger_name":null},"#,
            r#""system":{"pid":null,"process_name":null,"hostname":null}}}"#
        )]
    );
}

#[test]
fn records_are_grouped_by_source_in_order() {
    let rec = |msg: &str| LogRecord {
        time_unix_nano: 1,
        body: Some(AnyValue {
            value: Some(s(msg)),
        }),
        ..LogRecord::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![
            request(Some("b"), vec![rec("1"), rec("2")]),
            request(Some("a b/c"), vec![rec("3")]),
            request(Some("b"), vec![rec("4")]),
            request(Some("empty"), vec![]),
        ],
    };
    let out = frames(&req).batches;
    let names: Vec<&str> = out.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["b", "a_b_c"]);
    assert_eq!(out[0].1.frames, 3);
    assert!(lines(&out[0].1)[2].contains(r#""message":"4""#));
}

#[test]
fn levels_from_text_then_number() {
    for (text, number, expected) in [
        ("DEBUG", 5, "debug"),
        ("INFO", 9, "info"),
        ("WARN", 13, "warn"),
        ("WARNING", 0, "warn"),
        ("ERROR", 17, "error"),
        ("FATAL", 21, "critical"),
        ("CRITICAL", 0, "critical"),
        ("", 2, "debug"),
        ("", 10, "info"),
        ("Information", 10, "info"),
        ("", 15, "warn"),
        ("", 20, "error"),
        ("", 24, "critical"),
        ("NOTICE", 0, "notice"),
        // A custom level keeps its name whatever its number (the handler's
        // and the SDK's NOTICE = 25 is 12, TRACE = 5 is 0).
        ("NOTICE", 12, "notice"),
        ("TRACE", 0, "trace"),
        ("Trace", 1, "trace"),
        ("", 0, "info"),
    ] {
        assert_eq!(level(text, number), expected, "{text} {number}");
    }
}

#[test]
fn source_ids() {
    assert_eq!(source_id(Some("checkout-api")), "checkout-api");
    assert_eq!(source_id(Some("my service/v2")), "my_service_v2");
    assert_eq!(source_id(Some("..")), DEFAULT_SOURCE);
    assert_eq!(source_id(Some("")), DEFAULT_SOURCE);
    assert_eq!(source_id(None), DEFAULT_SOURCE);
    assert_eq!(source_id(Some(&"x".repeat(500))).len(), MAX_SOURCE_ID_LEN);
}

#[test]
fn protobuf_and_json_bodies_decode_alike() {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![request(Some("shop"), vec![full_record()])],
    };
    let proto = req.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&proto).unwrap();
    let from_proto = decode(
        OtlpFormat::Protobuf,
        Encoding::Gzip,
        &gz.finish().unwrap(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(from_proto, frames(&req));

    let json = br#"{"resourceLogs":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"shop"}},
        {"key":"host.name","value":{"stringValue":"box"}},
        {"key":"process.pid","value":{"intValue":"4242"}}]},
      "scopeLogs":[{"scope":{"name":"app.orders"},"logRecords":[{
        "timeUnixNano":"1551671061221232499","severityNumber":17,"severityText":"ERROR",
        "body":{"stringValue":"payment failed"},"flags":1,
        "traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
        "attributes":[{"key":"order_id","value":{"intValue":"1234"}},
          {"key":"cart","value":{"kvlistValue":{"values":[{"key":"items","value":{"intValue":3}},
            {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}]}}},
          {"key":"ratio","value":{"doubleValue":0.5}},
          {"key":"level","value":{"stringValue":"user's own"}},
          {"key":"code.file.path","value":{"stringValue":"/app/orders.py"}},
          {"key":"code.function.name","value":{"stringValue":"pay"}},
          {"key":"code.line.number","value":{"intValue":"42"}},
          {"key":"thread.id","value":{"intValue":"140000"}},
          {"key":"thread.name","value":{"stringValue":"MainThread"}},
          {"key":"exception.type","value":{"stringValue":"ValueError"}},
          {"key":"exception.message","value":{"stringValue":"bad card"}},
          {"key":"exception.stacktrace","value":{"stringValue":"Traceback ..."}}]}]}]}]}"#;
    let from_json = decode(OtlpFormat::Json, Encoding::Identity, json, 1 << 20).unwrap();
    assert_eq!(from_json, from_proto);
}

#[test]
fn bad_and_empty_bodies() {
    assert_eq!(
        decode(OtlpFormat::Protobuf, Encoding::Identity, b"", 100)
            .unwrap()
            .batches,
        []
    );
    assert!(matches!(
        decode(
            OtlpFormat::Protobuf,
            Encoding::Identity,
            b"\x0a\xff\xff",
            100
        ),
        Err(BodyError::Invalid(_))
    ));
    assert!(matches!(
        decode(OtlpFormat::Json, Encoding::Identity, b"", 100),
        Err(BodyError::Invalid(_))
    ));
    assert!(matches!(
        decode(OtlpFormat::Json, Encoding::Identity, b"{}", 1),
        Err(BodyError::TooLarge(1))
    ));
    // Nesting past prost's recursion limit is refused, not followed.
    let mut deep = AnyValue {
        value: Some(s("x")),
    };
    for _ in 0..200 {
        deep = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![deep],
            })),
        };
    }
    let mut rec = full_record();
    rec.body = Some(deep);
    let body = ExportLogsServiceRequest {
        resource_logs: vec![request(None, vec![rec])],
    }
    .encode_to_vec();
    assert!(matches!(
        decode(OtlpFormat::Protobuf, Encoding::Identity, &body, 1 << 20),
        Err(BodyError::Invalid(_))
    ));
}

#[test]
fn content_types() {
    assert_eq!(
        OtlpFormat::parse(Some("application/x-protobuf")),
        Ok(OtlpFormat::Protobuf)
    );
    assert_eq!(
        OtlpFormat::parse(Some("application/json; charset=utf-8")),
        Ok(OtlpFormat::Json)
    );
    for bad in [None, Some("application/msgpack"), Some("text/plain")] {
        assert_eq!(OtlpFormat::parse(bad).unwrap_err().status(), 415);
    }
    assert!(OtlpFormat::Protobuf.success_body().is_empty());
}

#[test]
fn base64_of_bytes() {
    assert_eq!(base64(b"Man"), "TWFu");
    assert_eq!(base64(b"Ma"), "TWE=");
    assert_eq!(base64(b""), "");
}

#[test]
fn severity_is_the_python_level_number_over_ten() {
    // The severity numbers the SDK's table gives levels 0, 5, 10, ... 55.
    let numbers = [0, 0, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24];
    let sent: Vec<i64> = numbers.iter().map(|&n| severity(n, "x")).collect();
    let direct: Vec<i64> = (0..12).map(|i| i * 5 / 10).collect();
    // Below 10 the SDK writes 0 (unspecified): the name decides, and "x"
    // is no level.
    assert_eq!(sent, direct);
    assert_eq!(severity(0, "warn"), 3);
    assert_eq!(severity(0, "level 7"), 0);
}
