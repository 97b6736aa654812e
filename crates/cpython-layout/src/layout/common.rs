//! Mirrors of the object headers, identical in every supported version.
//!
//! `PyObject`, `PyVarObject` (Include/object.h), the head of `PyTypeObject`
//! (Include/cpython/object.h) and `PyBytesObject` (Include/cpython/bytesobject.h)
//! have the same layout from v3.8.18 to v3.13.0 on 64-bit builds without
//! `Py_TRACE_REFS` and without free threading: 3.12 turned `ob_refcnt` into a
//! union of the same size (immortal objects), and `ob_shash` is deprecated
//! since 3.11 but still present. Each version module re-exports these and
//! lists them in its `mirror_facts()`, so the oracle checks them per version.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::addr::Addr;

/// `PyObject` (`PyObject_HEAD`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ObjectHead {
    /// `ob_refcnt` (`Py_ssize_t`; a union with `ob_refcnt_split` in 3.12+).
    pub ob_refcnt: i64,
    /// `ob_type`: the `PyTypeObject *`.
    pub ob_type: Addr,
}

/// `PyVarObject` (`PyObject_VAR_HEAD`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VarObjectHead {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `ob_size` (`Py_ssize_t`).
    pub ob_size: i64,
}

/// The head of `PyTypeObject`, up to `tp_base`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TypeObject {
    /// `ob_base`.
    pub ob_base: VarObjectHead,
    /// `tp_name`: a NUL-terminated C string, `"module.Name"` or `"name"`.
    pub tp_name: Addr,
    /// `tp_basicsize` … `tp_getset`: 28 pointer-sized slots not read.
    pub _pad0: [u8; 224],
    /// `tp_base`: the base type (null for `object`).
    pub tp_base: Addr,
}

/// `setentry` (Include/cpython/setobject.h): one slot of a set's table.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SetEntry {
    /// `key`: null for an empty slot, the `dummy` object for a deleted one.
    pub key: Addr,
    /// `hash`.
    pub hash: i64,
}

/// `PySetObject` (Include/cpython/setobject.h), up to `table`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SetObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `fill`: active and dummy entries.
    pub fill: i64,
    /// `used`: active entries.
    pub used: i64,
    /// `mask`: the table has `mask + 1` slots.
    pub mask: i64,
    /// `table`: `smalltable` or a heap array of `setentry`.
    pub table: Addr,
}

/// `PyListObject` (Include/cpython/listobject.h), up to `ob_item`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ListObject {
    /// `ob_base` (`ob_size` is the length).
    pub ob_base: VarObjectHead,
    /// `ob_item`: the array of items.
    pub ob_item: Addr,
}

/// `PyWeakReference` (Include/cpython/weakrefobject.h), up to `wr_object`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct WeakReference {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `wr_object`: the referent, `Py_None` once it is gone.
    pub wr_object: Addr,
}

/// `PyAsyncGenASend` (Objects/genobject.c, private), up to `ags_gen`: the
/// awaitable of `agen.__anext__()` / `asend()`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AsyncGenASend {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `ags_gen`: the async generator it drives.
    pub ags_gen: Addr,
}

/// `struct _gil_runtime_state` (Include/internal/pycore_gil.h), up to
/// `switch_number`: the same in every supported version (without free
/// threading). It sits in `_PyRuntimeState.ceval.gil` up to 3.11 and is
/// pointed at by `PyInterpreterState.ceval.gil` from 3.12.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GilRuntimeState {
    /// `interval` (`unsigned long`, the switch interval in µs).
    pub interval: u64,
    /// `last_holder`: the `PyThreadState *` that took the GIL last.
    pub last_holder: Addr,
    /// `locked` (`int`).
    pub locked: i32,
    /// Padding.
    pub _pad0: [u8; 4],
    /// `switch_number`: how many times the GIL went to another thread.
    pub switch_number: u64,
}

/// Offsets in `struct _gil_runtime_state` (every supported version).
pub const GIL_STATE: (u64, u64) = (
    core::mem::offset_of!(GilRuntimeState, last_holder) as u64,
    core::mem::offset_of!(GilRuntimeState, switch_number) as u64,
);

/// The set, weak reference and awaitable offsets, the same in every
/// supported version (each version's `LAYOUT` uses this).
pub const CONTAINERS: super::ContainerLayout = super::ContainerLayout {
    set_used: super::off!(SetObject, used),
    set_mask: super::off!(SetObject, mask),
    set_table: super::off!(SetObject, table),
    set_entry_size: core::mem::size_of::<SetEntry>() as u64,
    set_entry_key: super::off!(SetEntry, key),
    set_entry_hash: super::off!(SetEntry, hash),
    wr_object: super::off!(WeakReference, wr_object),
    list_item: super::off!(ListObject, ob_item),
    ags_gen: super::off!(AsyncGenASend, ags_gen),
};

/// What the mirrors of this module claim that the oracle can check (the
/// private `PyAsyncGenASend` is in no header; the images tests read real
/// ones).
pub fn facts() -> Vec<super::oracle::Fact> {
    use super::{field, size};
    use core::mem::size_of;
    vec![
        field!("PyTypeObject.tp_base", TypeObject, tp_base),
        field!("PySetObject.used", SetObject, used),
        field!("PySetObject.mask", SetObject, mask),
        field!("PySetObject.table", SetObject, table),
        field!("setentry.key", SetEntry, key),
        field!("setentry.hash", SetEntry, hash),
        size("setentry", size_of::<SetEntry>()),
        field!("PyWeakReference.wr_object", WeakReference, wr_object),
        field!("PyListObject.ob_item", ListObject, ob_item),
        field!(
            "_gil_runtime_state.last_holder",
            GilRuntimeState,
            last_holder
        ),
        field!(
            "_gil_runtime_state.switch_number",
            GilRuntimeState,
            switch_number
        ),
    ]
}

/// `PyBytesObject`; `ob_sval` is the flexible array of the contents
/// (`ob_size` bytes plus a NUL).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BytesObject {
    /// `ob_base` (`ob_size` is the length).
    pub ob_base: VarObjectHead,
    /// `ob_shash` (cached hash).
    pub ob_shash: i64,
    /// `ob_sval` (flexible array).
    pub ob_sval: [u8; 0],
}
