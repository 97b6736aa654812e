//! The extension's allocator: the system's, with a reserve for the moment
//! it fails.
//!
//! Rust ends the process when an allocation fails, and echion allocates in
//! the profiled process (the sampler's caches, memory mode's table, on the
//! program's own threads). A program that reaches its memory limit
//! (`ulimit -v`, `RLIMIT_AS`) would then be killed by its profiler. So the
//! module keeps [`RESERVE`] bytes of address space mapped and never
//! touched (`PROT_NONE`: no memory, only room under the limit); the first
//! allocation of echion's that fails gives the reserve back and tries
//! again, and tells the sampler ([`echion_sampler::note_out_of_memory`]),
//! which ends sampling and closes the profile, and memory mode's hooks,
//! which stop tracking. Only a second failure after that ends the process,
//! as it would have without the reserve. [`arm`] maps the reserve again
//! when sampling starts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sigheap;

/// Address space kept for the end of a run: what closing the profile and
/// one more growth of memory mode's table take.
const RESERVE: usize = 16 << 20;

/// The reserve's address, 0 while there is none.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// The system's allocator, with the reserve.
pub struct WithReserve;

// SAFETY: every method hands the request to `System` unchanged, and only
// ever returns what `System` returned, but for the thread whose tick runs
// in a signal handler or the sampler thread that owns `sigheap`, whose
// requests go there (blocks of the asked size and alignment or more,
// never shared; the thread's, where there is no room, to `System`); a block is freed where
// it came from (`sigheap::owns` tells). The reserve is a separate mapping
// no allocation ever points into.
unsafe impl GlobalAlloc for WithReserve {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if sigheap::active() {
            let p = sigheap::alloc(layout.size(), layout.align());
            if !p.is_null() || !sigheap::owner_is_thread() {
                return p;
            }
        }
        // SAFETY: the caller's contract for `alloc` is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() && give_back(layout.size()) {
            // SAFETY: as above.
            return unsafe { System.alloc(layout) };
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if sigheap::active() {
            let p = sigheap::alloc(layout.size(), layout.align());
            if !p.is_null() {
                // SAFETY: a fresh block of at least `layout.size()` bytes.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            }
            if !p.is_null() || !sigheap::owner_is_thread() {
                return p;
            }
        }
        // SAFETY: the caller's contract for `alloc_zeroed` is `System`'s.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() && give_back(layout.size()) {
            // SAFETY: as above.
            return unsafe { System.alloc_zeroed(layout) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if sigheap::owns(ptr) {
            sigheap::dealloc(ptr, layout.size(), layout.align());
        } else if sigheap::defers_free() {
            // `free` may wait for a lock the stopped thread holds.
            sigheap::defer(ptr);
        } else {
            // SAFETY: `ptr` came from `System` with `layout` (see `alloc`).
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mine = sigheap::owns(ptr);
        if mine && sigheap::fits(layout.size(), new_size, layout.align()) {
            return ptr;
        }
        if mine || sigheap::active() {
            // SAFETY: `new_size` with the old alignment is a valid layout
            // (the caller's contract for `realloc`).
            let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: the caller's contract for `alloc`.
            let p = unsafe { self.alloc(new) };
            if !p.is_null() {
                // SAFETY: both blocks hold at least the smaller size; they
                // are distinct (the new one was just handed out).
                unsafe { std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size)) };
                // SAFETY: `ptr` was allocated with `layout` and is not used
                // again by the caller once `realloc` succeeds.
                unsafe { self.dealloc(ptr, layout) };
            }
            return p;
        }
        // SAFETY: the caller's contract for `realloc` is `System`'s; on
        // failure `ptr` is still valid and is retried as it was.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() && give_back(new_size) {
            // SAFETY: as above.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        p
    }
}

/// Maps the reserve if it is not there (at the start of sampling; after a
/// fork the child inherits the parent's). Failing only leaves the process
/// without one.
pub fn arm() {
    if MAPPED.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: a new private anonymous mapping, placed by the kernel, that
    // nothing reads or writes (PROT_NONE).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RESERVE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return;
    }
    if MAPPED
        .compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread armed it meanwhile.
        // SAFETY: `p` is the mapping made above, of RESERVE bytes, unused.
        unsafe { libc::munmap(p, RESERVE) };
    }
}

/// Unmaps the reserve, if it is there, once sampling is over: its address
/// space goes back to the program, which at its `RLIMIT_AS` needs it more
/// than a sampler that has stopped (CPython 3.13.0 crashes when an
/// allocation it cannot do without fails there, as its interned-string
/// table's growth). The next run maps it again.
pub fn release() {
    let p = MAPPED.swap(0, Ordering::AcqRel);
    if p != 0 {
        // SAFETY: `p` is the reserve mapped by `arm`, RESERVE bytes that no
        // allocation points into; the swap above makes this the only unmap.
        unsafe { libc::munmap(p as *mut libc::c_void, RESERVE) };
    }
}

/// After an allocation of `size` bytes failed: unmaps the reserve (once)
/// and says so. Returns whether there was one to give back. No allocation
/// here.
fn give_back(size: usize) -> bool {
    let p = MAPPED.swap(0, Ordering::AcqRel);
    if p == 0 {
        return false;
    }
    // SAFETY: `p` is the reserve mapped by `arm`, RESERVE bytes that no
    // allocation points into; the swap above makes this the only unmap.
    unsafe { libc::munmap(p as *mut libc::c_void, RESERVE) };
    echion_memtrace::stop_tracking();
    echion_sampler::note_out_of_memory(size);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticks_allocations_come_from_its_heap_and_what_it_frees_of_malloc_waits() {
        let _owner = sigheap::TEST_OWNER
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        assert!(sigheap::arm());
        let outside = Box::new([7u8; 64]);
        let at = outside.as_ptr() as usize;
        assert!(!sigheap::owns(at as *mut u8));
        let (inside, grown, zeroed) = std::thread::spawn(move || {
            sigheap::enter();
            let inside = Box::new([1u8; 64]);
            let mut grown: Vec<u64> = Vec::with_capacity(1);
            grown.extend(0..1000);
            let zeroed = vec![0u64; 300];
            // Freed in a tick: kept, not given to `free`.
            drop(outside);
            sigheap::leave();
            (inside, grown, zeroed)
        })
        .join()
        .expect("tick thread");
        for p in [
            inside.as_ptr(),
            grown.as_ptr().cast(),
            zeroed.as_ptr().cast(),
        ] {
            assert!(sigheap::owns(p as *mut u8));
        }
        assert_eq!(grown.iter().sum::<u64>(), 999 * 1000 / 2);
        assert!(zeroed.iter().all(|&x| x == 0));
        assert!(sigheap::is_deferred(at));
        // Outside a tick: a block of the heap grows out of it, and is freed
        // back to it; the kept ones go back to `malloc`.
        let mut moved = grown;
        moved.extend(0..100_000);
        assert!(!sigheap::owns(moved.as_ptr() as *mut u8));
        drop((inside, zeroed, moved));
        sigheap::drain_deferred();
        assert!(!sigheap::is_deferred(at));
    }

    #[test]
    fn the_reserve_is_given_back_once_and_armed_again() {
        arm();
        let first = MAPPED.load(Ordering::Acquire);
        assert_ne!(first, 0);
        arm();
        assert_eq!(MAPPED.load(Ordering::Acquire), first, "armed twice");
        assert!(give_back(123));
        assert!(!give_back(123), "given back twice");
        arm();
        assert_ne!(MAPPED.load(Ordering::Acquire), 0);
        release();
        assert_eq!(MAPPED.load(Ordering::Acquire), 0);
        assert!(!give_back(123), "released already");
    }
}
