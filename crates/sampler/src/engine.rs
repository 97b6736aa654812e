//! One tick of sampling: every interpreter, every thread, one stack each,
//! handed to a [`Sink`].

use echion_cpython_layout::layout::FrameLayout;
use echion_cpython_layout::linetable::{self, TableFormat};
use echion_cpython_layout::views::{
    FrameInfo, FrameVisitor, GilInfo, Target, ThreadInfo, ViewError,
};
use echion_cpython_layout::{Addr, Layout, MemError, MemoryReader, PyVersion};
use echion_mojo::{FrameId, FrameSpec, Metric, SampleRef, StackEntry};

use crate::cache::{AddrMap, CodeEntry, FrameCache};
use crate::clock::{CpuClocks, KernelClocks};
use crate::codewatch::FreedCodes;
use crate::greenlets::GreenletFrame;
use crate::mem::RegionCache;
use crate::native::{NativeError, NativeStacks, NativeStats};
use crate::pthread::TidOffset;
use crate::registry::{RegistryQueue, ThreadNames};
use crate::sink::{Sink, ThreadIds};
use crate::tasks::{FrameInterner, TaskTable};

/// What the samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wall time: every thread, every tick, with the time since its last
    /// sample.
    Wall,
    /// CPU time: the threads that ran since their last sample, with the CPU
    /// time they used.
    Cpu,
    /// Memory: the change of each allocating stack's live bytes since the
    /// last flush (see [`Engine::flush_memory`]), from `echion_memtrace`.
    Memory,
}

impl Mode {
    /// The `mode` metadata value.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Wall => "wall",
            Mode::Cpu => "cpu",
            Mode::Memory => "memory",
        }
    }
}

/// Why a thread's sample was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A read of the process's memory failed (the thread changed under us).
    Memory,
    /// The stack was deeper than the walk allows.
    TooDeep,
    /// A structure held values it cannot hold (torn read).
    Invalid,
    /// CPU mode: the thread's kernel id is unknown.
    NoNativeId,
    /// CPU mode: the thread's CPU clock could not be read (it ended).
    CpuClock,
}

impl SkipReason {
    /// All reasons, in metadata order.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Memory,
        SkipReason::TooDeep,
        SkipReason::Invalid,
        SkipReason::NoNativeId,
        SkipReason::CpuClock,
    ];

    /// The metadata key suffix.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Memory => "memory",
            SkipReason::TooDeep => "too_deep",
            SkipReason::Invalid => "invalid",
            SkipReason::NoNativeId => "no_native_id",
            SkipReason::CpuClock => "cpu_clock",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<ViewError> for SkipReason {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Mem(_) | ViewError::Null(_) => SkipReason::Memory,
            ViewError::TooDeep => SkipReason::TooDeep,
            _ => SkipReason::Invalid,
        }
    }
}

/// Counters kept while sampling, written to the profile when it closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ticks taken.
    pub ticks: u64,
    /// Samples written.
    pub samples: u64,
    /// Thread samples skipped, by [`SkipReason`].
    pub skipped: [u64; SkipReason::ALL.len()],
    /// Ticks whose interpreter list could not be read whole.
    pub interpreter_errors: u64,
    /// Ranges copied at the start of the last tick (see [`crate::mem`]).
    pub prefetched_ranges: u64,
    /// Ticks whose reader said its fast path was not available
    /// ([`MemoryReader::begin_tick`]: in-process, the fault handler was
    /// replaced and reads went through `process_vm_readv`).
    pub fallback_ticks: u64,
    /// Samples of threads that cannot have run since their last sample
    /// (see [`Engine::set_hold_unchanged`]), taken without a walk.
    pub unwalked: u64,
}

impl Stats {
    /// Total skipped samples.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

#[derive(Debug)]
struct PerThread {
    /// The kernel thread id, 0 if unknown.
    native_id: u64,
    last_ns: u64,
    cpu_ns: Option<u64>,
    active_tick: u64,
    seen_tick: u64,
    /// The tick of this thread's last native capture in CPU mode (0: none).
    captured_tick: u64,
    /// The thread's last sample, held back while its stack stays the same.
    held: Held,
    /// What the GIL said at the tick of the walk that found the held
    /// sample's stack, and the frame that walk started at.
    walked: Option<Walked>,
}

/// A thread's last walk, as the GIL saw it (see [`Engine::set_hold_unchanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Walked {
    /// The GIL's state's address.
    gil: u64,
    /// Its `switch_number` at the start of that tick's look at the
    /// interpreter.
    switch_number: u64,
    /// The thread's innermost frame then.
    frame: u64,
}

impl Walked {
    /// A walk from `frame` while the GIL said `gil`.
    fn new(gil: &GilInfo, frame: Addr) -> Self {
        Self {
            gil: gil.addr.0,
            switch_number: gil.switch_number,
            frame: frame.0,
        }
    }
}

/// A sample held back (see [`Engine::set_hold_unchanged`]): written once
/// the thread's stack changes, the thread ends or it was held long enough,
/// with the metric of every sample that found the same stack.
#[derive(Debug, Default)]
struct Held {
    /// Whether there is one.
    active: bool,
    /// Whether `threading` named the thread (else the name is made from its
    /// ids).
    named: bool,
    iid: i64,
    ids: ThreadIds,
    name: String,
    stack: Vec<StackEntry>,
    metric: i64,
    /// When it was first held.
    since_ns: u64,
    /// The thread's CPU clock when a flush first found the sample held
    /// for a window: a thread whose clock stays there waits.
    cpu_ns: Option<u64>,
    /// Whether a flush found the clock where `cpu_ns` left it: the thread
    /// waits, and its clock is not read again for this sample.
    waits: bool,
    /// [`ThreadNames::generation`] when `name` was last found to be the
    /// thread's: while it stays, the name is not compared again.
    names_seen: u64,
}

/// The longest a sample of a thread that waits is held back: what a
/// process killed meanwhile may lose of its time. 1,000 waiting threads
/// write 10 samples a second each. A thread that runs with the same stack
/// (a loop on one line) is written every window or two (at most 30 ms
/// held), so that a process that ends by `os._exit` or a signal keeps
/// nearly all of its last work; one whose clock stood still for a window
/// waits, and its sample is held this long even if it starts to run
/// native code without the GIL and without moving its Python frame (once
/// it takes the GIL its clock is looked at again).
pub const HOLD_AT_MOST_NS: u64 = 100_000_000;

impl Held {
    /// Writes the held sample, if any, to `sink`.
    fn write<S: Sink>(&mut self, sink: &mut S) -> std::io::Result<()> {
        if !std::mem::take(&mut self.active) {
            return Ok(());
        }
        sink.sample(
            self.ids,
            &SampleRef {
                iid: self.iid,
                thread: &self.name,
                stack: &self.stack,
                metrics: &[Metric::Time(self.metric)],
                gc: false,
                idle: false,
            },
        )
    }
}

/// CPU time (µs) a thread may show in the tick after its native capture and
/// still be taken for idle when it is not on a CPU: what returning from the
/// capture's signal handler (and restarting the system call it interrupted)
/// costs it, which is echion's doing, not the program's.
const CAPTURE_RESIDUE_US: u64 = 25;

/// Ticks during which a thread whose CPU clock did not move, but which ran
/// recently, is checked for being on a CPU right now.
const RECENTLY_ACTIVE_TICKS: u64 = 8;

/// How long a time-mode engine keeps samples in its sink's buffer before it
/// ends a tick with [`Sink::end_tick`] (one write to the file): what a
/// program killed by a signal (`SIGTERM`'s default action runs no exit
/// handler) can lose. A write every 1 ms tick cost as much as a quarter of
/// an idle tick's own work; every 10 ms it is a tenth of that.
pub const FLUSH_EVERY_NS: u64 = 10_000_000;

/// Which thread states a tick shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadFilter {
    /// A profile: in the main interpreter, thread states that `threading`
    /// has not named are left out when they have no Python frame or their
    /// outermost frame is `threading`'s own thread bootstrap (a thread
    /// starting or ending, whose named samples are the real ones).
    Profile,
    /// Where mode: every thread state, with or without frames (but for
    /// one made for a thread not started yet: see `hidden`), each captured
    /// in native mode however recently it was.
    Every,
}

/// The sampling engine over one process: its memory, its layout and the
/// sink the samples go to.
pub struct Engine<'r, R: MemoryReader + ?Sized, S: Sink> {
    reader: &'r R,
    layout: &'r Layout,
    runtime: Addr,
    format: TableFormat,
    mode: Mode,
    interval_ns: u64,
    sink: S,
    filter: ThreadFilter,
    names: ThreadNames,
    cache: FrameCache,
    /// Keyed by thread state address and thread id: a new thread state
    /// briefly carries its creator's thread id, and the thread that runs a
    /// subinterpreter has one thread state in each interpreter.
    threads: AddrMap<(u64, u64), PerThread>,
    stack: Vec<StackEntry>,
    /// The addresses of `stack`'s frames, for a thread that runs an event
    /// loop (to find where the task on the CPU starts).
    stack_addrs: Vec<u64>,
    stacks: StackSet,
    tasks: TaskTable,
    task_buf: Vec<StackEntry>,
    /// Scratch of the greenlet stacks: chains, their ends, one walk.
    greenlet_chains: Vec<u64>,
    greenlet_ends: Vec<usize>,
    greenlet_walk: Vec<StackEntry>,
    /// Scratch of a tick: the thread states it found.
    tick_states: Vec<TickState>,
    freed: Vec<u64>,
    name_buf: String,
    regions: RegionCache<'r, R>,
    tick: u64,
    /// When the previous tick ran, or when sampling started before the
    /// first: a thread seen for the first time cannot have run unseen for
    /// longer than since then.
    since_ns: u64,
    /// When the sink's tick last ended.
    flushed_ns: u64,
    /// The kernel id of a forked child's forking thread not sampled yet,
    /// when the run started after the fork ([`Engine::start_after_fork`]);
    /// else 0.
    forked_tid: u64,
    /// The code object of the outermost Python frame of the last walk.
    outermost_code: u64,
    /// The code object field of the frame the last walk started from, as
    /// the walk read it.
    first_code: Option<u64>,
    /// Where this process's `struct pthread` keeps the kernel tid, to find
    /// the native id of threads before 3.11 that `threading` does not know.
    tid_offset: Option<TidOffset>,
    /// Where CPU time comes from in CPU mode.
    clocks: &'r dyn CpuClocks,
    stats: Stats,
    /// Stacks handed to the sink by the last tick.
    tick_stacks: u64,
    /// Memory mode: what the allocation table handed over, and the frames
    /// and stacks it defined so far.
    memory: MemoryMirror,
    /// Native stacks, when asked for (see [`crate::native`]).
    native: Option<NativeStacks>,
    /// Scratch of a native sample: the Python frames' ids and addresses,
    /// innermost first, and how many each evaluation-loop call runs.
    py_ids: Vec<StackEntry>,
    py_addrs: Vec<u64>,
    py_groups: Vec<usize>,
    /// Hold a thread's sample back while its stack stays the same (see
    /// [`Engine::set_hold_unchanged`]).
    hold_unchanged: bool,
}

/// What the engine keeps of the allocation table between flushes: the
/// writer's id of each frame index of the table, and each stack id's
/// stack (both given again by the table to new ones).
#[derive(Debug, Default)]
struct MemoryMirror {
    drained: echion_memtrace::Drained,
    frames: Vec<FrameId>,
    /// Each stack, with the name of its thread when it was first seen.
    stacks: Vec<(echion_memtrace::StackRec, Box<str>)>,
    stats: echion_memtrace::TrackerStats,
}

/// Tells the reader that the tick is over when dropped
/// ([`MemoryReader::end_tick`]).
struct EndTick<'r, R: MemoryReader + ?Sized>(&'r R);

impl<R: MemoryReader + ?Sized> Drop for EndTick<'_, R> {
    fn drop(&mut self) {
        self.0.end_tick();
    }
}

/// A thread state a tick found, with its interpreter's id and GIL (see
/// [`Engine::gil_before_tick`]).
#[derive(Debug, Clone, Copy)]
struct TickState {
    iid: i64,
    gil: Option<GilInfo>,
    thread: ThreadInfo,
}

/// Whether the thread state `states[i]` (of every interpreter's, each
/// interpreter's newest first) is not where its thread is, and so is not
/// sampled. Only one with no frame can be:
/// - one made for a thread that has not started yet: up to 3.11
///   `_thread.start_new_thread` makes it on the creating thread, with
///   that thread's ids, which the new thread replaces when it starts (from
///   3.12 its thread id is 0 until then). An older thread state of the
///   same interpreter (its creator's) has its thread id; sampled, it
///   would be a second, empty, creating thread whose time counted twice.
///   Of two such with no frame, the older is kept.
/// - with `across` (profiles, not where mode): one of a thread that runs
///   code in another interpreter (a thread that ran a subinterpreter keeps
///   a thread state there): its time is that one's.
fn hidden(states: &[TickState], i: usize, across: bool) -> bool {
    let Some(me) = states.get(i) else {
        return false;
    };
    if !me.thread.frame.is_null() {
        return false;
    }
    let same = |o: &TickState| o.thread.thread_id == me.thread.thread_id;
    states[i + 1..].iter().any(|o| o.iid == me.iid && same(o))
        || (across
            && states
                .iter()
                .any(|o| o.iid != me.iid && same(o) && !o.thread.frame.is_null()))
}

/// Puts `value` at `i` of a table the allocation table hands indices of:
/// a new one (the next) or one given again (its old value replaced).
fn put_at<T>(v: &mut Vec<T>, i: u32, value: T) {
    let i = i as usize;
    debug_assert!(i <= v.len(), "index {i} past {}", v.len());
    if i == v.len() {
        v.push(value);
    } else if let Some(slot) = v.get_mut(i) {
        *slot = value;
    }
}

impl<'r, R: MemoryReader + ?Sized, S: Sink> Engine<'r, R, S> {
    /// An engine reading the interpreter whose `_PyRuntime` is at `runtime`,
    /// its samples going to `sink`.
    pub fn new(
        reader: &'r R,
        layout: &'r Layout,
        runtime: Addr,
        mode: Mode,
        interval_ns: u64,
        sink: S,
    ) -> Result<Self, linetable::LineTableError> {
        let (major, minor) = layout.python;
        let format = TableFormat::for_version(PyVersion::new(major, minor, 0))?;
        Ok(Self {
            reader,
            layout,
            runtime,
            format,
            mode,
            interval_ns: interval_ns.max(1),
            sink,
            filter: ThreadFilter::Profile,
            names: ThreadNames::default(),
            cache: FrameCache::new(1 << 16, 1 << 13),
            threads: AddrMap::default(),
            stack: Vec::with_capacity(256),
            stack_addrs: Vec::with_capacity(256),
            stacks: StackSet::default(),
            tasks: {
                let mut t = TaskTable::default();
                t.set_interval(Some(interval_ns));
                t
            },
            task_buf: Vec::with_capacity(256),
            greenlet_chains: Vec::new(),
            greenlet_ends: Vec::new(),
            greenlet_walk: Vec::new(),
            tick_states: Vec::new(),
            freed: Vec::new(),
            name_buf: String::new(),
            regions: RegionCache::new(reader),
            tick: 0,
            since_ns: 0,
            flushed_ns: 0,
            forked_tid: 0,
            outermost_code: 0,
            first_code: None,
            tid_offset: None,
            clocks: &KernelClocks,
            stats: Stats::default(),
            tick_stacks: 0,
            memory: MemoryMirror::default(),
            native: None,
            py_ids: Vec::new(),
            py_addrs: Vec::new(),
            py_groups: Vec::new(),
            hold_unchanged: false,
        })
    }

    /// Time modes: a thread whose stack is the same as in its last sample
    /// adds its time to that sample instead of writing a new one; the held
    /// sample is written when the stack changes, when the thread ends, at
    /// a flush ([`FLUSH_EVERY_NS`]) that finds it held for a window by a
    /// thread that ran meanwhile (its CPU clock moved) or held for
    /// [`HOLD_AT_MOST_NS`], and by [`Engine::write_held`]. Every total stays exact, and a thread that
    /// waits costs the file one sample per window instead of one per tick.
    /// Only plain stacks are held (not a thread's asyncio tasks or
    /// greenlets, which write several stacks a sample).
    pub fn set_hold_unchanged(&mut self, hold: bool) {
        self.hold_unchanged = hold;
    }

    /// Writes every held sample (before the end metadata).
    pub fn write_held(&mut self) -> std::io::Result<()> {
        for t in self.threads.values_mut() {
            t.held.write(&mut self.sink)?;
        }
        Ok(())
    }

    /// Memory mode's tick: takes from the allocation table
    /// ([`echion_memtrace::drain`]) how the live bytes of each stack changed
    /// since the last flush and writes one sample per changed stack, its
    /// thread named as in the other modes, with `METRIC_MEMORY` the change
    /// in bytes. Returns how many samples it wrote.
    pub fn flush_memory(&mut self, registry: &RegistryQueue) -> std::io::Result<u64> {
        self.tick += 1;
        self.stats.ticks += 1;
        let m = &mut self.memory;
        if let Some(stats) = echion_memtrace::drain(&mut m.drained) {
            m.stats = stats;
        }
        // Names after the table: a thread names itself before it makes a
        // stack, so every stack drained has its thread's name posted by now
        // (the other order misses a thread that names itself in between).
        self.names.refresh(registry);
        let m = &mut self.memory;
        for (i, f) in &m.drained.frames {
            let id = self.sink.intern_frame(&FrameSpec {
                filename: &f.filename,
                scope: &f.scope,
                line: f.line,
                line_end: f.line_end,
                column: f.column,
                column_end: f.column_end,
            });
            // (No stack kept uses the frame an index had before.)
            put_at(&mut m.frames, *i, id);
        }
        for (id, rec) in m.drained.stacks.drain(..) {
            // Each stack is named once, when it is first seen: its thread
            // may end (and its id be reused) before the stack's last change.
            let name: Box<str> = match self.names.get_or_retired(rec.thread_id, rec.native_id) {
                Some(meta) => meta.name.as_str().into(),
                None => format!("Thread-{}", rec.thread_id).into(),
            };
            put_at(&mut m.stacks, id, (rec, name));
        }
        let mut written = 0;
        for &(stack, delta) in &m.drained.deltas {
            let Some((rec, name)) = m.stacks.get(stack as usize) else {
                continue;
            };
            self.stack.clear();
            self.stack.extend(
                rec.frames
                    .iter()
                    .filter_map(|&f| m.frames.get(f as usize))
                    .map(|&id| StackEntry::Frame(id)),
            );
            self.sink.sample(
                ThreadIds {
                    thread_id: rec.thread_id,
                    native_id: 0,
                },
                &SampleRef {
                    iid: rec.iid,
                    thread: name,
                    stack: &self.stack,
                    metrics: &[Metric::Memory(delta)],
                    gc: false,
                    idle: false,
                },
            )?;
            written += 1;
        }
        self.stats.samples += written;
        self.sink.end_tick()?;
        Ok(written)
    }

    /// Memory mode's counters (allocations linked, left out, unreadable).
    pub fn memory_stats(&self) -> echion_memtrace::TrackerStats {
        self.memory.stats
    }

    /// Reads threads' CPU time from `clocks` in CPU mode (the kernel's by
    /// default; a test's to replay a memory snapshot).
    pub fn set_cpu_clocks(&mut self, clocks: &'r dyn CpuClocks) {
        self.clocks = clocks;
    }

    /// Samples native stacks too, interleaved with the Python frames (this
    /// process only: threads are captured by a signal).
    pub fn enable_native(&mut self) -> Result<(), NativeError> {
        if self.native.is_none() {
            self.native = Some(NativeStacks::new()?);
        }
        Ok(())
    }

    /// Gives the engine native stacks set up earlier (another engine's).
    pub(crate) fn set_native(&mut self, native: NativeStacks) {
        self.native = Some(native);
    }

    /// Takes the engine's native stacks, to hand to another engine.
    pub(crate) fn take_native(&mut self) -> Option<NativeStacks> {
        self.native.take()
    }

    /// The counters of native sampling (all zero without it).
    pub fn native_stats(&self) -> NativeStats {
        self.native.as_ref().map(|n| n.stats).unwrap_or_default()
    }

    /// Says where `struct pthread` keeps the kernel tid in the sampled
    /// process (see [`TidOffset`]).
    pub fn set_tid_offset(&mut self, offset: Option<TidOffset>) {
        self.tid_offset = offset;
    }

    /// Says when sampling started (monotonic ns): the first sample of a
    /// thread never counts from before it, whatever the interval.
    pub fn start_at(&mut self, now_ns: u64) {
        self.since_ns = now_ns;
        // The first flush comes a window after the start, as every other.
        self.flushed_ns = now_ns;
    }

    /// Says that this is a forked child's run, started (at
    /// [`Engine::start_at`]'s time) by the fork and sampled from a while
    /// after it: the first sample of the forking thread (kernel id `tid`)
    /// holds all its time since the fork, its wall time from the start and
    /// its CPU time from zero (a forked thread's CPU clock starts at the
    /// fork), where any other thread's first sample holds at most an
    /// interval and its CPU time from its first sight.
    pub fn start_after_fork(&mut self, tid: u64) {
        self.forked_tid = tid;
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many stacks the last tick handed to the sink (one per plain
    /// thread, one per leaf task or greenlet).
    pub fn stacks_written(&self) -> u64 {
        self.tick_stacks
    }

    /// The counters of the asyncio task reader.
    pub fn task_stats(&self) -> crate::tasks::TaskStats {
        self.tasks.stats()
    }

    /// Makes every tick read every pending asyncio task (up to
    /// [`crate::tasks::MAX_TASKS`]) whatever it takes, instead of the share
    /// its interval allows: for a one-off dump (where mode).
    pub fn set_every_task(&mut self) {
        self.tasks.set_interval(None);
    }

    /// Says which thread states a tick shows (a profile's by default).
    pub fn set_filter(&mut self, filter: ThreadFilter) {
        self.filter = filter;
    }

    /// The sink, e.g. for metadata.
    pub fn sink(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Gives the sink back, for the caller to finish.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Takes one sample of every thread of every interpreter at `now_ns`
    /// (monotonic), after applying the registry's updates and forgetting
    /// freed code objects. Hands what the sink buffered to the underlying
    /// writer at the end of a tick once [`FLUSH_EVERY_NS`] have passed, so
    /// that a process that dies leaves whole samples behind, up to that
    /// long before. Only an I/O error of the output is an error; threads
    /// that cannot be read are skipped and counted.
    pub fn tick(
        &mut self,
        now_ns: u64,
        registry: &RegistryQueue,
        freed: &FreedCodes,
    ) -> std::io::Result<()> {
        if self.mode == Mode::Memory {
            return self.flush_memory(registry).map(drop);
        }
        self.tick += 1;
        self.stats.ticks += 1;
        self.tick_stacks = 0;
        if !self.reader.begin_tick() {
            self.stats.fallback_ticks += 1;
        }
        // However the tick ends.
        let _end = EndTick(self.reader);
        self.names.refresh(registry);
        self.freed.clear();
        let freed_list = &mut self.freed;
        if freed.drain(|a| freed_list.push(a)) {
            self.cache.clear();
        } else {
            self.cache.forget_codes(&self.freed);
        }

        let gil = self.gil_before_tick();
        let result = if self.reader.reads_are_cheap() {
            // Reads cost no system call: read each thing when it is needed.
            self.tick_with(self.reader, None, gil, now_ns, registry)
        } else {
            // The regions live in the engine between ticks; taken out for
            // the tick so that the walk can borrow them while the engine
            // changes.
            let mut regions = std::mem::replace(&mut self.regions, RegionCache::new(self.reader));
            self.stats.prefetched_ranges = regions.copy_last_tick() as u64;
            let result = self.tick_with(&regions, Some(&regions), gil, now_ns, registry);
            self.regions = regions;
            result
        };
        result?;
        let tick = self.tick;
        self.since_ns = self.since_ns.max(now_ns);
        let flush = now_ns.saturating_sub(self.flushed_ns) >= FLUSH_EVERY_NS;
        for t in self.threads.values_mut() {
            // The held samples of threads gone; at a flush, those held for
            // a window by a thread that ran meanwhile, and every one held
            // for HOLD_AT_MOST_NS.
            let held = &mut t.held;
            let write = if t.seen_tick != tick {
                true
            } else if !flush || !held.active {
                false
            } else {
                let age = now_ns.saturating_sub(held.since_ns);
                if age < FLUSH_EVERY_NS {
                    false
                } else if age >= HOLD_AT_MOST_NS || t.native_id == 0 {
                    true
                } else if held.waits {
                    // Found waiting: held until HOLD_AT_MOST_NS (or its
                    // stack changes), its clock not read again (a system
                    // call a waiting thread a window).
                    false
                } else {
                    match (self.clocks.thread_cpu_ns(t.native_id), held.cpu_ns) {
                        // Not on a CPU for a window: it waits.
                        (Some(now), Some(then)) if now == then => {
                            held.waits = true;
                            false
                        }
                        // The first look: the next one tells.
                        (Some(now), None) => {
                            held.cpu_ns = Some(now);
                            false
                        }
                        _ => true,
                    }
                }
            };
            if write {
                held.write(&mut self.sink)?;
            }
        }
        self.threads.retain(|_, t| t.seen_tick == tick);
        if flush {
            self.flushed_ns = now_ns;
            self.sink.end_tick()?;
        }
        Ok(())
    }

    /// Who can have run Python code since the last tick, as the GIL of a
    /// process with one interpreter says (with the interpreter's address),
    /// read before anything else of the tick (a prefetched copy of the
    /// threads' memory is then no older than it). `None` when no sample
    /// can be held, or with several interpreters: a thread can then switch
    /// to its thread state of another interpreter without taking the GIL,
    /// and the GIL's last holder is not the thread state that runs.
    fn gil_before_tick(&self) -> Option<(Addr, GilInfo)> {
        if !self.hold_unchanged || self.mode != Mode::Wall || self.native.is_some() {
            return None;
        }
        let target = Target::new(self.reader, self.layout);
        let head = target.interpreters_head(self.runtime).ok()?;
        let interp = target.interpreter(head).ok()?;
        if !interp.next.is_null() {
            return None;
        }
        Some((head, target.gil(self.runtime, &interp).ok()?))
    }

    /// One tick reading through `memory`; `regions` is the prefetch cache
    /// when `memory` is it (to notice reads made past it).
    fn tick_with<M: MemoryReader + ?Sized>(
        &mut self,
        memory: &M,
        regions: Option<&RegionCache<'r, R>>,
        gil: Option<(Addr, GilInfo)>,
        now_ns: u64,
        registry: &RegistryQueue,
    ) -> std::io::Result<()> {
        let target = Target::new(memory, self.layout);
        // Every interpreter's thread states first (newest first, as
        // CPython lists them), then their samples: whether a thread state
        // is where its thread is depends on the others (`hidden`).
        let mut states = std::mem::take(&mut self.tick_states);
        states.clear();
        // The thread id of the GIL's last holder: another thread state of
        // the same thread may have run since without a switch (up to 3.11
        // `PyThreadState_Swap` hands the GIL over as it is). Read at the
        // first thread whose frame is behind its `cframe` (3.11, 3.12).
        let holder_cell = std::cell::OnceCell::new();
        let holder = || {
            *holder_cell.get_or_init(|| {
                gil.and_then(|(_, g)| {
                    target
                        .thread_knowing(g.last_holder, |_, _| Some(Addr::NULL))
                        .ok()
                        .map(|t| t.thread_id)
                })
            })
        };
        for interp in target.interpreters(self.runtime) {
            let interp = match interp {
                Ok(i) => i,
                Err(_) => {
                    self.stats.interpreter_errors += 1;
                    break;
                }
            };
            let gil = gil
                .filter(|(at, _)| *at == interp.addr && interp.next.is_null())
                .map(|(_, g)| g);
            // A thread that has not held the GIL since its last walk is
            // where that walk found it: its frame is not read again (from
            // its `cframe`, on its own stack: a cache line and a page of
            // every waiting thread's, each tick).
            let seen = &self.threads;
            let unmoved = |addr: Addr, thread_id: u64| {
                let g = gil.filter(|g| g.last_holder != addr)?;
                if holder()? == thread_id {
                    return None;
                }
                let per = seen.get(&(addr.0, thread_id))?;
                let walked = per.walked.filter(|w| {
                    per.held.active && w.gil == g.addr.0 && w.switch_number == g.switch_number
                })?;
                Some(Addr(walked.frame))
            };
            let mut threads = target.threads(&interp);
            while let Some(thread) = threads.next_knowing(unmoved) {
                match thread {
                    Ok(thread) => states.push(TickState {
                        iid: interp.id,
                        gil,
                        thread,
                    }),
                    Err(e) => {
                        self.stats.skipped[SkipReason::from(e).index()] += 1;
                        break;
                    }
                }
            }
        }
        let across = self.filter == ThreadFilter::Profile;
        let mut result = Ok(());
        let mut looked_again = false;
        for i in 0..states.len() {
            if hidden(&states, i, across) {
                continue;
            }
            let TickState { iid, gil, thread } = states[i];
            if !looked_again && thread.thread_id != 0 && self.names.get(thread.thread_id).is_none()
            {
                // The names were brought up to date at the tick's start,
                // and the tick may have been held up since: a thread
                // started meanwhile has posted its name (and `threading`'s
                // hooks the code its threads start with) before it ran.
                // Looked at again, once a tick, before it is shown under
                // its kernel id or hidden.
                looked_again = true;
                self.names.refresh(registry);
            }
            match self.sample_thread(memory, regions, iid, &thread, gil, now_ns) {
                Ok(true) => self.stats.samples += 1,
                Ok(false) => {}
                Err(Skip::Reason(r)) => self.stats.skipped[r.index()] += 1,
                Err(Skip::Io(e)) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.tick_states = states;
        result
    }

    /// Samples one thread; `Ok(false)` when the mode says it has nothing to
    /// show (CPU mode, idle thread).
    fn sample_thread<M: MemoryReader + ?Sized>(
        &mut self,
        memory: &M,
        regions: Option<&RegionCache<'r, R>>,
        iid: i64,
        thread: &ThreadInfo,
        gil: Option<GilInfo>,
        now_ns: u64,
    ) -> Result<bool, Skip> {
        let tick = self.tick;
        let interval_ns = self.interval_ns;
        // A thread state with no thread id yet is being created.
        if thread.thread_id == 0 {
            return Ok(false);
        }
        let known = self.names.get(thread.thread_id).is_some();
        let since_ns = now_ns.saturating_sub(interval_ns).max(self.since_ns);
        let named_id = self.names.get(thread.thread_id).map_or(0, |m| m.native_id);
        let (reader, tid_offset) = (self.reader, self.tid_offset);
        let key = (thread.addr.0, thread.thread_id);
        let fresh = self.forked_tid != 0 && !self.threads.contains_key(&key);
        // Its kernel id as the thread state or a hook tells it (0: neither
        // yet).
        let stands_for = self.names.stands_for(thread.thread_id);
        let told_id = stands_for
            .or(thread.native_thread_id.filter(|&t| t != 0))
            .unwrap_or(named_id);
        let per = self.threads.entry(key).or_insert_with(|| PerThread {
            native_id: Some(told_id)
                .filter(|&t| t != 0)
                .or_else(|| tid_offset.and_then(|o| o.tid_of(reader, thread.thread_id)))
                .unwrap_or(0),
            last_ns: since_ns,
            cpu_ns: None,
            active_tick: 0,
            seen_tick: tick,
            captured_tick: 0,
            held: Held::default(),
            walked: None,
        });
        if fresh && per.native_id == self.forked_tid {
            // A forked child's forking thread, first seen: its time since
            // the fork is its own, in this stack (nothing else saw it).
            per.last_ns = self.since_ns.min(per.last_ns);
            per.cpu_ns = Some(0);
            self.forked_tid = 0;
        }
        per.seen_tick = tick;
        if let Some(tid) = stands_for {
            if per.native_id != tid {
                // Seen before it stood for the sampler: its CPU time is
                // the sampler's from now on (counted from the next look).
                per.native_id = tid;
                per.cpu_ns = None;
            }
        }
        if per.native_id == 0 {
            // First seen between the stores of its thread id and its native
            // id (a thread state being made), or before a hook named it:
            // known now.
            per.native_id = told_id;
        }
        // (Not in a dump, which shows every thread at one moment.)
        if self.mode != Mode::Memory && per.native_id != 0 && self.filter == ThreadFilter::Profile {
            if let Some(native) = self.native.as_mut() {
                if native.resting(per.native_id, now_ns, tick) {
                    // Its time (wall or CPU) goes to its next sample; that
                    // sample is still the first since the capture (see
                    // CAPTURE_RESIDUE_US).
                    if per.captured_tick != 0 && per.captured_tick + 1 == tick {
                        per.captured_tick = tick;
                    }
                    return Ok(false);
                }
            }
        }
        let walked = per.walked.take();

        // CPU mode: the thread and its clock as read before any capture.
        let mut cpu_before = None;
        let metric_us = match self.mode {
            // (A memory engine's tick flushes the allocation table instead.)
            Mode::Wall | Mode::Memory => {
                let us = now_ns.saturating_sub(per.last_ns) / 1000;
                per.last_ns += us * 1000;
                us
            }
            Mode::Cpu => {
                let tid = Some(per.native_id)
                    .filter(|&t| t != 0)
                    .ok_or(Skip::Reason(SkipReason::NoNativeId))?;
                let cpu = self
                    .clocks
                    .thread_cpu_ns(tid)
                    .ok_or(Skip::Reason(SkipReason::CpuClock))?;
                let Some(prev) = per.cpu_ns else {
                    // First sight: the baseline. Its CPU time so far was
                    // spent before we could see where.
                    per.cpu_ns = Some(cpu);
                    return Ok(false);
                };
                let delta_us = cpu.saturating_sub(prev) / 1000;
                if delta_us > 0
                    && delta_us <= CAPTURE_RESIDUE_US
                    && per.captured_tick + 1 == tick
                    && !self.clocks.thread_is_running(tid)
                {
                    // The last tick's capture woke it: what it used since
                    // is the way back into its sleep.
                    per.cpu_ns = Some(cpu);
                    per.captured_tick = 0;
                    return Ok(false);
                }
                if delta_us > 0 {
                    per.cpu_ns = Some(prev + delta_us * 1000);
                    per.active_tick = tick;
                } else if tick.saturating_sub(per.active_tick) > RECENTLY_ACTIVE_TICKS
                    || !self.clocks.thread_is_running(tid)
                {
                    // Not running: nothing to show in CPU mode.
                    return Ok(false);
                }
                // Else the thread is on a CPU but its clock has not ticked
                // since the last sample: show where it is; the time follows
                // with the next sample in which the clock moves.
                cpu_before = Some((tid, cpu));
                delta_us
            }
        };

        // A thread that is not the GIL's last holder, while the GIL has not
        // changed hands since the walk that found its held sample, has not
        // run any Python code since: its stack is the held one. One
        // comparison instead of a walk (wall mode, where waiting threads
        // are sampled; without native frames, which move without the GIL;
        // not for event loops and greenlets, whose tasks' stacks are not
        // held).
        // (`gil` is only read without native frames: see gil_before_tick.)
        if let Some(g) = gil {
            let held = &mut per.held;
            if walked == Some(Walked::new(&g, thread.frame))
                && g.last_holder != thread.addr
                && held.active
                && held.iid == iid
                && held.ids.native_id == per.native_id
                && self.names.asyncio().loop_of(thread.thread_id).is_none()
                && !self.names.greenlets().has_thread(thread.thread_id)
                && match self.names.get(thread.thread_id) {
                    Some(meta) => {
                        held.named
                            && (held.names_seen == self.names.generation()
                                || meta.name == held.name)
                    }
                    None => !held.named,
                }
            {
                held.names_seen = self.names.generation();
                held.metric += metric_us as i64;
                per.walked = walked;
                self.stats.unwalked += 1;
                self.tick_stacks += 1;
                return Ok(true);
            }
        }
        let native_id = per.native_id;
        self.stacks.clear();
        self.stack.clear();
        self.stack_addrs.clear();
        let event_loop = self.names.asyncio().loop_of(thread.thread_id);
        let want_addrs = event_loop.is_some();
        let captured = match self.native.as_mut() {
            Some(native) if native_id != 0 && self.mode != Mode::Memory => {
                let target = Target::new(self.reader, self.layout);
                native.capture(&target, &self.cache, thread.addr, native_id, tick, now_ns)
            }
            _ => false,
        };
        if let (true, Some((tid, before))) = (captured, cpu_before) {
            // The capture ran on the thread (its signal handler copied the
            // stack and waited for the walk): CPU time the program did not
            // spend. Move the baseline past it, else the next sample charges
            // it to wherever the thread is (a sleep, say), and a sleeping
            // thread woken by every capture would look busy for ever.
            let per = self.threads.get_mut(&(thread.addr.0, thread.thread_id));
            if let (Some(per), Some(after)) = (per, self.clocks.thread_cpu_ns(tid)) {
                per.cpu_ns = per.cpu_ns.map(|c| c + after.saturating_sub(before));
                per.captured_tick = tick;
            }
        }
        let fresh = regions.map(RegionCache::miss_count);
        if captured {
            self.native_stack()?;
        } else {
            self.walk(memory, thread.frame, want_addrs)?;
        }
        // With direct reads every frame was read live, during the walk.
        let mut rewalked = false;
        let read_live =
            !captured && (regions.is_none() || regions.map(RegionCache::miss_count) != fresh);
        if read_live {
            // Part of the stack was read now and part earlier (at the start
            // of the tick, or at the start of the walk): if the thread moved
            // on in between, the two may not belong together. Check the
            // thread's current frame afresh; if it changed, walk again from
            // it, reading fresh memory only.
            let target = Target::new(self.reader, self.layout);
            let now = target
                .thread(thread.addr)
                .map_err(|e| Skip::Reason(e.into()))?;
            // (At the same address, another call's frame: from 3.11 a
            // frame's memory is the next call's at the same depth, and a
            // thread that returned and called again while the walk read
            // its frames left a walk of two calls' frames. The first frame's
            // code tells most of them apart.)
            let same_call = || {
                now.frame.is_null()
                    || target.frame_code(now.frame).ok().map(|c| c.0) == self.first_code
            };
            if now.frame != thread.frame || !same_call() {
                rewalked = true;
                self.stack.clear();
                self.stack_addrs.clear();
                self.walk(self.reader, now.frame, want_addrs)?;
            }
        }
        // In the main interpreter, a thread that `threading` has not named
        // (yet, or any more) whose outermost frame is `threading`'s own
        // thread bootstrap is a `threading` thread starting or ending: its
        // named samples are the real ones. One with no Python frame at all
        // (whatever its native frames) has nothing to show (a thread state
        // made before its first call).
        // Every other thread state (a `_thread` thread, one a C extension
        // registered) is shown, named by its native id.
        if iid == 0
            && self.filter == ThreadFilter::Profile
            && !known
            && (self.outermost_code == 0 || self.names.hides_outermost(self.outermost_code))
        {
            return Ok(false);
        }
        self.stack.reverse();
        let mut by_task = false;
        if let Some(event_loop) = event_loop {
            self.stack_addrs.reverse();
            let target = Target::new(memory, self.layout);
            let mut interner = StackBuilder {
                cache: &mut self.cache,
                sink: &mut self.sink,
                stack: &mut self.task_buf,
                addrs: None,
                outermost: 0,
                first_code: None,
                tick,
                format: self.format,
            };
            if self
                .tasks
                .read(&target, self.names.asyncio_mut(), tick, &mut interner)
            {
                by_task = self.tasks.stacks(
                    event_loop,
                    &self.stack,
                    &self.stack_addrs,
                    self.mode == Mode::Cpu,
                    &mut self.stacks,
                );
            }
        }
        if !by_task && self.names.greenlets().has_thread(thread.thread_id) {
            by_task = self.greenlet_stacks(memory, thread.thread_id);
        }
        if !by_task {
            self.stacks.push_from(&self.stack);
        }

        let name: &str = match self.names.get(thread.thread_id) {
            Some(meta) => &meta.name,
            None => {
                use std::fmt::Write as _;
                self.name_buf.clear();
                let id = if native_id != 0 {
                    native_id
                } else {
                    thread.thread_id
                };
                let _ = write!(self.name_buf, "Thread-{id}");
                &self.name_buf
            }
        };
        let ids = ThreadIds {
            thread_id: thread.thread_id,
            native_id,
        };
        self.tick_stacks += self.stacks.len() as u64;
        let named = self.names.get(thread.thread_id).is_some();
        if let Some(per) = self.threads.get_mut(&(thread.addr.0, thread.thread_id)) {
            let held = &mut per.held;
            let one = (self.stacks.len() == 1 && !by_task)
                .then(|| self.stacks.iter().next())
                .flatten();
            match one {
                Some(stack) if self.hold_unchanged => {
                    if held.active
                        && held.iid == iid
                        && held.ids == ids
                        && held.name == name
                        && held.stack == stack
                    {
                        held.metric += metric_us as i64;
                    } else {
                        held.write(&mut self.sink).map_err(Skip::Io)?;
                        held.active = true;
                        held.iid = iid;
                        held.ids = ids;
                        held.name.clear();
                        held.name.push_str(name);
                        held.stack.clear();
                        held.stack.extend_from_slice(stack);
                        held.metric = metric_us as i64;
                        held.since_ns = now_ns;
                        held.cpu_ns = None;
                        held.waits = false;
                    }
                    held.names_seen = self.names.generation();
                    if gil.is_some_and(|g| g.last_holder == thread.addr) {
                        // It ran Python code: its clock is looked at
                        // again (written within a window or two if it
                        // runs on).
                        held.waits = false;
                    }
                    held.named = named;
                    // Taken from the frame the tick found (a walk that had
                    // to start again from a newer one is not).
                    per.walked = gil
                        .filter(|_| !rewalked)
                        .map(|g| Walked::new(&g, thread.frame));
                    return Ok(true);
                }
                // Written as they come, after what was held (in order).
                _ => held.write(&mut self.sink).map_err(Skip::Io)?,
            }
        }
        for (stack, &weight) in self.stacks.iter().zip(self.stacks.weights()) {
            let metric = if weight == 1.0 {
                metric_us as i64
            } else {
                (metric_us as f64 * f64::from(weight)).round() as i64
            };
            self.sink
                .sample(
                    ids,
                    &SampleRef {
                        iid,
                        thread: name,
                        stack,
                        metrics: &[Metric::Time(metric)],
                        gc: false,
                        idle: false,
                    },
                )
                .map_err(Skip::Io)?;
        }
        Ok(true)
    }

    /// The stacks of a thread that has greenlets (see [`crate::greenlets`])
    /// into `self.stacks`, `self.stack` being the thread's own (outermost
    /// first); `false` when there is none to show. A greenlet whose frames
    /// cannot be read leaves its stacks out.
    fn greenlet_stacks<M: MemoryReader + ?Sized>(&mut self, memory: &M, thread_id: u64) -> bool {
        let mut chains = std::mem::take(&mut self.greenlet_chains);
        let mut ends = std::mem::take(&mut self.greenlet_ends);
        let mut walked = std::mem::take(&mut self.greenlet_walk);
        let mut buf = std::mem::take(&mut self.task_buf);
        self.names
            .greenlets()
            .chains(thread_id, self.mode == Mode::Cpu, &mut chains, &mut ends);
        let target = Target::new(memory, self.layout);
        let mut start = 0;
        let mut any = false;
        for &end in &ends {
            buf.clear();
            let mut whole = true;
            for &id in &chains[start..end] {
                let Some(g) = self.names.greenlets_mut().greenlets.get_mut(&id) else {
                    whole = false;
                    break;
                };
                let name = match g.name_frame {
                    Some(f) => f,
                    None => {
                        let f = self.sink.intern_frame(&FrameSpec {
                            filename: "",
                            scope: &g.name,
                            line: 0,
                            line_end: 0,
                            column: 0,
                            column_end: 0,
                        });
                        g.name_frame = Some(f);
                        f
                    }
                };
                let frame = g.frame;
                buf.push(StackEntry::Frame(name));
                match frame {
                    GreenletFrame::Running => buf.extend_from_slice(&self.stack),
                    GreenletFrame::NotSet => {}
                    GreenletFrame::At(object) => {
                        walked.clear();
                        let mut builder = StackBuilder {
                            cache: &mut self.cache,
                            sink: &mut self.sink,
                            stack: &mut walked,
                            addrs: None,
                            outermost: 0,
                            first_code: None,
                            tick: self.tick,
                            format: self.format,
                        };
                        let read = target
                            .frame_of_object(Addr(object))
                            .map_err(Skip::from)
                            .and_then(|f| target.walk(f, &mut builder).map(drop));
                        if read.is_err() {
                            whole = false;
                            break;
                        }
                        buf.extend(walked.iter().rev());
                    }
                }
            }
            start = end;
            if whole {
                self.stacks.push_from(&buf);
                any = true;
            }
        }
        self.greenlet_chains = chains;
        self.greenlet_ends = ends;
        self.greenlet_walk = walked;
        self.task_buf = buf;
        any
    }

    /// The stack of the thread just captured into `self.stack` (innermost
    /// first, with every frame's address in `self.stack_addrs`, 0 for
    /// native frames): its Python frames decoded and interned, its native
    /// frames between them.
    fn native_stack(&mut self) -> Result<(), Skip> {
        let Some(native) = self.native.as_mut() else {
            return Ok(());
        };
        self.py_ids.clear();
        self.py_addrs.clear();
        let target = Target::new(self.reader, self.layout);
        let mut builder = StackBuilder {
            cache: &mut self.cache,
            sink: &mut self.sink,
            stack: &mut self.py_ids,
            addrs: Some(&mut self.py_addrs),
            outermost: 0,
            first_code: None,
            tick: self.tick,
            format: self.format,
        };
        for info in native.raw() {
            FrameVisitor::frame(&mut builder, &target, info)?;
        }
        self.outermost_code = builder.outermost;
        let per_frame = matches!(self.layout.frame, FrameLayout::Object(_));
        crate::native::groups(native.raw(), per_frame, &mut self.py_groups);
        let (sink, stack, addrs) = (&mut self.sink, &mut self.stack, &mut self.stack_addrs);
        let (py_ids, py_addrs) = (&self.py_ids, &self.py_addrs);
        native.interleave(
            &self.py_groups,
            |spec| sink.intern_frame(spec),
            |entry| match entry {
                Ok(i) => {
                    stack.push(py_ids[i]);
                    addrs.push(py_addrs[i]);
                }
                Err(id) => {
                    stack.push(StackEntry::Frame(id));
                    addrs.push(0);
                }
            },
        );
        Ok(())
    }

    /// Walks the stack from `frame` outwards into `self.stack` (innermost
    /// first), decoding and interning frames not seen before; with
    /// `addrs`, the frames' addresses go to `self.stack_addrs`.
    fn walk<M: MemoryReader + ?Sized>(
        &mut self,
        memory: &M,
        frame: Addr,
        addrs: bool,
    ) -> Result<(), Skip> {
        let mut builder = StackBuilder {
            cache: &mut self.cache,
            sink: &mut self.sink,
            stack: &mut self.stack,
            addrs: addrs.then_some(&mut self.stack_addrs),
            outermost: 0,
            first_code: None,
            tick: self.tick,
            format: self.format,
        };
        let result = Target::new(memory, self.layout).walk(frame, &mut builder);
        self.outermost_code = builder.outermost;
        self.first_code = builder.first_code;
        result.map(drop)
    }
}

/// The frame visitor of a tick: turns each Python frame of a walk into the
/// id of its interned frame, pushed onto `stack` (innermost first).
struct StackBuilder<'e, S: Sink> {
    cache: &'e mut FrameCache,
    sink: &'e mut S,
    stack: &'e mut Vec<StackEntry>,
    /// Where each frame's address goes, if anywhere.
    addrs: Option<&'e mut Vec<u64>>,
    /// The code object of the outermost Python frame so far.
    outermost: u64,
    /// The code object field of the first frame visited (any kind).
    first_code: Option<u64>,
    tick: u64,
    format: TableFormat,
}

impl<R: MemoryReader + ?Sized, S: Sink> FrameVisitor<R> for StackBuilder<'_, S> {
    type Error = Skip;

    fn first_traceable(&mut self, target: &Target<'_, R>, code: Addr) -> Result<i32, ViewError> {
        self.cache
            .first_traceable(code.0, || target.code_firsttraceable(code))
    }

    fn frame(&mut self, target: &Target<'_, R>, info: &FrameInfo) -> Result<(), Skip> {
        if self.first_code.is_none() {
            self.first_code = Some(info.code.0);
        }
        if !info.is_python() {
            return Ok(());
        }
        self.outermost = info.code.0;
        let offset = info.offset.unwrap_or(u32::MAX);
        let id = match self.cache.frame(info.code.0, offset, self.tick) {
            Some(id) => id,
            None => self.decode_frame(target, info.code, info.offset)?,
        };
        self.stack.push(StackEntry::Frame(id));
        if let Some(addrs) = self.addrs.as_deref_mut() {
            addrs.push(info.addr.0);
        }
        Ok(())
    }
}

impl<R: MemoryReader + ?Sized, S: Sink> FrameInterner<R> for StackBuilder<'_, S> {
    fn intern(&mut self, target: &Target<'_, R>, info: &FrameInfo) -> Result<FrameId, ViewError> {
        let offset = info.offset.unwrap_or(u32::MAX);
        match self.cache.frame(info.code.0, offset, self.tick) {
            Some(id) => Ok(id),
            None => self.decode_frame(target, info.code, info.offset),
        }
    }

    fn first_traceable(&mut self, target: &Target<'_, R>, code: Addr) -> Result<i32, ViewError> {
        self.cache
            .first_traceable(code.0, || target.code_firsttraceable(code))
    }

    fn intern_spec(&mut self, spec: &FrameSpec<'_>) -> FrameId {
        self.sink.intern_frame(spec)
    }
}

impl<S: Sink> StackBuilder<'_, S> {
    /// Decodes the frame at `offset` of the code object at `code`, interns
    /// it and caches it.
    fn decode_frame<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        code: Addr,
        offset: Option<u32>,
    ) -> Result<FrameId, ViewError> {
        let tick = self.tick;
        if self.cache.code(code.0, tick).is_none() {
            let c = target.code_source(code)?;
            self.cache.insert_code(
                code.0,
                CodeEntry::new(c.filename, c.scope, c.firstlineno, c.linetable),
                tick,
            );
        }
        let entry = self
            .cache
            .code(code.0, tick)
            .ok_or(ViewError::Mem(MemError::Null))?;
        let at = linetable::position(self.format, &entry.linetable, entry.firstlineno, offset);
        let spec = FrameSpec {
            filename: &entry.filename,
            scope: &entry.scope,
            line: at.line,
            line_end: at.line_end,
            column: at.column,
            column_end: at.column_end,
        };
        let id = self.sink.intern_frame(&spec);
        self.cache
            .insert_frame(code.0, offset.unwrap_or(u32::MAX), id, tick);
        Ok(id)
    }
}

/// The stacks one thread yields in one sample, outermost frame first, each
/// written as a sample of its own with the thread's metric times its weight.
/// A plain thread yields one; a thread running an asyncio loop yields one
/// per task (the task's frames on top of the loop's), which is why this is
/// a set. Buffers are kept between samples, so a warm sampler does not
/// allocate here.
#[derive(Debug, Default)]
pub struct StackSet {
    /// Every stack's entries, one after the other.
    entries: Vec<StackEntry>,
    /// Where each stack ends in `entries`.
    ends: Vec<u32>,
    /// Each stack's weight: how many samples' worth of the metric it
    /// carries (1, or more for a task read once for several ticks; see
    /// [`crate::tasks`]).
    weights: Vec<f32>,
}

impl StackSet {
    /// Empties the set (keeping its buffers).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
        self.weights.clear();
    }

    /// Adds a stack, copied from `frames`.
    pub fn push_from(&mut self, frames: &[StackEntry]) {
        self.entries.extend_from_slice(frames);
        self.close();
    }

    /// The stack being built: entries pushed here since the last
    /// [`StackSet::close`] (or [`StackSet::push_from`]) make the next stack.
    pub(crate) fn open(&mut self) -> &mut Vec<StackEntry> {
        &mut self.entries
    }

    /// Ends the stack being built.
    pub(crate) fn close(&mut self) {
        self.close_weighted(1.0);
    }

    /// Ends the stack being built, which carries `weight` samples' worth of
    /// the metric.
    pub(crate) fn close_weighted(&mut self, weight: f32) {
        self.ends.push(self.entries.len() as u32);
        self.weights.push(weight);
    }

    /// Each stack's weight, in the order of [`StackSet::iter`].
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The stacks, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &[StackEntry]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let stack = &self.entries[start as usize..end as usize];
            start = end;
            stack
        })
    }

    /// How many stacks the set holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the set holds no stack.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

enum Skip {
    Reason(SkipReason),
    Io(std::io::Error),
}

impl From<ViewError> for Skip {
    fn from(e: ViewError) -> Self {
        Skip::Reason(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_mojo::{FrameSpec, MojoWriter};

    #[test]
    fn stack_set_reuses_its_buffers() {
        let mut w = MojoWriter::new(Vec::new(), 1).expect("vec");
        let f = |w: &mut MojoWriter<Vec<u8>>, s| {
            StackEntry::Frame(w.intern_frame(&FrameSpec {
                filename: "a.py",
                scope: s,
                line: 1,
                line_end: 1,
                column: 0,
                column_end: 0,
            }))
        };
        let (a, b) = (f(&mut w, "a"), f(&mut w, "b"));
        let mut set = StackSet::default();
        assert!(set.is_empty());
        set.push_from(&[a, b]);
        set.push_from(&[a]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![&[a, b][..], &[a][..]]);
        set.clear();
        set.push_from(&[b]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![&[b][..]]);
        assert!(set.entries.capacity() >= 3, "buffers kept");
        // A stack built in place.
        set.open().extend_from_slice(&[a, a]);
        set.close();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![&[b][..], &[a, a][..]]);
    }

    #[test]
    fn a_thread_state_is_sampled_only_where_its_thread_is() {
        let state = |iid: i64, addr: u64, thread_id: u64, frame: u64| TickState {
            iid,
            gil: None,
            thread: ThreadInfo {
                addr: Addr(addr),
                next: Addr::NULL,
                interp: Addr(1),
                thread_id,
                native_thread_id: None,
                frame: Addr(frame),
            },
        };
        let shown = |states: &[TickState], across: bool| -> Vec<u64> {
            (0..states.len())
                .filter(|&i| !hidden(states, i, across))
                .map(|i| states[i].thread.addr.0)
                .collect()
        };
        // Newest first: a state made by the thread 7 for a new one, then
        // the creator's own (in a call), then another thread's.
        let made = [
            state(0, 30, 7, 0),
            state(0, 20, 7, 0x500),
            state(0, 10, 9, 0x600),
        ];
        assert_eq!(shown(&made, true), [20, 10]);
        assert_eq!(shown(&made, false), [20, 10]);
        // Once started it has its own id: both are shown.
        assert_eq!(
            shown(&[state(0, 30, 8, 0), state(0, 20, 7, 0x500)], true),
            [30, 20]
        );
        // Its creator with no frame either: the creator stays.
        assert_eq!(shown(&[state(0, 30, 7, 0), state(0, 20, 7, 0)], true), [20]);
        // A lone thread state with no frame (a C thread's) stays.
        assert_eq!(shown(&[state(0, 40, 5, 0)], true), [40]);
        assert!(shown(&[], true).is_empty());
        // A thread that runs code in interpreter 1 and has a thread state
        // with no frame in interpreter 2: its time is interpreter 1's
        // (where mode shows both); with no frame anywhere, both stay.
        let sub = [
            state(2, 50, 7, 0),
            state(1, 60, 7, 0x700),
            state(0, 70, 9, 0x800),
        ];
        assert_eq!(shown(&sub, true), [60, 70]);
        assert_eq!(shown(&sub, false), [50, 60, 70]);
        assert_eq!(
            shown(&[state(2, 50, 7, 0), state(1, 60, 7, 0)], true),
            [50, 60]
        );
    }

    #[test]
    fn skip_reasons_map_view_errors() {
        assert_eq!(SkipReason::from(ViewError::TooDeep), SkipReason::TooDeep);
        assert_eq!(
            SkipReason::from(ViewError::Mem(MemError::Null)),
            SkipReason::Memory
        );
        assert_eq!(SkipReason::from(ViewError::BadString), SkipReason::Invalid);
        let names: Vec<_> = SkipReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            ["memory", "too_deep", "invalid", "no_native_id", "cpu_clock"]
        );
    }
}
