//! The engine against live interpreters of every supported version: a
//! process with a known stack, read from outside with the reader the
//! sampler uses, sampled tick after tick.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use echion_cpython_layout::{process, Addr, MemError, MemoryReader, ProcessReader};
use echion_mojo::{Frame, MojoWriter, Profile};
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Engine, Mode, RegistryQueue, Update};

const TARGET: &str = r#"
import sys, threading, time
def leaf():
    print("ready", threading.get_ident(), threading.get_native_id(), flush=True)
    time.sleep(3600)  # LEAF
def f(n):
    if n == 0:
        leaf()  # CALL-LEAF
    f(n - 1)  # RECURSE
f(47)
"#;

/// Counts the system calls a reader makes.
struct Counting<'a> {
    inner: &'a ProcessReader,
    reads: Cell<u64>,
    vectored: Cell<u64>,
}

impl MemoryReader for Counting<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(addr, buf)
    }

    fn read_vectored(&self, addrs: &[Addr], bufs: &mut [&mut [u8]]) -> u64 {
        self.vectored.set(self.vectored.get() + 1);
        self.inner.read_vectored(addrs, bufs)
    }
}

fn line_of(marker: &str) -> i64 {
    TARGET
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i as i64 + 1)
        .expect("marker")
}

/// Waits until the target's main thread is inside the system call that
/// `time.sleep` makes: after the "ready" line it still has to return from
/// `print`, and a sample taken then shows the `print` line.
fn wait_asleep(pid: u32) {
    // x86-64 numbers: poll, select, nanosleep, pselect6, ppoll, clock_nanosleep.
    const SLEEPS: [&str; 6] = ["7", "23", "35", "270", "271", "230"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr = syscall.split_whitespace().next().unwrap_or("");
        if SLEEPS.contains(&nr) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "target {pid} never went to sleep (last system call: {syscall:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn samples_a_known_stack_with_few_system_calls() {
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
        let mut words = line.split_whitespace().skip(1);
        let ident: u64 = words.next().and_then(|w| w.parse().ok()).expect("ident");
        let native: u64 = words.next().and_then(|w| w.parse().ok()).expect("native");
        let pid = target.0.id();
        wait_asleep(pid);
        let reader = ProcessReader::new(pid).expect("attach (run as root)");
        let counting = Counting {
            inner: &reader,
            reads: Cell::new(0),
            vectored: Cell::new(0),
        };
        let py = process::find_python(pid, &reader).expect("find python");
        let writer = MojoWriter::new(Vec::new(), i64::from(pid)).expect("vec");
        let mut engine = Engine::new(
            &counting,
            py.layout,
            py.runtime,
            Mode::Wall,
            1_000_000,
            writer,
        )
        .expect("engine");
        let registry = RegistryQueue::default();
        registry.post(Update::Track {
            thread_id: ident,
            name: "MainThread".into(),
            native_id: native,
        });
        let freed = FreedCodes::new();
        for tick in 1..=5u64 {
            let before = (counting.reads.get(), counting.vectored.get());
            engine
                .tick(tick * 1_000_000, &registry, &freed)
                .expect("tick");
            let reads = counting.reads.get() - before.0;
            let vectored = counting.vectored.get() - before.1;
            if tick > 2 {
                // Warm: what the last tick read is copied in one vectored
                // read, and nothing has moved.
                let ranges = engine.stats().prefetched_ranges;
                eprintln!(
                    "{python}: tick {tick}: {reads} reads, {vectored} vectored, {ranges} ranges"
                );
                assert_eq!(reads, 0, "{python}: {reads} single reads in a warm tick");
                assert_eq!(vectored, 1, "{python}: {vectored} vectored reads");
            }
        }
        assert_eq!(engine.stats().samples, 5, "{python}");
        assert_eq!(engine.stats().skipped_total(), 0, "{python}");
        let bytes = engine.into_sink().finish().expect("vec");
        let profile = Profile::parse(&bytes).expect("valid");
        assert_eq!(profile.samples.len(), 5);
        for s in &profile.samples {
            assert_eq!(s.thread, "MainThread");
            assert_eq!(s.iid, Some(0));
            assert_eq!(s.time, Some(1000));
            let frames: Vec<(String, i64)> = s
                .frames
                .iter()
                .map(|f| match f {
                    Frame::Frame(i) => (i.scope.to_string(), i.line),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(frames.len(), 50, "{python}: {frames:?}");
            assert_eq!(frames[0].0, "<module>");
            assert!(frames[1..48]
                .iter()
                .all(|f| *f == ("f".to_string(), line_of("RECURSE"))));
            assert_eq!(frames[48], ("f".to_string(), line_of("CALL-LEAF")));
            assert_eq!(frames[49], ("leaf".to_string(), line_of("LEAF")));
        }
        drop(target);
    }
}
