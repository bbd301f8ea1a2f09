//! A Timber-compatible ingest server for the local machine: `timber collect`.
//!
//! ```text
//!  accept ─▶ conn (slots, idle/read timeouts) ─▶ server (auth, limits, budget) ─▶ body/json ─▶ store
//!            sheds idle connections when full       401 / 413 / 415 / 408 / 503     400          <out>/<source>.ndjson
//!                                                                                                then 202
//! ```
//!
//! `POST /v1/logs` takes OTLP/HTTP logs ([`otlp`]) through the same checks,
//! stores one frame per record under the resource's `service.name`, and
//! answers 200 as OTLP clients expect.
//!
//! Every frame is stored as one JSON line, all lines of a request in one
//! write, before the request is answered. The msgpack decoder and the JSON
//! writer are the engine's own ([`timber_core::transcode_one`], [`timber_core::Json`]).
//! Descriptors ([`limits`]), connections ([`conn`]) and memory ([`budget`]) are
//! bounded, so that no client, however slow or numerous, can starve the others.
//! The command line is [`cli`], shared by the binary and `timber collect`.
//!
//! With `--clickhouse URL` the collector is a gateway ([`gateway`]): the
//! store hands the frames to a `timber_core` engine that inserts them into
//! ClickHouse, instead of writing files.

pub mod body;
pub mod budget;
pub mod cli;
pub mod config;
pub mod conn;
pub mod gateway;
mod json;
pub mod limits;
mod msgpack;
pub mod otlp;
mod otlp_http;
mod otlp_json;
mod otlp_origin;
mod otlp_wire;
pub mod recent;
pub mod server;
pub mod store;
#[doc(hidden)]
pub mod testing;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{parse_size, Config};
use store::Store;

/// Why the collector could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--listen` value is not `host:port`.
    #[error("invalid listen address {0:?}: expected host:port, such as 127.0.0.1:8765")]
    Listen(String),
    /// `--max-body` of zero.
    #[error("the body limit must be at least 1 byte")]
    MaxBody,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The output directory could not be created.
    #[error("cannot write to {dir}: {source}")]
    Out {
        /// The directory asked for.
        dir: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The gateway's settings are wrong (`--clickhouse` and the rest).
    #[error("{0}")]
    Gateway(String),
    /// The runtime or the server failed.
    #[error("collector failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the collector until SIGINT or SIGTERM, then finishes the requests in
/// flight and returns. Prints `timber collect: listening on URL, writing to DIR`
/// to stdout once it accepts connections.
pub fn run(config: Config) -> Result<(), Error> {
    let listen = config.listen.clone();
    if config.max_body == 0 {
        return Err(Error::MaxBody);
    }
    match listen.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(Error::Listen(listen)),
    }
    // Connections and open files both take descriptors: fit both under the
    // process's limit, so that neither starves the other.
    let (max_open_files, max_connections) = limits::fit(
        config.max_open_files,
        config.max_connections,
        limits::open_files_limit(),
    );
    if !config.quiet
        && (max_open_files, max_connections) != (config.max_open_files, config.max_connections)
    {
        eprintln!(
            "timber collect: open-file limit {}: at most {max_connections} connections and {max_open_files} open files",
            limits::open_files_limit().unwrap_or_default()
        );
    }
    let (store, writing_to) = match &config.gateway {
        Some(gateway) => {
            let forward = gateway::Forwarder::new(gateway, |name| std::env::var(name).ok())
                .map_err(Error::Gateway)?;
            let to = format!(
                "forwarding to ClickHouse at {}, table {}",
                forward.display_url(),
                forward.table()
            );
            (Store::forwarding(forward), to)
        }
        None => {
            let store =
                Store::open(&config.out, config.fsync, max_open_files).map_err(|source| {
                    Error::Out {
                        dir: config.out.clone(),
                        source,
                    }
                })?;
            let dir =
                std::fs::canonicalize(store.dir()).unwrap_or_else(|_| store.dir().to_path_buf());
            let to = format!("writing to {}", dir.display());
            (store, to)
        }
    };

    // The keys' bound is a quarter of the bodies' own, so that one flag
    // bounds what clients can make the collector hold.
    let store = store.with_key_memory(config.max_memory / 4);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("timber-collect")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr()?;
        let shutdown = server::shutdown_signal()?;
        let store = Arc::new(store);
        let reopen = server::reopen_on_hangup(Arc::clone(&store), config.quiet)?;
        let state = Arc::new(server::AppState {
            store,
            api_key: config.api_key.filter(|k| !k.is_empty()),
            max_body: config.max_body,
            root_source: config.root_source.clone(),
            read_timeout: config.read_timeout,
            budget: budget::Budget::new(config.max_memory),
        });
        let limits = conn::Limits {
            max_connections,
            read_timeout: config.read_timeout,
            idle_timeout: config.idle_timeout,
        };
        if state.api_key.is_none() && !config.quiet {
            eprintln!("timber collect: no API key set, accepting every request");
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "timber collect: listening on {}, {writing_to}",
            server::url(addr),
        )?;
        stdout.flush()?;
        drop(stdout);
        let served =
            server::serve(listener, Arc::clone(&state), limits, shutdown, config.quiet).await;
        reopen.abort();
        if let Some(forward) = state.store.forwarder() {
            // What is still buffered goes to ClickHouse, or to the spool at
            // the deadline; the engine prints what it could not do.
            let timeout = forward.shutdown_timeout();
            tokio::task::block_in_place(|| forward.close(timeout));
            if !config.quiet {
                let s = forward.stats();
                eprintln!(
                    "timber collect: {} records in ClickHouse, {} spooled, {} dropped",
                    s.sent,
                    s.spooled,
                    s.dropped()
                );
            }
        }
        served?;
        Ok(())
    })
}
