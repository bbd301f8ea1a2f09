//! The custom context, converted once when a `with timber.context(...)`
//! block is entered, then replayed into every frame logged inside it.
//!
//! A `TimberContext` hands the engine two things explicitly: its
//! `ContextVar` (each thread's and task's snapshot) and its [`PyGlobal`]
//! slot (the snapshot every thread sees when it has none of its own).

use crate::convert::{str_text, text_of, Walker};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Mutex;
use timber_core::{Builder, Value};

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
    pub fn data(&self, py: Python<'_>) -> Py<PyDict> {
        self.data.clone_ref(py)
    }
}

/// The global snapshot of a context, seen where no block is active.
#[pyclass(name = "GlobalContext", module = "timber._engine", frozen)]
#[derive(Default)]
pub struct PyGlobal {
    slot: Mutex<Option<Py<PySnapshot>>>,
}

#[pymethods]
impl PyGlobal {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// The global snapshot, if any.
    fn get(&self, py: Python<'_>) -> Option<Py<PySnapshot>> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|s| s.clone_ref(py))
    }

    /// Replaces the global snapshot.
    #[pyo3(signature = (snapshot = None))]
    fn set(&self, snapshot: Option<Py<PySnapshot>>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

/// Where a handler or formatter reads the context: the `ContextVar`'s bound
/// `get`, looked up once, and the global slot.
pub struct Source {
    get: Py<PyAny>,
    global: Py<PyGlobal>,
}

impl Source {
    /// From a context's variable and global slot.
    pub fn new(var: &Bound<'_, PyAny>, global: Py<PyGlobal>) -> PyResult<Self> {
        Ok(Self {
            get: var
                .getattr(crate::names::names(var.py()).get.bind(var.py()))?
                .unbind(),
            global,
        })
    }

    /// The snapshot active here: this thread's or task's, else the global.
    pub fn current<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PySnapshot>> {
        let snap = self.get.bind(py).call1((py.None(),)).ok()?;
        if snap.is_none() {
            return self.global.get().get(py).map(|s| s.into_bound(py));
        }
        snap.cast_into::<PySnapshot>().ok()
    }
}
