//! Python values into an engine [`Sink`]: every object becomes something
//! msgpack and JSON can hold, and no value ever loses its record.
//!
//! Natively held: `None`, `bool`, `int` (beyond 64 bits as a decimal
//! string), `float` (NaN and infinities as strings), `str` (lone surrogates
//! escaped), `dict` (keys as strings), `list`, `tuple`, `set`, `frozenset`.
//! `bytes` become text with invalid bytes as `\xNN`; objects with
//! `isoformat()` (datetime, date, time) that text; anything else `str(obj)`,
//! or `repr(obj)`, or a placeholder naming its type. Containers that contain
//! themselves, or nest deeper than [`MAX_DEPTH`], are cut with a marker.

use crate::names::names;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};
use std::borrow::Cow;
use timber_core::escape_bytes;
use timber_core::Sink;
use timber_core::{CYCLE_MARKER, DEPTH_MARKER, MAX_DEPTH};

/// Walks Python values into a sink, tracking the containers being visited.
pub struct Walker<'a, 'py> {
    visiting: Vec<usize>,
    /// The formatter's `json_default`, tried first for non-JSON objects.
    default: Option<&'a Bound<'py, PyAny>>,
}

impl<'a, 'py> Walker<'a, 'py> {
    /// A walker; `default` is called like `json.dumps(default=...)`.
    pub fn new(default: Option<&'a Bound<'py, PyAny>>) -> Self {
        Self {
            visiting: Vec::new(),
            default,
        }
    }

    /// Writes one value.
    pub fn value<S: Sink>(&mut self, sink: &mut S, obj: &Bound<'py, PyAny>) {
        if obj.is_none() {
            sink.nil();
        } else if let Ok(s) = obj.cast_exact::<PyString>() {
            write_str(sink, s);
        } else if let Ok(b) = obj.cast_exact::<PyBool>() {
            sink.bool(b.is_true());
        } else if let Ok(i) = obj.cast::<PyInt>() {
            write_int(sink, i);
        } else if let Ok(f) = obj.cast::<PyFloat>() {
            sink.float(f.value());
        } else if let Ok(d) = obj.cast::<PyDict>() {
            self.container(sink, obj, |w, sink| {
                let items: Vec<_> = d.iter().collect();
                sink.map(items.len());
                for (k, v) in &items {
                    write_key(sink, k);
                    w.value(sink, v);
                }
            });
        } else if let Ok(l) = obj.cast::<PyList>() {
            self.container(sink, obj, |w, sink| {
                let items: Vec<_> = l.iter().collect();
                w.sequence(sink, &items);
            });
        } else if let Ok(t) = obj.cast::<PyTuple>() {
            self.container(sink, obj, |w, sink| {
                let items: Vec<_> = t.iter().collect();
                w.sequence(sink, &items);
            });
        } else if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            self.container(sink, obj, |w, sink| {
                let items: Vec<_> = obj
                    .try_iter()
                    .map_or_else(|_| Vec::new(), |it| it.filter_map(Result::ok).collect());
                w.sequence(sink, &items);
            });
        } else if let Ok(s) = obj.cast::<PyString>() {
            write_str(sink, s);
        } else if let Ok(b) = obj.cast::<PyBytes>() {
            sink.str(&escape_bytes(b.as_bytes()));
        } else if let Ok(b) = obj.cast::<PyByteArray>() {
            sink.str(&escape_bytes(&b.to_vec()));
        } else {
            self.other(sink, obj);
        }
    }

    fn sequence<S: Sink>(&mut self, sink: &mut S, items: &[Bound<'py, PyAny>]) {
        sink.array(items.len());
        for item in items {
            self.value(sink, item);
        }
    }

    /// Runs `body` for a container unless it is already being visited or
    /// too deep, in which case a marker is written instead.
    fn container<S: Sink>(
        &mut self,
        sink: &mut S,
        obj: &Bound<'py, PyAny>,
        body: impl FnOnce(&mut Self, &mut S),
    ) {
        let id = obj.as_ptr() as usize;
        if self.visiting.contains(&id) {
            sink.str(CYCLE_MARKER);
        } else if self.visiting.len() >= MAX_DEPTH {
            sink.str(DEPTH_MARKER);
        } else {
            self.visiting.push(id);
            body(self, sink);
            self.visiting.pop();
        }
    }

    /// An object JSON has no type for.
    fn other<S: Sink>(&mut self, sink: &mut S, obj: &Bound<'py, PyAny>) {
        if let Some(default) = self.default {
            if let Ok(replacement) = default.call1((obj,)) {
                // The replacement is walked as a child of `obj`, so a default
                // that returns its argument is caught as a cycle.
                self.container(sink, obj, |w, sink| w.value(sink, &replacement));
                return;
            }
        }
        if let Ok(iso) = obj.call_method0(names(obj.py()).isoformat.bind(obj.py())) {
            if let Ok(s) = iso.cast::<PyString>() {
                write_str(sink, s);
                return;
            }
        }
        sink.str(&text_of(obj));
    }
}

/// `str(obj)`, else `repr(obj)`, else a placeholder naming the type.
pub fn text_of(obj: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = obj.str() {
        return str_text(&s).into_owned();
    }
    if let Ok(s) = obj.repr() {
        return str_text(&s).into_owned();
    }
    let name = obj
        .get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| str_text(&n).into_owned());
    format!("<unprintable {name}>")
}

/// The text of a Python string; lone surrogates, which UTF-8 cannot hold,
/// are written as `\udXXX` escapes.
pub fn str_text<'a>(s: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    match s.to_str() {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            let escaped = s
                .call_method1(
                    names(s.py()).encode.bind(s.py()),
                    ("utf-8", "backslashreplace"),
                )
                .ok()
                .and_then(|b| {
                    b.cast::<PyBytes>()
                        .ok()
                        .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned())
                });
            Cow::Owned(escaped.unwrap_or_else(|| s.to_string_lossy().into_owned()))
        }
    }
}

fn write_str<S: Sink>(sink: &mut S, s: &Bound<'_, PyString>) {
    sink.str(&str_text(s));
}

fn write_key<S: Sink>(sink: &mut S, key: &Bound<'_, PyAny>) {
    match key.cast::<PyString>() {
        Ok(s) => write_str(sink, s),
        Err(_) => sink.str(&text_of(key)),
    }
}

fn write_int<S: Sink>(sink: &mut S, i: &Bound<'_, PyInt>) {
    if let Ok(v) = i.extract::<i64>() {
        sink.int(v);
    } else if let Ok(v) = i.extract::<u64>() {
        sink.uint(v);
    } else {
        // Beyond 64 bits: the exact decimal digits.
        sink.str(&text_of(i));
    }
}
