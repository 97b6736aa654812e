//! MOJO's signed variable-length integers.
//!
//! The first byte holds a continuation bit (0x80), a sign bit (0x40) and the
//! six least significant bits of the magnitude; every following byte holds a
//! continuation bit and seven more bits. This is the encoding of Austin's
//! `mojo.h` and of austin-python's `to_varint`/`read_int`.

/// Longest encoding of a 64-bit magnitude: 6 bits, then 7 bits a byte.
pub const MAX_LEN: usize = 10;

/// Appends the encoding of `n` to `out`.
#[inline]
pub fn encode(n: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_LEN];
    let len = encode_into(n, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// Writes the encoding of `n` into `buf` and returns its length.
#[inline]
pub fn encode_into(n: i64, buf: &mut [u8; MAX_LEN]) -> usize {
    let mut mag = n.unsigned_abs();
    let mut b = (mag & 0x3f) as u8;
    if n < 0 {
        b |= 0x40;
    }
    mag >>= 6;
    if mag == 0 {
        buf[0] = b;
        return 1;
    }
    buf[0] = b | 0x80;
    let mut i = 1;
    loop {
        let mut b = (mag & 0x7f) as u8;
        mag >>= 7;
        if mag != 0 {
            b |= 0x80;
        }
        buf[i] = b;
        i += 1;
        if mag == 0 {
            return i;
        }
    }
}

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before the last byte of the integer.
    Truncated,
    /// The magnitude does not fit in 64 bits.
    Overflow,
}

/// Decodes one integer from the start of `input`; returns it and the number
/// of bytes it took.
#[inline]
pub fn decode(input: &[u8]) -> Result<(i64, usize), VarintError> {
    let first = *input.first().ok_or(VarintError::Truncated)?;
    let negative = first & 0x40 != 0;
    let mut mag = u64::from(first & 0x3f);
    let mut len = 1;
    if first & 0x80 != 0 {
        let mut shift = 6u32;
        loop {
            let b = *input.get(len).ok_or(VarintError::Truncated)?;
            len += 1;
            let bits = u64::from(b & 0x7f);
            if shift >= 64 || (shift > 57 && bits >> (64 - shift) != 0) {
                return Err(VarintError::Overflow);
            }
            mag |= bits << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let value = if negative {
        // -2^63 is the one negative value whose magnitude exceeds i64::MAX.
        if mag > i64::MAX as u64 + 1 {
            return Err(VarintError::Overflow);
        }
        (mag as i64).wrapping_neg()
    } else {
        i64::try_from(mag).map_err(|_| VarintError::Overflow)?
    };
    Ok((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values checked against austin-python's `to_varint`.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (63, &[0x3f]),
            (64, &[0x80, 0x01]),
            (-1, &[0x41]),
            (-64, &[0xc0, 0x01]),
            (1000, &[0xa8, 0x0f]),
            (8191, &[0xbf, 0x7f]),
            (8192, &[0x80, 0x80, 0x01]),
        ];
        for (n, bytes) in cases {
            let mut out = Vec::new();
            encode(*n, &mut out);
            assert_eq!(&out[..], *bytes, "encoding {n}");
            assert_eq!(decode(bytes), Ok((*n, bytes.len())), "decoding {n}");
        }
    }

    #[test]
    fn extremes() {
        for n in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let mut out = Vec::new();
            encode(n, &mut out);
            assert!(out.len() <= MAX_LEN);
            assert_eq!(decode(&out), Ok((n, out.len())));
        }
    }

    #[test]
    fn errors() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::Overflow));
        // 2^64 does not fit.
        let mut big = vec![0x80u8];
        big.extend_from_slice(&[0xff; 8]);
        big.push(0x7f);
        assert_eq!(decode(&big), Err(VarintError::Overflow));
        // Negative magnitude 2^63 + 1 does not fit either.
        let mut out = Vec::new();
        encode(i64::MIN, &mut out);
        out[0] |= 0x01;
        assert_eq!(decode(&out), Err(VarintError::Overflow));
    }

    proptest! {
        #[test]
        fn round_trip(n in any::<i64>()) {
            let mut out = Vec::new();
            encode(n, &mut out);
            prop_assert_eq!(decode(&out), Ok((n, out.len())));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok((_, len)) = decode(&bytes) {
                prop_assert!(len <= bytes.len() && len <= MAX_LEN);
            }
        }
    }
}
