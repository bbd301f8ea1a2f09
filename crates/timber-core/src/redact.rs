//! Redaction while encoding: the value of every map entry whose key is one
//! of the `redact` names (exact, case-insensitive, at any depth) is written
//! as [`REDACTED`], so secrets never leave the process, whatever sink (the
//! msgpack frame, JSON, an OTLP value) they were going to.

use crate::encode::Sink;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Whether `key` is one of `names` (given in lower case).
pub fn is_redacted(names: &[Box<str>], key: &str) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(key))
}

#[derive(Debug)]
struct Open {
    /// Events still expected in this container (keys and values of a map).
    left: usize,
    is_map: bool,
}

/// Wraps a sink, replacing the values of redacted keys.
#[derive(Debug)]
pub struct Redacting<'a, S> {
    /// The sink written to.
    pub inner: S,
    names: &'a [Box<str>],
    open: Vec<Open>,
    /// The next value follows a redacted key.
    redact_next: bool,
    /// Events of a redacted container still to swallow, per nesting level.
    skip: Vec<usize>,
}

impl<'a, S: Sink> Redacting<'a, S> {
    /// A redacting wrapper of `inner` for `names` (compared ignoring case).
    pub fn new(inner: S, names: &'a [Box<str>]) -> Self {
        Self {
            inner,
            names,
            open: Vec::new(),
            redact_next: false,
            skip: Vec::new(),
        }
    }

    /// Handles one event: `len` is the length of a container it starts
    /// (`None` for a scalar), `key` the text of a string. Returns whether
    /// to forward it as it is.
    fn event(&mut self, container: Option<(usize, bool)>, key: Option<&str>) -> bool {
        if let Some(left) = self.skip.last_mut() {
            *left -= 1;
            if let Some((len, is_map)) = container {
                if len > 0 {
                    self.skip.push(if is_map { 2 * len } else { len });
                }
            }
            while self.skip.last() == Some(&0) {
                self.skip.pop();
            }
            return false;
        }
        let at_key = self
            .open
            .last()
            .is_some_and(|o| o.is_map && o.left % 2 == 0);
        let redact = std::mem::take(&mut self.redact_next) && !at_key;
        if let Some(o) = self.open.last_mut() {
            o.left -= 1;
        }
        if at_key {
            self.redact_next = key.is_some_and(|k| is_redacted(self.names, k));
        }
        if redact {
            self.inner.str(REDACTED);
            if let Some((len, is_map)) = container {
                if len > 0 {
                    self.skip.push(if is_map { 2 * len } else { len });
                }
            }
        } else if let Some((len, is_map)) = container {
            if len > 0 {
                self.open.push(Open {
                    left: if is_map { 2 * len } else { len },
                    is_map,
                });
            }
        }
        while self.open.last().is_some_and(|o| o.left == 0) {
            self.open.pop();
        }
        !redact
    }
}

impl<S: Sink> Sink for Redacting<'_, S> {
    fn nil(&mut self) {
        if self.event(None, None) {
            self.inner.nil();
        }
    }
    fn bool(&mut self, v: bool) {
        if self.event(None, None) {
            self.inner.bool(v);
        }
    }
    fn int(&mut self, v: i64) {
        if self.event(None, None) {
            self.inner.int(v);
        }
    }
    fn uint(&mut self, v: u64) {
        if self.event(None, None) {
            self.inner.uint(v);
        }
    }
    fn finite_float(&mut self, v: f64) {
        if self.event(None, None) {
            self.inner.finite_float(v);
        }
    }
    fn float(&mut self, v: f64) {
        // One event, whatever the float becomes.
        if self.event(None, None) {
            self.inner.float(v);
        }
    }
    fn str(&mut self, v: &str) {
        if self.event(None, Some(v)) {
            self.inner.str(v);
        }
    }
    fn array(&mut self, len: usize) {
        if self.event(Some((len, false)), None) {
            self.inner.array(len);
        }
    }
    fn map(&mut self, len: usize) {
        if self.event(Some((len, true)), None) {
            self.inner.map(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Json;

    fn redacted(write: impl FnOnce(&mut Redacting<'_, Json>)) -> String {
        let names: Vec<Box<str>> = vec!["password".into(), "authorization".into()];
        let mut r = Redacting::new(Json::new(), &names);
        write(&mut r);
        assert!(r.inner.is_complete());
        String::from_utf8(r.inner.buf).unwrap()
    }

    #[test]
    fn values_of_named_keys_at_any_depth() {
        let out = redacted(|s| {
            s.map(3);
            s.str("user");
            s.map(2);
            s.str("name");
            s.str("ann");
            s.str("Password");
            s.str("hunter2");
            s.str("headers");
            s.array(1);
            s.map(1);
            s.str("AUTHORIZATION");
            s.map(2);
            s.str("scheme");
            s.str("Bearer");
            s.str("token");
            s.array(2);
            s.int(1);
            s.float(f64::NAN);
            s.str("after");
            s.int(7);
        });
        assert_eq!(
            out,
            r#"{"user":{"name":"ann","Password":"[REDACTED]"},"headers":[{"AUTHORIZATION":"[REDACTED]"}],"after":7}"#
        );
    }

    #[test]
    fn a_value_equal_to_a_name_is_not_a_key() {
        let out = redacted(|s| {
            s.map(2);
            s.str("field");
            s.str("password");
            s.str("list");
            s.array(1);
            s.str("password");
        });
        assert_eq!(out, r#"{"field":"password","list":["password"]}"#);
    }
}
