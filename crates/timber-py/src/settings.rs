//! Options between Python and the engine: keyword arguments into the
//! engine's [`Raw`] values, read and checked by `timber_core::Settings`,
//! and values back into Python. Nothing here decides what is valid.

use crate::engine::engine_error;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use timber_core::{Raw, Resolved, Settings};

/// A Python value as a [`Raw`]. Accepted: `None`, `bool`, `int`, `float`,
/// `str`, an `os.PathLike` whose path is a `str`, and a `list`, `tuple`,
/// `set` or `frozenset` of those scalars (for `redact`). Anything else
/// (`bytes` included, a nested list, a path given as bytes) is passed on by
/// the name of its type, for the engine to refuse by type, never by value.
fn raw(v: &Bound<'_, PyAny>) -> Raw {
    if is_list(v) {
        let items = v.try_iter().map(|it| {
            it.filter_map(Result::ok)
                .map(|i| if is_list(&i) { other(&i) } else { scalar(&i) })
                .collect()
        });
        return items.map_or_else(|_| other(v), Raw::List);
    }
    scalar(v)
}

fn is_list(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<pyo3::types::PyList>()
        || v.is_instance_of::<pyo3::types::PyTuple>()
        || v.is_instance_of::<pyo3::types::PySet>()
        || v.is_instance_of::<pyo3::types::PyFrozenSet>()
}

fn scalar(v: &Bound<'_, PyAny>) -> Raw {
    if v.is_none() {
        Raw::None
    } else if let Ok(b) = v.cast::<PyBool>() {
        Raw::Bool(b.is_true())
    } else if let Ok(i) = v.cast::<PyInt>() {
        i.extract::<i128>()
            .map_or(Raw::Other("very large int".into()), Raw::Int)
    } else if let Ok(f) = v.cast::<PyFloat>() {
        Raw::Float(f.value())
    } else if let Ok(s) = v.cast::<PyString>() {
        Raw::Str(s.to_string_lossy().into_owned())
    } else if is_path_like(v) {
        // Once, not recursively: a path may only be text here.
        match v
            .py()
            .import("os")
            .and_then(|os| os.call_method1("fspath", (v,)))
        {
            Ok(p) => match p.cast::<PyString>() {
                Ok(s) => Raw::Str(s.to_string_lossy().into_owned()),
                Err(_) => Raw::Other(format!("path given as {}", type_name(&p))),
            },
            Err(_) => other(v),
        }
    } else {
        other(v)
    }
}

fn is_path_like(v: &Bound<'_, PyAny>) -> bool {
    v.py()
        .import("os")
        .and_then(|os| os.getattr("PathLike"))
        .and_then(|t| v.is_instance(&t))
        .unwrap_or(false)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

fn other(v: &Bound<'_, PyAny>) -> Raw {
    Raw::Other(type_name(v))
}

/// Reads a dict of options (as the user gave them) with the environment.
pub fn resolve(options: &Bound<'_, PyDict>) -> PyResult<Resolved> {
    let given = given(options)?;
    Settings::resolve(given.iter().map(|(k, v)| (k.as_str(), v.clone())), |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| engine_error(e.into()))
}

/// A formatter's options (as the user gave them) with the environment.
pub fn formatter(options: &Bound<'_, PyDict>) -> PyResult<Settings> {
    let given = given(options)?;
    Settings::formatter(given.iter().map(|(k, v)| (k.as_str(), v.clone())), |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| engine_error(e.into()))
}

/// The refusal of an option no handler declares (naming the closest one),
/// or `None`: for Python to raise as its own error type.
#[pyfunction]
pub fn unknown_option(name: &str) -> Option<String> {
    timber_core::unknown_option(name)
}

fn given(options: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Raw)>> {
    let mut given = Vec::with_capacity(options.len());
    for (k, v) in options.iter() {
        given.push((k.extract::<String>()?, raw(&v)));
    }
    Ok(given)
}

/// A [`Raw`] as the Python value it stands for.
pub fn to_python<'py>(py: Python<'py>, v: &Raw) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Raw::None => py.None().into_bound(py),
        Raw::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Raw::Int(i) => i.into_pyobject(py)?.into_any(),
        Raw::Float(f) => PyFloat::new(py, *f).into_any(),
        Raw::Str(s) | Raw::Env(s) | Raw::Other(s) => PyString::new(py, s).into_any(),
        Raw::List(items) => {
            let items = items
                .iter()
                .map(|i| to_python(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            pyo3::types::PyList::new(py, items)?.into_any()
        }
    })
}

/// One declared option: name, default, environment variables, doc.
pub type Declaration<'py> = (String, Bound<'py, PyAny>, Vec<String>, String);

/// Every option the engine declares: `(name, default, environment
/// variables, doc)`, in declaration order.
#[pyfunction]
pub fn declared(py: Python<'_>) -> PyResult<Vec<Declaration<'_>>> {
    let defaults = Settings::default().values();
    timber_core::DECLARED
        .iter()
        .zip(defaults)
        .map(|(d, (_, default))| {
            Ok((
                d.name.to_owned(),
                to_python(py, &default)?,
                d.env.iter().map(|e| (*e).to_owned()).collect(),
                d.doc.to_owned(),
            ))
        })
        .collect()
}
