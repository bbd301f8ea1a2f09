//! Fields as a frame holds them: an ordered map of [`Value`]s built from
//! `name = value` pairs, where a dotted name nests (`order_placed.id = 1234`
//! and `order_placed.total = 520.23` make `order_placed: {id, total}`), and
//! the merge of span fields into the frame's context.
//!
//! `tracing` fields are flat and typed; a nested map is what a Python
//! `extra={'order_placed': {...}}` sends, and dotted names are how a Rust
//! caller writes one without a serialization framework.

use timber_core::{ErrorInfo, Value};

/// Entries of a map, in order.
pub type Entries = Vec<(Box<str>, Value)>;

/// Fields in the order first given; a later value under the same name
/// replaces the earlier one in place.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields {
    /// The top-level entries.
    pub entries: Entries,
}

impl Fields {
    /// Sets `name` to `value`. A dotted name is a path into nested maps,
    /// created as needed; a path that runs into a value that is not a map,
    /// or that has an empty segment (`a..b`, `.a`, `a.`), is kept as one
    /// flat name rather than losing either value.
    pub fn insert(&mut self, name: &str, value: Value) {
        if !name.contains('.') || name.split('.').any(str::is_empty) {
            return set(&mut self.entries, name, value);
        }
        match nested_slot(&mut self.entries, name) {
            Some((entries, leaf)) => set(entries, leaf, value),
            None => set(&mut self.entries, name, value),
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The map that holds the last segment of `path`, creating the maps on
/// the way; `None` if a segment on the way holds something else.
fn nested_slot<'e, 'p>(
    mut entries: &'e mut Entries,
    path: &'p str,
) -> Option<(&'e mut Entries, &'p str)> {
    let (parents, leaf) = path.rsplit_once('.')?;
    // Checked before anything is created, so that a refused path leaves no
    // empty maps behind.
    let mut probe: &[(Box<str>, Value)] = entries;
    for segment in parents.split('.') {
        match probe.iter().find(|(k, _)| &**k == segment) {
            Some((_, Value::Map(inner))) => probe = inner,
            Some(_) => return None,
            None => break,
        }
    }
    for segment in parents.split('.') {
        let at = match entries.iter().position(|(k, _)| &**k == segment) {
            Some(at) => at,
            None => {
                entries.push((segment.into(), Value::Map(Vec::new())));
                entries.len() - 1
            }
        };
        match &mut entries[at].1 {
            Value::Map(inner) => entries = inner,
            _ => return None,
        }
    }
    Some((entries, leaf))
}

fn set(entries: &mut Entries, name: &str, value: Value) {
    match entries.iter_mut().find(|(k, _)| &**k == name) {
        Some(slot) => slot.1 = value,
        None => entries.push((name.into(), value)),
    }
}

/// Merges one span's fields into the context being built, as
/// `timber.context(name=fields)` does: the span is a top-level entry named
/// after it, and an entry of the same name from an outer span is merged
/// key by key, the inner span's value winning.
pub fn merge_span(context: &mut Entries, name: &str, fields: &Fields) {
    if fields.is_empty() {
        return;
    }
    match context.iter_mut().find(|(k, _)| &**k == name) {
        Some((_, Value::Map(outer))) => {
            for (k, v) in &fields.entries {
                set(outer, k, v.clone());
            }
        }
        Some((_, other)) => *other = Value::Map(fields.entries.clone()),
        None => context.push((name.into(), Value::Map(fields.entries.clone()))),
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
            f.entries,
            vec![
                (
                    "order_placed".into(),
                    map(&[("id", Value::Int(1234)), ("total", Value::Float(520.23))])
                ),
                ("n".into(), Value::Int(1)),
                ("a".into(), map(&[("b", map(&[("c", Value::Bool(true))]))])),
            ]
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
            f.entries,
            vec![
                ("a".into(), Value::Int(5)),
                ("a.b".into(), Value::Int(2)),
                ("x..y".into(), Value::Int(3)),
                (".z".into(), Value::Int(4)),
            ]
        );
        // A refused path creates no map on its way.
        let mut f = Fields::default();
        f.insert("p.q", Value::Int(1));
        f.insert("p.q.r", Value::Int(2));
        assert_eq!(
            f.entries,
            vec![
                ("p".into(), map(&[("q", Value::Int(1))])),
                ("p.q.r".into(), Value::Int(2)),
            ]
        );
    }

    #[test]
    fn spans_merge_per_key_inner_wins() {
        let fields = |entries: &[(&str, Value)]| {
            let mut f = Fields::default();
            for (k, v) in entries {
                f.insert(k, v.clone());
            }
            f
        };
        let mut ctx = Vec::new();
        merge_span(
            &mut ctx,
            "job",
            &fields(&[("id", Value::Int(123)), ("count", Value::Int(1))]),
        );
        merge_span(&mut ctx, "empty", &Fields::default());
        merge_span(&mut ctx, "user", &fields(&[("id", Value::Int(7))]));
        merge_span(&mut ctx, "job", &fields(&[("count", Value::Int(2))]));
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
