//! An owned value tree, for data that is written into many frames: the
//! custom context, converted once when a `with timber.context(...)` block is
//! entered and then replayed into every record logged inside it.

use crate::encode::Sink;

/// Marker written in place of a container that contains itself.
pub const CYCLE_MARKER: &str = "<cycle>";
/// Marker written in place of a value nested deeper than [`MAX_DEPTH`].
pub const DEPTH_MARKER: &str = "<too deep>";
/// Deepest nesting written for a logged value; deeper values are cut.
pub const MAX_DEPTH: usize = 32;

/// A JSON-like value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float (non-finite ones are written as strings).
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in insertion order.
    Map(Vec<(Box<str>, Value)>),
}

impl Value {
    /// Replays this value into a sink.
    pub fn write<S: Sink>(&self, sink: &mut S) {
        match self {
            Value::Nil => sink.nil(),
            Value::Bool(b) => sink.bool(*b),
            Value::Int(v) => sink.int(*v),
            Value::UInt(v) => sink.uint(*v),
            Value::Float(v) => sink.float(*v),
            Value::Str(s) => sink.str(s),
            Value::Array(items) => {
                sink.array(items.len());
                for item in items {
                    item.write(sink);
                }
            }
            Value::Map(entries) => {
                sink.map(entries.len());
                write_entries(entries, sink);
            }
        }
    }
}

/// Writes the entries of a map whose header the caller has written.
pub fn write_entries<S: Sink>(entries: &[(Box<str>, Value)], sink: &mut S) {
    for (k, v) in entries {
        sink.str(k);
        v.write(sink);
    }
}

/// Builds a [`Value`] from a stream of sink events.
#[derive(Debug, Default)]
pub struct Builder {
    stack: Vec<Partial>,
    done: Option<Value>,
}

#[derive(Debug)]
enum Partial {
    Array(Vec<Value>, usize),
    Map(Vec<(Box<str>, Value)>, usize, Option<Box<str>>),
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The finished value, if exactly one complete value was written.
    pub fn finish(self) -> Option<Value> {
        if self.stack.is_empty() {
            self.done
        } else {
            None
        }
    }

    fn push(&mut self, v: Value) {
        let mut v = v;
        loop {
            match self.stack.last_mut() {
                None => {
                    self.done = Some(v);
                    return;
                }
                Some(Partial::Array(items, len)) => {
                    items.push(v);
                    if items.len() < *len {
                        return;
                    }
                }
                Some(Partial::Map(entries, len, key)) => {
                    match key.take() {
                        // Keys arrive through `str`, which routes them here.
                        None => {
                            let Value::Str(k) = v else {
                                *key = Some(format!("{v:?}").into());
                                return;
                            };
                            *key = Some(k);
                            return;
                        }
                        Some(k) => entries.push((k, v)),
                    }
                    if entries.len() < *len {
                        return;
                    }
                }
            }
            v = match self.stack.pop() {
                Some(Partial::Array(items, _)) => Value::Array(items),
                Some(Partial::Map(entries, _, _)) => Value::Map(entries),
                None => return,
            };
        }
    }
}

impl Sink for Builder {
    fn nil(&mut self) {
        self.push(Value::Nil);
    }
    fn bool(&mut self, v: bool) {
        self.push(Value::Bool(v));
    }
    fn int(&mut self, v: i64) {
        self.push(Value::Int(v));
    }
    fn uint(&mut self, v: u64) {
        self.push(Value::UInt(v));
    }
    fn finite_float(&mut self, v: f64) {
        self.push(Value::Float(v));
    }
    fn str(&mut self, v: &str) {
        self.push(Value::Str(v.into()));
    }
    fn array(&mut self, len: usize) {
        if len == 0 {
            self.push(Value::Array(Vec::new()));
        } else {
            self.stack
                .push(Partial::Array(Vec::with_capacity(len), len));
        }
    }
    fn map(&mut self, len: usize) {
        if len == 0 {
            self.push(Value::Map(Vec::new()));
        } else {
            self.stack
                .push(Partial::Map(Vec::with_capacity(len), len, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Json;

    #[test]
    fn builder_round_trips() {
        let v = Value::Map(vec![
            ("a".into(), Value::Array(vec![Value::Int(1), Value::Nil])),
            ("b".into(), Value::Map(vec![])),
            (
                "c".into(),
                Value::Map(vec![("d".into(), Value::Float(f64::INFINITY))]),
            ),
        ]);
        let mut b = Builder::new();
        v.write(&mut b);
        let back = b.finish().unwrap();
        let (mut j1, mut j2) = (Json::new(), Json::new());
        v.write(&mut j1);
        back.write(&mut j2);
        assert_eq!(j1.buf, j2.buf);
        assert_eq!(
            String::from_utf8(j1.buf).unwrap(),
            r#"{"a":[1,null],"b":{},"c":{"d":"Infinity"}}"#
        );
    }
}
