//! Memory reading for the sampler: a reader that serves reads from regions
//! copied in few system calls.
//!
//! Between two ticks most of what the sampler reads stays where it was: the
//! runtime, the interpreter and thread states, and most frames of every
//! stack (from CPython 3.11 contiguous in data-stack chunks). The cache
//! remembers the ranges a tick read and copies them all at the start of the
//! next tick in one vectored read (close ranges merged into one), so a warm
//! tick costs one system call plus one for whatever moved. Reads outside the
//! copied regions go to the underlying reader.
//!
//! In-process, [`guarded::GuardedReader`] reads without system calls: plain
//! loads whose faults are recovered. That module is the only `unsafe` of
//! this crate, with the system calls of the sampler thread's nap
//! ([`guarded::futex_wait`]), made there without the C library.

use std::cell::{Cell, RefCell};

use echion_cpython_layout::{Addr, MemError, MemoryReader};

#[allow(unsafe_code)]
pub mod guarded;

/// Most ranges remembered from one tick for the next.
pub const MAX_READ_SET: usize = 1024;

/// Largest region copied (a data-stack chunk is 16 KiB at first and grows
/// for deep recursion).
pub const MAX_REGION: u64 = 1 << 20;

/// One copied region.
#[derive(Debug, Default)]
struct Region {
    base: u64,
    data: Vec<u8>,
    valid: bool,
    hit: Cell<bool>,
}

/// Ranges closer than this are copied as one (the bytes between are read
/// too, which costs less than another range).
const MERGE_GAP: u64 = 1024;

/// A reader with a few preloaded regions in front of another reader.
#[derive(Debug)]
pub struct RegionCache<'r, R: MemoryReader + ?Sized> {
    inner: &'r R,
    regions: Vec<Region>,
    used: usize,
    ranges: Vec<(u64, u64)>,
    misses: RefCell<Vec<(u64, u64)>>,
    miss_total: Cell<u64>,
    read_set: Vec<(u64, u64)>,
}

impl<'r, R: MemoryReader + ?Sized> RegionCache<'r, R> {
    /// A cache with no regions in front of `inner`.
    pub fn new(inner: &'r R) -> Self {
        Self {
            inner,
            regions: Vec::new(),
            used: 0,
            ranges: Vec::new(),
            misses: RefCell::new(Vec::new()),
            miss_total: Cell::new(0),
            read_set: Vec::new(),
        }
    }

    /// Starts a tick: copies what the last tick read (the regions it hit
    /// and the reads it made past them), in as few vectored reads as it
    /// takes. Returns how many ranges were copied.
    pub fn copy_last_tick(&mut self) -> usize {
        let mut set = std::mem::take(&mut self.read_set);
        set.clear();
        for r in &self.regions[..self.used] {
            if r.valid && r.hit.get() {
                set.push((r.base, r.data.len() as u64));
            }
        }
        set.append(self.misses.get_mut());
        set.truncate(MAX_READ_SET);
        self.used = 0;
        let kept = self.prefetch(&mut set);
        self.read_set = set;
        kept
    }

    /// Reads that went past the copied regions so far (a counter: compare
    /// two values to learn whether something was read fresh in between).
    pub fn miss_count(&self) -> u64 {
        self.miss_total.get()
    }

    /// Forgets every region (keeping their buffers for reuse).
    pub fn clear(&mut self) {
        self.used = 0;
    }

    fn next_region(&mut self) -> &mut Region {
        if self.used == self.regions.len() {
            self.regions.push(Region::default());
        }
        self.used += 1;
        &mut self.regions[self.used - 1]
    }

    /// Copies each `(address, length)` range (sorting them), merging ranges
    /// that are close, in as few vectored reads as it takes (one per 64
    /// ranges). Ranges that cannot be read are left out; reads of them go to
    /// the underlying reader. Returns how many ranges were kept.
    pub fn prefetch(&mut self, wanted: &mut [(u64, u64)]) -> usize {
        // Usually sorted already: the regions of the last tick come first,
        // in order.
        if !wanted.is_sorted() {
            wanted.sort_unstable();
        }
        self.ranges.clear();
        for &(a, len) in wanted.iter() {
            if a == 0 || len == 0 || len > MAX_REGION {
                continue;
            }
            let end = a.saturating_add(len);
            match self.ranges.last_mut() {
                Some((start, stop))
                    if a <= stop.saturating_add(MERGE_GAP)
                        && end.max(*stop) - *start <= MAX_REGION =>
                {
                    *stop = (*stop).max(end);
                }
                _ => self.ranges.push((a, end)),
            }
        }
        let mut kept = 0;
        let mut i = 0;
        while i < self.ranges.len() {
            let batch = (self.ranges.len() - i).min(64);
            let first = self.used;
            let mut addrs = [Addr(0); 64];
            for (k, slot) in addrs.iter_mut().enumerate().take(batch) {
                let (start, stop) = self.ranges[i + k];
                *slot = Addr(start);
                let region = self.next_region();
                region.base = start;
                region.data.resize((stop - start) as usize, 0);
                region.valid = false;
            }
            let inner = self.inner;
            let mut bufs: [&mut [u8]; 64] = std::array::from_fn(|_| &mut [][..]);
            for (slot, region) in bufs
                .iter_mut()
                .zip(self.regions[first..first + batch].iter_mut())
            {
                *slot = &mut region.data[..];
            }
            let ok = inner.read_vectored(&addrs[..batch], &mut bufs[..batch]);
            for (k, region) in self.regions[first..first + batch].iter_mut().enumerate() {
                region.valid = ok & (1 << k) != 0;
                region.hit.set(false);
                kept += usize::from(region.valid);
            }
            i += batch;
        }
        kept
    }
}

impl<R: MemoryReader + ?Sized> MemoryReader for RegionCache<'_, R> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        for r in &self.regions[..self.used] {
            if r.valid && addr.0 >= r.base {
                let start = addr.0 - r.base;
                if let Some(end) = start.checked_add(len) {
                    if end <= r.data.len() as u64 {
                        buf.copy_from_slice(&r.data[start as usize..end as usize]);
                        r.hit.set(true);
                        return Ok(());
                    }
                }
            }
        }
        self.miss_total.set(self.miss_total.get() + 1);
        self.inner.read(addr, buf)?;
        // Remembered for the next tick's prefetch.
        let mut misses = self.misses.borrow_mut();
        if misses.len() < MAX_READ_SET {
            misses.push((addr.0, len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_cpython_layout::SnapshotReader;
    use std::cell::Cell;

    struct Counting<'a> {
        inner: &'a SnapshotReader,
        reads: Cell<usize>,
    }

    impl MemoryReader for Counting<'_> {
        fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.read(addr, buf)
        }
    }

    #[test]
    fn serves_reads_inside_regions_without_the_inner_reader() {
        let mut snap = SnapshotReader::new();
        let bytes: Vec<u8> = (0..=255).collect();
        snap.insert(Addr(0x1000), &bytes);
        let counting = Counting {
            inner: &snap,
            reads: Cell::new(0),
        };
        let mut cache = RegionCache::new(&counting);
        assert_eq!(cache.prefetch(&mut [(0x1010, 64)]), 1);
        assert_eq!(counting.reads.get(), 1);
        let mut b = [0u8; 8];
        cache.read(Addr(0x1020), &mut b).expect("cached");
        assert_eq!(b, [0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27]);
        assert_eq!(counting.reads.get(), 1);
        // Straddling the end of the region goes to the inner reader.
        cache.read(Addr(0x104c), &mut b).expect("mapped");
        assert_eq!(counting.reads.get(), 2);
        assert!(cache.read(Addr(0x2000), &mut b).is_err());
        assert_eq!(cache.prefetch(&mut [(0x2000, 16)]), 0);
        assert_eq!(cache.prefetch(&mut [(0x1000, MAX_REGION + 1)]), 0);
        cache.clear();
        cache.read(Addr(0x1020), &mut b).expect("mapped");
        assert_eq!(counting.reads.get(), 5);

        // Prefetch merges close ranges and drops unreadable ones.
        cache.clear();
        let mut ranges = [(0x1080, 16), (0x1000, 16), (0x9000, 16), (0x1040, 16)];
        assert_eq!(cache.prefetch(&mut ranges), 1);
        let before = counting.reads.get();
        cache.read(Addr(0x1084), &mut b).expect("prefetched");
        cache.read(Addr(0x1000), &mut b).expect("prefetched");
        assert_eq!(counting.reads.get(), before);
        assert_eq!(b[0], 0);

        // A tick remembers what it read and copies it at the next one.
        cache.clear();
        cache.read(Addr(0x1010), &mut b).expect("mapped");
        cache.read(Addr(0x10f0), &mut b).expect("mapped");
        assert_eq!(cache.copy_last_tick(), 1);
        let before = counting.reads.get();
        cache.read(Addr(0x10f0), &mut b).expect("prefetched");
        cache.read(Addr(0x1010), &mut b).expect("prefetched");
        assert_eq!(counting.reads.get(), before);
        assert_eq!(b[0], 0x10);
    }
}
