//! Fields as a frame holds them: an ordered map of [`Value`]s built from
//! `name = value` pairs, where a dotted name nests (`order_placed.id = 1234`
//! and `order_placed.total = 520.23` make `order_placed: {id, total}`), and
//! the merge of span fields into the frame's context.
//!
//! `tracing` fields are flat and typed; a nested map is what a Python
//! `extra={'order_placed': {...}}` sends, and dotted names are how a Rust
//! caller writes one without a serialization framework.

use std::borrow::Cow;
use timber_core::{ErrorInfo, Sink, Value};

/// Entries of a map, in order.
pub type Entries = Vec<(Box<str>, Value)>;

/// A field's name, or a segment of a dotted one: borrowed for `tracing`'s
/// names, which are `'static`, so that reading an event allocates no key.
pub type Key = Cow<'static, str>;

/// A field's value, or a map made of dotted names.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A value.
    Value(Value),
    /// The fields under a common dotted prefix, in order.
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// Writes it, as a [`Value`] writes itself.
    pub fn write<S: Sink>(&self, sink: &mut S) {
        match self {
            Node::Value(v) => v.write(sink),
            Node::Map(entries) => {
                sink.map(entries.len());
                for (k, v) in entries {
                    sink.str(k);
                    v.write(sink);
                }
            }
        }
    }

    /// As an owned [`Value`].
    pub fn to_value(&self) -> Value {
        match self {
            Node::Value(v) => v.clone(),
            Node::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (Box::from(&**k), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// From a [`Value`] (a map's keys become owned keys).
    pub fn from_value(value: Value) -> Node {
        match value {
            Value::Map(entries) => Node::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into()), Node::from_value(v)))
                    .collect(),
            ),
            other => Node::Value(other),
        }
    }
}

/// Fields in the order first given; a later value under the same name
/// replaces the earlier one in place.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields {
    /// The top-level entries.
    pub entries: Vec<(Key, Node)>,
}

impl Fields {
    /// Sets the field `name` (a `'static` name, as `tracing` has them) to
    /// `value`; see [`Fields::insert_with`].
    pub fn insert(&mut self, name: &'static str, value: Value) {
        self.insert_with(name, value, Cow::Borrowed);
    }

    /// Sets `name` to `value`, making keys of its segments with `key`. A
    /// dotted name is a path into nested maps, created as needed; a path
    /// that runs into a value that is not a map, or that has an empty
    /// segment (`a..b`, `.a`, `a.`), is kept as one flat name rather than
    /// losing either value.
    pub fn insert_with<'n>(&mut self, name: &'n str, value: Value, key: impl Fn(&'n str) -> Key) {
        let value = Node::Value(value);
        let nested = match name.rfind('.') {
            Some(last) if is_path(name) => nested_slot(&mut self.entries, &name[..last], &key)
                .map(|entries| (entries, &name[last + 1..])),
            _ => None,
        };
        match nested {
            Some((entries, leaf)) => set(entries, leaf, value, key),
            None => set(&mut self.entries, name, value, key),
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fields as a map [`Value`] (a span's, for the context).
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.entries
                .iter()
                .map(|(k, v)| (Box::from(&**k), v.to_value()))
                .collect(),
        )
    }
}

/// Whether a dotted name is a path: no segment of it is empty.
fn is_path(name: &str) -> bool {
    let b = name.as_bytes();
    !(b.first() == Some(&b'.') || b.last() == Some(&b'.') || b.windows(2).any(|w| w == b".."))
}

/// The map at `parents` (dot-separated, none empty), creating the maps on
/// the way; `None` if a segment on the way holds a value. Nothing is
/// created before that is known: once a segment is missing, every one
/// after it is created inside a new, empty map.
fn nested_slot<'e, 'n>(
    mut entries: &'e mut Vec<(Key, Node)>,
    parents: &'n str,
    key: &impl Fn(&'n str) -> Key,
) -> Option<&'e mut Vec<(Key, Node)>> {
    let mut rest = parents;
    loop {
        let (segment, tail) = match rest.find('.') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let at = match entries.iter().position(|(k, _)| k == segment) {
            Some(at) => at,
            None => {
                entries.push((key(segment), Node::Map(Vec::with_capacity(4))));
                entries.len() - 1
            }
        };
        match &mut entries[at].1 {
            Node::Map(inner) => entries = inner,
            Node::Value(_) => return None,
        }
        match tail {
            Some(t) => rest = t,
            None => return Some(entries),
        }
    }
}

fn set<'n>(
    entries: &mut Vec<(Key, Node)>,
    name: &'n str,
    value: Node,
    key: impl Fn(&'n str) -> Key,
) {
    match entries.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => entries.push((key(name), value)),
    }
}

/// Sets `name` in a map of values.
fn set_value(entries: &mut Entries, name: &str, value: Value) {
    match entries.iter_mut().find(|(k, _)| &**k == name) {
        Some(slot) => slot.1 = value,
        None => entries.push((name.into(), value)),
    }
}

/// Merges one span's context entry (its name, and its fields as a map)
/// into the context being built, as `timber.context(name=fields)` does:
/// an entry of the same name from an outer span is merged key by key, the
/// inner span's value winning.
pub fn merge_span(context: &mut Entries, name: &str, fields: &Value) {
    match (context.iter_mut().find(|(k, _)| &**k == name), fields) {
        (Some((_, Value::Map(outer))), Value::Map(inner)) => {
            for (k, v) in inner {
                set_value(outer, k, v.clone());
            }
        }
        (Some((_, other)), _) => *other = fields.clone(),
        (None, _) => context.push((name.into(), fields.clone())),
    }
}

/// An integer of any width as the frame holds it: beyond 64 bits, its
/// digits (as the Python handler sends integers it cannot fit).
pub fn wide_int(v: i128) -> Value {
    if let Ok(i) = i64::try_from(v) {
        Value::Int(i)
    } else if let Ok(u) = u64::try_from(v) {
        Value::UInt(u)
    } else {
        Value::Str(v.to_string().into())
    }
}

/// An unsigned integer as the frame holds it.
pub fn unsigned(v: u128) -> Value {
    match i128::try_from(v) {
        Ok(i) => wide_int(i),
        Err(_) => Value::Str(v.to_string().into()),
    }
}

/// The frame's `error` for an error described only by text (a field named
/// `error` recorded with `%` or `?`, or a `log` key-value): the type's name
/// when the text starts with one, as a derived `Debug` does
/// (`ParseIntError { kind: InvalidDigit }`), else `Error`.
pub fn error_from_text(text: String) -> ErrorInfo {
    ErrorInfo {
        name: type_name_prefix(&text).unwrap_or("Error").to_owned(),
        message: text,
        backtrace: Vec::new(),
    }
}

/// The frame's `error` for a `&dyn Error`: its type's name (from its
/// `Debug`, as above; `std::io::Error`, whose `Debug` starts with a variant,
/// by type), and its message followed by its sources, `: `-separated as
/// `anyhow` prints them with `{:#}`; a source whose text the message
/// already contains is not repeated. Rust errors carry no portable
/// backtrace, so `backtrace` is empty.
pub fn error_from_dyn(error: &(dyn std::error::Error + 'static)) -> ErrorInfo {
    let name = if error.is::<std::io::Error>() {
        "std::io::Error".to_owned()
    } else {
        let debug = format!("{error:?}");
        type_name_prefix(&debug).unwrap_or("Error").to_owned()
    };
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    ErrorInfo {
        name,
        message,
        backtrace: Vec::new(),
    }
}

/// The leading `UpperCamelCase` identifier (a path such as `io::Error`
/// allowed) of `text`, when it is followed by nothing, ` {`, `{` or `(`,
/// which is how a derived `Debug` starts; `None` for prose.
fn type_name_prefix(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let name = &text[..end];
    let last = name.rsplit("::").next()?;
    let rest = &text[end..];
    let follows = rest.is_empty() || rest.starts_with(" {") || rest.starts_with(['{', '(']);
    let camel = last.starts_with(|c: char| c.is_ascii_uppercase())
        && last.chars().all(|c| c.is_alphanumeric() || c == '_');
    (follows && camel && !name.ends_with(':')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn dotted_names_nest_in_order() {
        let mut f = Fields::default();
        f.insert("order_placed.id", Value::Int(1234));
        f.insert("n", Value::Int(1));
        f.insert("order_placed.total", Value::Float(520.23));
        f.insert("a.b.c", Value::Bool(true));
        assert_eq!(
            f.to_value(),
            map(&[
                (
                    "order_placed",
                    map(&[("id", Value::Int(1234)), ("total", Value::Float(520.23))])
                ),
                ("n", Value::Int(1)),
                ("a", map(&[("b", map(&[("c", Value::Bool(true))]))])),
            ])
        );
        // Names from `log` are not 'static: the same nesting, owned keys.
        let mut owned = Fields::default();
        for (name, v) in [("order_placed.id", 1234), ("n", 1)] {
            let name = name.to_owned();
            owned.insert_with(&name, Value::Int(v), |s| Cow::Owned(s.to_owned()));
        }
        assert_eq!(
            owned.to_value(),
            map(&[
                ("order_placed", map(&[("id", Value::Int(1234))])),
                ("n", Value::Int(1)),
            ])
        );
    }

    #[test]
    fn a_path_through_a_value_stays_flat_and_loses_nothing() {
        let mut f = Fields::default();
        f.insert("a", Value::Int(1));
        f.insert("a.b", Value::Int(2));
        f.insert("x..y", Value::Int(3));
        f.insert(".z", Value::Int(4));
        f.insert("a", Value::Int(5));
        assert_eq!(
            f.to_value(),
            map(&[
                ("a", Value::Int(5)),
                ("a.b", Value::Int(2)),
                ("x..y", Value::Int(3)),
                (".z", Value::Int(4)),
            ])
        );
        // A refused path creates no map on its way.
        let mut f = Fields::default();
        f.insert("p.q", Value::Int(1));
        f.insert("p.q.r", Value::Int(2));
        assert_eq!(
            f.to_value(),
            map(&[
                ("p", map(&[("q", Value::Int(1))])),
                ("p.q.r", Value::Int(2))
            ])
        );
        // And a value through the map is written as the map it is.
        let mut j = timber_core::Json::new();
        f.entries[0].1.write(&mut j);
        assert_eq!(String::from_utf8(j.buf).unwrap(), r#"{"q":1}"#);
        assert_eq!(Node::from_value(f.to_value()), Node::Map(f.entries.clone()));
    }

    #[test]
    fn spans_merge_per_key_inner_wins() {
        let mut ctx = Vec::new();
        let job = map(&[("id", Value::Int(123)), ("count", Value::Int(1))]);
        merge_span(&mut ctx, "job", &job);
        merge_span(&mut ctx, "user", &map(&[("id", Value::Int(7))]));
        merge_span(&mut ctx, "job", &map(&[("count", Value::Int(2))]));
        assert_eq!(
            ctx,
            vec![
                (
                    "job".into(),
                    map(&[("id", Value::Int(123)), ("count", Value::Int(2))])
                ),
                ("user".into(), map(&[("id", Value::Int(7))])),
            ]
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_digits() {
        assert_eq!(wide_int(-5), Value::Int(-5));
        assert_eq!(wide_int(i128::from(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(
            wide_int(i128::MIN),
            Value::Str(i128::MIN.to_string().into())
        );
        assert_eq!(
            unsigned(u128::MAX),
            Value::Str(u128::MAX.to_string().into())
        );
        assert_eq!(unsigned(7), Value::Int(7));
    }

    #[test]
    fn error_names_from_debug_text_never_from_prose() {
        let name = |t: &str| error_from_text(t.to_owned()).name;
        assert_eq!(
            name("ParseIntError { kind: InvalidDigit }"),
            "ParseIntError"
        );
        assert_eq!(name("Timeout(5)"), "Timeout");
        assert_eq!(name("my_crate::Error { code: 1 }"), "my_crate::Error");
        assert_eq!(name("Connection refused (os error 111)"), "Error");
        assert_eq!(name("invalid digit found in string"), "Error");
        assert_eq!(name(""), "Error");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not load config")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn dyn_errors_carry_their_sources() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "no file"));
        let info = error_from_dyn(&e);
        assert_eq!(info.name, "Outer");
        assert_eq!(info.message, "could not load config: no file");
        assert!(info.backtrace.is_empty());
        let io = std::io::Error::other("disk on fire");
        assert_eq!(error_from_dyn(&io).name, "std::io::Error");
    }
}
