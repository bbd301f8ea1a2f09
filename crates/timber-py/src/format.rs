//! The formatter's side: records as JSON frames, for `TimberFormatter`; and,
//! for a formatter given a `json_encoder`, the frame as Python objects with
//! the extras as they were logged, for that encoder to write, and the
//! encoder's text redacted afterwards.

use crate::context::{PyGlobal, Source};
use crate::convert::{text_of, Walker};
use crate::engine::internal;
use crate::frame::Record;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::cell::RefCell;
use timber_core::{write_frame, Builder, Json, Policy, Sink, Value};

/// A formatter's options bound once; calling it formats one record.
#[pyclass(name = "JsonFormat", module = "timber._engine", frozen)]
pub struct PyJsonFormat {
    context: Source,
    policy: Policy,
    json_default: Option<Py<PyAny>>,
}

impl PyJsonFormat {
    /// Runs `body` with the record read and the context found; a panic
    /// must not escape into the application. With a `json_default`, the
    /// context's values are walked again with it (they were converted
    /// without it when their block was entered).
    fn with_record<'py, T>(
        &self,
        record: &Bound<'py, PyAny>,
        default: Option<&'py Bound<'py, PyAny>>,
        body: impl FnOnce(Record<'py>, &[(Box<str>, Value)], Option<Bound<'py, PyDict>>) -> PyResult<T>,
    ) -> PyResult<T> {
        let py = record.py();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let event = Record::read(record, default, None)?;
            let snapshot = event
                .captured_context()
                .or_else(|| self.context.current(py));
            let data = snapshot.as_ref().map(|s| s.get().data(py).into_bound(py));
            let rewalked;
            let context = match (&snapshot, default, &data) {
                (Some(_), Some(default), Some(data)) => {
                    rewalked = walk_context(data, default);
                    rewalked.as_slice()
                }
                (Some(s), _, _) => s.get().entries.as_slice(),
                (None, _, _) => &[],
            };
            body(event, context, data)
        }))
        .unwrap_or_else(|_| {
            Err(internal(
                "the record could not be formatted (internal error)",
            ))
        })
    }
}

/// The context's values walked with the formatter's `json_default`.
fn walk_context<'py>(
    data: &Bound<'py, PyDict>,
    default: &'py Bound<'py, PyAny>,
) -> Vec<(Box<str>, Value)> {
    data.iter()
        .map(|(k, v)| {
            let mut b = Builder::new();
            Walker::new(Some(default)).value(&mut b, &v);
            (
                text_of(&k).into_boxed_str(),
                b.finish().unwrap_or(Value::Nil),
            )
        })
        .collect()
}

#[pymethods]
impl PyJsonFormat {
    #[new]
    #[pyo3(signature = (context_var, global_context, options, json_default = None))]
    fn new(
        context_var: &Bound<'_, PyAny>,
        global_context: Py<PyGlobal>,
        options: &Bound<'_, PyDict>,
        json_default: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let settings = crate::settings::formatter(options)?;
        Ok(Self {
            context: Source::new(context_var, global_context)?,
            policy: Policy {
                include_extra_attributes: settings.include_extra_attributes,
                redact: settings.redact.into(),
                ..Policy::default()
            },
            json_default,
        })
    }

    /// The text a `json_encoder` wrote, with the values of the redacted
    /// keys replaced: read back and written again by the frame writer's
    /// JSON, so that nothing the encoder produced escapes redaction. The
    /// text is returned as it is when nothing is redacted.
    fn redacted(&self, py: Python<'_>, text: &str) -> PyResult<String> {
        if self.policy.redact.is_empty() {
            return Ok(text.to_owned());
        }
        let loaded = py.import("json")?.call_method1("loads", (text,))?;
        let mut b = Builder::new();
        Walker::new(None).value(&mut b, &loaded);
        let value = b.finish().ok_or_else(|| internal("empty JSON"))?;
        let mut sink = timber_core::Redacting::new(Json::new(), &self.policy.redact);
        value.write(&mut sink);
        String::from_utf8(sink.inner.buf).map_err(|_| internal("frame is not UTF-8"))
    }

    /// One record as a line of JSON.
    fn __call__(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<String> {
        let default = self.json_default.as_ref().map(|d| d.bind(py));
        self.with_record(record, default, |event, context, _| {
            let mut sink = Json::new();
            write_frame(&mut sink, &event, context, &self.policy);
            String::from_utf8(sink.buf).map_err(|_| internal("frame is not UTF-8"))
        })
    }

    /// One record as a dict, in frame order, with each extra the object
    /// that was logged (for a `json_encoder` to encode).
    fn frame<'py>(&self, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = record.py();
        self.with_record(record, None, |mut event, context, data| {
            // Extras are written as placeholders and put back as they are.
            event.raw = Some(RefCell::new(Vec::new()));
            let mut sink = PyBuild::new(py);
            write_frame(&mut sink, &event, context, &self.policy);
            let frame = sink.finish()?;
            if let (Ok(dict), Some(raw)) = (frame.cast::<PyDict>(), event.raw.take()) {
                for (key, value) in raw.into_inner() {
                    dict.set_item(key, value)?;
                }
                // The custom context as it was given, too.
                let context = dict.get_item("context")?;
                if let (Some(context), Some(data)) = (context, data) {
                    let context = context.cast_into::<PyDict>()?;
                    for (k, v) in data.iter() {
                        if context.contains(&k)? {
                            context.set_item(k, v)?;
                        }
                    }
                }
            }
            Ok(frame)
        })
    }
}

/// Builds Python objects from a stream of sink events.
struct PyBuild<'py> {
    py: Python<'py>,
    /// Open containers: the object, entries still expected, and the key
    /// waiting for its value (maps).
    stack: Vec<(Bound<'py, PyAny>, usize, Option<Bound<'py, PyAny>>)>,
    done: Option<Bound<'py, PyAny>>,
    error: Option<PyErr>,
}

impl<'py> PyBuild<'py> {
    fn new(py: Python<'py>) -> Self {
        Self {
            py,
            stack: Vec::new(),
            done: None,
            error: None,
        }
    }

    fn finish(self) -> PyResult<Bound<'py, PyAny>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.done.ok_or_else(|| internal("incomplete frame"))
    }

    fn put(&mut self, value: Bound<'py, PyAny>) {
        let Some((container, left, key)) = self.stack.last_mut() else {
            self.done = Some(value);
            return;
        };
        if let Ok(dict) = container.cast::<PyDict>() {
            match key.take() {
                None => {
                    *key = Some(value);
                    return;
                }
                Some(k) => {
                    if let Err(e) = dict.set_item(k, value) {
                        self.error.get_or_insert(e);
                    }
                }
            }
        } else if let Ok(list) = container.cast::<PyList>() {
            if let Err(e) = list.append(value) {
                self.error.get_or_insert(e);
            }
        }
        *left -= 1;
        self.close_finished();
    }

    fn open(&mut self, container: Bound<'py, PyAny>, len: usize) {
        if len == 0 {
            self.put(container);
        } else {
            self.stack.push((container, len, None));
        }
    }

    fn close_finished(&mut self) {
        while self.stack.last().is_some_and(|(_, left, _)| *left == 0) {
            let (done, _, _) = self.stack.pop().expect("checked above");
            self.put(done);
        }
    }
}

impl Sink for PyBuild<'_> {
    fn nil(&mut self) {
        self.put(self.py.None().into_bound(self.py));
    }
    fn bool(&mut self, v: bool) {
        self.put(pyo3::types::PyBool::new(self.py, v).to_owned().into_any());
    }
    fn int(&mut self, v: i64) {
        match v.into_pyobject(self.py) {
            Ok(o) => self.put(o.into_any()),
            Err(e) => match e {},
        }
    }
    fn uint(&mut self, v: u64) {
        match v.into_pyobject(self.py) {
            Ok(o) => self.put(o.into_any()),
            Err(e) => match e {},
        }
    }
    fn finite_float(&mut self, v: f64) {
        self.put(pyo3::types::PyFloat::new(self.py, v).into_any());
    }
    fn str(&mut self, v: &str) {
        self.put(pyo3::types::PyString::new(self.py, v).into_any());
    }
    fn array(&mut self, len: usize) {
        self.open(PyList::empty(self.py).into_any(), len);
    }
    fn map(&mut self, len: usize) {
        self.open(PyDict::new(self.py).into_any(), len);
    }
}
