//! The memory budget: how many bytes of request bodies may be held at once.
//! Without it, 64 concurrent bodies near the size limit took about 1 GB.
//!
//! Three pools, so that a request never waits for one while holding another
//! in a way that could deadlock. A body being received first reserves its
//! first [`START_BYTES`] (or its whole length, if smaller) from the *start*
//! pool, holding nothing else; only once more than that has arrived does it
//! reserve the rest of its length, in one go, from the *read* pool. A body
//! that trickles in so holds what it sent, not the length it declares, and
//! a request whose body arrives at once never waits twice in one pool.
//! Decoding reserves its estimated working memory (decompressed body and
//! output lines) from the *decode* pool, while still holding its read
//! reservation. Decoding never waits on the read pools, so it always
//! progresses. A request that cannot get its share within [`BUDGET_WAIT`]
//! is answered 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest a request waits for its share of memory before 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// The first bytes of every body, reserved before any is read from a pool of
/// their own (an eighth of the third for receiving: 1,365 bodies at once
/// with the default 256 MiB, more than the default connection limit).
pub const START_BYTES: u64 = 8 * 1024;

/// Bytes per permit: semaphores count in `u32`, and bodies are large.
const UNIT: u64 = 1024;

/// A share of the budget, returned when dropped.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

impl Reservation {
    /// Holds `other` too, until this is dropped.
    pub fn join(&mut self, other: Reservation) {
        self.0.extend(other.0);
    }
}

/// The three pools.
#[derive(Debug)]
pub struct Budget {
    start: Arc<Semaphore>,
    read: Arc<Semaphore>,
    decode: Arc<Semaphore>,
    start_units: u32,
    read_units: u32,
    decode_units: u32,
}

impl Budget {
    /// A budget of `total` bytes: a third for receiving (an eighth of it for
    /// the first bytes of bodies), the rest for decoding.
    pub fn new(total: u64) -> Self {
        let units = |bytes: u64| u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        let receiving = total / 3;
        let start_units = units(receiving / 8);
        let read_units = units(receiving - receiving / 8);
        let decode_units = units(total - receiving);
        Self {
            start: Arc::new(Semaphore::new(start_units as usize)),
            read: Arc::new(Semaphore::new(read_units as usize)),
            decode: Arc::new(Semaphore::new(decode_units as usize)),
            start_units,
            read_units,
            decode_units,
        }
    }

    /// Reserves the first bytes of a body expected to be `bytes` long:
    /// [`START_BYTES`] at most; `None` after waiting [`BUDGET_WAIT`].
    pub async fn reserve_start(&self, bytes: u64) -> Option<Reservation> {
        reserve(&self.start, self.start_units, bytes.min(START_BYTES)).await
    }

    /// Reserves `bytes` of the read pool (all of it at most, so that one
    /// request alone always fits); `None` after waiting [`BUDGET_WAIT`].
    pub async fn reserve_read(&self, bytes: u64) -> Option<Reservation> {
        reserve(&self.read, self.read_units, bytes).await
    }

    /// Reserves `bytes` of the decode pool, a decoder's estimate of what it
    /// needs, which it may grow as it goes ([`Allowance`]).
    pub async fn reserve_decode_bytes(&self, bytes: u64) -> Option<Allowance> {
        let held = reserve(&self.decode, self.decode_units, bytes).await?;
        let units = held
            .0
            .iter()
            .map(OwnedSemaphorePermit::num_permits)
            .sum::<usize>();
        Some(Allowance {
            pool: Arc::clone(&self.decode),
            total: self.decode_units,
            units: u32::try_from(units).unwrap_or(u32::MAX),
            held,
        })
    }
}

/// Decode memory held by one request, which its decoder checks before each
/// step and grows from the pool without waiting (it runs off the async
/// runtime, and a request that waits while holding could deadlock others).
#[derive(Debug)]
pub struct Allowance {
    pool: Arc<Semaphore>,
    total: u32,
    units: u32,
    held: Reservation,
}

/// Why an [`Allowance`] cannot grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// The pool has not that much free now: worth retrying (503).
    Now,
    /// More than the whole pool: never (413).
    Ever,
}

impl Allowance {
    /// Makes sure `bytes` in all are held, taking the difference from the
    /// pool if it is free now.
    pub fn ensure(&mut self, bytes: u64) -> Result<(), Short> {
        let wanted = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        if wanted <= self.units {
            return Ok(());
        }
        if wanted > self.total {
            return Err(Short::Ever);
        }
        let more = Arc::clone(&self.pool)
            .try_acquire_many_owned(wanted - self.units)
            .map_err(|_| Short::Now)?;
        self.held.0.push(more);
        self.units = wanted;
        Ok(())
    }

    /// The most this allowance could ever hold: the whole pool.
    pub fn most(&self) -> u64 {
        u64::from(self.total) * UNIT
    }
}

/// The memory one decoding may take: unbounded, or an [`Allowance`] with
/// what the decoding holds besides its output (the decompressed body).
#[derive(Debug)]
pub struct Room<'a> {
    allowance: Option<&'a mut Allowance>,
    fixed: u64,
}

/// A decoding that would pass its [`Room`]: why, and the whole pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// Not now, or never.
    pub short: Short,
    /// The most the decoding could ever hold, in bytes.
    pub most: u64,
}

impl<'a> Room<'a> {
    /// No bound: for callers that are no request (tests, the fuzzer).
    pub fn unbounded() -> Self {
        Self {
            allowance: None,
            fixed: 0,
        }
    }

    /// Within `allowance`, of which `fixed` bytes are held already.
    pub fn within(allowance: &'a mut Allowance, fixed: u64) -> Self {
        Self {
            allowance: Some(allowance),
            fixed,
        }
    }

    /// Whether this room is bounded (else every check passes).
    pub fn is_bounded(&self) -> bool {
        self.allowance.is_some()
    }

    /// Makes sure `bytes` more than the fixed part are held.
    pub fn ensure(&mut self, bytes: u64) -> Result<(), Exceeded> {
        let Some(allowance) = self.allowance.as_deref_mut() else {
            return Ok(());
        };
        allowance
            .ensure(self.fixed.saturating_add(bytes))
            .map_err(|short| Exceeded {
                short,
                most: allowance.most(),
            })
    }
}

async fn reserve(pool: &Arc<Semaphore>, total: u32, bytes: u64) -> Option<Reservation> {
    let wanted = u32::try_from(bytes.div_ceil(UNIT))
        .unwrap_or(u32::MAX)
        .clamp(1, total);
    // The semaphore is fair: a large request waiting is not overtaken
    // forever by small ones.
    let permit = tokio::time::timeout(BUDGET_WAIT, Arc::clone(pool).acquire_many_owned(wanted))
        .await
        .ok()?
        .ok()?;
    Some(Reservation(vec![permit]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_never_exceed_the_pool() {
        let budget = Budget::new(3 * 1024 * 1024);
        let a = budget.reserve_read(1 << 20).await.unwrap();
        // More than the whole pool is clamped to it, and so waits for `a`.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve_read(u64::MAX));
        assert!(waiting.await.is_err());
        drop(a);
        let all = budget.reserve_read(u64::MAX).await.unwrap();
        drop(all);
        let mut decoding = budget.reserve_decode_bytes(1 << 20).await.unwrap();
        // Growing never waits: what the pool has not is refused at once.
        assert_eq!(decoding.ensure(decoding.most() + 1), Err(Short::Ever));
        let other = budget.reserve_decode_bytes(1 << 20).await.unwrap();
        assert_eq!(decoding.ensure(decoding.most()), Err(Short::Now));
        drop(other);
        assert_eq!(decoding.ensure(decoding.most()), Ok(()));
    }
}
