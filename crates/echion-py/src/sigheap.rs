//! The heap of ticks that run in a signal handler.
//!
//! Without a sampler thread ([`crate::sigtick`]), each tick runs in a
//! timer signal's handler on the program's main thread, which the signal
//! may have stopped anywhere: inside `malloc`, holding its lock, too. A
//! tick that called `malloc` there would wait for that lock forever. Ticks
//! rarely allocate (a new frame, string or thread; the engine keeps what
//! it found), but they may, so while a tick runs the extension's allocator
//! ([`crate::reserve::WithReserve`]) takes that thread's allocations from
//! here: one region mapped when sampling starts, cut into blocks of a
//! power of two, each size with its list of freed blocks, under a spin
//! flag that no thread a tick stopped can hold (outside a tick, a thread
//! holds it with the ticks' signal blocked: a block that left the tick's
//! data, freed elsewhere).
//!
//! A block of this heap is freed here whoever frees it (its address tells).
//! Memory of `malloc`'s that a tick frees (a map made before sampling that
//! grows in a tick, a thread name posted by a hook) cannot go back to
//! `malloc` from the handler: it waits in [`DEFERRED`] until the run's end
//! gives it back ([`drain_deferred`]), or stays there if that is full.
//!
//! The run's engine is made here too ([`within`]), not only what its
//! ticks add: the region is one the kernel gives a forked child empty
//! (`MADV_WIPEONFORK`), so a fork copies nothing of the run and leaves the
//! parent's pages of it unshared. The parent's ticks after a fork then
//! write no page the fork made copy-on-write (a fork loop's parent copied
//! six or seven pages a tick: the run, its engine's buffers, the writer's).
//! The child, which never touches its parent's run (it forgets it without
//! dropping it), finds the region as new (so nothing made here may be
//! kept where a child looks: see `sigtick::start`) ([`after_fork_in_child`] starts
//! its blocks again from the region's start). Where the kernel has no
//! such mapping (before Linux 4.14) the child gets a copy as before: its
//! copy of the heap may be mid-change (another thread forked while the
//! main thread ticked), so the child forgets its freed blocks and
//! allocates after the parent's.
//!
//! A sampler thread's run (wall and CPU mode) is made here too, for the
//! same reason ([`enter_thread`], for the run's life): its ticks after a
//! fork otherwise write the pages of its data that the fork made shared,
//! each a fault and, with the program on another CPU, an interrupt of that
//! CPU to flush the page's old mapping. That thread is no signal handler:
//! the `malloc` blocks it frees go back at once, and what the region
//! cannot hold (short of its reserve) comes from `malloc`. Its stack below
//! the run's frame is given to a child empty as well
//! ([`wipe_stack_below`]).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// The region's size: address space only (`MAP_NORESERVE`) until used,
/// but counted by `RLIMIT_AS`. The engine's caches are bounded well under
/// it.
const REGION: usize = 64 << 20;

/// The last part of the region, used only once the rest is: the allocation
/// that reaches it tells the sampler it is out of memory
/// ([`echion_sampler::note_out_of_memory`]), which ends sampling at its
/// next tick, and the run closes its profile outside the handler.
const RESERVE: usize = 8 << 20;

/// The smallest block (two words: room for the free list's link).
const MIN_SHIFT: u32 = 4;
/// Sizes classes: 16 B to 128 MiB.
const CLASSES: usize = 24;

/// The region's start and end (0 while there is none).
static START: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
/// Where the next new block goes.
#[link_section = ".data.echion_fork"]
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Each class's freed blocks: a list linked through their first word.
#[link_section = ".data.echion_fork"]
static FREE: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];
/// Held while the free lists or [`NEXT`] change.
#[link_section = ".data.echion_fork"]
static LOCK: AtomicBool = AtomicBool::new(false);
/// Whether a forked child gets the region empty (`MADV_WIPEONFORK` took).
#[link_section = ".data.echion_fork"]
static WIPED_IN_CHILD: AtomicBool = AtomicBool::new(false);
/// The `pthread_t` of the thread whose allocations come from here (while
/// its tick runs, or the run is made), 0 for none.
#[link_section = ".data.echion_fork"]
static OWNER: AtomicUsize = AtomicUsize::new(0);
/// Whether [`OWNER`] is a sampler thread ([`enter_thread`]), not a tick in
/// a signal handler: `malloc`'s blocks it frees go back at once, and what
/// the region cannot hold comes from `malloc`.
#[link_section = ".data.echion_fork"]
static OWNER_IS_THREAD: AtomicBool = AtomicBool::new(false);
/// `malloc`'s blocks freed by a tick, given back at the run's end.
static DEFERRED: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];
/// How many of `malloc`'s blocks did not fit in [`DEFERRED`] (left alone:
/// a leak, never a crash).
static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// Maps the region if there is none. False if it cannot be mapped (the
/// process's address space is at its limit, say).
pub fn arm() -> bool {
    if START.load(Ordering::Acquire) != 0 {
        return true;
    }
    // SAFETY: a new private anonymous mapping, placed by the kernel;
    // nothing else points into it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: advice on the mapping just made, whole; it changes only what
    // a forked child gets of it (zeroes, not a copy).
    let wiped = unsafe { libc::madvise(p, REGION, libc::MADV_WIPEONFORK) } == 0;
    WIPED_IN_CHILD.store(wiped, Ordering::Relaxed);
    let start = p as usize;
    NEXT.store(start, Ordering::Relaxed);
    END.store(start + REGION, Ordering::Relaxed);
    START.store(start, Ordering::Release);
    true
}

/// Whether a run may start: the region is there and its reserve untouched
/// (a run that used it up stopped; its blocks are not all freed).
pub fn usable() -> bool {
    let end = END.load(Ordering::Relaxed);
    START.load(Ordering::Acquire) != 0 && NEXT.load(Ordering::Relaxed) <= end - RESERVE
}

/// The calling thread's allocations come from here until [`leave`]. No
/// system call: the start of every tick.
pub fn enter() {
    OWNER.store(self_id(), Ordering::Relaxed);
}

/// Ends [`enter`].
pub fn leave() {
    OWNER.store(0, Ordering::Relaxed);
}

/// The calling thread, a sampler thread, allocates from here until
/// [`leave_thread`], where it can ([`alloc`] refuses what would reach the
/// reserve: that comes from `malloc`, [`owner_is_thread`]); whether it
/// does (the region is there). What the run it samples makes and grows is
/// then in memory a forked child gets empty: a fork copies none of it, and
/// the thread's ticks after a fork write no page the fork made shared (a
/// page fault each, and on a machine where the program runs on another
/// CPU, an interrupt of that CPU to flush the old mapping).
pub fn enter_thread() -> bool {
    if !arm() {
        return false;
    }
    OWNER_IS_THREAD.store(true, Ordering::Relaxed);
    enter();
    true
}

/// Stops the kernel's updates of the calling thread's restartable-sequence
/// area, which the C library registers for every thread (glibc 2.35 and
/// later); whether it did. A sampler thread calls this once: the kernel
/// writes the thread's CPU into that area, in the C library's data of the
/// thread at the top of its stack, at every return to user space after the
/// thread was switched out (each tick's wake-up), and after a fork that
/// page is the fork's to copy: a page fault per fork of a fork loop. The C
/// library reads the area in `sched_getcpu`, which asks the kernel instead
/// once the area says it is not registered (the kernel writes that at
/// unregistering), and in `pthread_create`, whose threads then register
/// none either (the sampler's helper thread, `echion-probe`). Echion's
/// thread runs no restartable sequence; only a thread of echion's may call
/// this (a program's thread would lose it, and so would its threads).
pub fn leave_rseq() -> bool {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // (x86-64's signature, which the C library registers with.)
        const RSEQ_SIG: u32 = 0x5305_3053;
        const RSEQ_FLAG_UNREGISTER: libc::c_int = 1;
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names only
        // looks symbols up.
        let (size, offset) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            )
        };
        if size.is_null() || offset.is_null() {
            return false;
        }
        // SAFETY: the C library's `unsigned int __rseq_size` and
        // `ptrdiff_t __rseq_offset`, set before any thread started and
        // constant since.
        let (size, offset) = unsafe { (*size.cast::<u32>(), *offset.cast::<isize>()) };
        if size == 0 {
            // (Not registered: a tunable or a kernel before 4.18.)
            return false;
        }
        let area = crate::forkfast::thread_pointer().wrapping_add_signed(offset);
        // The length registered: 32 bytes (the original area, what the C
        // library registers while its features fit in it), else its size.
        for len in [32, size] {
            // SAFETY: unregisters the calling thread's area where `area`,
            // `len` and the signature are what was registered; else the
            // kernel refuses and changes nothing.
            let rc =
                unsafe { libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) };
            if rc == 0 {
                return true;
            }
        }
        false
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        false
    }
}

/// Ends [`enter_thread`].
pub fn leave_thread() {
    leave();
    OWNER_IS_THREAD.store(false, Ordering::Relaxed);
}

/// The range of this process's sampler thread's stack that a forked child
/// gets empty ([`wipe_stack_below`]): its start and length (0: none).
#[link_section = ".data.echion_fork"]
static WIPED_STACK: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
/// In a forked child, the range its parent's sampler thread had wiped
/// (0: none): still marked so in the child, whose threads may get that
/// stack from the C library's cache, and given its copy back at the
/// child's next fork ([`fork_preparing`]).
#[link_section = ".data.echion_fork"]
static LEFT_WIPED: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

/// The calling thread's stack below the page that holds `sp` (an address
/// in the caller's frame), which a forked child gets empty from now on
/// (`MADV_WIPEONFORK`) until the guard is dropped (by the same thread,
/// before it ends): the child has not the thread, and the pages that
/// the thread's calls below write after a fork are then not the fork's to
/// copy. The caller's frame and those above it (where the C library keeps
/// the thread's own data, which a child reads) are copied as before.
/// `None` where the kernel or the C library says no.
///
/// The caller's `pthread_atfork` handlers call [`fork_preparing`] and
/// [`child_forked`] (registered before the thread that calls this starts).
pub fn wipe_stack_below(sp: usize) -> Option<WipedStack> {
    // SAFETY: `attr` is filled by `pthread_getattr_np` for the calling
    // thread and destroyed once read; `addr` and `size` are live locals.
    let (low, size) = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return None;
        }
        (addr as usize, size)
    };
    let page = 4096;
    let start = (low + page - 1) & !(page - 1);
    let end = sp & !(page - 1);
    if sp < low || sp >= low + size || end <= start {
        return None;
    }
    // (A stack the parent's sampler had, which this thread got: marked
    // again here, given back when this thread is done with it.)
    let left = LEFT_WIPED[0].load(Ordering::Relaxed);
    if left >= low && left < low + size {
        LEFT_WIPED[0].store(0, Ordering::Relaxed);
    }
    // SAFETY: advice on whole pages of this thread's own stack, below the
    // caller's frame: it changes only what a forked child gets of them.
    if unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_WIPEONFORK,
        )
    } != 0
    {
        return None;
    }
    WIPED_STACK[1].store(end - start, Ordering::Relaxed);
    WIPED_STACK[0].store(start, Ordering::Release);
    Some(WipedStack {
        start,
        len: end - start,
    })
}

/// A range of a thread's stack that a forked child gets empty, copied
/// again once dropped ([`wipe_stack_below`]).
pub struct WipedStack {
    start: usize,
    len: usize,
}

impl Drop for WipedStack {
    fn drop(&mut self) {
        // (Copied again before it is forgotten: a child forked between the
        // two gives it back once more.)
        keep_on_fork(self.start, self.len);
        WIPED_STACK[0].store(0, Ordering::Release);
    }
}

/// Gives `len` bytes at `start` back their copy in a forked child.
fn keep_on_fork(start: usize, len: usize) {
    // SAFETY: advice on the range [`wipe_stack_below`] marked, whole pages
    // of a thread's stack mapping (another thread's, in a child, where the
    // C library may have given it to one: still a stack).
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_KEEPONFORK) };
}

/// For `pthread_atfork`'s prepare handler (see [`wipe_stack_below`]): in
/// a child that forks in turn, the range its parent's sampler thread had
/// wiped is copied again from now on (a thread of this process may run on
/// it, and fork). A load in the common case.
#[inline(always)]
pub fn fork_preparing() {
    if LEFT_WIPED[0].load(Ordering::Relaxed) != 0 {
        let start = LEFT_WIPED[0].swap(0, Ordering::Acquire);
        if start != 0 {
            keep_on_fork(start, LEFT_WIPED[1].load(Ordering::Relaxed));
        }
    }
}

/// For `pthread_atfork`'s child handler, first: the parent's sampler
/// thread, which the child has not, owned the heap and had its stack
/// wiped: neither is the child's (see [`after_fork_of_ticking_thread`]).
/// (Inlined in the handler: a function on a page of its own would cost
/// every child a fault.)
#[inline(always)]
pub fn child_forked() {
    let wiped = WIPED_STACK[0].load(Ordering::Relaxed);
    if wiped != 0 {
        LEFT_WIPED[1].store(WIPED_STACK[1].load(Ordering::Relaxed), Ordering::Relaxed);
        LEFT_WIPED[0].store(wiped, Ordering::Release);
        WIPED_STACK[0].store(0, Ordering::Relaxed);
    }
    // (A thread of the child may get the owner's `pthread_t`; the owner
    // may have held the lock, its lists mid-change.)
    if OWNER_IS_THREAD.load(Ordering::Relaxed) {
        OWNER.store(0, Ordering::Relaxed);
        OWNER_IS_THREAD.store(false, Ordering::Relaxed);
        after_fork_of_ticking_thread();
    }
}

/// Whether the heap's owner is a sampler thread ([`enter_thread`]): what
/// [`alloc`] refuses it comes from `malloc`.
#[inline]
pub fn owner_is_thread() -> bool {
    OWNER_IS_THREAD.load(Ordering::Relaxed)
}

/// Whether `malloc`'s blocks that the calling thread frees must wait
/// ([`defer`]): it ticks in a signal handler, which may have stopped a
/// `free` under way.
#[inline]
pub fn defers_free() -> bool {
    active() && !owner_is_thread()
}

/// Runs `make` with the calling thread's allocations taken from here (the
/// ticks' signal held off meanwhile, so that no tick finds [`LOCK`] held
/// by the thread it stopped): what a run is made of, outside any tick.
/// Its blocks are freed here wherever they are dropped.
pub fn within<T>(make: impl FnOnce() -> T) -> T {
    /// Puts the thread back as it was, `make` unwinding or not.
    struct Restore(Option<libc::sigset_t>);
    impl Drop for Restore {
        fn drop(&mut self) {
            leave();
            if let Some(old) = &self.0 {
                // SAFETY: `old` is this thread's mask saved below.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
            }
        }
    }
    let _restore = Restore(block_ticks());
    enter();
    make()
}

/// Blocks the ticks' signal (if one was taken) on the calling thread; the
/// mask to put back.
fn block_ticks() -> Option<libc::sigset_t> {
    let signo = SIGNAL.load(Ordering::Acquire);
    // SAFETY: both sets are live locals, initialised by sigemptyset (the
    // old one by pthread_sigmask); only this thread's mask changes.
    (signo != 0).then(|| unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, signo);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        old
    })
}

/// Whether the calling thread allocates from here now.
#[inline]
pub fn active() -> bool {
    let owner = OWNER.load(Ordering::Relaxed);
    owner != 0 && owner == self_id()
}

/// Whether `ptr` is a block of this heap.
#[inline]
pub fn owns(ptr: *mut u8) -> bool {
    let p = ptr as usize;
    let start = START.load(Ordering::Relaxed);
    start != 0 && p >= start && p < END.load(Ordering::Relaxed)
}

fn self_id() -> usize {
    // SAFETY: pthread_self has no preconditions (and makes no system call).
    (unsafe { libc::pthread_self() }) as usize
}

/// The class of a block that holds `size` bytes aligned to `align`.
fn class_of(size: usize, align: usize) -> Option<usize> {
    let need = size.max(align).max(1 << MIN_SHIFT);
    let shift = need.next_power_of_two().trailing_zeros();
    let class = (shift - MIN_SHIFT) as usize;
    (class < CLASSES).then_some(class)
}

fn block_size(class: usize) -> usize {
    1 << (class as u32 + MIN_SHIFT)
}

/// The ticks' signal (0: none yet), kept out of a thread while it holds
/// [`LOCK`] outside a tick: a tick that stopped it there would wait for
/// the lock forever.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Says which signal the ticks run in (see [`SIGNAL`]).
pub fn set_signal(signo: libc::c_int) {
    SIGNAL.store(signo, Ordering::Release);
}

/// [`LOCK`] held; on a thread outside a tick, with the ticks' signal
/// blocked until it is dropped.
struct Locked {
    /// The signal mask to put back (outside a tick).
    mask: Option<libc::sigset_t>,
}

fn lock() -> Locked {
    let mask = if active() { None } else { block_ticks() };
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    Locked { mask }
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
        if let Some(old) = &self.mask {
            // SAFETY: `old` is the mask saved by `lock` on this thread.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
        }
    }
}

/// A block for `size` bytes aligned to `align`, or null (no region, or
/// none left). Never calls `malloc`: safe in a signal handler.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if START.load(Ordering::Acquire) == 0 || align > 4096 {
        return std::ptr::null_mut();
    }
    let Some(class) = class_of(size, align) else {
        return std::ptr::null_mut();
    };
    let locked = lock();
    let head = FREE[class].load(Ordering::Relaxed);
    let p = if head != 0 {
        // SAFETY: `head` is a freed block of this class in the region, at
        // least two words long and aligned to its size: its first word is
        // the next free block's address.
        let next = unsafe { *(head as *const usize) };
        FREE[class].store(next, Ordering::Relaxed);
        head
    } else {
        // Blocks are aligned to their size up to a page.
        let size = block_size(class);
        let a = size.min(4096);
        let at = (NEXT.load(Ordering::Relaxed) + a - 1) & !(a - 1);
        let end = END.load(Ordering::Relaxed);
        let into_reserve = at + size > end - RESERVE;
        // (A sampler thread takes `malloc`'s instead of the reserve.)
        let thread = owner_is_thread();
        if into_reserve && !thread {
            // Into the reserve, or past it (then null: the process ends,
            // as it would without echion's reserve).
            echion_sampler::note_out_of_memory(size);
        }
        if at + size > end || (into_reserve && thread) {
            0
        } else {
            NEXT.store(at + size, Ordering::Relaxed);
            at
        }
    };
    drop(locked);
    p as *mut u8
}

/// Frees a block of this heap ([`owns`] must hold) that held `size` bytes
/// aligned to `align`.
pub fn dealloc(ptr: *mut u8, size: usize, align: usize) {
    let Some(class) = class_of(size, align) else {
        return;
    };
    let _locked = lock();
    // SAFETY: `ptr` is a block of this class (its layout is the one it was
    // allocated with), no longer used by its owner: its first word becomes
    // the link.
    unsafe { *(ptr as *mut usize) = FREE[class].load(Ordering::Relaxed) };
    FREE[class].store(ptr as usize, Ordering::Relaxed);
}

/// Whether a block of this heap that holds `old` bytes (aligned to
/// `align`) also holds `new`.
pub fn fits(old: usize, new: usize, align: usize) -> bool {
    class_of(old, align) == class_of(new, align) && new > 0
}

/// Keeps a block of `malloc`'s that a tick freed, for [`drain_deferred`].
pub fn defer(ptr: *mut u8) {
    for slot in &DEFERRED {
        if slot
            .compare_exchange(0, ptr as usize, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            WAITING.fetch_add(1, Ordering::Release);
            return;
        }
    }
    LEAKED.fetch_add(1, Ordering::Relaxed);
}

/// Blocks of `malloc`'s waiting in [`DEFERRED`] (at least).
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// [`drain_deferred`] when a tick kept some: the hooks of `threading` call
/// it (outside any tick), so that a program whose threads come and go
/// keeps giving their names back to `malloc`.
pub fn drain_if_any() {
    if WAITING.load(Ordering::Acquire) != 0 {
        drain_deferred();
    }
}

/// How many of `malloc`'s blocks did not fit in [`DEFERRED`].
pub fn leaked() -> usize {
    LEAKED.load(Ordering::Relaxed)
}

/// Gives `malloc` back the blocks ticks freed (outside any tick).
pub fn drain_deferred() {
    WAITING.store(0, Ordering::Release);
    for slot in &DEFERRED {
        let p = slot.swap(0, Ordering::AcqRel);
        if p != 0 {
            // SAFETY: `p` was a block of `malloc`'s (the allocator's
            // `System` path) that its owner freed; it was kept here, unused,
            // instead of being given back in a signal handler.
            unsafe { libc::free(p as *mut libc::c_void) };
        }
    }
}

/// Whether `ptr` waits in [`DEFERRED`].
#[cfg(test)]
pub fn is_deferred(ptr: usize) -> bool {
    DEFERRED
        .iter()
        .any(|slot| slot.load(Ordering::Acquire) == ptr)
}

/// In a child whose region the kernel emptied: its blocks start again
/// from the region's start, none freed (each word written only if it
/// changes: they share the page of statics every fork writes). Whether
/// the region was emptied.
// (Inlined, as the two below: in the fork handler's code, whose page the
// child runs anyway, not on a page of their own that it would fault in.)
#[inline(always)]
fn start_again_in_child() -> bool {
    if !WIPED_IN_CHILD.load(Ordering::Relaxed) {
        return false;
    }
    let start = START.load(Ordering::Relaxed);
    if NEXT.load(Ordering::Relaxed) != start {
        NEXT.store(start, Ordering::Relaxed);
    }
    for f in &FREE {
        if f.load(Ordering::Relaxed) != 0 {
            f.store(0, Ordering::Relaxed);
        }
    }
    true
}

/// In a forked child: the parent's tick may have been under way (on a
/// thread not in the child); its freed blocks and its deferred ones are
/// forgotten (and the region's blocks start again from its start where
/// the child got it empty), the lock and the owner reset.
#[inline(always)]
pub fn after_fork_in_child() {
    OWNER.store(0, Ordering::Relaxed);
    OWNER_IS_THREAD.store(false, Ordering::Relaxed);
    if !start_again_in_child() {
        for f in &FREE {
            f.store(0, Ordering::Relaxed);
        }
    }
    for slot in &DEFERRED {
        slot.store(0, Ordering::Relaxed);
    }
    WAITING.store(0, Ordering::Relaxed);
    LOCK.store(false, Ordering::Release);
}

/// In a child that the ticks' own thread forked (no tick was under way:
/// they run on it): the region's blocks start again where the child got
/// it empty; else only what another thread held at the fork is reset, the
/// lock and the free lists it may have been changing. Nothing is written
/// otherwise (each page written costs the child a copy); the deferred
/// blocks (`malloc`'s) are the child's to give back too.
#[inline(always)]
pub fn after_fork_of_ticking_thread() {
    if start_again_in_child() {
        if LOCK.load(Ordering::Relaxed) {
            LOCK.store(false, Ordering::Release);
        }
        return;
    }
    if LOCK.load(Ordering::Relaxed) {
        for f in &FREE {
            f.store(0, Ordering::Relaxed);
        }
        LOCK.store(false, Ordering::Release);
    }
}

/// Held by the tests that make a thread the heap's owner ([`enter`],
/// [`within`]): there is one owner at a time, and the tests run at once.
#[cfg(test)]
pub static TEST_OWNER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn one_owner() -> std::sync::MutexGuard<'static, ()> {
        TEST_OWNER.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn blocks_are_aligned_reused_by_size_and_only_the_owner_allocates_here() {
        let _owner = one_owner();
        assert!(arm());
        assert!(!active());
        let a = alloc(100, 8);
        assert!(owns(a) && (a as usize).is_multiple_of(128));
        let b = alloc(5000, 64);
        assert!(owns(b) && (b as usize).is_multiple_of(4096));
        assert_ne!(a, b);
        // Writable, the whole block.
        // SAFETY: `a` is a fresh block of 128 bytes.
        unsafe { std::ptr::write_bytes(a, 0xab, 128) };
        dealloc(a, 100, 8);
        // The freed block comes back for the same class, not another.
        assert_eq!(alloc(120, 8), a);
        assert_ne!(alloc(100, 8), a);
        assert!(fits(100, 128, 8) && !fits(100, 129, 8));
        let mine = std::thread::spawn(|| {
            enter();
            let here = active();
            leave();
            (here, active())
        })
        .join()
        .expect("thread");
        assert_eq!(mine, (true, false));
        // Another thread's enter does not make this one allocate here.
        assert!(!active());
        let outside = Box::new(7u64);
        assert!(!owns(&*outside as *const u64 as *mut u8));
    }

    #[test]
    fn a_run_made_within_is_here_and_a_forked_child_gets_the_region_empty() {
        let _owner = one_owner();
        assert!(arm());
        let made = within(|| vec![0x5au8; 3000]);
        assert!(owns(made.as_ptr() as *mut u8));
        assert!(!active());
        let outside = Box::new([1u8; 10]);
        assert!(!owns(outside.as_ptr() as *mut u8));
        // (Every kernel of the machines echion is tested on has it: 4.14.)
        assert!(WIPED_IN_CHILD.load(Ordering::Relaxed));
        let at = made.as_ptr() as usize;
        // SAFETY: the child only reads memory, writes this module's
        // statics (no lock, no allocation) and leaves by `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: `at` is in the region, mapped in the child too.
            let byte = unsafe { std::ptr::read_volatile(at as *const u8) };
            after_fork_in_child();
            let again = NEXT.load(Ordering::Relaxed) == START.load(Ordering::Relaxed)
                && FREE.iter().all(|f| f.load(Ordering::Relaxed) == 0);
            let code = match (byte, again) {
                (0, true) => 0,
                (0, false) => 2,
                _ => 3,
            };
            // SAFETY: ends the child, running nothing of the parent's.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // 2: the blocks did not start again; 3: the child saw the parent's.
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
        // The parent's block is as it was.
        assert!(made.iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn a_sampler_thread_takes_from_malloc_what_the_region_cannot_hold_and_frees_its_blocks_at_once()
    {
        let _owner = one_owner();
        assert!(arm());
        let before = Box::new([3u8; 64]);
        let (small, big, freed_at_once) = std::thread::spawn(move || {
            assert!(enter_thread());
            assert!(active() && owner_is_thread() && !defers_free());
            let small = vec![1u8; 100];
            // More than the region holds before its reserve: `malloc`'s,
            // not null (the allocator would end the process).
            let big = vec![2u8; REGION - RESERVE];
            let at = before.as_ptr() as usize;
            drop(before);
            let freed_at_once = !is_deferred(at);
            let got = (
                owns(small.as_ptr() as *mut u8),
                owns(big.as_ptr() as *mut u8),
                freed_at_once,
            );
            drop((small, big));
            leave_thread();
            assert!(!active() && !owner_is_thread());
            got
        })
        .join()
        .expect("thread");
        assert!(small, "a small block of the thread's is not the region's");
        assert!(!big, "the big block is the region's");
        assert!(freed_at_once, "malloc's block waits for the run's end");
    }

    #[test]
    fn a_child_gets_the_stack_below_the_frame_empty_until_the_guard_is_dropped() {
        use std::sync::mpsc;
        let (to_main, from_thread) = mpsc::channel();
        let (to_thread, from_main) = mpsc::channel::<()>();
        /// A page down from the frame that wiped, a marked buffer: its
        /// address, kept until told.
        #[inline(never)]
        fn marked(to_main: &mpsc::Sender<usize>, from_main: &mpsc::Receiver<()>) {
            let mut buf = [0u8; 3 * 4096];
            buf.fill(0x5a);
            let buf = std::hint::black_box(&mut buf);
            to_main.send(buf.as_ptr() as usize + 4096).expect("send");
            from_main.recv().expect("recv");
        }
        let thread = std::thread::spawn(move || {
            let here = 0u8;
            let guard = wipe_stack_below(std::hint::black_box(std::ptr::addr_of!(here)) as usize);
            let range = guard.as_ref().map(|g| (g.start, g.len));
            marked(&to_main, &from_main);
            drop(guard);
            // (The same frame again, the same address.)
            marked(&to_main, &from_main);
            range
        });
        // What a forked child reads at `at` (4: the mark, 0: zero), with
        // whether it took the wiped range for its next fork to give back
        // (2) and gave it back there (1).
        let child_reads = |at: usize| {
            // SAFETY: the child reads memory and this module's statics,
            // writes them, and leaves by `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: `at` is in the thread's stack, mapped in the child.
                let byte = unsafe { std::ptr::read_volatile(at as *const u8) };
                child_forked();
                let left = LEFT_WIPED[0].load(Ordering::Relaxed) != 0
                    && WIPED_STACK[0].load(Ordering::Relaxed) == 0;
                fork_preparing();
                let given_back = left && LEFT_WIPED[0].load(Ordering::Relaxed) == 0;
                let code =
                    4 * i32::from(byte == 0x5a) + 2 * i32::from(left) + i32::from(given_back);
                // SAFETY: ends the child, running nothing of the parent's.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for the child just forked; `status` is a live local.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "status {status:#x}");
            libc::WEXITSTATUS(status)
        };
        let at = from_thread.recv().expect("recv");
        // Zeroes, and the range is the child's to give back.
        assert_eq!(child_reads(at), 2 + 1);
        to_thread.send(()).expect("send");
        // The guard dropped: the child gets a copy, and no range.
        assert_eq!(from_thread.recv().expect("recv"), at);
        assert_eq!(child_reads(at), 4);
        to_thread.send(()).expect("send");
        let (start, len) = thread.join().expect("thread").expect("no stack wiped");
        assert!(
            start <= at && at < start + len,
            "{at:#x} not in {start:#x}+{len:#x}"
        );
    }

    #[test]
    fn no_class_for_what_the_region_cannot_hold() {
        assert_eq!(class_of(1, 1), Some(0));
        assert_eq!(class_of(16, 16), Some(0));
        assert_eq!(class_of(17, 1), Some(1));
        assert_eq!(class_of(1 << 27, 8), Some(CLASSES - 1));
        assert_eq!(class_of((1 << 27) + 1, 8), None);
    }
}
