//! A `logging.LogRecord` as an engine [`Event`]: one pass over the record's
//! `__dict__` picks the standard attributes and the extras; the engine
//! decides the frame.

use crate::context::PySnapshot;
use crate::convert::{str_text, text_of, Walker};
use crate::names::names;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use timber_core::{ErrorInfo, Event, Location, Runtime, Sink, System, Time, Trace};

const LEVELNAME: usize = 0;
const MSG: usize = 1;
const ARGS: usize = 2;
const FUNC: usize = 3;
const FILE: usize = 4;
const LINE: usize = 5;
const THREAD: usize = 6;
const THREAD_NAME: usize = 7;
const NAME: usize = 8;
const PROCESS_NAME: usize = 9;
const EXC_INFO: usize = 10;
const LEVELNO: usize = 11;
const CONTEXT: usize = 12;
const PATHNAME: usize = 13;
const OTEL_TRACE: usize = 14;
const OTEL_SPAN: usize = 15;
const OTEL_SAMPLED: usize = 16;
const DD_TRACE: usize = 17;
const DD_SPAN: usize = 18;

/// What one pass over a record's `__dict__` finds.
struct Parts<'py> {
    created: Option<f64>,
    pid: Option<i64>,
    fields: [Option<Bound<'py, PyAny>>; 19],
    extras: Vec<(String, Bound<'py, PyAny>)>,
}

/// Standard `LogRecord` attributes, in the order `LogRecord.__init__` sets
/// them, and those formatters add; anything else in `__dict__` came from
/// `extra=` (or a record factory).
const STANDARD: [&str; 30] = [
    "name",
    "msg",
    "args",
    "levelname",
    "levelno",
    "pathname",
    "filename",
    "module",
    "exc_info",
    "exc_text",
    "stack_info",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "taskName",
    "message",
    "asctime",
    // The context captured by `TimberQueueHandler.prepare`.
    "_timber_context",
    // Trace ids put on records by opentelemetry-instrumentation-logging's
    // and ddtrace's record factories: the event's trace, not extras.
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    // The resource's service name, already the OTLP resource's.
    "otelServiceName",
    "dd.trace_id",
    "dd.span_id",
];

static LOG_RECORD: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static HOSTNAME: PyOnceLock<String> = PyOnceLock::new();

fn hostname(py: Python<'_>) -> &'static str {
    HOSTNAME.get_or_init(py, || {
        py.import("socket")
            .and_then(|m| m.call_method0("gethostname"))
            .and_then(|h| h.extract::<String>())
            .unwrap_or_default()
    })
}

fn log_record_type(py: Python<'_>) -> PyResult<&'static Py<PyType>> {
    LOG_RECORD.get_or_try_init(py, || {
        py.import("logging")?
            .getattr("LogRecord")?
            .cast_into::<PyType>()
            .map(Bound::unbind)
            .map_err(PyErr::from)
    })
}

fn is_plain_log_record(record: &Bound<'_, PyAny>) -> bool {
    let py = record.py();
    log_record_type(py).is_ok_and(|c| record.get_type().is(c.bind(py)))
}

/// Builds what the record path reads lazily (see `names`): called at
/// import, before any record.
pub fn warm(py: Python<'_>) -> PyResult<()> {
    hostname(py);
    known_keys(py);
    log_record_type(py)?;
    sys_modules(py)?;
    Ok(())
}

/// What a key of a record's `__dict__` holds.
#[derive(Debug, Clone, Copy)]
enum Key {
    Slot(usize),
    Created,
    Process,
    Standard,
}

/// The standard keys, in the order `LogRecord.__init__` sets them, as the
/// interned strings its `__dict__` holds: most keys are recognised by one
/// pointer comparison with the entry at their position.
static KEYS: PyOnceLock<Vec<(Py<PyString>, Key)>> = PyOnceLock::new();

fn known_keys(py: Python<'_>) -> &'static [(Py<PyString>, Key)] {
    KEYS.get_or_init(py, || {
        STANDARD
            .into_iter()
            .filter(|name| *name != "taskName" || has_task_name(py))
            .map(|name| (PyString::intern(py, name).unbind(), classify_key(name)))
            .collect()
    })
}

/// `LogRecord.taskName` exists from Python 3.12; before, it is an extra
/// like any other.
fn has_task_name(py: Python<'_>) -> bool {
    py.version_info() >= (3, 12)
}

fn classify_key(name: &str) -> Key {
    match name {
        "created" => Key::Created,
        "process" => Key::Process,
        "levelname" => Key::Slot(LEVELNAME),
        "msg" => Key::Slot(MSG),
        "args" => Key::Slot(ARGS),
        "funcName" => Key::Slot(FUNC),
        "filename" => Key::Slot(FILE),
        "lineno" => Key::Slot(LINE),
        "thread" => Key::Slot(THREAD),
        "threadName" => Key::Slot(THREAD_NAME),
        "name" => Key::Slot(NAME),
        "processName" => Key::Slot(PROCESS_NAME),
        "exc_info" => Key::Slot(EXC_INFO),
        "levelno" => Key::Slot(LEVELNO),
        "_timber_context" => Key::Slot(CONTEXT),
        "pathname" => Key::Slot(PATHNAME),
        "otelTraceID" => Key::Slot(OTEL_TRACE),
        "otelSpanID" => Key::Slot(OTEL_SPAN),
        "otelTraceSampled" => Key::Slot(OTEL_SAMPLED),
        "dd.trace_id" => Key::Slot(DD_TRACE),
        "dd.span_id" => Key::Slot(DD_SPAN),
        _ => Key::Standard,
    }
}

fn is_standard(py: Python<'_>, key: &str) -> bool {
    STANDARD.contains(&key) && (key != "taskName" || has_task_name(py))
}

fn read<'py>(record: &Bound<'py, PyAny>) -> PyResult<Parts<'py>> {
    let py = record.py();
    let dict = record
        .getattr(names(py).dict.bind(py))?
        .cast_into::<PyDict>()?;
    let mut parts = Parts {
        created: None,
        pid: None,
        fields: Default::default(),
        extras: Vec::new(),
    };
    // Taken whole first: extracting values below runs Python code
    // (`__float__`, `__index__`) that may change the dict.
    let items: Vec<_> = dict.iter().collect();
    let known = known_keys(py);
    for (i, (k, v)) in items.into_iter().enumerate() {
        let ptr = k.as_ptr();
        let hit = known
            .get(i)
            .filter(|(s, _)| s.as_ptr() == ptr)
            .or_else(|| known.iter().find(|(s, _)| s.as_ptr() == ptr))
            .map(|(_, key)| *key);
        let key = match hit {
            Some(key) => key,
            None => {
                let Ok(name) = k.cast::<PyString>() else {
                    continue;
                };
                let name = str_text(name);
                if is_standard(py, &name) {
                    classify_key(&name)
                } else {
                    parts.extras.push((name.into_owned(), v));
                    continue;
                }
            }
        };
        match key {
            Key::Slot(slot) => parts.fields[slot] = Some(v),
            Key::Created => parts.created = v.extract::<f64>().ok(),
            Key::Process => parts.pid = v.extract::<i64>().ok(),
            Key::Standard => {}
        }
    }
    Ok(parts)
}

/// Extras collected as logged: the key each is sent under, and the object.
pub type RawExtras<'py> = Vec<(String, Bound<'py, PyAny>)>;

/// A `LogRecord`, read once, as the engine sees it. Its text fields are
/// borrowed from the Python strings (their UTF-8 is cached by Python); only
/// values that are not plain strings are converted into owned text.
pub struct Record<'py> {
    parts: Parts<'py>,
    message: Message<'py>,
    hostname: &'static str,
    /// Text of fields that are not plain UTF-8 strings, by `TEXT_FIELDS`.
    owned: [Option<String>; 7],
    /// The active span, looked up once (and only if OpenTelemetry is
    /// imported).
    trace: OnceCell<Option<Trace>>,
    /// The formatter's `json_default`, for values JSON has no type for.
    default: Option<&'py Bound<'py, PyAny>>,
    /// With `Some`, extras are written as placeholders and collected here
    /// as they are, for a `json_encoder` to see the objects themselves.
    pub raw: Option<RefCell<RawExtras<'py>>>,
}

/// Where the message is.
enum Message<'py> {
    /// `msg` itself: a plain string without arguments.
    Field,
    /// A string Python made (`msg % args`, `getMessage()`).
    Python(Bound<'py, PyString>),
    /// Text made here.
    Owned(String),
}

const TEXT_FIELDS: [usize; 7] = [
    FUNC,
    FILE,
    THREAD_NAME,
    NAME,
    PROCESS_NAME,
    LEVELNAME,
    PATHNAME,
];

/// The text of a field, unless it is a string Python already holds as UTF-8.
fn owned_text(v: Option<&Bound<'_, PyAny>>) -> Option<String> {
    let v = v.filter(|v| !v.is_none())?;
    match v.cast::<PyString>() {
        Ok(s) if s.to_str().is_ok() => None,
        _ => Some(text(v).into_owned()),
    }
}

impl<'py> Record<'py> {
    /// Reads `record`; `default` as in `json.dumps(default=...)`; the
    /// message is `formatted` when the handler has a formatter.
    pub fn read(
        record: &Bound<'py, PyAny>,
        default: Option<&'py Bound<'py, PyAny>>,
        formatted: Option<Bound<'py, PyString>>,
    ) -> PyResult<Self> {
        let py = record.py();
        let parts = read(record)?;
        let message = match formatted {
            Some(f) => python_text(f),
            None => message(
                record,
                parts.fields[MSG].as_ref(),
                parts.fields[ARGS].as_ref(),
            ),
        };
        let owned = TEXT_FIELDS.map(|i| owned_text(parts.fields[i].as_ref()));
        Ok(Self {
            parts,
            message,
            hostname: hostname(py),
            owned,
            trace: OnceCell::new(),
            default,
            raw: None,
        })
    }

    /// The context captured with the record (`TimberQueueHandler`), if any.
    pub fn captured_context(&self) -> Option<Bound<'py, PySnapshot>> {
        let v = self.parts.fields[CONTEXT].as_ref()?;
        v.cast::<PySnapshot>().ok().cloned()
    }

    /// The trace ids a record factory put on the record (OpenTelemetry's
    /// logging instrumentation: hex `otelTraceID`/`otelSpanID`; ddtrace:
    /// decimal or hex `dd.trace_id`/`dd.span_id`); none when they are zero.
    fn factory_trace(&self) -> Option<Trace> {
        let text = |i: usize| {
            let v = self.parts.fields[i].as_ref()?;
            Some(text(v).into_owned())
        };
        let (trace, span, sampled) = match (text(OTEL_TRACE), text(OTEL_SPAN)) {
            (Some(t), Some(s)) => {
                let sampled = self.parts.fields[OTEL_SAMPLED]
                    .as_ref()
                    .is_some_and(|v| v.is_truthy().unwrap_or(false));
                (
                    u128::from_str_radix(&t, 16).ok()?,
                    u64::from_str_radix(&s, 16).ok()?,
                    sampled,
                )
            }
            _ => {
                let (t, s) = (text(DD_TRACE)?, text(DD_SPAN)?);
                let number = |v: &str| {
                    if v.bytes().all(|b| b.is_ascii_digit()) {
                        v.parse::<u128>().ok()
                    } else {
                        u128::from_str_radix(v, 16).ok()
                    }
                };
                (number(&t)?, u64::try_from(number(&s)?).ok()?, true)
            }
        };
        (trace != 0 && span != 0).then(|| Trace {
            trace_id: trace.to_be_bytes(),
            span_id: span.to_be_bytes(),
            flags: u8::from(sampled),
        })
    }

    fn text(&self, field: usize) -> Option<&str> {
        let i = TEXT_FIELDS.iter().position(|f| *f == field)?;
        if let Some(owned) = &self.owned[i] {
            return Some(owned);
        }
        let v = self.parts.fields[field].as_ref()?;
        v.cast::<PyString>().ok()?.to_str().ok()
    }

    fn int<T: for<'a> FromPyObject<'a, 'py>>(&self, field: usize) -> Option<T> {
        self.parts.fields[field]
            .as_ref()
            .and_then(|v| v.extract().ok())
    }
}

impl Event for Record<'_> {
    fn time(&self) -> Time {
        self.parts.created.map_or(Time::Now, Time::UnixSeconds)
    }

    fn level(&self) -> &str {
        self.text(LEVELNAME).unwrap_or_default()
    }

    fn trace(&self) -> Option<Trace> {
        *self.trace.get_or_init(|| {
            // Ids a record factory captured when the record was made come
            // first: they were read on the thread that logged.
            self.factory_trace().or_else(|| {
                let py = self.parts.fields[NAME].as_ref()?.py();
                current_span(py)
            })
        })
    }

    fn file_path(&self) -> Option<&str> {
        self.text(PATHNAME)
    }

    fn exception_message(&self) -> Option<String> {
        let info = self.parts.fields[EXC_INFO]
            .as_ref()?
            .cast::<PyTuple>()
            .ok()?;
        let args = info
            .get_item(1)
            .ok()?
            .getattr(names(info.py()).args.bind(info.py()))
            .ok()?;
        let first = args.cast::<PyTuple>().ok()?.get_item(0).ok()?;
        Some(text_of(&first))
    }

    fn stacktrace(&self) -> Option<String> {
        let info = self.parts.fields[EXC_INFO]
            .as_ref()?
            .cast::<PyTuple>()
            .ok()?;
        let py = info.py();
        let lines = py
            .import("traceback")
            .ok()?
            .call_method1("format_exception", info.clone())
            .ok()?;
        let text = PyString::new(py, "").call_method1("join", (lines,)).ok()?;
        Some(text_of(&text))
    }

    fn level_number(&self) -> Option<i64> {
        self.int(LEVELNO)
    }

    fn message(&self) -> &str {
        match &self.message {
            Message::Field => self.parts.fields[MSG]
                .as_ref()
                .and_then(|m| m.cast::<PyString>().ok()?.to_str().ok())
                .unwrap_or_default(),
            Message::Python(s) => s.to_str().unwrap_or_default(),
            Message::Owned(s) => s,
        }
    }

    fn runtime(&self) -> Runtime<'_> {
        Runtime {
            function: self.text(FUNC),
            file: self.text(FILE),
            line: self.int(LINE),
            thread_id: self.int(THREAD),
            thread_name: self.text(THREAD_NAME),
            logger_name: self.text(NAME),
        }
    }

    fn system(&self) -> System<'_> {
        System {
            pid: self.parts.pid,
            process_name: self.text(PROCESS_NAME),
            hostname: Some(self.hostname),
        }
    }

    fn error(&self) -> Option<ErrorInfo> {
        self.parts.fields[EXC_INFO].as_ref().and_then(error_info)
    }

    fn extra_count(&self) -> usize {
        self.parts.extras.len()
    }

    fn extra_name(&self, i: usize) -> &str {
        &self.parts.extras[i].0
    }

    fn extra_is_map(&self, i: usize) -> bool {
        self.parts.extras[i].1.is_instance_of::<PyDict>()
    }

    fn write_extra<S: Sink>(&self, i: usize, key: &str, sink: &mut S) {
        let value = &self.parts.extras[i].1;
        match &self.raw {
            Some(raw) => {
                raw.borrow_mut().push((key.to_owned(), value.clone()));
                sink.nil();
            }
            None => Walker::new(self.default).value(sink, value),
        }
    }
}

/// A value as text: a string as it is, anything else through `str()`.
fn text<'a>(v: &'a Bound<'_, PyAny>) -> Cow<'a, str> {
    match v.cast::<PyString>() {
        Ok(s) => str_text(s),
        Err(_) => Cow::Owned(text_of(v)),
    }
}

/// `record.getMessage()`, without the call for a plain record whose message
/// has no arguments; a message whose `%` formatting fails is still sent,
/// with what went wrong.
fn message<'py>(
    record: &Bound<'py, PyAny>,
    msg: Option<&Bound<'py, PyAny>>,
    args: Option<&Bound<'py, PyAny>>,
) -> Message<'py> {
    let no_args = args.is_none_or(|a| !a.is_truthy().unwrap_or(true));
    let utf8 = |s: &Bound<'py, PyString>| s.to_str().is_ok();
    if is_plain_log_record(record) {
        if let Some(s) = msg.and_then(|m| m.cast_exact::<PyString>().ok()) {
            if no_args {
                return if utf8(s) {
                    Message::Field
                } else {
                    Message::Owned(str_text(s).into_owned())
                };
            }
            // What getMessage() does for a str message: `msg % args`. On
            // error, getMessage() below reports it.
            if let Some(Ok(formatted)) = args.map(|a| s.rem(a)) {
                if let Ok(f) = formatted.cast_into::<PyString>() {
                    return python_text(f);
                }
            }
        }
    }
    match record.call_method0(names(record.py()).get_message.bind(record.py())) {
        Ok(m) => match m.cast_into::<PyString>() {
            Ok(s) => python_text(s),
            Err(e) => Message::Owned(text_of(e.into_inner().as_any())),
        },
        Err(e) => {
            let msg = msg.map(text_of).unwrap_or_default();
            let args = args.map(|a| {
                a.repr()
                    .map_or_else(|_| text_of(a), |r| str_text(&r).into_owned())
            });
            Message::Owned(format!(
                "{msg} (message formatting failed: {}; args: {})",
                text_of(e.value(record.py())),
                args.unwrap_or_default()
            ))
        }
    }
}

fn python_text(s: Bound<'_, PyString>) -> Message<'_> {
    if s.to_str().is_ok() {
        Message::Python(s)
    } else {
        Message::Owned(str_text(&s).into_owned())
    }
}

/// The `error` of a record whose `exc_info` holds an exception.
fn error_info(exc_info: &Bound<'_, PyAny>) -> Option<ErrorInfo> {
    let info = exc_info.cast::<PyTuple>().ok()?;
    if info.len() != 3 {
        return None;
    }
    let value = info.get_item(1).ok()?;
    if value.is_none() {
        return None;
    }
    let py = value.py();
    let name = value
        .get_type()
        .name()
        .map_or_else(|_| "Exception".to_owned(), |n| str_text(&n).into_owned());
    let mut backtrace = Vec::new();
    let mut tb = info.get_item(2).ok()?;
    while !tb.is_none() {
        if let Some(loc) = location(&tb) {
            backtrace.push(loc);
        }
        tb = match tb.getattr(names(py).tb_next.bind(py)) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    Some(ErrorInfo {
        name,
        message: text_of(&value),
        backtrace,
    })
}

fn location(tb: &Bound<'_, PyAny>) -> Option<Location> {
    let py = tb.py();
    let code = tb
        .getattr(names(py).tb_frame.bind(py))
        .ok()?
        .getattr(names(py).f_code.bind(py))
        .ok()?;
    let file = code.getattr(names(py).co_filename.bind(py)).ok()?;
    let function = code.getattr(names(py).co_name.bind(py)).ok()?;
    let line = tb
        .getattr(names(py).tb_lineno.bind(py))
        .ok()?
        .extract::<i64>()
        .unwrap_or(0);
    Some(Location {
        file: text_of(&file),
        function: text_of(&function),
        line,
    })
}

static SYS_MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn sys_modules(py: Python<'_>) -> PyResult<&'static Py<PyDict>> {
    SYS_MODULES.get_or_try_init(py, || {
        py.import("sys")?
            .getattr("modules")?
            .cast_into::<PyDict>()
            .map(Bound::unbind)
            .map_err(PyErr::from)
    })
}

/// The span active in OpenTelemetry's context, if its API is imported (a
/// process that never imported it has no span): the ids and flags of
/// `trace.get_current_span().get_span_context()` when it is valid.
fn current_span(py: Python<'_>) -> Option<Trace> {
    let modules = sys_modules(py).ok()?.bind(py);
    let api = modules.get_item("opentelemetry.trace").ok()??;
    let ctx = api
        .call_method0(names(py).get_current_span.bind(py))
        .ok()?
        .call_method0(names(py).get_span_context.bind(py))
        .ok()?;
    if !ctx
        .getattr(names(py).is_valid.bind(py))
        .ok()?
        .is_truthy()
        .ok()?
    {
        return None;
    }
    let trace_id: u128 = ctx
        .getattr(names(py).trace_id.bind(py))
        .ok()?
        .extract()
        .ok()?;
    let span_id: u64 = ctx
        .getattr(names(py).span_id.bind(py))
        .ok()?
        .extract()
        .ok()?;
    let flags: u8 = ctx
        .getattr(names(py).trace_flags.bind(py))
        .ok()?
        .extract()
        .ok()?;
    Some(Trace {
        trace_id: trace_id.to_be_bytes(),
        span_id: span_id.to_be_bytes(),
        flags,
    })
}
