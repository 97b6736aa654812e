//! Memory reading for the sampler: a reader that serves reads from regions
//! copied in one system call each.
//!
//! From CPython 3.11 the frames of a thread live in contiguous data-stack
//! chunks. Copying the used part of the current chunk once and walking the
//! frames in the copy turns one system call per frame into one per thread.
//! Reads outside the copied regions go to the underlying reader.

use echion_cpython_layout::{Addr, MemError, MemoryReader};

/// Largest region copied (a data-stack chunk is 16 KiB at first and grows
/// for deep recursion).
pub const MAX_REGION: u64 = 1 << 20;

/// A reader with a few preloaded regions in front of another reader.
#[derive(Debug)]
pub struct RegionCache<'r, R: MemoryReader + ?Sized> {
    inner: &'r R,
    regions: Vec<(u64, Vec<u8>)>,
    used: usize,
}

impl<'r, R: MemoryReader + ?Sized> RegionCache<'r, R> {
    /// A cache with no regions in front of `inner`.
    pub fn new(inner: &'r R) -> Self {
        Self {
            inner,
            regions: Vec::new(),
            used: 0,
        }
    }

    /// Forgets every region (keeping their buffers for reuse).
    pub fn clear(&mut self) {
        self.used = 0;
    }

    /// Copies `[addr, addr + len)` in one read. A region over
    /// [`MAX_REGION`] or that cannot be read is not kept (reads then go to
    /// the underlying reader) and the error is returned.
    pub fn load(&mut self, addr: Addr, len: u64) -> Result<(), MemError> {
        if len > MAX_REGION {
            return Err(MemError::TooLong {
                len,
                max: MAX_REGION,
            });
        }
        if self.used == self.regions.len() {
            self.regions.push((0, Vec::new()));
        }
        let (base, buf) = &mut self.regions[self.used];
        buf.resize(len as usize, 0);
        self.inner.read(addr, buf)?;
        *base = addr.0;
        self.used += 1;
        Ok(())
    }
}

impl<R: MemoryReader + ?Sized> MemoryReader for RegionCache<'_, R> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        for (base, data) in &self.regions[..self.used] {
            if addr.0 >= *base {
                let start = addr.0 - base;
                if let Some(end) = start.checked_add(len) {
                    if end <= data.len() as u64 {
                        buf.copy_from_slice(&data[start as usize..end as usize]);
                        return Ok(());
                    }
                }
            }
        }
        self.inner.read(addr, buf)
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
        cache.load(Addr(0x1010), 64).expect("mapped");
        assert_eq!(counting.reads.get(), 1);
        let mut b = [0u8; 8];
        cache.read(Addr(0x1020), &mut b).expect("cached");
        assert_eq!(b, [0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27]);
        assert_eq!(counting.reads.get(), 1);
        // Straddling the end of the region goes to the inner reader.
        cache.read(Addr(0x104c), &mut b).expect("mapped");
        assert_eq!(counting.reads.get(), 2);
        assert!(cache.read(Addr(0x2000), &mut b).is_err());
        assert!(cache.load(Addr(0x2000), 16).is_err());
        assert!(cache.load(Addr(0x1000), MAX_REGION + 1).is_err());
        cache.clear();
        cache.read(Addr(0x1020), &mut b).expect("mapped");
        assert_eq!(counting.reads.get(), 5);
    }
}
