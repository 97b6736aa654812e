//! `echion.core`: the native module of the echion Python package.
//!
//! It keeps the functions of the C++ echion 0.3 (`start`, `start_async`,
//! `stop`, `track_thread`, `untrack_thread`, `set_*`, the asyncio hooks
//! `init_asyncio`, `track_asyncio_loop`, `link_tasks`) over the Rust
//! sampler and allocation tracker, and the command-line front end
//! (`cli_main`), and where mode, native stacks and attach on top.
//!
//! All module state lives in statics that are only touched with the GIL
//! held; the sampler thread gets its own `Arc` of what it needs. A fork
//! (which happens with the GIL held) therefore never finds one of these
//! locks taken, and the child can drop the parent's state without touching
//! anything the sampler thread used.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use echion_sampler::greenlets::GreenletFrame;
use echion_sampler::{Config, Control, Mode, Options, SamplerError, Summary, Update};
use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

mod codehook;
mod forkfast;
mod forkstart;
mod reserve;
mod sigheap;
mod sigquit;
mod sigtick;

#[global_allocator]
static ALLOCATOR: reserve::WithReserve = reserve::WithReserve;

/// The address of `_PyRuntime` in this process. CPython exports it (its
/// executables are linked with `-export-dynamic`, and libpython exports it),
/// so the dynamic linker already knows it: no symbol tables to read.
fn runtime_address() -> Option<u64> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up; the result is used as a number, never dereferenced here
    // (the sampler reads through process_vm_readv).
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyRuntime".as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

type Done = Arc<(Mutex<bool>, Condvar)>;

struct Running {
    /// The process whose run it is (a forked child's copy is not its own).
    pid: u32,
    control: Arc<Control>,
    done: Done,
    native: Option<JoinHandle<()>>,
    /// With no sampler thread ([`sigtick`]): what the stop does once it
    /// has closed the profile.
    no_thread: Option<Finish>,
}

struct State {
    /// What the next run does: the sampler's defaults, then the `ECHION_*`
    /// variables (`configure_from_env`) or the `set_*` functions.
    settings: Options,
    control: Arc<Control>,
    running: Option<Running>,
    /// What the hooks said of the threads alive now (ident → name, kernel
    /// id) and of `threading`'s bootstrap code: a forked child tells its
    /// own sampler about its one thread from here, without Python.
    threads: Threads,
}

/// The thread names the hooks posted, kept for a forked child.
#[derive(Default)]
struct Threads {
    /// Ident → name and kernel id (0: not known).
    names: std::collections::HashMap<u64, (String, u64)>,
    bootstrap_code: Option<u64>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The module state. Callers hold the GIL (every `#[pyfunction]` does),
/// which is what makes the lock uncontended and fork-safe.
fn state() -> MutexGuard<'static, Option<State>> {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if FORKED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        renew_forked(&mut guard);
    }
    if guard.is_none() {
        *guard = Some(State {
            settings: Options::default(),
            control: Arc::new(Control::new()),
            running: None,
            threads: Threads::default(),
        });
    }
    guard
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = state();
    f(guard.as_mut().expect("state() fills it"))
}

fn config(py: Python<'_>, s: &Options) -> Config {
    let v = py.version_info();
    Config {
        python: Some(echion_sampler::PyVersion::new(v.major, v.minor, v.patch)),
        runtime: runtime_address(),
        ..s.config()
    }
}

/// Reads the `ECHION_*` variables the `echion` command set (see
/// `echion_sampler::options`: every default and variable is defined there)
/// into the settings of the next run, and returns them as a dict (`stealth`
/// and `verbose` are for the bootstrap). A variable set by hand to a value
/// it cannot hold is a `ValueError` naming it.
///
/// `env`, when given, is a dict of those variables that replaces the
/// environment (`echion -p` passes the options this way: an attached
/// process's environment is its own).
#[pyfunction]
#[pyo3(signature = (env=None))]
fn configure_from_env<'py>(
    py: Python<'py>,
    env: Option<std::collections::HashMap<String, String>>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let options = match env {
        Some(env) => Options::from_env(|k| env.get(k).cloned()),
        None => Options::from_env(|k| std::env::var(k).ok()),
    }
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(f) = options.format.as_deref() {
        if echion_convert::Format::from_name(f).is_none() {
            return Err(PyValueError::new_err(format!(
                "{}={f:?}: must be one of {}",
                echion_sampler::options::env::FORMAT,
                echion_convert::Format::names()
            )));
        }
    }
    let dict = pyo3::types::PyDict::new(py);
    dict.set_item("interval_us", options.interval.as_micros() as u64)?;
    dict.set_item("cpu", options.mode == Mode::Cpu)?;
    dict.set_item("exposure", options.exposure.map(|d| d.as_secs_f64()))?;
    dict.set_item("output", &options.output)?;
    // (With no sampler thread, none is a Python thread either.)
    dict.set_item("stealth", options.stealth || options.no_thread)?;
    dict.set_item("no_thread", options.no_thread)?;
    dict.set_item("verbose", options.verbose)?;
    dict.set_item("memory", options.memory)?;
    dict.set_item("native", options.native)?;
    with_state(|s| s.settings = options);
    Ok(dict)
}

/// Prepares a run: refuses a second one, installs the code hook (and in
/// memory mode the allocator hooks).
fn prepare(py: Python<'_>) -> PyResult<(Config, Arc<Control>, Done, Finish)> {
    codehook::install(py)?;
    // With no sampler thread, nothing would print the stacks `SIGQUIT`
    // asks for (a tick cannot write to stderr): Ctrl-\ does what it does
    // without echion.
    if !with_state(|s| s.settings.no_thread) {
        sigquit::install();
    }
    with_state(|s| {
        if s.running.is_some() {
            return Err(PyRuntimeError::new_err("echion is already sampling"));
        }
        if s.settings.memory {
            let v = py.version_info();
            // With native stacks, each allocation's native frames too.
            echion_memtrace::set_native(s.settings.native);
            echion_memtrace::reset();
            echion_memtrace::install(echion_sampler::PyVersion::new(v.major, v.minor, v.patch))
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        }
        let done: Done = Arc::new((Mutex::new(false), Condvar::new()));
        let control = s.control.clone();
        // (A forked child's is its parent's, copied with that run started.)
        control.begin();
        s.running = Some(Running {
            pid: std::process::id(),
            control: control.clone(),
            done: done.clone(),
            native: None,
            no_thread: None,
        });
        let finish = Finish {
            verbose: s.settings.verbose,
            format: s
                .settings
                .format
                .as_deref()
                .and_then(echion_convert::Format::from_name),
            summary: s.settings.summary,
            interval_us: s.settings.interval.as_micros() as u64,
            mode: if s.settings.memory {
                "memory"
            } else {
                s.settings.mode.name()
            },
            template: PathBuf::from(&s.settings.output),
        };
        Ok((config(py, &s.settings), control, done, finish))
    })
}

/// What happens once sampling ends: the conversion, the summary, the line
/// that says where the profile went.
struct Finish {
    verbose: bool,
    /// The output's format, when it is not MOJO.
    format: Option<echion_convert::Format>,
    /// Print the summary without a terminal too.
    summary: bool,
    interval_us: u64,
    /// `wall`, `cpu` or `memory`.
    mode: &'static str,
    /// The output as the user gave it (`%(pid)` left in).
    template: PathBuf,
}

/// The command line of this process, for titles.
fn command_line() -> String {
    std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Runs the sampler to its end and reports a failure as one line on
/// stderr: the profiled program goes on either way. Converts the profile
/// when its output is another format (the MOJO file beside it stays if
/// that fails), and says where the profile went (with a summary) when
/// `verbose`, asked, or when stderr is a terminal.
fn run_to_end(
    config: &Config,
    control: &Control,
    done: &Done,
    finish: Finish,
    opened: Option<Result<echion_sampler::run::Opened, SamplerError>>,
    own_heap: bool,
) {
    SAMPLER_TID.store(current_tid() as i32, std::sync::atomic::Ordering::Relaxed);
    SAMPLER_SPAWNED.store(false, std::sync::atomic::Ordering::Release);
    reserve::arm();
    let result: Result<Summary, SamplerError> = if own_heap {
        run_apart(config, control, opened)
    } else {
        echion_sampler::run::run_opened(config, control, opened)
    };
    report(result, &finish);
    // Sampling is over: the reserve's address space goes back to the
    // program before this thread does (see `reserve::release`).
    end_run(done);
}

/// The run, sampled on this thread with what it makes in memory a forked
/// child gets empty ([`sigheap::enter_thread`]) and this thread's stack
/// below this frame wiped in a child too ([`sigheap::wipe_stack_below`]):
/// a fork copies none of it, so the ticks after a fork write no page the
/// fork made shared. (Each was a fault, and with the program on the other
/// CPU an interrupt of it to flush the page's old mapping: in a fork loop,
/// 6 faults and 2 of the 3.6 TLB shootdowns of each fork, 3 % of its
/// rate.)
#[inline(never)]
fn run_apart(
    config: &Config,
    control: &Control,
    opened: Option<Result<echion_sampler::run::Opened, SamplerError>>,
) -> Result<Summary, SamplerError> {
    let here = 0u8;
    let _stack = sigheap::wipe_stack_below(std::hint::black_box(std::ptr::addr_of!(here)) as usize);
    a_page_down(|| {
        echion_sampler::run::run_opened_in(config, control, opened, &|on| {
            if on {
                sigheap::enter_thread();
            } else {
                sigheap::leave_thread();
            }
        })
    })
}

/// Calls `f` a page below the caller's frame (its callees' frames are in
/// the pages [`run_apart`] wipes, whatever the page the caller's frame
/// starts in).
#[inline(never)]
fn a_page_down<T>(f: impl FnOnce() -> T) -> T {
    let pad = [0u8; 4096];
    std::hint::black_box(&pad);
    f()
}

/// What ends every run: the reserve given back, `SIGQUIT` its default
/// action again (nothing would print the stacks it asks for once sampling
/// is over, as after `-x`), and whoever waits for the run told it is over.
fn end_run(done: &Done) {
    reserve::release();
    sigquit::uninstall();
    let (lock, cvar) = &**done;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cvar.notify_all();
}

/// Says how a run ended: its error, or the profile converted if its output
/// is another format, where it went and its summary (when `verbose`,
/// asked, or when stderr is a terminal).
fn report(result: Result<Summary, SamplerError>, finish: &Finish) {
    let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
    let tell = !quiet && (finish.verbose || stderr_is_terminal());
    match result {
        Err(e) => eprintln!("echion: {e}"),
        Ok(mut summary) => match summary.out_of_memory {
            // Nothing more is allocated for this run: no conversion, no
            // summary.
            Some(size) => {
                if let Some(target) = summary.target.take() {
                    // The output the conversion would have written: empty.
                    let path = target.path().to_path_buf();
                    drop(target);
                    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                eprintln!(
                "echion: out of memory (an allocation of {size} bytes failed: the process is at its \
                 memory limit): sampling stopped there; {} holds the samples until then{}",
                summary.output.display(),
                if finish.format.is_some() {
                    " (convert it with echion-convert)"
                } else {
                    ""
                }
                )
            }
            None => finish_run(summary, finish, tell, !quiet && (finish.summary || tell)),
        },
    }
}

/// Converts the profile of a finished run if its output is another format,
/// then says where it went and prints the summary.
fn finish_run(mut summary: Summary, finish: &Finish, tell: bool, show_summary: bool) {
    let mojo = summary.output.clone();
    let mut written = mojo.clone();
    let mut agg = None;
    if let (Some(format), Some(target)) = (finish.format, summary.target.as_mut()) {
        let name = target.path().to_path_buf();
        let options = options_titled(finish);
        let converted = match target.file_mut() {
            Ok(file) => echion_convert::convert_into(
                std::slice::from_ref(&mojo),
                file,
                &name,
                format,
                &options,
            )
            .map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot write {}: {e}", name.display())),
        };
        match converted {
            Ok(a) => {
                let _ = std::fs::remove_file(&mojo);
                written = name;
                agg = Some(a);
            }
            Err(e) => {
                eprintln!(
                    "echion: {e}; the samples are in {} (convert it with echion-convert)",
                    mojo.display()
                );
            }
        }
    }
    drop(summary.target.take());
    if let Some(format) = finish.format {
        adopt_leftovers(&finish.template, format, &options_titled(finish));
    }
    if tell {
        eprintln!(
            "echion: profile of pid {} written to {} ({} samples)",
            std::process::id(),
            written.display(),
            summary.stats.samples
        );
    }
    // One summary a family: the process that has the output's own name (the
    // one the command started); its children only say where they wrote.
    let first = echion_sampler::output::expand(&finish.template, std::process::id());
    if show_summary && written == first {
        let agg = match agg {
            Some(a) if written != mojo => Some(a),
            _ => echion_convert::read_inputs(
                std::slice::from_ref(&mojo),
                &echion_convert::Options::default(),
            )
            .ok(),
        };
        if let Some(agg) = agg {
            // A tick at the start, then one each interval.
            let asked = summary.duration_us / finish.interval_us.max(1) + 1;
            let taken = echion_convert::summary::Taken {
                ticks: summary.stats.ticks,
                asked,
                errors: summary.stats.skipped_total(),
            };
            eprint!(
                "{}",
                echion_convert::summary::render(&agg, Some(taken), 8, terminal_width())
            );
        }
    }
}

/// The conversion's options: titled with the mode and command line.
fn options_titled(finish: &Finish) -> echion_convert::Options {
    echion_convert::Options {
        title: Some(format!("echion {} · {}", finish.mode, command_line())),
        ..Default::default()
    }
}

/// Converts the MOJO files that other processes of this family left
/// beside their outputs without converting them (a forked child that
/// ended with `os._exit`, as multiprocessing's do, runs no exit code):
/// each `X.mojo` whose `X` has this output's name pattern, is still empty,
/// and is locked by no running process.
fn adopt_leftovers(
    template: &std::path::Path,
    format: echion_convert::Format,
    options: &echion_convert::Options,
) {
    let Some(name) = template
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return;
    };
    let dir = match template.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = match (
        name.find(echion_sampler::output::PID_PLACEHOLDER),
        name.rfind('.'),
    ) {
        (Some(i), _) => &name[..i],
        (None, Some(i)) if i > 0 => &name[..i],
        _ => name.as_str(),
    };
    let suffix = name.rfind('.').map_or("", |i| &name[i..]);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(target_name) = file_name.strip_suffix(".mojo") else {
            continue;
        };
        if !target_name.starts_with(prefix) || !target_name.ends_with(suffix) {
            continue;
        }
        let mojo = entry.path();
        let target = dir.join(target_name);
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&target) else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
            continue;
        }
        // Held by its process while it runs: only a finished one's is free.
        let Ok(mut locked) =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            continue;
        };
        match echion_convert::convert_into(
            std::slice::from_ref(&mojo),
            &mut locked,
            &target,
            format,
            options,
        ) {
            Ok(_) => {
                let _ = std::fs::remove_file(&mojo);
            }
            Err(e) => eprintln!(
                "echion: {e}; the samples are in {} (convert it with echion-convert)",
                mojo.display()
            ),
        }
    }
}

/// Columns of the terminal on stderr (`COLUMNS`, else 100).
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 40)
        .unwrap_or(100)
}

/// Converts the MOJO files `inputs` into `output` as `format` (from the
/// output's name when `None`): what `echion-convert` and
/// `python -m echion.convert` run. Returns a dict of what was read
/// (`samples`, `left_out`, `stacks`, `total`, `metric`, `cut`: the inputs
/// that ended early, with why). Any failure is a `ValueError` with a
/// one-line message naming the file.
#[pyfunction]
#[pyo3(signature = (inputs, output, format=None, keep_echion=false, merge_threads=false, title=None))]
fn convert<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    output: PathBuf,
    format: Option<String>,
    keep_echion: bool,
    merge_threads: bool,
    title: Option<String>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let format = match format.as_deref() {
        Some(name) => Some(echion_convert::Format::from_name(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown format {name:?}: give one of {}",
                echion_convert::Format::names()
            ))
        })?),
        None => None,
    };
    let options = echion_convert::Options {
        keep_echion,
        merge_threads,
        title,
    };
    let agg = py
        .detach(|| echion_convert::convert(&inputs, &output, format, &options))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let dict = pyo3::types::PyDict::new(py);
    dict.set_item("samples", agg.samples)?;
    dict.set_item("left_out", agg.left_out)?;
    dict.set_item("stacks", agg.stacks.len())?;
    dict.set_item("total", agg.total())?;
    dict.set_item("metric", agg.metric().name())?;
    let cuts: Vec<(String, String)> = agg
        .cuts
        .iter()
        .map(|c| (c.path.display().to_string(), c.reason.clone()))
        .collect();
    dict.set_item("cut", cuts)?;
    Ok(dict)
}

/// Whether the line that says where the profile went is left out (an
/// attached process's stderr is the program's, not the user's of `echion`).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Leaves out (`True`) or prints again the line that says where the
/// profile went; `echion -p` says it on its own terminal instead.
#[pyfunction]
fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// The kernel id of the thread that runs (or ran) the sampler, 0 if none.
static SAMPLER_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Whether a sampler thread was spawned that has not said its id yet (a
/// forked child goes on before its sampler thread runs, and may fork
/// again at once): it is one of the process's threads, and echion's.
static SAMPLER_SPAWNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The threads of this process that are not echion's, as the kernel counts
/// them (what `os.fork()` counts from 3.12 to decide to warn), or -1 if
/// they cannot be counted.
#[pyfunction]
fn threads_besides_echion() -> i64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return -1;
    };
    // After the command name in parentheses: state is field 3, num_threads
    // field 20.
    let Some(n) = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17))
        .and_then(|f| f.parse::<i64>().ok())
    else {
        return -1;
    };
    let tid = SAMPLER_TID.load(std::sync::atomic::Ordering::Relaxed);
    let ours = i64::from(
        SAMPLER_SPAWNED.load(std::sync::atomic::Ordering::Acquire)
            || (tid > 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()),
    );
    let stand_in = i64::from(STAND_IN_TID.load(std::sync::atomic::Ordering::Relaxed) > 0);
    n - ours - stand_in
}

/// Samples in the calling thread until `stop()`; the GIL is released
/// throughout.
#[pyfunction]
fn start(py: Python<'_>) -> PyResult<()> {
    let (config, control, done, finish) = prepare(py)?;
    // Counted until it has the GIL back: `stop` waits for that, so that a
    // program that stops and exits does not finalise with this thread
    // still to take the GIL (which ends it by pthread_exit, unwinding
    // through these frames: a crash).
    watcher_enters();
    detach_waiting(py, || {
        run_to_end(&config, &control, &done, finish, None, false)
    });
    watcher_leaves();
    // Sampling is over (stopped, or the exposure time is up): the program
    // goes on with its own allocators.
    echion_memtrace::uninstall();
    Ok(())
}

/// The kernel id of the thread in [`stand_in`] while it stands for the
/// sampler (0: none): one of echion's threads, as the sampler's own.
static STAND_IN_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Stands for the run's native sampler thread in the calling thread until
/// the run ends (the GIL released), and returns then (at once if no run
/// with a sampler thread is under way in this process).
///
/// The sampler runs in a thread of its own that Python does not know
/// about, so that echion never imports `threading` into a program (a third
/// of an empty script's start-up on 3.11; its after-fork hook in every
/// fork).
/// echion 0.3's profile shows its sampler as the `threading` thread
/// `echion.core.sampler`, whose target is its native `start()`: the
/// bootstrap starts such a thread with this function as its target once
/// the program has imported `threading`, and the profile shows its stack
/// with the sampler's kernel id, so its CPU time (and, with `--native`,
/// its native frames) are the sampler's.
#[pyfunction]
fn stand_in(py: Python<'_>) {
    let Some((control, done)) = with_state(|s| {
        s.running
            .as_ref()
            .filter(|r| r.pid == std::process::id() && r.no_thread.is_none())
            .map(|r| (r.control.clone(), r.done.clone()))
    }) else {
        return;
    };
    // Counted until it has the GIL back, as `start`'s thread is.
    watcher_enters();
    detach_waiting(py, || {
        // (An attached run goes on before its sampler has started.)
        if control.wait_started(Duration::from_secs(10)) {
            let sampler = SAMPLER_TID.load(std::sync::atomic::Ordering::Relaxed);
            if sampler > 0 {
                STAND_IN_TID.store(current_tid() as i32, std::sync::atomic::Ordering::Relaxed);
                control.registry.post(Update::StandIn {
                    thread_id: current_ident(),
                    native_id: sampler as u64,
                });
            }
        }
        let (lock, cvar) = &*done;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        drop(cvar.wait_while(guard, |finished| !*finished));
        STAND_IN_TID.store(0, std::sync::atomic::Ordering::Relaxed);
    });
    watcher_leaves();
    // Sampling is over (stopped, or the exposure time is up): the program
    // goes on with its own allocators (as after `start`).
    echion_memtrace::uninstall();
}

/// Samples in a native thread that Python does not know about (every run
/// the bootstrap starts; [`stand_in`] shows it in the profile).
/// With `open_first`, the profile's writer is made, its header buffered,
/// before this returns, on the calling thread, and the file on disk at the
/// run's first flush (10 ms) or its end (`run::open_deferred`): a forked
/// child goes on at once, and one that ends by `os._exit` before then
/// leaves no file and costs none (a file made costs more than a fork).
#[pyfunction]
#[pyo3(signature = (open_first=false))]
fn start_async(py: Python<'_>, open_first: bool) -> PyResult<()> {
    start_native(py, open_first, None)
}

/// [`start_async`], for a forked child's run that starts after the fork
/// with `forked_at_ns` (see [`forkstart`]).
fn start_native(py: Python<'_>, open_first: bool, forked_at_ns: Option<u64>) -> PyResult<()> {
    let (mut config, control, done, finish) = prepare(py)?;
    config.forked_at_ns = forked_at_ns;
    // (Not memory mode's nor native mode's: their hooks and capturer keep
    // what they make for the process, a child's included.)
    let own_heap = with_state(|s| !s.settings.memory && !s.settings.native);
    if own_heap {
        register_fork_handlers();
    }
    let opened = match config.python {
        Some(version) if open_first => {
            // Made on disk at the run's first flush: a child that ends
            // before then (by `os._exit`) costs no file.
            let opened = echion_sampler::run::open_deferred(&config, version);
            if opened.is_ok() {
                control.mark_opened();
            }
            Some(opened)
        }
        _ => None,
    };
    if with_state(|s| s.settings.no_thread) {
        forkfast::set_interval(echion_sampler::run::interval_ns(&config));
        reserve::arm();
        match sigtick::start(&config, control.clone(), opened) {
            Ok(()) => with_state(|s| {
                if let Some(r) = s.running.as_mut() {
                    r.no_thread = Some(finish);
                }
            }),
            Err(e) => {
                if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
                    eprintln!("echion: {e}");
                }
                // As a sampler thread that could not start: the run is
                // over, the program goes on.
                control.mark_started();
                end_run(&done);
            }
        }
        return Ok(());
    }
    SAMPLER_SPAWNED.store(true, std::sync::atomic::Ordering::Release);
    let handle = std::thread::Builder::new()
        .name("echion-sampler".into())
        .spawn(move || {
            // (Echion's own thread: the kernel's writes of its CPU at each
            // wake-up would copy a page after each fork. Not in
            // `run_to_end`, which `start` runs on a program's thread.)
            sigheap::leave_rseq();
            run_to_end(&config, &control, &done, finish, opened, own_heap)
        })
        .map_err(|e| {
            SAMPLER_SPAWNED.store(false, std::sync::atomic::Ordering::Release);
            PyRuntimeError::new_err(format!("cannot start the sampler thread: {e}"))
        })?;
    with_state(|s| {
        if let Some(r) = s.running.as_mut() {
            r.native = Some(handle);
        }
    });
    Ok(())
}

/// Waits (GIL released) until the sampler has taken its first sample, or
/// failed to start, at most `timeout` seconds; returns whether it started.
/// The bootstrap calls this so that the program's start is in the profile.
/// With `opened`, only until the profile's writer is ready (a forked
/// child: at once, `start_async(open_first=True)` made it; the child may
/// end at any moment and leaves a readable profile or none).
#[pyfunction]
#[pyo3(signature = (timeout=1.0, opened=false))]
fn wait_started(py: Python<'_>, timeout: f64, opened: bool) -> bool {
    let Some(control) = with_state(|s| s.running.as_ref().map(|r| r.control.clone())) else {
        return false;
    };
    let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
    py.detach(|| {
        if opened {
            control.wait_opened(timeout)
        } else {
            control.wait_started(timeout)
        }
    })
}

/// Counts the runs stopped so far: a [`watch_control`] of an earlier run
/// ends when it changes.
static STOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many threads wait with the GIL released in a function of this
/// module that a stop ends ([`start`]'s sampling, [`watch_control`]), and
/// take the GIL back in it: [`stop`] waits for them to be back in Python.
static WATCHERS: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());

/// Counts a [`watch_control`] thread about to be started (with the GIL
/// held): a stop from now on waits for it. Returns the run it watches,
/// for `watch_control(run=...)`.
#[pyfunction]
fn count_watcher() -> u64 {
    watcher_enters();
    STOPS.load(std::sync::atomic::Ordering::Acquire)
}

/// Takes back a [`count_watcher`] whose thread could not be started.
#[pyfunction]
fn uncount_watcher() {
    watcher_leaves();
}

/// Counts the calling thread in [`WATCHERS`] (with the GIL held).
fn watcher_enters() {
    *WATCHERS.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
}

/// `py.detach(wait)` for a thread of the program that waits in this module
/// with the GIL released and may outlive the run's stop ([`start`]'s
/// sampling, [`watch_control`]'s waits): see [`never_back_if_finalizing`].
fn detach_waiting<T, F>(py: Python<'_>, wait: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(|| {
        let result = wait();
        never_back_if_finalizing();
        result
    })
}

/// Ends a wait with the GIL released, on a thread of the program that
/// would take the GIL back next ([`detach_waiting`]): if the interpreter
/// is finalizing, the thread never takes it and waits here until the
/// process is gone. CPython ends a thread that asks for the
/// GIL then by `pthread_exit`, whose unwinding through this module's frames
/// crashes the program. The stop that the program's exit makes (`atexit`)
/// waits for these threads to be back in Python first, so only a run that
/// no stop ends comes here: one attached while the program's atexit
/// handlers ran, whose own `atexit.register` came too late to be called.
/// (Between this look and CPython's taking of the GIL, a few instructions
/// later, the exit may still begin.)
fn never_back_if_finalizing() {
    while interpreter_finalizing() {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether the interpreter is finalizing: `Py_IsFinalizing` (3.13) or
/// `_Py_IsFinalizing` (3.8–3.12), a read of the runtime's state that needs
/// no GIL, looked up once (false where neither is found).
fn interpreter_finalizing() -> bool {
    type IsFinalizing = unsafe extern "C" fn() -> libc::c_int;
    static FUNCTION: std::sync::OnceLock<Option<IsFinalizing>> = std::sync::OnceLock::new();
    let function = FUNCTION.get_or_init(|| {
        [c"Py_IsFinalizing", c"_Py_IsFinalizing"]
            .iter()
            .find_map(|name| {
                // SAFETY: a look-up of a symbol by its NUL-terminated name in
                // the process's global scope, where the interpreter's own
                // functions are.
                let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                // SAFETY: both names are CPython's `int (void)` functions.
                (!address.is_null()).then(|| unsafe {
                    std::mem::transmute::<*mut libc::c_void, IsFinalizing>(address)
                })
            })
    });
    // SAFETY: CPython's function, which reads one field of the runtime's
    // state (atomically from 3.12), with or without the GIL.
    function.is_some_and(|f| unsafe { f() } != 0)
}

/// Counts the calling thread out of [`WATCHERS`], back with the GIL.
fn watcher_leaves() {
    let (lock, cvar) = &WATCHERS;
    let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
    *n = n.saturating_sub(1);
    cvar.notify_all();
}

/// Stops sampling and waits (GIL released, at most 10 s) for the profile to
/// be closed. Then takes out what sampling put in the process, so that it
/// goes on as without echion: the allocator hooks, the `SIGQUIT` handler,
/// the native stacks' signal handler and the code objects' deallocator
/// hook (each only where it is still ours). The module itself stays loaded,
/// inert, and can run again.
#[pyfunction]
fn stop(py: Python<'_>) -> PyResult<()> {
    let pending = forkstart::take()
        .map(|at| (at, true))
        .or_else(|| forkfast::take().map(|at| (at, false)));
    if let Some((forked_at_ns, urg)) = pending {
        // A forked child that ends (through the interpreter's exit) before
        // its sampler started: started and stopped now, its profile is
        // made and closed as any other's. Its life counts from the fork if
        // the start could still have been on its way (put off 16 ms for a
        // child that waits, its signal come again once); else the start
        // was kept from running, its signal blocked, say: its one sample
        // would hold all of it, on the exit's stack.
        if urg {
            // (From any thread: where `_signal.signal` refuses, the
            // handler stays, inert, its timer gone.)
            let _ = forkstart::restore(py);
        } else {
            settle_fast_child(py);
        }
        forkstart::publish_pid(py);
        let interval = with_state(|s| s.settings.interval.as_nanos() as u64);
        let on_its_way = forkfast::put_off_at_most(Duration::from_nanos(interval)).as_nanos();
        let recent =
            u128::from(echion_sampler::clock::now_ns().saturating_sub(forked_at_ns)) <= on_its_way;
        match start_native(py, true, recent.then_some(forked_at_ns)) {
            // Its one sample (which holds that life) taken before the stop:
            // the ticks' signal raised here, or the sampler thread's first.
            Ok(()) => {
                if !sigtick::tick_here() {
                    wait_started(py, 0.1, false);
                }
            }
            Err(e) => {
                if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
                    eprintln!("echion: {e}");
                }
            }
        }
    }
    let finished = stop_sampling(py);
    STOPS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    // A `watch_control` thread sees the stop within 100 ms, and `start`'s
    // thread once the sampler is done, and each goes back to Python: let
    // them, now (GIL released), not while the interpreter finalises, where
    // a thread that wants the GIL is ended by pthread_exit through our
    // frames.
    py.detach(|| {
        let (lock, cvar) = &WATCHERS;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cvar.wait_timeout_while(guard, Duration::from_secs(1), |n| *n > 0);
    });
    echion_memtrace::uninstall();
    sigquit::uninstall();
    codehook::uninstall();
    if finished {
        // No read or capture of the sampler can be under way any more.
        echion_sampler::release_native_signal();
        echion_sampler::release_fault_handler();
    }
    Ok(())
}

/// Stops the run, if one is under way, and waits for its end; whether no
/// sampler thread is left running (false only if it did not end in 10 s).
fn stop_sampling(py: Python<'_>) -> bool {
    let Some(running) = with_state(|s| {
        let r = s.running.take();
        // The next run gets a new registry; threads are tracked again by the
        // hooks of that run.
        if r.is_some() {
            s.control = Arc::new(Control::new());
            s.threads.names.clear();
        }
        r
    }) else {
        return true;
    };
    if running.pid != std::process::id() {
        // A forked child's copy of its parent's run, left there (the child
        // forgot it in the fork, or never took the hooks that renew it):
        // never finished here, which would write the parent's profile.
        std::mem::forget(running);
        return true;
    }
    running.control.request_stop();
    // The allocators go back before the interpreter finalises (the GIL is
    // held here); the sampler's last flush writes what was tracked.
    echion_memtrace::uninstall();
    if let Some(finish) = running.no_thread {
        // No thread to wait for: the profile is closed here (the GIL
        // released: a conversion may take a while).
        py.detach(|| {
            if let Some(result) = sigtick::stop() {
                report(result, &finish);
            }
            reserve::release();
        });
        return true;
    }
    py.detach(|| {
        let (lock, cvar) = &*running.done;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, Duration::from_secs(10), |finished| !*finished)
            .unwrap_or_else(|e| e.into_inner());
        let finished = *guard;
        drop(guard);
        if finished {
            if let Some(handle) = running.native {
                let _ = handle.join();
            }
        }
        finished
    })
}

/// Waits (GIL released) until `echion -p` asks this process to detach:
/// data or end of file on `fd` (the read end of the attach's control pipe;
/// the end of file comes when the `echion` command exits, however it
/// exits); returns `True` then, `False` when this run is stopped otherwise
/// (the program exits and `atexit` stops it). Meant to be called by the
/// Python function of a `_thread` thread, which then detaches itself: the
/// detach runs with no frame of this function below it (a thread that takes
/// the GIL back while the interpreter finalises is ended by `pthread_exit`,
/// which must find no frame of ours to unwind; `stop` waits for this
/// function to return to Python, `started` included).
///
/// `started`, if given, is called first with whether the sampler took its
/// first sample within 10 s (`False` too when the run was stopped before:
/// the program exited just as it was attached to, say).
///
/// `run`, if given, is what [`count_watcher`] returned to the thread that
/// started this one: the thread was counted from then on, so that a
/// program that exits before it runs has its exit (`stop`) wait for its
/// last word.
#[pyfunction]
#[pyo3(signature = (fd, started=None, run=None))]
fn watch_control(
    py: Python<'_>,
    fd: i32,
    started: Option<Bound<'_, PyAny>>,
    run: Option<u64>,
) -> PyResult<bool> {
    use std::sync::atomic::Ordering;
    let run = match run {
        Some(run) => run,
        None => {
            // Counted from here to the last time it takes the GIL back
            // (see `stop`).
            watcher_enters();
            STOPS.load(Ordering::Acquire)
        }
    };
    let leave = watcher_leaves;
    if let Some(started) = started {
        let control = with_state(|s| s.running.as_ref().map(|r| r.control.clone()));
        let ok = match control {
            Some(c) => detach_waiting(py, || {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    if c.wait_started(Duration::from_millis(50)) {
                        return true;
                    }
                    if STOPS.load(Ordering::Acquire) != run || std::time::Instant::now() >= deadline
                    {
                        return false;
                    }
                }
            }),
            None => false,
        };
        // Told even when the run is over (a stop takes the run away
        // before it counts in `STOPS`): the command hears why.
        if let Err(e) = started.call1((ok,)) {
            leave();
            return Err(e);
        }
        if STOPS.load(Ordering::Acquire) != run {
            leave();
            return Ok(false);
        }
    }
    let asked = detach_waiting(py, || loop {
        if STOPS.load(Ordering::Acquire) != run {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a timeout in milliseconds.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true;
        }
    });
    // Back with the GIL: from here on this thread ends without waiting for
    // it again.
    leave();
    Ok(asked)
}

/// Forgets the parent's sampler in a forked child, without writing
/// anything of it: the child starts its own run with its own file, with
/// the parent's settings (kept: the same variables would give the same).
#[pyfunction]
fn reset_after_fork(py: Python<'_>) {
    if forkstart::forget() {
        let _ = forkstart::restore(py);
    }
    forget_parent();
}

/// CPython's handler of the signal of a forked child's put-off start calls
/// this (see [`forkstart`]): starts the child's sampler, counting from the
/// fork. Never raises into the program: a failure is said on stderr.
#[pyfunction]
#[pyo3(name = "_start_forked", signature = (*_args))]
fn start_forked(py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
    if let Some(forked_at_ns) = forkfast::take() {
        // Put off in the fork itself (see `forkfast`): the state is renewed
        // at its first use, below.
        settle_fast_child(py);
        forkstart::publish_pid(py);
        if let Err(e) = start_native(py, true, Some(forked_at_ns)) {
            if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("echion: {e}");
            }
        }
        return Ok(());
    }
    let Some(forked_at_ns) = forkstart::take() else {
        return Ok(());
    };
    let restored = forkstart::restore(py);
    forkstart::publish_pid(py);
    if let Err(e) = start_native(py, true, Some(forked_at_ns)) {
        if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("echion: {e}");
        }
    }
    // An exception of a program's handler of another signal that ran in
    // giving SIGURG back (CPython runs pending handlers first) is raised
    // where this handler ran, as it would have been.
    restored
}

/// What [`reset_after_fork`] does; returns the name the forking thread
/// had (the child's one thread), if a hook posted one for it: for the
/// same ident and the kernel id the forking thread had ([`FORKING_TID`]),
/// not for an ended thread whose ident it reuses (a `threading` thread
/// made for a foreign thread is never untracked).
fn forget_parent() -> Option<String> {
    forget_parent_threads();
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    FORKED.store(false, std::sync::atomic::Ordering::Relaxed);
    let ident = current_ident();
    let old = guard.take()?;
    let forking = FORKING_TID.load(std::sync::atomic::Ordering::Relaxed);
    let (state, name) = renewed(old, ident, forking);
    *guard = Some(state);
    name
}

/// What of [`forget_parent`] concerns the parent's threads, which are not
/// in the child (nor the locks they held): also done, with the rest, at the
/// first use of a child's state ([`renew_forked`]).
fn forget_parent_threads() {
    codehook::reset_after_fork();
    sigtick::forget_after_fork();
    // The parent's sampler thread is not here.
    SAMPLER_TID.store(0, std::sync::atomic::Ordering::Relaxed);
    SAMPLER_SPAWNED.store(false, std::sync::atomic::Ordering::Release);
    // No watcher or sampling thread came along (its lock is only taken
    // with the GIL, which the forking thread held).
    *WATCHERS.0.lock().unwrap_or_else(|e| e.into_inner()) = 0;
}

/// A forked child's state for `old`, the parent's, whose forking thread
/// had `ident`: the same settings, a new registry and no run; and the
/// forking thread's name, if a hook posted one for it (for the same ident
/// and kernel id, [`FORKING_TID`]: not for an ended thread whose ident it
/// reuses, as a `threading` thread made for a foreign thread is never
/// untracked).
fn renewed(mut old: State, ident: u64, forking: i64) -> (State, Option<String>) {
    let settings = old.settings.clone();
    let forking = u64::try_from(forking);
    let name = old
        .threads
        .names
        .remove(&ident)
        .filter(|(_, tid)| Ok(*tid) == forking && *tid != 0)
        .map(|(name, _)| name);
    let threads = Threads {
        names: Default::default(),
        bootstrap_code: old.threads.bootstrap_code,
    };
    // The parent's sampler thread does not exist here; its handle, its
    // locks and its buffers must not be touched (dropping them could
    // write the parent's data or detach a thread that is not there).
    std::mem::forget(old);
    let state = State {
        settings,
        control: Arc::new(Control::new()),
        running: None,
        threads,
    };
    (state, name)
}

/// Set in a forked child that restarts natively: the parent's state is
/// renewed at the first use of the module state ([`state`]), not in the
/// fork (whose every page written costs the child a copy).
#[link_section = ".data.echion_fork"]
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The forking thread's ident, for [`renew_forked`].
#[link_section = ".data.echion_fork"]
static FORKED_IDENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The forking thread's kernel id in the parent ([`FORKING_TID`] at the
/// fork, which a later fork of the child overwrites), for [`renew_forked`].
#[link_section = ".data.echion_fork"]
static FORKED_FROM_TID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// This child's pid as the fork left it, for [`renew_forked`] (which may
/// run in a child of this child, before its own fork renews it).
#[link_section = ".data.echion_fork"]
static FORKED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// [`forget_parent`] in a child that restarts natively, once, at the first
/// use of the state: the forking thread (the child's main thread, whose
/// kernel id is the pid) keeps its name, which the new registry is told.
fn renew_forked(guard: &mut Option<State>) {
    forget_parent_threads();
    let Some(old) = guard.take() else {
        return;
    };
    let ident = FORKED_IDENT.load(std::sync::atomic::Ordering::Relaxed);
    let forking = FORKED_FROM_TID.load(std::sync::atomic::Ordering::Relaxed);
    let (mut state, name) = renewed(old, ident, forking);
    if let Some(code) = state.threads.bootstrap_code {
        state.control.registry.post(Update::BootstrapCode { code });
    }
    if let Some(name) = name {
        let tid = u64::from(FORKED_PID.load(std::sync::atomic::Ordering::Relaxed));
        // (Known again if this child forks in turn.)
        state.threads.names.insert(ident, (name.clone(), tid));
        state.control.registry.post(Update::Track {
            thread_id: ident,
            name,
            native_id: tid,
        });
    }
    *guard = Some(state);
}

/// The calling thread's `threading.get_ident()`: its `pthread_t`.
fn current_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    (unsafe { libc::pthread_self() }) as u64
}

/// This process's id, as `std::process::id`, for a forked child's
/// handler: `getpid` is beside the C library's fork code, whose pages the
/// child has just run, while `std::process::id` is a function of its own
/// on another page of the module (a fault in every child).
fn pid_in_fork() -> u32 {
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    let pid = unsafe { libc::getpid() };
    pid as u32
}

/// The calling thread's kernel id.
fn current_tid() -> i64 {
    // SAFETY: the gettid system call has no preconditions and is
    // async-signal-safe. (Not libc's `gettid`: glibc has it from 2.30, the
    // wheel runs on 2.17.)
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// The kernel id of the thread that forked last, as the parent knew it
/// (set by a `pthread_atfork` prepare handler, [`note_forking_thread`]).
#[link_section = ".data.echion_fork"]
static FORKING_TID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// `pthread_atfork`'s prepare handler: notes which thread forks (where it
/// changed: the last fork left the static's page copy-on-write, and a
/// write would copy it in every fork of a loop).
extern "C" fn note_forking_thread() {
    let tid = current_tid();
    if FORKING_TID.load(std::sync::atomic::Ordering::Relaxed) != tid {
        FORKING_TID.store(tid, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a forked child restarts the sampler here, natively (run mode,
/// with no asyncio or gevent hooks to tell the new sampler about), rather
/// than through the bootstrap's Python hook ([`set_after_fork`]).
static FORK_NATIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The bootstrap's hooks for a forked child: its Python one (what runs
/// when the child may not restart natively) and the warnings filter it
/// puts first before a fork (3.12+), which the child takes out.
static AFTER_FORK: Mutex<Option<AfterFork>> = Mutex::new(None);

/// The bootstrap's Python hook for a forked child, and its fork-warning
/// filter.
struct AfterFork {
    hook: Py<PyAny>,
    fork_filter: Option<Py<PyAny>>,
}

/// Gives the bootstrap's Python hook for a forked child, and the warnings
/// filter it may put first before a fork (see [`after_fork_in_child`]).
#[pyfunction]
#[pyo3(signature = (hook, fork_filter=None))]
fn set_after_fork(py: Python<'_>, hook: Py<PyAny>, fork_filter: Option<Py<PyAny>>) -> PyResult<()> {
    let mut slot = AFTER_FORK.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        // SAFETY: registers a handler with no arguments that only stores
        // an integer; once per process (the bootstrap sets the hook once).
        unsafe { libc::pthread_atfork(Some(note_forking_thread), None, None) };
    }
    *slot = Some(AfterFork { hook, fork_filter });
    drop(slot);
    forkstart::prepare(py)
}

/// Calls `install(*args, **kwargs)`, a function of the program that
/// installs a `SIGSEGV`/`SIGBUS` handler (`faulthandler.enable`, which the
/// bootstrap wraps), while no tick reads memory with guarded loads: a
/// fault of a tick under way would go to the new handler, and
/// `faulthandler`'s ends the program (see
/// `echion_sampler::mem::guarded::hold_off`). Returns what it returns.
#[pyfunction]
#[pyo3(signature = (install, *args, **kwargs))]
fn installing_fault_handler(
    install: &Bound<'_, PyAny>,
    args: &Bound<'_, pyo3::types::PyTuple>,
    kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
) -> PyResult<Py<PyAny>> {
    let _hold = echion_sampler::mem::guarded::hold_off();
    install.call(args, kwargs).map(Bound::unbind)
}

/// Whether a forked child restarts the sampler natively from now on (the
/// bootstrap says no once asyncio or gevent are hooked, or when attached).
#[pyfunction]
fn set_fork_native(native: bool) {
    FORK_NATIVE.store(native, std::sync::atomic::Ordering::Relaxed);
}

/// Sets a forked child's put-off start up in the fork itself, with no
/// Python code (see [`forkfast`]): in wall and CPU mode, with a sampler
/// thread or none, where children restart natively ([`set_fork_native`]:
/// not an attached run's), from 3.9 (3.8's subinterpreters read the
/// profiled pid from the main interpreter's `os.environ`, which only
/// Python code can set). Whether it is: the bootstrap then registers no
/// Python after-fork hook until the program may have threads (a fork from
/// another thread than the main one takes that hook).
#[pyfunction]
fn fork_in_c(py: Python<'_>) -> PyResult<bool> {
    if !FORK_NATIVE.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(false);
    }
    // (Memory and native mode have hooks at work from the fork: their
    // children start at once, from the Python hook.)
    let (time_mode, interval) = with_state(|s| {
        (
            !s.settings.memory && !s.settings.native,
            s.settings.interval,
        )
    });
    if !time_mode || py.version_info() < (3, 9) {
        return Ok(false);
    }
    let Ok(signo) = sigtick::claim() else {
        return Ok(false);
    };
    let ident = current_ident();
    let set_up = forkfast::set_up(py, signo, interval)?;
    // (The main thread's the first time: `signal.signal` refuses any
    // other thread.)
    if set_up && MAIN_IDENT.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        MAIN_IDENT.store(ident, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(set_up)
}

/// Registers [`fork_preparing`] and [`child_forked`] with
/// `pthread_atfork`, once per process: where the fast path is set up
/// ([`forkfast::set_up`]), and where a run's sampler thread keeps its data
/// apart ([`run_apart`]: a child forgets it in the fork).
fn register_fork_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers handlers that only load and store atomics and
        // make system calls (see `fork_preparing` and `child_forked`);
        // once per process.
        unsafe { libc::pthread_atfork(Some(fork_preparing), None, Some(child_forked)) };
    });
}

/// The main thread's ident, for [`child_forked`] (which serves its forks
/// only).
static MAIN_IDENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `pthread_atfork`'s prepare handler where [`fork_in_c`] set the fast
/// path up (see [`forkfast`]), in the parent, in the forking thread:
/// whether the child may put its start off in the fork, decided here
/// where the code and data it reads are already in memory (each page the
/// child reads of them first costs it a fault): the main thread forks a
/// process that samples with no thread, whose ticks' signal is still
/// ours, and no start of another kind is put off.
extern "C" fn fork_preparing() {
    use std::sync::atomic::Ordering::Relaxed;
    sigheap::fork_preparing();
    let fast = FORK_NATIVE.load(Relaxed)
        && forkfast::signal().is_some_and(|signo| {
            // (A child of another thread: CPython 3.13 runs no signal
            // handler in it; the Python hook starts its run.)
            current_ident() == MAIN_IDENT.load(Relaxed)
                && sigtick::signo() == signo
                && sigtick::is_ours(signo)
                && !forkstart::any_pending()
        });
    forkfast::prepare_fork(fast);
}

/// `pthread_atfork`'s child handler (see [`forkfast`]), in every child of
/// a process where [`fork_in_c`] set it up, before CPython's own after-fork
/// work: where [`fork_preparing`] said so, forgets the parent's run
/// (without touching it: its state is renewed at its first use, [`state`])
/// and puts the child's start off by an interval. Atomics and system
/// calls only (no lock; no `malloc` but `setenv`'s where the variable was
/// not as the bootstrap wrote it).
extern "C" fn child_forked() {
    use std::sync::atomic::Ordering::Relaxed;
    sigheap::child_forked();
    let Some(forked_at_ns) = forkfast::forget_in_fork() else {
        // Not this way: the parent's run is forgotten all the same (its
        // tick may have been under way on a thread the child has not);
        // the Python hook, where the program's threads made it needed,
        // starts the child's.
        sigtick::forget_after_fork();
        return;
    };
    sigtick::forget_in_fork_of_ticking_thread();
    if !FORKED.load(Relaxed) {
        FORKED_IDENT.store(MAIN_IDENT.load(Relaxed), Relaxed);
        FORKED_FROM_TID.store(FORKING_TID.load(Relaxed), Relaxed);
    }
    // (Else the parent's own state was never renewed: it is renewed here
    // as the parent's forking thread saw it, for this child's pid.)
    let pid = pid_in_fork();
    FORKED_PID.store(pid, Relaxed);
    FORKED.store(true, Relaxed);
    // (Where the digits are not as the bootstrap wrote them, the variable
    // is set at the start, outside the fork: `setenv` takes a lock another
    // thread of the parent may have held.)
    forkfast::write_pid(pid);
    // (The child's one thread: its kernel id is its pid.)
    forkfast::defer_in_fork(i64::from(pid), forked_at_ns);
}

/// Registered with `os.register_at_fork(after_in_child=...)`: restarts the
/// sampler in a forked child without running any Python code, where it
/// may ([`set_fork_native`]); else calls the bootstrap's Python hook.
///
/// A child pays for every page it writes to (each is the parent's until
/// then, copied on the first write): Python code writes the reference
/// counts of every object it touches, and may start a collection that
/// touches them all. This path writes the module's own state, the
/// environment, and the new sampler's.
#[pyfunction]
fn after_fork_in_child(py: Python<'_>) -> PyResult<()> {
    if forkfast::handled() {
        // The fork itself put this child's start off (`child_forked`).
        return Ok(());
    }
    let forked_at_ns = echion_sampler::clock::now_ns();
    // The parent's sampler thread is not here (`threads_besides_echion`
    // reads these before the state is renewed).
    SAMPLER_TID.store(0, std::sync::atomic::Ordering::Relaxed);
    SAMPLER_SPAWNED.store(false, std::sync::atomic::Ordering::Release);
    // A start the parent put off is not this process's (the Python hook
    // gives the signal back; so does this path, unless it puts its own
    // start off).
    let inherited = forkstart::forget();
    if FORKED.load(std::sync::atomic::Ordering::Relaxed) {
        // The parent's own state was not renewed yet (its start was
        // pending): renewed now, as the parent's, so that this child finds
        // its forking thread's name there.
        drop(state());
    }
    // (No lock held while Python code may run: a program's signal handler
    // that runs in a call below may fork.)
    let (has_hooks, fork_filter) = {
        let guard = AFTER_FORK.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            None => (false, None),
            Some(a) => (true, a.fork_filter.as_ref().map(|f| f.clone_ref(py))),
        }
    };
    if !has_hooks {
        return Ok(());
    }
    let python_hook = |py: Python<'_>| -> PyResult<()> {
        if inherited {
            let _ = forkstart::restore(py);
        }
        let hook = AFTER_FORK
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| a.hook.clone_ref(py));
        match hook {
            Some(hook) => hook.call0(py).map(drop),
            None => Ok(()),
        }
    };
    if !FORK_NATIVE.load(std::sync::atomic::Ordering::Relaxed) {
        return python_hook(py);
    }
    if let Some(filter) = fork_filter {
        drop_fork_filter(py, filter.bind(py));
    }
    // The forking thread keeps its name if a hook posted one (else it is a
    // `_thread` thread: `threading` names it in the child, and the Python
    // hook tells the sampler). Read only: the state is renewed later, from
    // what is noted here.
    let ident = current_ident();
    let forking = FORKING_TID.load(std::sync::atomic::Ordering::Relaxed);
    let (named, interval, later) = STATE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or((false, Duration::ZERO, false), |s| {
            let named = s
                .threads
                .names
                .get(&ident)
                .is_some_and(|(_, tid)| u64::try_from(forking) == Ok(*tid) && *tid != 0);
            (
                named,
                s.settings.interval,
                !s.settings.memory && !s.settings.native,
            )
        });
    if !named {
        forget_parent();
        return python_hook(py);
    }
    FORKED_IDENT.store(ident, std::sync::atomic::Ordering::Relaxed);
    FORKED_FROM_TID.store(forking, std::sync::atomic::Ordering::Relaxed);
    FORKED_PID.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
    FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
    // Subinterpreters of this child know it is profiled from here (the
    // bootstrap's check reads `_ECHION_PROFILED_PID`: 3.9 and later build
    // their `os.environ` from the C environment; 3.8's share the main
    // one's, which has it at once there and else once the sampler starts,
    // `forkstart::publish_pid`).
    set_profiled_pid();
    if py.version_info() < (3, 9) {
        forkstart::publish_pid(py);
    }
    // In a time mode the sampler starts an interval after the fork, from
    // CPython's handler of a timer's signal (see `forkstart`): a child
    // that ends before then started no thread and made no file. Memory
    // and native mode have hooks at work from the fork: their sampler
    // starts now. CPython runs signal handlers in its main thread only; in
    // a child forked from another thread, 3.13 does not run them from its
    // eval loop at all (the signal sets the eval breaker of the parent's
    // main thread, not of the child's): there too the sampler starts now.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let deferred = if later && forking == i64::from(parent) {
        forkstart::defer(py, interval, forked_at_ns, inherited)
    } else {
        Ok(false)
    };
    if matches!(deferred, Ok(true)) {
        return Ok(());
    }
    if inherited {
        let _ = forkstart::restore(py);
    }
    forkstart::publish_pid(py);
    start_async(py, true)?;
    // (A program's signal handler that raised in `defer`'s call: said as
    // CPython says an after-fork hook's error.)
    deferred.map(drop)
}

/// How many digits `_ECHION_PROFILED_PID` holds: every pid, zero-padded
/// (the bootstrap writes it so too), so that a forked child writes its own
/// over its parent's, in place.
const PID_DIGITS: usize = 10;

/// Where `_ECHION_PROFILED_PID`'s value is in the C environment, if it has
/// [`PID_DIGITS`] digits (as the bootstrap and [`set_profiled_pid`] write
/// it): the bytes a forked child writes its pid over, in place. Reads the
/// environment: not while another thread may set it.
fn profiled_pid_digits() -> Option<*mut u8> {
    // SAFETY: a NUL-terminated name; only read.
    let value = unsafe { libc::getenv(c"_ECHION_PROFILED_PID".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: `getenv` gives a NUL-terminated string of the environment.
    let len = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes().len();
    (len == PID_DIGITS).then_some(value.cast::<u8>())
}

/// Sets `_ECHION_PROFILED_PID` to this process's pid in the C environment:
/// in place where the value there has [`PID_DIGITS`] digits (as the
/// bootstrap and this function write it: no allocation, one page written
/// in a forked child).
fn set_profiled_pid() {
    let mut digits = [b'0'; PID_DIGITS + 1];
    digits[PID_DIGITS] = 0;
    let mut pid = std::process::id();
    for d in digits[..PID_DIGITS].iter_mut().rev() {
        *d = b'0' + (pid % 10) as u8;
        pid /= 10;
    }
    // A forked child has one thread until its sampler starts, so no other
    // thread reads or sets the environment meanwhile.
    if let Some(old) = profiled_pid_digits() {
        // SAFETY: the same length: the new digits fit the old ones' bytes,
        // which belong to the environment and are writable (the parent's
        // `setenv`, the process's initial block, or on 3.8 the buffer of
        // the bytes object that `os.putenv` keeps for it, which nothing
        // else reads), and which no other thread reads now.
        unsafe { std::ptr::copy_nonoverlapping(digits.as_ptr(), old, PID_DIGITS) };
        return;
    }
    // SAFETY: both strings are NUL-terminated; one thread, as above.
    unsafe { libc::setenv(c"_ECHION_PROFILED_PID".as_ptr(), digits.as_ptr().cast(), 1) };
}

/// What a child whose start was put off in the fork ([`forkfast`]), which
/// no Python hook saw, still owes at that start: its pid in the
/// environment where the fork could not write it, and the fork-warning
/// filter that the parent's hook put first before the fork (3.12+, with a
/// sampler thread) taken out, if any.
fn settle_fast_child(py: Python<'_>) {
    if forkfast::pid_left_unset() {
        set_profiled_pid();
    }
    let filter = AFTER_FORK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|a| a.fork_filter.as_ref().map(|f| f.clone_ref(py)));
    if let Some(filter) = filter {
        drop_fork_filter(py, filter.bind(py));
    }
}

/// Takes the bootstrap's fork-warning filter out of `warnings.filters`
/// (the list the C `_warnings` module reads), where it is.
fn drop_fork_filter(py: Python<'_>, filter: &Bound<'_, PyAny>) {
    let filters = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|m| m.get_item("warnings"))
        .or_else(|_| py.import("_warnings").map(|m| m.into_any()))
        .and_then(|w| w.getattr("filters"));
    let Ok(filters) = filters else { return };
    let Ok(list) = filters.cast::<pyo3::types::PyList>() else {
        return;
    };
    if let Some(i) = list.iter().position(|f| f.is(filter)) {
        let _ = list.del_item(i);
    }
}

/// A name the program gave (a thread's, a greenlet's) as text, whatever it
/// is: `str()` of an object that is not a string, and a string's lone
/// surrogates (a name decoded from bytes with `surrogateescape`: each the
/// byte it stands for) replaced by U+FFFD. Never an error: a hook that
/// raised would raise in the program's own thread (inside `Thread.start`,
/// whose caller then waits for ever).
fn name_text(name: &Bound<'_, PyAny>) -> String {
    let text = match name.cast::<pyo3::types::PyString>() {
        Ok(s) => s.clone(),
        Err(_) => match name.str() {
            Ok(s) => s,
            // (`__str__` raised: the error is dropped.)
            Err(_) => return "<unnamed>".to_owned(),
        },
    };
    if let Ok(s) = text.to_cow() {
        return s.into_owned();
    }
    // The bytes a `surrogateescape` name was decoded from (else `?` for
    // each surrogate), their invalid UTF-8 replaced.
    ["surrogateescape", "replace"]
        .iter()
        .find_map(|errors| {
            let bytes = text.call_method1("encode", ("utf-8", *errors)).ok()?;
            let bytes = bytes.cast::<pyo3::types::PyBytes>().ok()?;
            Some(String::from_utf8_lossy(bytes.as_bytes()).into_owned())
        })
        .unwrap_or_else(|| "<unnamed>".to_owned())
}

/// Tells the sampler the name and kernel id of a thread (any object: see
/// [`name_text`]).
#[pyfunction]
fn track_thread(thread_id: u64, thread_name: &Bound<'_, PyAny>, native_id: Option<u64>) {
    let thread_name = name_text(thread_name);
    // (Names a tick freed wait for a call like this one, outside any tick,
    // to go back to `malloc`.)
    sigheap::drain_if_any();
    with_state(|s| {
        s.threads
            .names
            .insert(thread_id, (thread_name.clone(), native_id.unwrap_or(0)));
        s.control.registry.post(Update::Track {
            thread_id,
            name: thread_name,
            native_id: native_id.unwrap_or(0),
        })
    });
}

/// Tells the sampler which code object `threading` starts its threads in
/// (`id(Thread._bootstrap.__code__)`): a thread state that no
/// `track_thread` names and whose outermost frame runs it is a `threading`
/// thread starting or ending, and is not shown.
#[pyfunction]
fn set_thread_bootstrap(code: u64) {
    with_state(|s| {
        s.threads.bootstrap_code = Some(code);
        s.control.registry.post(Update::BootstrapCode { code })
    });
}

/// Tells the sampler that a thread is ending.
#[pyfunction]
fn untrack_thread(thread_id: u64) {
    sigheap::drain_if_any();
    with_state(|s| {
        s.threads.names.remove(&thread_id);
        s.control.registry.post(Update::Untrack { thread_id })
    });
}

/// Sets the sampling interval, in microseconds.
#[pyfunction]
fn set_interval(interval: i64) -> PyResult<()> {
    let us = u64::try_from(interval)
        .ok()
        .filter(|&us| us > 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "invalid interval {interval}: must be a positive number of microseconds"
            ))
        })?;
    with_state(|s| s.settings.interval = Duration::from_micros(us));
    Ok(())
}

/// Samples CPU time instead of wall time.
#[pyfunction]
fn set_cpu(cpu: bool) {
    with_state(|s| s.settings.mode = if cpu { Mode::Cpu } else { Mode::Wall });
}

fn later(feature: &str, on: bool) -> PyResult<()> {
    if on {
        Err(PyNotImplementedError::new_err(format!(
            "{feature} is not available in this version of echion"
        )))
    } else {
        Ok(())
    }
}

/// Memory mode: the live bytes of each allocating stack instead of time.
#[pyfunction]
fn set_memory(memory: bool) {
    with_state(|s| s.settings.memory = memory);
}

/// Native stacks: C frames interleaved with the Python frames that called
/// them (wall, CPU and memory mode).
#[pyfunction]
fn set_native(native: bool) {
    with_state(|s| s.settings.native = native);
}

/// Where mode in the profiled process (echion 0.3 sent the dump through a
/// pipe): here, `echion -w PID` reads the process from outside and `SIGQUIT`
/// prints the dump on stderr, so the process has nothing to set.
#[pyfunction]
fn set_where(r#where: bool) -> PyResult<()> {
    later(
        "where mode inside the process (use `echion -w PID`, or SIGQUIT)",
        r#where,
    )
}

/// echion 0.3's where-mode pipe: see [`set_where`].
#[pyfunction]
fn set_pipe_name(name: String) -> PyResult<()> {
    let _ = name;
    later(
        "where mode inside the process (use `echion -w PID`, or SIGQUIT)",
        true,
    )
}

/// Where the profile goes: `%(pid)` is replaced by the pid of the process
/// that writes it, and a process whose name another process of the family
/// has gets a name derived from it (`app.mojo` → `app.<pid>.mojo`).
#[pyfunction]
fn set_output(path: PathBuf) {
    with_state(|s| s.settings.output = path.to_string_lossy().into_owned());
}

/// Says where the profile went when sampling ends (as when stderr is a
/// terminal).
#[pyfunction]
fn set_verbose(verbose: bool) {
    with_state(|s| s.settings.verbose = verbose);
}

/// Whether this process's stderr is a terminal.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Stops sampling after this many seconds (0: never).
#[pyfunction]
fn set_exposure(seconds: f64) -> PyResult<()> {
    if !(seconds >= 0.0 && seconds.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "invalid exposure {seconds}: must be a non-negative number of seconds"
        )));
    }
    with_state(|s| s.settings.exposure = (seconds > 0.0).then(|| Duration::from_secs_f64(seconds)));
    Ok(())
}

/// Tells the sampler where asyncio keeps its tasks: `current_tasks`
/// (`asyncio.tasks._current_tasks`, the `dict` of the task each loop runs,
/// read every tick; anything else is taken as unknown), the `set` of weak
/// references behind `_scheduled_tasks.data` (`_all_tasks.data` before
/// 3.12), and `_eager_tasks` (3.12+) or `None`. The sets must stay alive
/// (they are asyncio's own module globals).
#[pyfunction]
#[pyo3(signature = (current_tasks, scheduled_tasks, eager_tasks=None))]
fn init_asyncio(
    current_tasks: Bound<'_, PyAny>,
    scheduled_tasks: Bound<'_, PyAny>,
    eager_tasks: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let current = if current_tasks.is_instance_of::<pyo3::types::PyDict>() {
        current_tasks.as_ptr() as u64
    } else {
        0
    };
    let set = |o: &Bound<'_, PyAny>, what: &str| -> PyResult<u64> {
        if o.is_instance_of::<pyo3::types::PySet>() {
            Ok(o.as_ptr() as u64)
        } else {
            Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "init_asyncio: {what} must be a set, not {}",
                o.get_type().name()?
            )))
        }
    };
    let scheduled = set(&scheduled_tasks, "scheduled_tasks")?;
    let eager = match &eager_tasks {
        Some(e) => set(e, "eager_tasks")?,
        None => 0,
    };
    with_state(|s| {
        s.control.registry.post(Update::AsyncioRoots {
            scheduled,
            eager,
            current,
        })
    });
    Ok(())
}

/// Tells the sampler that the thread `thread_id` runs the event loop
/// `loop` (or, with `None`, no longer runs one).
#[pyfunction]
#[pyo3(signature = (thread_id, r#loop))]
fn track_asyncio_loop(thread_id: u64, r#loop: Option<Bound<'_, PyAny>>) {
    let event_loop = r#loop.map_or(0, |l| l.as_ptr() as u64);
    with_state(|s| {
        s.control.registry.post(Update::Loop {
            thread_id,
            event_loop,
        })
    });
}

/// Tells the sampler that the task `parent` waits on `child` (a task or a
/// future) in a way that neither records (`gather`, `wait`, …). Only
/// addresses are kept: no reference keeps either alive.
#[pyfunction]
fn link_tasks(parent: Option<Bound<'_, PyAny>>, child: Bound<'_, PyAny>) {
    let Some(parent) = parent else { return };
    let (parent, child) = (parent.as_ptr() as u64, child.as_ptr() as u64);
    if parent == child {
        return;
    }
    with_state(|s| s.control.registry.post(Update::LinkTask { child, parent }));
}

/// Where a greenlet is, from what the gevent hooks pass: `False` (not
/// started or finished), `None` (running), or its suspended frame.
fn greenlet_frame(frame: &Bound<'_, PyAny>) -> GreenletFrame {
    if frame.is_none() {
        GreenletFrame::Running
    } else if frame.is_instance_of::<pyo3::types::PyBool>() {
        GreenletFrame::NotSet
    } else {
        GreenletFrame::At(frame.as_ptr() as u64)
    }
}

/// The calling thread's `pthread_t`: what `threading.get_ident()` returns
/// before gevent replaces it.
fn real_thread_ident() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let t = unsafe { libc::pthread_self() };
    t as u64
}

/// Tells the sampler about a greenlet of the calling thread: its id, its
/// name and where it is (`False`: not started or finished, `None`:
/// running, else its suspended frame, which must stay alive while it is
/// suspended: a greenlet's `gr_frame` does).
#[pyfunction]
fn track_greenlet(greenlet_id: u64, name: &Bound<'_, PyAny>, frame: Bound<'_, PyAny>) {
    let update = Update::Greenlet {
        id: greenlet_id,
        thread_id: real_thread_ident(),
        name: Some(name_text(name)),
        frame: greenlet_frame(&frame),
    };
    with_state(|s| s.control.registry.post(update));
}

/// Tells the sampler where a greenlet now is (as for `track_greenlet`).
#[pyfunction]
fn update_greenlet_frame(greenlet_id: u64, frame: Bound<'_, PyAny>) {
    let update = Update::Greenlet {
        id: greenlet_id,
        thread_id: 0,
        name: None,
        frame: greenlet_frame(&frame),
    };
    with_state(|s| s.control.registry.post(update));
}

/// Tells the sampler that the greenlet `parent_id` waits on `greenlet_id`.
#[pyfunction]
fn link_greenlets(greenlet_id: u64, parent_id: u64) {
    with_state(|s| {
        s.control.registry.post(Update::LinkGreenlets {
            child: greenlet_id,
            parent: parent_id,
        })
    });
}

/// Tells the sampler that a greenlet is gone.
#[pyfunction]
fn untrack_greenlet(greenlet_id: u64) {
    with_state(|s| {
        s.control
            .registry
            .post(Update::UntrackGreenlet { id: greenlet_id })
    });
}

/// The `echion` command: validates the options and replaces this process
/// with the profiled command. Returns only on error, with the exit status.
#[pyfunction]
#[pyo3(signature = (argv, bootstrap_dir=None))]
fn cli_main(argv: Vec<std::ffi::OsString>, bootstrap_dir: Option<PathBuf>) -> i32 {
    echion_cli::run(argv, bootstrap_dir)
}

/// The native module.
#[pymodule]
fn core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(stand_in, m)?)?;
    m.add_function(wrap_pyfunction!(start_async, m)?)?;
    m.add_function(wrap_pyfunction!(stop, m)?)?;
    m.add_function(wrap_pyfunction!(wait_started, m)?)?;
    m.add_function(wrap_pyfunction!(reset_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(start_forked, m)?)?;
    m.add_function(wrap_pyfunction!(set_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(set_fork_native, m)?)?;
    m.add_function(wrap_pyfunction!(fork_in_c, m)?)?;
    m.add_function(wrap_pyfunction!(installing_fault_handler, m)?)?;
    m.add_function(wrap_pyfunction!(track_thread, m)?)?;
    m.add_function(wrap_pyfunction!(untrack_thread, m)?)?;
    m.add_function(wrap_pyfunction!(set_thread_bootstrap, m)?)?;
    m.add_function(wrap_pyfunction!(configure_from_env, m)?)?;
    m.add_function(wrap_pyfunction!(set_interval, m)?)?;
    m.add_function(wrap_pyfunction!(set_cpu, m)?)?;
    m.add_function(wrap_pyfunction!(set_memory, m)?)?;
    m.add_function(wrap_pyfunction!(set_native, m)?)?;
    m.add_function(wrap_pyfunction!(set_where, m)?)?;
    m.add_function(wrap_pyfunction!(set_pipe_name, m)?)?;
    m.add_function(wrap_pyfunction!(set_output, m)?)?;
    m.add_function(wrap_pyfunction!(set_verbose, m)?)?;
    m.add_function(wrap_pyfunction!(threads_besides_echion, m)?)?;
    m.add_function(wrap_pyfunction!(set_exposure, m)?)?;
    m.add_function(wrap_pyfunction!(init_asyncio, m)?)?;
    m.add_function(wrap_pyfunction!(track_asyncio_loop, m)?)?;
    m.add_function(wrap_pyfunction!(link_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(track_greenlet, m)?)?;
    m.add_function(wrap_pyfunction!(update_greenlet_frame, m)?)?;
    m.add_function(wrap_pyfunction!(link_greenlets, m)?)?;
    m.add_function(wrap_pyfunction!(untrack_greenlet, m)?)?;
    m.add_function(wrap_pyfunction!(watch_control, m)?)?;
    m.add_function(wrap_pyfunction!(count_watcher, m)?)?;
    m.add_function(wrap_pyfunction!(uncount_watcher, m)?)?;
    m.add_function(wrap_pyfunction!(set_quiet, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    Ok(())
}
