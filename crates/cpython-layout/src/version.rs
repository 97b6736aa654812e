//! The CPython version a layout is chosen for.

use std::fmt;

/// A CPython version (`major.minor.micro`), as found in `PY_VERSION_HEX` or
/// `sys.version_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyVersion {
    /// Major version, always 3 for the supported interpreters.
    pub major: u8,
    /// Minor version: 8 to 13 are supported.
    pub minor: u8,
    /// Micro (patch) version.
    pub micro: u8,
}

impl PyVersion {
    /// Builds a version from its parts.
    pub const fn new(major: u8, minor: u8, micro: u8) -> Self {
        Self {
            major,
            minor,
            micro,
        }
    }

    /// Decodes `PY_VERSION_HEX` (`0xMMmmppRS`).
    pub const fn from_hex(hex: u32) -> Self {
        Self::new((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8)
    }

    /// Whether this version's minor release is one the layouts cover.
    pub const fn is_supported(self) -> bool {
        self.major == 3 && self.minor >= 8 && self.minor <= 13
    }

    /// `(major, minor)` for comparisons that ignore the micro version.
    pub const fn minor_pair(self) -> (u8, u8) {
        (self.major, self.minor)
    }
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hex() {
        let v = PyVersion::from_hex(0x030b07f0);
        assert_eq!(v, PyVersion::new(3, 11, 7));
        assert!(v.is_supported());
        assert!(!PyVersion::new(3, 7, 0).is_supported());
        assert!(!PyVersion::new(3, 14, 0).is_supported());
        assert_eq!(v.to_string(), "3.11.7");
    }
}
