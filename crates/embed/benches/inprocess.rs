//! Per-sample cost as the profiler pays it: the sampler reads the
//! interpreter of its own process. One thread, 50 frames deep, every frame
//! already cached; one tick (the handler check included) per iteration.
//! Measured for both read paths: fault-guarded loads (the default) and one
//! `process_vm_readv` per tick on the own pid.
//!
//! One interpreter per process: the bench runs itself once per Python found
//! (`ECHION_PYTHONS`, colon-separated, or /root/.pyenv/versions/3.*), each
//! time with that interpreter's libpython embedded.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::Criterion;
use echion_cpython_layout::Layout;
use echion_mojo::{MojoWriter, Profile};
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::mem::guarded::GuardedReader;
use echion_sampler::{Engine, Mode, RegistryQueue};

const TARGET: &str = r#"
import time
def f(n):
    if n == 0:
        time.sleep(1e9)
    f(n - 1)
f(48)  # 48 calls + f(0) + <module> = 50 frames
"#;

mod common;

fn main() {
    common::per_interpreter(bench_embedded);
}

fn bench_embedded(lib: &std::path::Path) {
    let (python, version, layout, guarded) = common::start(lib, TARGET);
    let syscalls = GuardedReader::syscalls_only().expect("own process");

    // Wait for the stack, checking it with the sampler itself.
    let registry = RegistryQueue::default();
    let freed = FreedCodes::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let writer = MojoWriter::new(Vec::new(), 1).expect("vec");
        let mut engine = Engine::new(
            &guarded,
            layout,
            python.runtime(),
            Mode::Wall,
            1_000_000,
            writer,
        )
        .expect("engine");
        engine.tick(1, &registry, &freed).expect("tick");
        let bytes = engine.into_sink().finish().expect("vec");
        let profile = Profile::parse(&bytes).expect("valid");
        let depths: Vec<_> = profile.samples.iter().map(|s| s.frames.len()).collect();
        if depths == [50] {
            break;
        }
        assert!(Instant::now() < deadline, "{version}: stacks {depths:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut c = Criterion::default().configure_from_args();
    let runtime = python.runtime();
    bench_reader(
        &mut c,
        "guarded loads",
        &guarded,
        true,
        layout,
        runtime,
        version,
    );
    bench_reader(
        &mut c,
        "process_vm_readv",
        &syscalls,
        false,
        layout,
        runtime,
        version,
    );
    c.final_summary();
}

/// Ticks with `reader`, as `echion_sampler::run` does (statically
/// dispatched; the tick checks the handler itself, `MemoryReader::begin_tick`).
/// `direct`: whether the reader is to read with guarded loads.
fn bench_reader(
    c: &mut Criterion,
    name: &str,
    reader: &GuardedReader,
    direct: bool,
    layout: &'static Layout,
    runtime: echion_cpython_layout::Addr,
    version: echion_cpython_layout::PyVersion,
) {
    let registry = RegistryQueue::default();
    let freed = FreedCodes::new();
    let writer = MojoWriter::new(std::io::sink(), 1).expect("sink");
    let mut engine =
        Engine::new(reader, layout, runtime, Mode::Wall, 1_000_000, writer).expect("engine");
    let mut now = 1_000_000_000u64;
    engine.tick(now, &registry, &freed).expect("tick");
    assert_eq!(engine.stats().samples, 1, "{version}: one thread sampled");
    c.bench_function(
        &format!("in-process tick, {name}, 1 thread x 50 cached frames, python {version}"),
        |b| {
            b.iter(|| {
                now += 1_000_000;
                engine.tick(now, &registry, &freed).expect("tick");
            })
        },
    );
    assert_eq!(
        engine.stats().skipped_total(),
        0,
        "{version}: nothing skipped"
    );
    assert_eq!(
        engine.stats().samples,
        engine.stats().ticks,
        "{version}: one sample a tick"
    );
    let fallback = if direct { 0 } else { engine.stats().ticks };
    assert_eq!(
        engine.stats().fallback_ticks,
        fallback,
        "{version}: {name} on its read path every tick"
    );
}
