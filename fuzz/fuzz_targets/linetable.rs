//! The line tables of every supported version (`co_lnotab` of 3.8 and 3.9,
//! 3.10's `co_linetable`, the location tables of 3.11 to 3.13), as the
//! sampler decodes them from code objects it reads.
//!
//! Input: one byte choosing the format, the code object's first line (i32
//! LE), then the table. Checked: no panic; a walk yields at most one range
//! per byte (plus the open last range of a `co_lnotab`), contiguous and
//! non-empty; `location` (the fast path) gives what the walk gives for
//! every instruction offset; `position` never panics.
#![no_main]

use echion_cpython_layout::linetable::{location, location_by_walk, position, ranges, TableFormat};
use libfuzzer_sys::fuzz_target;

const FORMATS: [TableFormat; 3] = [
    TableFormat::Lnotab,
    TableFormat::Linetable310,
    TableFormat::Locations311,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let format = FORMATS[usize::from(data[0]) % FORMATS.len()];
    let first_line = i32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let table = &data[5..];
    let walk: Vec<_> = ranges(format, table, first_line).collect();
    assert!(
        walk.len() <= table.len() + 1,
        "{} ranges from {} bytes",
        walk.len(),
        table.len()
    );
    let mut last_end = 0u64;
    for r in walk.iter().flatten() {
        assert_eq!(r.start, last_end, "ranges are contiguous");
        assert!(r.end > r.start, "ranges are not empty");
        last_end = r.end;
    }
    let last = walk.iter().flatten().map(|r| r.start).max().unwrap_or(0);
    for offset in (0..=last.min(4096) as u32 + 2).step_by(2) {
        let want = location_by_walk(format, table, first_line, offset);
        assert_eq!(
            location(format, table, first_line, offset),
            want,
            "offset {offset}"
        );
        let _ = position(format, table, first_line, Some(offset));
    }
    let _ = position(format, table, first_line, None);
    let _ = position(format, table, first_line, Some(u32::MAX));
});
