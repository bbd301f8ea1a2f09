//! The idempotency keys sources have recently stored, so that a batch sent
//! again (a retry after a lost answer, a spool replay) is acknowledged
//! without being stored twice. Bounded by age, by count per source and by
//! memory across all sources, whichever bites first: a key older than
//! [`KEY_TTL`], beyond its source's last [`MAX_KEYS`], or the oldest of all
//! when the keys would take more than their memory bound, is forgotten, and
//! a replay that late is stored again. The memory is counted per key (twice
//! its length, as it is held twice, plus [`KEY_OVERHEAD`]), so that any
//! number of sources fits in one bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most keys remembered per source.
pub const MAX_KEYS: usize = 100_000;
/// Longest a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(600);
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Bytes a remembered key is counted for beyond twice its length (and an
/// entry of the shared order): its two allocations, its slots in the queues
/// and the map, with their spare room and the allocator's (measured: 100,000
/// keys of 100 bytes took 30 MiB, 320 bytes each; with keys forgotten as
/// fast as new ones come, 1,000,000 keys of 36 bytes over 50 sources left
/// 69 MiB, 336 bytes per key kept, when counted at 312).
pub const KEY_OVERHEAD: usize = 224;
/// Bytes a source with keys is counted for beyond its name.
const SOURCE_OVERHEAD: usize = 256;

/// Whether `key` can be an `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible
/// ASCII characters (no spaces), the same token on every retry of a batch.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys of every source, under one memory bound.
#[derive(Debug)]
pub struct RecentKeys {
    sources: HashMap<Arc<str>, SourceKeys>,
    /// Every key recorded, oldest first, by its number; an entry whose key
    /// its source has already forgotten (past [`MAX_KEYS`]) is skipped when
    /// it comes to the front, and counted until then.
    order: VecDeque<(u64, Instant, Arc<str>)>,
    next: u64,
    /// What the keys and sources take, by the counts above.
    bytes: usize,
    max_bytes: usize,
}

/// The keys of one source, oldest first, with how many frames each stored.
#[derive(Debug, Default)]
struct SourceKeys {
    order: VecDeque<(u64, Box<str>)>,
    frames: HashMap<Box<str>, usize>,
}

/// What an entry of the shared order takes, with spare capacity.
const ORDER_ENTRY: usize = 2 * std::mem::size_of::<(u64, Instant, Arc<str>)>();

fn key_cost(key: &str) -> usize {
    2 * key.len() + KEY_OVERHEAD
}

impl RecentKeys {
    /// No keys yet, at most `max_bytes` of them.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            sources: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// The frames `source` stored under `key`, if it did so recently.
    pub fn get(&mut self, source: &str, key: &str, now: Instant) -> Option<usize> {
        self.expire(now);
        self.sources.get(source)?.frames.get(key).copied()
    }

    /// Remembers that `source` stored `frames` frames under `key`; call only
    /// once they are written, so that a failed write can be retried under
    /// the same key.
    pub fn insert(&mut self, source: &str, key: &str, frames: usize, now: Instant) {
        self.expire(now);
        let name: Arc<str> = match self.sources.get_key_value(source) {
            Some((name, _)) => Arc::clone(name),
            None => {
                self.bytes += source.len() + SOURCE_OVERHEAD;
                Arc::from(source)
            }
        };
        let seq = self.next;
        let keys = self.sources.entry(Arc::clone(&name)).or_default();
        if keys.frames.insert(key.into(), frames).is_some() {
            return;
        }
        self.next += 1;
        keys.order.push_back((seq, key.into()));
        self.order.push_back((seq, now, name));
        self.bytes += key_cost(key);
        while keys.order.len() > MAX_KEYS {
            if let Some((_, old)) = keys.order.pop_front() {
                keys.frames.remove(&old);
                self.bytes -= key_cost(&old);
            }
        }
        while self.memory() > self.max_bytes && self.forget_oldest() {}
    }

    /// How many keys are remembered, across every source.
    pub fn len(&self) -> usize {
        self.sources.values().map(|k| k.order.len()).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The memory counted for the keys, at most the bound given to [`RecentKeys::new`].
    pub fn memory(&self) -> usize {
        self.bytes + self.order.len() * ORDER_ENTRY
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at, _)| now.saturating_duration_since(*at) >= KEY_TTL)
        {
            self.forget_oldest();
        }
    }

    /// Forgets the oldest key of all, if it is still remembered; false when
    /// there is nothing left to forget.
    fn forget_oldest(&mut self) -> bool {
        let Some((seq, _, source)) = self.order.pop_front() else {
            return false;
        };
        if let Some(keys) = self.sources.get_mut(&source) {
            // A source forgets its own keys oldest first too: the front of
            // its order is this key, or this key is gone already.
            if keys.order.front().is_some_and(|(s, _)| *s == seq) {
                if let Some((_, key)) = keys.order.pop_front() {
                    keys.frames.remove(&key);
                    self.bytes -= key_cost(&key);
                }
            }
            if keys.order.is_empty() {
                self.sources.remove(&source);
                self.bytes -= source.len() + SOURCE_OVERHEAD;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

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
        let mut keys = RecentKeys::new(usize::MAX);
        keys.insert("s", "a", 3, t0);
        keys.insert("s", "a", 3, t0);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys.get("s", "a", t0 + KEY_TTL - Duration::from_secs(1)),
            Some(3)
        );
        assert_eq!(keys.get("s", "b", t0), None);
        assert_eq!(keys.get("other", "a", t0), None);
        assert_eq!(keys.get("s", "a", t0 + KEY_TTL), None);
        assert!(keys.is_empty());
        assert_eq!(keys.memory(), 0);

        for i in 0..MAX_KEYS + 10 {
            keys.insert("s", &i.to_string(), 1, t0);
        }
        assert_eq!(keys.len(), MAX_KEYS);
        assert_eq!(keys.get("s", "9", t0), None);
        assert_eq!(keys.get("s", "10", t0), Some(1));
    }

    #[test]
    fn fifty_sources_of_fresh_keys_stay_under_the_bound() {
        // A fifth of the keys of 50 full sources, into a bound they pass 16
        // times over (the whole 5,000,000 into 64 MiB is measured, not tested).
        let bound = 4 << 20;
        let per_source = MAX_KEYS / 5;
        let t0 = Instant::now();
        let mut keys = RecentKeys::new(bound);
        let sources: Vec<String> = (0..50).map(|s| format!("source-{s}")).collect();
        let mut key = String::new();
        let mut peak = 0;
        for i in 0..per_source {
            for (s, source) in sources.iter().enumerate() {
                key.clear();
                write!(key, "{s}-{i:032}").unwrap();
                keys.insert(source, &key, 1, t0);
            }
            peak = peak.max(keys.memory());
        }
        assert!(peak <= bound, "{peak}");
        // The newest keys of every source are the ones kept.
        for s in 0..50 {
            let last = format!("{s}-{:032}", per_source - 1);
            assert_eq!(keys.get(&format!("source-{s}"), &last, t0), Some(1));
        }
        assert!(keys.len() > 10_000, "{}", keys.len());
    }
}
