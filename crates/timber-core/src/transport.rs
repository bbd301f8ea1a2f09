//! HTTP delivery of one batch: a keep-alive connection pool (ureq over
//! rustls, blocking, no async runtime), one POST per batch.

use crate::retry::Outcome;
use std::io::Read;
use std::time::Duration;

/// Where and how batches are sent.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Full URL of the frames endpoint.
    pub url: String,
    /// API key, sent as a bearer token.
    pub api_key: String,
    /// Per-request timeout (connect, send, receive).
    pub timeout: Duration,
}

/// Builds the Timber frames URL for a host and a source.
pub fn frames_url(host: &str, source_id: &str) -> String {
    format!(
        "{}/sources/{}/frames",
        host.trim_end_matches('/'),
        source_id
    )
}

/// A connection pool bound to one endpoint.
pub struct Transport {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl std::fmt::Debug for Transport {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("url", &self.url).finish()
    }
}

impl Transport {
    /// A pool for `endpoint`; connects lazily.
    pub fn new(endpoint: &Endpoint) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(endpoint.timeout))
            .max_idle_age(Duration::from_secs(60))
            .user_agent(concat!("timber-python/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            url: endpoint.url.clone(),
            auth: format!("Bearer {}", endpoint.api_key),
        }
    }

    /// Sends one msgpack body and reports what the server said.
    pub fn send(&self, body: &[u8]) -> Outcome {
        let result = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/msgpack")
            .send(body);
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read the (small) answer so the connection can be reused.
                let mut sink = Vec::new();
                let _ = resp
                    .into_body()
                    .into_reader()
                    .take(64 * 1024)
                    .read_to_end(&mut sink);
                Outcome::Status(status, retry_after)
            }
            Err(e) => Outcome::Transport(e.to_string()),
        }
    }
}
