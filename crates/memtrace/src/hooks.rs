//! The allocator hooks: the only `unsafe` code of the crate.
//!
//! Each of CPython's three allocator domains (raw, mem, object) gets an
//! allocator whose functions call the one the domain had before (saved in
//! [`DOMAINS`], the `ctx` of ours points at it) and then tell the
//! [`Tracker`]. Installing is idempotent and done with the GIL held, as
//! `PyMem_SetAllocator` requires; uninstalling puts the saved allocators
//! back where ours is still the installed one (if something installed its
//! own on top of ours, ours stays, passing everything through). Between
//! [`stop_tracking`] and the uninstall the hooks only pass through.
//!
//! The hook runs on the allocating thread and reads that thread's own
//! state, frames and code objects with plain loads ([`OwnThread`]): rule 1
//! of DESIGN.md allows it there, because those objects belong to the thread
//! that is inside the allocator and cannot change or go away under it. The
//! thread state comes from `PyGILState_GetThisThreadState` in the raw
//! domain (which may be called without the GIL) and from the thread
//! holding the GIL in the two others.
//!
//! A thread that is already inside the hook (re-entry) is passed through,
//! and a panic in the accounting is caught: the allocation always happens
//! exactly as it would without echion. After a fork the child gets a fresh,
//! empty table (a `pthread_atfork` handler), so a lock that another thread
//! of the parent held cannot be held in the child.

use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

use echion_cpython_layout::linetable::TableFormat;
use echion_cpython_layout::views::Target;
use echion_cpython_layout::{Addr, Layout, MemError, MemoryReader, PyVersion};

use crate::table::{Drained, Tracker, TrackerStats};
use crate::HookError;

/// `PyMemAllocatorEx` (Include/cpython/pymem.h, the same in 3.8–3.13).
#[repr(C)]
#[derive(Clone, Copy)]
struct PyMemAllocatorEx {
    ctx: *mut c_void,
    malloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    calloc: Option<unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void>,
    realloc: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void)>,
}

const EMPTY: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: std::ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};

/// One domain: the allocator it had before ours, called through.
struct Domain {
    /// `PYMEM_DOMAIN_RAW` (0), `_MEM` (1) or `_OBJ` (2).
    id: c_int,
    original: UnsafeCell<PyMemAllocatorEx>,
}

// SAFETY: `original` is written only by `install`, with the GIL held and
// before our allocator (the only reader) is set for the domain; after that
// it is only read.
unsafe impl Sync for Domain {}

static DOMAINS: [Domain; 3] = [
    Domain {
        id: 0,
        original: UnsafeCell::new(EMPTY),
    },
    Domain {
        id: 1,
        original: UnsafeCell::new(EMPTY),
    },
    Domain {
        id: 2,
        original: UnsafeCell::new(EMPTY),
    },
];

/// The C API functions the hooks need, found in the running interpreter.
struct Api {
    get: unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx),
    set: unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx),
    /// `PyGILState_GetThisThreadState`.
    this_thread: unsafe extern "C" fn() -> *mut c_void,
    /// `_PyThreadState_UncheckedGet` / `PyThreadState_GetUnchecked`.
    holding_gil: unsafe extern "C" fn() -> *mut c_void,
}

static API: OnceLock<Api> = OnceLock::new();

fn symbol(name: &'static CStr) -> Result<*mut c_void, HookError> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        Err(HookError::MissingSymbol(name.to_str().unwrap_or("?")))
    } else {
        Ok(p)
    }
}

fn api() -> Result<&'static Api, HookError> {
    if let Some(api) = API.get() {
        return Ok(api);
    }
    let holding = symbol(c"PyThreadState_GetUnchecked")
        .or_else(|_| symbol(c"_PyThreadState_UncheckedGet"))?;
    // SAFETY: each symbol is the C API function of that name, whose
    // signature (Include/pymem.h, Include/pystate.h) is the one given.
    let api = unsafe {
        Api {
            get: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx),
            >(symbol(c"PyMem_GetAllocator")?),
            set: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(c_int, *mut PyMemAllocatorEx),
            >(symbol(c"PyMem_SetAllocator")?),
            this_thread: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *mut c_void>(
                symbol(c"PyGILState_GetThisThreadState")?,
            ),
            holding_gil: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> *mut c_void>(
                holding,
            ),
        }
    };
    Ok(API.get_or_init(|| api))
}

/// The table and what reading the interpreter needs.
struct Shared {
    tracker: Mutex<Tracker>,
    layout: &'static Layout,
    format: TableFormat,
}

/// The current table (a new one after a fork); null before the first
/// install. Old tables are never freed: a thread may still hold one.
static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
/// Whether allocations are accounted (else the hooks only pass through).
static TRACKING: AtomicBool = AtomicBool::new(false);
/// Whether our allocator is set in the domains.
static INSTALLED: AtomicBool = AtomicBool::new(false);
static ATFORK: std::sync::Once = std::sync::Once::new();

thread_local! {
    /// Set while this thread is inside the accounting.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Reads the allocating thread's own interpreter memory with plain loads.
struct OwnThread;

impl MemoryReader for OwnThread {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        if addr.is_null() {
            return Err(MemError::Null);
        }
        addr.0
            .checked_add(buf.len() as u64)
            .ok_or(MemError::Overflow)?;
        // SAFETY: only the hook reads through this, on the allocating
        // thread, and only what the views reach from that thread's own
        // state: its frames, their code objects and strings, its
        // interpreter. They are alive and unchanging while the thread is in
        // the allocator (DESIGN.md, rule 1), and the views read within
        // each structure's size.
        unsafe { std::ptr::copy_nonoverlapping(addr.0 as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn reads_are_cheap(&self) -> bool {
        true
    }
}

fn shared() -> Option<&'static Shared> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: SHARED only ever holds null or a leaked `Box<Shared>`, never
    // freed.
    unsafe { p.as_ref() }
}

fn fresh(layout: &'static Layout, format: TableFormat) -> *mut Shared {
    Box::into_raw(Box::new(Shared {
        tracker: Mutex::new(Tracker::new(format)),
        layout,
        format,
    }))
}

extern "C" fn after_fork_in_child() {
    if let Some(s) = shared() {
        // The parent's table (and its lock, which a thread that does not
        // exist here may hold) is left behind.
        SHARED.store(fresh(s.layout, s.format), Ordering::Release);
    }
}

/// Accounts an allocation made in `domain`.
fn on_alloc(domain: &Domain, ptr: *mut c_void, size: usize) {
    if ptr.is_null() || !TRACKING.load(Ordering::Relaxed) {
        return;
    }
    account(domain, |t, target, tstate| {
        t.alloc(target, tstate, ptr as u64, size as u64)
    });
}

/// Accounts a free made in `domain`.
fn on_free(domain: &Domain, ptr: *mut c_void) {
    if ptr.is_null() || !TRACKING.load(Ordering::Relaxed) {
        return;
    }
    account(domain, |t, _, _| t.free(ptr as u64));
}

fn account(domain: &Domain, f: impl FnOnce(&mut Tracker, &Target<'_, OwnThread>, Addr)) {
    let Ok(false) = BUSY.try_with(|b| b.replace(true)) else {
        return;
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (Some(s), Some(api)) = (shared(), API.get()) else {
            return;
        };
        // SAFETY: both functions take no arguments and only read the
        // calling thread's thread-local state.
        let tstate = unsafe {
            if domain.id == 0 {
                (api.this_thread)()
            } else {
                (api.holding_gil)()
            }
        };
        let target = Target::new(&OwnThread, s.layout);
        let mut t = s.tracker.lock().unwrap_or_else(|e| e.into_inner());
        if tstate.is_null() {
            // Only a free needs no thread state.
            f(&mut t, &target, Addr::NULL);
        } else {
            f(&mut t, &target, Addr(tstate as u64));
        }
    }));
    let _ = BUSY.try_with(|b| b.set(false));
}

/// The domain whose allocator ours was set with.
///
/// # Safety
/// `ctx` is the `ctx` of one of our allocators: a pointer into [`DOMAINS`].
unsafe fn domain<'a>(ctx: *mut c_void) -> (&'a Domain, PyMemAllocatorEx) {
    // SAFETY: per the contract, `ctx` points at a `Domain` in a static;
    // its `original` is not written while our allocator is set.
    unsafe {
        let d = &*(ctx as *const Domain);
        (d, *d.original.get())
    }
}

unsafe extern "C" fn hook_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: CPython hands us the ctx we were installed with.
    let (d, a) = unsafe { domain(ctx) };
    // SAFETY: the saved allocator of the domain, called as CPython would.
    let p = unsafe { (a.malloc.expect("saved allocator"))(a.ctx, n) };
    on_alloc(d, p, n);
    p
}

unsafe extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: CPython hands us the ctx we were installed with.
    let (d, a) = unsafe { domain(ctx) };
    // SAFETY: the saved allocator of the domain, called as CPython would.
    let p = unsafe { (a.calloc.expect("saved allocator"))(a.ctx, nelem, elsize) };
    on_alloc(d, p, nelem.saturating_mul(elsize));
    p
}

unsafe extern "C" fn hook_realloc(ctx: *mut c_void, old: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: CPython hands us the ctx we were installed with.
    let (d, a) = unsafe { domain(ctx) };
    // SAFETY: the saved allocator of the domain, called as CPython would.
    let p = unsafe { (a.realloc.expect("saved allocator"))(a.ctx, old, n) };
    if !p.is_null() {
        // A move or a resize: the old block is gone, the new one is the
        // stack's that resized it (a failed realloc leaves `old` as it was).
        on_free(d, old);
        on_alloc(d, p, n);
    }
    p
}

unsafe extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: CPython hands us the ctx we were installed with.
    let (d, a) = unsafe { domain(ctx) };
    on_free(d, p);
    // SAFETY: the saved allocator of the domain, called as CPython would.
    unsafe { (a.free.expect("saved allocator"))(a.ctx, p) }
}

fn ours(d: &Domain) -> PyMemAllocatorEx {
    PyMemAllocatorEx {
        ctx: d as *const Domain as *mut c_void,
        malloc: Some(hook_malloc),
        calloc: Some(hook_calloc),
        realloc: Some(hook_realloc),
        free: Some(hook_free),
    }
}

/// Sets our allocator in the three domains (once: a second call while
/// installed does nothing) and starts accounting. The caller holds the GIL
/// of the interpreter, which runs CPython `version`.
pub fn install(version: PyVersion) -> Result<(), HookError> {
    let layout = Layout::for_version(version).map_err(|_| HookError::Unsupported(version))?;
    let format = TableFormat::for_version(version).map_err(|_| HookError::Unsupported(version))?;
    let api = api()?;
    if SHARED.load(Ordering::Acquire).is_null() {
        SHARED.store(fresh(layout, format), Ordering::Release);
    }
    ATFORK.call_once(|| {
        // SAFETY: registers a handler with no preconditions of its own.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        for d in &DOMAINS {
            let mut mine = ours(d);
            // SAFETY: the GIL is held (the caller's contract), as the two
            // functions require; `original` is written before our
            // allocator, its only reader, is set.
            unsafe {
                (api.get)(d.id, d.original.get());
                (api.set)(d.id, &mut mine);
            }
        }
    }
    TRACKING.store(true, Ordering::Release);
    Ok(())
}

/// Stops accounting: from now on the hooks pass everything through. Safe
/// to call from any thread, without the GIL.
pub fn stop_tracking() {
    TRACKING.store(false, Ordering::Release);
}

/// Stops accounting and puts back the allocators ours replaced, in each
/// domain where ours is still the one set. Returns whether every domain got
/// its allocator back. The caller holds the GIL.
pub fn uninstall() -> bool {
    stop_tracking();
    let Some(api) = API.get() else {
        return true;
    };
    if !INSTALLED.load(Ordering::Acquire) {
        return true;
    }
    let mut all = true;
    for d in &DOMAINS {
        let mut now = EMPTY;
        // SAFETY: the GIL is held (the caller's contract).
        unsafe { (api.get)(d.id, &mut now) };
        let mine = ours(d);
        if now.ctx == mine.ctx {
            // SAFETY: as above; `original` is the allocator saved when ours
            // was set, which CPython allocated the blocks we passed on with.
            unsafe { (api.set)(d.id, d.original.get()) };
        } else {
            all = false;
        }
    }
    if all {
        INSTALLED.store(false, Ordering::Release);
    }
    all
}

/// Whether allocations are being accounted.
pub fn tracking() -> bool {
    TRACKING.load(Ordering::Acquire)
}

/// Hands what changed since the last call to `out` (see
/// [`Tracker::drain`]); `None` before the first install.
pub fn drain(out: &mut Drained) -> Option<TrackerStats> {
    let s = shared()?;
    let mut t = s.tracker.lock().unwrap_or_else(|e| e.into_inner());
    t.drain(out);
    Some(t.stats())
}

/// Tells the table that the code object at `code` is being freed (the
/// embedding module's code deallocation hook calls this, GIL held).
pub fn code_freed(code: u64) {
    if let Some(s) = shared() {
        if let Ok(false) = BUSY.try_with(|b| b.replace(true)) {
            s.tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .code_freed(code);
            let _ = BUSY.try_with(|b| b.set(false));
        }
    }
}

/// Empties the table (a new run starts from nothing).
pub fn reset() {
    if let Some(s) = shared() {
        SHARED.store(fresh(s.layout, s.format), Ordering::Release);
    }
}
