//! The collector's one command line, shared by the `timber-collector` binary
//! and `timber collect` (which hands its arguments over unparsed), so that
//! both accept exactly the same flags and answer mistakes the same way.

use std::path::PathBuf;

use crate::config::{parse_size, Config, DEFAULT_LISTEN, DEFAULT_OUT};

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
{pad}[--fsync] [--quiet]

Receives Timber frames over HTTP and appends them to DIR/<source_id>.ndjson.

  --listen HOST:PORT    address to listen on (default {DEFAULT_LISTEN}; port 0 picks one)
  --out DIR             directory for the .ndjson files (default {DEFAULT_OUT})
  --api-key KEY         require Authorization: Bearer KEY (default: $TIMBER_API_KEY)
  --max-body SIZE       largest body after decompression, e.g. 10MiB, 1MB, 512KiB
                        (default 10MiB)
  --fsync               sync each write to disk before answering
  --quiet               print nothing to stderr",
    )
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
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let takes_value = !matches!(flag.as_str(), "-h" | "--help" | "--fsync" | "--quiet");
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
            "--fsync" => config.fsync = true,
            "--quiet" => config.quiet = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
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
            "--fsync",
            "--quiet",
        ]);
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.out, PathBuf::from("d"));
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.max_body, 1024);
        assert!(c.fsync && c.quiet);
        assert_eq!(parse(&["--quiet", "-h", "--nonsense"]), Ok(Command::Help));
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
