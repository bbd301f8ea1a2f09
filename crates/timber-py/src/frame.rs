//! A `logging.LogRecord` into a frame: one pass over the record's `__dict__`
//! picks the standard attributes and the extras, then the engine's frame
//! model writes them in order.

use crate::context::PySnapshot;
use crate::convert::{str_text, text_of, Walker};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use std::borrow::Cow;
use timber_core::encode::Sink;
use timber_core::record::{level_name, ErrorInfo, Frame, Location, Runtime, System, RESERVED_KEYS};

/// Longest traceback kept, innermost frames first to be kept.
const MAX_BACKTRACE: usize = 200;

/// How records are read.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Every extra, not only dict-valued ones.
    pub include_extra_attributes: bool,
    /// Write extras at all (false when the caller adds them itself).
    pub extras: bool,
}

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

/// What one pass over a record's `__dict__` finds.
struct Parts<'py> {
    created: Option<f64>,
    pid: Option<i64>,
    fields: [Option<Bound<'py, PyAny>>; 11],
    extras: Vec<(String, Bound<'py, PyAny>)>,
}

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

fn is_plain_log_record(record: &Bound<'_, PyAny>) -> bool {
    let py = record.py();
    let cls = LOG_RECORD.get_or_try_init(py, || {
        py.import("logging")?
            .getattr("LogRecord")?
            .cast_into::<PyType>()
            .map(Bound::unbind)
            .map_err(PyErr::from)
    });
    cls.is_ok_and(|c| record.get_type().is(c.bind(py)))
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
        [
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
        ]
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
        _ => Key::Standard,
    }
}

/// Attributes every `LogRecord` has, or that formatters add; anything else
/// in `__dict__` came from `extra=` (or a record factory).
fn is_standard(key: &str) -> bool {
    matches!(
        key,
        "name"
            | "msg"
            | "args"
            | "levelname"
            | "levelno"
            | "pathname"
            | "filename"
            | "module"
            | "exc_info"
            | "exc_text"
            | "stack_info"
            | "lineno"
            | "funcName"
            | "created"
            | "msecs"
            | "relativeCreated"
            | "thread"
            | "threadName"
            | "processName"
            | "process"
            | "taskName"
            | "message"
            | "asctime"
    )
}

fn read<'py>(record: &Bound<'py, PyAny>, include_extra_attributes: bool) -> PyResult<Parts<'py>> {
    let py = record.py();
    let dict = record
        .getattr(intern!(py, "__dict__"))?
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
                if is_standard(&name) && (&*name != "taskName" || has_task_name(py)) {
                    classify_key(&name)
                } else {
                    if include_extra_attributes || v.is_instance_of::<PyDict>() {
                        let mut name = name.into_owned();
                        if RESERVED_KEYS.contains(&name.as_str()) {
                            // Renamed so as not to overwrite the frame's own
                            // field, and never onto another extra's name.
                            name.insert_str(0, "extra_");
                            while dict.contains(name.as_str()).unwrap_or(false) {
                                name.insert(0, '_');
                            }
                        }
                        parts.extras.push((name, v));
                    }
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

/// The extras of a record, in frame order, with reserved names prefixed.
pub fn extras<'py>(
    record: &Bound<'py, PyAny>,
    include_extra_attributes: bool,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    Ok(read(record, include_extra_attributes)?.extras)
}

/// Writes one record as a frame.
pub fn write_record<'py, S: Sink>(
    sink: &mut S,
    record: &Bound<'py, PyAny>,
    context: Option<&Bound<'py, PySnapshot>>,
    options: Options,
    walker: &mut Walker<'_, 'py>,
) -> PyResult<()> {
    let py = record.py();
    let Parts {
        created,
        pid,
        fields,
        mut extras,
    } = read(record, options.include_extra_attributes)?;
    if !options.extras {
        extras.clear();
    }
    let message = message(record, fields[MSG].as_ref(), fields[ARGS].as_ref());
    let levelname = fields[LEVELNAME].as_ref().map(text).unwrap_or_default();
    let error = fields[EXC_INFO].as_ref().and_then(error_info);
    let field = |i: usize| fields[i].as_ref().filter(|v| !v.is_none()).map(text);
    let (function, file, thread_name, logger_name, process_name) = (
        field(FUNC),
        field(FILE),
        field(THREAD_NAME),
        field(NAME),
        field(PROCESS_NAME),
    );
    let dt_micros = created.map_or_else(now_micros, |c| (c * 1e6).round() as i64);
    let frame = Frame {
        dt_micros,
        level: &level_name(&levelname),
        message: &message,
        runtime: Runtime {
            function: function.as_deref(),
            file: file.as_deref(),
            line: fields[LINE].as_ref().and_then(|v| v.extract().ok()),
            thread_id: fields[THREAD].as_ref().and_then(|v| v.extract().ok()),
            thread_name: thread_name.as_deref(),
            logger_name: logger_name.as_deref(),
        },
        system: System {
            pid: pid.or_else(|| Some(i64::from(std::process::id()))),
            process_name: process_name.as_deref(),
            hostname: hostname(py),
        },
    };
    frame.begin(sink, extras.len(), error.is_some());
    for (k, v) in &extras {
        sink.str(k);
        walker.value(sink, v);
    }
    let custom = context.map(|c| c.get().entries.as_slice()).unwrap_or(&[]);
    frame.end(sink, error.as_ref(), custom);
    Ok(())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
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
fn message<'a>(
    record: &Bound<'_, PyAny>,
    msg: Option<&'a Bound<'_, PyAny>>,
    args: Option<&Bound<'_, PyAny>>,
) -> Cow<'a, str> {
    let no_args = args.is_none_or(|a| !a.is_truthy().unwrap_or(true));
    if is_plain_log_record(record) {
        if let Some(s) = msg.and_then(|m| m.cast_exact::<PyString>().ok()) {
            if no_args {
                return str_text(s);
            }
            // What getMessage() does for a str message: `msg % args`. On
            // error, getMessage() below reports it.
            if let Some(Ok(formatted)) = args.map(|a| s.rem(a)) {
                if let Ok(f) = formatted.cast::<PyString>() {
                    return Cow::Owned(str_text(f).into_owned());
                }
            }
        }
    }
    match record.call_method0(intern!(record.py(), "getMessage")) {
        Ok(m) => Cow::Owned(text(&m).into_owned()),
        Err(e) => {
            let msg = msg.map(text_of).unwrap_or_default();
            let args = args.map(|a| {
                a.repr()
                    .map_or_else(|_| text_of(a), |r| str_text(&r).into_owned())
            });
            Cow::Owned(format!(
                "{msg} (message formatting failed: {}; args: {})",
                text_of(e.value(record.py())),
                args.unwrap_or_default()
            ))
        }
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
        tb = match tb.getattr(intern!(py, "tb_next")) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    if backtrace.len() > MAX_BACKTRACE {
        backtrace.drain(..backtrace.len() - MAX_BACKTRACE);
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
        .getattr(intern!(py, "tb_frame"))
        .ok()?
        .getattr(intern!(py, "f_code"))
        .ok()?;
    let file = code.getattr(intern!(py, "co_filename")).ok()?;
    let function = code.getattr(intern!(py, "co_name")).ok()?;
    let line = tb
        .getattr(intern!(py, "tb_lineno"))
        .ok()?
        .extract::<i64>()
        .unwrap_or(0);
    Some(Location {
        file: text_of(&file),
        function: text_of(&function),
        line,
    })
}
