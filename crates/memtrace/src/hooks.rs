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
use std::sync::OnceLock;

mod lock;
use lock::SpinLock;

use echion_cpython_layout::linetable::TableFormat;
use echion_cpython_layout::views::Target;
use echion_cpython_layout::{Addr, Layout, MemError, MemoryReader, PyVersion};

use crate::table::{AllocThread, Drained, Taken, Tracker, TrackerStats};
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
    tracker: SpinLock<Tracker>,
    layout: &'static Layout,
    format: TableFormat,
    /// Whether this table was given its native unwinder (or tried to).
    native_ready: AtomicBool,
}

/// The current table (a new one after a fork); null before the first
/// install. Old tables are never freed: a thread may still hold one.
static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
/// Whether allocations are accounted (else the hooks only pass through).
static TRACKING: AtomicBool = AtomicBool::new(false);
/// Whether our allocator is set in the domains.
static INSTALLED: AtomicBool = AtomicBool::new(false);
static ATFORK: std::sync::Once = std::sync::Once::new();
/// Whether stacks get their native frames (see [`set_native`]).
static NATIVE_WANTED: AtomicBool = AtomicBool::new(false);

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
        tracker: SpinLock::new(Tracker::new(format)),
        layout,
        format,
        native_ready: AtomicBool::new(false),
    }))
}

extern "C" fn after_fork_in_child() {
    // The child's only thread has a kernel id of its own.
    let _ = KERNEL_ID.try_with(|id| id.set(0));
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
    account(Some(domain), |t, target, tstate| {
        if !tstate.is_null() {
            // SAFETY: `tstate` is the allocating thread's own state (see
            // `account`).
            unsafe { link_to_stack(t, target, tstate.0, ptr as u64, size as u64) };
        }
    });
}

/// Links the block to the current stack of the thread at `tstate`, made
/// on the calling thread (whose kernel id the stack gets).
///
/// # Safety
/// `tstate` is the calling thread's own thread state, or that of a thread
/// that runs no Python code until this returns: its state and frames are
/// read with plain loads.
unsafe fn link_to_stack(
    t: &mut Tracker,
    target: &Target<'_, OwnThread>,
    tstate: u64,
    ptr: u64,
    size: u64,
) {
    let mut keys = t.take_keys();
    let native = t.native();
    // SAFETY: per the contract, the state and the frames it reaches are
    // alive and unchanging meanwhile.
    let (thread_id, interp) = unsafe { walk_own_stack(target.layout(), tstate, &mut keys, native) };
    if native && !keys.is_empty() {
        append_own_native_frames(t, &mut keys);
    }
    let thread = AllocThread {
        thread_id,
        native_id: own_kernel_id(),
        interp,
    };
    t.alloc_walked(target, thread, &keys, ptr, size);
    t.put_keys(keys);
}

thread_local! {
    /// This thread's kernel id, 0 until first asked.
    static KERNEL_ID: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's kernel id (one system call per thread: kept in a
/// thread-local; a forked child's is forgotten by the fork handler). 0 if
/// it cannot be known (the thread-local is gone: the thread is ending).
fn own_kernel_id() -> u64 {
    KERNEL_ID
        .try_with(|id| {
            if id.get() == 0 {
                // SAFETY: gettid takes no arguments and cannot fail.
                id.set(unsafe { libc::syscall(libc::SYS_gettid) } as u64);
            }
            id.get()
        })
        .unwrap_or(0)
}

thread_local! {
    /// This thread's stack: its lowest address and one past its highest
    /// (top 0: unknown yet; `u64::MAX`: cannot be known).
    static STACK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The calling thread's stack, (lowest address, one past the highest).
fn own_stack() -> Option<(u64, u64)> {
    let bounds = STACK.try_with(|t| {
        if t.get().1 == 0 {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
            let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
            // SAFETY: pthread_getattr_np fills `attr` for the calling
            // thread (glibc allocates with malloc, not PyMem: no re-entry);
            // getstack reads it; destroy frees it. Only on success.
            let found = unsafe {
                libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) == 0 && {
                    let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
                    libc::pthread_attr_destroy(attr.as_mut_ptr());
                    ok
                }
            };
            t.set(if found {
                (addr as u64, addr as u64 + size as u64)
            } else {
                (0, u64::MAX)
            });
        }
        t.get()
    });
    bounds.ok().filter(|&(_, top)| top != u64::MAX && top != 0)
}

/// The address range of the module this code is in (the hook's own
/// frames, innermost in every unwind, are left out).
static OWN_MODULE: OnceLock<(u64, u64)> = OnceLock::new();

/// Unwinds the calling thread's own native stack from here and appends
/// its frames to `keys` as `(pc, NATIVE)`, innermost first, this module's
/// own frames (the hook's) left out.
#[inline(never)]
fn append_own_native_frames(t: &mut Tracker, keys: &mut Vec<(u64, u32)>) {
    let Some((low, top)) = own_stack() else {
        return;
    };
    let Some((unwinder, mut pcs)) = t.unwinder_and_pcs() else {
        return;
    };
    let own = *OWN_MODULE.get_or_init(|| {
        let here = append_own_native_frames as *const () as u64;
        unwinder
            .modules()
            .module_at(here)
            .map_or((0, 0), |m| (m.range.start, m.range.end))
    });
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads the instruction pointer (an address in this function),
    // the stack pointer and the frame pointer into registers; touches no
    // memory and no flags. Both belong to this function's running frame,
    // which stays live while the unwinder below runs deeper in the stack.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    if sp < low || sp >= top {
        // Running on another stack (a signal stack, a coroutine's): its
        // bounds are unknown, no native frames.
        t.put_pcs(pcs);
        return;
    }
    let read = |addr: u64| -> Result<u64, ()> {
        if addr < sp || addr.checked_add(8).is_none_or(|end| end > top) || !addr.is_multiple_of(8) {
            return Err(());
        }
        // SAFETY: an aligned word of this thread's own stack, between the
        // stack pointer of this running function and the stack's top: the
        // frames of this function's callers, suspended while it runs.
        Ok(unsafe { std::ptr::read_volatile(addr as *const u64) })
    };
    let regs = echion_unwind::Registers { ip, sp, bp };
    unwinder.unwind_with(regs, read, &mut pcs);
    // An address in no mapping read so far: a library loaded since (the
    // map is read again at most every 20 ms).
    if pcs.iter().any(|&pc| unwinder.unknown(pc)) && unwinder.refresh_if_due() {
        unwinder.unwind_with(regs, read, &mut pcs);
    }
    keys.extend(
        pcs.iter()
            .skip_while(|&&pc| own.0 <= pc && pc < own.1)
            .map(|&pc| (pc, crate::table::NATIVE)),
    );
    t.put_pcs(pcs);
}

/// Loads the `T` at `addr + off`.
///
/// # Safety
/// The bytes are inside an object that is alive and not being written.
#[inline(always)]
unsafe fn load<T: Copy>(addr: u64, off: u64) -> T {
    // SAFETY: per the contract.
    unsafe { std::ptr::read_unaligned(addr.wrapping_add(off) as *const T) }
}

/// The Python frames of the thread whose state is at `tstate`, innermost
/// first, as (code object, byte offset of the instruction; `u32::MAX`
/// before the first), into `out`: what [`Target::walk`] yields for that
/// thread, shims and incomplete frames left out, read with plain loads and
/// no decoding (the fast path of every allocation; the views decode a stack
/// the first time it is seen). Returns the thread's id and interpreter.
///
/// # Safety
/// `tstate` is the calling thread's own, live thread state.
unsafe fn walk_own_stack(
    layout: &Layout,
    tstate: u64,
    out: &mut Vec<(u64, u32)>,
    marks: bool,
) -> (u64, u64) {
    use crate::table::{GROUP_END, MAX_OFFSET};
    use echion_cpython_layout::layout::{CurrentFrame, FrameLayout};
    out.clear();
    let t = &layout.thread;
    // SAFETY: every load below reads the calling thread's own state, its
    // frames and their code objects, alive while it is in the allocator
    // (the function's contract), at offsets of this version's layout.
    unsafe {
        let thread_id: u64 = load(tstate, t.thread_id);
        let interp: u64 = load(tstate, t.interp);
        let mut frame: u64 = match t.current_frame {
            CurrentFrame::Direct(off) => load(tstate, off),
            CurrentFrame::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let cf: u64 = load(tstate, cframe);
                if cf == 0 {
                    0
                } else {
                    load(cf, current_frame)
                }
            }
        };
        let mut steps = 0;
        match &layout.frame {
            FrameLayout::Object(l) => {
                while frame != 0 && steps < crate::table::MAX_FRAMES {
                    let code: u64 = load(frame, l.f_code);
                    let lasti: i32 = load(frame, l.f_lasti);
                    let offset = if lasti < 0 {
                        u32::MAX
                    } else {
                        (lasti as u32).saturating_mul(l.lasti_unit as u32)
                    };
                    if code != 0 {
                        let offset = if offset == u32::MAX {
                            offset
                        } else {
                            offset.min(MAX_OFFSET)
                        };
                        out.push((code, offset));
                        if marks {
                            // Every frame is one call of the loop.
                            out.push((0, GROUP_END));
                        }
                    }
                    let back: u64 = load(frame, l.f_back);
                    if back == frame {
                        break;
                    }
                    frame = back;
                    steps += 1;
                }
            }
            FrameLayout::Interpreter(l) => {
                let adaptive = layout.code.code_adaptive.unwrap_or(0);
                let first = layout.code.firsttraceable;
                while frame != 0 && steps < crate::table::MAX_FRAMES {
                    let owner: u8 = load(frame, l.owner);
                    if Some(owner) == l.owned_by_cstack {
                        // 3.12+: the shim after (outside) a call's entry
                        // frame ends that call's group.
                        if marks {
                            out.push((0, GROUP_END));
                        }
                    } else {
                        let code: u64 = load(frame, l.code);
                        let instr: u64 = load(frame, l.instr_ptr);
                        let start = code.wrapping_add(adaptive);
                        let offset = instr.checked_sub(start);
                        // why: `_PyFrame_IsIncomplete` (pycore_frame.h,
                        // 3.11-3.13), as the views' walker applies it.
                        let incomplete = owner != l.owned_by_generator
                            && match first {
                                Some(f) => {
                                    let ft: i32 = load(code, f);
                                    offset.is_none_or(|o| o < u64::from(ft.unsigned_abs()) * 2)
                                }
                                None => false,
                            };
                        if code != 0 && !incomplete {
                            let offset =
                                offset.map_or(u32::MAX, |o| o.min(u64::from(MAX_OFFSET)) as u32);
                            out.push((code, offset));
                        }
                        // 3.11: the entry frame says so itself (one not
                        // started yet ends an empty group).
                        if marks && code != 0 {
                            if let Some(is_entry) = l.is_entry {
                                if load::<u8>(frame, is_entry) != 0 {
                                    out.push((0, GROUP_END));
                                }
                            }
                        }
                    }
                    let previous: u64 = load(frame, l.previous);
                    if previous == frame {
                        break;
                    }
                    frame = previous;
                    steps += 1;
                }
            }
        }
        (thread_id, interp)
    }
}

/// Accounts a free (in any domain).
fn on_free(ptr: *mut c_void) {
    if ptr.is_null() || !TRACKING.load(Ordering::Relaxed) {
        return;
    }
    account(None, |t, _, _| t.free(ptr as u64));
}

/// Runs `f` on the table, with the thread state of the allocating thread
/// when `domain` is given (allocations; frees need none).
fn account(domain: Option<&Domain>, f: impl FnOnce(&mut Tracker, &Target<'_, OwnThread>, Addr)) {
    let Ok(false) = BUSY.try_with(|b| b.replace(true)) else {
        return;
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(s) = shared() else {
            return;
        };
        let tstate = match (domain, API.get()) {
            (None, _) => std::ptr::null_mut(),
            (Some(_), None) => return,
            // SAFETY: takes no arguments, reads the calling thread's
            // thread-local state, may be called without the GIL.
            (Some(d), Some(api)) if d.id == 0 => unsafe { (api.this_thread)() },
            // SAFETY: takes no arguments, reads the thread state that holds
            // the GIL (this thread's, in these two domains).
            (Some(_), Some(api)) => unsafe { (api.holding_gil)() },
        };
        if domain.is_some()
            && NATIVE_WANTED.load(Ordering::Relaxed)
            && !s.native_ready.load(Ordering::Relaxed)
        {
            // A forked child's fresh table: its unwinder, once.
            give_native(Some(s));
            s.native_ready.store(true, Ordering::Relaxed);
        }
        let target = Target::new(&OwnThread, s.layout);
        let mut t = s.tracker.lock();
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
    // A move or a resize: the old block goes before the allocator can hand
    // its address to another thread, the new one is the stack's that
    // resized it; a failed realloc leaves `old` as it was, and its link.
    let taken = take_back(old);
    // SAFETY: the saved allocator of the domain, called as CPython would.
    let p = unsafe { (a.realloc.expect("saved allocator"))(a.ctx, old, n) };
    if !p.is_null() {
        on_alloc(d, p, n);
    } else if let Some(link) = taken {
        account(None, |t, _, _| t.relink(old as u64, link));
    }
    p
}

/// Unlinks the block at `ptr` (a reallocation's old block), returning what
/// it was linked to.
fn take_back(ptr: *mut c_void) -> Option<Taken> {
    if ptr.is_null() || !TRACKING.load(Ordering::Relaxed) {
        return None;
    }
    let mut taken = None;
    account(None, |t, _, _| taken = t.unlink(ptr as u64));
    taken
}

unsafe extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: CPython hands us the ctx we were installed with.
    let (_, a) = unsafe { domain(ctx) };
    on_free(p);
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
    if NATIVE_WANTED.load(Ordering::Acquire) {
        give_native(shared());
        if let Some(s) = shared() {
            s.native_ready.store(true, Ordering::Release);
        }
    }
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

/// Whether stacks get their native frames too (C frames interleaved with
/// the Python frames, [`Tracker::set_native`]): takes effect at the next
/// [`install`] (and in a forked child at its first allocation). Costs an
/// unwind of the allocating thread's native stack per allocation.
pub fn set_native(on: bool) {
    NATIVE_WANTED.store(on, Ordering::Release);
}

/// Gives the table of `s` this process's native unwinder, if it has none.
fn give_native(s: Option<&Shared>) {
    let Some(s) = s else { return };
    let needs = !s.tracker.lock().native();
    if needs {
        // Read the module map outside the lock (files, some milliseconds).
        if let Ok(u) = echion_unwind::NativeUnwinder::new(std::process::id()) {
            let mut t = s.tracker.lock();
            if !t.native() {
                t.set_native(u);
            }
        }
    }
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
    let mut t = s.tracker.lock();
    t.drain(out);
    Some(t.stats())
}

/// Tells the table that the code object at `code` is being freed (the
/// embedding module's code deallocation hook calls this, GIL held).
pub fn code_freed(code: u64) {
    if let Some(s) = shared() {
        if let Ok(false) = BUSY.try_with(|b| b.replace(true)) {
            s.tracker.lock().code_freed(code);
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

/// For benchmarks of the hook: makes an empty table for CPython `version`
/// without setting any allocator.
#[doc(hidden)]
pub fn bench_prepare(version: PyVersion) -> Result<(), HookError> {
    let layout = Layout::for_version(version).map_err(|_| HookError::Unsupported(version))?;
    let format = TableFormat::for_version(version).map_err(|_| HookError::Unsupported(version))?;
    SHARED.store(fresh(layout, format), Ordering::Release);
    Ok(())
}

/// For benchmarks of the hook: what the hook does for an allocation of
/// `size` bytes at `ptr` by the thread whose state is at `tstate` (the
/// accounting, not the allocator).
///
/// # Safety
/// The thread of `tstate` runs no Python code until this returns (a
/// benchmark's interpreter thread parked in `time.sleep`): its state and
/// frames are read with plain loads.
#[doc(hidden)]
pub unsafe fn bench_alloc(tstate: u64, ptr: u64, size: u64) {
    let Some(s) = shared() else { return };
    let target = Target::new(&OwnThread, s.layout);
    let mut t = s.tracker.lock();
    // SAFETY: per the contract.
    unsafe { link_to_stack(&mut t, &target, tstate, ptr, size) };
}

/// For benchmarks of the hook: what the hook does for a free of `ptr`.
#[doc(hidden)]
pub fn bench_free(ptr: u64) {
    account(None, |t, _, _| t.free(ptr));
}
