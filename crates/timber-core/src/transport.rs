//! HTTP delivery of one batch: a keep-alive connection pool (ureq over
//! rustls, blocking, no async runtime), one POST per attempt.
//!
//! TLS always verifies: against the system's trust store, or against the
//! certificates of a CA bundle when one is given. Proxies come from the
//! environment (resolved with the settings). Redirects are never followed:
//! the destination judges a 3xx like any other answer.

use crate::destination::{Answer, Body, Cure, Destination, Outcome, Verdict};
use crate::settings::Resolved;
use std::io::Read;
use std::time::Duration;
use ureq::tls::{RootCerts, TlsConfig};

/// Most of an answer's body that is read (the rest is skipped).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Requests of one attempt, cures included (see [`Transport::send`]).
const MAX_REPAIRS: usize = 4;

/// How one attempt at a batch ended.
#[derive(Debug)]
pub(crate) struct Sent {
    /// What to do with the batch.
    pub verdict: Verdict,
    /// Bytes on the wire of what was delivered.
    pub wire: usize,
    /// What happened, for messages.
    pub said: String,
}

/// A connection pool bound to one destination.
pub struct Transport {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Transport {
    // The agent holds nothing worth printing, and never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

impl Transport {
    /// A pool for the resolved settings; connects lazily.
    pub fn new(resolved: &Resolved) -> Self {
        let roots = match &resolved.ca_certs {
            Some(certs) => RootCerts::Specific(certs.clone()),
            None => RootCerts::PlatformVerifier,
        };
        // The proxy was checked when the settings were resolved.
        let proxy = resolved
            .proxy
            .as_deref()
            .and_then(|p| ureq::Proxy::new(p).ok());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .proxy(proxy)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(resolved.settings.timeout))
            .max_idle_age(Duration::from_secs(60))
            .user_agent(concat!("timber-python/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent }
    }

    /// One attempt at a batch: sends its request (built again if what the
    /// destination knows changed since `body` was built) with the batch's
    /// idempotency key, and judges the answer. First the destination learns
    /// what it must know before any insert (ClickHouse: the table's
    /// layout); an answer it can cure (a missing table it may create, a
    /// setting the server lacks, or a cure another sender made meanwhile)
    /// is cured and the request, built again, sent again within the same
    /// attempt: one cure may reveal the next, so a few rounds. A batch
    /// refused for what its records are together ([`Verdict::Split`]) is
    /// sent in parts, each with its own key, within the same attempt.
    pub(crate) fn send(
        &self,
        destination: &Destination,
        batch: &[u8],
        body: &mut Body,
        key: &str,
    ) -> Sent {
        let mut run = |sql: &str| self.query(destination, sql);
        let mut outcome = None;
        for _ in 0..MAX_REPAIRS {
            if let Err((verdict, said)) = destination.prepare(&mut run) {
                return Sent {
                    verdict,
                    wire: 0,
                    said,
                };
            }
            if body.generation != destination.generation() {
                *body = destination.body(batch, key);
            }
            let sent = self.post(destination, body, key);
            if let Outcome::Answered(a) = &sent {
                match destination.repair(a, body.generation, &mut run) {
                    Cure::Resend => {
                        // Built again at the top of the loop.
                        body.generation = u64::MAX;
                        outcome = Some(sent);
                        continue;
                    }
                    Cure::Failed(verdict, said) => {
                        return Sent {
                            verdict,
                            wire: 0,
                            said,
                        }
                    }
                    Cure::None => {}
                }
            }
            outcome = Some(sent);
            break;
        }
        let outcome = outcome.unwrap_or_else(|| Outcome::Transport("no request sent".into()));
        match destination.classify(&outcome, std::time::SystemTime::now()) {
            Verdict::Split(why) => self.send_parts(destination, batch, why),
            verdict => Sent {
                verdict,
                wire: body.bytes.len(),
                said: describe(&outcome),
            },
        }
    }

    /// Sends a batch refused whole in two parts, each an attempt of its
    /// own (split again if it must be); the verdict of the whole: retried
    /// (all of it, the parts delivered already are deduplicated by their
    /// keys) if a part must be, else delivered but for the parts refused.
    fn send_parts(&self, destination: &Destination, batch: &[u8], why: String) -> Sent {
        let Some(parts) = destination.split(batch) else {
            return Sent {
                verdict: Verdict::Reject(why.clone()),
                wire: 0,
                said: why,
            };
        };
        let total: u64 = parts.iter().map(|(_, n)| n).sum();
        let (mut wire, mut rejected, mut reason) = (0, 0, None);
        for (part, count) in parts {
            let key = idempotency_key(&part);
            let mut body = destination.body(&part, &key);
            let sent = self.send(destination, &part, &mut body, &key);
            match sent.verdict {
                Verdict::Delivered => wire += sent.wire,
                Verdict::Partial { rejected: n, why } => {
                    wire += sent.wire;
                    rejected += n.min(count);
                    reason.get_or_insert(why);
                }
                Verdict::Reject(why) | Verdict::Split(why) => {
                    rejected += count;
                    reason.get_or_insert(why);
                }
                Verdict::Retry(_) => return sent,
            }
        }
        let verdict = match reason {
            None => Verdict::Delivered,
            Some(why) if rejected >= total => Verdict::Reject(why),
            Some(why) => Verdict::Partial { rejected, why },
        };
        Sent {
            verdict,
            wire,
            said: why,
        }
    }

    /// Runs one query of the destination's own (SQL as the body) and
    /// reports what the server said.
    fn query(&self, destination: &Destination, sql: &str) -> Outcome {
        let Some(url) = destination.query_url() else {
            return Outcome::Transport("no query endpoint".into());
        };
        let mut request = self.agent.post(url);
        for (name, value) in destination.headers() {
            request = request.header(name.as_str(), value.as_str());
        }
        answer(request.send(sql.as_bytes()))
    }

    fn post(&self, destination: &Destination, body: &Body, key: &str) -> Outcome {
        let mut request = self.agent.post(&body.url).header("Idempotency-Key", key);
        for (name, value) in destination.headers() {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(encoding) = body.encoding {
            request = request.header("Content-Encoding", encoding);
        }
        answer(request.send(&body.bytes[..]))
    }
}

/// What happened, for messages.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered(a) => format!("HTTP {}", a.status),
        Outcome::Transport(e) => e.clone(),
    }
}

/// The answer to a request, its body read with a cap.
fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Outcome {
    match result {
        Ok(resp) => {
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let status = resp.status().as_u16();
            let retry_after = header("retry-after");
            let location = header("location");
            let exception_code = header("x-clickhouse-exception-code");
            // Read the (small) answer so the connection can be reused;
            // a larger one is cut, never held whole.
            let mut body = Vec::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(MAX_ANSWER_BYTES)
                .read_to_end(&mut body);
            Outcome::Answered(Answer {
                status,
                retry_after,
                location,
                exception_code,
                body,
            })
        }
        Err(e) => Outcome::Transport(e.to_string()),
    }
}

/// The idempotency key of a batch: a digest of its records, so that every
/// retry and every replay from the spool, by this process or the next,
/// carries the same key, and a receiver can drop what it already stored.
pub fn idempotency_key(records: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u64| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        records.hash(&mut h);
        h.finish()
    };
    format!(
        "{:016x}{:016x}",
        half(0x7469_6d62_6572),
        half(0x6672_616d_6573)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_content() {
        assert_eq!(idempotency_key(b"abc"), idempotency_key(b"abc"));
        assert_ne!(idempotency_key(b"abc"), idempotency_key(b"abd"));
        assert_eq!(idempotency_key(b"").len(), 32);
    }
}
