//! Fitting the collector to the process's open-file limit: connections and
//! source files both take descriptors, and running out of them makes every
//! request fail at once. Both bounds are lowered, if needed, so that together
//! they stay under the limit with room to spare for the runtime itself.

/// Descriptors kept free for the runtime, the listener, standard streams, a
/// directory sync and the Python interpreter when run as `timber collect`.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The soft limit on open files of this process, where it can be read.
pub fn open_files_limit() -> Option<u64> {
    // Linux shows it in /proc; reading it there needs no unsafe call.
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => None,
        n => n.parse().ok(),
    }
}

/// `(max_open_files, max_connections)` lowered to fit `limit` descriptors:
/// source files get at most a quarter of what is not reserved, connections
/// the rest. Each bound is at least 4, so that a tiny limit still serves.
pub fn fit(max_open_files: usize, max_connections: usize, limit: Option<u64>) -> (usize, usize) {
    let Some(limit) = limit else {
        return (max_open_files, max_connections);
    };
    let free = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    let files = max_open_files.min((free / 4).max(4));
    let connections = max_connections.min(free.saturating_sub(files).max(4));
    (files, connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_fit_the_limit() {
        assert_eq!(fit(256, 1024, None), (256, 1024));
        assert_eq!(fit(256, 1024, Some(1_000_000)), (256, 1024));
        assert_eq!(fit(256, 1024, Some(1024)), (240, 720));
        let (files, conns) = fit(256, 1024, Some(1024));
        assert!(files as u64 + conns as u64 + RESERVED_DESCRIPTORS <= 1024);
        assert_eq!(fit(8, 16, Some(1024)), (8, 16));
        assert_eq!(fit(256, 1024, Some(10)), (4, 4));
    }

    #[test]
    fn the_limit_of_this_process_is_read() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
