//! Reading this process's own memory without a system call per read.
//!
//! `process_vm_readv` on the own pid is safe but costs about a microsecond a
//! call plus a third of one per page on a virtual machine, which is most of
//! a tick on CPython 3.11+. [`GuardedReader`] copies with plain loads
//! instead, in a tiny copy routine written in assembly, and a `SIGSEGV` /
//! `SIGBUS` handler turns a fault *inside that routine* into a failed read:
//! it moves the faulting thread's instruction pointer to the routine's
//! failure exit. Every other fault is handed on untouched: the handler puts
//! back whatever was installed before it and lets the fault happen again (or
//! re-sends a signal that was sent rather than raised by a fault), so a real
//! crash of the program crashes exactly as it would without echion.
//!
//! The handler is installed once per process and never replaced. Before
//! every tick [`GuardedReader::refresh`] checks that it is still the one the
//! kernel would call (a program may install its own later, e.g. Python's
//! `faulthandler`); if not, reads go through `process_vm_readv` from then
//! on. The copy routine is x86-64 only; elsewhere the reader always falls
//! back.
//!
//! A handler installed *during* a tick would get a fault of that tick's
//! loads (and `faulthandler`'s ends the program). Where echion sees the
//! installation coming (`faulthandler.enable`, wrapped by the bootstrap),
//! [`hold_off`] waits until no tick reads with loads and keeps the next
//! ticks from starting to, until the installation is done.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set from [`GuardedReader::refresh`] to [`GuardedReader::end_tick`]
/// while that tick may read with loads: the flag in a page of its own
/// that a forked child gets zeroed ([`in_tick`]), or, where the kernel
/// has no such page, this static. (In the section where `echion.core`
/// keeps the other statics every tick writes: a tick on a program's
/// thread after a fork then copies one page of them, not one per static.)
#[link_section = ".data.echion_fork"]
static IN_TICK: AtomicBool = AtomicBool::new(false);

/// The flag a tick sets while it may read with loads, in a page that a
/// fork leaves the parent's alone (`MADV_WIPEONFORK`: the child gets it
/// zeroed, with no tick under way), made at the first call. A flag in
/// memory the fork shares would be copied at each tick's first write
/// after each fork: in a program that forks in a loop, a page fault of
/// the sampler's per fork (and a child forked in a parent's tick would
/// have inherited a tick under way, which no tick of its own ends).
/// Lock-free: a fork may come while another thread makes it.
fn in_tick() -> &'static AtomicBool {
    imp::wiped_flag_or(&IN_TICK)
}
/// How many [`HoldOff`]s are alive: while any is, ticks read through
/// `process_vm_readv`.
static HELD_OFF: AtomicU32 = AtomicU32::new(0);
/// The longest [`hold_off`] waits for a tick to end (a tick lasts
/// microseconds; a sampler stopped in a tick must not stall the program).
const HOLD_OFF_WAIT: Duration = Duration::from_millis(50);

/// Keeps ticks from reading with loads while it lives (see [`hold_off`]).
#[derive(Debug)]
#[must_use = "ticks read with loads again once it is dropped"]
pub struct HoldOff(());

impl Drop for HoldOff {
    fn drop(&mut self) {
        HELD_OFF.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For a thread of the program that is about to install a `SIGSEGV` or
/// `SIGBUS` handler: from now until the returned guard is dropped, ticks
/// read through `process_vm_readv`; returns once no tick that reads with
/// loads is under way (or after [`HOLD_OFF_WAIT`]). A tick after the guard
/// is dropped finds the new handler on top and keeps to system calls.
pub fn hold_off() -> HoldOff {
    HELD_OFF.fetch_add(1, Ordering::SeqCst);
    // (SeqCst both ways: either the tick sees the hold-off, or this sees
    // the tick.)
    let start = Instant::now();
    let in_tick = in_tick();
    while in_tick.load(Ordering::SeqCst) && start.elapsed() < HOLD_OFF_WAIT {
        std::thread::yield_now();
    }
    HoldOff(())
}

use echion_cpython_layout::reader::AttachError;
use echion_cpython_layout::{Addr, MemError, MemoryReader, ProcessReader};

/// Reads of this process's memory that recover from faults, falling back to
/// `process_vm_readv` when the fault handler is not (or no longer) in
/// place. Neither `Send` nor `Sync`: it belongs to the thread that made it,
/// whose signal mask it checked.
#[derive(Debug)]
pub struct GuardedReader {
    fallback: ProcessReader,
    active: Cell<bool>,
    /// [`in_tick`].
    in_tick: &'static AtomicBool,
    /// Whether faults can reach the handler on the owning thread.
    usable: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl GuardedReader {
    /// A reader of the calling process, for the calling thread; installs
    /// the fault handler if it is not installed yet. Loads are used only if
    /// this thread does not block `SIGSEGV` and `SIGBUS` (see
    /// [`prepare_thread`]).
    pub fn new() -> Result<Self, AttachError> {
        let fallback = ProcessReader::own()?;
        let usable = !imp::blocked() && imp::install();
        let reader = Self {
            fallback,
            active: Cell::new(false),
            in_tick: in_tick(),
            usable,
            _not_send: std::marker::PhantomData,
        };
        reader.check();
        Ok(reader)
    }

    /// A reader that never uses the fault handler (`process_vm_readv` only),
    /// e.g. to compare the two.
    pub fn syscalls_only() -> Result<Self, AttachError> {
        Ok(Self {
            fallback: ProcessReader::own()?,
            active: Cell::new(false),
            in_tick: in_tick(),
            usable: false,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Checks that the handler is still the one installed for `SIGSEGV` and
    /// `SIGBUS`; reads use plain loads only while that holds. Call it before
    /// each tick. Two cheap system calls.
    pub fn refresh(&self) -> bool {
        self.in_tick.store(true, Ordering::SeqCst);
        let ok = self.check();
        if !ok {
            self.in_tick.store(false, Ordering::SeqCst);
        }
        ok
    }

    /// Says that the tick [`GuardedReader::refresh`] began is over: a
    /// [`hold_off`] need not wait for it.
    pub fn end_tick(&self) {
        self.in_tick.store(false, Ordering::SeqCst);
    }

    /// [`GuardedReader::refresh`] without beginning a tick.
    fn check(&self) -> bool {
        let ok = self.usable
            && HELD_OFF.load(Ordering::SeqCst) == 0
            && imp::installed()
            && imp::on_top();
        // (Written only when it changes: after a fork, a write to the
        // reader's page of the heap would copy it.)
        if self.active.get() != ok {
            self.active.set(ok);
        }
        ok
    }

    /// Whether reads currently go through plain loads (else through
    /// `process_vm_readv`).
    pub fn is_direct(&self) -> bool {
        self.active.get()
    }

    /// The name of the current read path, for the profile's metadata.
    pub fn method(&self) -> &'static str {
        if self.is_direct() {
            "guarded-load"
        } else {
            "process_vm_readv"
        }
    }
}

impl MemoryReader for GuardedReader {
    fn reads_are_cheap(&self) -> bool {
        self.active.get()
    }

    /// [`GuardedReader::refresh`]: whether this tick reads with guarded
    /// loads (false: through `process_vm_readv`).
    fn begin_tick(&self) -> bool {
        self.refresh()
    }

    fn end_tick(&self) {
        GuardedReader::end_tick(self);
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        if !self.active.get() {
            return self.fallback.read(addr, buf);
        }
        if buf.is_empty() {
            return Ok(());
        }
        if addr.is_null() {
            return Err(MemError::Null);
        }
        addr.0
            .checked_add(buf.len() as u64)
            .ok_or(MemError::Overflow)?;
        if imp::copy(addr.0, buf) {
            Ok(())
        } else {
            Err(MemError::Unmapped {
                addr,
                len: buf.len(),
            })
        }
    }
}

/// Waits while `word` holds `expected`, at most `timeout_ns`, or until
/// [`futex_wake`] (or a signal, or for no reason: the caller looks again).
///
/// The sampler thread's nap between ticks. Not through the C library,
/// whose `syscall` writes `errno` when a wait ends by its timeout (the end
/// of nearly every nap): `errno` is in the thread's own data, in a page
/// that each fork of the program makes copy-on-write, and its write after
/// a fork was a page fault of the sampler's per fork (with, the child not
/// gone yet, an interrupt of the program's CPU to flush the page's old
/// mapping).
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout_ns: u64) {
    imp::futex_wait(word, expected, timeout_ns);
}

/// Wakes every thread in [`futex_wait`] on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    imp::futex_wake(word);
}

/// Puts back the `SIGSEGV` and `SIGBUS` dispositions that were there before
/// the fault handler, where ours is still the one installed (a program
/// that installed its own since keeps it). Call it only when no guarded
/// read can be under way (every reader's thread has stopped sampling); a
/// later [`GuardedReader::new`] installs the handler again. Returns whether
/// the handler is out.
pub fn release_fault_handler() -> bool {
    imp::uninstall()
}

/// Unblocks `SIGSEGV` and `SIGBUS` for the calling thread: a fault with the
/// signal blocked would kill the process instead of reaching the handler.
/// Call it once on the sampler thread (which runs only echion's code).
pub fn prepare_thread() {
    imp::unblock();
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
    use std::sync::Mutex;

    // The copy routine, 0 on success. Short copies (most reads: a struct's
    // fields, a few hundred bytes at most) move eight bytes at a time and
    // then the tail byte by byte, which costs a few cycles where `rep movsb`
    // pays its start-up of tens; long ones use `rep movsb`. Every load (and
    // store) lies between the `_start` and `_end` labels, so a fault can only
    // happen there; the handler then resumes at `_fixup`, which returns 1.
    // Arguments arrive in rdi (dst), rsi (src), rdx (len); rcx counts down.
    std::arch::global_asm!(
        ".pushsection .text.echion_guarded_copy,\"ax\",@progbits",
        ".p2align 4",
        ".globl echion_guarded_copy",
        ".hidden echion_guarded_copy",
        ".type echion_guarded_copy,@function",
        "echion_guarded_copy:",
        "    mov rcx, rdx",
        ".globl echion_guarded_copy_start",
        ".hidden echion_guarded_copy_start",
        "echion_guarded_copy_start:",
        "    cmp rcx, 256",
        "    ja 5f",
        "2:",
        "    cmp rcx, 8",
        "    jb 3f",
        "    mov rax, qword ptr [rsi]",
        "    mov qword ptr [rdi], rax",
        "    add rsi, 8",
        "    add rdi, 8",
        "    sub rcx, 8",
        "    jmp 2b",
        "3:",
        "    test rcx, rcx",
        "    jz 6f",
        "    mov al, byte ptr [rsi]",
        "    mov byte ptr [rdi], al",
        "    inc rsi",
        "    inc rdi",
        "    dec rcx",
        "    jmp 3b",
        "5:",
        "    rep movsb",
        "6:",
        ".globl echion_guarded_copy_end",
        ".hidden echion_guarded_copy_end",
        "echion_guarded_copy_end:",
        "    xor eax, eax",
        "    ret",
        ".globl echion_guarded_copy_fixup",
        ".hidden echion_guarded_copy_fixup",
        "echion_guarded_copy_fixup:",
        "    mov eax, 1",
        "    ret",
        ".size echion_guarded_copy, .-echion_guarded_copy",
        ".popsection",
    );

    extern "C" {
        fn echion_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
        static echion_guarded_copy_start: u8;
        static echion_guarded_copy_end: u8;
        static echion_guarded_copy_fixup: u8;
    }

    const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

    /// The dispositions that were installed before ours, by index in
    /// [`SIGNALS`]. Written under [`INSTALL`] before the handler that reads
    /// them is installed, and again only at an install after an
    /// [`uninstall`], which happens when no guarded read is under way (so
    /// no handler of ours can be reading them).
    struct Previous(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);

    // SAFETY: written only while no handler of ours is installed and no
    // guarded read is under way (the handler is installed after the write,
    // and installation is a system call that orders it), else only read.
    unsafe impl Sync for Previous {}

    static PREVIOUS: Previous = Previous(UnsafeCell::new([MaybeUninit::uninit(); 2]));
    static INSTALL: Mutex<()> = Mutex::new(());
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    fn handler_address() -> usize {
        on_fault as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize
    }

    pub(super) fn installed() -> bool {
        INSTALLED.load(Ordering::Acquire)
    }

    pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        futex(
            word,
            libc::FUTEX_WAIT,
            u64::from(expected),
            &raw const timeout,
        );
    }

    pub(super) fn futex_wake(word: &AtomicU32) {
        futex(word, libc::FUTEX_WAKE, i32::MAX as u64, std::ptr::null());
    }

    /// The futex call `op` (private) on `word`, made with the `syscall`
    /// instruction; its result (0, a count, or an error number) is of no
    /// use to the nap.
    fn futex(word: &AtomicU32, op: libc::c_int, val: u64, timeout: *const libc::timespec) {
        // SAFETY: FUTEX_WAIT reads the word (a live atomic) and the
        // timeout (a live local of the caller's); FUTEX_WAKE only looks
        // the word's address up; neither writes memory of ours. The
        // `syscall` instruction clobbers rcx and r11 only, and returns in
        // rax.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_futex => _,
                in("rdi") word.as_ptr(),
                in("rsi") (op | libc::FUTEX_PRIVATE_FLAG) as u64,
                in("rdx") val,
                in("r10") timeout,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }

    /// The flag [`super::in_tick`] gives, once decided (null: not yet).
    static WIPED_FLAG: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

    /// A flag in a page of its own that a forked child gets zeroed
    /// (`MADV_WIPEONFORK`), the same for every caller; `fallback` where
    /// the kernel (older than 4.14) or the process's limits say no.
    pub(super) fn wiped_flag_or(fallback: &'static AtomicBool) -> &'static AtomicBool {
        let at = WIPED_FLAG.load(Ordering::Acquire);
        if !at.is_null() {
            // SAFETY: stored below: a page that is never unmapped, or
            // `fallback`, a static.
            return unsafe { &*at };
        }
        const PAGE: usize = 4096;
        // SAFETY: a new private anonymous mapping at an address of the
        // kernel's choice; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let advised = p != libc::MAP_FAILED
            // SAFETY: `p` is the mapping just made, which nothing else uses.
            && unsafe { libc::madvise(p, PAGE, libc::MADV_WIPEONFORK) } == 0;
        let made = if p == libc::MAP_FAILED {
            std::ptr::from_ref(fallback).cast_mut()
        } else if !advised {
            // SAFETY: as above; nothing refers to it.
            unsafe { libc::munmap(p, PAGE) };
            std::ptr::from_ref(fallback).cast_mut()
        } else {
            // (Zeroed: a `false`; page-aligned.)
            p.cast::<AtomicBool>()
        };
        let at = match WIPED_FLAG.compare_exchange(
            std::ptr::null_mut(),
            made,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => made,
            Err(first) => {
                if made.cast::<libc::c_void>() == p {
                    // SAFETY: another caller's flag was stored first;
                    // nothing refers to this page.
                    unsafe { libc::munmap(p, PAGE) };
                }
                first
            }
        };
        // SAFETY: a page that is never unmapped (it was stored), or
        // `fallback`, a static.
        unsafe { &*at }
    }

    /// Installs the handler for both signals, once per process. False if
    /// it could not be installed (then it never will be).
    pub(super) fn install() -> bool {
        let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        if installed() {
            return true;
        }
        let mut previous = [MaybeUninit::<libc::sigaction>::uninit(); 2];
        for (slot, &sig) in previous.iter_mut().zip(SIGNALS.iter()) {
            // SAFETY: a null new action only queries; `slot` is valid for
            // writes of a `sigaction`.
            if unsafe { libc::sigaction(sig, std::ptr::null(), slot.as_mut_ptr()) } != 0 {
                return false;
            }
        }
        // SAFETY: no handler of ours is installed yet (checked under the
        // lock), so nothing reads PREVIOUS concurrently.
        unsafe { *PREVIOUS.0.get() = previous };
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no
        // flags); the fields are then set.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler_address();
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: `action` is initialised; the old action is not wanted.
            if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } != 0 {
                // Put back what was there: the reader will not be used.
                for &done in &SIGNALS[..i] {
                    // SAFETY: PREVIOUS holds the action queried above.
                    unsafe {
                        libc::sigaction(
                            done,
                            (*PREVIOUS.0.get())[index(done)].as_ptr(),
                            std::ptr::null_mut(),
                        )
                    };
                }
                return false;
            }
        }
        INSTALLED.store(true, Ordering::Release);
        true
    }

    /// Restores the previous dispositions where ours is on top.
    pub(super) fn uninstall() -> bool {
        let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        if !installed() {
            return true;
        }
        // Only when ours is on top of both: a handler the program installed
        // since may still chain to ours, which must then stay reachable
        // with the PREVIOUS it reads.
        if !on_top() {
            return false;
        }
        for &sig in &SIGNALS {
            // SAFETY: PREVIOUS holds the action queried at install.
            unsafe {
                libc::sigaction(
                    sig,
                    (*PREVIOUS.0.get())[index(sig)].as_ptr(),
                    std::ptr::null_mut(),
                )
            };
        }
        INSTALLED.store(false, Ordering::Release);
        true
    }

    fn index(sig: libc::c_int) -> usize {
        usize::from(sig != libc::SIGSEGV)
    }

    /// Whether our handler is the one installed for both signals now.
    pub(super) fn on_top() -> bool {
        SIGNALS.iter().all(|&sig| {
            let mut current = MaybeUninit::<libc::sigaction>::uninit();
            // SAFETY: a null new action only queries; `current` is valid for
            // writes.
            let rc = unsafe { libc::sigaction(sig, std::ptr::null(), current.as_mut_ptr()) };
            // SAFETY: initialised by the successful call.
            rc == 0 && unsafe { current.assume_init() }.sa_sigaction == handler_address()
        })
    }

    /// Whether the calling thread blocks either signal.
    pub(super) fn blocked() -> bool {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: a null new set only queries the calling thread's mask.
        let rc =
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set.as_mut_ptr()) };
        if rc != 0 {
            return true;
        }
        // SAFETY: initialised by the successful call.
        let set = unsafe { set.assume_init() };
        // SAFETY: `set` is a valid signal set.
        SIGNALS
            .iter()
            .any(|&sig| unsafe { libc::sigismember(&set, sig) } == 1)
    }

    pub(super) fn unblock() {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` is initialised by sigemptyset before it is used;
        // unblocking only changes the calling thread's mask.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &sig in &SIGNALS {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
        }
    }

    /// Copies `buf.len()` bytes from `src`; false if that faulted.
    pub(super) fn copy(src: u64, buf: &mut [u8]) -> bool {
        // SAFETY: the routine writes exactly `buf.len()` bytes to `buf` and
        // only reads from `src`; a fault in the read is recovered by the
        // handler, which is installed and on top (checked by `refresh`
        // before the reader is active).
        unsafe { echion_guarded_copy(buf.as_mut_ptr(), src as *const u8, buf.len()) == 0 }
    }

    extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes valid `siginfo_t` and `ucontext_t`
        // pointers to an SA_SIGINFO handler; the label statics are only
        // used for their addresses.
        unsafe {
            let uc = &mut *ctx.cast::<libc::ucontext_t>();
            let ip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
            let start = std::ptr::addr_of!(echion_guarded_copy_start) as usize;
            let end = std::ptr::addr_of!(echion_guarded_copy_end) as usize;
            let raised_by_fault = (*info).si_code > 0;
            if raised_by_fault && (start..end).contains(&ip) {
                uc.uc_mcontext.gregs[libc::REG_RIP as usize] =
                    std::ptr::addr_of!(echion_guarded_copy_fixup) as i64;
                return;
            }
            // Not ours: put back what was there before and let it happen
            // again, as if we had never been here. A fault re-executes the
            // faulting instruction on return; a sent signal is sent again.
            let previous = (*PREVIOUS.0.get())[index(sig)].as_ptr();
            libc::sigaction(sig, previous, std::ptr::null_mut());
            if !raised_by_fault {
                libc::raise(sig);
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod imp {
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) fn installed() -> bool {
        false
    }
    #[cfg(target_os = "linux")]
    pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT reads the word (a live atomic) and the
        // timeout (a live local). (Through the C library here: its
        // `errno` write after a fork is a fault, see `super::futex_wait`.)
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                &raw const timeout,
            )
        };
    }
    #[cfg(target_os = "linux")]
    pub(super) fn futex_wake(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only looks the word's address up.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
        // (No futex: short sleeps, looked at again by the caller.)
        if word.load(Ordering::Acquire) == expected {
            std::thread::sleep(std::time::Duration::from_nanos(timeout_ns.min(1_000_000)));
        }
    }
    #[cfg(not(target_os = "linux"))]
    pub(super) fn futex_wake(_word: &AtomicU32) {}
    pub(super) fn wiped_flag_or(
        fallback: &'static std::sync::atomic::AtomicBool,
    ) -> &'static std::sync::atomic::AtomicBool {
        fallback
    }
    pub(super) fn install() -> bool {
        false
    }
    pub(super) fn uninstall() -> bool {
        true
    }
    pub(super) fn on_top() -> bool {
        false
    }
    pub(super) fn blocked() -> bool {
        true
    }
    pub(super) fn unblock() {}
    pub(super) fn copy(_src: u64, _buf: &mut [u8]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_own_memory_and_recovers_from_faults() {
        let r = GuardedReader::new().expect("own process");
        assert!(r.refresh(), "handler installed and on top");
        assert_eq!(r.method(), "guarded-load");
        let value: [u64; 3] = [1, 0xdead_beef_cafe_f00d, 3];
        let mut out = [0u8; 24];
        r.read(Addr(value.as_ptr() as u64), &mut out).expect("read");
        assert_eq!(out[8..16], 0xdead_beef_cafe_f00du64.to_ne_bytes());
        for bad in [
            8u64,                  // the first page is never mapped
            0x8000_0000_0000_0000, // non-canonical
            0xffff_8000_0000_1000, // the kernel's half
        ] {
            assert!(
                matches!(r.read(Addr(bad), &mut out), Err(MemError::Unmapped { .. })),
                "{bad:#x}"
            );
        }
        assert!(matches!(r.read(Addr(0), &mut out), Err(MemError::Null)));
        // A mapped page that cannot be read, and a read that runs into it.
        let page = unreadable_page();
        assert!(matches!(
            r.read(Addr(page), &mut out),
            Err(MemError::Unmapped { .. })
        ));
        let mut long = vec![0u8; 8192];
        assert!(r.read(Addr(page - 4096), &mut long).is_err());
        // The reader still works after recovering.
        r.read(Addr(value.as_ptr() as u64), &mut out).expect("read");
        assert_eq!(out[16..24], 3u64.to_ne_bytes());
    }

    #[test]
    fn copies_every_length_exactly_and_fails_at_the_edge_of_a_mapping() {
        let r = GuardedReader::new().expect("own process");
        assert!(r.refresh(), "handler installed and on top");
        // Both routines (eight bytes at a time, and `rep movsb` above 256
        // bytes), every tail length, unaligned sources: exact bytes, and
        // nothing written past the end.
        let src: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=600usize {
            for skew in [0usize, 1, 3, 7] {
                let mut out = vec![0xeeu8; len + 8];
                r.read(Addr(src[skew..].as_ptr() as u64), &mut out[..len])
                    .expect("read");
                assert_eq!(out[..len], src[skew..skew + len], "len {len} skew {skew}");
                assert!(out[len..].iter().all(|&b| b == 0xee), "len {len}: overran");
            }
        }
        // Reads that end exactly at the unreadable page work; one byte more
        // fails, whichever routine copies.
        let page = unreadable_page();
        for len in [1usize, 7, 8, 9, 64, 255, 256, 257, 4096] {
            let mut out = vec![0u8; len];
            r.read(Addr(page - len as u64), &mut out)
                .unwrap_or_else(|e| panic!("len {len}: {e}"));
            assert!(
                matches!(
                    r.read(Addr(page - len as u64 + 1), &mut out),
                    Err(MemError::Unmapped { .. })
                ),
                "len {len}"
            );
        }
    }

    #[test]
    fn the_flag_of_a_tick_under_way_is_in_a_page_a_forked_child_gets_zeroed() {
        // (The kernel's own account, /proc/self/smaps: the mapping that
        // holds the flag is marked `wf`, wiped on fork; a write to it after
        // a fork copies nothing, and a child has no tick under way.)
        let at = std::ptr::from_ref(in_tick()) as u64;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut holds = false;
        let mut flags = None;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
                {
                    holds = (lo..hi).contains(&at);
                    continue;
                }
            }
            if holds && line.starts_with("VmFlags:") {
                flags = Some(line.to_owned());
            }
        }
        let flags = flags.expect("the flag's mapping");
        assert!(
            flags.split_whitespace().any(|f| f == "wf"),
            "{at:#x}: {flags}"
        );
    }

    /// The second of two mapped pages, made unreadable (never unmapped:
    /// the test leaks them).
    fn unreadable_page() -> u64 {
        // SAFETY: a fresh private anonymous mapping, then a protection
        // change of its second page; nothing else uses them.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let second = p.cast::<u8>().add(4096);
            assert_eq!(libc::mprotect(second.cast(), 4096, libc::PROT_NONE), 0);
            second as u64
        }
    }

    /// Runs this test binary again as a child that does `what` with the
    /// handler installed; returns how it ended.
    fn child(what: &str, with_reader: bool) -> std::process::ExitStatus {
        let exe = std::env::current_exe().expect("test binary");
        Command::new(exe)
            .args(["--exact", "mem::guarded::tests::child_main", "--nocapture"])
            .env("ECHION_GUARDED_CHILD", what)
            .env("ECHION_GUARDED_READER", if with_reader { "1" } else { "0" })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run child")
    }

    /// The child's side of [`child`]; does nothing in a normal test run.
    #[test]
    fn child_main() {
        let Ok(what) = std::env::var("ECHION_GUARDED_CHILD") else {
            return;
        };
        if what == "previous-handler" {
            extern "C" fn exit_42(_: libc::c_int) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(42) }
            }
            // SAFETY: installs a plain handler that exits.
            unsafe {
                libc::signal(
                    libc::SIGSEGV,
                    exit_42 as extern "C" fn(libc::c_int) as usize,
                )
            };
        }
        let mut out = [0u8; 8];
        let r = if std::env::var("ECHION_GUARDED_READER").as_deref() == Ok("1") {
            let r = GuardedReader::new().expect("own process");
            assert!(r.refresh());
            assert!(r.read(Addr(8), &mut out).is_err(), "recovered");
            r
        } else {
            GuardedReader::syscalls_only().expect("own process")
        };
        match what.as_str() {
            "null-deref" | "previous-handler" => {
                // A fault that is not ours.
                let p = std::hint::black_box(16usize) as *const u64;
                // SAFETY: none: this is the crash under test.
                let v = unsafe { std::ptr::read_volatile(p) };
                std::hint::black_box(v);
            }
            "replace" => {
                extern "C" fn ignore(_: libc::c_int) {}
                assert!(r.refresh(), "ours on top");
                // SAFETY: installs a plain handler over ours.
                unsafe {
                    libc::signal(libc::SIGSEGV, ignore as extern "C" fn(libc::c_int) as usize)
                };
                assert!(!r.refresh(), "not on top any more");
                assert_eq!(r.method(), "process_vm_readv");
                let value = 7u64;
                r.read(Addr(&value as *const u64 as u64), &mut out)
                    .expect("read through the fallback");
                assert_eq!(out, 7u64.to_ne_bytes());
                assert!(r.read(Addr(8), &mut out).is_err());
            }
            "held-off" => {
                // A tick under way (it read with loads): the program's
                // thread that is about to install a handler waits for its
                // end; the next tick, while the hold-off lives, reads with
                // system calls.
                assert!(r.refresh());
                let (tx, rx) = std::sync::mpsc::channel();
                let (go, release) = std::sync::mpsc::channel::<()>();
                let installer = std::thread::spawn(move || {
                    let hold = hold_off();
                    tx.send(()).expect("send");
                    release.recv().expect("recv");
                    drop(hold);
                });
                std::thread::sleep(Duration::from_millis(20));
                assert!(rx.try_recv().is_err(), "waited for the tick");
                r.end_tick();
                rx.recv_timeout(Duration::from_secs(5)).expect("let go");
                assert!(!r.refresh(), "held off");
                assert!(!r.reads_are_cheap());
                r.end_tick();
                go.send(()).expect("send");
                installer.join().expect("installer");
                assert!(r.refresh(), "loads again once the hold-off is over");
                r.end_tick();
                // A sampler stuck in a tick does not stall the program.
                assert!(r.refresh());
                let start = Instant::now();
                drop(hold_off());
                assert!(start.elapsed() < Duration::from_secs(1));
            }
            "raise" => {
                // SAFETY: sends SIGSEGV to this thread.
                unsafe { libc::raise(libc::SIGSEGV) };
            }
            _ => {}
        }
        std::process::exit(3);
    }

    #[test]
    fn faults_that_are_not_ours_crash_as_before() {
        use std::os::unix::process::ExitStatusExt;
        // The same end with the reader's handler installed (and used) as
        // without it. (`raise` is survived in both: the Rust runtime's own
        // SIGSEGV handler, there before ours, resets and returns.)
        for (what, signal, code) in [
            ("null-deref", Some(libc::SIGSEGV), None),
            ("raise", None, Some(3)),
            ("previous-handler", None, Some(42)),
            ("nothing", None, Some(3)),
        ] {
            for with_reader in [false, true] {
                let status = child(what, with_reader);
                assert_eq!(
                    (status.signal(), status.code()),
                    (signal, code),
                    "{what}, reader: {with_reader}"
                );
            }
        }
    }

    #[test]
    fn a_thread_that_blocks_the_signals_does_not_use_loads() {
        std::thread::spawn(|| {
            // SAFETY: changes this short-lived thread's mask only.
            unsafe {
                let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(set.as_mut_ptr());
                libc::sigaddset(set.as_mut_ptr(), libc::SIGBUS);
                libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            }
            let r = GuardedReader::new().expect("own process");
            assert!(!r.refresh());
            assert!(!r.reads_are_cheap());
            let mut out = [0u8; 8];
            assert!(r.read(Addr(8), &mut out).is_err());
            prepare_thread();
            let r = GuardedReader::new().expect("own process");
            assert!(r.refresh(), "unblocked by prepare_thread");
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn falls_back_when_the_handler_is_replaced() {
        // In a child: replacing SIGSEGV's handler would disturb the other
        // tests of this process.
        assert_eq!(child("replace", true).code(), Some(3));
    }

    #[test]
    fn a_handler_about_to_be_installed_waits_for_the_tick_and_holds_off_the_next() {
        // In a child: the hold-off is the process's.
        assert_eq!(child("held-off", true).code(), Some(3));
    }
}
