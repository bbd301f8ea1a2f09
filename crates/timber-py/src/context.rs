//! The custom context, converted once when a `with timber.context(...)`
//! block is entered, then replayed into every frame logged inside it.

use crate::convert::{str_text, text_of, Walker};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use timber_core::value::{Builder, Value};

/// A merged context: the engine's copy of its values, the dict itself, and
/// the snapshot it was merged onto (restored when its block exits).
#[pyclass(name = "Snapshot", module = "timber._engine", frozen)]
pub struct PySnapshot {
    /// Top-level context keys and their values, in order.
    pub entries: Vec<(Box<str>, Value)>,
    data: Py<PyDict>,
    parent: Option<Py<PySnapshot>>,
}

#[pymethods]
impl PySnapshot {
    #[new]
    #[pyo3(signature = (data, parent = None))]
    fn new(data: &Bound<'_, PyDict>, parent: Option<Py<PySnapshot>>) -> Self {
        let mut walker = Walker::new(None);
        let entries = data
            .iter()
            .map(|(k, v)| {
                let key = match k.cast::<PyString>() {
                    Ok(s) => str_text(s).into_owned(),
                    Err(_) => text_of(&k),
                };
                let mut b = Builder::new();
                walker.value(&mut b, &v);
                (key.into_boxed_str(), b.finish().unwrap_or(Value::Nil))
            })
            .collect();
        Self {
            entries,
            data: data.clone().unbind(),
            parent,
        }
    }

    /// The snapshot active before this one's block was entered.
    #[getter]
    fn parent(&self, py: Python<'_>) -> Option<Py<PySnapshot>> {
        self.parent.as_ref().map(|p| p.clone_ref(py))
    }

    /// The merged context as the dict it was built from.
    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyDict> {
        self.data.clone_ref(py)
    }
}

/// The snapshot active for a context object (a `timber.TimberContext`): the
/// one set in the current thread or task, else the global one. `get` is its
/// `ContextVar`'s bound `get` method.
pub fn current<'py>(
    get: &Bound<'py, PyAny>,
    context: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PySnapshot>> {
    let py = get.py();
    let snap = get.call1((py.None(),)).ok()?;
    let snap = if snap.is_none() {
        context.getattr(intern!(py, "_global")).ok()?
    } else {
        snap
    };
    snap.cast_into::<PySnapshot>().ok()
}
