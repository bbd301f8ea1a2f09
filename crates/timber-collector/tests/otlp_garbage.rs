//! Mutated and random OTLP bodies, protobuf and OTLP-JSON, under every
//! encoding: `POST /v1/logs`'s decoder answers with an error or with valid
//! JSON object lines under valid source ids, and never panics.

use prost::Message;
use timber_collector::body::{BodyError, Encoding};
use timber_collector::otlp::{decode, OtlpFormat};
use timber_collector::store::valid_source_id;
use timber_collector::testing::compress;
use timber_core::otlp_proto::{
    any_value, AnyValue, ArrayValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue,
    KeyValueList, LogRecord, Resource, ResourceLogs, ScopeLogs,
};

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

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn protobuf_seed() -> Vec<u8> {
    let nested = any_value::Value::KvlistValue(KeyValueList {
        values: vec![
            kv("id", any_value::Value::IntValue(7)),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::DoubleValue(1.5)),
                    }],
                }),
            ),
        ],
    });
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("shop".into()),
                )],
                dropped_attributes_count: 0,
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("hi".into())),
                    }),
                    attributes: vec![
                        kv("order", nested),
                        kv("dt", any_value::Value::BoolValue(true)),
                    ],
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    flags: 1,
                    ..LogRecord::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

const JSON_SEED: &[u8] = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a b"}}]},"scopeLogs":[{"scope":{"name":"app"},"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":17,"body":{"kvlistValue":{"values":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"3"}]}}}]}},"attributes":[{"key":"exception.type","value":{"stringValue":"E"}}],"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708"}]}]}]}"#;

/// The oracle: a refusal, or one valid JSON object per frame, in files
/// named by valid source ids.
fn check(format: OtlpFormat, encoding: Encoding, body: &[u8]) -> bool {
    match decode(format, encoding, body, 1 << 16) {
        Err(BodyError::Invalid(_) | BodyError::TooLarge(_)) => false,
        Err(other) => panic!("unexpected refusal {other:?}"),
        Ok(decoded) => {
            assert_eq!(decoded.origins.len(), decoded.batches.len());
            for (o, (_, b)) in decoded.origins.iter().zip(&decoded.batches) {
                assert_eq!(o.len(), b.frames);
                assert!(o.iter().all(|o| o.resource < decoded.resources.len()));
            }
            for (source, batch) in decoded.batches {
                assert!(valid_source_id(&source), "{source:?}");
                let lines: Vec<&[u8]> = batch
                    .lines
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect();
                assert_eq!(lines.len(), batch.frames);
                for line in lines {
                    let v: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
                    assert!(v.is_object() && v.get("dt").is_some() && v.get("context").is_some());
                }
            }
            true
        }
    }
}

#[test]
fn seeds_decode() {
    assert!(check(
        OtlpFormat::Protobuf,
        Encoding::Identity,
        &protobuf_seed()
    ));
    assert!(check(OtlpFormat::Json, Encoding::Identity, JSON_SEED));
}

#[test]
fn mutated_bodies_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = [
        (OtlpFormat::Protobuf, protobuf_seed()),
        (OtlpFormat::Json, JSON_SEED.to_vec()),
    ];
    let encodings = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Zstd,
    ];
    let mut decoded = 0;
    for round in 0..4000 {
        let (format, seed) = &seeds[round % seeds.len()];
        let mut body = seed.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !body.is_empty() => {
                    let at = rng.below(body.len());
                    body[at] ^= 1 << rng.below(8);
                }
                1 if !body.is_empty() => {
                    let at = rng.below(body.len());
                    body.truncate(at);
                }
                2 => {
                    let at = rng.below(body.len() + 1);
                    body.insert(at, rng.next() as u8);
                }
                _ if !body.is_empty() => {
                    let at = rng.below(body.len());
                    body.remove(at);
                }
                _ => {}
            }
        }
        let encoding = encodings[rng.below(encodings.len())];
        if check(*format, encoding, &compress(encoding, &body)) {
            decoded += 1;
        }
        // Raw garbage under a compressed encoding, too.
        check(*format, encoding, &body);
    }
    // Protobuf shrugs off many mutations: some must have decoded, or the
    // oracle never looked at a line.
    assert!(decoded > 100, "{decoded}");
}
