//! Mirrors of CPython 3.10 (tag v3.10.13).
//!
//! Sources: Include/internal/pycore_runtime.h (`_PyRuntimeState`),
//! Include/internal/pycore_interp.h (`PyInterpreterState` = `struct _is`),
//! Include/cpython/pystate.h (`PyThreadState` = `struct _ts`),
//! Include/cpython/frameobject.h (`PyFrameObject`), Include/cpython/code.h
//! (`PyCodeObject`), Include/cpython/unicodeobject.h,
//! Include/longintrepr.h, Include/genobject.h, and Modules/_asynciomodule.c
//! (`FutureObj`, `TaskObj`). `_pad*` arrays stand for fields not read;
//! `_align*` for the compiler's padding.
//!
//! There is no `native_thread_id` in 3.10's thread state: it appeared in 3.11.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::common::GilRuntimeState;
pub use super::common::{BytesObject, ObjectHead, TypeObject, VarObjectHead};
use super::oracle::Fact;
use super::{bits, field, flex, konst, off, size};
use super::{
    AsyncioLayout, BytesLayout, CodeLayout, CurrentFrame, DictLayout, FrameLayout, GenLayout,
    GilLayout, GilLocation, InterpLayout, Layout, LongLayout, LongSize, ObjectFrameLayout,
    ObjectLayout, RuntimeLayout, ThreadLayout, UnicodeLayout, ValueStack,
};
use crate::addr::Addr;

/// `_PyRuntimeState.interpreters` (`struct pyinterpreters`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RuntimeInterpreters {
    /// `mutex` (`PyThread_type_lock`).
    pub mutex: Addr,
    /// `head`: the most recently created interpreter.
    pub head: Addr,
}

/// `_PyRuntimeState` (`struct pyruntimestate`), up to `ceval.gil.switch_number`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RuntimeState {
    /// `preinitializing` … `initialized` (4 `int`) and `finalizing`.
    pub _pad0: [u8; 24],
    /// `interpreters`.
    pub interpreters: RuntimeInterpreters,
    /// `xidregistry` … `ceval.signals_pending`.
    pub _pad1: [u8; 312],
    /// `ceval.gil`.
    pub ceval_gil: GilRuntimeState,
}

/// `PyInterpreterState` (`struct _is`), up to `id`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterState {
    /// `next`.
    pub next: Addr,
    /// `tstate_head`: the most recently created thread state.
    pub tstate_head: Addr,
    /// `runtime` (new in 3.9).
    pub runtime: Addr,
    /// `id` (`int64_t`).
    pub id: i64,
}

/// `PyThreadState` (`struct _ts`), up to `thread_id`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ThreadState {
    /// `prev`.
    pub prev: Addr,
    /// `next`.
    pub next: Addr,
    /// `interp`.
    pub interp: Addr,
    /// `frame`: the innermost `PyFrameObject *`, or NULL.
    pub frame: Addr,
    /// `recursion_depth` … `id` (tracing, exception and context state).
    pub _pad0: [u8; 144],
    /// `thread_id` (`unsigned long`, the `pthread_t`).
    pub thread_id: u64,
}

/// `PyFrameObject` (`struct _frame`), up to `f_state`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FrameObject {
    /// `ob_base`.
    pub ob_base: VarObjectHead,
    /// `f_back`.
    pub f_back: Addr,
    /// `f_code`.
    pub f_code: Addr,
    /// `f_builtins`, `f_globals`, `f_locals`.
    pub _pad0: [u8; 24],
    /// `f_valuestack`: the bottom of the value stack.
    pub f_valuestack: Addr,
    /// `f_trace`.
    pub _pad1: [u8; 8],
    /// `f_stackdepth`: number of values on the stack.
    pub f_stackdepth: i32,
    /// `f_trace_lines`, `f_trace_opcodes`, padding, `f_gen`.
    pub _pad2: [u8; 12],
    /// `f_lasti`: index (in 2-byte code units) of the last instruction, -1
    /// before the first.
    pub f_lasti: i32,
    /// `f_lineno`: only valid if non-zero.
    pub f_lineno: i32,
    /// `f_iblock`.
    pub _pad3: [u8; 4],
    /// `f_state` (`PyFrameState`, a `signed char`).
    pub f_state: i8,
    /// Padding.
    pub _align0: [u8; 3],
}

/// `FRAME_EXECUTING` (`enum _framestate`, Include/cpython/frameobject.h).
pub const FRAME_EXECUTING: i8 = 0;

/// `PyCodeObject`, up to `co_linetable`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CodeObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `co_argcount` … `co_flags` (6 `int`).
    pub _pad0: [u8; 24],
    /// `co_firstlineno`.
    pub co_firstlineno: i32,
    /// Padding before the pointer fields.
    pub _align0: [u8; 4],
    /// `co_code`: the bytecode (`bytes`).
    pub co_code: Addr,
    /// `co_consts` … `co_cellvars`, `co_cell2arg`.
    pub _pad1: [u8; 48],
    /// `co_filename`.
    pub co_filename: Addr,
    /// `co_name`.
    pub co_name: Addr,
    /// `co_linetable`: the 3.10 line table (`bytes`).
    pub co_linetable: Addr,
}

/// `PyASCIIObject` (whole).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AsciiObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `length` in code points.
    pub length: i64,
    /// `hash`.
    pub hash: i64,
    /// `state`: bit fields `interned:2 kind:3 compact:1 ascii:1 ready:1`.
    pub state: u32,
    /// Padding.
    pub _align0: [u8; 4],
    /// `wstr`.
    pub wstr: Addr,
}

/// `PyCompactUnicodeObject` (whole); non-ASCII compact data follows it.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CompactUnicodeObject {
    /// `_base`.
    pub _base: AsciiObject,
    /// `utf8_length`.
    pub utf8_length: i64,
    /// `utf8`.
    pub utf8: Addr,
    /// `wstr_length`.
    pub wstr_length: i64,
}

/// `PyUnicodeObject`: a non-compact ("legacy") string with its data
/// elsewhere.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct UnicodeObject {
    /// `_base`.
    pub _base: CompactUnicodeObject,
    /// `data.any`.
    pub data: Addr,
}

/// Bit positions in `PyASCIIObject.state` (little-endian GCC/Clang layout).
pub const STATE_KIND_SHIFT: u8 = 2;
/// `state.compact`.
pub const STATE_COMPACT_SHIFT: u8 = 5;
/// `state.ascii`.
pub const STATE_ASCII_SHIFT: u8 = 6;
/// `state.ready`.
pub const STATE_READY_SHIFT: u8 = 7;

/// `PyLongObject` (`struct _longobject`, Include/longintrepr.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LongObject {
    /// `ob_base`: `ob_size` is the signed digit count.
    pub ob_base: VarObjectHead,
    /// `ob_digit` (30-bit digits in `uint32_t`).
    pub ob_digit: [u32; 0],
}

/// `PyLong_SHIFT` (`PYLONG_BITS_IN_DIGIT` is 30 on 64-bit builds).
pub const PYLONG_SHIFT: u8 = 30;

/// `PyGenObject` / `PyCoroObject` (`_PyGenObject_HEAD`), up to `gi_frame`.
/// 3.10 has no `gi_running`: the frame's `f_state` says whether it runs.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GenObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `gi_frame` (NULL once finished).
    pub gi_frame: Addr,
}

/// `YIELD_FROM` (Include/opcode.h).
pub const YIELD_FROM: u8 = 72;

/// `FutureObj` (`FutureObj_HEAD(fut)`, Modules/_asynciomodule.c), up to
/// `fut_state`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FutureObj {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `fut_loop`.
    pub fut_loop: Addr,
    /// `fut_callback0`, `fut_context0`, `fut_callbacks`, `fut_exception`,
    /// `fut_exception_tb` (new in 3.10), `fut_result`, `fut_source_tb`,
    /// `fut_cancel_msg`.
    pub _pad0: [u8; 64],
    /// `fut_state` (`STATE_PENDING` 0, `STATE_CANCELLED` 1, `STATE_FINISHED` 2).
    pub fut_state: i32,
    /// `fut_log_tb`.
    pub fut_log_tb: i32,
}

/// `TaskObj` (Modules/_asynciomodule.c), up to `task_name`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TaskObj {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `task_loop`.
    pub task_loop: Addr,
    /// `task_callback0` … `task_cancel_msg`.
    pub _pad0: [u8; 64],
    /// `task_state`.
    pub task_state: i32,
    /// `task_log_tb`, `task_blocking`, padding, `dict`, `task_weakreflist`,
    /// `task_cancelled_exc_state` (a 32-byte `_PyErr_StackItem`).
    pub _pad1: [u8; 60],
    /// `task_fut_waiter`.
    pub task_fut_waiter: Addr,
    /// `task_coro`.
    pub task_coro: Addr,
    /// `task_name` (always a `str`).
    pub task_name: Addr,
}

/// The 3.10 layout, derived from the mirrors above.
pub const LAYOUT: Layout = Layout {
    python: (3, 10),
    object: ObjectLayout {
        ob_type: off!(ObjectHead, ob_type),
        ob_size: off!(VarObjectHead, ob_size),
        tp_name: off!(TypeObject, tp_name),
        tp_base: off!(TypeObject, tp_base),
    },
    runtime: RuntimeLayout {
        interpreters_head: off!(RuntimeState, interpreters.head, RuntimeInterpreters),
        debug_offsets: None,
        pending_finishing: None,
    },
    gil: GilLayout::at(GilLocation::Runtime(off!(RuntimeState, ceval_gil))),
    interp: InterpLayout {
        next: off!(InterpreterState, next),
        id: off!(InterpreterState, id),
        threads_head: off!(InterpreterState, tstate_head),
    },
    thread: ThreadLayout {
        next: off!(ThreadState, next),
        interp: off!(ThreadState, interp),
        thread_id: off!(ThreadState, thread_id),
        native_thread_id: None,
        current_frame: CurrentFrame::Direct(off!(ThreadState, frame)),
    },
    frame: FrameLayout::Object(ObjectFrameLayout {
        f_back: off!(FrameObject, f_back),
        f_code: off!(FrameObject, f_code),
        f_lasti: off!(FrameObject, f_lasti),
        // why: 3.10 counts `f_lasti` in code units (Python/ceval.c INSTR_OFFSET
        // and PyCode_Addr2Line(f->f_code, f->f_lasti*sizeof(_Py_CODEUNIT))).
        lasti_unit: 2,
        f_lineno: off!(FrameObject, f_lineno),
        stack: ValueStack::Depth {
            f_valuestack: off!(FrameObject, f_valuestack),
            f_stackdepth: off!(FrameObject, f_stackdepth),
        },
        f_state: Some((off!(FrameObject, f_state), FRAME_EXECUTING)),
    }),
    code: CodeLayout {
        filename: off!(CodeObject, co_filename),
        name: off!(CodeObject, co_name),
        qualname: None,
        firstlineno: off!(CodeObject, co_firstlineno),
        linetable: off!(CodeObject, co_linetable),
        co_code: Some(off!(CodeObject, co_code)),
        firsttraceable: None,
        code_adaptive: None,
    },
    unicode: UnicodeLayout {
        length: off!(AsciiObject, length),
        state: off!(AsciiObject, state),
        kind_shift: STATE_KIND_SHIFT,
        compact_shift: STATE_COMPACT_SHIFT,
        ascii_shift: STATE_ASCII_SHIFT,
        ready_shift: Some(STATE_READY_SHIFT),
        ascii_size: core::mem::size_of::<AsciiObject>() as u64,
        compact_size: core::mem::size_of::<CompactUnicodeObject>() as u64,
        data: off!(UnicodeObject, data),
    },
    bytes: BytesLayout {
        ob_size: off!(VarObjectHead, ob_size),
        ob_sval: off!(BytesObject, ob_sval),
    },
    long: LongLayout {
        size: LongSize::ObSize(off!(VarObjectHead, ob_size)),
        ob_digit: off!(LongObject, ob_digit),
        shift: PYLONG_SHIFT,
        digit_size: 4,
    },
    gen: GenLayout::Object {
        gi_frame: off!(GenObject, gi_frame),
        gi_running: None,
        yield_from: YIELD_FROM,
    },
    asyncio: AsyncioLayout {
        fut_loop: off!(FutureObj, fut_loop),
        fut_state: off!(FutureObj, fut_state),
        task_fut_waiter: off!(TaskObj, task_fut_waiter),
        task_coro: off!(TaskObj, task_coro),
        task_name: off!(TaskObj, task_name),
    },
    dict: DictLayout::sized(856),
    containers: super::common::CONTAINERS,
};

/// What these mirrors claim, keyed like the oracle's output.
pub fn mirror_facts() -> Vec<Fact> {
    let mut facts = super::common::facts();
    facts.extend([
        field!("PyObject.ob_type", ObjectHead, ob_type),
        field!("PyVarObject.ob_size", VarObjectHead, ob_size),
        field!("PyTypeObject.tp_name", TypeObject, tp_name),
        field!(
            "_PyRuntimeState.interpreters.head",
            RuntimeState,
            interpreters.head,
            RuntimeInterpreters
        ),
        field!(
            "_PyRuntimeState.ceval.gil.last_holder",
            RuntimeState,
            ceval_gil.last_holder,
            GilRuntimeState
        ),
        field!(
            "_PyRuntimeState.ceval.gil.switch_number",
            RuntimeState,
            ceval_gil.switch_number,
            GilRuntimeState
        ),
        field!("PyInterpreterState.next", InterpreterState, next),
        field!("PyInterpreterState.id", InterpreterState, id),
        field!(
            "PyInterpreterState.tstate_head",
            InterpreterState,
            tstate_head
        ),
        field!("PyThreadState.next", ThreadState, next),
        field!("PyThreadState.interp", ThreadState, interp),
        field!("PyThreadState.thread_id", ThreadState, thread_id),
        field!("PyThreadState.frame", ThreadState, frame),
        field!("PyFrameObject.f_back", FrameObject, f_back),
        field!("PyFrameObject.f_code", FrameObject, f_code),
        field!("PyFrameObject.f_lasti", FrameObject, f_lasti),
        field!("PyFrameObject.f_lineno", FrameObject, f_lineno),
        field!("PyFrameObject.f_valuestack", FrameObject, f_valuestack),
        field!("PyFrameObject.f_stackdepth", FrameObject, f_stackdepth),
        field!("PyFrameObject.f_state", FrameObject, f_state),
        konst("FRAME_EXECUTING", FRAME_EXECUTING as i64),
        field!("PyCodeObject.co_filename", CodeObject, co_filename),
        field!("PyCodeObject.co_name", CodeObject, co_name),
        field!("PyCodeObject.co_firstlineno", CodeObject, co_firstlineno),
        field!("PyCodeObject.co_linetable", CodeObject, co_linetable),
        field!("PyCodeObject.co_code", CodeObject, co_code),
        konst("YIELD_FROM", YIELD_FROM as i64),
        field!("PyASCIIObject.length", AsciiObject, length),
        field!("PyASCIIObject.state", AsciiObject, state),
        size("PyASCIIObject", core::mem::size_of::<AsciiObject>()),
        size(
            "PyCompactUnicodeObject",
            core::mem::size_of::<CompactUnicodeObject>(),
        ),
        field!("PyUnicodeObject.data", UnicodeObject, data),
        bits("PyASCIIObject.state.interned", 0, 2),
        bits("PyASCIIObject.state.kind", STATE_KIND_SHIFT, 3),
        bits("PyASCIIObject.state.compact", STATE_COMPACT_SHIFT, 1),
        bits("PyASCIIObject.state.ascii", STATE_ASCII_SHIFT, 1),
        bits("PyASCIIObject.state.ready", STATE_READY_SHIFT, 1),
        flex!("PyBytesObject.ob_sval", BytesObject, ob_sval),
        flex!("PyLongObject.ob_digit", LongObject, ob_digit),
        konst("PyLong_SHIFT", PYLONG_SHIFT as i64),
        size("digit", core::mem::size_of::<u32>()),
        field!("PyGenObject.gi_frame", GenObject, gi_frame),
    ]);
    facts
}
