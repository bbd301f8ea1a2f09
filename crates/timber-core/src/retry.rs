//! How long to wait between attempts: pure functions of the `Retry-After`
//! header, the attempt number and the jitter. Which answers are retried is
//! each destination's `classify`.

use std::time::{Duration, SystemTime};

/// Longest wait honoured from a `Retry-After` header.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Parses `Retry-After` (delay in seconds, or an HTTP date), capped at
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(header: &str, now: SystemTime) -> Option<Duration> {
    let header = header.trim();
    let wait = if let Ok(secs) = header.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = jiff::fmt::rfc2822::parse(header).ok()?.timestamp();
        let now = jiff::Timestamp::try_from(now).ok()?;
        let delta = at.as_millisecond() - now.as_millisecond();
        Duration::from_millis(u64::try_from(delta).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry):
    /// capped exponential with full jitter, `jitter` drawn from `[0, 1)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let ceiling = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        Duration::from_secs_f64(ceiling * jitter.clamp(0.0, 1.0))
    }

    /// The wait before retry `attempt` given the server's verdict: never
    /// earlier than a `Retry-After` the server sent, nor than our own
    /// backoff (a `Retry-After: 0` must not become a busy loop).
    pub fn wait(&self, attempt: u32, server: Option<Duration>, jitter: f64) -> Duration {
        let own = self.delay(attempt, jitter);
        server.map_or(own, |s| s.max(own))
    }
}

/// A small xorshift generator for jitter; no need for cryptographic quality.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and an address, different per thread.
    pub fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Self((t ^ addr.rotate_left(32)) | 1)
    }

    /// The next value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("100000", now), Some(MAX_RETRY_AFTER));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn backoff_is_capped_with_full_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(30));
        let mut j = Jitter::new();
        for attempt in 1..50 {
            let d = b.delay(attempt, j.next_f64());
            assert!(d <= Duration::from_secs(30));
        }
        // The server's Retry-After is a floor, and so is our own backoff.
        assert_eq!(
            b.wait(1, Some(Duration::from_secs(5)), 0.1),
            Duration::from_secs(5)
        );
        assert_eq!(b.wait(2, Some(Duration::ZERO), 1.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_unit_interval() {
        let mut j = Jitter::new();
        for _ in 0..10_000 {
            let x = j.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
