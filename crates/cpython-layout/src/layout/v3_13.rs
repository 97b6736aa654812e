//! Mirrors of CPython 3.13 (tag v3.13.0).
//!
//! Sources: Include/internal/pycore_runtime.h (`_PyRuntimeState`),
//! Include/internal/pycore_interp.h (`PyInterpreterState` = `struct _is`),
//! Include/cpython/pystate.h (`PyThreadState`),
//! Include/internal/pycore_frame.h (`_PyInterpreterFrame`, owners, frame
//! states), Include/cpython/code.h (`PyCodeObject`),
//! Include/cpython/unicodeobject.h, Include/cpython/longintrepr.h,
//! Include/cpython/genobject.h, Include/opcode_ids.h, and
//! Modules/_asynciomodule.c (`FutureObj`, `TaskObj`). `_pad*` arrays stand
//! for fields not read; `_align*` for the compiler's padding.
//!
//! Frames: `tstate->current_frame` is the innermost `_PyInterpreterFrame`
//! (`_PyCFrame` is gone). `f_executable` is the code object, or `None` in the
//! shim frame owned by `FRAME_OWNED_BY_CSTACK` that each C-level entry into
//! the interpreter pushes (Python/ceval.c, `entry_frame`): shims are skipped.
//! `instr_ptr` points at the instruction executing or about to run (not the
//! one before, as `prev_instr` did). A frame still before
//! `_co_firsttraceable` is skipped (`_PyFrame_IsIncomplete`, pycore_frame.h).
//!
//! `_PyRuntime` starts with `_Py_DebugOffsets` (see
//! [`super::debug_offsets`]), which is checked against these mirrors at
//! start-up.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use super::common::{BytesObject, ObjectHead, TypeObject, VarObjectHead};
use super::debug_offsets::DebugOffsets;
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
    /// `mutex` (`PyMutex`, one byte).
    pub mutex: u8,
    /// Padding.
    pub _align0: [u8; 7],
    /// `head`: the most recently created interpreter.
    pub head: Addr,
}

/// `_PyRuntimeState` (`struct pyruntimestate`), up to `interpreters.head`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RuntimeState {
    /// `debug_offsets`: the offsets table for out-of-process tools.
    pub debug_offsets: DebugOffsets,
    /// `_initialized` … `initialized`, `_finalizing`, `_finalizing_id`.
    pub _pad0: [u8; 40],
    /// `interpreters`.
    pub interpreters: RuntimeInterpreters,
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

/// `PyInterpreterState` (`struct _is`), up to `threads.head`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterState {
    /// `ceval.instrumentation_version`, `ceval.recursion_limit`.
    pub _pad_ceval: [u8; 16],
    /// `ceval.gil`: the `struct _gil_runtime_state *` this interpreter
    /// runs under (its own, or the main interpreter's).
    pub ceval_gil: Addr,
    /// The rest of `ceval` (`own_gil`, the pending calls) and the fields
    /// before `next`.
    pub _pad0: [u8; 7240],
    /// `next`.
    pub next: Addr,
    /// `id` (`int64_t`).
    pub id: i64,
    /// `id_refcount` … `_static`.
    pub _pad1: [u8; 56],
    /// `threads`.
    pub threads: InterpreterThreads,
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
    /// `eval_breaker` … `what_event` (status, recursion and tracing state).
    pub _pad0: [u8; 48],
    /// `current_frame`: the innermost `_PyInterpreterFrame`, or NULL.
    pub current_frame: Addr,
    /// `c_profilefunc` … `id`.
    pub _pad1: [u8; 72],
    /// `thread_id` (`unsigned long`, the `pthread_t`).
    pub thread_id: u64,
    /// `native_thread_id` (`unsigned long`, the kernel tid).
    pub native_thread_id: u64,
}

/// `_PyInterpreterFrame`, up to `localsplus`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterpreterFrame {
    /// `f_executable`: the code object (`None` in shim frames).
    pub f_executable: Addr,
    /// `previous`.
    pub previous: Addr,
    /// `f_funcobj`, `f_globals`, `f_builtins`, `f_locals`, `frame_obj`.
    pub _pad0: [u8; 40],
    /// `instr_ptr`: the instruction executing or about to run.
    pub instr_ptr: Addr,
    /// `stacktop`: index in `localsplus` one past the top of stack.
    pub stacktop: i32,
    /// `return_offset` (`uint16_t`).
    pub return_offset: u16,
    /// `owner` (`char`).
    pub owner: u8,
    /// Padding.
    pub _align0: [u8; 1],
    /// `localsplus` (flexible array: locals, then the value stack).
    pub localsplus: [Addr; 0],
}

/// `FRAME_OWNED_BY_THREAD` (`enum _frameowner`).
pub const FRAME_OWNED_BY_THREAD: u8 = 0;
/// `FRAME_OWNED_BY_GENERATOR`.
pub const FRAME_OWNED_BY_GENERATOR: u8 = 1;
/// `FRAME_OWNED_BY_FRAME_OBJECT`.
pub const FRAME_OWNED_BY_FRAME_OBJECT: u8 = 2;
/// `FRAME_OWNED_BY_CSTACK`: a shim frame of a C-level interpreter entry.
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// `enum _framestate` values of a generator's `gi_frame_state`.
pub const GEN_STATES: GenStates = GenStates {
    created: -3,
    suspended: -2,
    suspended_yield_from: Some(-1),
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
    pub _pad0: [u8; 44],
    /// `co_firstlineno`.
    pub co_firstlineno: i32,
    /// `co_nlocalsplus` … `co_localspluskinds`.
    pub _pad1: [u8; 40],
    /// `co_filename`.
    pub co_filename: Addr,
    /// `co_name`.
    pub co_name: Addr,
    /// `co_qualname`.
    pub co_qualname: Addr,
    /// `co_linetable`: the location table (`bytes`).
    pub co_linetable: Addr,
    /// `co_weakreflist` … `co_extra`.
    pub _pad2: [u8; 40],
    /// `_co_firsttraceable`: index (code units) of the first traceable
    /// instruction.
    pub _co_firsttraceable: i32,
    /// padding, `_co_cached` … (the rest of the header).
    pub _pad3: [u8; 12],
    /// `co_code_adaptive`: the bytecode itself (flexible array).
    pub co_code_adaptive: [u8; 0],
}

/// `PyASCIIObject` (whole; `wstr` is gone in 3.12).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AsciiObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `length` in code points.
    pub length: i64,
    /// `hash`.
    pub hash: i64,
    /// `state`: bit fields `interned:2 kind:3 compact:1 ascii:1
    /// statically_allocated:1` (no `ready` any more: every string is ready).
    pub state: u32,
    /// Padding.
    pub _align0: [u8; 4],
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

/// `_PyLongValue` (Include/cpython/longintrepr.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LongValue {
    /// `lv_tag`: digit count `<< _PyLong_NON_SIZE_BITS`, sign in bits 0-1.
    pub lv_tag: u64,
    /// `ob_digit`.
    pub ob_digit: [u32; 0],
}

/// `PyLongObject` (`struct _longobject`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LongObject {
    /// `ob_base` (a plain `PyObject` since 3.12).
    pub ob_base: ObjectHead,
    /// `long_value`.
    pub long_value: LongValue,
}

/// `_PyLong_NON_SIZE_BITS`.
pub const PYLONG_NON_SIZE_BITS: u8 = 3;

/// `PyLong_SHIFT`.
pub const PYLONG_SHIFT: u8 = 30;

/// `PyGenObject` / `PyCoroObject` (`_PyGenObject_HEAD`), up to `gi_iframe`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GenObject {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `gi_weakreflist`, `gi_name`, `gi_qualname`, `gi_exc_state` (16
    /// bytes), `gi_origin_or_finalizer` (`gi_code` is gone in 3.12).
    pub _pad0: [u8; 48],
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

/// `RESUME` (Include/opcode_ids.h).
pub const RESUME: u8 = 149;
/// `INSTRUMENTED_RESUME`, its form while `sys.monitoring` is active.
pub const INSTRUMENTED_RESUME: u8 = 236;

/// `FutureObj`, up to `fut_state` (`dict` and `fut_weakreflist` are gone:
/// managed by the type since 3.13).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FutureObj {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `fut_loop`.
    pub fut_loop: Addr,
    /// `fut_callback0` … `fut_cancel_msg`, `fut_cancelled_exc` (9 pointers).
    pub _pad0: [u8; 72],
    /// `fut_state`.
    pub fut_state: i32,
    /// The bit fields `fut_log_tb:1`, `fut_blocking:1`.
    pub fut_bits: u32,
}

/// `TaskObj`, up to `task_name`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TaskObj {
    /// `ob_base`.
    pub ob_base: ObjectHead,
    /// `task_loop`.
    pub task_loop: Addr,
    /// `task_callback0` … `task_cancelled_exc`.
    pub _pad0: [u8; 72],
    /// `task_state`.
    pub task_state: i32,
    /// The bit fields `task_log_tb`, `task_blocking`, `task_must_cancel`,
    /// `task_log_destroy_pending` (one word), `task_num_cancels_requested`,
    /// padding.
    pub _pad1: [u8; 12],
    /// `task_fut_waiter` (moved after the bit fields in 3.13).
    pub task_fut_waiter: Addr,
    /// `task_coro`.
    pub task_coro: Addr,
    /// `task_name`: a `str`, or an `int` for an unnamed task (the name
    /// `Task-<n>` is formatted lazily since 3.13).
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

/// The 3.13 layout, derived from the mirrors above.
pub const LAYOUT: Layout = Layout {
    python: (3, 13),
    object: ObjectLayout {
        ob_type: off!(ObjectHead, ob_type),
        ob_size: off!(VarObjectHead, ob_size),
        tp_name: off!(TypeObject, tp_name),
        tp_base: off!(TypeObject, tp_base),
    },
    runtime: RuntimeLayout {
        interpreters_head: off!(RuntimeState, interpreters.head, RuntimeInterpreters),
        debug_offsets: Some(off!(RuntimeState, debug_offsets)),
        pending_finishing: None,
    },
    gil: GilLayout::at(GilLocation::Interp(off!(InterpreterState, ceval_gil))),
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
        current_frame: CurrentFrame::Direct(off!(ThreadState, current_frame)),
    },
    frame: FrameLayout::Interpreter(InterpreterFrameLayout {
        code: off!(InterpreterFrame, f_executable),
        previous: off!(InterpreterFrame, previous),
        instr_ptr: off!(InterpreterFrame, instr_ptr),
        stacktop: off!(InterpreterFrame, stacktop),
        owner: off!(InterpreterFrame, owner),
        localsplus: off!(InterpreterFrame, localsplus),
        is_entry: None,
        frame_object_frame: off!(FrameObject, f_frame),
        owned_by_generator: FRAME_OWNED_BY_GENERATOR,
        owned_by_cstack: Some(FRAME_OWNED_BY_CSTACK),
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
        ready_shift: None,
        ascii_size: core::mem::size_of::<AsciiObject>() as u64,
        compact_size: core::mem::size_of::<CompactUnicodeObject>() as u64,
        data: off!(UnicodeObject, data),
    },
    bytes: BytesLayout {
        ob_size: off!(VarObjectHead, ob_size),
        ob_sval: off!(BytesObject, ob_sval),
    },
    long: LongLayout {
        size: LongSize::Tag {
            lv_tag: off!(LongObject, long_value.lv_tag, LongValue),
            non_size_bits: PYLONG_NON_SIZE_BITS,
        },
        ob_digit: off!(LongObject, long_value.ob_digit, LongValue),
        shift: PYLONG_SHIFT,
        digit_size: 4,
    },
    gen: GenLayout::Embedded {
        gi_frame_state: off!(GenObject, gi_frame_state),
        gi_iframe: off!(GenObject, gi_iframe),
        states: GEN_STATES,
        resume: (RESUME, INSTRUMENTED_RESUME),
    },
    asyncio: AsyncioLayout {
        fut_loop: off!(FutureObj, fut_loop),
        fut_state: off!(FutureObj, fut_state),
        task_fut_waiter: off!(TaskObj, task_fut_waiter),
        task_coro: off!(TaskObj, task_coro),
        task_name: off!(TaskObj, task_name),
    },
    dict: DictLayout::log2(
        7656,
        880,
        8,
        // why: `_PyObject_ManagedDictPointer` is `((PyManagedDictPointer *)obj)-3`
        // and `_PyObject_InlineValues` is at `tp_basicsize`
        // (Include/internal/pycore_object.h, v3.13.0).
        ManagedDict::Inline {
            dict: -24,
            inline_flag: 1 << 2,
            valid: 3,
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
        field!("_PyRuntimeState.debug_offsets", RuntimeState, debug_offsets),
        size("_Py_DebugOffsets", core::mem::size_of::<DebugOffsets>()),
        field!("PyInterpreterState.ceval.gil", InterpreterState, ceval_gil),
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
        field!("PyThreadState.current_frame", ThreadState, current_frame),
        field!(
            "_PyInterpreterFrame.f_executable",
            InterpreterFrame,
            f_executable
        ),
        field!("_PyInterpreterFrame.instr_ptr", InterpreterFrame, instr_ptr),
        field!("_PyInterpreterFrame.previous", InterpreterFrame, previous),
        field!("_PyInterpreterFrame.stacktop", InterpreterFrame, stacktop),
        field!("_PyInterpreterFrame.owner", InterpreterFrame, owner),
        flex!(
            "_PyInterpreterFrame.localsplus",
            InterpreterFrame,
            localsplus
        ),
        konst("FRAME_OWNED_BY_CSTACK", FRAME_OWNED_BY_CSTACK as i64),
        konst("FRAME_OWNED_BY_THREAD", FRAME_OWNED_BY_THREAD as i64),
        konst("FRAME_OWNED_BY_GENERATOR", FRAME_OWNED_BY_GENERATOR as i64),
        konst(
            "FRAME_OWNED_BY_FRAME_OBJECT",
            FRAME_OWNED_BY_FRAME_OBJECT as i64,
        ),
        konst("FRAME_CREATED", GEN_STATES.created as i64),
        konst("FRAME_SUSPENDED", GEN_STATES.suspended as i64),
        konst("FRAME_SUSPENDED_YIELD_FROM", -1),
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
        konst("INSTRUMENTED_RESUME", INSTRUMENTED_RESUME as i64),
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
        flex!("PyBytesObject.ob_sval", BytesObject, ob_sval),
        field!(
            "PyLongObject.long_value.lv_tag",
            LongObject,
            long_value.lv_tag,
            LongValue
        ),
        flex!(
            "PyLongObject.long_value.ob_digit",
            LongObject,
            long_value.ob_digit,
            LongValue
        ),
        konst("_PyLong_NON_SIZE_BITS", PYLONG_NON_SIZE_BITS as i64),
        konst("PyLong_SHIFT", PYLONG_SHIFT as i64),
        size("digit", core::mem::size_of::<u32>()),
        field!("PyGenObject.gi_frame_state", GenObject, gi_frame_state),
        flex!("PyGenObject.gi_iframe", GenObject, gi_iframe),
    ]);
    facts
}
