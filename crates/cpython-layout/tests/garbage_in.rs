//! Garbage in: memory full of random words (biased to look like pointers into
//! the snapshot itself, so that views follow them several hops deep) never
//! makes a view panic, loop or allocate without bound; it returns errors or
//! bounded answers.

use echion_cpython_layout::layout::Layout;
use echion_cpython_layout::views::{Target, MAX_FRAMES, MAX_LINETABLE, MAX_STR_CHARS};
use echion_cpython_layout::{Addr, SnapshotReader};
use proptest::prelude::*;

const REGIONS: u64 = 8;
const REGION_SIZE: u64 = 1024;
const BASE: u64 = 0x7f00_0000_0000;

fn region(i: u64) -> u64 {
    BASE + i * 0x10_0000
}

/// A word that is, by turns, a pointer into some region, a small number, a
/// plausible `PyASCIIObject.state`, or anything at all.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0..REGIONS, 0..REGION_SIZE).prop_map(|(r, off)| region(r) + (off & !7)),
        1 => (0..REGIONS, 0..REGION_SIZE).prop_map(|(r, off)| region(r) + off),
        2 => 0u64..64,
        1 => (0u32..256).prop_map(u64::from),
        1 => Just(0u64),
        1 => any::<u64>(),
    ]
}

fn snapshot() -> impl Strategy<Value = SnapshotReader> {
    prop::collection::vec(word(), (REGIONS * REGION_SIZE / 8) as usize).prop_map(|words| {
        let mut snap = SnapshotReader::new();
        for (i, chunk) in words.chunks((REGION_SIZE / 8) as usize).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_ne_bytes()).collect();
            snap.insert(Addr(region(i as u64)), &bytes);
        }
        snap
    })
}

fn exercise(snap: &SnapshotReader, l: &Layout) {
    let t = Target::new(snap, l);
    let mut s = String::new();
    let mut v = Vec::new();
    for r in 0..REGIONS {
        for off in [0u64, 8, 16, 40, 128] {
            let a = Addr(region(r) + off);
            for interp in t.interpreters(a).take(MAX_FRAMES * 4) {
                let Ok(interp) = interp else { break };
                for thread in t.threads(&interp).take(100_000) {
                    let Ok(thread) = thread else { break };
                    let n = t.frames(thread.frame).count();
                    assert!(n <= MAX_FRAMES + 1);
                }
            }
            let n = t.frames(a).count();
            assert!(n <= MAX_FRAMES + 1);
            for frame in t.frames(a).flatten() {
                if let Ok(code) = t.code(frame.code) {
                    s.clear();
                    let _ = t.read_str(code.name, &mut s);
                    let _ = t.read_str(code.filename, &mut s);
                    if let Some(off) = frame.offset {
                        let _ = t.location(&code, off, &mut v);
                    }
                }
            }
            s.clear();
            let _ = t.read_str(a, &mut s);
            assert!(s.len() <= MAX_STR_CHARS as usize * 4);
            let _ = t.read_int(a);
            if t.read_bytes(a, 4096, &mut v).is_ok() {
                assert!(v.len() <= 4096);
            }
            // Line tables are the largest reads: bounded by MAX_LINETABLE.
            assert!(v.len() as u64 <= MAX_LINETABLE);
            let _ = t.type_name(a, &mut s);
            if let Ok(g) = t.generator(a) {
                if let Some(f) = g.frame {
                    let _ = t.frames(f).count();
                }
            }
            if let Ok(task) = t.task(a) {
                s.clear();
                let _ = t.task_name(&task, &mut s);
                let _ = t.generator(task.coro);
            }
            let _ = t.future_state(a);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn views_survive_random_memory(snap in snapshot()) {
        for l in Layout::all() {
            exercise(&snap, l);
        }
    }
}

/// A frame list that loops is cut at the cap or by the cycle check.
#[test]
fn looping_frames_end() {
    for l in Layout::all() {
        // Every word points at the region start: every `previous`/`f_back`
        // is the frame itself, every code pointer a valid address.
        let mut snap = SnapshotReader::new();
        let bytes: Vec<u8> = (0..REGION_SIZE / 8)
            .flat_map(|_| region(0).to_ne_bytes())
            .collect();
        snap.insert(Addr(region(0)), &bytes);
        let t = Target::new(&snap, l);
        assert!(t.frames(Addr(region(0))).count() <= MAX_FRAMES + 1);
        assert!(t.interpreters(Addr(region(0))).count() <= 2);
    }
}
