//! Code objects freed while the sampler runs.
//!
//! The frame cache is keyed by code object address. When a code object is
//! freed, CPython may put a new one at the same address, and a cache that
//! did not know would show the old name. The embedding module hooks the
//! deallocation of code objects and posts each address here; the sampler
//! drains the ring at every tick and forgets those entries.
//!
//! The ring has one producer at a time (deallocation runs with the GIL
//! held) and one consumer (the sampler thread), and no lock: a thread that
//! frees code never waits for the sampler, and a fork in the middle of a
//! post cannot leave a lock held. When the ring is full the overflow flag
//! tells the sampler to drop its whole cache.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Slots in the ring.
pub const CAPACITY: usize = 4096;

/// A single-producer, single-consumer ring of code object addresses.
#[derive(Debug)]
pub struct FreedCodes {
    slots: [AtomicU64; CAPACITY],
    head: AtomicUsize,
    tail: AtomicUsize,
    overflow: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the array
const EMPTY: AtomicU64 = AtomicU64::new(0);

impl FreedCodes {
    /// An empty ring (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            slots: [EMPTY; CAPACITY],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            overflow: AtomicBool::new(false),
        }
    }

    /// Posts a freed code object. Must not be called from two threads at
    /// once (callers hold the GIL).
    pub fn post(&self, addr: u64) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= CAPACITY {
            self.overflow.store(true, Ordering::Release);
            return;
        }
        self.slots[head % CAPACITY].store(addr, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
    }

    /// Hands every posted address to `f`; returns whether some were lost to
    /// an overflow (then everything cached must be forgotten).
    pub fn drain(&self, mut f: impl FnMut(u64)) -> bool {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let mut i = tail;
        while i != head {
            f(self.slots[i % CAPACITY].load(Ordering::Relaxed));
            i = i.wrapping_add(1);
        }
        // Written only when something changed: a tick with no code freed
        // writes nothing here (after a fork, every page the parent writes
        // is copied).
        if tail != head {
            self.tail.store(head, Ordering::Release);
        }
        self.overflow.load(Ordering::Acquire) && self.overflow.swap(false, Ordering::AcqRel)
    }

    /// Empties the ring. For a forked child, where no sampler runs yet.
    pub fn reset(&self) {
        self.tail
            .store(self.head.load(Ordering::Acquire), Ordering::Release);
        self.overflow.store(false, Ordering::Release);
    }
}

impl Default for FreedCodes {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring the embedding module posts to and the sampler drains.
pub static FREED_CODES: FreedCodes = FreedCodes::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_drained_in_order_and_overflow_is_reported() {
        let ring = FreedCodes::new();
        ring.post(1);
        ring.post(2);
        let mut got = Vec::new();
        assert!(!ring.drain(|a| got.push(a)));
        assert_eq!(got, [1, 2]);
        for i in 0..(CAPACITY as u64 + 5) {
            ring.post(i);
        }
        got.clear();
        assert!(ring.drain(|a| got.push(a)));
        assert_eq!(got.len(), CAPACITY);
        got.clear();
        assert!(!ring.drain(|a| got.push(a)));
        assert!(got.is_empty());
    }

    #[test]
    fn producer_and_consumer_threads() {
        static RING: FreedCodes = FreedCodes::new();
        let producer = std::thread::spawn(|| {
            for i in 1..=100_000u64 {
                RING.post(i);
            }
        });
        let mut seen = 0u64;
        let mut last = 0u64;
        let mut overflowed = false;
        while !producer.is_finished() || seen + (overflowed as u64) == 0 {
            overflowed |= RING.drain(|a| {
                assert!(a > last, "out of order: {a} after {last}");
                last = a;
                seen += 1;
            });
        }
        producer.join().expect("producer");
        overflowed |= RING.drain(|a| {
            assert!(a > last);
            last = a;
            seen += 1;
        });
        assert!(seen == 100_000 || overflowed);
    }
}
