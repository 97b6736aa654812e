//! Tells the sampler when CPython frees a code object, so that its frame
//! cache never shows the name of a dead code object for a new one that took
//! its address.
//!
//! The hook replaces `tp_dealloc` of the `code` type with a function that
//! posts the object's address to the sampler's lock-free ring and then calls
//! the original. This is the module's one FFI corner that writes interpreter
//! memory; it is done once, with the GIL held, after checking that the type
//! object looks as the offsets below say.

use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use echion_sampler::codewatch::FREED_CODES;
use pyo3::ffi;
use pyo3::prelude::*;

/// Offsets in `PyTypeObject` on 64-bit release builds of CPython 3.8-3.13
/// (Include/cpython/object.h): `PyObject_VAR_HEAD` is 24 bytes, then
/// `tp_name`, `tp_basicsize`, `tp_itemsize`, `tp_dealloc`.
const TP_NAME: usize = 24;
const TP_BASICSIZE: usize = 32;
const TP_DEALLOC: usize = 48;

/// The original `code` deallocator, 0 until the hook is first installed
/// (kept after: a free under way when the hook is taken out still calls it).
static ORIGINAL: AtomicUsize = AtomicUsize::new(0);
/// Where the hook is installed: the `tp_dealloc` slot of `code`, 0 when not.
static SLOT: AtomicUsize = AtomicUsize::new(0);

type Destructor = unsafe extern "C" fn(*mut ffi::PyObject);

unsafe extern "C" fn code_dealloc(obj: *mut ffi::PyObject) {
    FREED_CODES.post(obj as u64);
    if echion_memtrace::tracking() {
        echion_memtrace::code_freed(obj as u64);
    }
    let original = ORIGINAL.load(Ordering::Acquire);
    // SAFETY: the hook is only installed after ORIGINAL holds the non-null
    // deallocator read from the type, which has this signature.
    let original: Destructor = unsafe { std::mem::transmute::<usize, Destructor>(original) };
    // SAFETY: CPython calls tp_dealloc with a valid object whose refcount
    // reached zero; we hand it on unchanged to the deallocator it expected.
    unsafe { original(obj) }
}

/// Installs the hook once. Leaves everything as it was if the type object
/// does not look as expected (the cache then only misses frees).
pub fn install(py: Python<'_>) -> PyResult<()> {
    if SLOT.load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    // (The type of a code object `os` has, not `types.CodeType`: importing
    // `types`, or compiling, would leave more memory in every profiled
    // program, which its forks copy.)
    let code_type = match py.import("os")?.getattr("makedirs")?.getattr("__code__") {
        Ok(code) => code.get_type().into_any(),
        Err(_) => py.import("types")?.getattr("CodeType")?,
    };
    let basicsize: usize = code_type.getattr("__basicsize__")?.extract()?;
    let base = code_type.as_ptr() as *mut u8;
    // SAFETY: `base` is the live `code` type object (we hold a reference and
    // the GIL); the reads are within its PyTypeObject, whose layout up to
    // tp_dealloc is the same in every supported version (see the offsets).
    let (name, size, dealloc) = unsafe {
        (
            *(base.add(TP_NAME) as *const *const c_char),
            *(base.add(TP_BASICSIZE) as *const isize),
            *(base.add(TP_DEALLOC) as *const usize),
        )
    };
    // SAFETY: tp_name of a type object is a NUL-terminated C string.
    let name_ok = !name.is_null() && unsafe { CStr::from_ptr(name) }.to_bytes() == b"code";
    let before = ORIGINAL.load(Ordering::Acquire);
    if !name_ok || size != basicsize as isize || dealloc == 0 || (before != 0 && before != dealloc)
    {
        return Ok(());
    }
    ORIGINAL.store(dealloc, Ordering::Release);
    SLOT.store(base as usize + TP_DEALLOC, Ordering::Release);
    // SAFETY: same type object and offset as read above; the GIL is held, so
    // no Python code deallocates concurrently, and an aligned pointer-sized
    // store is atomic for any other reader. The function stays valid for the
    // life of the process (extension modules are never unloaded).
    unsafe {
        std::ptr::write_volatile(
            base.add(TP_DEALLOC) as *mut usize,
            code_dealloc as Destructor as usize,
        );
    }
    Ok(())
}

/// Puts the original deallocator back if the slot still holds ours. The
/// caller holds the GIL.
pub fn uninstall() {
    let slot = SLOT.swap(0, Ordering::AcqRel);
    if slot == 0 {
        return;
    }
    let slot = slot as *mut usize;
    // SAFETY: `slot` is the `tp_dealloc` field of the static `code` type
    // object, written by `install`; the GIL is held, and an aligned
    // pointer-sized store is atomic for any reader. A free under way in our
    // hook still finds ORIGINAL.
    unsafe {
        if std::ptr::read_volatile(slot) == code_dealloc as Destructor as usize {
            std::ptr::write_volatile(slot, ORIGINAL.load(Ordering::Acquire));
        }
    }
}

/// In a forked child: the sampler that drained the ring is gone.
pub fn reset_after_fork() {
    FREED_CODES.reset();
}
