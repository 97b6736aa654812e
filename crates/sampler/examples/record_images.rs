//! Records the memory images that `tests/images.rs` replays: for every
//! interpreter 3.8 to 3.13, runs `tests/images/target.py`, and records
//! every byte that the engine (one tick of every thread) and the thread-name
//! lookup read from it, at two moments (phase `a`, then phase `b`, where the
//! worker thread has moved deeper). Each image is written to
//! `tests/images/py3.X.img`:
//!
//! ```text
//! b"ECHIMG1\n", u64 LE length of the header, the header (JSON: python
//! version, pid, _PyRuntime, the target's own reports of both phases),
//! snapshot a, snapshot b (each `SnapshotReader::to_bytes`)
//! ```
//!
//! Run as root (it reads other processes): `cargo run -p echion-sampler
//! --example record_images`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use echion_cpython_layout::{
    process, Addr, MemError, MemoryReader, ProcessReader, RecordingReader,
};
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Dump, Mode, Session, ThreadFilter};

/// A process reader that says its reads are cheap, so that the engine
/// reads what it needs when it needs it, as it does from a snapshot.
struct Direct<'a>(&'a ProcessReader);

impl MemoryReader for Direct<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read(addr, buf)
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

/// Waits until the main thread of `pid` is blocked in read(2).
fn wait_reading(pid: u32) {
    for _ in 0..1000 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if s.split_whitespace().next() == Some("0") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("target {pid} never waited for a command");
}

/// Records what one tick and the name lookup read.
fn record(reader: &ProcessReader, pid: u32) -> (Vec<u8>, u64) {
    let py = process::find_python(pid, reader).expect("a CPython");
    let rec = RecordingReader::new(Direct(reader));
    let session = Session::new(&rec, pid, py.runtime, py.layout, py.version);
    let names = session.thread_names();
    let mut engine = session
        .engine(Mode::Wall, 1_000_000, Dump::new())
        .expect("engine");
    engine.set_filter(ThreadFilter::Every);
    engine
        .tick(1_000_000, &names, &FreedCodes::new())
        .expect("tick");
    assert_eq!(engine.stats().skipped_total(), 0, "a torn recording");
    drop(engine);
    (rec.snapshot().to_bytes(), py.runtime.0)
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images");
    for py in echion_testkit::pythons() {
        let mut child = echion_testkit::KillOnDrop(
            Command::new(&py.exe)
                .arg(dir.join("target.py"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the target"),
        );
        let pid = child.pid();
        let mut stdin = child.0.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("report a");
        let report_a: serde_json::Value = serde_json::from_str(&line).expect("json");
        wait_reading(pid);
        let reader = ProcessReader::new(pid).expect("attach (run as root)");
        let (snap_a, runtime) = record(&reader, pid);
        stdin.write_all(b"b\n").expect("command");
        stdin.flush().expect("flush");
        line.clear();
        out.read_line(&mut line).expect("report b");
        let report_b: serde_json::Value = serde_json::from_str(&line).expect("json");
        wait_reading(pid);
        let (snap_b, _) = record(&reader, pid);
        let header = serde_json::json!({
            "python": report_a["version"],
            "pid": pid,
            "runtime": runtime,
            "a": report_a,
            "b": report_b,
        })
        .to_string();
        let mut image = b"ECHIMG1\n".to_vec();
        image.extend_from_slice(&(header.len() as u64).to_le_bytes());
        image.extend_from_slice(header.as_bytes());
        image.extend_from_slice(&snap_a);
        image.extend_from_slice(&snap_b);
        let path = dir.join(format!("py{}.img", py.minor_name()));
        std::fs::write(&path, &image).expect("write the image");
        println!("{}: {} bytes", path.display(), image.len());
    }
}
