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
        if at + size > end - RESERVE {
            // Into the reserve, or past it (then null: the process ends,
            // as it would without echion's reserve).
            echion_sampler::note_out_of_memory(size);
        }
        if at + size > end {
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
    fn no_class_for_what_the_region_cannot_hold() {
        assert_eq!(class_of(1, 1), Some(0));
        assert_eq!(class_of(16, 16), Some(0));
        assert_eq!(class_of(17, 1), Some(1));
        assert_eq!(class_of(1 << 27, 8), Some(CLASSES - 1));
        assert_eq!(class_of((1 << 27) + 1, 8), None);
    }
}
