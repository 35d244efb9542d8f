//! A hybrid logical clock (HLC) that stamps every local write.
//!
//! A stamp packs wall-clock milliseconds (upper 48 bits) and a logical counter (lower 16 bits)
//! into a `u64`, so stamps compare with `<` and stay monotonic even when the wall clock goes
//! backwards or many writes land in one millisecond.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// An HLC stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp(pub u64);

impl Stamp {
    /// Wall-clock milliseconds of the stamp.
    pub fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }
    /// Logical counter of the stamp.
    pub fn counter(self) -> u64 {
        self.0 & COUNTER_MASK
    }
    /// A stamp for `millis` with counter 0.
    pub fn from_millis(millis: u64) -> Stamp {
        Stamp(millis << COUNTER_BITS)
    }
}

/// The clock. Thread-safe; one per engine.
#[derive(Debug)]
pub struct HybridClock {
    last: Mutex<u64>,
    wall: fn() -> u64,
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 if it is before 1970).
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HybridClock {
    /// A clock on the system wall clock.
    pub fn new() -> Self {
        Self::with_wall(wall_millis)
    }

    /// A clock on a custom wall clock (for tests).
    pub fn with_wall(wall: fn() -> u64) -> Self {
        HybridClock {
            last: Mutex::new(0),
            wall,
        }
    }

    /// A new stamp, greater than every stamp this clock issued or observed.
    pub fn now(&self) -> Stamp {
        let physical = Stamp::from_millis((self.wall)()).0;
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last = physical.max(*last + 1);
        Stamp(*last)
    }

    /// The last stamp this clock issued or observed (what the store keeps, so a restarted
    /// clock never goes back).
    pub fn last(&self) -> Stamp {
        Stamp(
            *self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Moves the clock past a stamp seen elsewhere (e.g. restored from the store at start-up).
    pub fn observe(&self, seen: Stamp) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last = (*last).max(seen.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_strictly_increasing_within_one_millisecond() {
        let clock = HybridClock::with_wall(|| 1_000);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        assert_eq!(a.millis(), 1_000);
        assert_eq!(b.counter(), a.counter() + 1);
    }

    #[test]
    fn clock_never_goes_back_after_observing_a_later_stamp() {
        let clock = HybridClock::with_wall(|| 5);
        clock.observe(Stamp::from_millis(9_000));
        let next = clock.now();
        assert!(next > Stamp::from_millis(9_000));
    }
}
