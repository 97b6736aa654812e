//! Typed, bounded views of interpreter state over a [`MemoryReader`].
//!
//! A [`Target`] pairs a reader with the [`Layout`] of the interpreter being
//! read. Its methods follow pointers the way CPython does, but treat every
//! byte as untrusted: lengths are bounded before anything is allocated,
//! linked lists are walked with a cap and a cycle check, frame walks stop at
//! [`MAX_FRAMES`], and any inconsistency is a [`ViewError`], never a panic.
//!
//! The views read fields at offsets taken from the `Layout` (plain numbers),
//! not through mirror types, so a layout built from another source (such as
//! CPython 3.13's `_Py_DebugOffsets`) works unchanged.
//!
//! Walking `_PyRuntime` → interpreters → threads → frames:
//!
//! ```
//! # use echion_cpython_layout::{views::Target, Addr, Layout, MemoryReader, PyVersion};
//! # fn demo(reader: &dyn MemoryReader, runtime: Addr) -> Result<(), echion_cpython_layout::views::ViewError> {
//! let layout = Layout::for_version(PyVersion::new(3, 12, 1)).expect("supported");
//! let target = Target::new(reader, layout);
//! for interp in target.interpreters(runtime) {
//!     let interp = interp?;
//!     for thread in target.threads(&interp) {
//!         let thread = thread?;
//!         for frame in target.frames(thread.frame) {
//!             let frame = frame?;
//!             if frame.is_python() {
//!                 let code = target.code(frame.code)?;
//!                 let mut name = String::new();
//!                 target.read_str(code.name, &mut name)?;
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod asyncio;
mod dicts;
mod frames;
mod objects;
mod state;

pub use asyncio::{AsyncioSets, FutureState, GenInfo, GenMark, TaskInfo};
pub use dicts::{ThreadName, MAX_DICT_ENTRIES};
pub use frames::{CodeInfo, CodeSource, FrameInfo, FrameKind, FrameVisitor, Frames};
pub use objects::{pointer_of_hash, SetShape};
pub use state::{GilInfo, InterpreterInfo, Interpreters, ThreadInfo, Threads};

use zerocopy::FromBytes;

use crate::addr::Addr;
use crate::layout::Layout;
use crate::reader::{MemError, MemoryReader};

/// Most frames one walk follows before giving up with
/// [`ViewError::TooDeep`] (CPython's default recursion limit is 1000).
pub const MAX_FRAMES: usize = 4096;
/// Most interpreters one walk follows.
pub const MAX_INTERPRETERS: usize = 1024;
/// Most thread states of one interpreter one walk follows.
pub const MAX_THREADS: usize = 65536;
/// Longest string decoded, in code points (64 Ki).
pub const MAX_STR_CHARS: u64 = 64 * 1024;
/// Longest C string (`tp_name`) read.
pub const MAX_CSTR: usize = 512;
/// Largest line table read, in bytes.
pub const MAX_LINETABLE: u64 = 1 << 20;

/// Why a view could not be read. Small and `Copy`, one variant per kind of
/// failure; what failed is in the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// A read failed.
    #[error("memory read failed: {0}")]
    Mem(#[from] MemError),
    /// A pointer that must not be null was null.
    #[error("unexpected null pointer reading {0}")]
    Null(&'static str),
    /// A length or count read from memory is negative or over its bound.
    #[error("{what}: length {len} is out of bounds")]
    Length {
        /// What was being read.
        what: &'static str,
        /// The length found (as read; negative values wrap).
        len: u64,
    },
    /// A field holds a value that the structure cannot have.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A string's bytes are not a valid encoding of its kind.
    #[error("string data is not valid for its kind")]
    BadString,
    /// An `int` does not fit in `i64`.
    #[error("int does not fit in i64")]
    IntOverflow,
    /// A frame walk went past [`MAX_FRAMES`].
    #[error("more than {MAX_FRAMES} frames")]
    TooDeep,
    /// A list went past its cap.
    #[error("more than {0} entries in a list")]
    TooMany(usize),
    /// A linked list loops.
    #[error("linked list of {0} loops")]
    Cycle(&'static str),
    /// The object is not of the type expected.
    #[error("unexpected object type")]
    WrongType,
    /// The line table could not be decoded.
    #[error("line table: {0}")]
    LineTable(#[from] crate::linetable::LineTableError),
    /// The layout lacks what this view needs (e.g. a 3.11+ field on 3.8).
    #[error("not available in this CPython version: {0}")]
    Unsupported(&'static str),
}

/// A reader plus the layout of the interpreter it reads.
pub struct Target<'r, R: MemoryReader + ?Sized> {
    reader: &'r R,
    layout: &'r Layout,
}

impl<R: MemoryReader + ?Sized> Clone for Target<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: MemoryReader + ?Sized> Copy for Target<'_, R> {}

impl<R: MemoryReader + ?Sized> std::fmt::Debug for Target<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("python", &self.layout.python)
            .finish_non_exhaustive()
    }
}

impl<'r, R: MemoryReader + ?Sized> Target<'r, R> {
    /// Views of the interpreter that `reader` reads, laid out as `layout`.
    pub fn new(reader: &'r R, layout: &'r Layout) -> Self {
        Self { reader, layout }
    }

    /// The layout in use.
    pub fn layout(&self) -> &'r Layout {
        self.layout
    }

    /// The reader in use.
    pub fn reader(&self) -> &'r R {
        self.reader
    }

    /// Reads `[base, base + len)` into the front of `buf` in one read.
    fn span<'b>(&self, base: Addr, len: u64, buf: &'b mut [u8]) -> Result<&'b [u8], ViewError> {
        if base.is_null() {
            return Err(MemError::Null.into());
        }
        let len = usize::try_from(len).map_err(|_| MemError::Overflow)?;
        let out = buf
            .get_mut(..len)
            .ok_or(ViewError::Invalid("span length"))?;
        self.reader.read(base, out)?;
        Ok(out)
    }

    fn read_u64(&self, addr: Addr) -> Result<u64, ViewError> {
        let mut b = [0u8; 8];
        self.reader.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    fn field_addr(&self, base: Addr, off: u64) -> Result<Addr, ViewError> {
        let at = base.offset(off).ok_or(MemError::Overflow)?;
        Ok(Addr(self.read_u64(at)?))
    }
}

/// Fixed-size scratch for span reads: large enough for every struct prefix
/// the views read in one go.
pub(crate) const SPAN: usize = 256;

/// Reads a `T` at byte `off` of `bytes`, bounds-checked.
pub(crate) fn get<T: FromBytes>(bytes: &[u8], off: u64) -> Result<T, ViewError> {
    let off = usize::try_from(off).map_err(|_| ViewError::Invalid("offset"))?;
    let tail = bytes.get(off..).ok_or(ViewError::Invalid("offset"))?;
    T::read_from_prefix(tail)
        .map(|(v, _)| v)
        .map_err(|_| ViewError::Invalid("offset"))
}

/// Reads an address at byte `off` of `bytes`.
pub(crate) fn get_addr(bytes: &[u8], off: u64) -> Result<Addr, ViewError> {
    get::<u64>(bytes, off).map(Addr)
}

/// Brent's cycle detection in O(1) memory, plus a hard cap: walking a list of
/// untrusted `next` pointers always ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CycleGuard {
    tortoise: Addr,
    power: usize,
    lam: usize,
    steps: usize,
    cap: usize,
    what: &'static str,
}

impl CycleGuard {
    pub(crate) fn new(start: Addr, cap: usize, what: &'static str) -> Self {
        Self {
            tortoise: start,
            power: 1,
            lam: 0,
            steps: 0,
            cap,
            what,
        }
    }

    /// Records a step to `next`; errors on a cycle or past the cap.
    pub(crate) fn step(&mut self, next: Addr) -> Result<(), ViewError> {
        self.steps += 1;
        if self.steps > self.cap {
            return Err(ViewError::TooMany(self.cap));
        }
        if next == self.tortoise {
            return Err(ViewError::Cycle(self.what));
        }
        self.lam += 1;
        if self.lam == self.power {
            self.tortoise = next;
            self.power = self.power.saturating_mul(2);
            self.lam = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_guard_finds_loops_and_caps() {
        // 1 -> 2 -> 3 -> 1
        let next = |a: u64| Addr(a % 3 + 1);
        let mut g = CycleGuard::new(Addr(1), 100, "test");
        let mut cur = Addr(1);
        let mut result = Ok(());
        for _ in 0..100 {
            cur = next(cur.0);
            result = g.step(cur);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ViewError::Cycle("test")));

        let mut g = CycleGuard::new(Addr(1), 10, "test");
        let r: Result<Vec<()>, _> = (2..20).map(|a| g.step(Addr(a))).collect();
        assert_eq!(r, Err(ViewError::TooMany(10)));
    }

    #[test]
    fn get_is_bounds_checked() {
        let b = [1u8, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(
            get::<u64>(&b, 0).unwrap(),
            u64::from_ne_bytes([1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert!(get::<u64>(&b, 2).is_err());
        assert!(get::<u8>(&b, 9).is_err());
        assert!(get::<u8>(&b, u64::MAX).is_err());
    }
}
