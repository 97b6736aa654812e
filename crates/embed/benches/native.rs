//! Per-thread cost of a native stack as the profiler pays it: one thread
//! on the CPU, 50 Python frames deep, captured by the signal (registers
//! and stack top, its Python frames walked while it waits), unwound by
//! framehop and interleaved; every frame already interned. One tick per
//! iteration, beside the same tick without native stacks.
//!
//! One interpreter per process (see `common::per_interpreter`).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::Criterion;
use echion_mojo::{MojoWriter, Profile};
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::pthread::TidOffset;
use echion_sampler::{Mode, RegistryQueue, Session};

const TARGET: &str = r#"
def f(n):
    if n == 0:
        while True:
            pass
    f(n - 1)
f(48)  # 48 calls + f(0) + <module> = 50 frames
"#;

mod common;

fn main() {
    common::per_interpreter(bench_embedded);
}

fn bench_embedded(lib: &std::path::Path) {
    let (python, version, layout, guarded) = common::start(lib, TARGET);
    let mut session = Session::new(
        &guarded,
        std::process::id(),
        python.runtime(),
        layout,
        version,
    );
    if layout.thread.native_thread_id.is_none() {
        session.set_tid_offset(TidOffset::find(&guarded));
    }
    let registry = RegistryQueue::default();
    let freed = FreedCodes::new();

    // Until the thread runs 50 frames deep: then one sample of 50 Python
    // frames and the native frames around them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let natives = loop {
        let mut engine = session
            .engine(
                Mode::Wall,
                1_000_000,
                MojoWriter::new(Vec::new(), 1).expect("vec"),
            )
            .expect("engine");
        engine.enable_native().expect("native stacks");
        engine.tick(1, &registry, &freed).expect("tick");
        let bytes = engine.into_sink().finish().expect("vec");
        let profile = Profile::parse(&bytes).expect("valid");
        let shape: Vec<(usize, usize)> = profile
            .samples
            .iter()
            .map(|s| {
                let native = s
                    .frames
                    .iter()
                    .filter(|f| {
                        matches!(f, echion_mojo::Frame::Frame(i) if i.filename.starts_with("native@"))
                    })
                    .count();
                (s.frames.len() - native, native)
            })
            .collect();
        if let [(50, n)] = shape[..] {
            if n > 0 {
                break n;
            }
        }
        assert!(Instant::now() < deadline, "{version}: stacks {shape:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("python {version}: 50 Python frames interleaved with {natives} native frames");

    let mut c = Criterion::default().configure_from_args();
    for native in [false, true] {
        let writer = MojoWriter::new(std::io::sink(), 1).expect("sink");
        let mut engine = session
            .engine(Mode::Wall, 1_000_000, writer)
            .expect("engine");
        if native {
            engine.enable_native().expect("native stacks");
        }
        let mut now = 1_000_000_000u64;
        engine.tick(now, &registry, &freed).expect("tick");
        let what = if native {
            format!("captured, unwound and interleaved with {natives} native frames")
        } else {
            "Python frames only".to_owned()
        };
        c.bench_function(
            &format!(
                "in-process tick, 1 thread on CPU x 50 Python frames, {what}, python {version}"
            ),
            |b| {
                b.iter(|| {
                    now += 1_000_000;
                    engine.tick(now, &registry, &freed).expect("tick");
                })
            },
        );
        let stats = engine.native_stats();
        if native {
            // A tick after a capture that held the thread long (a loaded
            // machine) lets it run free instead of capturing it again.
            assert!(stats.captures > 0, "{version}: no capture ({stats:?})");
            assert_eq!(
                stats.captures + stats.rested,
                engine.stats().ticks,
                "{version}: every tick captured the thread or let it rest ({stats:?})"
            );
            assert_eq!(stats.truncated, 0, "{version}: every unwind complete");
        }
        assert_eq!(
            engine.stats().skipped_total(),
            0,
            "{version}: nothing skipped"
        );
    }
    c.final_summary();
}
