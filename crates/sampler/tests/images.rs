//! The engine without live interpreters: memory images of real CPython
//! 3.8 to 3.13 processes (recorded by `examples/record_images.rs` from
//! `tests/images/target.py`, never typed by hand) replayed through the
//! snapshot reader. Wall and CPU deltas, the re-walk of a stack that moved
//! while it was read, the filter of unnamed threads, and where mode's names
//! read from `threading` in memory.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use echion_cpython_layout::views::{InterpreterInfo, Target, ThreadInfo};
use echion_cpython_layout::{Addr, Layout, MemError, MemoryReader, PyVersion, SnapshotReader};
use echion_mojo::{Frame, MojoWriter, Profile};
use echion_sampler::clock::CpuClocks;
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Engine, Mode, RegistryQueue, Session, ThreadFilter, Update};
use serde_json::Value;

/// One recorded process.
struct Image {
    name: String,
    version: PyVersion,
    layout: &'static Layout,
    pid: u32,
    runtime: Addr,
    a: Value,
    b: Value,
    snap_a: SnapshotReader,
    snap_b: SnapshotReader,
}

fn images() -> Vec<Image> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images");
    let mut out = Vec::new();
    for minor in 8..=13 {
        let name = format!("py3.{minor}.img");
        let data = std::fs::read(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e} (record it with the record_images example)"));
        let rest = data.strip_prefix(b"ECHIMG1\n").expect("image magic");
        let (len, rest) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let header: Value = serde_json::from_slice(&rest[..len]).expect("header");
        let (snap_a, rest) = SnapshotReader::from_bytes(&rest[len..]).expect("snapshot a");
        let (snap_b, rest) = SnapshotReader::from_bytes(rest).expect("snapshot b");
        assert!(rest.is_empty(), "{name}: trailing bytes");
        let v: Vec<u8> = header["python"]
            .as_array()
            .expect("version")
            .iter()
            .map(|n| n.as_u64().expect("number") as u8)
            .collect();
        let version = PyVersion::new(v[0], v[1], v[2]);
        assert_eq!(version.minor, minor, "{name}");
        out.push(Image {
            name,
            version,
            layout: Layout::for_version(version).expect("supported"),
            pid: header["pid"].as_u64().expect("pid") as u32,
            runtime: Addr(header["runtime"].as_u64().expect("runtime")),
            a: header["a"].clone(),
            b: header["b"].clone(),
            snap_a,
            snap_b,
        });
    }
    out
}

impl Image {
    /// The target's report of the thread named `name` in `report`.
    fn thread<'v>(&self, report: &'v Value, name: Option<&str>) -> &'v Value {
        report["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .find(|t| t["name"].as_str() == name)
            .unwrap_or_else(|| panic!("{}: no thread {name:?} in the report", self.name))
    }

    /// The main interpreter's state in snapshot `a`.
    fn interp_a(&self) -> InterpreterInfo {
        Target::new(&self.snap_a, self.layout)
            .interpreters(self.runtime)
            .next()
            .expect("an interpreter")
            .expect("readable")
    }

    /// The thread state (in snapshot `a`) of a thread reported in `a`.
    fn thread_state(&self, thread: &Value) -> ThreadInfo {
        let ident = thread["ident"].as_u64().expect("ident");
        let target = Target::new(&self.snap_a, self.layout);
        let interp = self.interp_a();
        target
            .threads(&interp)
            .map(|t| t.expect("thread"))
            .find(|t| t.thread_id == ident)
            .unwrap_or_else(|| panic!("{}: no thread state of {ident}", self.name))
    }

    /// The scopes and lines the engine shows for a reported stack.
    fn expected(&self, thread: &Value) -> Vec<(String, i64)> {
        let qualified = self.version.minor >= 11;
        thread["stack"]
            .as_array()
            .expect("stack")
            .iter()
            .map(|f| {
                let scope = if qualified { &f[1] } else { &f[0] };
                (
                    scope.as_str().expect("scope").to_owned(),
                    f[2].as_i64().expect("line"),
                )
            })
            .collect()
    }

    /// Registry updates naming the main thread and the worker (not
    /// `hidden`, not the raw thread), with their native ids, and saying
    /// which code object `threading` bootstraps its threads in.
    fn registry(&self, report: &Value) -> RegistryQueue {
        let q = RegistryQueue::default();
        q.post(Update::Track {
            thread_id: report["main"]["ident"].as_u64().expect("ident"),
            name: "MainThread".into(),
            native_id: report["main"]["native_id"].as_u64().expect("native"),
        });
        let worker = self.thread(report, Some("worker"));
        q.post(Update::Track {
            thread_id: worker["ident"].as_u64().expect("ident"),
            name: "worker".into(),
            native_id: worker["native_id"].as_u64().expect("native"),
        });
        q.post(Update::BootstrapCode {
            code: report["bootstrap_code"].as_u64().expect("code"),
        });
        q
    }

    /// The name the engine gives the raw thread: its native id from 3.11,
    /// its `pthread_t` before (no tid offset in a snapshot).
    fn raw_name(&self, report: &Value) -> String {
        let raw = self.thread(report, None);
        let id = if self.version.minor >= 11 {
            raw["native_id"].as_u64()
        } else {
            raw["ident"].as_u64()
        };
        format!("Thread-{}", id.expect("id"))
    }

    /// The kernel ids of the worker, the main thread and the raw thread.
    fn native_ids(&self) -> (u64, u64, u64) {
        let id = |t: &Value| t["native_id"].as_u64().expect("native");
        (
            id(self.thread(&self.a, Some("worker"))),
            id(&self.a["main"]),
            id(self.thread(&self.a, None)),
        )
    }

    /// A wall-mode engine over snapshot `a` that holds unchanged samples,
    /// reading CPU clocks from `clocks`, started at `t0`.
    fn holding_engine<'r>(
        &'r self,
        clocks: &'r dyn CpuClocks,
        t0: u64,
    ) -> Engine<'r, SnapshotReader, MojoWriter<Vec<u8>>> {
        let mut engine = self.engine(&self.snap_a, Mode::Wall);
        engine.set_cpu_clocks(clocks);
        engine.set_hold_unchanged(true);
        engine.start_at(t0);
        engine
    }

    fn engine<'r, R: MemoryReader + ?Sized>(
        &'r self,
        reader: &'r R,
        mode: Mode,
    ) -> Engine<'r, R, MojoWriter<Vec<u8>>> {
        let writer = MojoWriter::new(Vec::new(), i64::from(self.pid)).expect("vec");
        Engine::new(reader, self.layout, self.runtime, mode, 1_000_000, writer).expect("engine")
    }
}

/// The line of `target.py` marked `#@command`.
fn command_line() -> i64 {
    let text = include_str!("images/target.py");
    text.lines()
        .position(|l| l.contains("#@command"))
        .map(|i| i as i64 + 1)
        .expect("marker")
}

fn stack(frames: &[Frame]) -> Vec<(String, i64)> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Frame(i) => (i.scope.to_string(), i.line),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A stack as (scope, line) pairs, outermost first.
type Stack = Vec<(String, i64)>;

/// Samples by thread name: (stack, time metric), one per tick.
fn by_thread(profile: &Profile) -> HashMap<String, Vec<(Stack, i64)>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for s in &profile.samples {
        out.entry(s.thread.clone())
            .or_default()
            .push((stack(&s.frames), s.time.expect("time metric")));
    }
    out
}

#[test]
fn wall_mode_replays_stacks_names_and_deltas() {
    for img in images() {
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let mut engine = img.engine(&img.snap_a, Mode::Wall);
        let t0 = 5_000_000_000;
        engine.start_at(t0);
        for dt in [1_000_000, 3_000_000, 6_000_000] {
            engine.tick(t0 + dt, &names, &freed).expect("tick");
        }
        assert_eq!(engine.stats().skipped_total(), 0, "{}", img.name);
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let raw = img.raw_name(&img.a);
        let mut threads: Vec<&str> = got.keys().map(String::as_str).collect();
        threads.sort();
        let mut want = vec!["MainThread", "worker", raw.as_str()];
        want.sort();
        // `hidden` is a `threading` thread nobody named: its outermost frame
        // is `Thread._bootstrap`, so the profile leaves it out.
        assert_eq!(threads, want, "{}", img.name);
        for (name, report_name) in [("worker", Some("worker")), (raw.as_str(), None)] {
            let expected = img.expected(img.thread(&img.a, report_name));
            let samples = &got[name];
            let times: Vec<i64> = samples.iter().map(|s| s.1).collect();
            assert_eq!(
                times,
                [1000, 2000, 3000],
                "{} {name}: wall deltas",
                img.name
            );
            for (s, _) in samples {
                assert_eq!(s, &expected, "{} {name}", img.name);
            }
        }
        // The main thread was recorded blocked reading its next command.
        let main = &got["MainThread"][0].0;
        assert_eq!(
            main.last(),
            Some(&("wait_for_command".to_owned(), command_line())),
            "{}: {main:?}",
            img.name
        );

        // Where mode shows every thread state, `hidden` included.
        let mut every = img.engine(&img.snap_a, Mode::Wall);
        every.set_filter(ThreadFilter::Every);
        every.tick(t0, &img.registry(&img.a), &freed).expect("tick");
        let profile = Profile::parse(&every.into_sink().finish().expect("vec")).expect("mojo");
        assert_eq!(profile.samples.len(), 4, "{}", img.name);
    }
}

#[test]
fn the_first_flush_comes_a_window_after_the_start() {
    // A forked child's file is made by the first flush: one at the first
    // tick would make a file for every child that lives a tick.
    for img in images() {
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let mut engine = img.engine(&img.snap_a, Mode::Wall);
        let t0 = 5_000_000_000;
        engine.start_at(t0);
        for ms in [1, 5, 9] {
            engine
                .tick(t0 + ms * 1_000_000, &names, &freed)
                .expect("tick");
            assert!(
                engine.sink().get_ref().is_empty(),
                "{}: written at {ms} ms",
                img.name
            );
        }
        engine.tick(t0 + 11_000_000, &names, &freed).expect("tick");
        assert!(
            !engine.sink().get_ref().is_empty(),
            "{}: nothing written at 11 ms",
            img.name
        );
    }
}

#[test]
fn unchanged_stacks_are_held_into_one_sample_with_every_tick_s_time() {
    for img in images() {
        let (worker_tid, _, raw_tid) = img.native_ids();
        // The worker waits (its CPU clock stays), the raw thread runs.
        let clocks = FakeClocks {
            tick: Cell::new(0),
            times: HashMap::from([
                (worker_tid, vec![5_000_000; 8]),
                (raw_tid, (0..8).map(|i| 1_000_000 * i).collect()),
            ]),
        };
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let t0 = 5_000_000_000;
        let mut engine = img.holding_engine(&clocks, t0);
        let mut ticks = 0;
        let mut tick_at = |engine: &mut Engine<'_, _, _>, ms: u64| {
            clocks.tick.set(ticks);
            ticks += 1;
            engine
                .tick(t0 + ms * 1_000_000, &names, &freed)
                .expect("tick");
        };
        // One sample a thread until written.
        for ms in [1, 3, 6] {
            tick_at(&mut engine, ms);
        }
        assert_eq!(engine.stats().samples, 9, "{}: samples taken", img.name);
        engine.write_held().expect("write");
        // Flushes every 10 ms: the waiting thread's sample is held until
        // 100 ms old; the running one's goes at the second look at its
        // clock (a window after the first).
        for ms in [20, 40, 60, 106, 130] {
            tick_at(&mut engine, ms);
        }
        engine.write_held().expect("write");
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let raw = img.raw_name(&img.a);
        for (name, report_name, want) in [
            (
                "worker",
                Some("worker"),
                vec![6000, 14000 + 20000 + 20000 + 46000 + 24000],
            ),
            (
                raw.as_str(),
                None,
                if img.layout.python >= (3, 11) {
                    vec![6000, 14000 + 20000 + 20000, 46000 + 24000]
                } else {
                    // No kernel id before 3.11 (not a `threading` thread): no
                    // clock to look at, written at the first look.
                    vec![6000, 14000 + 20000, 20000 + 46000, 24000]
                },
            ),
        ] {
            let expected = img.expected(img.thread(&img.a, report_name));
            let samples = &got[name];
            let times: Vec<i64> = samples.iter().map(|s| s.1).collect();
            assert_eq!(times, want, "{} {name}: held wall time", img.name);
            for (s, _) in samples {
                assert_eq!(s, &expected, "{} {name}", img.name);
            }
        }
    }
}

/// CPU clocks of a test: per thread, the CPU time at each tick.
struct FakeClocks {
    tick: Cell<usize>,
    times: HashMap<u64, Vec<u64>>,
}

impl CpuClocks for FakeClocks {
    fn thread_cpu_ns(&self, tid: u64) -> Option<u64> {
        self.times.get(&tid).map(|t| t[self.tick.get()])
    }

    fn thread_is_running(&self, _tid: u64) -> bool {
        false
    }
}

/// Four CPU-mode ticks of image `a`, 1 ms apart, with `clocks`: the
/// samples by thread, and the engine's statistics.
fn cpu_ticks(
    img: &Image,
    names: &RegistryQueue,
    clocks: &FakeClocks,
) -> (HashMap<String, Vec<(Stack, i64)>>, echion_sampler::Stats) {
    let freed = FreedCodes::new();
    let mut engine = img.engine(&img.snap_a, Mode::Cpu);
    engine.set_cpu_clocks(clocks);
    for tick in 0..4 {
        clocks.tick.set(tick);
        engine
            .tick(1_000_000 * (tick as u64 + 1), names, &freed)
            .expect("tick");
    }
    let stats = engine.stats().clone();
    let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
    (by_thread(&profile), stats)
}

#[test]
fn cpu_mode_replays_cpu_deltas() {
    for img in images() {
        let worker = img.thread(&img.a, Some("worker"));
        let (worker_tid, main_tid, raw_tid) = img.native_ids();
        let clocks = FakeClocks {
            tick: Cell::new(0),
            times: HashMap::from([
                (
                    worker_tid,
                    vec![7_000_000, 9_500_000, 9_500_000, 10_250_000],
                ),
                (main_tid, vec![1_000_000; 4]),
                (raw_tid, vec![2_000_000, 2_000_000, 2_400_000, 2_400_000]),
            ]),
        };
        let names = img.registry(&img.a);
        let (got, stats) = cpu_ticks(&img, &names, &clocks);
        // First sight is the baseline; then only the CPU time used shows,
        // and a thread whose clock did not move (and is not running) is
        // left out.
        let times: Vec<i64> = got["worker"].iter().map(|s| s.1).collect();
        assert_eq!(times, [2500, 750], "{}: worker", img.name);
        assert_eq!(
            got["worker"][0].0,
            img.expected(worker),
            "{}: worker stack",
            img.name
        );
        assert!(!got.contains_key("MainThread"), "{}", img.name);
        if img.version.minor >= 11 {
            let raw = img.raw_name(&img.a);
            let times: Vec<i64> = got[&raw].iter().map(|s| s.1).collect();
            assert_eq!(times, [400], "{}: raw thread", img.name);
        } else {
            // Before 3.11 a thread state has no native id, and a snapshot
            // has no glibc to ask: CPU mode cannot read the clocks of the
            // two threads nobody named (the raw one and `hidden`).
            assert_eq!(got.len(), 1, "{}: {:?}", img.name, got.keys());
            assert_eq!(stats.skipped[3], 8, "{}: no_native_id", img.name);
        }
    }
}

#[test]
fn a_stand_in_shows_its_own_stack_with_the_cpu_time_of_the_thread_it_stands_for() {
    for img in images() {
        let (worker_tid, _, _) = img.native_ids();
        // The sampler: a native thread no thread state of Python's is.
        let sampler_tid = 4_000_000;
        let clocks = FakeClocks {
            tick: Cell::new(0),
            times: HashMap::from([
                (
                    worker_tid,
                    vec![7_000_000, 9_500_000, 9_500_000, 10_250_000],
                ),
                (
                    sampler_tid,
                    vec![3_000_000, 3_300_000, 3_300_000, 3_900_000],
                ),
            ]),
        };
        let worker = img.thread(&img.a, Some("worker"));
        let names = img.registry(&img.a);
        names.post(Update::StandIn {
            thread_id: worker["ident"].as_u64().expect("ident"),
            native_id: sampler_tid,
        });
        let (got, _) = cpu_ticks(&img, &names, &clocks);
        // Not its own CPU time (2500 and 750 µs): the sampler's, on its own
        // stack.
        let times: Vec<i64> = got["worker"].iter().map(|s| s.1).collect();
        assert_eq!(times, [300, 600], "{}: worker", img.name);
        assert_eq!(
            got["worker"][0].0,
            img.expected(worker),
            "{}: its stack",
            img.name
        );
    }
}

/// Serves image `a` until the `at`-th read of `addr` (the thread state of
/// the worker, re-read after its walk), then image `b`: the thread moved on
/// between the walk and the check.
struct Switching<'a> {
    a: &'a SnapshotReader,
    b: &'a SnapshotReader,
    addr: Addr,
    at: usize,
    seen: Cell<usize>,
    switched: Cell<bool>,
}

impl MemoryReader for Switching<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        if addr == self.addr {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() == self.at {
                self.switched.set(true);
            }
        }
        if self.switched.get() {
            self.b.read(addr, buf)
        } else {
            self.a.read(addr, buf)
        }
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

#[test]
fn a_stack_that_moved_while_read_is_read_again() {
    for img in images() {
        let tstate = img.thread_state(img.thread(&img.a, Some("worker")));
        let reader = Switching {
            a: &img.snap_a,
            b: &img.snap_b,
            addr: tstate.addr,
            at: 2,
            seen: Cell::new(0),
            switched: Cell::new(false),
        };
        let freed = FreedCodes::new();
        let mut engine = img.engine(&reader, Mode::Wall);
        engine
            .tick(1_000_000, &img.registry(&img.a), &freed)
            .expect("tick");
        assert!(
            reader.switched.get(),
            "{}: the check re-read the thread",
            img.name
        );
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let want_b = img.expected(img.thread(&img.b, Some("worker")));
        let want_a = img.expected(img.thread(&img.a, Some("worker")));
        assert_ne!(want_a, want_b);
        let target_b = Target::new(&img.snap_b, img.layout);
        let frame_b = target_b
            .thread(tstate.addr)
            .expect("the worker in image b")
            .frame;
        if frame_b != tstate.frame {
            // The thread's current frame moved: the walk is redone from
            // it, on fresh memory.
            assert_eq!(got["worker"][0].0, want_b, "{}: the stack of now", img.name);
        } else {
            // Before 3.11 the innermost frame object of a code object is
            // reused (its zombie frame): the thread is in the same frame
            // object, and the stack read whole before the move stands.
            assert!(img.version.minor <= 10, "{}", img.name);
            assert_eq!(got["worker"][0].0, want_a, "{}: the stack read", img.name);
        }
    }
}

#[test]
fn where_dump_names_threads_from_memory() {
    for img in images() {
        for (snap, report) in [(&img.snap_a, &img.a), (&img.snap_b, &img.b)] {
            let session = Session::new(snap, img.pid, img.runtime, img.layout, img.version);
            let dump = session.dump().expect("dump");
            let names: Vec<&str> = dump.threads().iter().map(|t| t.name.as_str()).collect();
            // Main interpreter first, its threads oldest first.
            assert_eq!(names[0], "MainThread", "{}: {names:?}", img.name);
            for name in ["worker", "hidden"] {
                let t = dump
                    .threads()
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap_or_else(|| panic!("{}: {name} missing from {names:?}", img.name));
                let frames: Vec<(String, i64)> = t
                    .frames
                    .iter()
                    .map(|id| {
                        let f = dump.frame(id.expect("readable")).expect("frame");
                        (f.scope.clone(), f.line)
                    })
                    .collect();
                assert_eq!(
                    frames,
                    img.expected(img.thread(report, Some(name))),
                    "{}",
                    img.name
                );
                let reported = img.thread(report, Some(name));
                assert_eq!(t.ids.thread_id, reported["ident"].as_u64().expect("ident"));
                assert_eq!(
                    t.ids.native_id,
                    reported["native_id"].as_u64().expect("native"),
                    "{}: {name}'s native id (from threading before 3.11)",
                    img.name
                );
            }
            assert_eq!(names.len(), 4, "{}: {names:?}", img.name);
        }
    }
}

/// Serves an image with the native id of the thread state at `tstate`
/// read as 0 while `hidden` is set: a thread state caught between the
/// stores of its thread id and its native id.
struct NoNativeId<'a> {
    snap: &'a SnapshotReader,
    field: Addr,
    hidden: Cell<bool>,
}

impl MemoryReader for NoNativeId<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        self.snap.read(addr, buf)?;
        if self.hidden.get() {
            let (start, end) = (addr.0, addr.0 + buf.len() as u64);
            for field in self.field.0..self.field.0 + 8 {
                if (start..end).contains(&field) {
                    buf[(field - start) as usize] = 0;
                }
            }
        }
        Ok(())
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

/// Reads a snapshot, and posts an update to `names` as the thread state
/// at `tstate` is first read: a thread whose name comes after the tick's
/// start.
struct PostsOnRead<'a> {
    snap: &'a SnapshotReader,
    tstate: Addr,
    names: &'a RegistryQueue,
    update: std::cell::RefCell<Option<Update>>,
}

impl MemoryReader for PostsOnRead<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        if addr == self.tstate {
            if let Some(update) = self.update.borrow_mut().take() {
                self.names.post(update);
            }
        }
        self.snap.read(addr, buf)
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

#[test]
fn a_thread_named_after_the_ticks_start_is_shown_under_its_name() {
    // The names are brought up to date as a tick starts; a tick held up
    // after that (a busy machine) finds threads started since, whose names
    // were posted before they ran: neither hidden (as a `threading` thread
    // with no name) nor shown under its kernel id.
    for img in images() {
        let worker = img.thread(&img.a, Some("worker"));
        let tstate = img.thread_state(worker);
        let names = RegistryQueue::default();
        names.post(Update::Track {
            thread_id: img.a["main"]["ident"].as_u64().expect("ident"),
            name: "MainThread".into(),
            native_id: img.a["main"]["native_id"].as_u64().expect("native"),
        });
        names.post(Update::BootstrapCode {
            code: img.a["bootstrap_code"].as_u64().expect("code"),
        });
        let reader = PostsOnRead {
            snap: &img.snap_a,
            tstate: tstate.addr,
            names: &names,
            update: std::cell::RefCell::new(Some(Update::Track {
                thread_id: worker["ident"].as_u64().expect("ident"),
                name: "worker".into(),
                native_id: worker["native_id"].as_u64().expect("native"),
            })),
        };
        let freed = FreedCodes::new();
        let mut engine = img.engine(&reader, Mode::Wall);
        engine.tick(1_000_000, &names, &freed).expect("tick");
        assert!(reader.update.borrow().is_none(), "{}: posted", img.name);
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let (worker_native, _, _) = img.native_ids();
        assert!(
            !got.contains_key(&format!("Thread-{worker_native}")),
            "{}: threads {:?}",
            img.name,
            got.keys()
        );
        assert_eq!(
            got.get("worker").map(|s| s[0].0.clone()),
            Some(img.expected(worker)),
            "{}: threads {:?}",
            img.name,
            got.keys()
        );
    }
}

#[test]
fn a_thread_first_seen_with_no_native_id_takes_it_later() {
    for img in images().into_iter().filter(|i| i.version.minor >= 11) {
        let tstate = img.thread_state(img.thread(&img.a, None));
        let offset = img.layout.thread.native_thread_id.expect("3.11+");
        let reader = NoNativeId {
            snap: &img.snap_a,
            field: Addr(tstate.addr.0 + offset),
            hidden: Cell::new(true),
        };
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let mut engine = img.engine(&reader, Mode::Wall);
        for tick in 1..=3u64 {
            engine.tick(1_000_000 * tick, &names, &freed).expect("tick");
            reader.hidden.set(false);
        }
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        // The first tick's sample has only the thread id to go by; the
        // later ones carry the native id read since.
        let later: i64 = got
            .get(&img.raw_name(&img.a))
            .unwrap_or_else(|| panic!("{}: threads {:?}", img.name, got.keys()))
            .iter()
            .map(|s| s.1)
            .sum();
        assert_eq!(later, 2000, "{}: the later ticks' time", img.name);
    }
}

#[test]
fn a_frames_code_alone_is_what_reading_the_whole_frame_gives() {
    for img in images() {
        let target = Target::new(&img.snap_a, img.layout);
        let worker = img.thread_state(img.thread(&img.a, Some("worker")));
        let mut frame = worker.frame;
        let mut seen = 0;
        while !frame.is_null() {
            let (info, previous) = target.frame(frame).expect("frame");
            assert_eq!(
                target.frame_code(frame).expect("code"),
                info.code,
                "{}",
                img.name
            );
            frame = previous;
            seen += 1;
        }
        assert!(seen >= 2, "{}: {seen} frames", img.name);
    }
}

/// Serves an image with the words of `words` put over it (a GIL's state
/// that the recording left out: unmapped memory reads as zeros under
/// them), and counts the reads that touch any address of `watched`.
struct WithGil<'a> {
    snap: &'a SnapshotReader,
    words: std::cell::RefCell<Vec<(Addr, u64)>>,
    watched: Vec<Addr>,
    hits: Cell<usize>,
}

impl MemoryReader for WithGil<'_> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        let end = addr.0 + buf.len() as u64;
        let within = |a: u64| addr.0 <= a && a < end;
        if self.watched.iter().any(|w| within(w.0)) {
            self.hits.set(self.hits.get() + 1);
        }
        let words = self.words.borrow();
        let covers = words.iter().any(|(a, _)| within(a.0));
        match self.snap.read(addr, buf) {
            Err(_) if covers => buf.fill(0),
            other => other?,
        }
        for (a, value) in words.iter() {
            for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
                if within(a.0 + i as u64) {
                    buf[(a.0 + i as u64 - addr.0) as usize] = byte;
                }
            }
        }
        Ok(())
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

/// Where the GIL of `img`'s interpreter at `interp` is, and the words that
/// make it say that `holder` took it last, 7 switches so far (the
/// recordings leave the GIL out; 3.12's is behind a pointer of the
/// interpreter's, pointed here at unmapped memory).
fn gil_words(img: &Image, interp: Addr, holder: Addr) -> (Addr, Vec<(Addr, u64)>) {
    use echion_cpython_layout::layout::GilLocation;
    let l = &img.layout.gil;
    let mut words = Vec::new();
    let gil = match l.location {
        GilLocation::Runtime(off) => Addr(img.runtime.0 + off),
        GilLocation::Interp(off) => {
            let at = Addr(0x7e57_0000_0000);
            words.push((Addr(interp.0 + off), at.0));
            at
        }
    };
    words.push((Addr(gil.0 + l.last_holder), holder.0));
    words.push((Addr(gil.0 + l.switch_number), 7));
    (gil, words)
}

impl WithGil<'_> {
    /// Puts `value` at `addr` (over what was put there before).
    fn put(&self, addr: Addr, value: u64) {
        let mut words = self.words.borrow_mut();
        words.retain(|(a, _)| *a != addr);
        words.push((addr, value));
    }
}

#[test]
fn a_thread_that_has_not_held_the_gil_since_its_walk_is_not_read_again() {
    use echion_cpython_layout::layout::CurrentFrame;
    for img in images() {
        let target = Target::new(&img.snap_a, img.layout);
        let interp = img.interp_a();
        let main_ident = img.a["main"]["ident"].as_u64().expect("ident");
        let threads: Vec<ThreadInfo> = target
            .threads(&interp)
            .map(|t| t.expect("thread"))
            .collect();
        let main = threads
            .iter()
            .find(|t| t.thread_id == main_ident)
            .expect("the main thread's state");
        // The GIL (left out of the recording): the main thread took it
        // last, 7 switches so far.
        let l = &img.layout.gil;
        let (gil, words) = gil_words(&img, interp.addr, main.addr);
        // Where the worker's `cframe->current_frame` is (3.11, 3.12).
        let worker_ident = img.thread(&img.a, Some("worker"))["ident"]
            .as_u64()
            .expect("ident");
        let worker = threads
            .iter()
            .find(|t| t.thread_id == worker_ident)
            .expect("the worker's state");
        let mut watched = Vec::new();
        if let CurrentFrame::ViaCFrame {
            cframe,
            current_frame,
        } = img.layout.thread.current_frame
        {
            let mut cf = [0u8; 8];
            img.snap_a
                .read(Addr(worker.addr.0 + cframe), &mut cf)
                .expect("cframe");
            watched.push(Addr(u64::from_le_bytes(cf) + current_frame));
        }
        let reader = WithGil {
            snap: &img.snap_a,
            words: words.into(),
            watched,
            hits: Cell::new(0),
        };
        let reads_cframes = img.version.minor == 11 || img.version.minor == 12;
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let mut engine = img.engine(&reader, Mode::Wall);
        engine.set_hold_unchanged(true);
        engine.start_at(1_000_000);
        engine.tick(2_000_000, &names, &freed).expect("tick");
        let first = reader.hits.get();
        let shown = engine.stats().samples;
        assert_eq!(
            engine.stats().unwalked,
            0,
            "{}: the first tick walks",
            img.name
        );
        assert!(shown >= 3, "{}: {shown} threads shown", img.name);
        if reads_cframes {
            assert!(first >= 1, "{}: the worker's cframe read", img.name);
        }
        engine.tick(3_000_000, &names, &freed).expect("tick");
        // The GIL has not changed hands: the threads shown but the main
        // one are where their walk found them, their frames not read again.
        assert_eq!(
            reader.hits.get(),
            first,
            "{}: the worker's cframe read again",
            img.name
        );
        assert_eq!(
            engine.stats().unwalked,
            shown - 1,
            "{}: samples without a walk",
            img.name
        );
        // The GIL changed hands (and came back): every thread is read and
        // walked.
        reader.put(Addr(gil.0 + l.switch_number), 8);
        engine.tick(4_000_000, &names, &freed).expect("tick");
        let second = reader.hits.get();
        if reads_cframes {
            assert!(
                second > first,
                "{}: the worker's cframe after a switch",
                img.name
            );
        }
        assert_eq!(
            engine.stats().unwalked,
            shown - 1,
            "{}: all walked",
            img.name
        );
        // The last holder is another thread state of the worker's thread
        // (3.11 swaps thread states without a switch): the worker's frame
        // is read again.
        let t = &img.layout.thread;
        let other = Addr(0x7e58_0000_0000);
        reader.put(Addr(other.0 + t.interp), interp.addr.0);
        reader.put(Addr(other.0 + t.thread_id), worker_ident);
        reader.put(Addr(gil.0 + l.last_holder), other.0);
        engine.tick(5_000_000, &names, &freed).expect("tick");
        if reads_cframes {
            assert!(
                reader.hits.get() > second,
                "{}: the worker's cframe, its thread holding the GIL",
                img.name
            );
        }
        // Renamed (the GIL where it was): the next sample has the new
        // name.
        names.post(Update::Track {
            thread_id: worker_ident,
            name: "renamed".into(),
            native_id: img.thread(&img.a, Some("worker"))["native_id"]
                .as_u64()
                .expect("native"),
        });
        engine.tick(6_000_000, &names, &freed).expect("tick");
        engine.write_held().expect("write");
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let stack = img.expected(img.thread(&img.a, Some("worker")));
        for (name, time) in [("worker", 4000), ("renamed", 1000)] {
            let samples = &got[name];
            assert_eq!(samples.len(), 1, "{}: one held sample of {name}", img.name);
            assert_eq!(samples[0].0, stack, "{}: {name}", img.name);
            assert_eq!(samples[0].1, time, "{}: {name}'s time", img.name);
        }
    }
}

/// [`FakeClocks`], counting the reads of each thread's clock.
struct CountedClocks {
    clocks: FakeClocks,
    reads: std::cell::RefCell<HashMap<u64, usize>>,
}

impl CpuClocks for CountedClocks {
    fn thread_cpu_ns(&self, tid: u64) -> Option<u64> {
        *self.reads.borrow_mut().entry(tid).or_default() += 1;
        self.clocks.thread_cpu_ns(tid)
    }

    fn thread_is_running(&self, tid: u64) -> bool {
        self.clocks.thread_is_running(tid)
    }
}

#[test]
fn a_held_sample_found_waiting_is_not_looked_at_again_until_written() {
    for img in images() {
        let (worker_tid, _, raw_tid) = img.native_ids();
        // The worker waits; the raw thread waits for two windows, then
        // runs (its stack the same).
        let clocks = CountedClocks {
            clocks: FakeClocks {
                tick: Cell::new(0),
                times: HashMap::from([
                    (worker_tid, vec![5_000_000; 8]),
                    (
                        raw_tid,
                        vec![0, 0, 0, 0, 0, 1_000_000, 2_000_000, 3_000_000],
                    ),
                ]),
            },
            reads: Default::default(),
        };
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let t0 = 5_000_000_000;
        let mut engine = img.holding_engine(&clocks, t0);
        for (i, ms) in [1, 20, 40, 60, 80, 99].into_iter().enumerate() {
            clocks.clocks.tick.set(i);
            engine
                .tick(t0 + ms * 1_000_000, &names, &freed)
                .expect("tick");
        }
        // The first look at 20 ms, the second at 40 finds it waiting:
        // none after (the raw thread's clock moved at 99 ms unseen).
        let reads = clocks.reads.borrow();
        assert_eq!(
            reads.get(&worker_tid),
            Some(&2),
            "{}: the worker's clock",
            img.name
        );
        if img.version.minor >= 11 {
            // (Before 3.11 only `threading` threads have a kernel id: the
            // raw thread's sample is written at every flush.)
            assert_eq!(
                reads.get(&raw_tid),
                Some(&2),
                "{}: the raw thread's clock",
                img.name
            );
        }
        engine.write_held().expect("write");
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        // Held whole: 99 ms of one stack in one sample.
        let worker: Vec<i64> = got["worker"].iter().map(|s| s.1).collect();
        assert_eq!(worker, vec![99_000], "{}: the worker's time", img.name);
    }
}

#[test]
fn a_held_sample_found_waiting_is_looked_at_again_once_its_thread_took_the_gil() {
    for img in images() {
        let (worker_tid, _, _) = img.native_ids();
        let interp = img.interp_a();
        let worker = img.thread_state(img.thread(&img.a, Some("worker")));
        // The worker holds the GIL (its switches never counted): it waits
        // for two windows, then runs on one line.
        let (_, words) = gil_words(&img, interp.addr, worker.addr);
        let reader = WithGil {
            snap: &img.snap_a,
            words: words.into(),
            watched: Vec::new(),
            hits: Cell::new(0),
        };
        let clocks = CountedClocks {
            clocks: FakeClocks {
                tick: Cell::new(0),
                times: HashMap::from([(
                    worker_tid,
                    vec![0, 0, 0, 1_000_000, 2_000_000, 3_000_000],
                )]),
            },
            reads: Default::default(),
        };
        let names = img.registry(&img.a);
        let freed = FreedCodes::new();
        let mut engine = img.engine(&reader, Mode::Wall);
        engine.set_cpu_clocks(&clocks);
        engine.set_hold_unchanged(true);
        let t0 = 5_000_000_000;
        engine.start_at(t0);
        for (i, ms) in [1, 20, 40, 60].into_iter().enumerate() {
            clocks.clocks.tick.set(i);
            engine
                .tick(t0 + ms * 1_000_000, &names, &freed)
                .expect("tick");
        }
        // Found waiting at 40 ms; at 60 its clock is read again (it held
        // the GIL since), moved: written, all 60 ms of it.
        assert_eq!(
            clocks.reads.borrow().get(&worker_tid),
            Some(&3),
            "{}: the worker's clock",
            img.name
        );
        let profile = Profile::parse(&engine.into_sink().finish().expect("vec")).expect("mojo");
        let got = by_thread(&profile);
        let worker: Vec<i64> = got["worker"].iter().map(|s| s.1).collect();
        assert_eq!(worker, vec![60_000], "{}: the worker's time", img.name);
    }
}
