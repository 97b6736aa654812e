//! The sampling loop: set up from the running process, tick at absolute
//! deadlines until told to stop, close the profile with its counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use echion_cpython_layout::process::{self, ProcessError};
use echion_cpython_layout::reader::AttachError;
use echion_cpython_layout::{Addr, Layout, PyVersion};
use echion_mojo::{MojoWriter, Version, WriterOptions};

use crate::clock;
use crate::codewatch::FREED_CODES;
use crate::engine::{Engine, Mode, SkipReason, Stats};
use crate::mem::guarded::{self, GuardedReader};
use crate::output::{Output, OutputError};
use crate::pthread::TidOffset;
use crate::registry::RegistryQueue;
use crate::session::{Session, SessionError};

/// How the sampler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Time between two ticks.
    pub interval: Duration,
    /// Wall or CPU time.
    pub mode: Mode,
    /// Stop sampling after this long (the program goes on).
    pub exposure: Option<Duration>,
    /// The address of `_PyRuntime`, when the caller knows it (in-process:
    /// `dlsym`); saves reading the interpreter's symbol tables.
    pub runtime: Option<u64>,
    /// The profile to write, `%(pid)` replaced by this process's pid; if
    /// another process has that name, a name derived from it (see
    /// [`crate::output`]).
    pub output: PathBuf,
    /// MOJO version of the output (v3 unless asked).
    pub mojo_version: Version,
    /// The interpreter's version as it reports it (`sys.version_info`), when
    /// the caller knows it: memory alone does not give the micro version of
    /// 3.8-3.10. Must agree with what memory says on major and minor.
    pub python: Option<PyVersion>,
    /// Read memory with fault-guarded loads (see [`crate::mem::guarded`])
    /// rather than one `process_vm_readv` per tick. On by default.
    pub direct_reads: bool,
    /// Native stacks interleaved with the Python frames (wall and CPU
    /// mode; see [`crate::native`]).
    pub native: bool,
    /// The output is another format, converted at the end: samples go to
    /// a MOJO file beside it (its name plus `.mojo`), and the output, taken
    /// for this process as a MOJO file would be, stays empty and locked
    /// until then ([`Summary::target`]). A process killed before the end
    /// leaves the MOJO file to convert.
    pub sidecar: bool,
    /// A forked child's run that starts a while after the fork (monotonic
    /// ns of the fork, [`crate::clock::now_ns`]): sampling counts from
    /// there, and the forking thread's first sample holds its wall or CPU
    /// time since the fork (see [`crate::Engine::start_after_fork`]).
    pub forked_at_ns: Option<u64>,
    /// The ticks run in a timer signal's handler on a thread of the
    /// program, not on a thread of their own (the profile says so in its
    /// first metadata, `ticker: signal`).
    pub no_thread: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: crate::options::DEFAULT_INTERVAL,
            mode: Mode::Wall,
            exposure: None,
            runtime: None,
            output: PathBuf::from(crate::options::DEFAULT_OUTPUT),
            mojo_version: Version::V3,
            python: None,
            direct_reads: true,
            native: false,
            sidecar: false,
            forked_at_ns: None,
            no_thread: false,
        }
    }
}

/// Why sampling could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// This process's memory cannot be read.
    #[error("cannot read this process's memory: {0}")]
    Attach(#[from] AttachError),
    /// The interpreter could not be found or is not supported.
    #[error("{0}")]
    Process(#[from] ProcessError),
    /// Native stacks were asked for and cannot be sampled.
    #[error("native stacks: {0}")]
    Native(#[from] crate::native::NativeError),
    /// The profile cannot be created.
    #[error("{0}")]
    Output(#[from] OutputError),
    /// The profile was removed while it was written (its directory, say):
    /// what was written is gone.
    #[error("the profile {0} was removed during the run (was its directory deleted?): nothing was saved")]
    Removed(PathBuf),
    /// Writing the profile failed (disk full, say).
    #[error("cannot write the profile {path}: {source}{}", if *.kept {
        "; sampling stopped there, the profile holds the samples written until then and says so"
    } else {
        ""
    })]
    Write {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
        /// Whether the profile was cut back to its last whole event and
        /// ends with the run's metadata and the error (`write_error`).
        kept: bool,
    },
    /// The interpreter found in memory is not the one the caller runs in.
    #[error("the interpreter in memory is CPython {found}, but this is CPython {running}")]
    VersionMismatch {
        /// What memory says.
        found: PyVersion,
        /// What the caller says.
        running: PyVersion,
    },
    /// The session could not be set up (the line tables of this version
    /// are not known).
    #[error("{0}")]
    Session(#[from] SessionError),
}

/// Set by [`note_out_of_memory`]: the size of the allocation that failed
/// (0: none did).
static OUT_OF_MEMORY: AtomicUsize = AtomicUsize::new(0);

/// Tells the running loop that one of echion's allocations failed (the
/// process reached its memory limit) and went through only on a reserve
/// kept for that: the loop ends sampling at its next tick, closes the
/// profile as usual with `out_of_memory` in its metadata, and
/// [`Summary::out_of_memory`] says so. Only stores to an atomic, so an
/// allocator may call it.
pub fn note_out_of_memory(size: usize) {
    OUT_OF_MEMORY.store(size.max(1), Ordering::Relaxed);
}

/// Set by [`request_dump`], taken by the loop.
static DUMP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the running loop to print the stacks of every thread on stderr, as
/// where mode does, at its next tick (within 50 ms): what `SIGQUIT` does
/// under echion. Only stores to an atomic, so a signal handler may call it.
pub fn request_dump() {
    DUMP_REQUESTED.store(true, Ordering::Release);
}

/// Prints where every thread of the session's process is, on stderr (with
/// colours on a terminal). The profile is not touched: the dump has an
/// engine and a sink of its own.
fn dump_to_stderr<R: echion_cpython_layout::MemoryReader>(session: &Session<R>, native: bool) {
    use std::io::{IsTerminal, Write};
    let stderr = std::io::stderr();
    let colour = stderr.is_terminal();
    // With native stacks, the dump shows them too (its own captures).
    let native = native
        .then(crate::native::NativeStacks::new)
        .and_then(Result::ok);
    let dump = session.dump_with(native);
    let mut err = stderr.lock();
    match dump {
        Ok(dump) => {
            let _ = dump.render_text(&mut err, colour);
        }
        Err(e) => {
            let _ = writeln!(err, "echion: cannot show the stacks: {e}");
        }
    }
    let _ = err.flush();
}

/// What the loop shares with the threads that drive it.
#[derive(Debug, Default)]
pub struct Control {
    /// Thread names and ids posted by the `threading` hooks.
    pub registry: RegistryQueue,
    stop: AtomicBool,
    /// Set once the first tick is done, or the run failed to start.
    started: Mutex<bool>,
    started_cv: Condvar,
    /// Set once the profile is opened (on disk with its header, or ready to
    /// be made whole at the first flush: [`open_deferred`]) or the run
    /// failed to start: from then on the process may end at any moment and
    /// leave a readable profile (or, deferred, none).
    opened: AtomicBool,
    /// What the loop sleeps on, while it runs: a stop wakes it from its
    /// sleep instead of waiting for the next tick (up to an interval at
    /// the program's exit; 50 ms with `-i 1s`).
    sleeper: Mutex<Option<Arc<Nap>>>,
}

/// The loop's sleep: a stop sets `woken` and wakes it.
///
/// Made by the loop's thread when its run starts, so in the memory where
/// the run's data is (see [`run_opened_in`]): each nap reads its word,
/// which is then not on a page a fork made shared, as the thread's own
/// parker (`thread::park_timeout`) was, made by the thread that spawned
/// it; and the futex calls write no `errno` ([`guarded::futex_wait`]).
#[derive(Debug, Default)]
struct Nap {
    /// 1 once a stop woke the nap.
    woken: AtomicU32,
}

impl Nap {
    /// Sleeps until the monotonic clock reads `deadline_ns` (`now_ns` is
    /// now), or until [`Control::request_stop`] wakes it; may return early
    /// (the caller looks at the clock again).
    fn sleep(&self, now_ns: u64, deadline_ns: u64) {
        if self.woken.load(Ordering::Acquire) == 0 {
            guarded::futex_wait(&self.woken, 0, deadline_ns.saturating_sub(now_ns));
        }
    }

    /// Ends the nap under way and every later one.
    fn wake(&self) {
        self.woken.store(1, Ordering::Release);
        guarded::futex_wake(&self.woken);
    }
}

impl Control {
    /// A fresh control block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the loop to stop after the current tick.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let sleeper = self.sleeper.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(nap) = sleeper.as_ref() {
            nap.wake();
        }
    }

    /// Makes the sleep a stop wakes the loop from ([`Control::nap`]), on the
    /// loop's thread (`Some`), or takes it away (`None`).
    fn set_sleeper(&self, nap: Option<Arc<Nap>>) {
        *self.sleeper.lock().unwrap_or_else(|e| e.into_inner()) = nap;
    }

    /// Whether stopping was asked.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Makes the control's run not started nor opened yet, for a run that
    /// starts now: a forked child's control is its parent's, copied by the
    /// fork with the parent's run started.
    pub fn begin(&self) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        *started = false;
        self.opened.store(false, Ordering::Release);
    }

    /// Marks the run as started (its first tick is written) or as having
    /// failed to start: either way, nobody needs to wait any longer.
    pub fn mark_started(&self) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        *started = true;
        self.started_cv.notify_all();
    }

    /// Marks the profile as opened (see [`Control::wait_opened`]).
    pub fn mark_opened(&self) {
        let _started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        self.opened.store(true, Ordering::Release);
        self.started_cv.notify_all();
    }

    /// Waits until the profile is opened (or the run has started, or
    /// failed to), at most `timeout`; returns whether it is. A forked
    /// child waits for this, not for the first tick: a child that ends
    /// right after leaves a readable profile or none, never an empty file.
    pub fn wait_opened(&self, timeout: Duration) -> bool {
        self.wait(timeout, true)
    }

    /// Waits until the run has taken its first tick (or failed to start),
    /// at most `timeout`. Returns whether it did. The program's start is
    /// then in the profile, instead of running unobserved while the sampler
    /// sets itself up.
    pub fn wait_started(&self, timeout: Duration) -> bool {
        self.wait(timeout, false)
    }

    /// Waits until the run has started (or failed to), or, with `opened`,
    /// until its profile is on disk too; returns whether that came.
    fn wait(&self, timeout: Duration, opened: bool) -> bool {
        let done = |started: bool| started || (opened && self.opened.load(Ordering::Acquire));
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let (started, _) = self
            .started_cv
            .wait_timeout_while(started, timeout, |s| !done(*s))
            .unwrap_or_else(|e| e.into_inner());
        done(*started)
    }
}

/// Marks the control started when dropped: `run` may return early on any
/// error, and a waiter must not wait for a tick that will never come.
struct StartGuard<'a>(&'a Control);

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.0.mark_started();
    }
}

/// What a finished run did.
#[derive(Debug)]
pub struct Summary {
    /// The counters.
    pub stats: Stats,
    /// Microseconds from the first tick to the end.
    pub duration_us: u64,
    /// Ticks that started more than one interval late.
    pub late_ticks: u64,
    /// The file written (the MOJO file beside the output with
    /// [`Config::sidecar`]).
    pub output: PathBuf,
    /// With [`Config::sidecar`]: the output, still empty and locked, for
    /// the conversion to write.
    pub target: Option<Output>,
    /// Sampling stopped early because an allocation of this many bytes
    /// failed (see [`note_out_of_memory`]): the profile is whole, but
    /// shorter than the run, and nothing more should be allocated for it
    /// (no conversion).
    pub out_of_memory: Option<usize>,
}

/// The longest single sleep, whatever the interval: a dump asked by
/// `SIGQUIT`, the end of the exposure time and a failed allocation are
/// noticed at least this often (a stop wakes the loop at once).
const MAX_NAP_NS: u64 = 50_000_000;

/// A profile opened before its run: the file with its header on disk (or,
/// from [`open_deferred`], in memory until the first flush), and with
/// [`Config::sidecar`] the output the conversion writes at the end.
/// [`open`] makes it on the thread that asks, [`open_deferred`] only gets it
/// ready there (a forked child goes on at once, without waiting for a
/// sampler thread to be scheduled); [`run_opened`] samples into it.
#[derive(Debug)]
pub struct Opened {
    writer: MojoWriter<Output>,
    target: Option<Output>,
}

/// Opens the profile of `config` for this process, running `version`
/// (see [`Opened`]; the version [`run_opened`] finds must be the same:
/// `config.python` when set).
pub fn open(config: &Config, version: PyVersion) -> Result<Opened, SamplerError> {
    let pid = std::process::id();
    // Made by the flush below, with the header in it: a process killed in
    // between leaves no empty file.
    let mut file = if config.sidecar {
        Output::open(&config.output, pid)?
    } else {
        Output::at_first_write(&config.output, pid)
    };
    let mut target = None;
    if config.sidecar {
        let mojo = sidecar_path(file.path());
        let sidecar = Output::create_beside(&mojo)?;
        target = Some(std::mem::replace(&mut file, sidecar));
    }
    let mut opened = with_header(file, target, config, version);
    // On disk at once: a process killed before its first tick's flush (a
    // pool's worker ended by SIGTERM, a child killed at birth) leaves a
    // readable profile with no sample instead of an empty file.
    opened
        .writer
        .flush()
        .map_err(|e| write_error(opened.writer.get_ref().path(), e, false))?;
    Ok(opened)
}

/// [`open`] with nothing done on disk: the file is made (by the rule of
/// [`Output::open`]) when the run first writes, at its first flush (10 ms)
/// or its end, whichever comes first. For a forked child: one that ends by
/// `os._exit` or a signal before then leaves no file (where [`open`]'s
/// would hold a header and no sample), and a fork costs no file made.
/// With [`Config::sidecar`], the same as [`open`] (the conversion needs
/// its output held from the start).
pub fn open_deferred(config: &Config, version: PyVersion) -> Result<Opened, SamplerError> {
    if config.sidecar {
        return open(config, version);
    }
    let file = Output::deferred(&config.output, std::process::id());
    Ok(with_header(file, None, config, version))
}

/// A writer into `file` with the run's first metadata buffered.
fn with_header(
    file: Output,
    target: Option<Output>,
    config: &Config,
    version: PyVersion,
) -> Opened {
    let mut writer = MojoWriter::with_options(
        file,
        i64::from(std::process::id()),
        WriterOptions {
            version: config.mojo_version,
        },
    )
    .expect("a new writer only buffers");
    // Buffered: no write can fail here (the writer hands the file whole
    // events, 64 KiB at a time).
    let ticker = config.no_thread.then(|| ("ticker", "signal".to_owned()));
    for (key, value) in [
        ("mode", config.mode.name().to_owned()),
        ("interval", (interval_ns(config) / 1000).to_string()),
        ("sampler", "echion".to_owned()),
        ("python", version.to_string()),
    ]
    .into_iter()
    .chain(ticker)
    {
        writer
            .metadata(key, &value)
            .expect("metadata below the flush size is buffered");
    }
    Opened { writer, target }
}

/// The error of a write to the profile at `path`: the open's own when a
/// deferred output could not be made ([`Output::deferred`]).
fn write_error(path: &std::path::Path, source: std::io::Error, kept: bool) -> SamplerError {
    match source.downcast::<OutputError>() {
        Ok(open) => SamplerError::Output(open),
        Err(source) => SamplerError::Write {
            path: path.to_path_buf(),
            source,
            kept,
        },
    }
}

/// The sampling interval of `config` in nanoseconds (at least 1 µs).
pub fn interval_ns(config: &Config) -> u64 {
    u64::try_from(config.interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1000)
}

/// Samples this process until `control` asks to stop or the exposure time
/// is over, writing the profile of `config`. Blocks the calling thread,
/// which must not hold the GIL.
pub fn run(config: &Config, control: &Control) -> Result<Summary, SamplerError> {
    run_opened(config, control, None)
}

/// [`run`] into a profile [`open`] made (`Some`: its result, an error
/// ending the run as if `run` had met it), or into one it opens itself
/// (`None`).
pub fn run_opened(
    config: &Config,
    control: &Control,
    opened: Option<Result<Opened, SamplerError>>,
) -> Result<Summary, SamplerError> {
    run_opened_in(config, control, opened, &|_| {})
}

/// [`run_opened`], telling `heap` when what the run makes starts
/// (`heap(true)`, once the profile is open) and when its sampling is over
/// (`heap(false)`, before the profile is closed, however the run ends):
/// an embedder that allocates the run's data apart (echion's module, in
/// memory a forked child gets empty) knows what to keep where.
pub fn run_opened_in(
    config: &Config,
    control: &Control,
    opened: Option<Result<Opened, SamplerError>>,
    heap: &dyn Fn(bool),
) -> Result<Summary, SamplerError> {
    /// Tells `heap` the run's sampling is over, when dropped.
    struct Scope<'a>(&'a dyn Fn(bool));
    impl Drop for Scope<'_> {
        fn drop(&mut self) {
            (self.0)(false);
        }
    }
    let started = StartGuard(control);
    // Sampling starts now (or at the fork of a child whose run starts
    // later): no thread's first sample counts from before.
    let origin_ns = config.forked_at_ns.unwrap_or_else(clock::now_ns);
    guarded::prepare_thread();
    let reader = reader_for(config)?;
    let (session, opened) = prepare(config, &reader, opened)?;
    control.mark_opened();
    heap(true);
    let scope = Scope(heap);
    let mut ticking = Ticking::new(config, &session, opened, origin_ns, true)?;

    clock::minimise_timer_slack();
    let interval_ns = interval_ns(config);
    let mut next = clock::now_ns();
    let nap = Arc::new(Nap::default());
    control.set_sleeper(Some(nap.clone()));
    while !control.stop_requested() {
        if !ticking.tick(clock::now_ns(), &control.registry) {
            break;
        }
        if ticking.ticks() == 1 {
            started.0.mark_started();
        }
        next += interval_ns;
        let after = clock::now_ns();
        if after > next + interval_ns {
            // More than a whole interval behind (a long tick, or the
            // machine did not run us): start again from now rather than
            // firing a burst of ticks to catch up.
            ticking.note_late();
            next = after;
        }
        while !control.stop_requested() {
            // A plain load first: no locked instruction in a tick that has
            // no dump to print. Looked at after every nap: within 50 ms at
            // any interval.
            if DUMP_REQUESTED.load(Ordering::Relaxed)
                && DUMP_REQUESTED.swap(false, Ordering::AcqRel)
            {
                dump_to_stderr(&session, config.native);
            }
            let now = clock::now_ns();
            if now >= next {
                break;
            }
            nap.sleep(now, next.min(now + MAX_NAP_NS));
        }
    }
    control.set_sleeper(None);
    drop(scope);
    ticking.finish(&control.registry)
}

/// The reader a run of `config` reads this process's memory with.
pub fn reader_for(config: &Config) -> Result<GuardedReader, SamplerError> {
    Ok(if config.direct_reads {
        GuardedReader::new()?
    } else {
        GuardedReader::syscalls_only()?
    })
}

/// Finds the interpreter of this process through `reader` (or checks the
/// one `config` names) and opens the profile unless `opened` holds it: the
/// session and the profile a [`Ticking`] samples with.
pub fn prepare<'r>(
    config: &Config,
    reader: &'r GuardedReader,
    opened: Option<Result<Opened, SamplerError>>,
) -> Result<(Session<&'r GuardedReader>, Opened), SamplerError> {
    OUT_OF_MEMORY.store(0, Ordering::Relaxed);
    let pid = std::process::id();
    let opened = opened.transpose()?;
    let (runtime, layout, version) = match (config.runtime, config.python) {
        // In-process the caller knows both: no symbol tables to read.
        (Some(runtime), Some(version)) => {
            let layout = Layout::for_version(version).map_err(ProcessError::from)?;
            let runtime = Addr(runtime);
            process::check_runtime(reader, runtime, layout)?;
            (runtime, layout, version)
        }
        _ => {
            let python = process::find_python(pid, reader)?;
            let version = match config.python {
                Some(running) if running.minor_pair() != python.version.minor_pair() => {
                    return Err(SamplerError::VersionMismatch {
                        found: python.version,
                        running,
                    })
                }
                Some(running) => running,
                None => python.version,
            };
            (python.runtime, python.layout, version)
        }
    };
    let opened = match opened {
        Some(o) => o,
        None => open(config, version)?,
    };
    let mut session = Session::new(reader, pid, runtime, layout, version);
    if layout.thread.native_thread_id.is_none() {
        // Before 3.11 only glibc knows the kernel id of a thread that
        // `threading` does not name.
        session.set_tid_offset(TidOffset::find(reader));
    }
    Ok((session, opened))
}

/// The engine of one run and what its end reports, driven one tick at a
/// time: by [`run_opened`]'s loop on a thread of its own, or by a timer
/// signal on a thread of the program (no sampler thread).
pub struct Ticking<'s> {
    engine: Engine<'s, &'s GuardedReader, MojoWriter<Output>>,
    mode: Mode,
    native: bool,
    direct_reads: bool,
    mojo_version: Version,
    forked_at_ns: Option<u64>,
    target: Option<Output>,
    /// Whether the thread's CPU clock measures the sampler (a thread of its
    /// own); else the ticks' own durations are summed.
    own_thread: bool,
    start: u64,
    cpu_start: u64,
    /// Nanoseconds the ticks took, as their driver measured them (when not
    /// on a thread of their own, [`Ticking::note_tick_time`]).
    tick_ns: u64,
    end: Option<u64>,
    late_ticks: u64,
    /// Ticks left out to keep the program's share of its thread.
    shed_ticks: u64,
    /// End metadata the driver adds.
    extra: Vec<(String, String)>,
    failed: Option<std::io::Error>,
}

impl<'s> Ticking<'s> {
    /// The engine of `config` over `session`'s process, writing into
    /// `opened`; its first samples count from `origin_ns`. `own_thread`:
    /// the ticks run on a thread of their own (whose CPU clock then says
    /// what sampling cost).
    pub fn new(
        config: &Config,
        session: &'s Session<&'s GuardedReader>,
        opened: Opened,
        origin_ns: u64,
        own_thread: bool,
    ) -> Result<Self, SamplerError> {
        let Opened { writer, target } = opened;
        let mut engine = session.engine(config.mode, interval_ns(config), writer)?;
        if config.native && config.mode != Mode::Memory {
            engine.enable_native()?;
        }
        // A thread that waits costs the file one sample per flush window.
        engine.set_hold_unchanged(true);
        engine.start_at(origin_ns);
        if config.forked_at_ns.is_some() {
            // The forking thread is the child's main thread: its kernel id
            // is the pid.
            engine.start_after_fork(u64::from(std::process::id()));
        }
        let start = clock::now_ns();
        let end = config
            .exposure
            .map(|e| start.saturating_add(u64::try_from(e.as_nanos()).unwrap_or(u64::MAX)));
        Ok(Self {
            engine,
            mode: config.mode,
            native: config.native,
            direct_reads: config.direct_reads,
            mojo_version: config.mojo_version,
            forked_at_ns: config.forked_at_ns,
            target,
            own_thread,
            start,
            cpu_start: if own_thread { clock::own_cpu_ns() } else { 0 },
            tick_ns: 0,
            end,
            late_ticks: 0,
            shed_ticks: 0,
            extra: Vec::new(),
            failed: None,
        })
    }

    /// One tick at `now_ns`. False when sampling is over: the exposure
    /// time ended, an allocation failed, or the profile cannot be written
    /// (then [`Ticking::finish`] says so); the program goes on.
    pub fn tick(&mut self, now_ns: u64, registry: &RegistryQueue) -> bool {
        if self.failed.is_some()
            || self.end.is_some_and(|end| now_ns >= end)
            || OUT_OF_MEMORY.load(Ordering::Relaxed) != 0
        {
            return false;
        }
        match self.engine.tick(now_ns, registry, &FREED_CODES) {
            Ok(()) => true,
            Err(e) => {
                // Nothing more can be written (a full disk, say): sampling
                // ends, the program goes on.
                self.failed = Some(e);
                false
            }
        }
    }

    /// Ticks taken so far.
    pub fn ticks(&self) -> u64 {
        self.engine.stats().ticks
    }

    /// Adds what a tick took, measured by a driver whose ticks run on a
    /// thread of the program (its CPU clock is the program's too).
    pub fn note_tick_time(&mut self, ns: u64) {
        self.tick_ns += ns;
    }

    /// Counts a tick that started more than an interval late.
    pub fn note_late(&mut self) {
        self.late_ticks += 1;
    }

    /// Adds `key: value` to the run's end metadata.
    pub fn add_metadata(&mut self, key: &str, value: String) {
        self.extra.push((key.to_owned(), value));
    }

    /// Counts a tick left out so that the ticks, run on a thread of the
    /// program, leave it most of that thread's time.
    pub fn note_shed(&mut self) {
        self.shed_ticks += 1;
    }

    /// Ends the run: the held samples and the run's metadata written, the
    /// profile closed (or cut back to its last whole event after a failed
    /// write, which the error then says).
    pub fn finish(self, registry: &RegistryQueue) -> Result<Summary, SamplerError> {
        let Self {
            mut engine,
            mode,
            native,
            direct_reads,
            mojo_version,
            forked_at_ns,
            target,
            own_thread,
            start,
            cpu_start,
            tick_ns,
            late_ticks,
            shed_ticks,
            extra,
            mut failed,
            ..
        } = self;
        if mode == Mode::Memory {
            // Tracking ends with sampling (the exposure is over, or the
            // program stops us): what changed since the last flush is the
            // last sample of each stack.
            echion_memtrace::stop_tracking();
            if failed.is_none() {
                failed = engine.flush_memory(registry).err();
            }
        } else if failed.is_none() {
            failed = engine.write_held().err();
        }
        // (A forked child's run whose start was put off lasts from the
        // fork, as its first sample does.)
        let duration_us = (clock::now_ns() - forked_at_ns.unwrap_or(start).min(start)) / 1000;
        let stats = engine.stats().clone();
        let task_stats = engine.task_stats();
        let memory_stats = engine.memory_stats();
        let native_stats = engine.native_stats();
        let writer = engine.sink();
        // The sampler's CPU time from the first tick to the last (µs): its
        // thread's, the sleeps' wake-ups included (not the hooks that run
        // on the program's threads: memory mode's, native mode's
        // captures); with no thread of its own, the ticks' durations.
        let sampler_cpu = if own_thread {
            clock::own_cpu_ns().saturating_sub(cpu_start)
        } else {
            tick_ns
        } / 1000;
        let mut meta = vec![
            ("duration".to_owned(), duration_us.to_string()),
            ("ticks".to_owned(), stats.ticks.to_string()),
            ("samples".to_owned(), stats.samples.to_string()),
            ("skipped".to_owned(), stats.skipped_total().to_string()),
            ("late_ticks".to_owned(), late_ticks.to_string()),
            ("sampler_cpu".to_owned(), sampler_cpu.to_string()),
        ];
        if shed_ticks > 0 {
            meta.push(("shed_ticks".to_owned(), shed_ticks.to_string()));
        }
        if let Some(forked) = forked_at_ns {
            // How long after its fork a child's run started (put off: see
            // `echion.core`'s fork handling).
            let after_us = start.saturating_sub(forked) / 1000;
            meta.push(("started_after_fork".to_owned(), after_us.to_string()));
        }
        meta.extend(extra);
        let out_of_memory = Some(OUT_OF_MEMORY.load(Ordering::Relaxed)).filter(|&n| n != 0);
        if let Some(size) = out_of_memory {
            meta.push(("out_of_memory".to_owned(), size.to_string()));
        }
        if stats.fallback_ticks > 0 && direct_reads {
            // The fault handler was replaced (or could not be installed):
            // these ticks read through `process_vm_readv`.
            meta.push((
                "syscall_read_ticks".to_owned(),
                stats.fallback_ticks.to_string(),
            ));
        }
        if stats.unwalked > 0 {
            // Samples of threads the GIL says cannot have run since their
            // last one: their held stack, found without a walk.
            meta.push(("unwalked_samples".to_owned(), stats.unwalked.to_string()));
        }
        let dropped = registry.dropped();
        if dropped > 0 {
            meta.push(("dropped_thread_updates".to_owned(), dropped.to_string()));
        }
        if task_stats.sampled_ticks > 0 {
            // More tasks than one tick reads: each tick read a share.
            meta.push((
                "tasks_sampled_ticks".to_owned(),
                task_stats.sampled_ticks.to_string(),
            ));
        }
        if task_stats.error_ticks > 0 {
            meta.push((
                "task_error_ticks".to_owned(),
                task_stats.error_ticks.to_string(),
            ));
        }
        if mode == Mode::Memory {
            let m = memory_stats;
            meta.push(("tracked_allocations".to_owned(), m.tracked.to_string()));
            meta.push(("stack_table".to_owned(), m.stack_table.to_string()));
            for (key, n) in [
                // Past the table's bound: not linked to a stack.
                ("untracked_allocations", m.untracked),
                // Their stack could not be read.
                ("unwalkable_allocations", m.unwalkable),
            ] {
                if n > 0 {
                    meta.push((key.to_owned(), n.to_string()));
                }
            }
        }
        if native {
            let n = native_stats;
            meta.push(("native_captures".to_owned(), n.captures.to_string()));
            // How long captures held the program's threads in all (µs).
            meta.push(("native_held".to_owned(), n.held_us.to_string()));
            for (key, v) in [
                // Did not take the signal in time: Python frames only.
                ("native_timeouts", n.timeouts),
                // Not taken: the thread was to run free a while after its
                // last capture (see `NativeStacks::resting`).
                ("native_rested", n.rested),
                // The signal was still pending (the thread blocks it).
                ("native_blocked", n.blocked),
                ("native_failed", n.failed),
                // The unwind stopped before the outermost frame.
                ("native_truncated", n.truncated),
            ] {
                if v > 0 {
                    meta.push((key.to_owned(), v.to_string()));
                }
            }
        }
        for reason in SkipReason::ALL {
            let n = stats.skipped[reason as usize];
            if n > 0 {
                meta.push((format!("skipped_{}", reason.name()), n.to_string()));
            }
        }
        if failed.is_none() {
            // The end metadata, on disk before the run is said to be over.
            failed = meta
                .iter()
                .try_for_each(|(k, v)| writer.metadata(k, v))
                .and_then(|()| writer.flush())
                .err();
        }
        if let Some(source) = failed {
            // What the file holds up to the last whole write stays; the
            // run's metadata and the error follow it if the room freed
            // allows.
            meta.push(("write_error".to_owned(), source.to_string()));
            let mut tail = Vec::new();
            for (key, value) in &meta {
                echion_mojo::Event::Metadata { key, value }.encode(mojo_version, &mut tail);
            }
            let mut file = engine.into_sink().abandon();
            let kept = file.recover(&tail);
            return Err(write_error(file.path(), source, kept));
        }
        let path = engine.sink().get_ref().path().to_path_buf();
        let file = engine
            .into_sink()
            .finish()
            .map_err(|e| write_error(&path, e, false))?;
        let path = file.path().to_path_buf();
        if !file.still_there() {
            return Err(SamplerError::Removed(path));
        }
        Ok(Summary {
            stats,
            duration_us,
            late_ticks,
            output: path,
            target,
            out_of_memory,
        })
    }
}

/// The MOJO file that holds the samples of the output `path` while the
/// program runs: `prof.svg` → `prof.svg.mojo`.
pub fn sidecar_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".mojo");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_for_the_file_is_let_go_once_it_is_opened_or_the_run_started() {
        let c = Arc::new(Control::new());
        assert!(!c.wait_opened(Duration::from_millis(5)));
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.wait_opened(Duration::from_secs(10)))
        };
        c.mark_opened();
        assert!(waiter.join().unwrap());
        // Opened is not started.
        assert!(!c.wait_started(Duration::from_millis(5)));
        let failed = Control::new();
        failed.mark_started();
        assert!(failed.wait_opened(Duration::from_millis(5)));
    }

    #[test]
    fn a_stop_wakes_the_loop_from_its_sleep() {
        let c = Arc::new(Control::new());
        let sleeper = {
            let c = c.clone();
            std::thread::spawn(move || {
                let nap = Arc::new(Nap::default());
                c.set_sleeper(Some(nap.clone()));
                let start = clock::now_ns();
                // A tick ten seconds away, as `-i 10s` would sleep.
                let deadline = start + 10_000_000_000;
                while !c.stop_requested() {
                    let now = clock::now_ns();
                    if now >= deadline {
                        break;
                    }
                    nap.sleep(now, deadline);
                }
                c.set_sleeper(None);
                clock::now_ns() - start
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        c.request_stop();
        let slept = sleeper.join().unwrap();
        assert!(
            slept < 5_000_000_000,
            "the stop waited for the tick: {slept} ns"
        );
        // Without a stop, a nap lasts until its deadline: a few naps reach
        // one 5 ms away, not thousands (a nap that returned at once would
        // spin).
        let start = clock::now_ns();
        let quiet = Nap::default();
        let mut naps = 0;
        while clock::now_ns() < start + 5_000_000 {
            quiet.sleep(clock::now_ns(), start + 5_000_000);
            naps += 1;
        }
        assert!(naps < 50, "{naps} naps for 5 ms");
    }

    #[test]
    fn a_deferred_profile_makes_nothing_until_written_and_its_open_error_stays_one() {
        let path = std::path::Path::new("/nowhere/p.mojo");
        let failed_open = std::io::Error::other(OutputError::NoReader(path.to_path_buf()));
        assert!(matches!(
            write_error(path, failed_open, false),
            SamplerError::Output(OutputError::NoReader(_))
        ));
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            write_error(path, full, true),
            SamplerError::Write { kept: true, .. }
        ));
        // Nothing is made on disk until the run writes.
        let dir = std::env::temp_dir().join(format!("echion-deferred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config {
            output: dir.join("p.mojo"),
            ..Config::default()
        };
        let opened = open_deferred(&config, PyVersion::new(3, 12, 1)).unwrap();
        assert!(!opened.writer.get_ref().is_open());
        drop(opened);
        // (Dropped, the writer flushes: the header alone, readable.)
        let data = std::fs::read(dir.join("p.mojo")).unwrap();
        assert!(echion_mojo::Profile::parse(&data).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_profile_opened_first_is_on_disk_at_once_and_its_error_ends_the_run() {
        let dir = std::env::temp_dir().join(format!("echion-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config {
            output: dir.join("p.mojo"),
            ..Config::default()
        };
        let version = PyVersion::new(3, 12, 1);
        let opened = open(&config, version).unwrap();
        // Header and metadata are on disk before any sampling.
        let data = std::fs::read(opened.writer.get_ref().path()).unwrap();
        let profile = echion_mojo::Profile::parse(&data).unwrap();
        let meta: std::collections::HashMap<_, _> = profile.metadata.into_iter().collect();
        assert_eq!(meta["python"], "3.12.1");
        assert_eq!(meta["sampler"], "echion");
        assert_eq!(meta["interval"], config.interval.as_micros().to_string());
        drop(opened);
        // A failed open hands its error to the run, which ends with it and
        // lets any waiter go.
        let control = Control::new();
        let failed = open(
            &Config {
                output: dir.join("missing").join("p.mojo"),
                ..Config::default()
            },
            version,
        );
        assert!(failed.is_err());
        assert!(run_opened(&config, &control, Some(failed)).is_err());
        assert!(control.wait_started(Duration::from_millis(1)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
