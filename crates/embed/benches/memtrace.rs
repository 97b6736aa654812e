//! Per-allocation cost of memory mode's hook, as the hook pays it: the
//! accounting of one allocation (walk of the allocating thread's stack with
//! plain loads, finding the stack, linking the block) and of its free, for
//! a thread 20 Python frames deep. "seen before": the stack is in the table
//! (the common case); "first sight": a fresh table each time, so the
//! stack's 20 frames are decoded (names, line tables) and added.
//!
//! The allocating thread is the embedded interpreter's, parked in
//! `time.sleep`; the bench thread does the hook's work for it (its memory
//! is unchanging meanwhile, as the hook's own thread's is).
//!
//! One interpreter per process: the bench runs itself once per Python found
//! (`ECHION_PYTHONS`, or /root/.pyenv/versions/3.*), each with that
//! interpreter's libpython embedded.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use echion_cpython_layout::views::Target;
use echion_cpython_layout::{Addr, Layout};
use echion_sampler::mem::guarded::GuardedReader;

const TARGET: &str = r#"
import time
def f(n):
    if n == 0:
        time.sleep(1e9)
    f(n - 1)
f(18)  # 18 calls + f(0) + <module> = 20 frames
"#;

mod common;

fn main() {
    common::per_interpreter(bench_embedded);
}

/// The thread state whose stack is 20 frames deep, once it is.
fn parked_thread(reader: &GuardedReader, layout: &Layout, runtime: Addr) -> Option<u64> {
    let target = Target::new(reader, layout);
    for interp in target.interpreters(runtime) {
        let interp = interp.ok()?;
        for thread in target.threads(&interp) {
            let thread = thread.ok()?;
            if thread.frame.is_null() {
                continue;
            }
            let depth = target
                .frames(thread.frame)
                .filter(|f| f.as_ref().is_ok_and(|f| f.is_python()))
                .count();
            if depth == 20 {
                return Some(thread.addr.0);
            }
        }
    }
    None
}

fn bench_embedded(lib: &std::path::Path) {
    let (python, version, layout, guarded) = common::start(lib, TARGET);
    let deadline = Instant::now() + Duration::from_secs(20);
    let tstate = loop {
        if let Some(t) = parked_thread(&guarded, layout, python.runtime()) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "{version}: no thread 20 frames deep"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Sleeping for a moment more: the thread is in `time.sleep`'s C code.
    std::thread::sleep(Duration::from_millis(50));
    echion_memtrace::bench_prepare(version).expect("table");

    // The stack, as the table found and decoded it.
    // SAFETY: the interpreter's thread is parked in time.sleep.
    unsafe { echion_memtrace::bench_alloc(tstate, 0x1000, 64) };
    let mut drained = echion_memtrace::Drained::default();
    echion_memtrace::drain(&mut drained).expect("table");
    assert_eq!(drained.stacks.len(), 1, "{version}: one stack");
    assert_eq!(drained.stacks[0].1.frames.len(), 20, "{version}: 20 frames");
    assert_eq!(drained.deltas, vec![(0, 64)], "{version}: 64 bytes on it");
    // A fresh table: frame indices 0, 1, ... in order.
    let scopes: Vec<_> = drained.frames.iter().map(|(_, f)| &*f.scope).collect();
    assert_eq!(scopes[0], "<module>", "{version}: {scopes:?}");
    assert!(
        scopes[1..].iter().all(|s| *s == "f"),
        "{version}: {scopes:?}"
    );
    echion_memtrace::bench_free(0x1000);
    // The hook's own walk (plain loads, no decoding) finds the frames the
    // views' walker finds: the same stack, frame for frame and line for line.
    let format =
        echion_cpython_layout::linetable::TableFormat::for_version(version).expect("format");
    let mut reference = echion_memtrace::Tracker::new(format);
    reference.alloc(&Target::new(&guarded, layout), Addr(tstate), 0x1000, 64);
    let mut by_views = echion_memtrace::Drained::default();
    reference.drain(&mut by_views);
    assert_eq!(
        by_views.stacks.len(),
        1,
        "{version}: the views' walk found the stack"
    );
    let fast: Vec<_> = drained.stacks[0]
        .1
        .frames
        .iter()
        .map(|&i| drained.frames[i as usize].1.clone())
        .collect();
    let views: Vec<_> = by_views.stacks[0]
        .1
        .frames
        .iter()
        .map(|&i| by_views.frames[i as usize].1.clone())
        .collect();
    assert_eq!(
        fast, views,
        "{version}: the hook's walk and Target::walk differ"
    );

    let mut c = Criterion::default().configure_from_args();
    let mut ptr = 0x10_0000u64;
    c.bench_function(
        &format!("memory hook, alloc + free, 20-frame stack seen before, python {version}"),
        |b| {
            b.iter(|| {
                ptr = ptr.wrapping_add(64) & 0xff_ffff | 0x10_0000;
                // SAFETY: the interpreter's thread is parked in time.sleep.
                unsafe { echion_memtrace::bench_alloc(tstate, ptr, 64) };
                echion_memtrace::bench_free(ptr);
            })
        },
    );
    c.bench_function(
        &format!("memory hook, alloc, 20-frame stack at first sight, python {version}"),
        |b| {
            b.iter_batched(
                || echion_memtrace::bench_prepare(version).expect("table"),
                // SAFETY: the interpreter's thread is parked in time.sleep.
                |()| unsafe { echion_memtrace::bench_alloc(tstate, 0x2000, 64) },
                BatchSize::PerIteration,
            )
        },
    );
    c.final_summary();
    echion_memtrace::drain(&mut drained).expect("table");
    assert_eq!(drained.stacks.len(), 1, "{version}: the stack was found");
}
