//! Addresses in the address space being read.
//!
//! A pointer found inside interpreter memory is only a number until a
//! [`MemoryReader`](crate::reader::MemoryReader) has read what it points to, so
//! mirrors and views carry [`Addr`], never `*const T`: following one is always
//! an explicit, fallible read.

use std::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An address in the target's address space (64-bit targets only).
///
/// `Addr` has the size and alignment of a C pointer on the supported targets,
/// so it can stand for a pointer field inside a `#[repr(C)]` mirror.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct Addr(pub u64);

impl Addr {
    /// The null pointer.
    pub const NULL: Addr = Addr(0);

    /// Whether this is the null pointer.
    #[inline]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// `self + off`, or `None` on overflow (a garbage pointer near the top of
    /// the address space must not wrap around to a valid one).
    #[inline]
    pub const fn offset(self, off: u64) -> Option<Addr> {
        match self.0.checked_add(off) {
            Some(a) => Some(Addr(a)),
            None => None,
        }
    }

    /// The byte distance from `base` to `self`, or `None` if `self < base`.
    #[inline]
    pub const fn distance_from(self, base: Addr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({:#x})", self.0)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<u64> for Addr {
    fn from(v: u64) -> Self {
        Addr(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_checks_overflow() {
        assert_eq!(Addr(8).offset(8), Some(Addr(16)));
        assert_eq!(Addr(u64::MAX).offset(1), None);
        assert_eq!(Addr(16).distance_from(Addr(8)), Some(8));
        assert_eq!(Addr(8).distance_from(Addr(16)), None);
        assert!(Addr::NULL.is_null());
        assert!(Addr(24).is_aligned(8));
        assert!(!Addr(25).is_aligned(8));
        assert_eq!(format!("{}", Addr(255)), "0xff");
    }
}
