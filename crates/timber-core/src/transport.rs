//! HTTP delivery of one batch: a keep-alive connection pool (ureq over
//! rustls, blocking, no async runtime), one POST per batch.
//!
//! TLS always verifies: against the system's trust store, or against the
//! certificates of a CA bundle when one is given. Proxies come from the
//! environment (see [`crate::proxy`]).

use crate::compress::Compression;
use crate::proxy::proxy_for;
use crate::retry::Outcome;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Where and how batches are sent.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Full URL of the frames endpoint.
    pub url: String,
    /// API key, sent as a bearer token.
    pub api_key: String,
    /// Per-request timeout (connect, send, receive).
    pub timeout: Duration,
    /// Body encoding.
    pub compression: Compression,
    /// Trusted roots instead of the system's, from a CA bundle.
    pub ca_certs: Option<Arc<Vec<Certificate<'static>>>>,
}

impl Endpoint {
    /// The URL without any `user:password@`, for messages.
    pub fn display_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}{path}")
            }
            None => self.url.clone(),
        }
    }

    /// The proxy requests go through, from the environment; an error for a
    /// proxy setting that cannot be used (never silently bypassed).
    pub fn proxy(&self) -> Result<Option<ureq::Proxy>, String> {
        match proxy_for(&self.url, |k| std::env::var(k).ok()) {
            None => Ok(None),
            Some(p) => match ureq::Proxy::new(&p) {
                Ok(proxy) => Ok(Some(proxy)),
                Err(e) => Err(format!("invalid proxy setting {p:?}: {e}")),
            },
        }
    }
}

/// Reads the certificates of a PEM CA bundle.
pub fn load_ca_bundle(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate found".to_owned());
    }
    Ok(certs)
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
        let roots = match &endpoint.ca_certs {
            Some(certs) => RootCerts::Specific(certs.clone()),
            None => RootCerts::PlatformVerifier,
        };
        // A bad proxy setting was refused when the engine was made.
        let proxy = endpoint.proxy().ok().flatten();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .proxy(proxy)
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

    /// Sends one msgpack body, encoded as `encoding` says, and reports what
    /// the server said.
    pub fn send(&self, body: &[u8], encoding: Option<&str>) -> Outcome {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/msgpack");
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        let result = request.send(body);
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
