//! `timber collect --clickhouse URL`: the collector as a gateway. Frames are
//! received as always (Timber, Better Stack, OTLP), then handed to a
//! `timber_core` engine whose destination is ClickHouse, instead of being
//! written to files:
//!
//! ```text
//! request ─▶ body/otlp ─▶ frames (JSON lines) ─▶ FrameEvent ─▶ Engine::emit_all ─▶ batches ─▶ ClickHouse
//!                                                  one row each, as       all or none:      retry, spool,
//!                                                  the handler writes it   503 when full     dedup token
//! ```
//!
//! Many small requests from many processes become a few large inserts (the
//! engine's batching), which is what ClickHouse wants. The gateway answers
//! 202 once a request's frames are in the engine's buffer; from there the
//! engine's promises hold (retries, the spool on disk, the deduplication
//! token). A request that does not fit in the buffer as a whole is refused
//! with 503, so that its client sends it again later with nothing taken
//! twice. With a spool, a request is taken only if everything held in
//! memory could still be spooled with it (the engine checks the spool's
//! room under its buffer's lock), so that a stop during an outage spools
//! all that was answered 202 rather than drop it. A gateway keeps no state
//! another needs: any number of them can stand behind a load balancer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::otlp::Decoded;

use timber_core::{
    Engine, ErrorInfo, Event, Location, Raw, Refused, Runtime, Settings, Sink, Stats, System, Time,
    Trace, Value,
};

/// Records per insert at most; an insert is also cut at 16 MB of rows (the
/// engine's largest ClickHouse batch), and sent after 1 s at the latest.
pub const GATEWAY_BATCH_RECORDS: usize = 10_000;

/// Where and how a gateway writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gateway {
    /// ClickHouse's HTTP URL.
    pub url: String,
    /// The table (`otel_logs`, `db.table`).
    pub table: Option<String>,
    /// Create the table when it is missing.
    pub create_table: bool,
    /// `X-ClickHouse-User`.
    pub username: Option<String>,
    /// `X-ClickHouse-Key`.
    pub password: Option<String>,
    /// The durable spool, for what ClickHouse cannot take now.
    pub spool_dir: Option<PathBuf>,
    /// The most written to the spool (the handler's `spool_max_bytes`).
    pub spool_max_bytes: Option<u64>,
}

/// The engine that writes the frames into ClickHouse.
#[derive(Debug)]
pub struct Forwarder {
    engine: Engine,
}

impl Forwarder {
    /// Builds the engine from the gateway's flags, the handler's settings
    /// and its environment variables (`TIMBER_CLICKHOUSE_USER`, ...).
    pub fn new(g: &Gateway, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut given: Vec<(&str, Raw)> = vec![
            ("destination", Raw::Str("clickhouse".into())),
            ("host", Raw::Str(g.url.clone())),
            ("create_table", Raw::Bool(g.create_table)),
            // A frame holds only the extras its sender chose to send.
            ("include_extra_attributes", Raw::Bool(true)),
            ("buffer_capacity", Raw::Int(GATEWAY_BATCH_RECORDS as i128)),
            ("flush_interval", Raw::Float(1.0)),
        ];
        let mut text = |name, value: &Option<String>| {
            if let Some(v) = value {
                given.push((name, Raw::Str(v.clone())));
            }
        };
        text("table", &g.table);
        text("username", &g.username);
        text("password", &g.password);
        if let Some(dir) = &g.spool_dir {
            given.push(("spool_dir", Raw::Str(dir.display().to_string())));
        }
        if let Some(max) = g.spool_max_bytes {
            given.push(("spool_max_bytes", Raw::Int(i128::from(max))));
        }
        // The gateway's own resource is not that of the processes whose
        // records it forwards: each row names its sender's.
        let env = |name: &str| match name {
            "OTEL_RESOURCE_ATTRIBUTES" | "OTEL_SERVICE_NAME" => None,
            _ => env(name),
        };
        let resolved = Settings::resolve(given, env).map_err(|e| e.0)?;
        let engine = Engine::new(resolved).map_err(|e| e.to_string())?;
        Ok(Self { engine })
    }

    /// The table written to.
    pub fn table(&self) -> &str {
        &self.engine.settings().table
    }

    /// Where the rows go, for the start-up line (no credentials).
    pub fn display_url(&self) -> String {
        timber_core::display_url(self.engine.settings().host.as_deref().unwrap_or_default())
    }

    /// Hands the frames of one request (complete JSON lines) from `source`
    /// to the engine, all or none; how many were taken.
    pub fn send(&self, source: &str, lines: &[u8]) -> Result<usize, Refused> {
        let events: Vec<FrameEvent> = frame_lines(lines)
            .map(|l| FrameEvent::read(source, l))
            .collect();
        self.emit(&events)
    }

    /// Hands every frame of one OTLP request to the engine, all or none,
    /// whatever resources it spans; each row keeps what the sender sent:
    /// its resource's `service.name` and attributes, and its severity.
    pub fn send_otlp(&self, decoded: &Decoded) -> Result<usize, Refused> {
        let resources: Vec<Arc<[(String, String)]>> = decoded
            .resources
            .iter()
            .map(|r| r.attributes.as_slice().into())
            .collect();
        let mut events = Vec::new();
        for ((source, batch), origins) in decoded.batches.iter().zip(&decoded.origins) {
            for (line, origin) in frame_lines(&batch.lines).zip(origins) {
                let mut event = FrameEvent::read(source, line);
                if let Some(name) = &decoded.resources[origin.resource].service {
                    event.service.clone_from(name);
                }
                event.resource = Some(Arc::clone(&resources[origin.resource]));
                event.severity = Some((origin.severity_text.clone(), origin.severity_number));
                events.push(event);
            }
        }
        self.emit(&events)
    }

    fn emit(&self, events: &[FrameEvent]) -> Result<usize, Refused> {
        self.engine
            .emit_all(events.iter().map(|e| (e, e.context.as_slice())))
    }

    /// Delivery totals so far.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// The handler's `shutdown_timeout`: how long closing may take.
    pub fn shutdown_timeout(&self) -> Duration {
        self.engine.settings().shutdown_timeout
    }

    /// Sends what is buffered, spooling what cannot be sent by `timeout`.
    pub fn close(&self, timeout: Duration) -> bool {
        self.engine.close(Some(timeout))
    }
}

/// The non-empty lines of a batch.
fn frame_lines(lines: &[u8]) -> impl Iterator<Item = &[u8]> {
    lines.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// One stored frame read back as an event, so that it becomes the row the
/// handler itself would have written: level, message and time from the
/// frame's fields, `context.runtime` and `context.system` as the record's
/// origin, the other context keys as context, the other top-level keys as
/// extras, and the source id as the service when the frame names none.
#[derive(Debug)]
pub struct FrameEvent {
    service: String,
    time: Time,
    level: String,
    message: String,
    extras: Vec<(Box<str>, Value)>,
    context: Vec<(Box<str>, Value)>,
    runtime: Vec<(Box<str>, Value)>,
    system: Vec<(Box<str>, Value)>,
    trace: Option<Trace>,
    error: Option<ErrorInfo>,
    /// The traceback text the sender kept (OTLP's `exception.stacktrace`).
    stacktrace: Option<String>,
    /// An OTLP record's resource, as sent.
    resource: Option<Arc<[(String, String)]>>,
    /// An OTLP record's severity text and number, as sent.
    severity: Option<(String, i32)>,
}

impl FrameEvent {
    /// Reads one JSON frame; `None` if it is not a JSON object.
    pub fn parse(source: &str, line: &[u8]) -> Option<Self> {
        let Ok(Parsed(Value::Map(entries))) = serde_json::from_slice(line) else {
            return None;
        };
        let mut event = Self::empty(source);
        for (key, v) in entries {
            match (&*key, v) {
                ("dt", Value::Str(s)) => event.time = parse_time(&s).unwrap_or(Time::Now),
                ("level", Value::Str(s)) => event.level = level_name(&s),
                ("message", Value::Str(s)) => event.message = s.into(),
                // The level's number over ten: the level name says it.
                ("severity", Value::Int(_)) => {}
                ("error", Value::Map(e)) => {
                    event.stacktrace = str_of(&e, "stacktrace").map(str::to_owned);
                    event.error = Some(error(&e));
                }
                ("context", Value::Map(c)) => event.take_context(c),
                (_, v) => event.extras.push((key, v)),
            }
        }
        Some(event)
    }

    /// Reads one frame, kept whole as [`FrameEvent::opaque`] if it is
    /// not a JSON object.
    pub fn read(source: &str, line: &[u8]) -> Self {
        Self::parse(source, line).unwrap_or_else(|| Self::opaque(source, line))
    }

    /// A frame that is not an object (a client may send `[1, "x"]`): kept
    /// whole, its JSON text as the message, rather than lost.
    pub fn opaque(source: &str, line: &[u8]) -> Self {
        let mut event = Self::empty(source);
        event.level = "INFO".to_owned();
        event.message = String::from_utf8_lossy(line).into_owned();
        event
    }

    fn empty(source: &str) -> Self {
        FrameEvent {
            service: source.to_owned(),
            time: Time::Now,
            level: String::new(),
            message: String::new(),
            extras: Vec::new(),
            context: Vec::new(),
            runtime: Vec::new(),
            system: Vec::new(),
            trace: None,
            error: None,
            stacktrace: None,
            resource: None,
            severity: None,
        }
    }

    fn take_context(&mut self, context: Vec<(Box<str>, Value)>) {
        for (key, v) in context {
            match (&*key, v) {
                ("runtime", Value::Map(m)) => self.runtime = m,
                ("system", Value::Map(m)) => self.system = m,
                ("trace", Value::Map(m)) => self.trace = trace(&m),
                ("service", Value::Map(m)) => {
                    if let Some(name) = str_of(&m, "name") {
                        self.service = name.to_owned();
                    }
                    self.context.push((key, Value::Map(m)));
                }
                (_, v) => self.context.push((key, v)),
            }
        }
    }
}

/// The level as the handler's records name it (`WARNING`), from the frame's
/// (`warn`), so that the severity is the one the handler would send; a
/// custom level (`notice`) by its name, in upper case as Python names it.
fn level_name(frame_level: &str) -> String {
    match frame_level {
        "debug" => "DEBUG",
        "info" => "INFO",
        "warn" | "warning" => "WARNING",
        "error" => "ERROR",
        "critical" | "fatal" => "CRITICAL",
        other => return other.to_uppercase(),
    }
    .to_owned()
}

fn parse_time(text: &str) -> Option<Time> {
    let t: jiff::Timestamp = text.parse().ok()?;
    Some(Time::UnixMicros(t.as_microsecond()))
}

/// A JSON value read straight into the engine's [`Value`], with no tree of
/// serde_json's in between.
struct Parsed(Value);

impl<'de> serde::Deserialize<'de> for Parsed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(Parsed)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(i64::try_from(n).map_or(Value::UInt(n), Value::Int))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Float(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.into()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Parsed(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, Parsed(v))) = map.next_entry::<String, Parsed>()? {
            entries.push((k.into_boxed_str(), v));
        }
        Ok(Value::Map(entries))
    }
}

fn get<'a>(map: &'a [(Box<str>, Value)], key: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

fn str_of<'a>(map: &'a [(Box<str>, Value)], key: &str) -> Option<&'a str> {
    match get(map, key)? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn int_of(map: &[(Box<str>, Value)], key: &str) -> Option<i64> {
    match get(map, key)? {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn trace(map: &[(Box<str>, Value)]) -> Option<Trace> {
    fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
        if text.len() != 2 * N {
            return None;
        }
        let mut out = [0; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
    Some(Trace {
        trace_id: hex(str_of(map, "trace_id")?)?,
        span_id: hex(str_of(map, "span_id")?)?,
        flags: int_of(map, "trace_flags")
            .and_then(|f| u8::try_from(f).ok())
            .unwrap_or(0),
    })
}

fn error(map: &[(Box<str>, Value)]) -> ErrorInfo {
    let backtrace = match get(map, "backtrace") {
        Some(Value::Array(frames)) => frames
            .iter()
            .filter_map(|f| match f {
                Value::Map(f) => Some(Location {
                    file: str_of(f, "file").unwrap_or_default().to_owned(),
                    function: str_of(f, "function").unwrap_or_default().to_owned(),
                    line: int_of(f, "line").unwrap_or_default(),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    ErrorInfo {
        name: str_of(map, "name").unwrap_or_default().to_owned(),
        message: str_of(map, "message").unwrap_or_default().to_owned(),
        backtrace,
    }
}

impl Event for FrameEvent {
    fn time(&self) -> Time {
        self.time
    }

    fn level(&self) -> &str {
        &self.level
    }

    fn message(&self) -> &str {
        &self.message
    }

    fn trace(&self) -> Option<Trace> {
        self.trace
    }

    fn service_name(&self) -> Option<&str> {
        Some(&self.service)
    }

    fn resource(&self) -> Option<&[(String, String)]> {
        self.resource.as_deref()
    }

    fn severity(&self) -> Option<(&str, i32)> {
        self.severity.as_ref().map(|(t, n)| (t.as_str(), *n))
    }

    fn stacktrace(&self) -> Option<String> {
        let error = self.error.as_ref()?;
        // The sender's own text when it kept one, else built from the frames.
        if self.stacktrace.is_some() {
            return self.stacktrace.clone();
        }
        let mut text = String::from("Traceback (most recent call last):\n");
        for l in &error.backtrace {
            text.push_str(&format!(
                "  File \"{}\", line {}, in {}\n",
                l.file, l.line, l.function
            ));
        }
        text.push_str(&format!("{}: {}", error.name, error.message));
        Some(text)
    }

    fn runtime(&self) -> Runtime<'_> {
        let r = &self.runtime;
        Runtime {
            function: str_of(r, "function"),
            file: str_of(r, "file"),
            line: int_of(r, "line"),
            thread_id: int_of(r, "thread_id").and_then(|t| u64::try_from(t).ok()),
            thread_name: str_of(r, "thread_name"),
            logger_name: str_of(r, "logger_name"),
        }
    }

    fn system(&self) -> System<'_> {
        System {
            pid: int_of(&self.system, "pid"),
            process_name: str_of(&self.system, "process_name"),
            hostname: str_of(&self.system, "hostname"),
        }
    }

    fn error(&self) -> Option<ErrorInfo> {
        self.error.clone()
    }

    fn extra_count(&self) -> usize {
        self.extras.len()
    }

    fn extra_name(&self, i: usize) -> &str {
        &self.extras[i].0
    }

    fn extra_is_map(&self, i: usize) -> bool {
        matches!(self.extras[i].1, Value::Map(_))
    }

    fn write_extra<S: Sink>(&self, i: usize, _key: &str, sink: &mut S) {
        self.extras[i].1.write(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &str = r#"{"dt":"2019-03-04T03:44:21.221333Z","level":"warn","message":"Order placed","order_placed":{"id":1234,"total":520.23},"context":{"runtime":{"function":"place","file":"shop.py","line":12,"thread_id":"140","thread_name":"MainThread","logger_name":"shop.orders"},"system":{"pid":42,"hostname":"web-1"},"user":{"id":123},"trace":{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","trace_flags":1}}}"#;

    #[test]
    fn a_frame_reads_back_as_the_event_it_was_made_from() {
        let e = FrameEvent::parse("shop", FRAME.as_bytes()).unwrap();
        assert_eq!(e.time().micros(), 1_551_671_061_221_333);
        assert_eq!(e.level(), "WARNING");
        assert_eq!(e.message(), "Order placed");
        assert_eq!(e.service_name(), Some("shop"));
        let rt = e.runtime();
        assert_eq!(
            (rt.file, rt.line, rt.function, rt.logger_name),
            (
                Some("shop.py"),
                Some(12),
                Some("place"),
                Some("shop.orders")
            )
        );
        assert_eq!(rt.thread_id, Some(140));
        assert_eq!(
            (e.system().pid, e.system().hostname),
            (Some(42), Some("web-1"))
        );
        assert_eq!(e.extra_count(), 1);
        assert_eq!(e.extra_name(0), "order_placed");
        assert_eq!(e.context.len(), 1);
        assert_eq!(&*e.context[0].0, "user");
        let t = e.trace().unwrap();
        assert_eq!(t.span_id, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
        assert_eq!(t.flags, 1);
    }

    #[test]
    fn a_frame_may_name_its_service_and_carry_an_error() {
        let line = br#"{"dt":"bad","level":"error","message":"boom","error":{"name":"ValueError","message":"no","backtrace":[{"file":"a.py","function":"f","line":3}]},"context":{"service":{"name":"billing"}}}"#;
        let e = FrameEvent::parse("shop", line).unwrap();
        assert_eq!(e.service_name(), Some("billing"));
        assert_eq!(e.time(), Time::Now);
        assert_eq!(e.error().unwrap().name, "ValueError");
        assert_eq!(
            e.stacktrace().unwrap(),
            "Traceback (most recent call last):\n  File \"a.py\", line 3, in f\nValueError: no"
        );
        assert!(FrameEvent::parse("shop", b"[1]").is_none());
        assert!(FrameEvent::parse("shop", b"{").is_none());
        let values = br#"{"message":"m","v":{"big":18446744073709551615,"neg":-3,"f":1.5,"z":null,"a":[true,"x"]}}"#;
        let e = FrameEvent::parse("shop", values).unwrap();
        assert_eq!(
            e.extras,
            [(
                "v".into(),
                Value::Map(vec![
                    ("big".into(), Value::UInt(u64::MAX)),
                    ("neg".into(), Value::Int(-3)),
                    ("f".into(), Value::Float(1.5)),
                    ("z".into(), Value::Nil),
                    (
                        "a".into(),
                        Value::Array(vec![Value::Bool(true), Value::Str("x".into())])
                    ),
                ])
            )]
        );
        let notice = FrameEvent::parse("shop", br#"{"level":"notice","message":"m"}"#).unwrap();
        assert_eq!(notice.level(), "NOTICE");
        let kept = FrameEvent::opaque("shop", b"[1,\"x\"]");
        assert_eq!((kept.message(), kept.level()), ("[1,\"x\"]", "INFO"));
    }
}
