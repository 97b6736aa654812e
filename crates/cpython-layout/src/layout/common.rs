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

/// The head of `PyTypeObject`, up to `tp_name`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TypeObject {
    /// `ob_base`.
    pub ob_base: VarObjectHead,
    /// `tp_name`: a NUL-terminated C string, `"module.Name"` or `"name"`.
    pub tp_name: Addr,
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
