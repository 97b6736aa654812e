//! `_Py_DebugOffsets`: the offsets table CPython 3.13 embeds at the start of
//! `_PyRuntime` for out-of-process tools (Include/internal/pycore_runtime.h,
//! tag v3.13.0).
//!
//! Two uses:
//! - [`check`]: at start-up, compare the built-in 3.13 mirrors with the table
//!   of the interpreter actually running; a disagreement (a patched or
//!   differently configured build) is a clear error instead of a wrong
//!   profile.
//! - [`layout_from_table`]: build a [`Layout`] whose every offset the table
//!   provides comes from the table. This is how a future version could be
//!   served without new mirrors; the few facts the table lacks (generator and
//!   asyncio structs, string bit positions, opcodes) are taken from the
//!   closest known layout.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{CurrentFrame, FrameLayout, Layout, LongSize};
use crate::addr::Addr;
use crate::reader::{MemError, MemoryReader, ReadExt};
use crate::version::PyVersion;

/// The cookie that starts the table: `"xdebugpy"`.
pub const COOKIE: [u8; 8] = *b"xdebugpy";

/// `_Py_DebugOffsets.runtime_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RuntimeStateOffsets {
    /// `size`.
    pub size: u64,
    /// `finalizing`.
    pub finalizing: u64,
    /// `interpreters_head`.
    pub interpreters_head: u64,
}

/// `_Py_DebugOffsets.interpreter_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterStateOffsets {
    /// `size`.
    pub size: u64,
    /// `id`.
    pub id: u64,
    /// `next`.
    pub next: u64,
    /// `threads_head`.
    pub threads_head: u64,
    /// `gc`.
    pub gc: u64,
    /// `imports_modules`.
    pub imports_modules: u64,
    /// `sysdict`.
    pub sysdict: u64,
    /// `builtins`.
    pub builtins: u64,
    /// `ceval_gil`.
    pub ceval_gil: u64,
    /// `gil_runtime_state`.
    pub gil_runtime_state: u64,
    /// `gil_runtime_state_enabled`.
    pub gil_runtime_state_enabled: u64,
    /// `gil_runtime_state_locked`.
    pub gil_runtime_state_locked: u64,
    /// `gil_runtime_state_holder`.
    pub gil_runtime_state_holder: u64,
}

/// `_Py_DebugOffsets.thread_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ThreadStateOffsets {
    /// `size`.
    pub size: u64,
    /// `prev`.
    pub prev: u64,
    /// `next`.
    pub next: u64,
    /// `interp`.
    pub interp: u64,
    /// `current_frame`.
    pub current_frame: u64,
    /// `thread_id`.
    pub thread_id: u64,
    /// `native_thread_id`.
    pub native_thread_id: u64,
    /// `datastack_chunk`.
    pub datastack_chunk: u64,
    /// `status`.
    pub status: u64,
}

/// `_Py_DebugOffsets.interpreter_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterFrameOffsets {
    /// `size`.
    pub size: u64,
    /// `previous`.
    pub previous: u64,
    /// `executable`.
    pub executable: u64,
    /// `instr_ptr`.
    pub instr_ptr: u64,
    /// `localsplus`.
    pub localsplus: u64,
    /// `owner`.
    pub owner: u64,
}

/// `_Py_DebugOffsets.code_object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CodeObjectOffsets {
    /// `size`.
    pub size: u64,
    /// `filename`.
    pub filename: u64,
    /// `name`.
    pub name: u64,
    /// `qualname`.
    pub qualname: u64,
    /// `linetable`.
    pub linetable: u64,
    /// `firstlineno`.
    pub firstlineno: u64,
    /// `argcount`.
    pub argcount: u64,
    /// `localsplusnames`.
    pub localsplusnames: u64,
    /// `localspluskinds`.
    pub localspluskinds: u64,
    /// `co_code_adaptive`.
    pub co_code_adaptive: u64,
}

/// Two-field groups: `{size, field}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Pair {
    /// `size`.
    pub size: u64,
    /// The one field (`ob_type`, `ob_fval`, `collecting`).
    pub field: u64,
}

/// Three-field groups: `{size, a, b}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Triple {
    /// `size`.
    pub size: u64,
    /// First field (`ob_item`, `ma_keys`, `lv_tag`, `ob_size`).
    pub a: u64,
    /// Second field (`ob_size`, `ma_values`, `ob_digit`, `ob_sval`).
    pub b: u64,
}

/// `_Py_DebugOffsets.type_object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TypeObjectOffsets {
    /// `size`.
    pub size: u64,
    /// `tp_name`.
    pub tp_name: u64,
    /// `tp_repr`.
    pub tp_repr: u64,
    /// `tp_flags`.
    pub tp_flags: u64,
}

/// `_Py_DebugOffsets.unicode_object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct UnicodeObjectOffsets {
    /// `size`.
    pub size: u64,
    /// `state`.
    pub state: u64,
    /// `length`.
    pub length: u64,
    /// `asciiobject_size`.
    pub asciiobject_size: u64,
}

/// `_Py_DebugOffsets` of v3.13.0 (584 bytes; the oracle checks the size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DebugOffsets {
    /// `cookie`: [`COOKIE`].
    pub cookie: [u8; 8],
    /// `version`: `PY_VERSION_HEX` of the running interpreter.
    pub version: u64,
    /// `free_threaded`.
    pub free_threaded: u64,
    /// `runtime_state`.
    pub runtime_state: RuntimeStateOffsets,
    /// `interpreter_state`.
    pub interpreter_state: InterpreterStateOffsets,
    /// `thread_state`.
    pub thread_state: ThreadStateOffsets,
    /// `interpreter_frame`.
    pub interpreter_frame: InterpreterFrameOffsets,
    /// `code_object`.
    pub code_object: CodeObjectOffsets,
    /// `pyobject`: `{size, ob_type}`.
    pub pyobject: Pair,
    /// `type_object`.
    pub type_object: TypeObjectOffsets,
    /// `tuple_object`: `{size, ob_item, ob_size}`.
    pub tuple_object: Triple,
    /// `list_object`: `{size, ob_item, ob_size}`.
    pub list_object: Triple,
    /// `dict_object`: `{size, ma_keys, ma_values}`.
    pub dict_object: Triple,
    /// `float_object`: `{size, ob_fval}`.
    pub float_object: Pair,
    /// `long_object`: `{size, lv_tag, ob_digit}`.
    pub long_object: Triple,
    /// `bytes_object`: `{size, ob_size, ob_sval}`.
    pub bytes_object: Triple,
    /// `unicode_object`.
    pub unicode_object: UnicodeObjectOffsets,
    /// `gc`: `{size, collecting}`.
    pub gc: Pair,
}

impl DebugOffsets {
    /// The interpreter version the table declares.
    pub fn py_version(&self) -> PyVersion {
        // why: `version` holds PY_VERSION_HEX (Python/pystate.c, v3.13.0,
        // _Py_DebugOffsets_INIT), a 32-bit value widened to u64.
        PyVersion::from_hex(self.version as u32)
    }
}

/// Why the debug offsets could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DebugOffsetsError {
    /// The table could not be read.
    #[error("cannot read _Py_DebugOffsets at {addr}: {source}")]
    Read {
        /// Where it was expected.
        addr: Addr,
        /// The read error.
        source: MemError,
    },
    /// The cookie is wrong: this is not a 3.13+ `_PyRuntime`, or the address
    /// is wrong.
    #[error("no _Py_DebugOffsets at {addr} (cookie {cookie:?} is not \"xdebugpy\"): wrong _PyRuntime address or not CPython 3.13+")]
    BadCookie {
        /// Where it was expected.
        addr: Addr,
        /// What was found.
        cookie: [u8; 8],
    },
    /// The running interpreter's offsets differ from the built-in mirrors.
    #[error("the running CPython {version} disagrees with echion's 3.13 layout: {mismatches}; this build of CPython is not supported (is it a free-threaded or debug build?)")]
    Mismatch {
        /// The version in the table.
        version: PyVersion,
        /// `field: ours != theirs`, comma-separated.
        mismatches: String,
    },
}

/// Reads the table at `runtime` (the address of `_PyRuntime`; the table is
/// its first member) and checks its cookie.
pub fn read<R: MemoryReader + ?Sized>(
    reader: &R,
    runtime: Addr,
    layout: &Layout,
) -> Result<DebugOffsets, DebugOffsetsError> {
    let addr = runtime
        .offset(layout.runtime.debug_offsets.unwrap_or(0))
        .ok_or(DebugOffsetsError::Read {
            addr: runtime,
            source: MemError::Overflow,
        })?;
    let table: DebugOffsets = reader
        .read_pod(addr)
        .map_err(|source| DebugOffsetsError::Read { addr, source })?;
    if table.cookie != COOKIE {
        return Err(DebugOffsetsError::BadCookie {
            addr,
            cookie: table.cookie,
        });
    }
    Ok(table)
}

/// Compares `layout` with the running interpreter's table. Every field both
/// know is compared; the error lists all disagreements.
pub fn check(table: &DebugOffsets, layout: &Layout) -> Result<(), DebugOffsetsError> {
    let mut bad = Vec::new();
    let mut other = Vec::new();
    let mut cmp = |name: &str, ours: Option<u64>, theirs: u64| {
        if ours != Some(theirs) {
            bad.push(format!("{name}: ours {ours:?} != table {theirs}"));
        }
    };
    let t = table;
    cmp("free_threaded", Some(0), t.free_threaded);
    cmp(
        "runtime_state.interpreters_head",
        Some(layout.runtime.interpreters_head),
        t.runtime_state.interpreters_head,
    );
    cmp(
        "interpreter_state.id",
        Some(layout.interp.id),
        t.interpreter_state.id,
    );
    cmp(
        "interpreter_state.next",
        Some(layout.interp.next),
        t.interpreter_state.next,
    );
    cmp(
        "interpreter_state.threads_head",
        Some(layout.interp.threads_head),
        t.interpreter_state.threads_head,
    );
    cmp(
        "thread_state.next",
        Some(layout.thread.next),
        t.thread_state.next,
    );
    cmp(
        "thread_state.interp",
        Some(layout.thread.interp),
        t.thread_state.interp,
    );
    cmp(
        "thread_state.thread_id",
        Some(layout.thread.thread_id),
        t.thread_state.thread_id,
    );
    cmp(
        "thread_state.native_thread_id",
        layout.thread.native_thread_id,
        t.thread_state.native_thread_id,
    );
    let current_frame = match layout.thread.current_frame {
        CurrentFrame::Direct(off) => Some(off),
        CurrentFrame::ViaCFrame { .. } => None,
    };
    cmp(
        "thread_state.current_frame",
        current_frame,
        t.thread_state.current_frame,
    );
    match &layout.frame {
        FrameLayout::Interpreter(f) => {
            cmp(
                "interpreter_frame.previous",
                Some(f.previous),
                t.interpreter_frame.previous,
            );
            cmp(
                "interpreter_frame.executable",
                Some(f.code),
                t.interpreter_frame.executable,
            );
            cmp(
                "interpreter_frame.instr_ptr",
                Some(f.instr_ptr),
                t.interpreter_frame.instr_ptr,
            );
            cmp(
                "interpreter_frame.localsplus",
                Some(f.localsplus),
                t.interpreter_frame.localsplus,
            );
            cmp(
                "interpreter_frame.owner",
                Some(f.owner),
                t.interpreter_frame.owner,
            );
        }
        FrameLayout::Object(_) => other.push("frame model: ours is PyFrameObject".to_owned()),
    }
    let c = &layout.code;
    cmp(
        "code_object.filename",
        Some(c.filename),
        t.code_object.filename,
    );
    cmp("code_object.name", Some(c.name), t.code_object.name);
    cmp("code_object.qualname", c.qualname, t.code_object.qualname);
    cmp(
        "code_object.linetable",
        Some(c.linetable),
        t.code_object.linetable,
    );
    cmp(
        "code_object.firstlineno",
        Some(c.firstlineno),
        t.code_object.firstlineno,
    );
    cmp(
        "code_object.co_code_adaptive",
        c.code_adaptive,
        t.code_object.co_code_adaptive,
    );
    cmp(
        "pyobject.ob_type",
        Some(layout.object.ob_type),
        t.pyobject.field,
    );
    cmp(
        "type_object.tp_name",
        Some(layout.object.tp_name),
        t.type_object.tp_name,
    );
    match layout.long.size {
        LongSize::Tag { lv_tag, .. } => cmp("long_object.lv_tag", Some(lv_tag), t.long_object.a),
        LongSize::ObSize(_) => other.push("long_object: ours has no lv_tag".to_owned()),
    }
    cmp(
        "long_object.ob_digit",
        Some(layout.long.ob_digit),
        t.long_object.b,
    );
    cmp(
        "bytes_object.ob_size",
        Some(layout.bytes.ob_size),
        t.bytes_object.a,
    );
    cmp(
        "bytes_object.ob_sval",
        Some(layout.bytes.ob_sval),
        t.bytes_object.b,
    );
    cmp(
        "unicode_object.state",
        Some(layout.unicode.state),
        t.unicode_object.state,
    );
    cmp(
        "unicode_object.length",
        Some(layout.unicode.length),
        t.unicode_object.length,
    );
    cmp(
        "unicode_object.asciiobject_size",
        Some(layout.unicode.ascii_size),
        t.unicode_object.asciiobject_size,
    );
    bad.extend(other);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(DebugOffsetsError::Mismatch {
            version: t.py_version(),
            mismatches: bad.join(", "),
        })
    }
}

/// A layout whose offsets come from `table` wherever the table has them,
/// and from `base` (the closest known layout, which must use interpreter
/// frames) for the rest.
pub fn layout_from_table(table: &DebugOffsets, base: &Layout) -> Layout {
    let t = table;
    let mut l = *base;
    let v = t.py_version();
    l.python = (v.major, v.minor);
    l.runtime.interpreters_head = t.runtime_state.interpreters_head;
    l.interp.id = t.interpreter_state.id;
    l.interp.next = t.interpreter_state.next;
    l.interp.threads_head = t.interpreter_state.threads_head;
    l.thread.next = t.thread_state.next;
    l.thread.interp = t.thread_state.interp;
    l.thread.thread_id = t.thread_state.thread_id;
    l.thread.native_thread_id = Some(t.thread_state.native_thread_id);
    l.thread.current_frame = CurrentFrame::Direct(t.thread_state.current_frame);
    if let FrameLayout::Interpreter(f) = &mut l.frame {
        f.previous = t.interpreter_frame.previous;
        f.code = t.interpreter_frame.executable;
        f.instr_ptr = t.interpreter_frame.instr_ptr;
        f.localsplus = t.interpreter_frame.localsplus;
        f.owner = t.interpreter_frame.owner;
    }
    l.code.filename = t.code_object.filename;
    l.code.name = t.code_object.name;
    l.code.qualname = Some(t.code_object.qualname);
    l.code.linetable = t.code_object.linetable;
    l.code.firstlineno = t.code_object.firstlineno;
    l.code.code_adaptive = Some(t.code_object.co_code_adaptive);
    l.object.ob_type = t.pyobject.field;
    l.object.tp_name = t.type_object.tp_name;
    if let LongSize::Tag { lv_tag, .. } = &mut l.long.size {
        *lv_tag = t.long_object.a;
    }
    l.long.ob_digit = t.long_object.b;
    l.bytes.ob_size = t.bytes_object.a;
    l.bytes.ob_sval = t.bytes_object.b;
    l.unicode.state = t.unicode_object.state;
    l.unicode.length = t.unicode_object.length;
    l.unicode.ascii_size = t.unicode_object.asciiobject_size;
    l
}
