//! The Timber frames API: `POST {host}/sources/{source_id}/frames` with a
//! bearer token and a msgpack array of frames; 202 accepted, 4xx refused.

use super::{Answer, Verdict};
use crate::retry::retry_after;
use crate::settings::{Endpoint, Settings};
use std::time::SystemTime;

/// Where the Timber service was.
pub(super) const DEFAULT_HOST: &str = "https://logs.timber.io";

/// The URL and headers for the settings' host (the default one filled in),
/// source and key.
pub(super) fn endpoint(s: &mut Settings) -> Endpoint {
    let host = s
        .host
        .get_or_insert_with(|| DEFAULT_HOST.to_owned())
        .clone();
    let source = s.source_id.as_deref().unwrap_or_default();
    Endpoint {
        url: format!("{host}/sources/{}/frames", percent_encode(source)),
        headers: msgpack_headers(s),
        ..Endpoint::default()
    }
}

/// Content type and bearer token of a msgpack frames request.
pub(super) fn msgpack_headers(s: &Settings) -> Vec<(String, String)> {
    let mut headers = vec![("Content-Type".to_owned(), "application/msgpack".to_owned())];
    if let Some(key) = &s.api_key {
        headers.push(("Authorization".to_owned(), format!("Bearer {key}")));
    }
    headers
}

/// 2xx delivered; 408, 429 and 5xx but 501 retried (honouring
/// `Retry-After`); any other status refused.
pub(super) fn classify(a: &Answer, now: SystemTime) -> Verdict {
    let s = a.status;
    if (200..300).contains(&s) {
        Verdict::Delivered
    } else if s == 408 || s == 429 || (s >= 500 && s != 501) {
        Verdict::Retry(a.retry_after.as_deref().and_then(|h| retry_after(h, now)))
    } else {
        Verdict::Reject(format!("HTTP {s}{}", snippet(&a.body)))
    }
}

/// Characters of a peer's error text kept in a report.
pub(super) const SNIPPET_CHARS: usize = 200;

/// The start of an error body, for the report: cut, and escaped so that
/// a peer cannot write terminal escapes or lines of its own on stderr.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * SNIPPET_CHARS)]);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", crate::shown::printable(text, SNIPPET_CHARS))
    }
}

/// A path segment with everything but unreserved characters escaped.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(s: u16) -> Answer {
        Answer {
            status: s,
            ..Answer::default()
        }
    }

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        assert_eq!(classify(&status(202), now), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(&status(s), now), Verdict::Retry(None), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 501] {
            assert!(
                matches!(classify(&status(s), now), Verdict::Reject(_)),
                "{s}"
            );
        }
        let a = Answer {
            status: 503,
            retry_after: Some("7".into()),
            ..Answer::default()
        };
        assert_eq!(
            classify(&a, now),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn source_ids_are_escaped() {
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(percent_encode("app-1_x.y~"), "app-1_x.y~");
    }
}
