//! Capturing another thread of this process at one instant: its registers
//! and a bounded copy of the top of its stack, taken in a signal handler on
//! that thread. The crate's only unsafe code.
//!
//! The sampler asks for one thread at a time through a [`Capturer`]:
//!
//! 1. it publishes a request (a sequence number, the thread, the stack's
//!    top) in the capturer's slot and sends the thread a signal (`SIGURG`
//!    when the program leaves it at its default, else a real-time one)
//!    whose value names the slot and the request (`rt_tgsigqueueinfo`);
//! 2. the handler, on the thread, checks that the request is still the
//!    current one (one atomic compare-and-swap), stores the interrupted
//!    registers, copies the stack from the stack pointer up to its top
//!    (at most [`STACK_COPY`] bytes) with `process_vm_readv` on its own
//!    process (a page that vanished ends the copy instead of faulting),
//!    says so, and waits on a futex for the sampler to let it go;
//! 3. while the thread waits, the sampler reads what must belong to the
//!    same instant (the thread's Python frames) without allocating, then
//!    releases it; the unwinding happens afterwards.
//!
//! The handler only makes system calls that are async-signal-safe
//! (`process_vm_readv`, `futex`, `clock_gettime`, `getpid`, `gettid`) and
//! atomic operations, and keeps `errno`: no allocation, no lock. Slots are
//! never freed, so a late handler never touches freed memory. It never waits more than
//! [`PARK_LIMIT`]; the sampler never waits more than the `timeout` it asks
//! for. A thread that blocks the signal, or does not get to run in time, is
//! left alone: its request is withdrawn, and the signal, still pending, is
//! not sent again while it is (see [`signal_pending`]). Installed with
//! `SA_RESTART`, so system calls interrupted by it resume.

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The most bytes of stack one capture copies.
pub const STACK_COPY: usize = 512 * 1024;
/// The longest a captured thread waits for the sampler to release it.
pub const PARK_LIMIT: Duration = Duration::from_millis(20);
/// How many capturers can exist at once (slots for the handler to find).
const SLOTS: usize = 4;
/// How long past its timeout a capture waits for a handler that has
/// started copying.
const COPY_LIMIT_NS: u64 = 100_000_000;
const PAGE: usize = 4096;

// Phases of a slot's request word: (sequence << 8) | phase.
const IDLE: u32 = 0;
const REQUESTED: u32 = 1;
const CAPTURING: u32 = 2;
const CAPTURED: u32 = 3;
const RELEASED: u32 = 4;
const WITHDRAWN: u32 = 5;

/// Why a capture did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// No signal could be set up (`SIGURG` and every real-time signal are
    /// in use), or the handler was replaced by someone else's.
    #[error("no signal for native captures")]
    NoSignal,
    /// The thread no longer exists.
    #[error("the thread is gone")]
    Gone,
    /// The signal could not be sent.
    #[error("the capture signal could not be sent (errno {0})")]
    Send(i32),
    /// The thread did not take the signal in time (it blocks it, or was
    /// not scheduled): sampled without native frames.
    #[error("the thread did not take the capture signal in time")]
    Timeout,
    /// The slot is held by a handler that started copying and has not
    /// finished (its thread was stopped): no capture until it has.
    #[error("an earlier capture has not finished")]
    Busy,
    /// Not supported on this architecture.
    #[error("native captures are supported on x86_64 Linux only")]
    Unsupported,
    /// The thread asked for is the one asking.
    #[error("a thread cannot capture itself")]
    Myself,
    /// Every slot is taken by other capturers.
    #[error("too many capturers")]
    NoSlot,
}

/// Registers of a captured thread, as the unwinder starts from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    /// The instruction pointer.
    pub ip: u64,
    /// The stack pointer.
    pub sp: u64,
    /// The frame pointer (`rbp`).
    pub bp: u64,
}

/// What one capture holds: registers and the stack copied from `regs.sp`.
#[derive(Debug, Clone, Copy)]
pub struct Captured<'c> {
    /// The registers at the instant of the signal.
    pub regs: Registers,
    /// The stack's bytes from `regs.sp` upwards.
    pub stack: &'c [u8],
}

#[repr(C, align(64))]
struct Slot {
    /// (sequence << 8) | phase; also the futex word.
    word: AtomicU32,
    /// The thread the current request is for (the handler checks it: a
    /// late signal of another request never fills this one).
    tid: AtomicI32,
    /// The thread's stack top (one past its highest address).
    stack_top: AtomicU64,
    regs: [AtomicU64; 3],
    len: AtomicU64,
    /// Requests whose signal arrived after they were withdrawn, by
    /// sequence modulo their number.
    late: [AtomicU32; LATE],
    buf: UnsafeCell<[u8; STACK_COPY]>,
}

const LATE: usize = 64;

// SAFETY: `buf` is written by one handler at a time (the one whose
// compare-and-swap moved the word to CAPTURING) and read by the sampler only
// after the word says CAPTURED (acquire); every other field is atomic.
unsafe impl Sync for Slot {}

/// The slots the handler may write, found by index from the signal's
/// value. A slot is allocated once and never freed (a handler may still
/// hold its address); a capturer that ends gives it back for the next.
static SLOTS_IN_USE: [AtomicPtr<Slot>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
/// Which slots a capturer holds.
static TAKEN: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// Request numbers, one sequence for every capturer of the process.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);
static ATFORK: std::sync::Once = std::sync::Once::new();

/// In a forked child, the parent's capturers are gone (never dropped):
/// their slots are free again.
extern "C" fn free_slots_in_child() {
    for t in &TAKEN {
        t.store(false, Ordering::Relaxed);
    }
}
/// The signal our handler is installed for (0: none yet).
static SIGNAL: AtomicU32 = AtomicU32::new(0);
static INSTALL: Mutex<()> = Mutex::new(());

/// Captures threads of this process, one at a time (see the module's doc).
pub struct Capturer {
    slot: &'static Slot,
    index: usize,
    seq: u32,
    signal: i32,
}

impl std::fmt::Debug for Capturer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capturer")
            .field("index", &self.index)
            .field("signal", &self.signal)
            .finish()
    }
}

impl Capturer {
    /// Installs the handler (once per process, on `SIGURG` or a real-time
    /// signal, whichever nobody handles) and takes a slot.
    pub fn new() -> Result<Self, CaptureError> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err(CaptureError::Unsupported);
        }
        let signal = install()?;
        ATFORK.call_once(|| {
            // SAFETY: registers a handler with no preconditions of its own.
            unsafe { libc::pthread_atfork(None, None, Some(free_slots_in_child)) };
        });
        let index = TAKEN
            .iter()
            .position(|t| {
                t.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or(CaptureError::NoSlot)?;
        let mut ptr = SLOTS_IN_USE[index].load(Ordering::Acquire);
        if ptr.is_null() {
            // First use of this index: a slot for the life of the process.
            ptr = Box::into_raw(Box::new(Slot {
                word: AtomicU32::new(IDLE),
                tid: AtomicI32::new(0),
                stack_top: AtomicU64::new(0),
                regs: [const { AtomicU64::new(0) }; 3],
                len: AtomicU64::new(0),
                late: [const { AtomicU32::new(u32::MAX) }; LATE],
                buf: UnsafeCell::new([0; STACK_COPY]),
            }));
            SLOTS_IN_USE[index].store(ptr, Ordering::Release);
        }
        // SAFETY: slots are leaked boxes, never freed.
        let slot: &'static Slot = unsafe { &*ptr };
        Ok(Capturer {
            slot,
            index,
            seq: 0,
            signal,
        })
    }

    /// The sequence number of the last request (the one a
    /// [`CaptureError::Timeout`] withdrew).
    pub fn last_request(&self) -> u32 {
        self.seq
    }

    /// Whether the signal of request `seq`, withdrawn after a timeout, has
    /// since reached its thread (which then takes signals again).
    pub fn taken_late(&self, seq: u32) -> bool {
        self.slot.late[seq as usize % LATE].load(Ordering::Acquire) == seq
    }

    /// The signal the captures use.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// Whether our handler is still the one installed for the signal (a
    /// program may replace it; then no capture is asked for any more).
    pub fn handler_in_place(&self) -> bool {
        current_handler(self.signal) == handler_address()
    }

    /// Captures thread `tid` (a kernel thread id of this process) whose
    /// stack ends at `stack_top` (0 if unknown: [`STACK_COPY`] bytes are
    /// tried, and the copy stops at the first unmapped page). Waits at most
    /// `timeout` for the thread to take the signal; while the thread waits
    /// in its handler, `during` runs with the capture, then the thread is
    /// released. Returns `during`'s result and the capture (valid until the
    /// next call).
    pub fn capture<T>(
        &mut self,
        tid: i32,
        stack_top: u64,
        timeout: Duration,
        during: impl FnOnce(&Captured<'_>) -> T,
    ) -> Result<(T, Captured<'_>), CaptureError> {
        if tid == current_tid() {
            return Err(CaptureError::Myself);
        }
        if !self.handler_in_place() {
            return Err(CaptureError::NoSignal);
        }
        let slot = self.slot;
        let before = slot.word.load(Ordering::Acquire);
        match before & 0xff {
            // A handler of an earlier request is still copying (its thread
            // was stopped in the middle, by a debugger say): this slot
            // stays its until it is done.
            CAPTURING => return Err(CaptureError::Busy),
            // One that finished copying after its request was given up:
            // let it go.
            CAPTURED => {
                slot.word
                    .store((before & !0xff) | RELEASED, Ordering::Release);
                futex_wake(&slot.word);
            }
            _ => {}
        }
        // A late handler of an earlier request fails its compare-and-swap
        // against the new word (and its thread id check).
        self.seq = SEQUENCE.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & 0x00ff_ffff;
        let seq = self.seq;
        slot.tid.store(tid, Ordering::Relaxed);
        slot.stack_top.store(stack_top, Ordering::Relaxed);
        slot.len.store(0, Ordering::Relaxed);
        slot.word.store(seq << 8 | REQUESTED, Ordering::Release);
        let value = (self.index as u64) << 32 | u64::from(seq);
        if let Err(e) = send(tid, self.signal, value) {
            slot.word.store(seq << 8 | IDLE, Ordering::Release);
            return Err(e);
        }
        let deadline = now_ns() + timeout.as_nanos() as u64;
        // The handler answers within microseconds when the thread is on a
        // CPU: spin a little before sleeping (a futex wake-up costs tens of
        // microseconds).
        spin_while(&slot.word, seq << 8 | REQUESTED);
        loop {
            let w = slot.word.load(Ordering::Acquire);
            if w == seq << 8 | CAPTURED {
                break;
            }
            let now = now_ns();
            let left = deadline.saturating_sub(now);
            if left == 0 {
                // Withdraw the request unless the handler has taken it.
                match slot.word.compare_exchange(
                    seq << 8 | REQUESTED,
                    seq << 8 | WITHDRAWN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Err(CaptureError::Timeout),
                    // It is copying: done in microseconds, unless its
                    // thread was stopped meanwhile; then the slot stays
                    // busy (see above) and this capture is given up.
                    Err(w) => {
                        if now > deadline + COPY_LIMIT_NS {
                            return Err(CaptureError::Busy);
                        }
                        futex_wait(&slot.word, w, 100_000);
                        continue;
                    }
                }
            }
            futex_wait(&slot.word, w, left.min(200_000));
        }
        let regs = Registers {
            ip: slot.regs[0].load(Ordering::Relaxed),
            sp: slot.regs[1].load(Ordering::Relaxed),
            bp: slot.regs[2].load(Ordering::Relaxed),
        };
        let len = (slot.len.load(Ordering::Relaxed) as usize).min(STACK_COPY);
        // SAFETY: the handler wrote `buf[..len]` before storing CAPTURED
        // (release, read above with acquire), and writes nothing more into
        // this request; a later request is only made by `&mut self`, after
        // the borrow returned here has ended.
        let stack = unsafe { &(&*slot.buf.get())[..len] };
        let captured = Captured { regs, stack };
        let out = during(&captured);
        slot.word.store(seq << 8 | RELEASED, Ordering::Release);
        futex_wake(&slot.word);
        Ok((out, captured))
    }
}

impl Drop for Capturer {
    fn drop(&mut self) {
        // Fail the compare-and-swap of any handler still to come, let go of
        // one that waits, and give the slot back (its memory stays).
        let w = self.slot.word.load(Ordering::Acquire);
        if w & 0xff != CAPTURING {
            self.slot.word.store(u32::MAX, Ordering::Release);
        }
        futex_wake(&self.slot.word);
        TAKEN[self.index].store(false, Ordering::Release);
    }
}

/// The kernel id of the calling thread (a thread cannot capture itself:
/// it would wait in its own handler for itself).
pub fn current_tid() -> i32 {
    // SAFETY: the gettid system call cannot fail and touches no memory.
    // (Not libc's `gettid`: glibc has it from 2.30, the wheel runs on 2.17.)
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Whether signal `signal` is pending on thread `tid` of this process
/// (it blocks it): read from `/proc/self/task/<tid>/status`.
pub fn signal_pending(tid: i32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    let bit = 1u64 << (signal - 1);
    status.lines().any(|l| {
        let Some(v) = l
            .strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"))
        else {
            return false;
        };
        u64::from_str_radix(v.trim(), 16).is_ok_and(|m| m & bit != 0)
    })
}

/// Gives the signal back to its default action if the handler installed
/// for it is still ours and no thread of the process has it pending (a
/// real-time signal pending at its default would end the process; `SIGURG`
/// is ignored by default, so it always goes back). Call it once no capture
/// is under way (the sampler has stopped). Returns whether the signal is
/// free again: the next [`Capturer::new`] installs the handler anew.
pub fn release_signal() -> bool {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let sig = SIGNAL.load(Ordering::Acquire) as i32;
    if sig == 0 {
        return true;
    }
    if current_handler(sig) != handler_address() {
        // The program took the signal over: it is its own now.
        SIGNAL.store(0, Ordering::Release);
        return true;
    }
    if sig != libc::SIGURG && pending_anywhere(sig) {
        return false;
    }
    // SAFETY: an all-zero `sigaction` with SIG_DFL (0) as handler is the
    // default action; the old one is not asked.
    let action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is a valid sigaction.
    if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } != 0 {
        return false;
    }
    SIGNAL.store(0, Ordering::Release);
    true
}

/// Whether any thread of this process has `signal` pending.
fn pending_anywhere(signal: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return true;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
        .any(|tid| signal_pending(tid, signal))
}

fn handler_address() -> usize {
    handler as *const () as usize
}

fn install() -> Result<i32, CaptureError> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let sig = SIGNAL.load(Ordering::Acquire) as i32;
    if sig != 0 {
        return if current_handler(sig) == handler_address() {
            Ok(sig)
        } else {
            Err(CaptureError::NoSignal)
        };
    }
    // SIGURG first: its default is to be ignored, so a signal still
    // pending when the program calls exec does no harm to the new program
    // (a real-time signal's default ends it), and signals sent to a thread
    // that blocks it do not queue up. Else a real-time signal, from the top
    // (programs that take one take the first).
    let (low, high) = (libc::SIGRTMIN() + 4, libc::SIGRTMAX());
    for sig in std::iter::once(libc::SIGURG).chain((low..=high).rev()) {
        if current_handler(sig) != libc::SIG_DFL {
            continue;
        }
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no
        // flags, no handler); the fields set are the handler's address
        // (of the right signature for SA_SIGINFO) and the flags.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler_address();
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `action` is a valid sigaction; the old one is not asked.
        if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } == 0 {
            SIGNAL.store(sig as u32, Ordering::Release);
            return Ok(sig);
        }
    }
    Err(CaptureError::NoSignal)
}

/// The handler address installed for `sig` (SIG_DFL, SIG_IGN or a
/// function), or `usize::MAX` if it cannot be read.
fn current_handler(sig: i32) -> usize {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: with a null new action, sigaction only writes the current one
    // into `old`.
    if unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) } != 0 {
        return usize::MAX;
    }
    // SAFETY: sigaction returned 0, so it wrote `old` whole.
    unsafe { old.assume_init() }.sa_sigaction
}

fn send(tid: i32, signal: i32, value: u64) -> Result<(), CaptureError> {
    // SAFETY: an all-zero siginfo_t is a valid value; the fields written
    // below are the ones rt_tgsigqueueinfo reads for SI_QUEUE.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = signal;
    info.si_code = libc::SI_QUEUE;
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let words = &mut info as *mut libc::siginfo_t as *mut u32;
    // SAFETY: siginfo_t is 128 bytes; for SI_QUEUE the kernel reads
    // si_pid at byte 16, si_uid at 20 and si_value (a pointer-sized union)
    // at 24, all within it.
    unsafe {
        *words.add(4) = pid as u32;
        *words.add(5) = libc::getuid();
        (words.add(6) as *mut u64).write_unaligned(value);
    }
    // SAFETY: rt_tgsigqueueinfo takes (tgid, tid, sig, *siginfo); `info`
    // lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            signal,
            &info as *const libc::siginfo_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        libc::ESRCH => Err(CaptureError::Gone),
        e => Err(CaptureError::Send(e)),
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always
    // exists. Async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the word at the address (a live AtomicU32)
    // and sleeps at most `ts` while it equals `expected`. Async-signal-safe.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// Spins while `word` holds `value`, for at most [`SPINS`] rounds (some
/// tens of microseconds). Async-signal-safe.
fn spin_while(word: &AtomicU32, value: u32) {
    for _ in 0..SPINS {
        if word.load(Ordering::Acquire) != value {
            return;
        }
        std::hint::spin_loop();
    }
}

/// Rounds of [`spin_while`] (a `pause` is some tens of cycles).
const SPINS: u32 = 4000;

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live word's address wakes its waiters and
    // touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// Copies `[from, from + len)` of this process into `to` page by page with
/// `process_vm_readv` (one iovec per page, so that an unmapped page ends
/// the copy instead of failing it); returns the bytes copied.
fn copy_own(to: *mut u8, from: u64, len: usize) -> usize {
    const BATCH: usize = 64;
    let mut done = 0usize;
    while done < len {
        let mut remote = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        let mut n = 0;
        let mut at = done;
        while n < BATCH && at < len {
            let addr = from as usize + at;
            let chunk = (PAGE - addr % PAGE).min(len - at);
            remote[n] = libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: chunk,
            };
            n += 1;
            at += chunk;
        }
        let local = libc::iovec {
            // SAFETY: `done < len` and `to` has `len` bytes.
            iov_base: unsafe { to.add(done) } as *mut libc::c_void,
            iov_len: at - done,
        };
        // SAFETY: process_vm_readv on our own pid reads the remote ranges
        // (faults become a short count) into `local`, which is ours.
        // Async-signal-safe (a system call).
        let got = unsafe {
            libc::process_vm_readv(libc::getpid(), &local, 1, remote.as_ptr(), n as _, 0)
        };
        if got <= 0 {
            break;
        }
        done += got as usize;
        if done < at {
            break;
        }
    }
    done
}

/// The signal handler: see the module's doc. Async-signal-safe.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // The interrupted code may be about to read `errno`: the system calls
    // below must not change it.
    // SAFETY: __errno_location returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    capture_here(sig, info, context);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The handler's work (see [`handler`]). Async-signal-safe.
fn capture_here(_sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if info.is_null() || context.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo; for our SI_QUEUE signals
    // the value is at byte 24 (see `send`); a signal sent by anyone else
    // carries a value that matches no request below.
    let (code, value) = unsafe {
        (
            (*info).si_code,
            ((info as *const u8).add(24) as *const u64).read_unaligned(),
        )
    };
    if code != libc::SI_QUEUE {
        return;
    }
    let index = (value >> 32) as usize;
    let seq = (value & 0x00ff_ffff) as u32;
    let Some(ptr) = SLOTS_IN_USE.get(index).map(|s| s.load(Ordering::Acquire)) else {
        return;
    };
    if ptr.is_null() {
        return;
    }
    // SAFETY: slots are never freed once published.
    let slot = unsafe { &*ptr };
    if slot.tid.load(Ordering::Relaxed) != current_tid()
        || slot
            .word
            .compare_exchange(
                seq << 8 | REQUESTED,
                seq << 8 | CAPTURING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
    {
        // Withdrawn (or not ours): say it came, for the sampler to know
        // that this thread takes signals.
        slot.late[seq as usize % LATE].store(seq, Ordering::Release);
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: for SA_SIGINFO handlers the third argument is the
        // interrupted thread's ucontext_t.
        let uc = unsafe { &*(context as *const libc::ucontext_t) };
        let g = &uc.uc_mcontext.gregs;
        let (ip, sp, bp) = (
            g[libc::REG_RIP as usize] as u64,
            g[libc::REG_RSP as usize] as u64,
            g[libc::REG_RBP as usize] as u64,
        );
        slot.regs[0].store(ip, Ordering::Relaxed);
        slot.regs[1].store(sp, Ordering::Relaxed);
        slot.regs[2].store(bp, Ordering::Relaxed);
        let top = slot.stack_top.load(Ordering::Relaxed);
        let len = if top > sp {
            ((top - sp) as usize).min(STACK_COPY)
        } else {
            STACK_COPY
        };
        let copied = copy_own(slot.buf.get() as *mut u8, sp, len);
        slot.len.store(copied as u64, Ordering::Relaxed);
    }
    slot.word.store(seq << 8 | CAPTURED, Ordering::Release);
    futex_wake(&slot.word);
    // Wait to be released (the sampler reads what belongs to this instant
    // meanwhile: microseconds), spinning first, never longer than
    // PARK_LIMIT.
    spin_while(&slot.word, seq << 8 | CAPTURED);
    let deadline = now_ns() + PARK_LIMIT.as_nanos() as u64;
    loop {
        let w = slot.word.load(Ordering::Acquire);
        if w != seq << 8 | CAPTURED {
            return;
        }
        let left = deadline.saturating_sub(now_ns());
        if left == 0 {
            return;
        }
        futex_wait(&slot.word, w, left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn tid() -> i32 {
        current_tid()
    }

    #[test]
    fn a_busy_thread_is_captured_with_its_stack() {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let worker = std::thread::spawn(move || {
            let marker = [0x5au8; 256];
            std::hint::black_box(&marker);
            tx.send(tid()).unwrap();
            while !s.load(Ordering::Relaxed) {
                std::hint::black_box(&marker);
            }
        });
        let t = rx.recv().unwrap();
        let mut c = Capturer::new().expect("capturer");
        for _ in 0..20 {
            let (inside, cap) = c
                .capture(t, 0, Duration::from_millis(500), |cap| cap.regs.sp)
                .expect("captured");
            assert_eq!(inside, cap.regs.sp);
            assert!(cap.regs.ip != 0 && cap.regs.sp != 0);
            assert!(!cap.stack.is_empty());
            // The marker array lives on the worker's stack, above sp.
            assert!(cap.stack.windows(64).any(|w| w.iter().all(|&b| b == 0x5a)));
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }

    #[test]
    fn a_thread_that_blocks_the_signal_times_out_and_says_when_it_took_it_late() {
        let c = Capturer::new().expect("capturer");
        let sig = c.signal();
        drop(c);
        let stop = Arc::new(AtomicBool::new(false));
        let unblock = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, u) = (stop.clone(), unblock.clone());
        let worker = std::thread::spawn(move || {
            // SAFETY: an empty sigset with one signal added, blocked for
            // this thread, unblocked when the test says so.
            let set = unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                set
            };
            tx.send(tid()).unwrap();
            let mut blocked = true;
            while !s.load(Ordering::Relaxed) {
                if blocked && u.load(Ordering::Acquire) {
                    // SAFETY: unblocks the signal blocked above.
                    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
                    blocked = false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let t = rx.recv().unwrap();
        let mut c = Capturer::new().expect("capturer");
        let r = c.capture(t, 0, Duration::from_millis(20), |_| ());
        assert_eq!(r.err(), Some(CaptureError::Timeout));
        let seq = c.last_request();
        assert!(signal_pending(t, sig));
        assert!(!c.taken_late(seq));
        // Unblocked, the thread takes the signal: late, and says so.
        unblock.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !c.taken_late(seq) {
            assert!(std::time::Instant::now() < deadline, "never taken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!signal_pending(t, sig));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }

    #[test]
    fn a_gone_thread_is_reported() {
        let t = std::thread::spawn(tid).join().unwrap();
        let mut c = Capturer::new().expect("capturer");
        let r = c.capture(t, 0, Duration::from_millis(20), |_| ());
        assert!(matches!(r.err(), Some(CaptureError::Gone)), "{:?}", r.err());
    }

    #[test]
    fn copies_stop_at_the_first_unmapped_page() {
        // SAFETY: a fresh anonymous mapping of three pages, the last made
        // inaccessible; unmapped at the end.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the first two pages are ours and writable.
        unsafe {
            std::ptr::write_bytes(base as *mut u8, 7, 2 * PAGE);
            libc::mprotect(
                (base as *mut u8).add(2 * PAGE) as *mut _,
                PAGE,
                libc::PROT_NONE,
            );
        }
        let mut out = vec![0u8; 3 * PAGE];
        let got = copy_own(out.as_mut_ptr(), base as u64 + 100, 3 * PAGE - 100);
        assert_eq!(got, 2 * PAGE - 100);
        assert!(out[..got].iter().all(|&b| b == 7));
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(base, 3 * PAGE) };
    }
}
