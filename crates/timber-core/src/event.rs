//! The input side of the engine: how a source (a Python `LogRecord`, a
//! `tracing` event) describes one event, and the frame the engine builds
//! from it.
//!
//! A source implements [`Event`]: the fixed fields as plain values, the
//! extras by name and written on demand into whatever [`Sink`] the engine
//! chooses (tracing-core's `field::Visit` is the model). Everything the
//! frame decides lives here: reserved names and their `extra_` renaming,
//! which extras are sent, the time and its rounding, the defaults of the
//! process fields, the backtrace cap and the map lengths.

use crate::encode::Sink;
use crate::record::{level_name, ErrorInfo, Frame, Runtime, System, RESERVED_KEYS};
use crate::value::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// Extras never sent: the plumbing structlog's `ProcessorFormatter` puts
/// on records (the logger object, its name, the event dict's record and a
/// marker); with the formatter on the handler, the rendered event is the
/// message.
pub const UNSENT_EXTRAS: [&str; 4] = ["_logger", "_name", "_record", "_from_structlog"];

/// Longest traceback kept; the innermost frames are the ones kept.
pub const MAX_BACKTRACE: usize = 200;

/// When an event happened, as its source knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Seconds since the Unix epoch as a float (Python's `record.created`).
    UnixSeconds(f64),
    /// Microseconds since the Unix epoch.
    UnixMicros(i64),
    /// Not known: the time the frame is built.
    Now,
}

impl Time {
    /// Microseconds since the epoch. A float is rounded the way Python's
    /// `datetime.fromtimestamp` rounds it (half to even on the fraction), so
    /// `dt` equals what Python itself shows; NaN and infinities, which are
    /// no time at all, become the time of the call.
    pub fn micros(self) -> i64 {
        match self {
            Time::UnixMicros(m) => m,
            Time::Now => now_micros(),
            Time::UnixSeconds(s) if !s.is_finite() => now_micros(),
            Time::UnixSeconds(s) => {
                let whole = s.trunc();
                let mut frac = ((s - whole) * 1e6).round_ties_even();
                let mut whole = whole;
                if frac >= 1e6 {
                    frac -= 1e6;
                    whole += 1.0;
                } else if frac < 0.0 {
                    frac += 1e6;
                    whole -= 1.0;
                }
                (whole as i64)
                    .saturating_mul(1_000_000)
                    .saturating_add(frac as i64)
            }
        }
    }
}

impl Time {
    /// Nanoseconds since the epoch; a float is truncated as Python's
    /// `int(created * 1e9)` truncates it.
    pub fn nanos(self) -> i64 {
        match self {
            Time::UnixMicros(m) => m.saturating_mul(1000),
            Time::UnixSeconds(s) if s.is_finite() => (s * 1e9) as i64,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The W3C trace context of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte span id.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// One event, as its source describes it.
pub trait Event {
    /// When it happened.
    fn time(&self) -> Time;
    /// The level's name as the source spells it (`WARNING`, `info`, ...).
    fn level(&self) -> &str;
    /// The level's number, where the source has one (Python's `levelno`:
    /// 10 debug, 20 info, 30 warning, 40 error, 50 critical).
    fn level_number(&self) -> Option<i64> {
        None
    }
    /// The message, formatted.
    fn message(&self) -> &str;
    /// The trace the event belongs to, if a span was active.
    fn trace(&self) -> Option<Trace> {
        None
    }
    /// The full path of the source file, where the source knows it.
    fn file_path(&self) -> Option<&str> {
        None
    }
    /// The exception's message as OpenTelemetry's `exception.message`
    /// has it (Python: `str(args[0])`, none without arguments).
    fn exception_message(&self) -> Option<String> {
        self.error().map(|e| e.message)
    }
    /// The exception's traceback as text, as the source's language prints
    /// it (asked only by destinations that send it).
    fn stacktrace(&self) -> Option<String> {
        None
    }
    /// The service it came from, where the event names one (a gateway's
    /// frames); otherwise the destination's `service_name`.
    fn service_name(&self) -> Option<&str> {
        None
    }
    /// The OpenTelemetry resource it came with, where the event has its
    /// own (a gateway's OTLP records); otherwise the destination's, from
    /// `OTEL_RESOURCE_ATTRIBUTES`. Values as text.
    fn resource(&self) -> Option<&[(String, String)]> {
        None
    }
    /// The severity as an OpenTelemetry sender gave it (`NOTICE`, 12),
    /// where the event has one; otherwise it is derived from the level.
    fn severity(&self) -> Option<(&str, i32)> {
        None
    }
    /// Where it was logged from.
    fn runtime(&self) -> Runtime<'_>;
    /// The process; `pid` and `hostname` left `None` are filled in here.
    fn system(&self) -> System<'_>;
    /// The exception it carries, if any.
    fn error(&self) -> Option<ErrorInfo>;
    /// How many extras it has.
    fn extra_count(&self) -> usize;
    /// The name of extra `i`, as given.
    fn extra_name(&self, i: usize) -> &str;
    /// Whether extra `i` is a map (sent even when only maps are).
    fn extra_is_map(&self, i: usize) -> bool;
    /// Writes the value of extra `i`, sent under `key`.
    fn write_extra<S: Sink>(&self, i: usize, key: &str, sink: &mut S);
}

/// How events become frames.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Send every extra, not only maps (`include_extra_attributes`).
    pub include_extra_attributes: bool,
    /// `level` as the source's level name in lower case (`warning`), as
    /// Better Stack's own client sends it, rather than the Timber frame's
    /// `warn`.
    pub lower_case_levels: bool,
    /// Keys whose values are written as `[REDACTED]`.
    pub redact: std::sync::Arc<[Box<str>]>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            include_extra_attributes: true,
            lower_case_levels: false,
            redact: std::sync::Arc::new([]),
        }
    }
}

/// The keys the extras of one event are sent under: its own name, or, for a
/// name the frame uses itself, `extra_<name>` with as many leading `_` as it
/// takes not to land on another extra's name. The names that could be in
/// the way (`_*extra_<reserved>`) are gathered in one pass over the names, so
/// renaming costs time linear in them however many extras collide; a rescan
/// of every name per extra and per `_` took seconds for one request.
#[derive(Debug, Clone, Default)]
pub struct ExtraKeys {
    /// For each reserved name, how many leading `_` its key takes.
    underscores: [usize; RESERVED_KEYS.len()],
}

impl ExtraKeys {
    /// The renaming for an event whose extras are named `names` (all of them,
    /// sent or not: a key never lands on any).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut taken: [Vec<usize>; RESERVED_KEYS.len()] = Default::default();
        for name in names {
            let rest = name.trim_start_matches('_');
            if let Some(i) = rest.strip_prefix("extra_").and_then(reserved_index) {
                taken[i].push(name.len() - rest.len());
            }
        }
        let mut underscores = [0; RESERVED_KEYS.len()];
        for (chosen, mut counts) in underscores.iter_mut().zip(taken) {
            counts.sort_unstable();
            counts.dedup();
            // The fewest `_` that no name has: the first gap in 0, 1, 2, ...
            *chosen = counts
                .iter()
                .enumerate()
                .find(|(i, n)| *i != **n)
                .map_or(counts.len(), |(i, _)| i);
        }
        Self { underscores }
    }

    /// The key the extra `name` is sent under.
    pub fn key<'a>(&self, name: &'a str) -> Cow<'a, str> {
        match reserved_index(name) {
            None => Cow::Borrowed(name),
            Some(i) => {
                let mut key = "_".repeat(self.underscores[i]);
                key.push_str("extra_");
                key.push_str(name);
                Cow::Owned(key)
            }
        }
    }
}

/// Which of [`RESERVED_KEYS`] `name` is, if any.
pub fn reserved_index(name: &str) -> Option<usize> {
    RESERVED_KEYS.iter().position(|r| *r == name)
}

/// The host name, read once: the kernel's, else `$HOSTNAME`.
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default()
    })
}

/// Writes one event as a frame: `dt`, `level`, `severity`, `message`, the extras, then
/// `error` and `context` (automatic `runtime` and `system`, then the custom
/// context, whose own `runtime`/`system` keys are never written).
pub fn write_frame<S: Sink, E: Event>(
    sink: &mut S,
    event: &E,
    context: &[(Box<str>, Value)],
    policy: &Policy,
) {
    if policy.redact.is_empty() {
        write_fields(sink, event, context, policy);
    } else {
        let mut redacting = crate::redact::Redacting::new(sink, &policy.redact);
        write_fields(&mut redacting, event, context, policy);
    }
}

fn write_fields<S: Sink, E: Event>(
    sink: &mut S,
    event: &E,
    context: &[(Box<str>, Value)],
    policy: &Policy,
) {
    let n = event.extra_count();
    let sent = |i: &usize| {
        (policy.include_extra_attributes || event.extra_is_map(*i))
            && !UNSENT_EXTRAS.contains(&event.extra_name(*i))
    };
    let mut error = event.error();
    if let Some(e) = &mut error {
        if e.backtrace.len() > MAX_BACKTRACE {
            e.backtrace.drain(..e.backtrace.len() - MAX_BACKTRACE);
        }
    }
    let level = if policy.lower_case_levels {
        Cow::Owned(event.level().to_lowercase())
    } else {
        level_name(event.level())
    };
    let mut system = event.system();
    if system.pid.is_none() {
        system.pid = Some(i64::from(std::process::id()));
    }
    if system.hostname.is_none() {
        system.hostname = Some(hostname());
    }
    let levelno = event
        .level_number()
        .unwrap_or_else(|| crate::record::level_number(event.level()));
    let frame = Frame {
        dt_micros: event.time().micros(),
        level: &level,
        // Integer division truncates toward zero, as Python's int() does.
        severity: Some(levelno / 10),
        message: event.message(),
        runtime: event.runtime(),
        system,
        trace: event.trace(),
    };
    frame.begin(sink, (0..n).filter(sent).count(), error.is_some());
    // Built only for an event that has an extra to rename.
    let mut keys: Option<ExtraKeys> = None;
    for i in (0..n).filter(sent) {
        let name = event.extra_name(i);
        let key = match reserved_index(name) {
            None => Cow::Borrowed(name),
            Some(_) => keys
                .get_or_insert_with(|| ExtraKeys::new((0..n).map(|j| event.extra_name(j))))
                .key(name),
        };
        sink.str(&key);
        event.write_extra(i, &key, sink);
    }
    frame.end(sink, error.as_ref(), context);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Json;
    use crate::record::Location;

    /// An event described by plain Rust values, as any source would.
    struct Plain {
        time: Time,
        extras: Vec<(&'static str, Value)>,
        error: Option<ErrorInfo>,
    }

    impl Event for Plain {
        fn time(&self) -> Time {
            self.time
        }
        fn level(&self) -> &str {
            "WARNING"
        }
        fn message(&self) -> &str {
            "hello"
        }
        fn runtime(&self) -> Runtime<'_> {
            Runtime {
                function: Some("f"),
                ..Runtime::default()
            }
        }
        fn system(&self) -> System<'_> {
            System {
                pid: None,
                process_name: Some("p"),
                hostname: Some("h"),
            }
        }
        fn error(&self) -> Option<ErrorInfo> {
            self.error.clone()
        }
        fn extra_count(&self) -> usize {
            self.extras.len()
        }
        fn extra_name(&self, i: usize) -> &str {
            self.extras[i].0
        }
        fn extra_is_map(&self, i: usize) -> bool {
            matches!(self.extras[i].1, Value::Map(_))
        }
        fn write_extra<S: Sink>(&self, i: usize, _key: &str, sink: &mut S) {
            self.extras[i].1.write(sink);
        }
    }

    fn frame(event: &Plain, policy: Policy) -> serde_json::Value {
        let mut j = Json::new();
        write_frame(&mut j, event, &[], &policy);
        assert!(j.is_complete());
        serde_json::from_slice(&j.buf).unwrap()
    }

    fn plain(extras: Vec<(&'static str, Value)>) -> Plain {
        Plain {
            time: Time::UnixMicros(1_551_671_061_221_232),
            extras,
            error: None,
        }
    }

    #[test]
    fn reserved_extras_are_renamed_never_onto_another_extra() {
        let f = frame(
            &plain(vec![
                ("dt", Value::Int(1)),
                ("extra_dt", Value::Int(2)),
                ("context", Value::Int(3)),
                ("order", Value::Int(4)),
            ]),
            Policy::default(),
        );
        assert_eq!(f["dt"], "2019-03-04T03:44:21.221232Z");
        assert_eq!(f["_extra_dt"], 1);
        assert_eq!(f["extra_dt"], 2);
        assert_eq!(f["extra_context"], 3);
        assert_eq!(f["order"], 4);
        assert_eq!(f["level"], "warn");
        assert!(f["context"]["runtime"].is_object());
    }

    #[test]
    fn only_maps_without_include_extra_attributes() {
        let event = plain(vec![
            ("n", Value::Int(1)),
            ("m", Value::Map(vec![("a".into(), Value::Int(1))])),
        ]);
        let f = frame(
            &event,
            Policy {
                include_extra_attributes: false,
                ..Policy::default()
            },
        );
        assert!(f.get("n").is_none());
        assert_eq!(f["m"]["a"], 1);
    }

    #[test]
    fn process_defaults_and_backtrace_cap() {
        let loc = |line| Location {
            file: "f.py".into(),
            function: "g".into(),
            line,
        };
        let mut event = plain(vec![]);
        event.error = Some(ErrorInfo {
            name: "E".into(),
            message: "m".into(),
            backtrace: (0..MAX_BACKTRACE as i64 + 50).map(loc).collect(),
        });
        let f = frame(&event, Policy::default());
        let bt = f["error"]["backtrace"].as_array().unwrap();
        assert_eq!(bt.len(), MAX_BACKTRACE);
        // The innermost frames are kept.
        assert_eq!(bt.last().unwrap()["line"], MAX_BACKTRACE as i64 + 49);
        assert_eq!(f["context"]["system"]["pid"], i64::from(std::process::id()));
        assert_eq!(f["context"]["system"]["hostname"], "h");
    }

    #[test]
    fn float_times_round_as_python_does() {
        // Python: datetime.fromtimestamp(t) rounds the fraction half to even.
        assert_eq!(Time::UnixSeconds(1.5).micros(), 1_500_000);
        assert_eq!(
            Time::UnixSeconds(1_700_000_000.123_456_7).micros(),
            1_700_000_000_123_457
        );
        // 0.0000005 s is exactly half a microsecond away from nothing in
        // decimal, not in binary: whatever the float is, it rounds as
        // round() of the scaled fraction does.
        let t = 1_732_420_000.000_000_5_f64;
        let expected = {
            let frac = ((t - t.trunc()) * 1e6).round_ties_even();
            t.trunc() as i64 * 1_000_000 + frac as i64
        };
        assert_eq!(Time::UnixSeconds(t).micros(), expected);
        assert_eq!(Time::UnixSeconds(-0.5).micros(), -500_000);
        // A fraction that rounds up to a whole second carries.
        assert_eq!(Time::UnixSeconds(0.999_999_9).micros(), 1_000_000);
    }

    #[test]
    fn no_time_at_all_is_the_time_of_the_call() {
        let before = now_micros();
        for t in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let m = Time::UnixSeconds(t).micros();
            assert!(m >= before && m <= now_micros(), "{t}");
        }
    }

    #[test]
    fn extra_keys_take_the_fewest_underscores_free() {
        let names = [
            "dt",
            "extra_dt",
            "__extra_dt",
            "level",
            "_extra_level",
            "x",
            "extra_message",
        ];
        let keys = ExtraKeys::new(names);
        assert_eq!(keys.key("dt"), "_extra_dt");
        assert_eq!(keys.key("level"), "extra_level");
        assert_eq!(keys.key("message"), "_extra_message");
        assert_eq!(keys.key("context"), "extra_context");
        assert_eq!(keys.key("x"), "x");
        assert_eq!(keys.key("extra_dt"), "extra_dt");
        // Every count of `_` from 0 to 999 taken: the key is the 1,000th.
        let taken: Vec<String> = (0..1000).map(|i| "_".repeat(i) + "extra_error").collect();
        let keys = ExtraKeys::new(taken.iter().map(String::as_str));
        assert_eq!(keys.key("error"), "_".repeat(1000) + "extra_error");
    }
}
