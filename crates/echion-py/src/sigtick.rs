//! Sampling with no thread of echion's (`echion --no-thread`).
//!
//! A thread of the profiled process costs it at every fork, before it reads
//! anything: the fork flushes the TLB of each CPU the thread ran on lately,
//! and every page the thread writes after the fork is copied (a fork loop
//! runs at 0.79-0.93 of its plain rate with a thread that only wakes every
//! millisecond; see `benches/startup.py`). Here the ticks run in the
//! handler of a timer signal that a POSIX timer sends the thread that
//! started sampling (the main thread), every interval: that thread stops
//! where it is for the few microseconds of a tick.
//!
//! A handler may have stopped its thread anywhere, `malloc` and echion's
//! own locks included, so a tick here takes no lock it could wait for (the
//! registry's is tried, see `RegistryQueue::drain_into`) and allocates from
//! [`crate::sigheap`], never from `malloc`. The run's start and end run
//! outside the handler ([`start`], [`stop`]); the tick and the end never
//! overlap: each holds [`BUSY`], and a tick that finds it held (a stop on
//! another thread) is skipped. The timer's signal is one of the real-time
//! signals the program leaves at its default, taken for the process's
//! life: after the run its handler stays, inert, so that a signal still
//! pending cannot end the process (until CPython's finalisation, which
//! gives it its default action where `forkfast` made `_start_forked` its
//! Python handler: after echion's stop, whose timer is gone).
//!
//! The price is the program's: its main thread's system calls are
//! interrupted every interval (`SA_RESTART` restarts most; sleeps, polls
//! and waits with a timeout return early, which CPython retries), and
//! `signal.pause()` on the main thread returns at the next tick.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use echion_sampler::run::Opened;
use echion_sampler::{clock, Config, Control, SamplerError, Summary, Ticking};

use crate::{forkfast, forkstart, sigheap};

/// A run under way.
struct Run {
    ticking: Ticking<'static>,
    control: Arc<Control>,
    timer: libc::c_int,
    interval_ns: u64,
    /// When the timer's signal last came.
    last_ns: u64,
    /// No tick before then (see [`SHARE`]).
    resume_ns: u64,
    /// Sampling ended (exposure over, a failed write, out of memory): the
    /// timer is stopped and the run waits for [`stop`].
    over: bool,
}

/// The run, boxed: the slot is a word among the statics that each fork
/// and tick write (one page, `.data.echion_fork`), the run's own fields
/// in the heap.
struct Slot(UnsafeCell<Option<Box<Run>>>);

// SAFETY: the run is only touched by whoever holds BUSY (a tick, a start
// or a stop), one at a time.
unsafe impl Sync for Slot {}

#[link_section = ".data.echion_fork"]
static SLOT: Slot = Slot(UnsafeCell::new(None));

/// The most of the main thread's time ticks take: after a tick that took
/// `d`, none comes for `d * (SHARE - 1)` (the signals in between return at
/// once, counted as shed). A tick that takes longer than the interval (a
/// thousand threads, or greenlets, at 100 µs) would otherwise leave the
/// program no time at all, where a sampler thread only falls behind on a
/// CPU of its own; the totals stay exact (each sample holds the time since
/// its thread's last one).
const SHARE: u64 = 4;

/// The longest the ticks rest after one ([`SHARE`]): a tick's duration is
/// wall time, and one whose thread the kernel set aside meanwhile (a busy
/// machine) would otherwise put the next ticks, and the flush of what
/// they hold, off for three times as long (a child that then ends by
/// `os._exit` lost 150 ms that way). A tick that really takes longer
/// than this (tens of thousands of threads) takes more than its share.
const REST_AT_MOST_NS: u64 = 10_000_000;

/// How long the ticks rest after one that took `took_ns` (wall time).
fn rest_after(took_ns: u64) -> u64 {
    took_ns.saturating_mul(SHARE - 1).min(REST_AT_MOST_NS)
}

/// Held by the tick, the start and the stop while they use [`SLOT`].
#[link_section = ".data.echion_fork"]
static BUSY: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    /// Touched by [`start`] on the ticks' thread.
    static TOUCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The timer's signal once one was taken (0: none yet).
static SIGNO: AtomicI32 = AtomicI32::new(0);

/// Why sampling could not start with no thread.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The run could not be set up.
    #[error("{0}")]
    Sampler(#[from] SamplerError),
    /// Every real-time signal is the program's.
    #[error("--no-thread: every real-time signal has a handler of the program's; run without --no-thread")]
    NoSignal,
    /// The timer or the handler's heap could not be made.
    #[error("--no-thread: cannot set up the timer signal's {0}: {1}")]
    Setup(&'static str, std::io::Error),
    /// An earlier run used up the ticks' heap (it ran out of memory).
    #[error("--no-thread: an earlier run in this process used up the ticks' memory; sample without --no-thread")]
    HeapUsed,
}

/// Starts sampling `config` into the profile `opened` (else one it opens),
/// its ticks run by a timer signal on the calling thread; `control` holds
/// the registry the hooks post to. Returns once the timer is armed (the
/// first tick comes an interval later). On an error nothing is left
/// armed.
pub fn start(
    config: &Config,
    control: Arc<Control>,
    opened: Option<Result<Opened, SamplerError>>,
) -> Result<(), StartError> {
    let origin_ns = config.forked_at_ns.unwrap_or_else(clock::now_ns);
    if !sigheap::arm() {
        return Err(StartError::Setup("heap", std::io::Error::last_os_error()));
    }
    if !sigheap::usable() {
        return Err(StartError::HeapUsed);
    }
    quiet_panics_in_ticks();
    let signo = signal()?;
    sigheap::set_signal(signo);
    echion_sampler::mem::guarded::prepare_thread();
    // This thread's block of the extension's thread-locals exists before
    // a tick runs on it (made on first use, by `malloc`).
    TOUCHED.with(|t| t.set(true));
    let interval_ns = echion_sampler::run::interval_ns(config);
    let interval = std::time::Duration::from_nanos(interval_ns);
    // Kept for the process's life (a forked child's copy too): the run's
    // engine borrows them, from a tick as from its end.
    let reader = Box::leak(Box::new(echion_sampler::reader_for(config)?));
    let (session, opened) = echion_sampler::prepare(config, reader, opened)?;
    let session = Box::leak(Box::new(session));
    control.mark_opened();
    let make = || -> Result<Box<Run>, StartError> {
        Ok(Box::new(Run {
            ticking: Ticking::new(config, session, opened, origin_ns, false)?,
            control: control.clone(),
            timer: -1,
            interval_ns,
            last_ns: clock::now_ns(),
            resume_ns: 0,
            over: false,
        }))
    };
    // The engine and the run are made in the ticks' heap, whose region a
    // forked child gets empty: a fork copies none of them, and the ticks
    // after a fork write no page of theirs that the fork made shared (see
    // `sigheap`). Nothing made there may outlive the run elsewhere: so not
    // native mode's (its capturer's slot is kept for the process, a
    // child's included), nor the thread's handle that `std` makes at its
    // first use (made here first, by `malloc`).
    let run = if config.native {
        make()?
    } else {
        drop(std::thread::current());
        sigheap::within(make)?
    };
    take_busy();
    // SAFETY: BUSY is held.
    let slot = unsafe { &mut *SLOT.0.get() };
    *slot = Some(run);
    let timer = forkstart::timer(crate::current_tid(), signo, interval, interval);
    match (slot.as_mut(), timer) {
        (Some(run), Some(timer)) => run.timer = timer,
        _ => {
            let error = std::io::Error::last_os_error();
            *slot = None;
            BUSY.store(false, Ordering::Release);
            return Err(StartError::Setup("timer", error));
        }
    }
    BUSY.store(false, Ordering::Release);
    // (The program's start is in the profile: its first tick comes an
    // interval from now, wherever the thread is.)
    control.mark_started();
    Ok(())
}

/// Ends the run, if there is one: the timer deleted, a tick under way (on
/// another thread) waited for, the profile closed. Outside any tick.
pub fn stop() -> Option<Result<Summary, SamplerError>> {
    take_busy();
    // SAFETY: BUSY is held.
    let run = unsafe { (*SLOT.0.get()).take() };
    BUSY.store(false, Ordering::Release);
    let mut run = *run?;
    // (A signal still pending finds no run.)
    forkstart::delete(run.timer);
    sigheap::drain_deferred();
    let leaked = sigheap::leaked();
    if leaked > 0 {
        // Blocks of `malloc`'s freed in ticks that could not be kept for
        // `free` (never given back).
        run.ticking
            .add_metadata("tick_leaked_blocks", leaked.to_string());
    }
    Some(run.ticking.finish(&run.control.registry))
}

/// In a forked child: the parent's run (whose tick may have been under way
/// on a thread the child does not have) is forgotten, never touched; its
/// timer is not the child's.
pub fn forget_after_fork() {
    // SAFETY: the child has one thread, this one. In the fork no tick can
    // come (a timer is not inherited, nor a pending signal); later (the
    // Python hook's renewal in a child whose start the fork put off) the
    // start's timers may tick here, but the slot is already empty then
    // (`forget_in_fork_of_ticking_thread`, in the fork), and a tick that
    // finds it empty only reads it: nothing else writes the slot. The
    // parent's run is overwritten without being dropped.
    unsafe { std::ptr::write(SLOT.0.get(), None) };
    BUSY.store(false, Ordering::Release);
    sigheap::after_fork_in_child();
}

/// Ticks now, on this thread, if a run ticks here (its signal raised:
/// its handler runs before this returns, unless the thread blocks the
/// signal, which then comes once it is unblocked). Whether it did.
pub fn tick_here() -> bool {
    take_busy();
    // SAFETY: BUSY is held: no start or stop writes the slot meanwhile;
    // only whether a run is in it is read.
    let ticking = unsafe { (*SLOT.0.get()).is_some() };
    BUSY.store(false, Ordering::Release);
    let signo = signo();
    if !ticking || signo <= 0 || !is_ours(signo) {
        return false;
    }
    // SAFETY: sends the ticks' signal, whose handler is ours, to the
    // calling thread.
    unsafe { libc::raise(signo) == 0 }
}

/// The ticks' signal taken for the process, if any (0: none yet).
pub fn signo() -> libc::c_int {
    SIGNO.load(Ordering::Acquire)
}

/// Whether `signo`'s action is still the ticks' handler.
pub fn is_ours(signo: libc::c_int) -> bool {
    disposition(signo) == Some(on_tick as extern "C" fn(libc::c_int) as usize)
}

/// Takes the ticks' signal now (the one taken earlier if it is still
/// ours), before any run: a forked child's put-off start uses it too
/// ([`crate::forkfast`]).
pub fn claim() -> Result<libc::c_int, StartError> {
    signal()
}

/// [`forget_after_fork`] in a child that the ticks' thread forked, in the
/// fork itself: no tick was under way; the slot is written only if it
/// holds the parent's run, [`BUSY`] only if a stop on another thread held
/// it.
pub fn forget_in_fork_of_ticking_thread() {
    // SAFETY: the child has one thread, this one, and no tick (a timer is
    // not inherited, nor a pending signal): nothing else uses the slot.
    // The parent's run is overwritten without being dropped.
    unsafe {
        if (*SLOT.0.get()).is_some() {
            std::ptr::write(SLOT.0.get(), None);
        }
    }
    if BUSY.load(Ordering::Relaxed) {
        BUSY.store(false, Ordering::Release);
    }
    sigheap::after_fork_of_ticking_thread();
}

/// Takes [`BUSY`], waiting out a tick under way on another thread (a few
/// microseconds). Never called in a tick.
fn take_busy() {
    while BUSY
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// The timer's signal: the one taken earlier, else the highest real-time
/// signal the program leaves at its default, with the tick's handler
/// installed.
fn signal() -> Result<libc::c_int, StartError> {
    // SAFETY: `sigset_t` is plain data; pthread_sigmask with no new set only
    // reads this thread's mask into it.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) };
    // SAFETY: `mask` was filled above.
    let blocked = |signo| unsafe { libc::sigismember(&mask, signo) } == 1;
    let handler = on_tick as extern "C" fn(libc::c_int) as usize;
    let taken = SIGNO.load(Ordering::Acquire);
    // Still ours (the program may have taken it since), and let through.
    if taken != 0 && disposition(taken) == Some(handler) && !blocked(taken) {
        return Ok(taken);
    }
    let (low, high) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for signo in (low..=high).rev() {
        if disposition(signo) != Some(libc::SIG_DFL) || blocked(signo) {
            continue;
        }
        // SAFETY: `sigaction` is plain data, all zeroes a valid value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler;
        // Most interrupted system calls go on; the signal itself is
        // blocked while its handler runs (no nested tick).
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is initialised; the old action is not wanted.
        if unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) } == 0 {
            SIGNO.store(signo, Ordering::Release);
            return Ok(signo);
        }
    }
    Err(StartError::NoSignal)
}

/// The action of `signo` now (its handler's address, or `SIG_DFL`/`SIG_IGN`).
fn disposition(signo: libc::c_int) -> Option<usize> {
    // SAFETY: `sigaction` is plain data, all zeroes a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries into `old`, a live local.
    (unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) } == 0).then_some(old.sa_sigaction)
}

/// Makes a panic in a tick silent (it ends the run instead, see
/// [`on_tick`]): the default hook prints it, which takes locks the stopped
/// thread may hold. Other panics go to the hook there was.
fn quiet_panics_in_ticks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !sigheap::active() {
                previous(info);
            }
        }));
    });
}

/// The timer's handler: one tick, on the thread the timer signals.
extern "C" fn on_tick(signo: libc::c_int) {
    // SAFETY: errno is the calling thread's; read and put back so that the
    // interrupted code never sees ours.
    let errno = unsafe { *libc::__errno_location() };
    if BUSY
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: BUSY is held.
        if let Some(run) = unsafe { (*SLOT.0.get()).as_mut() } {
            let now = clock::now_ns();
            if now.saturating_sub(run.last_ns) > 2 * run.interval_ns {
                // The signal came more than an interval late.
                run.ticking.note_late();
            }
            run.last_ns = now;
            if run.over {
                // (A signal sent before the timer stopped.)
            } else if now < run.resume_ns {
                run.ticking.note_shed();
            } else {
                sigheap::enter();
                let go_on = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run.ticking.tick(now, &run.control.registry)
                }))
                .unwrap_or(false);
                sigheap::leave();
                let end = clock::now_ns();
                let took = end.saturating_sub(now);
                run.ticking.note_tick_time(took);
                run.resume_ns = end + rest_after(took);
                if !go_on {
                    run.over = true;
                    forkstart::disarm(run.timer);
                }
            }
        } else {
            // A forked child whose start is put off (no run yet).
            forkfast::fire(signo);
        }
        BUSY.store(false, Ordering::Release);
    }
    // SAFETY: as above. (Put back only where it changed: errno is in the
    // thread's TLS page, which a fork left copy-on-write, and a write there
    // would copy it.)
    unsafe {
        let now = libc::__errno_location();
        if *now != errno {
            *now = errno;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticks_rest_three_times_a_tick_and_never_more_than_10_ms() {
        assert_eq!(rest_after(20_000), 60_000);
        assert_eq!(rest_after(3_000_000), 9_000_000);
        // A tick whose thread was set aside for 50 ms by a busy machine.
        assert_eq!(rest_after(50_000_000), REST_AT_MOST_NS);
        assert_eq!(rest_after(u64::MAX), REST_AT_MOST_NS);
    }
}
