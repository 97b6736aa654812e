//! Cost of line-table decoding on real tables.
//!
//! The sampler decodes a location once per (code object, offset) and caches
//! it, so this is a cold-path cost; the bench keeps it visible. For each
//! format it takes the largest code object of the committed fixture stream
//! (`tests/data/linetable/3.X.bin`, written by
//! `tools/linetable/gen_linetable_fixtures.py`) and measures `location` at
//! the last offset (a walk over the whole table, the worst case) and a full
//! walk of `ranges`.

// `criterion_group!` defines an undocumented `pub fn benches`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use echion_cpython_layout::linetable::{location, ranges, TableFormat};
use echion_cpython_layout::PyVersion;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/linetable");

/// A code object of a fixture stream: first line, table, number of offsets.
struct Code {
    first_line: i32,
    table: Vec<u8>,
    n_offsets: u32,
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn u32_at(data: &mut &[u8]) -> u32 {
    u32::from_le_bytes(take(data, 4).try_into().expect("4 bytes"))
}

/// The version and the code object with the largest table of a fixture.
fn largest_code(minor: u8) -> (PyVersion, Code) {
    let path = format!("{FIXTURES}/3.{minor}.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut data = bytes.as_slice();
    let header = take(&mut data, 8);
    assert_eq!(&header[..4], b"ELTF", "{path}");
    let version = PyVersion::new(header[5], header[6], header[7]);
    let mut best: Option<Code> = None;
    loop {
        match take(&mut data, 1)[0] {
            b'F' => {
                let n = u32_at(&mut data) as usize;
                take(&mut data, n);
            }
            b'C' => {
                let n = u32_at(&mut data) as usize;
                take(&mut data, n);
                let first_line = u32_at(&mut data) as i32;
                let n = u32_at(&mut data) as usize;
                let table = take(&mut data, n).to_vec();
                let n_offsets = u32_at(&mut data);
                let n_known = u32_at(&mut data) as usize;
                take(&mut data, 16 * n_known);
                let larger = match &best {
                    None => true,
                    Some(b) => b.table.len() < table.len(),
                };
                if larger {
                    best = Some(Code {
                        first_line,
                        table,
                        n_offsets,
                    });
                }
            }
            _ => break,
        }
    }
    (version, best.expect("fixture has code objects"))
}

fn bench(c: &mut Criterion) {
    for minor in [8, 10, 11] {
        let (version, code) = largest_code(minor);
        let format = TableFormat::for_version(version).expect("supported version");
        let last = 2 * (code.n_offsets - 1);
        let label = format!("{version} ({} table bytes)", code.table.len());
        c.bench_function(&format!("location last offset {label}"), |b| {
            b.iter(|| {
                location(
                    format,
                    black_box(&code.table),
                    code.first_line,
                    black_box(last),
                )
            })
        });
        c.bench_function(&format!("ranges full walk {label}"), |b| {
            b.iter(|| ranges(format, black_box(&code.table), code.first_line).count())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
