//! The destination chosen by the environment, as core reads it: with
//! `TIMBER_DESTINATION=otlp` and the `OTEL_*` variables, the layer sends
//! OTLP/HTTP protobuf to the endpoint they name, as a real OTLP receiver
//! decodes it.

mod support;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use support::OtlpSink;
use tracing_subscriber::layer::SubscriberExt;

fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    let kv = attributes.iter().find(|kv| kv.key == key)?;
    kv.value.as_ref()?.value.as_ref()
}

fn map(value: Option<&Any>) -> &[KeyValue] {
    match value {
        Some(Any::KvlistValue(list)) => &list.values,
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn the_environment_chooses_otlp_and_its_endpoint() {
    let sink = OtlpSink::start(true);
    let url = sink.url.clone();
    let (layer, guard) = timber_tracing::builder()
        .environment(move |name| {
            let value = match name {
                "TIMBER_DESTINATION" => "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT" => &url,
                "OTEL_EXPORTER_OTLP_COMPRESSION" => "none",
                "OTEL_SERVICE_NAME" => "checkout",
                _ => return None,
            };
            Some(value.to_owned())
        })
        .build()
        .expect("no key or source is needed for OTLP");
    assert_eq!(guard.settings().destination.name(), "otlp");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let _user = tracing::info_span!("user", id = 123).entered();
        tracing::warn!(
            order_placed.id = 1234,
            order_placed.total = 520.23,
            "Order #1234 placed, total: $520.23"
        );
    });
    assert!(guard.flush());
    assert_eq!(sink.records(), 1);
    let requests = sink.requests();
    let resource = &requests[0].resource_logs[0];
    let service = get(
        &resource.resource.as_ref().unwrap().attributes,
        "service.name",
    );
    assert_eq!(service, Some(&Any::StringValue("checkout".into())));
    let record = &resource.scope_logs[0].log_records[0];
    assert_eq!(
        record.body,
        Some(AnyValue {
            value: Some(Any::StringValue(
                "Order #1234 placed, total: $520.23".into()
            ))
        })
    );
    assert_eq!(record.severity_text, "WARN");
    let order = map(get(&record.attributes, "order_placed"));
    assert_eq!(get(order, "id"), Some(&Any::IntValue(1234)));
    assert_eq!(get(order, "total"), Some(&Any::DoubleValue(520.23)));
    let user = map(get(&record.attributes, "user"));
    assert_eq!(get(user, "id"), Some(&Any::IntValue(123)));
    assert_eq!(
        get(&record.attributes, "code.function.name"),
        Some(&Any::StringValue("otlp".into()))
    );
}
