//! The frame: what one log event looks like on the wire and on stdout.
//!
//! ```json
//! {"dt": "2019-03-04T03:44:21.221232Z", "level": "info", "message": "...",
//!  "order_placed": {...},                      // each extra, at the top level
//!  "error": {"name", "message", "backtrace"},  // when the record has exc_info
//!  "context": {"runtime": {...}, "system": {...}, "user": {...}}}
//! ```
//!
//! The fixed parts are plain structs; the dynamic parts (extras, custom
//! context) are written by the caller between [`Frame::begin`] and
//! [`Frame::end`], in the order above.

use crate::encode::Sink;
use crate::value::{write_entries, Value};

/// Top-level keys that belong to the frame itself; an `extra` with one of
/// these names is sent as `extra_<name>` rather than overwrite it.
pub const RESERVED_KEYS: [&str; 6] = ["dt", "level", "severity", "message", "context", "error"];

/// Where the record was logged from (`context.runtime`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Runtime<'a> {
    /// Function name.
    pub function: Option<&'a str>,
    /// File name.
    pub file: Option<&'a str>,
    /// Line number.
    pub line: Option<i64>,
    /// Thread identifier, written as a string.
    pub thread_id: Option<u64>,
    /// Thread name.
    pub thread_name: Option<&'a str>,
    /// Logger name.
    pub logger_name: Option<&'a str>,
}

/// The process that logged (`context.system`).
#[derive(Debug, Clone, Copy, Default)]
pub struct System<'a> {
    /// Process id.
    pub pid: Option<i64>,
    /// Process name.
    pub process_name: Option<&'a str>,
    /// Host name.
    pub hostname: Option<&'a str>,
}

/// One exception frame, innermost last in [`ErrorInfo::backtrace`].
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// File path.
    pub file: String,
    /// Function name.
    pub function: String,
    /// Line number.
    pub line: i64,
}

/// A structured exception (`error`).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    /// Exception class name.
    pub name: String,
    /// `str()` of the exception.
    pub message: String,
    /// The traceback, innermost frame last.
    pub backtrace: Vec<Location>,
}

impl ErrorInfo {
    fn write<S: Sink>(&self, sink: &mut S) {
        sink.map(3);
        sink.str("name");
        sink.str(&self.name);
        sink.str("message");
        sink.str(&self.message);
        sink.str("backtrace");
        sink.array(self.backtrace.len());
        for loc in &self.backtrace {
            sink.map(3);
            sink.str("file");
            sink.str(&loc.file);
            sink.str("function");
            sink.str(&loc.function);
            sink.str("line");
            sink.int(loc.line);
        }
    }
}

/// The fixed fields of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Creation time, microseconds since the Unix epoch.
    pub dt_micros: i64,
    /// Level name: lower case, `warn` for `WARNING` (the frame's own spelling).
    pub level: &'a str,
    /// `severity`, the level's number divided by ten as the original client
    /// and logtail-python send it (`int(levelno / 10)`); not written if
    /// `None` (frames rebuilt from OTLP records).
    pub severity: Option<i64>,
    /// The formatted message.
    pub message: &'a str,
    /// Origin of the record.
    pub runtime: Runtime<'a>,
    /// The logging process.
    pub system: System<'a>,
    /// The active span, written as `context.trace`.
    pub trace: Option<crate::event::Trace>,
}

impl Frame<'_> {
    /// Writes the frame header and `dt`, `level`, `severity`, `message`; the caller then
    /// writes `extras` key/value pairs, and finishes with [`Frame::end`].
    pub fn begin<S: Sink>(&self, sink: &mut S, extras: usize, error: bool) {
        sink.map(4 + usize::from(self.severity.is_some()) + extras + usize::from(error));
        sink.str("dt");
        write_rfc3339_micros(sink, self.dt_micros);
        sink.str("level");
        sink.str(self.level);
        if let Some(severity) = self.severity {
            sink.str("severity");
            sink.int(severity);
        }
        sink.str("message");
        sink.str(self.message);
    }

    /// Writes `error` (if any) and `context`, with the custom context entries
    /// after `runtime` and `system`.
    pub fn end<S: Sink>(
        &self,
        sink: &mut S,
        error: Option<&ErrorInfo>,
        custom: &[(Box<str>, Value)],
    ) {
        if let Some(e) = error {
            sink.str("error");
            e.write(sink);
        }
        // Custom keys named `runtime` or `system` (or `trace`, inside a
        // span) would duplicate ours.
        let automatic = |k: &str| is_automatic_context(k) || (self.trace.is_some() && k == "trace");
        let custom_len = custom.iter().filter(|(k, _)| !automatic(k)).count();
        sink.str("context");
        sink.map(2 + usize::from(self.trace.is_some()) + custom_len);
        self.write_runtime(sink);
        self.write_system(sink);
        if let Some(t) = &self.trace {
            write_trace(sink, t);
        }
        if custom_len == custom.len() {
            write_entries(custom, sink);
        } else {
            for (k, v) in custom.iter().filter(|(k, _)| !automatic(k)) {
                sink.str(k);
                v.write(sink);
            }
        }
    }

    fn write_runtime<S: Sink>(&self, sink: &mut S) {
        let r = &self.runtime;
        sink.str("runtime");
        sink.map(6);
        sink.str("function");
        opt_str(sink, r.function);
        sink.str("file");
        opt_str(sink, r.file);
        sink.str("line");
        match r.line {
            Some(l) => sink.int(l),
            None => sink.nil(),
        }
        sink.str("thread_id");
        match r.thread_id {
            Some(id) => sink.str(&id.to_string()),
            None => sink.nil(),
        }
        sink.str("thread_name");
        opt_str(sink, r.thread_name);
        sink.str("logger_name");
        opt_str(sink, r.logger_name);
    }

    fn write_system<S: Sink>(&self, sink: &mut S) {
        let s = &self.system;
        sink.str("system");
        sink.map(3);
        sink.str("pid");
        match s.pid {
            Some(p) => sink.int(p),
            None => sink.nil(),
        }
        sink.str("process_name");
        opt_str(sink, s.process_name);
        sink.str("hostname");
        opt_str(sink, s.hostname);
    }
}

/// `context.trace`: the W3C ids in lower-case hex, and the flags.
fn write_trace<S: Sink>(sink: &mut S, t: &crate::event::Trace) {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    sink.str("trace");
    sink.map(3);
    sink.str("trace_id");
    sink.str(&hex(&t.trace_id));
    sink.str("span_id");
    sink.str(&hex(&t.span_id));
    sink.str("trace_flags");
    sink.int(i64::from(t.flags));
}

fn is_automatic_context(key: &str) -> bool {
    key == "runtime" || key == "system"
}

fn opt_str<S: Sink>(sink: &mut S, v: Option<&str>) {
    match v {
        Some(s) => sink.str(s),
        None => sink.nil(),
    }
}

/// The frame's `level` for a Python level name: lower case, with `WARNING`
/// shortened to `warn` as the Timber frame has it.
pub fn level_name(levelname: &str) -> std::borrow::Cow<'_, str> {
    match levelname {
        "DEBUG" => "debug".into(),
        "INFO" => "info".into(),
        "WARNING" | "WARN" => "warn".into(),
        "ERROR" => "error".into(),
        "CRITICAL" | "FATAL" => "critical".into(),
        other => other.to_lowercase().into(),
    }
}

/// The Python level number of a level name, for sources that have none
/// (`tracing`, OTLP): `TRACE` counts as `DEBUG`, an unknown name as 0.
pub fn level_number(levelname: &str) -> i64 {
    match levelname.to_ascii_uppercase().as_str() {
        "DEBUG" | "TRACE" => 10,
        "INFO" => 20,
        "WARNING" | "WARN" => 30,
        "ERROR" => 40,
        "CRITICAL" | "FATAL" => 50,
        _ => 0,
    }
}

/// Writes `micros` since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn write_rfc3339_micros<S: Sink>(sink: &mut S, micros: i64) {
    let mut buf = [0u8; 27];
    let text = rfc3339_micros(micros, &mut buf);
    sink.str(text);
}

/// Formats `micros` since the epoch into `buf` and returns the text.
pub fn rfc3339_micros(micros: i64, buf: &mut [u8; 27]) -> &str {
    let ts = jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    let fields: [(usize, i64, usize); 7] = [
        (0, i64::from(dt.year()), 4),
        (5, i64::from(dt.month()), 2),
        (8, i64::from(dt.day()), 2),
        (11, i64::from(dt.hour()), 2),
        (14, i64::from(dt.minute()), 2),
        (17, i64::from(dt.second()), 2),
        (20, i64::from(dt.subsec_nanosecond() / 1000), 6),
    ];
    *buf = *b"0000-00-00T00:00:00.000000Z";
    for (at, mut v, width) in fields {
        v = v.abs();
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000000Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Json;

    #[test]
    fn rfc3339_matches_jiff_and_seed_shape() {
        let mut buf = [0u8; 27];
        assert_eq!(
            rfc3339_micros(1_551_671_061_221_232, &mut buf),
            "2019-03-04T03:44:21.221232Z"
        );
        for micros in [0i64, 1, 999_999, 951_782_400_000_000, 4_102_444_799_999_999] {
            let ts = jiff::Timestamp::from_microsecond(micros).unwrap();
            let expected = format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"));
            assert_eq!(rfc3339_micros(micros, &mut buf), expected);
        }
    }

    #[test]
    fn level_names() {
        assert_eq!(level_name("WARNING"), "warn");
        assert_eq!(level_name("CRITICAL"), "critical");
        assert_eq!(level_name("NOTICE"), "notice");
        assert_eq!(level_name("Level 25"), "level 25");
    }

    #[test]
    fn frame_shape() {
        let frame = Frame {
            dt_micros: 1_551_671_061_221_232,
            level: "info",
            severity: Some(2),
            message: "Order #1234 placed",
            runtime: Runtime {
                function: Some("myFunc"),
                file: Some("file.py"),
                line: Some(23),
                thread_id: Some(70179740727560),
                thread_name: Some("async_thread"),
                logger_name: Some("logger"),
            },
            system: System {
                pid: Some(20643),
                process_name: Some("python"),
                hostname: Some("host"),
            },
            trace: None,
        };
        let mut j = Json::new();
        frame.begin(&mut j, 1, false);
        j.str("order_placed");
        j.map(1);
        j.str("id");
        j.int(1234);
        let user = vec![(
            "user".into(),
            Value::Map(vec![("id".into(), Value::Int(123))]),
        )];
        frame.end(&mut j, None, &user);
        assert!(j.is_complete());
        assert_eq!(
            String::from_utf8(j.buf).unwrap(),
            concat!(
                r#"{"dt":"2019-03-04T03:44:21.221232Z","level":"info","severity":2,"message":"Order #1234 placed","#,
                r#""order_placed":{"id":1234},"context":{"runtime":{"function":"myFunc","file":"file.py","#,
                r#""line":23,"thread_id":"70179740727560","thread_name":"async_thread","logger_name":"logger"},"#,
                r#""system":{"pid":20643,"process_name":"python","hostname":"host"},"user":{"id":123}}}"#
            )
        );
    }
}
