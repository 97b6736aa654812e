//! The native unwinder's inputs (echion-unwind): a captured thread (its
//! registers and the copy of its stack), the unwind sections (`.eh_frame`,
//! `.eh_frame_hdr`) and symbols of the modules its frames are in, as a
//! recording carries them; the interleaving of native and Python frames;
//! and the text of a memory map.
//!
//! Input: a recording (`Recording::to_bytes`); the seeds are the captures
//! of real processes that `crates/unwind/tests/recorded.rs` replays
//! (`scripts/fuzz` writes them). Any input is also read as a memory map.
//! Checked: no panic, an unwind ends within its frame cap, and the
//! interleaved stack holds every native frame but the evaluation loop's
//! and every Python frame exactly once.
#![no_main]

use echion_unwind::maps;
use echion_unwind::record::Recording;
use echion_unwind::{interleave, Piece};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = maps::parse(&String::from_utf8_lossy(data));
    let Ok(rec) = Recording::from_bytes(data) else {
        return;
    };
    let mut unwinder = rec.unwinder();
    let cap = rec.captured();
    let (base, stack) = (cap.regs.sp, cap.stack);
    let mut pcs = Vec::new();
    unwinder.unwind_with(
        cap.regs,
        |addr| {
            let off = usize::try_from(addr.checked_sub(base).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        },
        &mut pcs,
    );
    assert!(pcs.len() <= 4096, "{} frames", pcs.len());
    let eval: Vec<bool> = pcs
        .iter()
        .enumerate()
        .map(|(i, &pc)| unwinder.symbol(pc, i).eval)
        .collect();
    // One group of Python frames per evaluation-loop frame, sized from the
    // stack's bytes.
    let groups: Vec<usize> = eval
        .iter()
        .filter(|&&e| e)
        .enumerate()
        .map(|(i, _)| usize::from(stack.get(i).copied().unwrap_or(1) % 4))
        .collect();
    let mut out = Vec::new();
    interleave(&eval, &groups, &mut out);
    let python: usize = groups.iter().sum();
    let mut seen_native = vec![false; eval.len()];
    let mut seen_python = vec![false; python];
    for piece in &out {
        match *piece {
            Piece::Native(i) => {
                assert!(!eval[i] && !seen_native[i], "native frame {i}");
                seen_native[i] = true;
            }
            Piece::Python(i) => {
                assert!(!seen_python[i], "python frame {i}");
                seen_python[i] = true;
            }
        }
    }
    assert!(
        seen_python.iter().all(|&s| s),
        "every Python frame is placed"
    );
    let natives = eval.iter().filter(|&&e| !e).count();
    assert_eq!(
        seen_native.iter().filter(|&&s| s).count(),
        natives,
        "every native frame is placed"
    );
});
