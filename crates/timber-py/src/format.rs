//! The formatter's side: records as JSON frames, for `TimberFormatter`.

use crate::context::current;
use crate::convert::Walker;
use crate::engine::internal;
use crate::frame::{self, Options};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use timber_core::encode::Json;

fn var_get<'py>(context: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = context.py();
    context
        .getattr(intern!(py, "_var"))?
        .getattr(intern!(py, "get"))
}

fn format<'py>(
    record: &Bound<'py, PyAny>,
    get: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
    options: Options,
    json_default: Option<&Bound<'py, PyAny>>,
) -> PyResult<String> {
    let snapshot = current(get, context);
    // As in emit: a panic must not escape into the application.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sink = Json::new();
        frame::write_record(
            &mut sink,
            record,
            snapshot.as_ref(),
            options,
            &mut Walker::new(json_default),
        )?;
        String::from_utf8(sink.buf).map_err(|_| internal("frame is not UTF-8"))
    }))
    .unwrap_or_else(|_| {
        Err(internal(
            "the record could not be formatted (internal error)",
        ))
    })
}

/// One record as a JSON frame.
#[pyfunction]
#[pyo3(signature = (record, context, include_extra_attributes = true, json_default = None, extras = true))]
pub fn format_json(
    record: &Bound<'_, PyAny>,
    context: &Bound<'_, PyAny>,
    include_extra_attributes: bool,
    json_default: Option<&Bound<'_, PyAny>>,
    extras: bool,
) -> PyResult<String> {
    let options = Options {
        include_extra_attributes,
        extras,
    };
    format(record, &var_get(context)?, context, options, json_default)
}

/// A formatter's options bound once; calling it formats one record.
#[pyclass(name = "JsonFormat", module = "timber._engine", frozen)]
pub struct PyJsonFormat {
    context: Py<PyAny>,
    get: Py<PyAny>,
    options: Options,
    json_default: Option<Py<PyAny>>,
}

#[pymethods]
impl PyJsonFormat {
    #[new]
    #[pyo3(signature = (context, include_extra_attributes = true, json_default = None))]
    fn new(
        context: &Bound<'_, PyAny>,
        include_extra_attributes: bool,
        json_default: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        Ok(Self {
            get: var_get(context)?.unbind(),
            context: context.clone().unbind(),
            options: Options {
                include_extra_attributes,
                extras: true,
            },
            json_default,
        })
    }

    fn __call__(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<String> {
        let default = self.json_default.as_ref().map(|d| d.bind(py));
        format(
            record,
            self.get.bind(py),
            self.context.bind(py),
            self.options,
            default,
        )
    }
}

/// The extras of a record, as `(name, value)` pairs in frame order.
#[pyfunction]
#[pyo3(signature = (record, include_extra_attributes = true))]
pub fn record_extras<'py>(
    record: &Bound<'py, PyAny>,
    include_extra_attributes: bool,
) -> PyResult<Bound<'py, PyList>> {
    let pairs = frame::extras(record, include_extra_attributes)?;
    let py = record.py();
    let items = pairs
        .into_iter()
        .map(|(k, v)| PyTuple::new(py, [k.into_pyobject(py)?.into_any(), v]))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}
