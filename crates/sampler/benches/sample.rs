//! Per-sample cost: one tick over a live CPython process whose only thread
//! sits 50 frames deep, with every frame already cached. Runs for each
//! interpreter found (`ECHION_PYTHONS`, colon-separated, or
//! /root/.pyenv/versions/3.*/bin/python3), reading the process from outside
//! with the same reader the sampler uses in-process.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};
use echion_cpython_layout::reader::RecordingReader;
use echion_cpython_layout::{process, ProcessReader};
use echion_mojo::MojoWriter;
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Engine, Mode, RegistryQueue};

const TARGET: &str = r#"
import sys, time
def f(n):
    if n == 0:
        print("ready", flush=True)
        time.sleep(3600)
    f(n - 1)
f(48)  # 48 calls + f(0) + <module> = 50 frames
"#;

fn bench(c: &mut Criterion) {
    for python in echion_testkit::pythons()
        .into_iter()
        .map(|p| p.exe.display().to_string())
    {
        let mut child = Command::new(&python)
            .args(["-c", TARGET])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("ready line");
        let target = echion_testkit::KillOnDrop(child);
        let pid = target.0.id();
        let reader = ProcessReader::new(pid).expect("attach (run as root)");
        let py = process::find_python(pid, &reader).expect("find python");
        let registry = RegistryQueue::default();
        let freed = FreedCodes::new();
        // First check the stack once, into memory.
        {
            let writer = MojoWriter::new(Vec::new(), i64::from(pid)).expect("vec");
            let mut engine = Engine::new(
                &reader,
                py.layout,
                py.runtime,
                Mode::Wall,
                1_000_000,
                writer,
            )
            .expect("engine");
            engine.tick(1, &registry, &freed).expect("tick");
            let bytes = engine.into_sink().finish().expect("vec");
            let profile = echion_mojo::Profile::parse(&bytes).expect("valid");
            assert_eq!(profile.samples.len(), 1, "{python}: one thread sampled");
            assert_eq!(profile.samples[0].frames.len(), 50, "{python}: 50 frames");
        }
        let writer = MojoWriter::new(std::io::sink(), i64::from(pid)).expect("sink");
        let mut engine = Engine::new(
            &reader,
            py.layout,
            py.runtime,
            Mode::Wall,
            1_000_000,
            writer,
        )
        .expect("engine");
        let mut now = 1_000_000_000u64;
        engine.tick(now, &registry, &freed).expect("tick");
        assert_eq!(engine.stats().samples, 1, "{python}: one thread sampled");
        let name = format!("tick, 1 thread x 50 cached frames, python {}", py.version);
        c.bench_function(&name, |b| {
            b.iter(|| {
                now += 1_000_000;
                engine.tick(now, &registry, &freed).expect("tick");
            })
        });
        assert_eq!(
            engine.stats().skipped_total(),
            0,
            "{python}: no skipped samples"
        );

        // The same from a snapshot of what a few ticks read: the cost of
        // the walk and the caches alone, without system calls.
        let recording = RecordingReader::new(&reader);
        let writer = MojoWriter::new(std::io::sink(), i64::from(pid)).expect("sink");
        let mut rec = Engine::new(
            &recording,
            py.layout,
            py.runtime,
            Mode::Wall,
            1_000_000,
            writer,
        )
        .expect("engine");
        for t in 1..=3 {
            rec.tick(t, &registry, &freed).expect("tick");
        }
        drop(rec);
        let snapshot = recording.snapshot();
        drop(target);
        let writer = MojoWriter::new(std::io::sink(), i64::from(pid)).expect("sink");
        let mut snap = Engine::new(
            &snapshot,
            py.layout,
            py.runtime,
            Mode::Wall,
            1_000_000,
            writer,
        )
        .expect("engine");
        snap.tick(now, &registry, &freed).expect("tick");
        assert_eq!(snap.stats().samples, 1, "{python}: snapshot sampled");
        let name = format!(
            "snapshot tick, 1 thread x 50 cached frames, python {}",
            py.version
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                now += 1_000_000;
                snap.tick(now, &registry, &freed).expect("tick");
            })
        });
        assert_eq!(
            snap.stats().skipped_total(),
            0,
            "{python}: no skipped samples"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
