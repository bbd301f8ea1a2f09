//! HTTP delivery of one batch: a keep-alive connection pool (ureq over
//! rustls, blocking, no async runtime), one POST per attempt.
//!
//! TLS always verifies: against the system's trust store, or against the
//! certificates of a CA bundle when one is given. Proxies come from the
//! environment (resolved with the settings). Redirects are never followed:
//! the destination judges a 3xx like any other answer.

use crate::destination::{Answer, Body, Destination, Outcome};
use crate::settings::Resolved;
use std::io::Read;
use std::time::Duration;
use ureq::tls::{RootCerts, TlsConfig};

/// Most of an answer's body that is read (the rest is skipped).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Cures of one attempt's answer (see [`Transport::send`]).
const MAX_REPAIRS: usize = 3;

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

    /// Sends one body with the destination's URL and headers, and the
    /// batch's idempotency key, and reports what the server said. An answer
    /// the destination can cure (ClickHouse: a missing table it may create)
    /// is cured and the body, built again from `batch` (what the cure
    /// learnt may change it: an old server's layout), sent again within the
    /// same attempt. Each cure is tried once per destination, and one may
    /// reveal the next (an old server's missing setting, then its missing
    /// table): a few rounds.
    pub fn send(
        &self,
        destination: &Destination,
        batch: &[u8],
        body: &mut Body,
        key: &str,
    ) -> Outcome {
        let mut outcome = self.post(destination, body, key);
        for _ in 0..MAX_REPAIRS {
            match &outcome {
                Outcome::Answered(a)
                    if destination.repair(a, &mut |sql| self.query(destination, sql)) =>
                {
                    *body = destination.body(batch);
                    outcome = self.post(destination, body, key);
                }
                _ => break,
            }
        }
        outcome
    }

    /// Runs one query of the destination's own (SQL as the body); the
    /// answer's text on 2xx, else what went wrong.
    fn query(&self, destination: &Destination, sql: &str) -> Result<String, String> {
        let url = destination.query_url().ok_or("no query endpoint")?;
        let mut request = self.agent.post(url);
        for (name, value) in destination.headers() {
            request = request.header(name.as_str(), value.as_str());
        }
        let resp = request.send(sql.as_bytes()).map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let mut text = String::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_string(&mut text);
        if ok {
            Ok(text)
        } else {
            Err(text)
        }
    }

    fn post(&self, destination: &Destination, body: &Body, key: &str) -> Outcome {
        let mut request = self
            .agent
            .post(&*destination.url_for(key))
            .header("Idempotency-Key", key);
        for (name, value) in destination.headers() {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(encoding) = body.encoding {
            request = request.header("Content-Encoding", encoding);
        }
        match request.send(&body.bytes[..]) {
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
