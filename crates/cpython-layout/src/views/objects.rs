//! `str`, `bytes`, `int` and type names.

use super::{get, get_addr, Target, ViewError, MAX_CSTR, MAX_STR_CHARS, SPAN};
use crate::addr::Addr;
use crate::layout::LongSize;
use crate::reader::{MemError, MemoryReader};

/// Chunk size for copying string data: strings are decoded piecewise through
/// a stack buffer, so the only allocation is the caller's output growing.
const CHUNK: usize = 1024;

/// Bytes per page, the granularity at which memory may end: C strings are
/// read up to page ends so that a read never spans into an unmapped page
/// after the terminator.
const PAGE: u64 = 4096;

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// The `ob_type` of the object at `obj`.
    pub fn ob_type(&self, obj: Addr) -> Result<Addr, ViewError> {
        let t = self.field_addr(obj, self.layout.object.ob_type)?;
        if t.is_null() {
            return Err(ViewError::Null("ob_type"));
        }
        Ok(t)
    }

    /// Appends the `tp_name` of the object's type (e.g. `"str"`,
    /// `"_asyncio.Task"`) to `out`.
    pub fn type_name(&self, obj: Addr, out: &mut String) -> Result<(), ViewError> {
        let t = self.ob_type(obj)?;
        self.tp_name(t, out)
    }

    /// Appends the `tp_name` of the type object at `ty` to `out`.
    pub fn tp_name(&self, ty: Addr, out: &mut String) -> Result<(), ViewError> {
        let name = self.field_addr(ty, self.layout.object.tp_name)?;
        self.read_cstr(name, MAX_CSTR, out)
    }

    /// Appends a NUL-terminated UTF-8 C string of at most `max` bytes.
    pub fn read_cstr(&self, addr: Addr, max: usize, out: &mut String) -> Result<(), ViewError> {
        if addr.is_null() {
            return Err(ViewError::Null("C string"));
        }
        let mut buf = [0u8; MAX_CSTR];
        let max = max.min(MAX_CSTR);
        let mut len = 0usize;
        let mut at = addr;
        while len < max {
            // Never read past the end of the current page in one go.
            let to_page_end = PAGE - (at.0 % PAGE);
            let n = (to_page_end as usize).min(max - len);
            self.reader.read(at, &mut buf[len..len + n])?;
            if let Some(nul) = buf[len..len + n].iter().position(|b| *b == 0) {
                let s = std::str::from_utf8(&buf[..len + nul]).map_err(|_| ViewError::BadString)?;
                out.push_str(s);
                return Ok(());
            }
            len += n;
            at = at.offset(n as u64).ok_or(MemError::Overflow)?;
        }
        Err(ViewError::Length {
            what: "C string",
            len: len as u64,
        })
    }

    /// Decodes the `str` at `addr` into UTF-8, appending to `out`.
    ///
    /// Handles every representation of PEP 393: compact ASCII, compact
    /// UCS1/UCS2/UCS4, and non-compact strings with a separate data buffer
    /// (str subclasses; "legacy" strings on ≤ 3.11, which must be ready).
    /// Strings longer than [`MAX_STR_CHARS`] code points are refused. Lone
    /// surrogates, valid in Python but not in UTF-8, become U+FFFD.
    pub fn read_str(&self, addr: Addr, out: &mut String) -> Result<(), ViewError> {
        let u = &self.layout.unicode;
        let mut buf = [0u8; SPAN];
        let head_len = (u.length + 8).max(u.state + 4).max(u.data + 8);
        let head = self.span(addr, head_len, &mut buf)?;
        let length: i64 = get(head, u.length)?;
        let state: u32 = get(head, u.state)?;
        let kind = (state >> u.kind_shift) & 0b111;
        let compact = (state >> u.compact_shift) & 1 == 1;
        let ascii = (state >> u.ascii_shift) & 1 == 1;
        if let Some(ready) = u.ready_shift {
            // why: a not-ready legacy string has only `wstr` (3.8-3.11,
            // Include/cpython/unicodeobject.h PyUnicode_IS_READY).
            if (state >> ready) & 1 == 0 {
                return Err(ViewError::Invalid("str not ready"));
            }
        }
        if length < 0 || length as u64 > MAX_STR_CHARS {
            return Err(ViewError::Length {
                what: "str",
                len: length as u64,
            });
        }
        if ascii && kind != 1 {
            return Err(ViewError::Invalid("str kind"));
        }
        let data = if compact && ascii {
            addr.offset(u.ascii_size).ok_or(MemError::Overflow)?
        } else if compact {
            addr.offset(u.compact_size).ok_or(MemError::Overflow)?
        } else {
            let d = get_addr(head, u.data)?;
            if d.is_null() {
                return Err(ViewError::Null("str data"));
            }
            d
        };
        let width = match kind {
            1 => 1usize,
            2 => 2,
            4 => 4,
            _ => return Err(ViewError::Invalid("str kind")),
        };
        let total = length as usize * width;
        out.reserve(length as usize);
        let mut chunk = [0u8; CHUNK];
        let mut done = 0usize;
        while done < total {
            let n = (total - done).min(CHUNK);
            let at = data.offset(done as u64).ok_or(MemError::Overflow)?;
            self.reader.read(at, &mut chunk[..n])?;
            decode_chunk(&chunk[..n], width, ascii, out)?;
            done += n;
        }
        Ok(())
    }

    /// Copies the contents of the `bytes` object at `addr` into `out`
    /// (cleared first), refusing more than `max` bytes.
    pub fn read_bytes(&self, addr: Addr, max: u64, out: &mut Vec<u8>) -> Result<(), ViewError> {
        let b = &self.layout.bytes;
        let size = self.read_u64(addr.offset(b.ob_size).ok_or(MemError::Overflow)?)? as i64;
        if size < 0 || size as u64 > max {
            return Err(ViewError::Length {
                what: "bytes",
                len: size as u64,
            });
        }
        let data = addr.offset(b.ob_sval).ok_or(MemError::Overflow)?;
        out.clear();
        out.resize(size as usize, 0);
        self.reader.read(data, out)?;
        Ok(())
    }

    /// The value of the `int` at `addr`, if it fits in `i64`. One read of
    /// the header and as many digits as an `i64` needs; an `int` that ends
    /// its mapping (where that read would cross into nothing) is read
    /// header first, then exactly its digits.
    pub fn read_int(&self, addr: Addr) -> Result<i64, ViewError> {
        let l = &self.layout.long;
        let size_at = match l.size {
            LongSize::ObSize(off) => off,
            LongSize::Tag { lv_tag, .. } => lv_tag,
        };
        if l.digit_size != 4 {
            return Err(ViewError::Unsupported("digit size"));
        }
        // 64 bits need at most ceil(64 / shift) digits; a normalized int
        // with more does not fit.
        let max_digits = 64_u64.div_ceil(u64::from(l.shift.max(1)));
        let mut buf = [0u8; SPAN];
        let whole = (size_at + 8).max(l.ob_digit + max_digits * 4);
        let mut digits = [0u8; SPAN];
        let (head, digits): (u64, &[u8]) = match self.span(addr, whole, &mut buf) {
            Ok(b) => (get(b, size_at)?, &b[l.ob_digit as usize..]),
            Err(_) => {
                // Exactly the size word, then exactly the digits it counts.
                let head = self.read_u64(addr.offset(size_at).ok_or(MemError::Overflow)?)?;
                let (_, n) = self.int_size(head)?;
                let n = (n.min(max_digits) * 4) as usize;
                let out = digits.get_mut(..n).ok_or(ViewError::IntOverflow)?;
                if n > 0 {
                    self.reader
                        .read(addr.offset(l.ob_digit).ok_or(MemError::Overflow)?, out)?;
                }
                (head, out)
            }
        };
        let (negative, ndigits) = self.int_size(head)?;
        if ndigits > max_digits {
            return Err(ViewError::IntOverflow);
        }
        let shift = u32::from(l.shift);
        let mut value: u128 = 0;
        for i in (0..ndigits).rev() {
            let d: u32 = get(digits, i * 4)?;
            if d >> shift != 0 {
                return Err(ViewError::Invalid("int digit"));
            }
            value = (value << shift) | u128::from(d);
        }
        if negative {
            if value > i64::MAX as u128 + 1 {
                return Err(ViewError::IntOverflow);
            }
            Ok((value as i128).wrapping_neg() as i64)
        } else {
            i64::try_from(value).map_err(|_| ViewError::IntOverflow)
        }
    }

    /// The sign and digit count an `int`'s `ob_size` (≤ 3.11) or `lv_tag`
    /// (3.12+) word says.
    fn int_size(&self, head: u64) -> Result<(bool, u64), ViewError> {
        match self.layout.long.size {
            LongSize::ObSize(_) => {
                let size = head as i64;
                Ok((size < 0, size.unsigned_abs()))
            }
            LongSize::Tag { non_size_bits, .. } => {
                // why: sign bits are 0 positive, 1 zero, 2 negative
                // (Include/internal/pycore_long.h, v3.12.1, SIGN_MASK).
                let sign = head & 3;
                let n = head >> non_size_bits;
                if sign == 3 || (sign == 1 && n != 0) {
                    return Err(ViewError::Invalid("int sign"));
                }
                Ok((sign == 2, n))
            }
        }
    }
}

/// Decodes one chunk of PEP 393 data (whole code units; chunks are a
/// multiple of 4 bytes except the last) and appends it.
fn decode_chunk(
    bytes: &[u8],
    width: usize,
    ascii: bool,
    out: &mut String,
) -> Result<(), ViewError> {
    match width {
        1 => {
            for &b in bytes {
                if ascii && b >= 0x80 {
                    return Err(ViewError::BadString);
                }
                // Latin-1: the byte is the code point.
                out.push(char::from(b));
            }
        }
        2 => {
            for c in bytes.chunks_exact(2) {
                let u = u32::from(u16::from_ne_bytes([c[0], c[1]]));
                out.push(char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
        _ => {
            for c in bytes.chunks_exact(4) {
                let u = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                if u > 0x10_FFFF {
                    return Err(ViewError::BadString);
                }
                out.push(char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
    }
    Ok(())
}

/// Slots of a set table read per chunk.
const SET_CHUNK: usize = 64;

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// `tp_base` of the type at `ty` (null for `object`).
    pub fn type_base(&self, ty: Addr) -> Result<Addr, ViewError> {
        self.field_addr(ty, self.layout.object.tp_base)
    }

    /// The referent of the weak reference at `wr` (`Py_None` once it is
    /// gone; the caller checks what it finds there).
    pub fn weakref_target(&self, wr: Addr) -> Result<Addr, ViewError> {
        self.field_addr(wr, self.layout.containers.wr_object)
    }

    /// The type of the object at `wr` and, if it is a weak reference, its
    /// referent: one read (the caller checks the type).
    pub fn weakref(&self, wr: Addr) -> Result<(Addr, Addr), ViewError> {
        let (ty, target) = (self.layout.object.ob_type, self.layout.containers.wr_object);
        let mut buf = [0u8; SPAN];
        let b = self.span(wr, (ty + 8).max(target + 8), &mut buf)?;
        Ok((get_addr(b, ty)?, get_addr(b, target)?))
    }

    /// The async generator that the `async_generator_asend` at `asend`
    /// drives.
    pub fn asend_generator(&self, asend: Addr) -> Result<Addr, ViewError> {
        self.field_addr(asend, self.layout.containers.ags_gen)
    }

    /// The items of the `list` at `list`, at most `max` of them (more is
    /// [`ViewError::TooMany`]), handed to `each` in order.
    pub fn list_items(
        &self,
        list: Addr,
        max: usize,
        each: &mut dyn FnMut(Addr),
    ) -> Result<(), ViewError> {
        let len = self.read_u64(
            list.offset(self.layout.object.ob_size)
                .ok_or(MemError::Overflow)?,
        )?;
        if len > max as u64 {
            return Err(ViewError::TooMany(max));
        }
        let items = self.field_addr(list, self.layout.containers.list_item)?;
        let mut chunk = [0u8; SPAN];
        let per = (SPAN / 8) as u64;
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(per);
            let bytes = &mut chunk[..(n * 8) as usize];
            self.reader
                .read(items.offset(at * 8).ok_or(MemError::Overflow)?, bytes)?;
            for item in bytes.chunks_exact(8) {
                each(get_addr(item, 0)?);
            }
            at += n;
        }
        Ok(())
    }

    /// Hands every non-null key of the set at `set` to `each` (deleted
    /// slots hold a `dummy` object that the caller tells apart by its
    /// type), in table order, until `each` returns `false`. A table of
    /// more than `max_slots` slots is [`ViewError::TooMany`]. Reads the
    /// table in chunks through a stack buffer; allocates nothing.
    pub fn set_keys(
        &self,
        set: Addr,
        max_slots: usize,
        each: &mut dyn FnMut(Addr) -> bool,
    ) -> Result<(), ViewError> {
        let shape = self.set_shape(set)?;
        if shape.slots > max_slots as u64 {
            return Err(ViewError::TooMany(max_slots));
        }
        self.set_entries(&shape, 0, shape.slots, &mut |key, _| each(key))
    }

    /// How big the set at `set` is, and where its table is.
    pub fn set_shape(&self, set: Addr) -> Result<SetShape, ViewError> {
        let c = &self.layout.containers;
        let mut buf = [0u8; SPAN];
        let b = self.span(set, c.set_table + 8, &mut buf)?;
        let used: i64 = get(b, c.set_used)?;
        let mask: i64 = get(b, c.set_mask)?;
        let table = get_addr(b, c.set_table)?;
        let slots = u64::try_from(mask)
            .ok()
            .and_then(|m| m.checked_add(1))
            .filter(|n| n.is_power_of_two())
            .ok_or(ViewError::Invalid("set mask"))?;
        let used = u64::try_from(used)
            .ok()
            .filter(|&u| u <= slots)
            .ok_or(ViewError::Invalid("set used"))?;
        Ok(SetShape { used, slots, table })
    }

    /// Hands the non-null keys of `count` slots of a set's table from slot
    /// `from` (wrapping around its end), with the hash each slot keeps, to
    /// `each`, in table order, until it returns `false`. Reads the table
    /// in chunks through a stack buffer; allocates nothing.
    pub fn set_entries(
        &self,
        shape: &SetShape,
        from: u64,
        count: u64,
        each: &mut dyn FnMut(Addr, i64) -> bool,
    ) -> Result<(), ViewError> {
        let c = &self.layout.containers;
        let size = c.set_entry_size;
        let entry_bytes = usize::try_from(size).map_err(|_| ViewError::Invalid("setentry"))?;
        if entry_bytes == 0 || entry_bytes * SET_CHUNK > 16 * SPAN {
            return Err(ViewError::Invalid("setentry"));
        }
        let mut chunk = [0u8; 16 * SPAN];
        let count = count.min(shape.slots);
        let mut at = from % shape.slots.max(1);
        let mut left = count;
        while left > 0 {
            let n = left.min(SET_CHUNK as u64).min(shape.slots - at);
            let bytes = &mut chunk[..n as usize * entry_bytes];
            let start = shape.table.offset(at * size).ok_or(MemError::Overflow)?;
            self.reader.read(start, bytes)?;
            for slot in bytes.chunks_exact(entry_bytes) {
                let key = get_addr(slot, c.set_entry_key)?;
                if !key.is_null() && !each(key, get(slot, c.set_entry_hash)?) {
                    return Ok(());
                }
            }
            left -= n;
            at = (at + n) % shape.slots;
        }
        Ok(())
    }
}

/// A set's size and table, as [`Target::set_shape`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetShape {
    /// Keys it holds.
    pub used: u64,
    /// Slots of its table (a power of two).
    pub slots: u64,
    table: Addr,
}

/// The object whose hash CPython's default `__hash__` (`_Py_HashPointer`:
/// the address rotated right by 4 bits) made `hash`: a weak reference's
/// hash is its referent's, so the set of weak references behind a
/// `WeakSet` of tasks holds each task's address in its slot's hash. The
/// caller checks what is there.
pub fn pointer_of_hash(hash: i64) -> Addr {
    Addr((hash as u64).rotate_left(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_comes_back_from_its_default_hash() {
        // `_Py_HashPointer`: the address rotated right by 4 bits.
        for p in [0x7f00_1234_5670u64, 0x5555_5555_0010, 0x10] {
            let hash = p.rotate_right(4) as i64;
            assert_eq!(pointer_of_hash(hash), Addr(p));
        }
    }
}
