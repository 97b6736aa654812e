//! A forked child's sampler starts an interval after the fork, not at it.
//!
//! A child pays for everything it does before it can run (its parent waits
//! for many children to start or end: a pre-fork server's respawns, a tool
//! that forks per job): a thread started in the child costs about as much
//! as the fork itself. Yet a sampler's first sample comes an interval
//! after its start anyway, so the child starts its sampler then: a one-shot
//! POSIX timer sends its forking thread (the child's main thread) `SIGURG`
//! one interval after the fork, and CPython's own handler, through which
//! the signal goes (registered from Python with `_signal.signal`), calls
//! [`START`] from the main thread at its next safe point (between two
//! bytecodes, or when a blocking call is interrupted, as with any signal
//! handler of the program's). Until then the signal comes again, 10 ms
//! later and then twice as long each time up to 160 ms ([`refire`]: one
//! noted just before a blocking call would wait for its end). That run
//! counts from the fork (`Config::forked_at_ns`). A child that ends before
//! then started no thread and made no file (one that ends through the
//! interpreter's exit starts and stops at once, so that its profile is
//! made and closed).
//!
//! `SIGURG`, whose default action is to be ignored: a signal of the timer
//! that arrives once the handler is back to its default does nothing. Only
//! where the program has no handler of its own for it; else (and in memory
//! or native mode, whose hooks are at work from the fork) the sampler
//! starts at the fork as before.

use std::sync::Mutex;

use pyo3::prelude::*;

/// The signal the timer sends.
const SIGNAL: libc::c_int = libc::SIGURG;

/// The name of the `echion.core` function that CPython's handler calls.
pub const START: &str = "_start_forked";

/// A start put off in this process.
struct Pending {
    /// The timer (the kernel's id, of this process's).
    timer: libc::c_int,
    /// When the fork was ([`echion_sampler::clock::now_ns`]).
    forked_at_ns: u64,
}

/// The start put off, if any. A child forked from a process whose start is
/// pending inherits it: its timer is not the child's (timers are not
/// inherited), so it is forgotten, never deleted ([`forget`]).
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// Whether [`PENDING`] may hold a start (read in the fork without the
/// lock: a child of a process with none writes nothing).
static ANY_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pending() -> std::sync::MutexGuard<'static, Option<Pending>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// In a forked child, before anything else: forgets a start put off by
/// the parent (its timer is not this process's). Whether there was one
/// (this process's handler for the signal is then still ours).
pub fn forget() -> bool {
    ARMED.store(-1, std::sync::atomic::Ordering::Relaxed);
    let mut pending = pending();
    ANY_PENDING.store(false, std::sync::atomic::Ordering::Release);
    pending.take().is_some()
}

/// Whether a start of this kind may be put off in this process.
pub fn any_pending() -> bool {
    ANY_PENDING.load(std::sync::atomic::Ordering::Acquire)
}

/// What a child needs from Python, found in the parent ([`prepare`]): a
/// child that looks a module or an attribute up writes to many objects of
/// the parent's (reference counts, caches), each write a page to copy.
pub struct Kit {
    /// `_signal.signal`.
    signal: Py<PyAny>,
    /// `_signal.getsignal`.
    getsignal: Py<PyAny>,
    /// The arguments that install our handler: `(SIGNAL, _start_forked)`.
    install: Py<pyo3::types::PyTuple>,
    /// The arguments that give the signal back: `(SIGNAL, SIG_DFL)`.
    uninstall: Py<pyo3::types::PyTuple>,
    /// `(SIGNAL,)`.
    which: Py<pyo3::types::PyTuple>,
    /// `_start_forked`.
    start: Py<PyAny>,
    /// `posix.environ`, the dict behind `os.environ`.
    environ: Py<PyAny>,
    /// `b"_ECHION_PROFILED_PID"`.
    pid_key: Py<PyAny>,
}

static KIT: std::sync::OnceLock<Kit> = std::sync::OnceLock::new();

/// Finds, in the parent, what [`Kit`] holds (once per process).
pub fn prepare(py: Python<'_>) -> PyResult<()> {
    if KIT.get().is_some() {
        return Ok(());
    }
    let signal = py.import("_signal")?;
    let start = py.import("echion.core")?.getattr(START)?;
    let default = signal.getattr("SIG_DFL")?;
    let kit = Kit {
        signal: signal.getattr("signal")?.unbind(),
        getsignal: signal.getattr("getsignal")?.unbind(),
        install: pyo3::types::PyTuple::new(
            py,
            [SIGNAL.into_pyobject(py)?.into_any(), start.clone()],
        )?
        .unbind(),
        uninstall: pyo3::types::PyTuple::new(py, [SIGNAL.into_pyobject(py)?.into_any(), default])?
            .unbind(),
        which: pyo3::types::PyTuple::new(py, [SIGNAL])?.unbind(),
        start: start.unbind(),
        environ: py.import("posix")?.getattr("environ")?.unbind(),
        pid_key: pyo3::types::PyBytes::new(py, b"_ECHION_PROFILED_PID")
            .into_any()
            .unbind(),
    };
    // (Hashed here: a child that first hashed it would write to it.)
    kit.pid_key.bind(py).hash()?;
    let _ = KIT.set(kit);
    Ok(())
}

/// Makes `_start_forked` the Python handler of `signo` (`signal.signal`,
/// which also sets the signal's action to CPython's handler): see
/// [`crate::forkfast`]. An error where `signal.signal` refuses.
pub fn install_start_handler(py: Python<'_>, signo: libc::c_int) -> PyResult<()> {
    let Some(kit) = KIT.get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("no fork hooks"));
    };
    kit.signal
        .bind(py)
        .call1((signo, kit.start.bind(py)))
        .map(drop)
}

/// Sets `_ECHION_PROFILED_PID` to this process's pid in `posix.environ`,
/// the dict behind `os.environ` (bytes to bytes), which 3.8's
/// subinterpreters share with the main one (3.9 and later read the C
/// environment, which the fork set): a dict store, no Python code.
pub fn publish_pid(py: Python<'_>) {
    if let Some(kit) = KIT.get() {
        let value = pyo3::types::PyBytes::new(py, format!("{:010}", std::process::id()).as_bytes());
        let _ = kit.environ.bind(py).set_item(kit.pid_key.bind(py), value);
    }
}

/// Whether the signal is free for us: its action is the default, or,
/// where the parent's start was pending (`inherited`), its Python handler
/// is still ours. (A system call, not a Python call, in the common case.)
fn free(py: Python<'_>, kit: &Kit, inherited: bool) -> bool {
    // SAFETY: `old` is a live local the kernel fills; no action is set.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaction(SIGNAL, std::ptr::null(), &mut old) } != 0 {
        return false;
    }
    // A signal the thread blocks (a server that waits for its signals
    // with `sigwait`) would wait, and then go to the program.
    // SAFETY: `set` is a live local the kernel fills; the mask is not set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) } != 0
        // SAFETY: `set` was filled above.
        || unsafe { libc::sigismember(&set, SIGNAL) } == 1
    {
        return false;
    }
    if old.sa_sigaction == libc::SIG_DFL {
        return true;
    }
    inherited
        && kit
            .getsignal
            .bind(py)
            .call1(kit.which.bind(py))
            .is_ok_and(|h| h.is(kit.start.bind(py)))
}

/// Puts this child's start off by `interval` from `forked_at_ns`: installs
/// the handler and arms the timer. Whether it did (else the caller starts
/// now): not where the program handles the signal, nor where the timer
/// cannot be made. `inherited`: the parent's start was pending (see
/// [`forget`]).
pub fn defer(
    py: Python<'_>,
    interval: std::time::Duration,
    forked_at_ns: u64,
    inherited: bool,
) -> PyResult<bool> {
    let Some(kit) = KIT.get() else {
        return Ok(false);
    };
    if !free(py, kit, inherited) {
        return Ok(false);
    }
    kit.signal.bind(py).call1(kit.install.bind(py))?;
    let tid = crate::current_tid();
    // Made disarmed and known to `refire` before it is set: its signal may
    // come as soon as it is.
    let Some(timer) = interpose().then(|| create(tid, SIGNAL)).flatten() else {
        kit.signal.bind(py).call1(kit.uninstall.bind(py))?;
        return Ok(false);
    };
    REFIRES.store(0, std::sync::atomic::Ordering::Relaxed);
    ARMED.store(timer, std::sync::atomic::Ordering::Relaxed);
    let first = interval.max(std::time::Duration::from_micros(1));
    if !settime(timer, first, std::time::Duration::ZERO) {
        ARMED.store(-1, std::sync::atomic::Ordering::Relaxed);
        delete(timer);
        kit.signal.bind(py).call1(kit.uninstall.bind(py))?;
        return Ok(false);
    }
    ANY_PENDING.store(true, std::sync::atomic::Ordering::Release);
    *pending() = Some(Pending {
        timer,
        forked_at_ns,
    });
    Ok(true)
}

/// How long after a put-off start's signal it first comes again, while the
/// start is not taken ([`refire`]); each time after, twice as long, up to
/// [`REFIRE_MAX`].
pub(crate) const REFIRE: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest a put-off start's signal waits to come again: a child that
/// stays in C code (no safe point) meets it at most this often.
const REFIRE_MAX: std::time::Duration = std::time::Duration::from_millis(160);

/// The timer of the start put off here, while it is (-1: none), for
/// [`refire`] (which may not take [`PENDING`]'s lock).
static ARMED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// How many times [`refire`] set the timer again for this start.
static REFIRES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// CPython's C handler of signals (`signal.signal` installs it).
static CPYTHON: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The action of [`SIGNAL`] while `_start_forked` is its Python handler:
/// CPython's handler is called through this one, which sets the timer
/// again, [`REFIRE`] ahead and then twice as long each time up to
/// [`REFIRE_MAX`], until the start takes it.
///
/// Once is not enough: CPython notes a signal and runs its Python handler
/// at the next safe point, and a signal noted while the main thread
/// computes in C just before a blocking call (`time.sleep`, `recv`)
/// interrupts nothing: the start would wait until that call returns, and
/// the child would go unsampled all that time. The next signal interrupts
/// the call (whose retry runs the handlers first). Set again from here,
/// not by a periodic timer: a program that makes the signal its own meets
/// at most one more (the one already set), as with the first.
extern "C" fn refire(signo: libc::c_int) {
    use std::sync::atomic::Ordering::Relaxed;
    let handler = CPYTHON.load(Relaxed);
    if handler == 0 {
        return;
    }
    // SAFETY: `__errno_location` gives the calling thread's errno, which
    // the system call below may change: kept for the interrupted code.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the address `signal.signal` installed for this signal
    // (read back in `interpose`): CPython's C handler, `void (int)`,
    // async-signal-safe, called from a handler of the same signal as the
    // kernel would.
    let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
    handler(signo);
    let timer = ARMED.load(Relaxed);
    if timer >= 0 {
        // (A system call: safe here. The timer is this process's: `take`
        // and `forget` forget it before it is deleted.)
        let shift = REFIRES.fetch_add(1, Relaxed).min(8);
        settime(
            timer,
            (REFIRE * (1 << shift)).min(REFIRE_MAX),
            std::time::Duration::ZERO,
        );
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Puts [`refire`] between the kernel and CPython's handler of [`SIGNAL`],
/// which `signal.signal` has just installed; the same flags and mask.
/// Whether it is.
fn interpose() -> bool {
    // SAFETY: `sigaction` is plain data, all zeroes a valid value; a null
    // new action only reads the current one into it.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaction(SIGNAL, std::ptr::null(), &mut action) } != 0
        || action.sa_sigaction == libc::SIG_DFL
        || action.sa_sigaction == libc::SIG_IGN
        || action.sa_flags & libc::SA_SIGINFO != 0
    {
        return false;
    }
    let ours = refire as extern "C" fn(libc::c_int) as libc::sighandler_t;
    if action.sa_sigaction != ours {
        CPYTHON.store(action.sa_sigaction, std::sync::atomic::Ordering::Relaxed);
    }
    action.sa_sigaction = ours;
    // SAFETY: `action` is the one read above with a handler of the same
    // kind (`void (int)`, no `SA_SIGINFO`); only this signal's action set.
    unsafe { libc::sigaction(SIGNAL, &action, std::ptr::null_mut()) == 0 }
}

/// Makes a timer of the monotonic clock that sends `signo` to thread `tid`
/// in `first`, then every `every` (zero: once); its id (the kernel's).
///
/// Through the system calls, not glibc's `timer_*` functions: before 2.34
/// those live in `librt`, a library this module would then load into every
/// profiled process (on newer glibc an empty one, yet five more mappings
/// that every fork copies).
pub(crate) fn timer(
    tid: i64,
    signo: libc::c_int,
    first: std::time::Duration,
    every: std::time::Duration,
) -> Option<libc::c_int> {
    timer_of(libc::CLOCK_MONOTONIC, tid, signo, first, every)
}

/// [`timer`] of the calling thread's CPU clock (`tid` must be that
/// thread): it fires once the thread has run `first`, then every `every`
/// of its running. The kernel looks at it at its scheduler's tick (up to
/// 4 ms later at 250 Hz), and arming it programs no timer of the CPU.
#[inline(always)]
pub(crate) fn cpu_timer(
    tid: i64,
    signo: libc::c_int,
    first: std::time::Duration,
    every: std::time::Duration,
) -> Option<libc::c_int> {
    timer_of(libc::CLOCK_THREAD_CPUTIME_ID, tid, signo, first, every)
}

#[inline(always)]
fn timer_of(
    clock: libc::clockid_t,
    tid: i64,
    signo: libc::c_int,
    first: std::time::Duration,
    every: std::time::Duration,
) -> Option<libc::c_int> {
    let timer = create_on(clock, tid, signo)?;
    let first = first.max(std::time::Duration::from_micros(1));
    if !settime(timer, first, every) {
        delete(timer);
        return None;
    }
    Some(timer)
}

/// Makes a disarmed timer of the monotonic clock that sends `signo` to
/// thread `tid` (see [`timer`]); its id (the kernel's).
fn create(tid: i64, signo: libc::c_int) -> Option<libc::c_int> {
    create_on(libc::CLOCK_MONOTONIC, tid, signo)
}

/// [`create`] of `clock`.
#[inline(always)]
fn create_on(clock: libc::clockid_t, tid: i64, signo: libc::c_int) -> Option<libc::c_int> {
    // SAFETY: `sigevent` is plain data, all zeroes a valid value.
    let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = signo;
    event.sigev_notify_thread_id = libc::c_int::try_from(tid).ok()?;
    let mut timer: libc::c_int = 0;
    // SAFETY: both pointers are to live locals (the kernel's `sigevent`
    // is libc's layout; the kernel writes the new timer's id, an int).
    if unsafe {
        syscall4(
            libc::SYS_timer_create,
            [
                libc::c_long::from(clock),
                &mut event as *mut libc::sigevent as libc::c_long,
                &mut timer as *mut libc::c_int as libc::c_long,
                0,
            ],
        )
    } != 0
    {
        return None;
    }
    Some(timer)
}

fn timespec(d: std::time::Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    }
}

/// Sets `timer` to fire in `first` (zero: never), then every `every`
/// (zero: once). Whether it was set.
fn settime(timer: libc::c_int, first: std::time::Duration, every: std::time::Duration) -> bool {
    let spec = libc::itimerspec {
        it_interval: timespec(every),
        it_value: timespec(first),
    };
    // SAFETY: `spec` is a live local; no old value is asked for; a timer id
    // that is no longer one only fails.
    (unsafe {
        syscall4(
            libc::SYS_timer_settime,
            [
                libc::c_long::from(timer),
                0,
                &spec as *const libc::itimerspec as libc::c_long,
                0,
            ],
        )
    }) == 0
}

/// Stops a timer [`timer`] made without deleting it (a system call, safe
/// in a signal handler).
pub(crate) fn disarm(timer: libc::c_int) {
    settime(timer, std::time::Duration::ZERO, std::time::Duration::ZERO);
}

/// Deletes a timer [`timer`] made.
pub(crate) fn delete(timer: libc::c_int) {
    // SAFETY: deletes a timer id of this process's (made by `timer`, deleted
    // once by its callers); an id that is not a timer only fails.
    unsafe { syscall4(libc::SYS_timer_delete, [libc::c_long::from(timer), 0, 0, 0]) };
}

/// A system call of up to four arguments, made by the `syscall`
/// instruction itself on x86-64: a forked child arms its timer in the fork
/// with it, and the C library's `syscall` is a function on a page of its
/// own that the child has not run (a fault in every child). The kernel's
/// result: negative (`-errno`) when the call failed.
///
/// # Safety
/// As for the call `nr` with these arguments: pointers among them must be
/// valid for what the kernel reads or writes through them.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall4(nr: libc::c_long, args: [libc::c_long; 4]) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the x86-64 Linux system call convention: number in rax,
    // arguments in rdi, rsi, rdx and r10, the result in rax; the kernel
    // clobbers rcx and r11 and leaves the stack alone. Memory the call
    // reads or writes is the caller's to vouch for (not `nomem`).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// [`syscall4`] through the C library's `syscall` elsewhere.
///
/// # Safety
/// As for the call `nr` with these arguments.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn syscall4(nr: libc::c_long, args: [libc::c_long; 4]) -> libc::c_long {
    // SAFETY: the caller's, for the call and its arguments.
    match unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) } {
        -1 => -libc::c_long::from(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        ),
        ret => ret,
    }
}

/// The monotonic clock's time in nanoseconds (at least 1), read in a
/// forked child's fork: by the system call, not the vDSO, whose pages the
/// child has not touched yet (a fault each), nor the C library's page of
/// `clock_gettime`. As [`echion_sampler::clock::now_ns`] reads it.
pub fn monotonic_ns_in_fork() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime(CLOCK_MONOTONIC, &ts)`: the kernel writes one
    // `timespec` to the local above.
    let ret = unsafe {
        syscall4(
            libc::SYS_clock_gettime,
            [
                libc::c_long::from(libc::CLOCK_MONOTONIC),
                std::ptr::addr_of_mut!(ts) as libc::c_long,
                0,
                0,
            ],
        )
    };
    if ret != 0 {
        return 1;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
        .max(1)
}

/// Takes the pending start, if any, and deletes its timer (the caller
/// gives the signal back, [`restore`]). When the fork was, for the run to
/// start.
pub fn take() -> Option<u64> {
    let Pending {
        timer,
        forked_at_ns,
    } = {
        let mut pending = pending();
        ANY_PENDING.store(false, std::sync::atomic::Ordering::Release);
        let taken = pending.take()?;
        // (Before the timer is deleted: `refire` sets it no more. A stop
        // on another thread may still meet a `refire` under way, whose
        // set of a deleted timer only fails.)
        ARMED.store(-1, std::sync::atomic::Ordering::Relaxed);
        taken
    };
    // (A timer this process made: an inherited one was forgotten in the
    // child; deleted once: taken from `PENDING` above.)
    delete(timer);
    Some(forked_at_ns)
}

/// Gives the signal back to its default where its handler is still ours.
/// An error is an exception of a program's handler of another signal
/// (CPython runs pending handlers before it sets one): the caller raises
/// it where the program would have met it.
pub fn restore(py: Python<'_>) -> PyResult<()> {
    let Some(kit) = KIT.get() else {
        return Ok(());
    };
    let handler = kit.getsignal.bind(py).call1(kit.which.bind(py))?;
    if handler.is(kit.start.bind(py)) {
        kit.signal.bind(py).call1(kit.uninstall.bind(py))?;
    }
    Ok(())
}
