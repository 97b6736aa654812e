//! Mirrors of CPython 3.11 (tag v3.11.7).
//!
//! Sources: Include/internal/pycore_runtime.h (`_PyRuntimeState`),
//! Include/internal/pycore_interp.h (`PyInterpreterState` = `struct _is`),
//! Include/cpython/pystate.h (`PyThreadState`, `_PyCFrame`),
//! Include/internal/pycore_frame.h (`_PyInterpreterFrame`, owners, frame
//! states), Include/cpython/code.h (`PyCodeObject`),
//! Include/cpython/unicodeobject.h, Include/cpython/longintrepr.h,
//! Include/cpython/genobject.h, Include/opcode.h, and
//! Modules/_asynciomodule.c (`FutureObj`, `TaskObj`). `_pad*` arrays stand
//! for fields not read; `_align*` for the compiler's padding.
//!
//! Frames: `tstate->cframe->current_frame` is the innermost
//! `_PyInterpreterFrame`. A frame whose `prev_instr` is still before
//! `_co_firsttraceable` has not run its `RESUME` yet and is skipped, as
//! `_PyFrame_IsIncomplete` does (pycore_frame.h). 3.11 has no shim frames;
//! `is_entry` marks the first frame pushed by each C-level call of
//! `_PyEval_EvalFrameDefault`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::common::GilRuntimeState;
pub use super::common::{BytesObject, ObjectHead, TypeObject, VarObjectHead};
use super::oracle::Fact;
use super::{bits, field, flex, konst, off, size};
use super::{
    AsyncioLayout, BytesLayout, CodeLayout, CurrentFrame, DictLayout, FrameLayout, GenLayout,
    GenStates, GilLayout, GilLocation, InterpLayout, InterpreterFrameLayout, Layout, LongLayout,
    LongSize, ManagedDict, ObjectLayout, RuntimeLayout, ThreadLayout, UnicodeLayout,
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
    /// `_initialized` … `initialized` (5 `int`), padding, `finalizing`.
    pub _pad0: [u8; 32],
    /// `interpreters`.
    pub interpreters: RuntimeInterpreters,
    /// `xidregistry` … `ceval.signals_pending`.
    pub _pad1: [u8; 312],
    /// `ceval.gil`.
    pub ceval_gil: GilRuntimeState,
}

/// `PyInterpreterState.threads` (`struct pythreads`), up to `head`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterThreads {
    /// `next_unique_id`.
    pub next_unique_id: u64,
    /// `head`: the most recently created thread state.
    pub head: Addr,
}

/// `PyInterpreterState` (`struct _is`), up to `id`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterState {
    /// `next`.
    pub next: Addr,
    /// `threads`.
    pub threads: InterpreterThreads,
    /// `threads.count`, `threads.stacksize`, `runtime`.
    pub _pad0: [u8; 24],
    /// `id` (`int64_t`).
    pub id: i64,
}

/// `PyThreadState` (`struct _ts`), up to `native_thread_id`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ThreadState {
    /// `prev`.
    pub prev: Addr,
    /// `next`.
    pub next: Addr,
    /// `interp`.
    pub interp: Addr,
    /// `_initialized` … `tracing_what` (recursion and tracing counters).
    pub _pad0: [u8; 32],
    /// `cframe`: the current `_PyCFrame`.
    pub cframe: Addr,
    /// `c_profilefunc` … `id` (hooks, exception state, dict, async state).
    pub _pad1: [u8; 88],
    /// `thread_id` (`unsigned long`, the `pthread_t`).
    pub thread_id: u64,
    /// `native_thread_id` (`unsigned long`, the kernel tid).
    pub native_thread_id: u64,
}

/// `_PyCFrame`, up to `current_frame`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CFrame {
    /// `use_tracing` (`uint8_t`).
    pub use_tracing: u8,
    /// Padding.
    pub _align0: [u8; 7],
    /// `current_frame`.
    pub current_frame: Addr,
}

/// `_PyInterpreterFrame`, up to `localsplus`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterFrame {
    /// `f_func`, `f_globals`, `f_builtins`, `f_locals`.
    pub _pad0: [u8; 32],
    /// `f_code`.
    pub f_code: Addr,
    /// `frame_obj`.
    pub frame_obj: Addr,
    /// `previous`.
    pub previous: Addr,
    /// `prev_instr`: the code unit before the next instruction.
    pub prev_instr: Addr,
    /// `stacktop`: index in `localsplus` one past the top of stack.
    pub stacktop: i32,
    /// `is_entry` (`bool`).
    pub is_entry: u8,
    /// `owner` (`char`).
    pub owner: u8,
    /// Padding.
    pub _align0: [u8; 2],
    /// `localsplus` (flexible array: locals, then the value stack).
    pub localsplus: [Addr; 0],
}

/// `FRAME_OWNED_BY_THREAD` (`enum _frameowner`).
pub const FRAME_OWNED_BY_THREAD: u8 = 0;
/// `FRAME_OWNED_BY_GENERATOR`.
pub const FRAME_OWNED_BY_GENERATOR: u8 = 1;
/// `FRAME_OWNED_BY_FRAME_OBJECT`.
pub const FRAME_OWNED_BY_FRAME_OBJECT: u8 = 2;

/// `enum _framestate` values of a generator's `gi_frame_state`.
pub const GEN_STATES: GenStates = GenStates {
    created: -2,
    suspended: -1,
    suspended_yield_from: None,
    executing: 0,
    completed: 1,
    cleared: 4,
};

/// `PyCodeObject`, up to `co_code_adaptive`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CodeObject {
    /// `ob_base`.
    pub ob_base: VarObjectHead,
    /// `co_consts` … `co_stacksize`.
    pub _pad0: [u8; 48],
    /// `co_firstlineno`.
    pub co_firstlineno: i32,
    /// `co_nlocalsplus` … `co_localspluskinds`.
    pub _pad1: [u8; 36],
    /// `co_filename`.
    pub co_filename: Addr,
    /// `co_name`.
    pub co_name: Addr,
    /// `co_qualname`.
    pub co_qualname: Addr,
    /// `co_linetable`: the 3.11 location table (`bytes`).
    pub co_linetable: Addr,
    /// `co_weakreflist` … `co_extra`.
    pub _pad2: [u8; 24],
    /// `_co_firsttraceable`: index (code units) of the first traceable
    /// instruction.
    pub _co_firsttraceable: i32,
    /// `_co_linearray_entry_size`, `_co_linearray`, padding.
    pub _pad3: [u8; 12],
    /// `co_code_adaptive`: the bytecode itself (flexible array).
    pub co_code_adaptive: [u8; 0],
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

/// `PyCompactUnicodeObject` (whole).
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

/// `PyUnicodeObject`: a non-compact string with its data elsewhere.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct UnicodeObject {
    /// `_base`.
    pub _base: CompactUnicodeObject,
    /// `data.any`.
    pub data: Addr,
}

/// Bit position of `state.kind`.
pub const STATE_KIND_SHIFT: u8 = 2;
/// `state.compact`.
pub const STATE_COMPACT_SHIFT: u8 = 5;
/// `state.ascii`.
pub const STATE_ASCII_SHIFT: u8 = 6;
/// `state.ready`.
pub const STATE_READY_SHIFT: u8 = 7;

/// `PyLongObject` (`struct _longobject`, Include/cpython/longintrepr.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LongObject {
    /// `ob_base`: `ob_size` is the signed digit count.
    pub ob_base: VarObjectHead,
    /// `ob_digit`.
    pub ob_digit: [u32; 0],
}

/// `PyLong_SHIFT`.
pub const PYLONG_SHIFT: u8 = 30;

/// `PyGenObject` / `PyCoroObject` (`_PyGenObject_HEAD`), up to `gi_iframe`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GenObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `gi_code`, `gi_weakreflist`, `gi_name`, `gi_qualname`,
    /// `gi_exc_state` (16 bytes), `gi_origin_or_finalizer`.
    pub _pad0: [u8; 56],
    /// `gi_hooks_inited`.
    pub gi_hooks_inited: u8,
    /// `gi_closed`.
    pub gi_closed: u8,
    /// `gi_running_async`.
    pub gi_running_async: u8,
    /// `gi_frame_state` (`int8_t`).
    pub gi_frame_state: i8,
    /// Padding.
    pub _align0: [u8; 4],
    /// `gi_iframe`: the embedded `_PyInterpreterFrame`.
    pub gi_iframe: [Addr; 0],
}

/// `RESUME` (Include/opcode.h).
pub const RESUME: u8 = 151;
/// `RESUME_QUICK`, its quickened form.
pub const RESUME_QUICK: u8 = 150;

/// `FutureObj`, up to `fut_state`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FutureObj {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `fut_loop`.
    pub fut_loop: Addr,
    /// `fut_callback0` … `fut_cancel_msg` (8 pointers).
    pub _pad0: [u8; 64],
    /// `fut_state`.
    pub fut_state: i32,
    /// `fut_log_tb`.
    pub fut_log_tb: i32,
}

/// `TaskObj`, up to `task_name`.
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
    /// `task_cancelled_exc` (a pointer since 3.11).
    pub _pad1: [u8; 36],
    /// `task_fut_waiter`.
    pub task_fut_waiter: Addr,
    /// `task_coro`.
    pub task_coro: Addr,
    /// `task_name`.
    pub task_name: Addr,
}

/// `PyFrameObject` (`struct _frame`, Include/internal/pycore_frame.h), up to
/// `f_frame`: the Python-visible frame object of an interpreter frame.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FrameObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `f_back`.
    pub f_back: Addr,
    /// `f_frame`: the interpreter frame it stands for.
    pub f_frame: Addr,
}

/// The 3.11 layout, derived from the mirrors above.
pub const LAYOUT: Layout = Layout {
    python: (3, 11),
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
        threads_head: off!(InterpreterState, threads.head, InterpreterThreads),
    },
    thread: ThreadLayout {
        next: off!(ThreadState, next),
        interp: off!(ThreadState, interp),
        thread_id: off!(ThreadState, thread_id),
        native_thread_id: Some(off!(ThreadState, native_thread_id)),
        current_frame: CurrentFrame::ViaCFrame {
            cframe: off!(ThreadState, cframe),
            current_frame: off!(CFrame, current_frame),
        },
    },
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        code: off!(InterpreterFrame, f_code),
        previous: off!(InterpreterFrame, previous),
        instr_ptr: off!(InterpreterFrame, prev_instr),
        stacktop: off!(InterpreterFrame, stacktop),
        owner: off!(InterpreterFrame, owner),
        localsplus: off!(InterpreterFrame, localsplus),
        is_entry: Some(off!(InterpreterFrame, is_entry)),
        frame_object_frame: off!(FrameObject, f_frame),
        owned_by_generator: FRAME_OWNED_BY_GENERATOR,
        owned_by_cstack: None,
    }),
    code: CodeLayout {
        filename: off!(CodeObject, co_filename),
        name: off!(CodeObject, co_name),
        qualname: Some(off!(CodeObject, co_qualname)),
        firstlineno: off!(CodeObject, co_firstlineno),
        linetable: off!(CodeObject, co_linetable),
        co_code: None,
        firsttraceable: Some(off!(CodeObject, _co_firsttraceable)),
        code_adaptive: Some(off!(CodeObject, co_code_adaptive)),
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
    gen: GenLayout::Embedded {
        gi_frame_state: off!(GenObject, gi_frame_state),
        gi_iframe: off!(GenObject, gi_iframe),
        states: GEN_STATES,
        resume: (RESUME, RESUME_QUICK),
    },
    asyncio: AsyncioLayout {
        fut_loop: off!(FutureObj, fut_loop),
        fut_state: off!(FutureObj, fut_state),
        task_fut_waiter: off!(TaskObj, task_fut_waiter),
        task_coro: off!(TaskObj, task_coro),
        task_name: off!(TaskObj, task_name),
    },
    dict: DictLayout::log2(
        888,
        872,
        0,
        // why: `_PyObject_ManagedDictPointer` is `((PyObject **)obj)-3` and
        // `_PyObject_ValuesPointer` `((PyDictValues **)obj)-4`
        // (Include/internal/pycore_object.h, v3.11.7).
        ManagedDict::Split {
            dict: -24,
            values: -32,
        },
    ),
    containers: super::common::CONTAINERS,
};

/// What these mirrors claim, keyed like the oracle's output.
pub fn mirror_facts() -> Vec<Fact> {
    let mut facts = super::common::facts();
    facts.extend([
        field!("PyFrameObject.f_frame", FrameObject, f_frame),
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
            "PyInterpreterState.threads.head",
            InterpreterState,
            threads.head,
            InterpreterThreads
        ),
        field!("PyThreadState.next", ThreadState, next),
        field!("PyThreadState.interp", ThreadState, interp),
        field!("PyThreadState.thread_id", ThreadState, thread_id),
        field!(
            "PyThreadState.native_thread_id",
            ThreadState,
            native_thread_id
        ),
        field!("PyThreadState.cframe", ThreadState, cframe),
        field!("_PyCFrame.current_frame", CFrame, current_frame),
        field!("_PyInterpreterFrame.f_code", InterpreterFrame, f_code),
        field!(
            "_PyInterpreterFrame.prev_instr",
            InterpreterFrame,
            prev_instr
        ),
        field!("_PyInterpreterFrame.previous", InterpreterFrame, previous),
        field!("_PyInterpreterFrame.stacktop", InterpreterFrame, stacktop),
        field!("_PyInterpreterFrame.owner", InterpreterFrame, owner),
        flex!(
            "_PyInterpreterFrame.localsplus",
            InterpreterFrame,
            localsplus
        ),
        field!("_PyInterpreterFrame.is_entry", InterpreterFrame, is_entry),
        konst("FRAME_OWNED_BY_THREAD", FRAME_OWNED_BY_THREAD as i64),
        konst("FRAME_OWNED_BY_GENERATOR", FRAME_OWNED_BY_GENERATOR as i64),
        konst(
            "FRAME_OWNED_BY_FRAME_OBJECT",
            FRAME_OWNED_BY_FRAME_OBJECT as i64,
        ),
        konst("FRAME_CREATED", GEN_STATES.created as i64),
        konst("FRAME_SUSPENDED", GEN_STATES.suspended as i64),
        konst("FRAME_EXECUTING", GEN_STATES.executing as i64),
        konst("FRAME_COMPLETED", GEN_STATES.completed as i64),
        konst("FRAME_CLEARED", GEN_STATES.cleared as i64),
        field!("PyCodeObject.co_filename", CodeObject, co_filename),
        field!("PyCodeObject.co_name", CodeObject, co_name),
        field!("PyCodeObject.co_firstlineno", CodeObject, co_firstlineno),
        field!("PyCodeObject.co_linetable", CodeObject, co_linetable),
        field!("PyCodeObject.co_qualname", CodeObject, co_qualname),
        field!(
            "PyCodeObject._co_firsttraceable",
            CodeObject,
            _co_firsttraceable
        ),
        flex!(
            "PyCodeObject.co_code_adaptive",
            CodeObject,
            co_code_adaptive
        ),
        konst("RESUME", RESUME as i64),
        konst("RESUME_QUICK", RESUME_QUICK as i64),
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
        field!("PyGenObject.gi_frame_state", GenObject, gi_frame_state),
        flex!("PyGenObject.gi_iframe", GenObject, gi_iframe),
    ]);
    facts
}
