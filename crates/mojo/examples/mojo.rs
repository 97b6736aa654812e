//! A small command-line front end to the crate, used by the end-to-end tests
//! until the echion CLI exists.
//!
//! ```text
//! mojo dump FILE            the profile as JSON (metadata, samples)
//! mojo render FILE          Austin's collapsed-stack text, like mojo2austin
//! mojo write-sample OUT [--v4]   a sample profile exercising the writer
//! ```

use std::process::ExitCode;

use echion_mojo::{
    Frame, FrameSpec, Metric, MojoWriter, Profile, SampleRef, StackEntry, Version, WriterOptions,
};
use serde_json::{json, Value};

fn frame_json(f: &Frame) -> Value {
    match f {
        Frame::Frame(i) => json!({
            "kind": "python",
            "filename": &*i.filename,
            "scope": &*i.scope,
            "line": i.line,
            "line_end": i.line_end,
            "column": i.column,
            "column_end": i.column_end,
        }),
        Frame::Kernel(s) => {
            json!({"kind": "kernel", "filename": "kernel", "scope": &**s, "line": 0})
        }
        Frame::Invalid => json!({"kind": "invalid", "filename": "", "scope": "INVALID", "line": 0}),
    }
}

fn dump(p: &Profile) -> Value {
    let metadata: serde_json::Map<String, Value> = p
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let samples: Vec<Value> = p
        .samples
        .iter()
        .map(|s| {
            json!({
                "pid": s.pid,
                "iid": s.iid,
                "thread": s.thread,
                "frames": s.frames.iter().map(frame_json).collect::<Vec<_>>(),
                "time": s.time,
                "memory": s.memory,
                "idle": s.idle,
                "gc": s.gc,
            })
        })
        .collect();
    json!({"version": p.version.number(), "metadata": metadata, "samples": samples})
}

/// Writes a profile with what a real one has: several threads, non-ASCII
/// names, deep and repeating stacks, both metrics.
fn write_sample(path: &str, version: Version) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = MojoWriter::with_options(file, 4242, WriterOptions { version })?;
    w.metadata("mode", "wall")?;
    w.metadata("interval", "1000")?;
    w.metadata("sampler", "echion")?;
    let names = ["MainThread", "worker-1", "café-計算"];
    let mut stacks = Vec::new();
    for (t, name) in names.iter().enumerate() {
        let mut stack = Vec::new();
        for depth in 0..(3 + t * 40) {
            let scope = if t == 2 {
                format!("計算.café_{depth}")
            } else {
                format!("f{depth}")
            };
            stack.push(StackEntry::Frame(w.intern_frame(&FrameSpec {
                filename: if t == 2 {
                    "/tmp/données/計算.py"
                } else {
                    "/tmp/app.py"
                },
                scope: &scope,
                line: 10 + depth as i64,
                line_end: 11 + depth as i64,
                column: 4,
                column_end: 12 + depth as i64,
            })));
        }
        stacks.push((name, stack));
    }
    let kernel = w.intern_string("do_syscall_64");
    for i in 0..300 {
        let (name, stack) = &stacks[i % stacks.len()];
        let cut = if i % 7 == 0 {
            stack.len() / 2
        } else {
            stack.len()
        };
        let mut frames = stack[..cut.max(1)].to_vec();
        if i % 50 == 49 {
            frames.push(StackEntry::Kernel(kernel));
        }
        w.sample(&SampleRef {
            iid: (i % 2) as i64,
            thread: name,
            stack: &frames,
            metrics: &[Metric::Time(1000 + i as i64)],
            gc: i % 31 == 0,
            idle: false,
        })?;
    }
    w.metadata("samples", "300")?;
    w.finish()?;
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, file] if cmd == "dump" || cmd == "render" => {
            let data = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let p = Profile::parse(&data).map_err(|e| format!("{file}: {e}"))?;
            let written = if cmd == "dump" {
                use std::io::Write;
                writeln!(std::io::stdout().lock(), "{}", dump(&p))
            } else {
                p.write_austin(std::io::stdout().lock())
            };
            match written {
                // The reader had what it wanted (`| head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(|e| format!("cannot write: {e}")),
            }
        }
        [cmd, out, rest @ ..] if cmd == "write-sample" => {
            let version = match rest {
                [] => Version::V3,
                [v] if v == "--v4" => Version::V4,
                _ => return Err(format!("unexpected arguments: {rest:?}")),
            };
            write_sample(out, version).map_err(|e| format!("cannot write {out}: {e}"))
        }
        _ => Err("usage: mojo dump FILE | mojo render FILE | mojo write-sample OUT [--v4]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mojo: {e}");
            ExitCode::FAILURE
        }
    }
}
