//! `timber._engine`: the thin PyO3 glue between the `timber` package and the
//! engine. It converts Python values, releases the GIL around waits, and maps
//! errors; the logic lives in `timber-core`.

mod collect;
mod context;
mod convert;
mod engine;
mod frame;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// One record as a JSON frame (the formatter's output).
#[pyfunction]
#[pyo3(signature = (record, context, include_extra_attributes = true, json_default = None, extras = true))]
fn format_json(
    record: &Bound<'_, PyAny>,
    context: &Bound<'_, PyAny>,
    include_extra_attributes: bool,
    json_default: Option<&Bound<'_, PyAny>>,
    extras: bool,
) -> PyResult<String> {
    let py = record.py();
    let get = context
        .getattr(pyo3::intern!(py, "_var"))?
        .getattr(pyo3::intern!(py, "get"))?;
    let snapshot = context::current(&get, context);
    let options = frame::Options {
        include_extra_attributes,
        extras,
    };
    // As in emit: a panic must not escape into the application.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sink = timber_core::encode::Json::new();
        frame::write_record(
            &mut sink,
            record,
            snapshot.as_ref(),
            options,
            &mut convert::Walker::new(json_default),
        )?;
        String::from_utf8(sink.buf).map_err(|_| engine::internal("frame is not UTF-8"))
    }))
    .unwrap_or_else(|_| {
        Err(engine::internal(
            "the record could not be formatted (internal error)",
        ))
    })
}

/// The extras of a record, as `(name, value)` pairs in frame order.
#[pyfunction]
#[pyo3(signature = (record, include_extra_attributes = true))]
fn record_extras<'py>(
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

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<context::PySnapshot>()?;
    m.add_function(wrap_pyfunction!(format_json, m)?)?;
    m.add_function(wrap_pyfunction!(record_extras, m)?)?;
    m.add_function(wrap_pyfunction!(collect::collect, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
