//! Per-tick cost of asyncio task stacks as the profiler pays it: the
//! sampler reads the interpreter of its own process (guarded loads), whose
//! main thread runs an event loop with 1,000 tasks sleeping in
//! `asyncio.sleep`, every frame and every task's coroutine chain already
//! read once. Two engines at 1 ms: one told to read every task each tick
//! (1,000 stacks a tick, into a MOJO writer that discards its bytes), and
//! one with the budget its interval allows (0.5 % of it, by the measured cost
//! of a task), which makes each tick read the next share of the tasks, each
//! stack carrying the time of the ticks that skipped it.
//!
//! One interpreter per process: the bench runs itself once per Python found
//! (`ECHION_PYTHONS`, or /root/.pyenv/versions/3.*), each with that
//! interpreter's libpython embedded.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::Criterion;
use echion_mojo::MojoWriter;
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Mode, Session};

const TASKS: u64 = 1000;

const TARGET: &str = r#"
import asyncio

async def sleeper():
    await asyncio.sleep(1e9)

async def main():
    await asyncio.gather(*(asyncio.create_task(sleeper()) for _ in range(1000)))

asyncio.run(main())
"#;

mod common;

fn main() {
    common::per_interpreter(bench_embedded);
}

fn bench_embedded(lib: &std::path::Path) {
    let (python, version, layout, guarded) = common::start(lib, TARGET);
    let session = Session::new(
        &guarded,
        std::process::id(),
        python.runtime(),
        layout,
        version,
    );
    let freed = FreedCodes::new();

    // Until every task sleeps: asyncio's task sets and the loop's thread,
    // found in memory as where mode finds them, then one stack per task.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = 1_000_000_000u64;
    let engine = |interval_ns| {
        let writer = MojoWriter::new(std::io::sink(), 1).expect("sink");
        session
            .engine(Mode::Wall, interval_ns, writer)
            .expect("engine")
    };
    let mut every = loop {
        let mut engine = engine(1_000_000);
        engine.set_every_task();
        let registry = session.thread_names();
        engine.tick(now, &registry, &freed).expect("tick");
        now += 1_000_000;
        let stacks = engine.stacks_written();
        // A tick with every stack and no thread skipped: the loop's thread
        // may still be running Python code (and so be walked mid-change)
        // for a while after its last task went to sleep.
        if stacks == TASKS && engine.stats().skipped_total() == 0 {
            break engine;
        }
        assert!(
            Instant::now() < deadline,
            "{version}: {stacks} task stacks, skipped {:?}",
            engine.stats().skipped
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut shares = loop {
        let mut engine = engine(1_000_000);
        let registry = session.thread_names();
        // Two rounds of the table: every chain read once.
        for _ in 0..40 {
            engine.tick(now, &registry, &freed).expect("tick");
            now += 1_000_000;
        }
        if engine.stats().skipped_total() == 0 {
            break engine;
        }
        assert!(
            Instant::now() < deadline,
            "{version}: skipped {:?}",
            engine.stats().skipped
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let registry = echion_sampler::RegistryQueue::default();
    let mut c = Criterion::default().configure_from_args();
    c.bench_function(
        &format!(
            "in-process tick, guarded loads, {TASKS} sleeping asyncio tasks, every task, python {version}"
        ),
        |b| {
            b.iter(|| {
                now += 1_000_000;
                every.tick(now, &registry, &freed).expect("tick");
            })
        },
    );
    c.bench_function(
        &format!(
            "in-process tick, guarded loads, {TASKS} sleeping asyncio tasks, 1 ms budget, python {version}"
        ),
        |b| {
            b.iter(|| {
                now += 1_000_000;
                shares.tick(now, &registry, &freed).expect("tick");
            })
        },
    );
    c.final_summary();
    assert_eq!(
        every.stacks_written(),
        TASKS,
        "{version}: one stack per task"
    );
    let shared = shares.stacks_written();
    assert!(
        (1..TASKS).contains(&shared),
        "{version}: {shared} stacks in a tick of the 1 ms engine"
    );
    for (engine, what) in [(&every, "every"), (&shares, "shares")] {
        assert_eq!(
            engine.stats().skipped_total(),
            0,
            "{version} ({what}): nothing skipped, by reason {:?}",
            engine.stats().skipped
        );
        assert_eq!(
            engine.task_stats().error_ticks,
            0,
            "{version} ({what}): tasks read every tick"
        );
    }
    assert_eq!(every.task_stats().sampled_ticks, 0, "{version}");
    assert!(shares.task_stats().sampled_ticks > 0, "{version}");
}
