//! Unwinding recorded captures of real processes without a live process:
//! each capture (written by `examples/record_captures.rs`) must unwind to
//! exactly the frames the live unwind found, with the same names, and
//! interleave with the Python frames the evaluation loops ran.
#![allow(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};

use echion_unwind::record::Recording;
use echion_unwind::{interleave, Piece, UnwindEnd};

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/captures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".capture.gz"))
        .collect();
    out.sort();
    out
}

fn load(path: &Path) -> Recording {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_end(&mut data)
        .expect("gunzip");
    Recording::from_bytes(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unwind(rec: &Recording) -> (Vec<u64>, Vec<String>, Vec<bool>, UnwindEnd) {
    let mut unwinder = rec.unwinder();
    let mut pcs = Vec::new();
    let end = unwinder.unwind(&rec.captured(), &mut pcs);
    let (names, eval) = pcs
        .iter()
        .enumerate()
        .map(|(i, &pc)| {
            let s = unwinder.symbol(pc, i);
            (s.name, s.eval)
        })
        .unzip();
    (pcs, names, eval, end)
}

#[test]
fn every_recording_unwinds_as_it_did_live() {
    let all = captures();
    assert!(all.len() >= 3, "{all:?}");
    for path in all {
        let rec = load(&path);
        let (pcs, names, eval, _) = unwind(&rec);
        let want: Vec<u64> = rec.frames.iter().map(|f| f.pc).collect();
        assert_eq!(pcs, want, "{}: {}", path.display(), rec.label);
        let want_names: Vec<&str> = rec.frames.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, want_names, "{}", path.display());
        let want_eval: Vec<bool> = rec.frames.iter().map(|f| f.eval).collect();
        assert_eq!(eval, want_eval, "{}", path.display());
    }
}

#[test]
fn a_qsort_callback_unwinds_through_libc() {
    let rec = load(&captures_named("rust-qsort"));
    let (_, names, _, _) = unwind(&rec);
    let at = |n: &str| names.iter().position(|s| s.contains(n));
    let cmp = at("compare").expect("callback");
    let qsort = at("qsort").expect("qsort");
    let caller = at("sort_forever").expect("caller");
    assert!(cmp < qsort && qsort < caller, "{names:?}");
}

#[test]
fn the_sort_sits_between_two_evaluation_loops_and_interleaves() {
    for (name, per_frame) in [("python3.8-sorted", true), ("python3.12-sorted", false)] {
        let rec = load(&captures_named(name));
        let (_, names, eval, _) = unwind(&rec);
        // Innermost: the key function's evaluation loop; under it the
        // sort, called from the loop that runs outer().
        assert!(eval[0], "{name}: {names:?}");
        let sort = names
            .iter()
            .position(|n| n == "list_sort_impl")
            .expect("list_sort_impl");
        let outer_eval = (sort..names.len())
            .find(|&i| eval[i])
            .expect("caller's loop");
        assert!(
            names[1..sort].iter().all(|n| !n.starts_with("_PyEval")),
            "{name}: {names:?}"
        );
        // The Python frames, innermost first: key, outer, <module>; up to
        // 3.10 one loop each, from 3.11 outer and <module> share one.
        let groups: &[usize] = if per_frame { &[1, 1, 1] } else { &[1, 2] };
        let mut out = Vec::new();
        interleave(&eval, groups, &mut out);
        let key = out
            .iter()
            .position(|p| *p == Piece::Python(0))
            .expect("key");
        let outer = out
            .iter()
            .position(|p| *p == Piece::Python(1))
            .expect("outer");
        let module = out
            .iter()
            .position(|p| *p == Piece::Python(2))
            .expect("<module>");
        assert!(module < outer && outer < key, "{name}: {out:?}");
        // Between outer and key: the sort's C frames, no evaluation loop.
        let between: Vec<&str> = out[outer + 1..key]
            .iter()
            .map(|p| match p {
                Piece::Native(n) => names[*n].as_str(),
                Piece::Python(_) => "<python>",
            })
            .collect();
        assert!(between.contains(&"list_sort_impl"), "{name}: {between:?}");
        assert!(
            !between
                .iter()
                .any(|n| n.starts_with("_PyEval") || *n == "<python>"),
            "{name}: {between:?}"
        );
        // No evaluation loop is left in the interleaved stack.
        assert!(
            out.iter()
                .all(|p| !matches!(p, Piece::Native(n) if eval[*n])),
            "{name}: {out:?}"
        );
        assert!(outer_eval > sort);
    }
}

#[test]
fn a_stack_cut_short_ends_the_unwind_without_a_panic() {
    let rec = load(&captures_named("python3.12-sorted"));
    for keep in [0, 8, 64, rec.stack.len() / 2] {
        let mut cut = rec.clone();
        cut.stack.truncate(keep);
        let (pcs, _, _, end) = unwind(&cut);
        assert!(pcs.len() <= rec.frames.len(), "{keep}");
        assert!(!pcs.is_empty(), "the instruction pointer at least");
        if pcs.len() < rec.frames.len() {
            assert_ne!(end, UnwindEnd::Complete, "{keep}: {pcs:x?}");
        }
    }
}

fn captures_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/captures/{name}.capture.gz"))
}

#[test]
fn a_header_whose_entries_point_before_eh_frame_is_left_out() {
    // Found by the fuzzer: gimli subtracts `.eh_frame`'s address from an
    // entry's FDE address unchecked, and overflowed (a panic in builds with
    // overflow checks, as this test's) on an entry before `.eh_frame`. Such
    // a header is left out: the unwind ends in that module, without a panic.
    for path in captures() {
        let mut rec = load(&path);
        let mut damaged = 0;
        for m in &mut rec.modules {
            let (Some(hdr_svma), Some(eh)) = (m.eh_frame_hdr_svma.clone(), m.eh_frame_svma.clone())
            else {
                continue;
            };
            let count = u32::from_le_bytes(m.eh_frame_hdr[8..12].try_into().unwrap()) as usize;
            let before = (eh.start as i64 - 64 - hdr_svma.start as i64) as i32;
            for i in 0..count {
                let at = 12 + 8 * i + 4;
                m.eh_frame_hdr[at..at + 4].copy_from_slice(&before.to_le_bytes());
            }
            damaged += usize::from(count > 0);
        }
        assert!(damaged > 0, "{}: no header to damage", path.display());
        let (pcs, ..) = unwind(&rec);
        assert!(!pcs.is_empty(), "{}", path.display());
    }
}
