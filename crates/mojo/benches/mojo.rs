//! Encoding and decoding costs of the MOJO crate.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use echion_mojo::{Decoder, FrameSpec, Metric, MojoWriter, Profile, SampleRef, StackEntry};

fn stack(writer: &mut MojoWriter<Vec<u8>>, depth: usize, salt: usize) -> Vec<StackEntry> {
    (0..depth)
        .map(|i| {
            let scope = format!("module.function_{}", i + salt);
            StackEntry::Frame(writer.intern_frame(&FrameSpec {
                filename: "/usr/lib/python3.11/site-packages/app/module.py",
                scope: &scope,
                line: 10 + i as i64,
                line_end: 10 + i as i64,
                column: 4,
                column_end: 30,
            }))
        })
        .collect()
}

fn sample_stream(samples: usize) -> Vec<u8> {
    let mut w = MojoWriter::new(Vec::new(), 4242).expect("in-memory");
    w.metadata("mode", "wall").expect("in-memory");
    let stacks: Vec<_> = (0..8).map(|t| stack(&mut w, 50, t * 7)).collect();
    let names: Vec<_> = (0..8).map(|t| format!("Thread-{t}")).collect();
    for i in 0..samples {
        let t = i % 8;
        w.sample(&SampleRef {
            iid: 0,
            thread: &names[t],
            stack: &stacks[t],
            metrics: &[Metric::Time(1000 + (i % 13) as i64)],
            gc: false,
            idle: false,
        })
        .expect("in-memory");
    }
    w.finish().expect("in-memory")
}

fn encode(c: &mut Criterion) {
    let mut w = MojoWriter::new(std::io::sink(), 4242).expect("sink");
    let mut scratch = MojoWriter::new(Vec::new(), 1).expect("in-memory");
    let entries = stack(&mut scratch, 50, 0);
    // Intern the same frames in the measured writer.
    let specs: Vec<StackEntry> = (0..50)
        .map(|i| {
            let scope = format!("module.function_{i}");
            StackEntry::Frame(w.intern_frame(&FrameSpec {
                filename: "/usr/lib/python3.11/site-packages/app/module.py",
                scope: &scope,
                line: 10 + i,
                line_end: 10 + i,
                column: 4,
                column_end: 30,
            }))
        })
        .collect();
    assert_eq!(entries.len(), specs.len());
    let metrics = [Metric::Time(1000)];
    c.bench_function("encode sample, 50 interned frames", |b| {
        b.iter(|| {
            w.sample(black_box(&SampleRef {
                iid: 0,
                thread: "MainThread",
                stack: &specs,
                metrics: &metrics,
                gc: false,
                idle: false,
            }))
            .expect("sink")
        })
    });
}

fn decode(c: &mut Criterion) {
    let data = sample_stream(20_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("events", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let mut d = Decoder::new(black_box(&data)).expect("valid");
            while let Some(e) = d.next_event().expect("valid") {
                n += u64::from(e.id());
            }
            n
        })
    });
    group.bench_function("profile", |b| {
        b.iter(|| {
            Profile::parse(black_box(&data))
                .expect("valid")
                .samples
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
