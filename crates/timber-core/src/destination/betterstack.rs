//! Better Stack, the successor of Timber's service: the same msgpack frames
//! with the source token as bearer, `POST {host}/`. Deflate by default
//! (gzip bodies have been reported not to be accepted there).

use super::timber::{msgpack_headers, snippet};
use super::{Answer, Verdict};
use crate::compress::Compression;
use crate::retry::retry_after;
use crate::settings::{Endpoint, Settings};
use std::time::SystemTime;

/// Better Stack's ingesting host when none is given.
const DEFAULT_HOST: &str = "https://in.logs.betterstack.com";

/// The URL and headers; deflate unless a compression was given.
pub(super) fn endpoint(s: &mut Settings, given: &[&str]) -> Endpoint {
    if !given.contains(&"compression") {
        s.compression = Compression::Deflate;
    }
    let host = s
        .host
        .get_or_insert_with(|| DEFAULT_HOST.to_owned())
        .clone();
    Endpoint {
        url: format!("{host}/"),
        headers: msgpack_headers(s),
        ..Endpoint::default()
    }
}

/// 2xx delivered; 408, 429 and 5xx but 501 retried; 401/403 (token), 402
/// (quota), 406 and 413 refused with what they mean.
pub(super) fn classify(a: &Answer, now: SystemTime) -> Verdict {
    let s = a.status;
    let why = match s {
        200..=299 => return Verdict::Delivered,
        408 | 429 => return retry(a, now),
        500..=599 if s != 501 => return retry(a, now),
        401 | 403 => "the source token was refused; check api_key",
        402 => "the account's quota is used up",
        406 => "the body was not accepted (406)",
        413 => "the request was too large (413)",
        _ => "",
    };
    Verdict::Reject(format!(
        "HTTP {s}{}{}",
        if why.is_empty() { "" } else { ": " },
        if why.is_empty() {
            snippet(&a.body)
        } else {
            why.to_owned()
        }
    ))
}

fn retry(a: &Answer, now: SystemTime) -> Verdict {
    Verdict::Retry(a.retry_after.as_deref().and_then(|h| retry_after(h, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        let a = |status| Answer {
            status,
            ..Answer::default()
        };
        assert_eq!(classify(&a(202), now), Verdict::Delivered);
        assert_eq!(classify(&a(503), now), Verdict::Retry(None));
        assert_eq!(
            classify(&a(402), now),
            Verdict::Reject("HTTP 402: the account's quota is used up".into())
        );
        assert!(matches!(classify(&a(403), now), Verdict::Reject(w) if w.contains("api_key")));
        assert!(matches!(classify(&a(400), now), Verdict::Reject(_)));
    }
}
