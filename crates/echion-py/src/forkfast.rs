//! A forked child's put-off start, set up in the fork itself, with no
//! Python code (wall and CPU mode, from 3.9; not an attached run's).
//!
//! A child that the main thread forks pays for every page it touches:
//! CPython's after-fork hooks alone (the list of them copied, each one
//! called) cost a fork loop's child a tenth of its rate, and installing a
//! Python signal handler there as much again (`benches/startup.py`). So
//! the ticks' real-time signal ([`crate::sigtick`], taken at the run's
//! start even where a sampler thread ticks instead) has a handler of ours
//! in every process, and a child needs no Python at its fork: a
//! `pthread_atfork` child handler ([`crate::child_forked`]) forgets the
//! parent's run and arms two timers of that signal: one of the child's
//! CPU clock, an interval ahead, and one of the monotonic clock, 16 ms
//! ahead or an interval if that is longer ([`WAITING_FIRST`]: a timer due
//! before the CPU's next tick costs a virtual machine's child two exits to
//! the hypervisor); both fire again every 10 ms until taken (CPython's own
//! after-fork work clears the signals tripped before it). A child that
//! runs starts an interval of its running after the fork (seen at the
//! kernel's next tick, 4 ms at most at 250 Hz), one that waits 16 ms after
//! it; either way its run counts from the fork. When one fires, the tick's
//! handler finds no run but this pending start and calls CPython's own C
//! handler of signals ([`fire`]), whose table already names
//! `echion.core._start_forked` for that signal ([`set_up`], in the parent:
//! the table is copied by the fork); CPython then calls it from the main
//! thread at its next safe point, and the run starts there ([`take`]): a
//! sampler thread of its own (native), or none with `--no-thread`. A child
//! that ends before then (`os._exit`) started nothing and wrote nothing.
//!
//! A child this path declines (forked by another thread, the ticks'
//! signal no longer ours, hooks that need Python) forgets the parent's run
//! in the fork all the same; the Python hook, which the bootstrap
//! registers once the program imports `threading`, starts its own.
//!
//! What the child runs in the fork touches two pages of echion's: one of
//! code, and the statics it writes, which share one section
//! (`.data.echion_fork`, with `_ECHION_PROFILED_PID`'s entry in the
//! environment): with the wheel's one codegen unit they are a few hundred
//! bytes together. Its only call into libc is to a function the fork's
//! own path calls too (`getpid`: a page of libc the child had not touched
//! yet would be a fault); the timers' system calls are made inline
//! (`forkstart::syscall4`); it reads no constant from `.rodata`.
//!
//! The price, in the profiled process: `signal.getsignal()` of the ticks'
//! signal names `_start_forked` instead of `SIG_DFL` (its action is
//! echion's handler), and CPython gives that signal back to its default at
//! its finalisation, after echion's stop (whose timer is gone).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use pyo3::prelude::*;

/// Set up in this process: the signal's Python handler is ours and the
/// `pthread_atfork` child handler registered.
static IN_C: AtomicBool = AtomicBool::new(false);
/// The signal whose CPython handler is `_start_forked` (0: none).
static SIGNO: AtomicI32 = AtomicI32::new(0);
/// CPython's C handler of signals (what `signal.signal` installs).
static CPYTHON: AtomicUsize = AtomicUsize::new(0);
/// The run's interval: how long a child puts its start off.
static INTERVAL_NS: AtomicU64 = AtomicU64::new(0);
/// When this process was forked, while its start is put off (0: none).
#[link_section = ".data.echion_fork"]
static PENDING_NS: AtomicU64 = AtomicU64::new(0);
/// The timers of the start put off: of the monotonic clock, and of the
/// child's main thread's CPU clock.
#[link_section = ".data.echion_fork"]
static TIMER: AtomicI32 = AtomicI32::new(-1);
#[link_section = ".data.echion_fork"]
static CPU_TIMER: AtomicI32 = AtomicI32::new(-1);

/// The least a child that waits puts its start off by (a child that runs
/// starts once it has run an interval): later than the kernel's next tick
/// on its CPU (every 4 ms at 250 Hz, 10 ms at 100 Hz).
///
/// A timer that fires before everything else due on its CPU makes the
/// kernel program the CPU's timer when it is armed, and again when the
/// child that ends first deletes it: two exits to the hypervisor on a
/// virtual machine, which cost a fork loop's child more than the rest of
/// its fork (a C fork loop, 30 paired rounds: 0.91 of its plain rate with
/// a timer of 1 ms in each child, 0.97 with one of the CPU clock and one
/// of 16 ms, 1.00 with one due in 100 ms; `benches/startup.py` measures
/// the first two forms under Python).
const WAITING_FIRST: std::time::Duration = std::time::Duration::from_millis(16);
/// The longest a forked child's start may be on its way, at `interval`,
/// when nothing keeps it from running: put off by [`WAITING_FIRST`] (or
/// an interval), then its signal again a [`crate::forkstart::REFIRE`]
/// later (or an interval) where CPython's after-fork work cleared the
/// first. (A start put off by [`crate::forkstart`], an interval, comes
/// sooner.)
pub fn put_off_at_most(interval: std::time::Duration) -> std::time::Duration {
    interval.max(WAITING_FIRST) + interval.max(crate::forkstart::REFIRE)
}

/// The fork that made this process put its start off here (the Python
/// after-fork hook, if the program's threads made it needed, has nothing
/// left to do).
#[link_section = ".data.echion_fork"]
static HANDLED: AtomicBool = AtomicBool::new(false);

/// Sets the fast path up in the parent for the ticks' signal `signo` and
/// the run's `interval`: `_start_forked` made the signal's Python handler
/// (in CPython's table only: its action goes back to the tick's handler at
/// once) and the child handler registered. Whether it is (not where
/// `signal.signal` refuses: a thread other than the main one, a
/// subinterpreter).
/// An error is an exception of a program's handler of another signal,
/// which CPython ran first: raised where the program would have met it.
pub fn set_up(py: Python<'_>, signo: libc::c_int, interval: std::time::Duration) -> PyResult<bool> {
    set_interval(interval.as_nanos() as u64);
    if IN_C.load(Ordering::Acquire) && SIGNO.load(Ordering::Relaxed) == signo {
        return Ok(true);
    }
    let Some(tick) = action(signo) else {
        return Ok(false);
    };
    if let Err(e) = crate::forkstart::install_start_handler(py, signo) {
        // `signal.signal` refused (nothing changed), or a handler it ran
        // first raised.
        // SAFETY: `tick` is the action read above, a valid one.
        unsafe { libc::sigaction(signo, &tick, std::ptr::null_mut()) };
        return if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    let cpython = action(signo);
    // The tick's handler back, whatever happened.
    // SAFETY: `tick` is the action read above, a valid one.
    unsafe { libc::sigaction(signo, &tick, std::ptr::null_mut()) };
    let Some(cpython) = cpython else {
        return Ok(false);
    };
    if cpython.sa_sigaction == libc::SIG_DFL
        || cpython.sa_sigaction == libc::SIG_IGN
        || cpython.sa_sigaction == tick.sa_sigaction
    {
        return Ok(false);
    }
    CPYTHON.store(cpython.sa_sigaction, Ordering::Relaxed);
    SIGNO.store(signo, Ordering::Relaxed);
    adopt_pid_entry();
    crate::register_fork_handlers();
    IN_C.store(true, Ordering::Release);
    Ok(true)
}

/// The run's interval in nanoseconds: how long a child puts its start off
/// (each run's, set at its start).
pub fn set_interval(ns: u64) {
    INTERVAL_NS.store(ns, Ordering::Relaxed);
}

/// The action of `signo` now.
fn action(signo: libc::c_int) -> Option<libc::sigaction> {
    // SAFETY: `sigaction` is plain data, all zeroes a valid value; a null
    // new action only reads the current one into it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) } == 0).then_some(old)
}

/// Whether the fast path is set up here, and for which signal.
pub fn signal() -> Option<libc::c_int> {
    IN_C.load(Ordering::Acquire)
        .then(|| SIGNO.load(Ordering::Relaxed))
}

/// What [`prepare_fork`] found for the child: whether its start may be
/// put off in the fork.
#[link_section = ".data.echion_fork"]
static FAST: AtomicBool = AtomicBool::new(false);
/// `_ECHION_PROFILED_PID`'s digits in the environment at the fork, where
/// they are as the bootstrap wrote them (0: not).
#[link_section = ".data.echion_fork"]
static PID_AT: AtomicUsize = AtomicUsize::new(0);
/// The thread that [`prepare_fork`] decided for ([`thread_pointer`]): before
/// glibc 2.28 no lock keeps two threads' forks from running their handlers
/// at once, and a child takes only its own thread's decision.
#[link_section = ".data.echion_fork"]
static FAST_FOR: AtomicUsize = AtomicUsize::new(0);
/// The child could not write its pid in the fork: the start does.
#[link_section = ".data.echion_fork"]
static PID_UNSET: AtomicBool = AtomicBool::new(false);

/// The calling thread's thread pointer, read without a call: distinct for
/// each live thread, and the same in a forked child as in the thread that
/// forked it. (`pthread_self` would do, but its page of libc is one that a
/// fork's child has not touched yet: a fault.)
#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: the x86-64 TLS ABI keeps the thread control block's own
        // address in its first word, at `%fs:0`, in every thread; a load.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register, set for every thread.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags))
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: pthread_self has no preconditions.
        (unsafe { libc::pthread_self() }) as usize
    }
}

/// `_ECHION_PROFILED_PID`'s entry in the C environment once the fast path
/// is set up ([`adopt_pid_entry`]): beside the statics that a fork's child
/// writes anyway, so that writing its pid there copies no page more (the
/// entry `setenv` made is on the heap, among CPython's objects).
#[link_section = ".data.echion_fork"]
static PID_ENTRY: PidEntry = PidEntry(std::cell::UnsafeCell::new(
    *b"_ECHION_PROFILED_PID=0000000000\0",
));

/// The bytes of [`PID_ENTRY`]: a NUL-terminated `NAME=VALUE` string.
struct PidEntry(std::cell::UnsafeCell<[u8; PID_NAME_LEN + crate::PID_DIGITS + 1]>);

// SAFETY: written only while one thread can read it (the start, before
// the entry is in the environment; a forked child, which has one thread)
// or in place as the environment's other writers do (see
// `crate::set_profiled_pid`).
unsafe impl Sync for PidEntry {}

/// Makes [`PID_ENTRY`] the environment's `_ECHION_PROFILED_PID`, with the
/// value it has now, where that is as the bootstrap wrote it (ten digits).
/// In the parent, from the main thread, at the fast path's set-up.
fn adopt_pid_entry() {
    let Some(value) = crate::profiled_pid_digits() else {
        return;
    };
    let entry = PID_ENTRY.0.get().cast::<u8>();
    // Already adopted: the environment holds `NAME=VALUE`, so the entry
    // starts the name's length before the value (compared, not read).
    if entry.cast_const() == value.wrapping_sub(PID_NAME_LEN).cast_const() {
        return;
    }
    // SAFETY: ten digits of the environment's value are copied into the
    // entry's value (its name, `=` and NUL stay), which is not in the
    // environment yet; `putenv` then keeps a pointer to the static,
    // NUL-terminated entry, for good. Setting the environment from the main
    // thread at the run's start is what the bootstrap's `os.environ` does
    // too.
    unsafe {
        std::ptr::copy_nonoverlapping(value, entry.add(PID_NAME_LEN), crate::PID_DIGITS);
        libc::putenv(entry.cast());
    }
}

/// The variable's name and `=`, as the environment holds it before its
/// value (21 bytes), as the numbers the child compares them with: in its
/// code, not in a page of constants it would fault in.
const PID_NAME: [u64; 3] = [
    u64::from_le_bytes(*b"_ECHION_"),
    u64::from_le_bytes(*b"PROFILED"),
    u64::from_le_bytes(*b"_PID=\0\0\0"),
];
/// The name's length.
const PID_NAME_LEN: usize = 21;

/// In the parent, before a fork (`pthread_atfork`'s prepare handler):
/// whether the child may put its start off in the fork (`fast`), with
/// where the pid's digits are.
///
/// Each static is written only when it changes: the last fork left their
/// page copy-on-write, and a write would copy it in every fork of a loop
/// (the child takes the fork's time itself, [`forget_in_fork`]).
pub fn prepare_fork(fast: bool) {
    if fast {
        let at = crate::profiled_pid_digits().map_or(0, |p| p as usize);
        store_changed(&PID_AT, at);
        store_changed(&FAST_FOR, thread_pointer());
    }
    if FAST.load(Ordering::Relaxed) != fast {
        FAST.store(fast, Ordering::Relaxed);
    }
}

/// Stores `value` in `cell` unless it holds it already (see
/// [`prepare_fork`]).
fn store_changed(cell: &AtomicUsize, value: usize) {
    if cell.load(Ordering::Relaxed) != value {
        cell.store(value, Ordering::Relaxed);
    }
}

/// In a forked child, in the fork (async-signal-safe): forgets a start the
/// parent put off (its timer is the parent's; written only if there was
/// one), and says when the fork was (now) if this child may put its start
/// off ([`prepare_fork`]).
pub fn forget_in_fork() -> Option<u64> {
    if PENDING_NS.load(Ordering::Relaxed) != 0 {
        PENDING_NS.store(0, Ordering::Relaxed);
        TIMER.store(-1, Ordering::Relaxed);
        CPU_TIMER.store(-1, Ordering::Relaxed);
    }
    if HANDLED.load(Ordering::Relaxed) {
        HANDLED.store(false, Ordering::Relaxed);
    }
    (FAST.load(Ordering::Relaxed) && FAST_FOR.load(Ordering::Relaxed) == thread_pointer())
        .then(crate::forkstart::monotonic_ns_in_fork)
}

/// In a forked child, in the fork: writes its `pid` over the parent's in
/// `_ECHION_PROFILED_PID`'s digits where [`prepare_fork`] found them (and
/// they are still that variable's). Whether it did.
pub fn write_pid(pid: u32) -> bool {
    let wrote = write_pid_at(pid);
    if !wrote {
        PID_UNSET.store(true, Ordering::Relaxed);
    }
    wrote
}

/// Whether the fork left `_ECHION_PROFILED_PID` to the start to set (once).
pub fn pid_left_unset() -> bool {
    PID_UNSET.swap(false, Ordering::Relaxed)
}

fn write_pid_at(pid: u32) -> bool {
    let at = PID_AT.load(Ordering::Relaxed);
    if at < PID_NAME_LEN {
        return false;
    }
    // SAFETY: `at` was the variable's value in the environment of the
    // parent at the fork, `PID_DIGITS` digits and a NUL after the name:
    // checked byte by byte (no call: each page of code a child runs first
    // costs it a fault) before the digits are written, in this child's
    // one thread.
    unsafe {
        let value = at as *mut u8;
        let name = value.sub(PID_NAME_LEN);
        let word = |i: usize| u64::from_le(std::ptr::read_unaligned(name.add(8 * i).cast::<u64>()));
        // (The last word's first five bytes: `_PID=`.)
        if word(0) != PID_NAME[0]
            || word(1) != PID_NAME[1]
            || word(2) & 0xff_ffff_ffff != PID_NAME[2]
            || *value.add(crate::PID_DIGITS) != 0
        {
            return false;
        }
        // (Byte by byte: a loop the compiler turned into vector code would
        // read its constants from a page the child faults in.)
        let mut pid = pid;
        for i in (0..crate::PID_DIGITS).rev() {
            std::ptr::write_volatile(value.add(i), b'0' + (pid % 10) as u8);
            pid /= 10;
        }
    }
    true
}

/// In a forked child, in the fork: puts its start off, from
/// `forked_at_ns`, on thread `tid` (its one thread), until it has run for
/// the run's interval (its CPU clock's timer) or [`WAITING_FIRST`] (at
/// least the interval) has passed (the monotonic clock's), whichever comes
/// first. Whether it did (the monotonic clock's timer could be made).
///
/// Both fire again every [`crate::forkstart::REFIRE`] (at least the
/// interval) until the start takes them ([`take`]): a first signal may
/// come before CPython's own after-fork work, which clears the signals
/// tripped so far.
pub fn defer_in_fork(tid: i64, forked_at_ns: u64) -> bool {
    let signo = SIGNO.load(Ordering::Relaxed);
    let interval = std::time::Duration::from_nanos(INTERVAL_NS.load(Ordering::Relaxed));
    let every = interval.max(crate::forkstart::REFIRE);
    // (Pending before a timer can fire.)
    PENDING_NS.store(forked_at_ns.max(1), Ordering::Release);
    let Some(timer) = crate::forkstart::timer(tid, signo, interval.max(WAITING_FIRST), every)
    else {
        PENDING_NS.store(0, Ordering::Relaxed);
        return false;
    };
    TIMER.store(timer, Ordering::Relaxed);
    // (Without it, the child that runs starts when one that waits does.)
    let cpu = crate::forkstart::cpu_timer(tid, signo, interval, every);
    CPU_TIMER.store(cpu.unwrap_or(-1), Ordering::Relaxed);
    HANDLED.store(true, Ordering::Relaxed);
    true
}

/// Whether this process's fork put its start off here (the Python
/// after-fork hook then returns at once).
pub fn handled() -> bool {
    HANDLED.load(Ordering::Relaxed)
}

/// From the ticks' handler when there is no run: if a start is put off
/// here, CPython is told its signal came (its own handler, called as the
/// kernel would), and calls `_start_forked` at its next safe point.
pub fn fire(signo: libc::c_int) {
    if PENDING_NS.load(Ordering::Acquire) == 0 || SIGNO.load(Ordering::Relaxed) != signo {
        return;
    }
    let handler = CPYTHON.load(Ordering::Relaxed);
    if handler == 0 {
        return;
    }
    // SAFETY: the address `signal.signal` installed for this signal in the
    // parent (the same code in this forked child): CPython's C handler,
    // `void (int)`, async-signal-safe, called from a signal handler of
    // the same signal as the kernel would.
    let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
    handler(signo);
}

/// Takes the start put off here, if any, and deletes its timers: when the
/// fork was, for the run to start.
pub fn take() -> Option<u64> {
    let at = PENDING_NS.swap(0, Ordering::AcqRel);
    if at == 0 {
        return None;
    }
    for timer in [&TIMER, &CPU_TIMER] {
        let timer = timer.swap(-1, Ordering::Relaxed);
        if timer >= 0 {
            crate::forkstart::delete(timer);
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points [`PID_AT`] at the value of `entry` (an environment string)
    /// and writes `pid` there; whether it did, and the entry after.
    fn write_into(entry: &[u8], pid: u32) -> (bool, Vec<u8>) {
        let mut buf = entry.to_vec();
        buf.push(0);
        let at = buf.iter().position(|&b| b == b'=').map_or(0, |i| i + 1);
        PID_AT.store(buf.as_mut_ptr() as usize + at, Ordering::Relaxed);
        let wrote = write_pid_at(pid);
        PID_AT.store(0, Ordering::Relaxed);
        buf.pop();
        (wrote, buf)
    }

    #[test]
    fn the_thread_pointer_is_each_threads_own() {
        let here = thread_pointer();
        assert_ne!(here, 0);
        assert_eq!(here, thread_pointer());
        let there = std::thread::spawn(thread_pointer).join().unwrap();
        assert_ne!(there, 0);
        assert_ne!(here, there);
    }

    #[test]
    fn the_pid_entry_takes_the_environments_value_and_place() {
        // (The only test that sets this variable.)
        std::env::set_var("_ECHION_PROFILED_PID", "0000004242");
        adopt_pid_entry();
        // SAFETY: a NUL-terminated name; only read.
        let value = unsafe { libc::getenv(c"_ECHION_PROFILED_PID".as_ptr()) };
        assert_eq!(
            value.cast::<u8>(),
            PID_ENTRY.0.get().cast::<u8>().wrapping_add(PID_NAME_LEN)
        );
        assert_eq!(std::env::var("_ECHION_PROFILED_PID").unwrap(), "0000004242");
        // Again: already there, nothing changes.
        adopt_pid_entry();
        assert_eq!(std::env::var("_ECHION_PROFILED_PID").unwrap(), "0000004242");
        // A value not as the bootstrap writes it is left where it is.
        std::env::set_var("_ECHION_PROFILED_PID", "17");
        adopt_pid_entry();
        assert_eq!(std::env::var("_ECHION_PROFILED_PID").unwrap(), "17");
        // SAFETY: as above.
        let value = unsafe { libc::getenv(c"_ECHION_PROFILED_PID".as_ptr()) };
        assert_ne!(
            value.cast::<u8>(),
            PID_ENTRY.0.get().cast::<u8>().wrapping_add(PID_NAME_LEN)
        );
        std::env::remove_var("_ECHION_PROFILED_PID");
    }

    // (One test: `PID_AT` is one static.)
    #[test]
    fn the_child_pid_goes_over_the_parent_one_in_place_and_nowhere_else() {
        assert_eq!(
            write_into(b"_ECHION_PROFILED_PID=0000000123", 4_194_304),
            (true, b"_ECHION_PROFILED_PID=0004194304".to_vec())
        );
        for entry in [
            &b"_ECHION_PROFILED_PIX=0000000123"[..],
            b"XECHION_PROFILED_PID=0000000123",
            b"_ECHION_PROFILED_PID=00000001234",
        ] {
            assert_eq!(write_into(entry, 7), (false, entry.to_vec()));
        }
        // (No digits found by the parent: nothing, and the start sets it.)
        assert!(!write_pid(7));
        assert!(pid_left_unset() && !pid_left_unset());
    }
}
