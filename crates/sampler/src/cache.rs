//! The frame cache: `(code object, instruction offset)` → interned MOJO
//! frame, and the decoded code objects behind it.
//!
//! Both maps are bounded. When one fills up, the half used least recently
//! is dropped (an approximate LRU that costs nothing per hit beyond storing
//! the tick). Entries of a freed code object are dropped as soon as the
//! sampler learns of it (see [`crate::codewatch`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use echion_mojo::FrameId;

/// A multiplicative hasher for addresses and small integers: SipHash was a
/// fifth of a warm tick. Keys are addresses in the profiled process, which
/// nobody picks to collide.
#[derive(Debug, Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` keyed by addresses.
pub type AddrMap<K, V> = HashMap<K, V, BuildHasherDefault<AddrHasher>>;

/// Slots of the direct-mapped caches in front of the maps (a power of 2).
const FRONT: usize = 4096;

#[inline]
fn slot(code: u64, offset: u32) -> usize {
    let h = (code ^ (u64::from(offset) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 52) as usize & (FRONT - 1)
}

/// A decoded code object: what every frame of it shares.
#[derive(Debug, Clone)]
pub struct CodeEntry {
    /// File name.
    pub filename: String,
    /// Qualified name (3.11+) or name.
    pub scope: String,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// The raw line table.
    pub linetable: Vec<u8>,
    last_used: u64,
}

impl CodeEntry {
    /// A new entry.
    pub fn new(filename: String, scope: String, firstlineno: i32, linetable: Vec<u8>) -> Self {
        Self {
            filename,
            scope,
            firstlineno,
            linetable,
            last_used: 0,
        }
    }
}

/// Bounded caches of frames and code objects.
#[derive(Debug)]
pub struct FrameCache {
    frames: AddrMap<(u64, u32), (FrameId, u64)>,
    codes: AddrMap<u64, CodeEntry>,
    first_traceable: AddrMap<u64, i32>,
    /// Direct-mapped fronts of `frames` and `first_traceable`: a hit costs
    /// one multiplication and one compare. Code 0 marks an empty slot.
    front: Box<[(u64, u32, FrameId)]>,
    front_first: Box<[(u64, i32)]>,
    frame_capacity: usize,
    code_capacity: usize,
    /// Frames decoded (cache misses) so far.
    pub misses: u64,
    /// Frames found in the cache so far.
    pub hits: u64,
}

impl FrameCache {
    /// Caches holding at most `frame_capacity` frames and `code_capacity`
    /// code objects.
    pub fn new(frame_capacity: usize, code_capacity: usize) -> Self {
        Self {
            // The maps grow with what they hold: a map made at its full
            // size spreads a small program's few entries over hundreds of
            // kilobytes, each page of which every fork then copies (its
            // page-table entry in the fork, the page at the next write).
            frames: AddrMap::default(),
            codes: AddrMap::default(),
            first_traceable: AddrMap::default(),
            front: vec![(0, 0, FrameId::default()); FRONT].into_boxed_slice(),
            front_first: vec![(0, 0); FRONT].into_boxed_slice(),
            frame_capacity: frame_capacity.max(2),
            code_capacity: code_capacity.max(2),
            misses: 0,
            hits: 0,
        }
    }

    /// The frame cached for `(code, offset)`, marked as used at `tick`.
    #[inline]
    pub fn frame(&mut self, code: u64, offset: u32, tick: u64) -> Option<FrameId> {
        let i = slot(code, offset);
        let (c, o, id) = self.front[i];
        if c == code && o == offset && code != 0 {
            self.hits += 1;
            // The LRU stamp of a front hit is refreshed when the entry
            // next falls through to the map; the front is cleared with it.
            return Some(id);
        }
        match self.frames.get_mut(&(code, offset)) {
            Some((id, used)) => {
                *used = tick;
                self.hits += 1;
                self.front[i] = (code, offset, *id);
                Some(*id)
            }
            None => None,
        }
    }

    /// Caches a frame.
    pub fn insert_frame(&mut self, code: u64, offset: u32, id: FrameId, tick: u64) {
        self.misses += 1;
        if self.frames.len() >= self.frame_capacity {
            evict_older_half(&mut self.frames, |(_, used)| *used);
            self.front.fill((0, 0, FrameId::default()));
        }
        self.frames.insert((code, offset), (id, tick));
        self.front[slot(code, offset)] = (code, offset, id);
    }

    /// `_co_firsttraceable` of `code` if it is cached (no reading, no
    /// insertion: nothing allocates).
    pub fn peek_first_traceable(&self, code: u64) -> Option<i32> {
        let (c, v) = self.front_first[slot(code, 0)];
        if c == code && code != 0 {
            return Some(v);
        }
        self.first_traceable.get(&code).copied()
    }

    /// The `_co_firsttraceable` of the code object at `code` (3.11+), read
    /// with `read` the first time.
    pub fn first_traceable<E>(
        &mut self,
        code: u64,
        read: impl FnOnce() -> Result<i32, E>,
    ) -> Result<i32, E> {
        let i = slot(code, 0);
        let (c, v) = self.front_first[i];
        if c == code && code != 0 {
            return Ok(v);
        }
        let v = match self.first_traceable.get(&code) {
            Some(&v) => v,
            None => {
                let v = read()?;
                if self.first_traceable.len() >= self.code_capacity {
                    self.first_traceable.clear();
                }
                self.first_traceable.insert(code, v);
                v
            }
        };
        self.front_first[i] = (code, v);
        Ok(v)
    }

    /// The decoded code object at `code`, marked as used at `tick`.
    pub fn code(&mut self, code: u64, tick: u64) -> Option<&CodeEntry> {
        let entry = self.codes.get_mut(&code)?;
        entry.last_used = tick;
        Some(entry)
    }

    /// Caches a decoded code object.
    pub fn insert_code(&mut self, code: u64, mut entry: CodeEntry, tick: u64) {
        if self.codes.len() >= self.code_capacity {
            evict_older_half(&mut self.codes, |e| e.last_used);
        }
        entry.last_used = tick;
        self.codes.insert(code, entry);
    }

    /// Forgets everything about the code objects in `codes` (one pass over
    /// the frames, however many there are).
    pub fn forget_codes(&mut self, codes: &[u64]) {
        if codes.is_empty() {
            return;
        }
        for code in codes {
            self.codes.remove(code);
            self.first_traceable.remove(code);
        }
        for e in self.front.iter_mut() {
            if codes.contains(&e.0) {
                *e = (0, 0, FrameId::default());
            }
        }
        for e in self.front_first.iter_mut() {
            if codes.contains(&e.0) {
                *e = (0, 0);
            }
        }
        if codes.len() == 1 {
            let code = codes[0];
            self.frames.retain(|(c, _), _| *c != code);
        } else {
            // (A hasher with no random keys: std's default one reads a
            // thread-local, which a tick in a signal handler must not.)
            let set: std::collections::HashSet<u64, BuildHasherDefault<AddrHasher>> =
                codes.iter().copied().collect();
            self.frames.retain(|(c, _), _| !set.contains(c));
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.codes.clear();
        self.first_traceable.clear();
        self.front.fill((0, 0, FrameId::default()));
        self.front_first.fill((0, 0));
    }

    /// Number of frames cached.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }
}

fn evict_older_half<K, V, S>(map: &mut HashMap<K, V, S>, used: impl Fn(&V) -> u64) {
    let mut ticks: Vec<u64> = map.values().map(&used).collect();
    let mid = ticks.len() / 2;
    let (_, cut, _) = ticks.select_nth_unstable(mid);
    let cut = *cut;
    map.retain(|_, v| used(v) > cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_mojo::{FrameSpec, MojoWriter};

    fn ids(n: usize) -> Vec<FrameId> {
        let mut w = MojoWriter::new(Vec::new(), 1).expect("vec");
        (0..n)
            .map(|i| {
                let scope = format!("f{i}");
                w.intern_frame(&FrameSpec {
                    filename: "a.py",
                    scope: &scope,
                    line: 1,
                    line_end: 1,
                    column: 0,
                    column_end: 0,
                })
            })
            .collect()
    }

    #[test]
    fn bounded_and_keeps_recent_entries() {
        let ids = ids(100);
        let mut c = FrameCache::new(16, 4);
        for (i, id) in ids.iter().enumerate() {
            c.insert_frame(0x1000, i as u32, *id, i as u64);
            assert!(c.frame_count() <= 16);
        }
        // The most recent entry is always there; the oldest are gone.
        assert_eq!(c.frame(0x1000, 99, 100), Some(ids[99]));
        assert_eq!(c.frame(0x1000, 0, 100), None);
    }

    #[test]
    fn maps_grow_with_what_they_hold() {
        // The engine's bounds (65,536 frames, 8,192 codes): a new cache
        // holds room for none of them yet, and grows to take thousands.
        let ids = ids(3000);
        let mut c = FrameCache::new(1 << 16, 1 << 13);
        assert!(c.frames.capacity() < 64 && c.codes.capacity() < 64);
        assert!(c.first_traceable.capacity() < 64);
        for (i, id) in ids.iter().enumerate() {
            c.insert_frame(0x1000 + (i as u64 % 7) * 0x100, i as u32, *id, i as u64);
        }
        assert_eq!(c.frame_count(), 3000);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                c.frame(0x1000 + (i as u64 % 7) * 0x100, i as u32, 3001),
                Some(*id)
            );
        }
    }

    #[test]
    fn freed_code_is_forgotten() {
        let ids = ids(3);
        let mut c = FrameCache::new(64, 64);
        c.insert_frame(0x1000, 0, ids[0], 1);
        c.insert_frame(0x1000, 2, ids[1], 1);
        c.insert_frame(0x2000, 0, ids[2], 1);
        c.insert_code(
            0x1000,
            CodeEntry::new("a.py".into(), "f".into(), 1, vec![]),
            1,
        );
        c.forget_codes(&[0x1000]);
        assert_eq!(c.frame(0x1000, 0, 2), None);
        assert_eq!(c.frame(0x1000, 2, 2), None);
        assert!(c.code(0x1000, 2).is_none());
        assert_eq!(c.frame(0x2000, 0, 2), Some(ids[2]));
    }
}
