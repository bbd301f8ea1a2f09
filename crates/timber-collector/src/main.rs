//! `timber-collector`: the collector as a plain binary, with the flags of
//! `timber collect`, for running and benchmarking it without Python.

use std::path::PathBuf;
use std::process::ExitCode;

use timber_collector::{parse_size, run, Config};

const USAGE: &str = "\
usage: timber-collector [--listen HOST:PORT] [--out DIR] [--api-key KEY]
                        [--max-body SIZE] [--fsync] [--quiet]

Receives Timber frames over HTTP and appends them to DIR/<source_id>.ndjson.

  --listen HOST:PORT  address to listen on (default 127.0.0.1:8765; port 0 picks one)
  --out DIR           directory for the .ndjson files (default ./timber-logs)
  --api-key KEY       require Authorization: Bearer KEY (default: $TIMBER_API_KEY)
  --max-body SIZE     largest body after decompression, e.g. 10MiB, 1MB, 512KiB
  --fsync             sync each write to disk before answering
  --quiet             print nothing to stderr";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        api_key: std::env::var("TIMBER_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        ..Config::default()
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => config.listen = value()?,
            "--out" => config.out = PathBuf::from(value()?),
            "--api-key" => config.api_key = Some(value()?).filter(|k| !k.is_empty()),
            "--max-body" => {
                let text = value()?;
                config.max_body =
                    parse_size(&text).ok_or_else(|| format!("--max-body: not a size: {text:?}"))?;
            }
            "--fsync" => config.fsync = true,
            "--quiet" => config.quiet = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("timber-collector: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Some(config)) => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("timber-collector: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
