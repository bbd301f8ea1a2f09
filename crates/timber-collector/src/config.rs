//! What a collector run is given: the address, the output directory, the key,
//! the limits and timeouts, plus the parsing of human-written sizes such as
//! `10MiB` and durations such as `30s`. The command line that fills it is
//! [`crate::cli`].

use std::path::PathBuf;
use std::time::Duration;

/// Default `--listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";
/// Default `--out` directory.
pub const DEFAULT_OUT: &str = "./timber-logs";
/// Default `--max-body`: 10 MiB, counted after decompression.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// Default `--root-source`: where `POST /` stores its frames.
pub const DEFAULT_ROOT_SOURCE: &str = "betterstack";
/// Default `--max-open-files`.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `--read-timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--max-memory`: request bodies held at once, received or decoding.
pub const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// Settings of one collector run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
    /// Directory that receives one `<source_id>.ndjson` per source.
    pub out: PathBuf,
    /// Bearer token every request must carry; `None` accepts all requests.
    pub api_key: Option<String>,
    /// Largest body accepted, in bytes, after decompression.
    pub max_body: u64,
    /// Sync each file to disk before answering.
    pub fsync: bool,
    /// Print nothing to stderr (the listening line still goes to stdout).
    pub quiet: bool,
    /// Source that `POST /` (the Better Stack form) stores under.
    pub root_source: String,
    /// Most source files kept open at once; the least recently used is closed.
    pub max_open_files: usize,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Longest time a request head, and then its body, may take to arrive.
    pub read_timeout: Duration,
    /// Longest time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Bytes of request bodies held in memory at once, received or decoding.
    pub max_memory: u64,
    /// Forward to ClickHouse instead of writing files (`--clickhouse`).
    pub gateway: Option<Box<crate::gateway::Gateway>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            out: PathBuf::from(DEFAULT_OUT),
            api_key: None,
            max_body: DEFAULT_MAX_BODY,
            fsync: false,
            quiet: false,
            root_source: DEFAULT_ROOT_SOURCE.to_owned(),
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_timeout: DEFAULT_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_memory: DEFAULT_MAX_MEMORY,
            gateway: None,
        }
    }
}

/// Parses a size such as `10MiB`, `1MB`, `512KiB`, `4k` or `1048576` into bytes.
///
/// Decimal units (`kB`, `MB`, `GB`) are powers of 1000, binary units (`KiB`,
/// `MiB`, `GiB`) and single letters (`k`, `M`, `G`) are powers of 1024.
/// Zero parses (as 0); whether it is allowed is the caller's business.
pub fn parse_size(text: &str) -> Option<u64> {
    let (n, unit) = split_number(text)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h` or `30` (seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = split_number(text)?;
    let millis: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(millis).map(Duration::from_millis)
}

/// Splits `  123 unit ` into `(123, "unit")`; the digits must come first.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("512 kib"), Some(512 * 1024));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("123B"), Some(123));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("10 parsecs"), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "1.5s", "10 fortnights", "-3s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
