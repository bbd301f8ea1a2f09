//! How an option's value appears in a message: every refusal, report and
//! banner that quotes a value goes through [`shown`], so that a secret (a
//! key, a user, a password, a header list, a URL's `user:password@`) is
//! described by its length and kind only and never written out, and
//! anything else is quoted with its control characters escaped.

use crate::settings::Raw;

/// Options whose values are credentials: never quoted.
pub const SECRET_OPTIONS: &[&str] = &["api_key", "username", "password"];

/// Options whose values are URLs: quoted without their userinfo.
const URL_OPTIONS: &[&str] = &["host"];

/// `raw`, given for the option `name`, as a message may show it.
pub fn shown(name: &str, raw: &Raw) -> String {
    if SECRET_OPTIONS.contains(&name) {
        return secret(raw);
    }
    match raw {
        Raw::Str(s) | Raw::Env(s) if URL_OPTIONS.contains(&name) => format!("{:?}", url(s)),
        _ => describe(raw),
    }
}

/// A secret value by its kind and length only.
pub fn secret(raw: &Raw) -> String {
    match raw {
        Raw::None => "None".to_owned(),
        Raw::Bool(_) => "a bool".to_owned(),
        Raw::Int(_) => "an int".to_owned(),
        Raw::Float(_) => "a float".to_owned(),
        Raw::Str(s) | Raw::Env(s) => secret_text(s),
        Raw::List(items) => format!("a list of {} items", items.len()),
        Raw::Other(t) => format!("a {t}"),
    }
}

/// A secret text by its length only.
pub fn secret_text(s: &str) -> String {
    format!("a text of {} characters (not shown)", s.chars().count())
}

/// A URL with its `user:password@`, if any, replaced by its length.
/// Without a scheme, the text is read as `user:password@host...`, as a
/// proxy setting may be written.
pub fn url(s: &str) -> String {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), s),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => format!(
            "{scheme}[userinfo of {} characters, not shown]@{host}{path}",
            userinfo.chars().count()
        ),
        None => s.to_owned(),
    }
}

/// A value that is not a secret, as Python would write it (text quoted,
/// control characters escaped).
fn describe(raw: &Raw) -> String {
    match raw {
        Raw::None => "None".to_owned(),
        Raw::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => f.to_string(),
        Raw::Str(s) | Raw::Env(s) => format!("{s:?}"),
        Raw::List(items) => format!(
            "[{}]",
            items.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Raw::Other(t) => format!("a {t}"),
    }
}

/// Text from a peer (an error body, a `partial_success` message) for one
/// line of a report: at most `max` characters, control characters and
/// terminal escapes written as `\u{..}` escapes, the cut marked.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str(&format!("... ({} characters in all)", text.chars().count()));
            break;
        }
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_by_length_only() {
        let s = shown("api_key", &Raw::Str("hunter2\n".into()));
        assert_eq!(s, "a text of 8 characters (not shown)");
        assert_eq!(shown("password", &Raw::Int(1234)), "an int");
        assert_eq!(shown("timeout", &Raw::Int(0)), "0");
        assert_eq!(shown("table", &Raw::Str("a\nb".into())), "\"a\\nb\"");
    }

    #[test]
    fn userinfo_is_hidden() {
        let s = shown("host", &Raw::Str("http://u:hunter2@h:1/p?x".into()));
        assert_eq!(
            s,
            "\"http://[userinfo of 9 characters, not shown]@h:1/p?x\""
        );
        assert_eq!(url("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(url("garbage"), "garbage");
        assert_eq!(
            url("u:pw@proxy:1"),
            "[userinfo of 4 characters, not shown]@proxy:1"
        );
    }

    #[test]
    fn peer_text_is_cut_and_escaped() {
        assert_eq!(printable("a\u{1b}[31mb", 100), "a\\u{1b}[31mb");
        let long = "x".repeat(1000);
        let p = printable(&long, 10);
        assert!(p.starts_with("xxxxxxxxxx... (1000 characters"), "{p}");
    }
}
