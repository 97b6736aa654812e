//! String and int decoding for every layout, over hand-built snapshots laid
//! out with each version's offsets.

use echion_cpython_layout::layout::{Layout, LongSize};
use echion_cpython_layout::views::{Target, ViewError, MAX_STR_CHARS};
use echion_cpython_layout::{Addr, SnapshotReader};

const OBJ: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;

fn put(buf: &mut [u8], off: u64, bytes: &[u8]) {
    let off = off as usize;
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Builds a `str` object at OBJ. `legacy` puts the data at DATA behind the
/// data pointer (non-compact).
fn make_str(l: &Layout, s: &str, legacy: bool, ready: bool) -> SnapshotReader {
    let cps: Vec<u32> = s.chars().map(u32::from).collect();
    let max = cps.iter().copied().max().unwrap_or(0);
    let ascii = max < 0x80;
    let kind: u32 = if max < 0x100 {
        1
    } else if max < 0x10000 {
        2
    } else {
        4
    };
    let mut data = Vec::new();
    for c in &cps {
        match kind {
            1 => data.push(*c as u8),
            2 => data.extend_from_slice(&(*c as u16).to_ne_bytes()),
            _ => data.extend_from_slice(&c.to_ne_bytes()),
        }
    }
    let u = &l.unicode;
    let mut head = vec![0u8; (u.compact_size + 8).max(u.data + 8) as usize];
    put(&mut head, l.object.ob_type, &0xdead_0000u64.to_ne_bytes());
    put(&mut head, u.length, &(cps.len() as i64).to_ne_bytes());
    let mut state = kind << u.kind_shift;
    if !legacy {
        state |= 1 << u.compact_shift;
    }
    if ascii && !legacy {
        state |= 1 << u.ascii_shift;
    }
    if let Some(r) = u.ready_shift {
        if ready {
            state |= 1 << r;
        }
    }
    put(&mut head, u.state, &state.to_ne_bytes());
    let mut snap = SnapshotReader::new();
    if legacy {
        put(&mut head, u.data, &DATA.to_ne_bytes());
        snap.insert(Addr(DATA), &data);
        snap.insert(Addr(OBJ), &head);
    } else {
        let at = if ascii { u.ascii_size } else { u.compact_size } as usize;
        head.truncate(at);
        head.extend_from_slice(&data);
        head.push(0);
        head.resize(head.len().max((u.data + 8) as usize), 0);
        snap.insert(Addr(OBJ), &head);
    }
    snap
}

#[test]
fn strings_of_every_kind_and_layout() {
    let samples = [
        "",
        "hello",
        "café",
        "ÿÿ",
        "計算",
        "Ωmega",
        "😀 smile",
        "mixed 計算 😀 é",
    ];
    for l in Layout::all() {
        for s in samples {
            for legacy in [false, true] {
                let snap = make_str(l, s, legacy, true);
                let t = Target::new(&snap, l);
                let mut out = String::new();
                t.read_str(Addr(OBJ), &mut out)
                    .unwrap_or_else(|e| panic!("{:?} {s:?} legacy={legacy}: {e}", l.python));
                assert_eq!(out, s, "{:?} legacy={legacy}", l.python);
            }
        }
    }
}

#[test]
fn bad_strings_are_errors() {
    for l in Layout::all() {
        let u = &l.unicode;
        if u.ready_shift.is_some() {
            let snap = make_str(l, "legacy", true, false);
            let mut out = String::new();
            assert!(Target::new(&snap, l).read_str(Addr(OBJ), &mut out).is_err());
        }
        // Kind 3 does not exist.
        let mut snap = make_str(l, "abc", false, true);
        let mut state = [0u8; 4];
        use echion_cpython_layout::MemoryReader;
        snap.read(Addr(OBJ + u.state), &mut state).unwrap();
        let s = u32::from_ne_bytes(state) & !(7 << u.kind_shift) | (3 << u.kind_shift);
        snap.insert(Addr(OBJ + u.state), &s.to_ne_bytes());
        let mut out = String::new();
        assert_eq!(
            Target::new(&snap, l).read_str(Addr(OBJ), &mut out),
            Err(ViewError::Invalid("str kind"))
        );
        // Too long: refused before reading or allocating.
        let mut snap = make_str(l, "abc", false, true);
        snap.insert(
            Addr(OBJ + u.length),
            &(MAX_STR_CHARS as i64 + 1).to_ne_bytes(),
        );
        let mut out = String::new();
        assert!(matches!(
            Target::new(&snap, l).read_str(Addr(OBJ), &mut out),
            Err(ViewError::Length { .. })
        ));
        assert!(out.capacity() < 1024);
        // Negative length.
        snap.insert(Addr(OBJ + u.length), &(-5i64).to_ne_bytes());
        assert!(Target::new(&snap, l).read_str(Addr(OBJ), &mut out).is_err());
        // Non-ASCII byte in an ASCII string.
        let mut snap = make_str(l, "abc", false, true);
        snap.insert(Addr(OBJ + u.ascii_size), &[0xe9]);
        assert_eq!(
            Target::new(&snap, l).read_str(Addr(OBJ), &mut out),
            Err(ViewError::BadString)
        );
        // Data running into unmapped memory.
        let snap = make_str(l, "計算", false, true);
        let mut short = SnapshotReader::new();
        for (a, b) in snap.regions() {
            short.insert(a, &b[..(u.compact_size + 2) as usize]);
        }
        assert!(matches!(
            Target::new(&short, l).read_str(Addr(OBJ), &mut out),
            Err(ViewError::Mem(_))
        ));
    }
}

fn make_int(l: &Layout, v: i128) -> SnapshotReader {
    let mut mag = v.unsigned_abs();
    let mut digits = Vec::new();
    while mag > 0 {
        digits.push((mag & ((1 << 30) - 1)) as u32);
        mag >>= 30;
    }
    let mut buf = vec![0u8; (l.long.ob_digit as usize) + 4 * digits.len().max(1)];
    match l.long.size {
        LongSize::ObSize(off) => {
            let n = digits.len() as i64;
            put(&mut buf, off, &(if v < 0 { -n } else { n }).to_ne_bytes());
        }
        LongSize::Tag {
            lv_tag,
            non_size_bits,
        } => {
            let sign: u64 = if v < 0 {
                2
            } else if v == 0 {
                1
            } else {
                0
            };
            put(
                &mut buf,
                lv_tag,
                &(((digits.len() as u64) << non_size_bits) | sign).to_ne_bytes(),
            );
        }
    }
    for (i, d) in digits.iter().enumerate() {
        put(&mut buf, l.long.ob_digit + 4 * i as u64, &d.to_ne_bytes());
    }
    let mut snap = SnapshotReader::new();
    snap.insert(Addr(OBJ), &buf);
    snap
}

#[test]
fn ints_small_and_multi_digit() {
    let values: [i128; 12] = [
        0,
        1,
        -1,
        42,
        (1 << 30) - 1,
        1 << 30,
        -(1 << 45),
        1 << 60,
        (1 << 62) + 12345,
        i64::MAX as i128,
        i64::MIN as i128,
        -(i64::MAX as i128),
    ];
    for l in Layout::all() {
        for v in values {
            let snap = make_int(l, v);
            assert_eq!(
                Target::new(&snap, l).read_int(Addr(OBJ)),
                Ok(v as i64),
                "{:?} {v}",
                l.python
            );
        }
        for v in [
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            1 << 80,
            -(1 << 100),
        ] {
            let snap = make_int(l, v);
            assert_eq!(
                Target::new(&snap, l).read_int(Addr(OBJ)),
                Err(ViewError::IntOverflow),
                "{v}"
            );
        }
        // A digit with bits above PyLong_SHIFT is not an int.
        let mut snap = make_int(l, 5);
        snap.insert(Addr(OBJ + l.long.ob_digit), &u32::MAX.to_ne_bytes());
        assert_eq!(
            Target::new(&snap, l).read_int(Addr(OBJ)),
            Err(ViewError::Invalid("int digit"))
        );
        if let LongSize::Tag { lv_tag, .. } = l.long.size {
            snap.insert(Addr(OBJ + lv_tag), &((1u64 << 3) | 3).to_ne_bytes());
            assert!(Target::new(&snap, l).read_int(Addr(OBJ)).is_err());
        }
    }
}

#[test]
fn bytes_are_bounded() {
    for l in Layout::all() {
        let mut buf = vec![0u8; l.bytes.ob_sval as usize + 6];
        put(&mut buf, l.bytes.ob_size, &5i64.to_ne_bytes());
        put(&mut buf, l.bytes.ob_sval, b"hello\0");
        let mut snap = SnapshotReader::new();
        snap.insert(Addr(OBJ), &buf);
        let t = Target::new(&snap, l);
        let mut out = Vec::new();
        t.read_bytes(Addr(OBJ), 100, &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(t.read_bytes(Addr(OBJ), 4, &mut out).is_err());
        snap.insert(Addr(OBJ + l.bytes.ob_size), &(-1i64).to_ne_bytes());
        let t = Target::new(&snap, l);
        assert!(t.read_bytes(Addr(OBJ), 100, &mut out).is_err());
    }
}
