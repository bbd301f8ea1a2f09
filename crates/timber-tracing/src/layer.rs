//! The `tracing_subscriber::Layer`: each event becomes one frame, with the
//! fields of the spans it is inside as its context.
//!
//! A span's fields are read once, when it is created (and again for each
//! `span.record(...)`), and kept in the span's extensions; an event walks
//! its scope from the root and merges them the way nested
//! `timber.context(...)` blocks merge: one context entry per span name, key
//! by key, the innermost span winning. Leaving a span needs nothing: the
//! next event's scope no longer holds it.

use crate::fields::{merge_span, Entries, Fields, Node};
use crate::handle::Handle;
use crate::record::{current_thread, level_name, now, on_sender_thread, Record};
use crate::visit::Collect;
use timber_core::Value;
use tracing::span::{Attributes, Id, Record as Values};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Layer;

/// Sends every event it sees to timber. Add it to a
/// `tracing_subscriber::registry()`; filter with the subscriber's own
/// filters (`.with_filter(LevelFilter::INFO)`).
#[derive(Debug, Clone)]
pub struct TimberLayer {
    handle: Handle,
}

/// A span's fields, kept in its extensions as the context entry they
/// make: `[(span name, {fields})]`, or nothing for a span without fields.
/// An event inside one span with fields (the common case) sends this
/// entry as it is, with no copy.
#[derive(Debug)]
struct SpanFields(Entries);

impl SpanFields {
    fn new(name: &str, fields: Fields) -> Self {
        if fields.is_empty() {
            Self(Vec::new())
        } else {
            Self(vec![(name.into(), fields.to_value())])
        }
    }

    fn into_fields(self) -> Fields {
        match self.0.into_iter().next().map(|(_, v)| Node::from_value(v)) {
            Some(Node::Map(entries)) => Fields { entries },
            _ => Fields::default(),
        }
    }
}

impl TimberLayer {
    pub(crate) fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// A `log` logger that sends to the same pipeline, for crates that log
    /// through `log` in a service that traces through `tracing`.
    pub fn logger(&self) -> crate::TimberLogger {
        crate::TimberLogger::new(self.handle.clone())
    }

    /// Sends what is buffered and waits until it is delivered or given up,
    /// for at most `flush_timeout`. True if that happened in time.
    pub fn flush(&self) -> bool {
        self.handle.flush()
    }

    /// The pipeline's counters (records accepted, sent, dropped...).
    pub fn stats(&self) -> timber_core::Stats {
        self.handle.stats()
    }
}

impl<S> Layer<S> for TimberLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        record_new_span(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Values<'_>, ctx: Context<'_, S>) {
        record_span_values(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The engine's own threads log through the HTTP client; sending
        // that back would feed the pipeline with itself.
        if on_sender_thread() {
            return;
        }
        read_event(event, &ctx, |record, context| {
            self.handle.emit(record, context);
        });
    }
}

/// Keeps a new span's fields in its extensions.
pub(crate) fn record_new_span<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut visitor = Collect::span(Fields::default());
    attrs.record(&mut visitor);
    span.extensions_mut()
        .insert(SpanFields::new(span.name(), visitor.fields));
}

/// Adds what `span.record(...)` gives to the span's fields.
pub(crate) fn record_span_values<S>(id: &Id, values: &Values<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    let fields = extensions
        .remove::<SpanFields>()
        .map(SpanFields::into_fields)
        .unwrap_or_default();
    let mut visitor = Collect::span(fields);
    values.record(&mut visitor);
    extensions.insert(SpanFields::new(span.name(), visitor.fields));
}

/// Reads an event and the context of its scope, and hands both to `emit`.
pub(crate) fn read_event<S>(
    event: &Event<'_>,
    ctx: &Context<'_, S>,
    emit: impl FnOnce(&Record<'_>, &[(Box<str>, Value)]),
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let time = now();
    let mut visitor = Collect::event();
    event.record(&mut visitor);
    let meta = event.metadata();
    let record = Record {
        time,
        level: level_name(meta.level()),
        message: &visitor.message,
        target: meta.target(),
        module: meta.module_path(),
        file: meta.file(),
        line: meta.line(),
        fields: &visitor.fields,
        error: visitor.error.take(),
        thread: current_thread(),
    };
    // The spans with fields, innermost first; with one, its entry is the
    // context as it is.
    let has_fields = |span: &SpanRef<'_, S>| {
        span.extensions()
            .get::<SpanFields>()
            .is_some_and(|f| !f.0.is_empty())
    };
    let mut scope = ctx.event_scope(event).into_iter().flatten();
    let Some(inner) = scope.by_ref().find(has_fields) else {
        return emit(&record, &[]);
    };
    if !scope.any(|span| has_fields(&span)) {
        let extensions = inner.extensions();
        let entry = extensions.get::<SpanFields>().map_or(&[][..], |f| &f.0);
        return emit(&record, entry);
    }
    let mut context = Vec::new();
    for span in inner.scope().from_root() {
        if let Some(SpanFields(entry)) = span.extensions().get::<SpanFields>() {
            for (name, fields) in entry {
                merge_span(&mut context, name, fields);
            }
        }
    }
    emit(&record, &context);
}

#[cfg(test)]
mod tests {
    //! The layer's reading of events and spans, frame by frame, without a
    //! network: a layer that writes each frame as JSON with core's
    //! `write_frame`, which is what the engine encodes.
    use super::*;
    use serde_json::{json, Value as Json};
    use std::sync::{Arc, Mutex};
    use timber_core::{write_frame, Policy};
    use tracing::{error, info, info_span, warn};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Json>>>);

    /// The top-level keys of a JSON object, in the order written
    /// (`serde_json::Value` sorts them).
    fn keys_in_order(json: &[u8]) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((k, _)) =
                            map.next_entry::<String, serde::de::IgnoredAny>()?
                        {
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(V)
            }
        }
        serde_json::from_slice::<Keys>(json).expect("an object").0
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            record_new_span(attrs, id, &ctx);
        }
        fn on_record(&self, id: &Id, values: &Values<'_>, ctx: Context<'_, S>) {
            record_span_values(id, values, &ctx);
        }
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            read_event(event, &ctx, |record, context| {
                let mut sink = timber_core::Json::new();
                write_frame(&mut sink, record, context, &Policy::default());
                let mut frame: Json = serde_json::from_slice(&sink.buf).expect("a frame is JSON");
                frame["_keys"] = json!(keys_in_order(&sink.buf));
                self.0.lock().unwrap().push(frame);
            });
        }
    }

    fn frames(f: impl FnOnce()) -> Vec<Json> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, f);
        let frames = capture.0.lock().unwrap().clone();
        frames
    }

    #[test]
    fn the_seed_example() {
        let f = frames(|| {
            let _user = info_span!("user", id = 123).entered();
            info!(
                order_placed.id = 1234,
                order_placed.total = 520.23,
                "Order #1234 placed, total: ${}",
                520.23
            );
        });
        let f = &f[0];
        assert_eq!(f["message"], "Order #1234 placed, total: $520.23");
        assert_eq!(f["level"], "info");
        assert_eq!(f["severity"], 2);
        assert_eq!(f["order_placed"], json!({"id": 1234, "total": 520.23}));
        assert_eq!(f["context"]["user"], json!({"id": 123}));
        assert_eq!(
            f["_keys"],
            json!([
                "dt",
                "level",
                "severity",
                "message",
                "order_placed",
                "context"
            ])
        );
        let rt = &f["context"]["runtime"];
        assert_eq!(rt["function"], module_path!());
        assert_eq!(rt["logger_name"], module_path!());
        assert_eq!(rt["file"], file!());
        assert!(rt["line"].as_i64().unwrap() > 0);
    }

    #[test]
    fn spans_nest_merge_and_unwind() {
        let f = frames(|| {
            let job = info_span!("job", id = 123, count = 1);
            let _job = job.enter();
            info!("started");
            {
                let _inner = info_span!("job", count = 2).entered();
                let _user = info_span!("user", id = 7, plain = tracing::field::Empty).entered();
                info!("in progress");
            }
            info!("completed");
            job.record("count", 3);
            info!("recorded");
        });
        let contexts: Vec<&Json> = f.iter().map(|f| &f["context"]).collect();
        assert_eq!(contexts[0]["job"], json!({"id": 123, "count": 1}));
        assert_eq!(contexts[1]["job"], json!({"id": 123, "count": 2}));
        assert_eq!(contexts[1]["user"], json!({"id": 7}));
        assert_eq!(contexts[2]["job"], json!({"id": 123, "count": 1}));
        assert!(contexts[2].get("user").is_none());
        assert_eq!(contexts[3]["job"], json!({"id": 123, "count": 3}));
        // Outside every span: only what timber fills in.
        let outside = frames(|| info!("alone"));
        let keys: Vec<&String> = outside[0]["context"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["runtime", "system"]);
    }

    #[test]
    fn a_span_without_fields_adds_nothing_and_cannot_replace_runtime() {
        let f = frames(|| {
            let _a = info_span!("quiet").entered();
            let _b = info_span!("runtime", function = "spoofed").entered();
            info!("x");
        });
        let ctx = &f[0]["context"];
        assert!(ctx.get("quiet").is_none());
        assert_eq!(ctx["runtime"]["function"], module_path!());
    }

    #[derive(Debug)]
    struct Refused;
    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("payment refused")
        }
    }
    impl std::error::Error for Refused {}

    #[test]
    fn errors_become_the_frames_error() {
        let parse = "x".parse::<i32>().unwrap_err();
        let f = frames(|| {
            error!(
                error = &Refused as &dyn std::error::Error,
                "checkout failed"
            );
            warn!(error = %parse, "bad input");
            warn!(error = ?parse, "bad input");
            error!(cause = &Refused as &dyn std::error::Error, error = %parse, "two");
            warn!(error = 3, "a number is no error");
        });
        assert_eq!(
            f[0]["error"],
            json!({"name": "Refused", "message": "payment refused", "backtrace": []})
        );
        assert_eq!(f[0]["message"], "checkout failed");
        assert!(f[0].get("extra_error").is_none());
        assert_eq!(
            f[1]["error"],
            json!({"name": "Error", "message": "invalid digit found in string", "backtrace": []})
        );
        assert_eq!(f[2]["error"]["name"], "ParseIntError");
        assert_eq!(
            f[2]["error"]["message"],
            "ParseIntError { kind: InvalidDigit }"
        );
        // The first error is the frame's; the next is an extra, renamed by
        // core as a reserved name is.
        assert_eq!(f[3]["error"]["name"], "Refused");
        assert_eq!(f[3]["extra_error"], "invalid digit found in string");
        assert!(f[4].get("error").is_none());
        assert_eq!(f[4]["extra_error"], 3);
    }

    #[test]
    fn every_field_type_keeps_its_type() {
        let f = frames(|| {
            info!(
                i = -1i64,
                u = u64::MAX,
                big = u128::MAX,
                fl = 0.5,
                b = true,
                s = "text",
                d = ?Some(1),
                bytes = &b"a\xffb"[..],
                "m"
            );
        });
        let f = &f[0];
        assert_eq!(f["i"], -1);
        assert_eq!(f["u"], u64::MAX);
        assert_eq!(f["big"], u128::MAX.to_string());
        assert_eq!(f["fl"], 0.5);
        assert_eq!(f["b"], true);
        assert_eq!(f["s"], "text");
        assert_eq!(f["d"], "Some(1)");
        assert_eq!(f["bytes"], "a\\xffb");
    }
}
