//! The idempotency keys a source has recently stored, so that a batch sent
//! again (a retry after a lost answer, a spool replay) is acknowledged
//! without being stored twice. Bounded by count and age, whichever bites
//! first: a key older than [`KEY_TTL`] or beyond the last [`MAX_KEYS`] is
//! forgotten, and a replay that late is stored again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most keys remembered per source.
pub const MAX_KEYS: usize = 100_000;
/// Longest a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(600);
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Whether `key` can be an `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible
/// ASCII characters (no spaces), the same token on every retry of a batch.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys of one source, oldest first, with how many frames each stored.
#[derive(Debug, Default)]
pub struct RecentKeys {
    order: VecDeque<(Instant, Box<str>)>,
    frames: HashMap<Box<str>, usize>,
}

impl RecentKeys {
    /// The frames stored under `key`, if it was stored recently.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<usize> {
        self.expire(now);
        self.frames.get(key).copied()
    }

    /// Remembers that `key` stored `frames` frames; call only once they are
    /// written, so that a failed write can be retried under the same key.
    pub fn insert(&mut self, key: &str, frames: usize, now: Instant) {
        self.expire(now);
        if self.frames.insert(key.into(), frames).is_none() {
            self.order.push_back((now, key.into()));
        }
        while self.order.len() > MAX_KEYS {
            self.forget_oldest();
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= KEY_TTL)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.frames.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key("a"));
        assert!(valid_key(&"~".repeat(MAX_KEY_LEN)));
        for bad in ["", " ", "a b", "é", "a\tb", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn remembered_until_too_old_or_too_many() {
        let t0 = Instant::now();
        let mut keys = RecentKeys::default();
        keys.insert("a", 3, t0);
        keys.insert("a", 3, t0);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys.get("a", t0 + KEY_TTL - Duration::from_secs(1)),
            Some(3)
        );
        assert_eq!(keys.get("b", t0), None);
        assert_eq!(keys.get("a", t0 + KEY_TTL), None);
        assert!(keys.is_empty());

        for i in 0..MAX_KEYS + 10 {
            keys.insert(&i.to_string(), 1, t0);
        }
        assert_eq!(keys.len(), MAX_KEYS);
        assert_eq!(keys.get("9", t0), None);
        assert_eq!(keys.get("10", t0), Some(1));
    }
}
