//! The collector's one command line, shared by the `timber-collector` binary
//! and `timber collect` (which hands its arguments over unparsed), so that
//! both accept exactly the same flags and answer mistakes the same way.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    parse_duration, parse_size, Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MEMORY, DEFAULT_MAX_OPEN_FILES, DEFAULT_OUT,
    DEFAULT_READ_TIMEOUT, DEFAULT_ROOT_SOURCE,
};
use crate::gateway::Gateway;
use crate::store::valid_source_id;

/// The flags that only a gateway (`--clickhouse`) takes.
const GATEWAY_FLAGS: [&str; 7] = [
    "--clickhouse",
    "--table",
    "--create-table",
    "--username",
    "--password",
    "--spool-dir",
    "--spool-max-bytes",
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the usage text and stop.
    Help,
    /// Run the collector with these settings.
    Run(Config),
}

/// The usage text, for a command called `prog`.
pub fn usage(prog: &str) -> String {
    // A fixed indent, so that the text differs between commands only in the name.
    let pad = "       ";
    format!(
        "\
usage: {prog} [--listen HOST:PORT] [--out DIR] [--api-key KEY] [--max-body SIZE]
{pad}[--root-source ID] [--max-open-files N] [--max-connections N]
{pad}[--read-timeout TIME] [--idle-timeout TIME] [--max-memory SIZE]
{pad}[--fsync] [--quiet]
{pad}[--clickhouse URL [--table NAME] [--create-table] [--username USER]
{pad} [--password PASSWORD] [--spool-dir DIR [--spool-max-bytes SIZE]]]

Receives Timber frames over HTTP and appends them to DIR/<source_id>.ndjson.
SIGHUP reopens every file (after logrotate has renamed them). With
--clickhouse it is a gateway instead: every frame becomes one row of an
otel_logs table, inserted in large batches, retried, and spooled to disk
while ClickHouse cannot take them.

  --listen HOST:PORT    address to listen on (default {DEFAULT_LISTEN}; port 0 picks one)
  --out DIR             directory for the .ndjson files (default {DEFAULT_OUT})
  --api-key KEY         require Authorization: Bearer KEY (default: $TIMBER_API_KEY)
  --max-body SIZE       largest body after decompression, e.g. 10MiB, 1MB, 512KiB
                        (default 10MiB)
  --root-source ID      source of frames sent to POST / (default {DEFAULT_ROOT_SOURCE})
  --max-open-files N    source files kept open at once (default {DEFAULT_MAX_OPEN_FILES})
  --max-connections N   client connections served at once (default {DEFAULT_MAX_CONNECTIONS});
                        both are lowered to fit the open-file limit
  --read-timeout TIME   longest a request head, then its body, may take to arrive,
                        e.g. 30s, 500ms, 2m (default {read})
  --idle-timeout TIME   longest a connection may wait for its next request (default {idle})
  --max-memory SIZE     request bodies held in memory at once, received or decoding
                        (default {memory}MiB); beyond it requests wait, then get 503
  --fsync               sync each write to disk before answering
  --quiet               print nothing to stderr
  --clickhouse URL      forward to ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123
  --table NAME          the table, db.table accepted (default otel_logs)
  --create-table        create the table when it is missing
  --username USER       ClickHouse user (default: $TIMBER_CLICKHOUSE_USER)
  --password PASSWORD   its password (default: $TIMBER_CLICKHOUSE_PASSWORD)
  --spool-dir DIR       keep on disk what ClickHouse cannot take now, and what is
                        still unsent at exit; sent from there when it can
  --spool-max-bytes SIZE  the most this gateway writes to the spool (default
                        256MiB); requests that could not all be kept there, with
                        what is held, get 503, as do those the disk has no room for",
        read = seconds(DEFAULT_READ_TIMEOUT),
        idle = seconds(DEFAULT_IDLE_TIMEOUT),
        memory = DEFAULT_MAX_MEMORY >> 20,
    )
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Parses the arguments after the command name. `env_api_key` is the value of
/// `$TIMBER_API_KEY`, the default of `--api-key`.
pub fn parse_args(
    args: impl IntoIterator<Item = String>,
    env_api_key: Option<String>,
) -> Result<Command, String> {
    let mut config = Config {
        api_key: env_api_key.filter(|k| !k.is_empty()),
        ..Config::default()
    };
    let mut gateway = Gateway::default();
    let mut gateway_flag = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let takes_value = !matches!(
            flag.as_str(),
            "-h" | "--help" | "--fsync" | "--quiet" | "--create-table"
        );
        if !takes_value && inline.is_some() {
            return Err(format!("{flag} takes no value"));
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => config.listen = value()?,
            "--out" => config.out = PathBuf::from(value()?),
            "--api-key" => config.api_key = Some(value()?).filter(|k| !k.is_empty()),
            "--max-body" => config.max_body = size(&flag, &value()?)?,
            "--max-memory" => config.max_memory = size(&flag, &value()?)?,
            "--root-source" => {
                let id = value()?;
                if !valid_source_id(&id) {
                    return Err(format!(
                        "--root-source: {id:?} is not a source id (1 to 200 of A-Z a-z 0-9 _ . -)"
                    ));
                }
                config.root_source = id;
            }
            "--max-open-files" => config.max_open_files = count(&flag, &value()?)?,
            "--max-connections" => config.max_connections = count(&flag, &value()?)?,
            "--read-timeout" => config.read_timeout = duration(&flag, &value()?)?,
            "--idle-timeout" => config.idle_timeout = duration(&flag, &value()?)?,
            "--fsync" => config.fsync = true,
            "--quiet" => config.quiet = true,
            "--clickhouse" => {
                gateway.url = value()?;
                if gateway.url.is_empty() {
                    return Err("--clickhouse needs a URL, such as http://127.0.0.1:8123".into());
                }
            }
            "--table" => gateway.table = Some(value()?),
            "--create-table" => gateway.create_table = true,
            "--username" => gateway.username = Some(value()?),
            "--password" => gateway.password = Some(value()?),
            "--spool-dir" => gateway.spool_dir = Some(PathBuf::from(value()?)),
            "--spool-max-bytes" => gateway.spool_max_bytes = Some(size(&flag, &value()?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
        if flag != "--clickhouse" && GATEWAY_FLAGS.contains(&flag.as_str()) {
            gateway_flag.get_or_insert(flag);
        }
    }
    if !gateway.url.is_empty() {
        if gateway.spool_max_bytes.is_some() && gateway.spool_dir.is_none() {
            return Err("--spool-max-bytes needs --spool-dir DIR".into());
        }
        config.gateway = Some(Box::new(gateway));
    } else if let Some(flag) = gateway_flag {
        return Err(format!("{flag} needs --clickhouse URL"));
    }
    Ok(Command::Run(config))
}

fn size(flag: &str, text: &str) -> Result<u64, String> {
    match parse_size(text) {
        None => Err(format!(
            "{flag}: not a size: {text:?} (try 10MiB, 1MB, 512KiB)"
        )),
        Some(0) => Err(format!("{flag}: a size must be at least 1 byte")),
        Some(n) => Ok(n),
    }
}

fn count(flag: &str, text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(format!("{flag}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{flag}: not a whole number: {text:?}")),
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        None => Err(format!(
            "{flag}: not a duration: {text:?} (try 30s, 500ms, 2m)"
        )),
        Some(Duration::ZERO) => Err(format!("{flag}: must be longer than 0")),
        Some(d) => Ok(d),
    }
}

/// Parses `args`, then prints the usage (exit 0), a mistake (exit 2), or runs
/// the collector until it is stopped (0) or fails (1). Messages start with
/// `prog: `, the name of the command as the user typed it.
pub fn main(prog: &str, args: impl IntoIterator<Item = String>, env_api_key: Option<String>) -> u8 {
    match parse_args(args, env_api_key) {
        Ok(Command::Help) => {
            println!("{}", usage(prog));
            0
        }
        Err(message) => {
            eprintln!("{prog}: {message}\n(see {prog} --help)");
            2
        }
        Ok(Command::Run(config)) => match crate::run(config) {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("{prog}: {err}");
                1
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| (*a).to_owned()), None)
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(config)) => config,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_every_flag() {
        assert_eq!(config(&[]), Config::default());
        let c = config(&[
            "--listen=0.0.0.0:1",
            "--out",
            "d",
            "--api-key",
            "k",
            "--max-body",
            "1k",
            "--root-source",
            "bs",
            "--max-open-files",
            "3",
            "--max-connections=4",
            "--read-timeout",
            "5s",
            "--idle-timeout",
            "500ms",
            "--max-memory",
            "2MiB",
            "--fsync",
            "--quiet",
        ]);
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.out, PathBuf::from("d"));
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.max_body, 1024);
        assert_eq!(c.root_source, "bs");
        assert_eq!((c.max_open_files, c.max_connections), (3, 4));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.max_memory, 2 << 20);
        assert!(c.fsync && c.quiet);
        assert_eq!(parse(&["--quiet", "-h", "--nonsense"]), Ok(Command::Help));
    }

    #[test]
    fn gateway_flags() {
        assert_eq!(config(&[]).gateway, None);
        let c = config(&[
            "--clickhouse",
            "http://ch:8123",
            "--table=logs.otel_logs",
            "--create-table",
            "--username",
            "u",
            "--password",
            "p",
            "--spool-dir",
            "s",
            "--spool-max-bytes",
            "4MiB",
        ]);
        let g = c.gateway.expect("a gateway");
        assert_eq!(g.url, "http://ch:8123");
        assert_eq!(g.table.as_deref(), Some("logs.otel_logs"));
        assert!(g.create_table);
        assert_eq!(
            (g.username.as_deref(), g.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(g.spool_dir, Some(PathBuf::from("s")));
        assert_eq!(g.spool_max_bytes, Some(4 << 20));
        for (args, needle) in [
            (
                &["--create-table"][..],
                "--create-table needs --clickhouse URL",
            ),
            (&["--spool-dir", "s"], "--spool-dir needs --clickhouse URL"),
            (&["--clickhouse", ""], "--clickhouse needs a URL"),
            (&["--create-table=yes"], "takes no value"),
            (
                &["--clickhouse", "http://ch", "--spool-max-bytes", "4MiB"],
                "--spool-max-bytes needs --spool-dir",
            ),
            (
                &["--spool-max-bytes", "4MiB"],
                "--spool-max-bytes needs --clickhouse",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn api_key_from_the_environment_unless_given() {
        let env = || Some("env".to_owned());
        let key = |args: &[&str]| match parse_args(args.iter().map(|a| (*a).to_owned()), env()) {
            Ok(Command::Run(c)) => c.api_key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(&[]).as_deref(), Some("env"));
        assert_eq!(key(&["--api-key", "flag"]).as_deref(), Some("flag"));
        assert_eq!(key(&["--api-key="]), None);
    }

    #[test]
    fn mistakes_are_named() {
        for (args, needle) in [
            (&["--max-body", "0"][..], "at least 1 byte"),
            (&["--max-body", "lots"], "not a size"),
            (&["--max-memory=0"], "at least 1 byte"),
            (&["--max-connections", "0"], "at least 1"),
            (&["--max-open-files", "x"], "not a whole number"),
            (&["--read-timeout", "0"], "longer than 0"),
            (&["--idle-timeout", "soon"], "not a duration"),
            (&["--root-source", "a/b"], "not a source id"),
            (&["--listen"], "needs a value"),
            (&["--fsync=yes"], "takes no value"),
            (&["--bogus"], "unknown argument"),
            (&["stray"], "unknown argument"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
