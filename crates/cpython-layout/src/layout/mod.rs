//! Where things are inside CPython's structures, per version.
//!
//! Two levels:
//!
//! - **Mirrors** (`v3_8` … `v3_13`): small `#[repr(C)]` structs, one file per
//!   minor version, holding only the fields read (padding arrays stand for the
//!   rest) with CPython's own field names. They derive `zerocopy`'s
//!   `FromBytes`, so foreign bytes can be read into them with
//!   [`ReadExt::read_pod`](crate::reader::ReadExt::read_pod), and they are
//!   checked against the real headers by the C oracle
//!   (`tools/layout-oracle/`): see [`oracle`] and [`generated`].
//! - **[`Layout`]**: plain numbers (offsets, constants) derived from the
//!   mirrors with `core::mem::offset_of!`. The views in [`crate::views`] only
//!   ever see a `Layout`, never a mirror type, so a version for which we have
//!   no mirrors could be served from a table of offsets alone, e.g. the
//!   `_Py_DebugOffsets` that CPython 3.13 embeds in `_PyRuntime` (see
//!   [`debug_offsets`]).
//!
//! All layouts are always compiled in; [`Layout::for_version`] picks one at
//! run time.

pub mod common;
pub mod debug_offsets;
#[rustfmt::skip]
pub mod generated;
pub mod oracle;
pub mod v3_10;
pub mod v3_11;
pub mod v3_12;
pub mod v3_13;
pub mod v3_8;
pub mod v3_9;

use crate::version::PyVersion;

/// Offsets in the object header and type object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `PyObject.ob_type`.
    pub ob_type: u64,
    /// `PyVarObject.ob_size`.
    pub ob_size: u64,
    /// `PyTypeObject.tp_name` (a `const char *`).
    pub tp_name: u64,
    /// `PyTypeObject.tp_base`.
    pub tp_base: u64,
}

/// Offsets in sets, weak references and the awaitables of async generators
/// (the same in every supported version: [`common::CONTAINERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerLayout {
    /// `PySetObject.used`: active entries.
    pub set_used: u64,
    /// `PySetObject.mask`.
    pub set_mask: u64,
    /// `PySetObject.table`.
    pub set_table: u64,
    /// `sizeof(setentry)`.
    pub set_entry_size: u64,
    /// `setentry.key`.
    pub set_entry_key: u64,
    /// `setentry.hash`: the key's hash, kept with it.
    pub set_entry_hash: u64,
    /// `PyWeakReference.wr_object`.
    pub wr_object: u64,
    /// `PyListObject.ob_item`.
    pub list_item: u64,
    /// `PyAsyncGenASend.ags_gen` (Objects/genobject.c).
    pub ags_gen: u64,
}

/// Offsets in `_PyRuntimeState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLayout {
    /// `interpreters.head`: the first `PyInterpreterState *`.
    pub interpreters_head: u64,
    /// `debug_offsets`: where `_Py_DebugOffsets` sits (3.13+).
    pub debug_offsets: Option<u64>,
    /// `ceval.pending.finishing` (3.8 only): not 0 once the interpreter's
    /// exit has run its last pending calls, before its atexit handlers,
    /// while `_Py_IsFinalizing()` still says no; `Py_AddPendingCall` then
    /// fails (and crashes on a thread with no thread state).
    pub pending_finishing: Option<u64>,
}

/// Offsets in `PyInterpreterState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpLayout {
    /// `next`.
    pub next: u64,
    /// `id` (`int64_t`).
    pub id: u64,
    /// `tstate_head` (≤ 3.10) or `threads.head` (3.11+).
    pub threads_head: u64,
}

/// Where an interpreter's GIL keeps who took it last and how often it
/// changed hands: while its `switch_number` stays the same, no thread but
/// its `last_holder` can have run Python code, so the stacks of the others
/// are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilLayout {
    /// Where the `struct _gil_runtime_state` is.
    pub location: GilLocation,
    /// `last_holder` in it.
    pub last_holder: u64,
    /// `switch_number` in it.
    pub switch_number: u64,
}

/// Where the GIL's state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilLocation {
    /// At this offset of `_PyRuntimeState` (`ceval.gil`, ≤ 3.11): one GIL
    /// for every interpreter.
    Runtime(u64),
    /// Behind the pointer at this offset of `PyInterpreterState`
    /// (`ceval.gil`, 3.12+): an interpreter may have a GIL of its own.
    Interp(u64),
}

impl GilLayout {
    /// The layout of a GIL state found at `location`.
    pub const fn at(location: GilLocation) -> Self {
        Self {
            location,
            last_holder: common::GIL_STATE.0,
            switch_number: common::GIL_STATE.1,
        }
    }
}

/// How a thread state points at its innermost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentFrame {
    /// A field of the thread state: `frame` (≤ 3.10) or `current_frame`
    /// (3.13).
    Direct(u64),
    /// Through a `_PyCFrame *` (3.11, 3.12): `tstate->cframe->current_frame`.
    ViaCFrame {
        /// `PyThreadState.cframe`.
        cframe: u64,
        /// `_PyCFrame.current_frame`.
        current_frame: u64,
    },
}

/// Offsets in `PyThreadState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadLayout {
    /// `next`.
    pub next: u64,
    /// `interp`.
    pub interp: u64,
    /// `thread_id` (`unsigned long`, the `pthread_t`).
    pub thread_id: u64,
    /// `native_thread_id` (3.11+; the field does not exist before).
    pub native_thread_id: Option<u64>,
    /// The innermost frame.
    pub current_frame: CurrentFrame,
}

/// How the value stack of a `PyFrameObject` is found (for the object a
/// generator awaits, ≤ 3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueStack {
    /// `f_stacktop` points one past the top while suspended (3.8, 3.9).
    Top {
        /// `PyFrameObject.f_stacktop`.
        f_stacktop: u64,
    },
    /// `f_valuestack[f_stackdepth - 1]` is the top (3.10).
    Depth {
        /// `PyFrameObject.f_valuestack`.
        f_valuestack: u64,
        /// `PyFrameObject.f_stackdepth` (`int`).
        f_stackdepth: u64,
    },
}

/// Offsets in `PyFrameObject` (the frame model up to 3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectFrameLayout {
    /// `f_back`.
    pub f_back: u64,
    /// `f_code`.
    pub f_code: u64,
    /// `f_lasti` (`int`).
    pub f_lasti: u64,
    /// Bytes per unit of `f_lasti`: 1 on 3.8 and 3.9 (a byte offset), 2 on
    /// 3.10 (an index of `_Py_CODEUNIT`s).
    pub lasti_unit: u64,
    /// `f_lineno` (`int`; only meaningful while tracing).
    pub f_lineno: u64,
    /// The value stack.
    pub stack: ValueStack,
    /// `f_state` (`signed char`, 3.10) and the value of `FRAME_EXECUTING`.
    pub f_state: Option<(u64, i8)>,
}

/// Offsets and constants of `_PyInterpreterFrame` (3.11+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterFrameLayout {
    /// `PyFrameObject.f_frame`: a frame object's interpreter frame.
    pub frame_object_frame: u64,
    /// `f_code` (3.11, 3.12) or `f_executable` (3.13).
    pub code: u64,
    /// `previous`.
    pub previous: u64,
    /// `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13): a `_Py_CODEUNIT *`.
    pub instr_ptr: u64,
    /// `stacktop` (`int`, index into `localsplus` of the top of stack + 1).
    pub stacktop: u64,
    /// `owner` (`char`).
    pub owner: u64,
    /// `localsplus` (flexible array of `PyObject *`).
    pub localsplus: u64,
    /// `is_entry` (`bool`, 3.11 only).
    pub is_entry: Option<u64>,
    /// `FRAME_OWNED_BY_GENERATOR`.
    pub owned_by_generator: u8,
    /// `FRAME_OWNED_BY_CSTACK` (3.12+): shim frames that own no Python code.
    pub owned_by_cstack: Option<u8>,
}

/// The frame model of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLayout {
    /// Heap-allocated `PyFrameObject`s linked by `f_back` (≤ 3.10).
    Object(ObjectFrameLayout),
    /// `_PyInterpreterFrame`s linked by `previous` (3.11+).
    Interpreter(InterpreterFrameLayout),
}

/// Offsets in `PyCodeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    /// `co_filename`.
    pub filename: u64,
    /// `co_name`.
    pub name: u64,
    /// `co_qualname` (3.11+).
    pub qualname: Option<u64>,
    /// `co_firstlineno` (`int`).
    pub firstlineno: u64,
    /// `co_lnotab` (3.8, 3.9) or `co_linetable` (3.10+): a bytes object.
    pub linetable: u64,
    /// `co_code` (≤ 3.10): the bytecode as a bytes object.
    pub co_code: Option<u64>,
    /// `_co_firsttraceable` (3.11+, `int`, in code units).
    pub firsttraceable: Option<u64>,
    /// `co_code_adaptive` (3.11+): the bytecode inline in the code object;
    /// `instr_ptr - (code + co_code_adaptive)` is an instruction's offset.
    pub code_adaptive: Option<u64>,
}

/// Offsets and bit positions of the `str` object family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnicodeLayout {
    /// `PyASCIIObject.length` (code points).
    pub length: u64,
    /// `PyASCIIObject.state` (a 32-bit word of bit fields).
    pub state: u64,
    /// Shift of `state.kind` (3 bits: 1, 2 or 4 bytes per code point).
    pub kind_shift: u8,
    /// Shift of `state.compact`.
    pub compact_shift: u8,
    /// Shift of `state.ascii`.
    pub ascii_shift: u8,
    /// Shift of `state.ready` (≤ 3.11).
    pub ready_shift: Option<u8>,
    /// `sizeof(PyASCIIObject)`: compact ASCII data follows it.
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: other compact data follows it.
    pub compact_size: u64,
    /// `PyUnicodeObject.data`: the data pointer of non-compact strings.
    pub data: u64,
}

/// Offsets in `PyBytesObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesLayout {
    /// `ob_size`.
    pub ob_size: u64,
    /// `ob_sval`.
    pub ob_sval: u64,
}

/// How an `int`'s sign and digit count are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongSize {
    /// `ob_size`: signed digit count (≤ 3.11).
    ObSize(u64),
    /// `long_value.lv_tag` (3.12+): digit count `<< non_size_bits`, sign in
    /// the low two bits (0 positive, 1 zero, 2 negative).
    Tag {
        /// Offset of `lv_tag`.
        lv_tag: u64,
        /// `_PyLong_NON_SIZE_BITS`.
        non_size_bits: u8,
    },
}

/// Offsets and constants of `PyLongObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongLayout {
    /// Sign and size.
    pub size: LongSize,
    /// The digit array.
    pub ob_digit: u64,
    /// `PyLong_SHIFT` (bits per digit).
    pub shift: u8,
    /// `sizeof(digit)`.
    pub digit_size: u8,
}

/// Values of a generator's `gi_frame_state` (3.11+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenStates {
    /// `FRAME_CREATED`.
    pub created: i8,
    /// `FRAME_SUSPENDED`.
    pub suspended: i8,
    /// `FRAME_SUSPENDED_YIELD_FROM` (3.13).
    pub suspended_yield_from: Option<i8>,
    /// `FRAME_EXECUTING`.
    pub executing: i8,
    /// `FRAME_COMPLETED`.
    pub completed: i8,
    /// `FRAME_CLEARED`.
    pub cleared: i8,
}

/// Offsets of generator and coroutine objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenLayout {
    /// ≤ 3.10: the generator points at a `PyFrameObject`.
    Object {
        /// `gi_frame` (NULL once finished).
        gi_frame: u64,
        /// `gi_running` (`char`, 3.8, 3.9); on 3.10 the frame's `f_state`
        /// says whether it runs.
        gi_running: Option<u64>,
        /// `YIELD_FROM`: the opcode after `f_lasti` when suspended in an
        /// `await`/`yield from`.
        yield_from: u8,
    },
    /// 3.11+: the generator embeds its `_PyInterpreterFrame`.
    Embedded {
        /// `gi_frame_state` (`int8_t`).
        gi_frame_state: u64,
        /// `gi_iframe`: the embedded frame.
        gi_iframe: u64,
        /// Its values.
        states: GenStates,
        /// `RESUME` and its quickened/instrumented twin: the instruction at
        /// which a suspended `await` resumes (3.11, 3.12 only look at it).
        resume: (u8, u8),
    },
}

/// Offsets in `_asyncio`'s C `FutureObj` and `TaskObj` (from
/// `Modules/_asynciomodule.c`; in no header, so checked by reading real
/// tasks in `tests/live_process.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioLayout {
    /// `fut_loop` / `task_loop`.
    pub fut_loop: u64,
    /// `fut_state` / `task_state` (`fut_state` enum, an `int`).
    pub fut_state: u64,
    /// `task_fut_waiter`: the future the task waits on.
    pub task_fut_waiter: u64,
    /// `task_coro`.
    pub task_coro: u64,
    /// `task_name`: a `str`, or (3.13, unnamed task) an `int` counter.
    pub task_name: u64,
}

/// Where a CPython dict keeps its keys and entries
/// (`PyDictKeysObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictKeysLayout {
    /// 3.8-3.10: `dk_size` entries' worth of indices, each 1, 2, 4 or 8
    /// bytes wide by the table's size, then `PyDictKeyEntry`s (hash, key,
    /// value).
    Sized {
        /// `dk_size` (`Py_ssize_t`).
        dk_size: u64,
        /// `dk_nentries` (`Py_ssize_t`).
        dk_nentries: u64,
        /// `dk_indices` (flexible array).
        dk_indices: u64,
    },
    /// 3.11+: `1 << dk_log2_index_bytes` bytes of indices, then entries of
    /// the table's kind: `PyDictKeyEntry` (hash, key, value) for
    /// `DICT_KEYS_GENERAL` (0), `PyDictUnicodeEntry` (key, value) for str
    /// keys (`DICT_KEYS_UNICODE` 1, `DICT_KEYS_SPLIT` 2).
    Log2 {
        /// `dk_log2_index_bytes` (`uint8_t`).
        dk_log2_index_bytes: u64,
        /// `dk_kind` (`uint8_t`).
        dk_kind: u64,
        /// `dk_nentries` (`Py_ssize_t`).
        dk_nentries: u64,
        /// `dk_indices` (flexible array).
        dk_indices: u64,
    },
}

/// Where an instance keeps its attributes when its type manages them
/// (`Py_TPFLAGS_MANAGED_DICT`, 3.11+): in words before the object (the
/// "pre-header"), or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedDict {
    /// ≤ 3.10: the dict is at `tp_dictoffset`.
    No,
    /// 3.11: the dict pointer at `dict`, the split values pointer at
    /// `values` (byte offsets from the object, negative).
    Split {
        /// `_PyObject_ManagedDictPointer`.
        dict: i64,
        /// `_PyObject_ValuesPointer`.
        values: i64,
    },
    /// 3.12: one word at `at` holds either the dict or, tagged with its low
    /// bit, the values pointer minus one (`PyDictOrValues`).
    Tagged {
        /// `_PyObject_DictOrValuesPointer`.
        at: i64,
    },
    /// 3.13: the dict pointer at `dict`; with `Py_TPFLAGS_INLINE_VALUES`
    /// the values follow the object at `tp_basicsize`, valid while their
    /// `valid` byte is set.
    Inline {
        /// `_PyObject_ManagedDictPointer`.
        dict: i64,
        /// `Py_TPFLAGS_INLINE_VALUES`.
        inline_flag: u64,
        /// Offset of `valid` in `PyDictValues`.
        valid: u64,
    },
}

/// Types, dicts and the interpreter's module table: what it takes to read
/// module globals and instance attributes (`threading`'s names of threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictLayout {
    /// `PyInterpreterState.modules` (`imports.modules` 3.12+): `sys.modules`.
    pub interp_modules: u64,
    /// `PyTypeObject.tp_basicsize`.
    pub tp_basicsize: u64,
    /// `PyTypeObject.tp_flags`.
    pub tp_flags: u64,
    /// `PyTypeObject.tp_dictoffset`.
    pub tp_dictoffset: u64,
    /// `PyHeapTypeObject.ht_cached_keys` (3.11+): the shared keys of the
    /// split dicts of a class's instances.
    pub ht_cached_keys: Option<u64>,
    /// `Py_TPFLAGS_MANAGED_DICT` (3.11+).
    pub managed_flag: u64,
    /// `PyDictObject.ma_used`.
    pub ma_used: u64,
    /// `PyDictObject.ma_keys`.
    pub ma_keys: u64,
    /// `PyDictObject.ma_values` (split tables; null for combined ones).
    pub ma_values: u64,
    /// The keys object.
    pub keys: DictKeysLayout,
    /// Offset of `values` in `PyDictValues` (3.13 puts four bytes of
    /// bookkeeping first; ≤ 3.10 `ma_values` points at the array itself).
    pub values: u64,
    /// How managed instance dicts are found.
    pub managed: ManagedDict,
}

/// `sizeof(PyDictKeyEntry)`: hash, key, value.
pub const DICT_KEY_ENTRY: u64 = 24;
/// `sizeof(PyDictUnicodeEntry)` (3.11+): key, value.
pub const DICT_UNICODE_ENTRY: u64 = 16;

impl DictLayout {
    /// 3.8-3.10: every field but where the interpreter keeps `modules` is
    /// the same.
    pub const fn sized(interp_modules: u64) -> Self {
        Self {
            interp_modules,
            tp_basicsize: 32,
            tp_flags: 168,
            tp_dictoffset: 288,
            ht_cached_keys: None,
            managed_flag: 0,
            ma_used: 16,
            ma_keys: 32,
            ma_values: 40,
            // why: `struct _dictkeysobject` (Objects/dict-common.h, v3.8.18
            // to v3.10.13, in no installed header): dk_refcnt, dk_size,
            // dk_lookup, dk_usable, dk_nentries, then dk_indices.
            keys: DictKeysLayout::Sized {
                dk_size: 8,
                dk_nentries: 32,
                dk_indices: 40,
            },
            values: 0,
            managed: ManagedDict::No,
        }
    }

    /// 3.11-3.13: the same type, dict and keys offsets; the module table,
    /// the cached keys, the values array and managed dicts move.
    pub const fn log2(
        interp_modules: u64,
        ht_cached_keys: u64,
        values: u64,
        managed: ManagedDict,
    ) -> Self {
        Self {
            interp_modules,
            tp_basicsize: 32,
            tp_flags: 168,
            tp_dictoffset: 288,
            ht_cached_keys: Some(ht_cached_keys),
            managed_flag: 1 << 4,
            ma_used: 16,
            ma_keys: 32,
            ma_values: 40,
            keys: DictKeysLayout::Log2 {
                dk_log2_index_bytes: 9,
                dk_kind: 10,
                dk_nentries: 24,
                dk_indices: 32,
            },
            values,
            managed,
        }
    }

    /// The oracle facts these numbers claim (those the headers can show:
    /// ≤ 3.10 keep `PyDictKeysObject` in `Objects/dict-common.h`, outside the
    /// installed headers, and the pre-header words are macros, not fields).
    pub fn facts(&self, minor: u8) -> Vec<oracle::Fact> {
        use oracle::Fact::{Const, Field, Size};
        let mut f = vec![
            Field {
                key: if minor >= 12 {
                    "PyInterpreterState.imports.modules"
                } else {
                    "PyInterpreterState.modules"
                },
                offset: self.interp_modules,
                size: 8,
            },
            Field {
                key: "PyTypeObject.tp_basicsize",
                offset: self.tp_basicsize,
                size: 8,
            },
            Field {
                key: "PyTypeObject.tp_flags",
                offset: self.tp_flags,
                size: 8,
            },
            Field {
                key: "PyTypeObject.tp_dictoffset",
                offset: self.tp_dictoffset,
                size: 8,
            },
            Field {
                key: "PyDictObject.ma_used",
                offset: self.ma_used,
                size: 8,
            },
            Field {
                key: "PyDictObject.ma_keys",
                offset: self.ma_keys,
                size: 8,
            },
            Field {
                key: "PyDictObject.ma_values",
                offset: self.ma_values,
                size: 8,
            },
        ];
        if let Some(off) = self.ht_cached_keys {
            f.push(Field {
                key: "PyHeapTypeObject.ht_cached_keys",
                offset: off,
                size: 8,
            });
            f.push(Const {
                key: "Py_TPFLAGS_MANAGED_DICT",
                value: self.managed_flag as i64,
            });
            f.push(Field {
                key: "PyDictValues.values",
                offset: self.values,
                size: 8,
            });
            f.push(Size {
                key: "PyDictKeyEntry",
                size: DICT_KEY_ENTRY,
            });
            f.push(Size {
                key: "PyDictUnicodeEntry",
                size: DICT_UNICODE_ENTRY,
            });
        }
        if let DictKeysLayout::Log2 {
            dk_log2_index_bytes,
            dk_kind,
            dk_nentries,
            dk_indices,
        } = self.keys
        {
            f.extend([
                Field {
                    key: "PyDictKeysObject.dk_log2_index_bytes",
                    offset: dk_log2_index_bytes,
                    size: 1,
                },
                Field {
                    key: "PyDictKeysObject.dk_kind",
                    offset: dk_kind,
                    size: 1,
                },
                Field {
                    key: "PyDictKeysObject.dk_nentries",
                    offset: dk_nentries,
                    size: 8,
                },
                Field {
                    key: "PyDictKeysObject.dk_indices",
                    offset: dk_indices,
                    size: 1,
                },
            ]);
        }
        if let ManagedDict::Inline {
            inline_flag, valid, ..
        } = self.managed
        {
            f.push(Const {
                key: "Py_TPFLAGS_INLINE_VALUES",
                value: inline_flag as i64,
            });
            f.push(Field {
                key: "PyDictValues.valid",
                offset: valid,
                size: 1,
            });
        }
        f
    }
}

/// Everything the views need to read one CPython minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `(major, minor)` this layout was made for.
    pub python: (u8, u8),
    /// Object header and type.
    pub object: ObjectLayout,
    /// `_PyRuntimeState`.
    pub runtime: RuntimeLayout,
    /// `PyInterpreterState`.
    pub interp: InterpLayout,
    /// `PyThreadState`.
    pub thread: ThreadLayout,
    /// The GIL's state.
    pub gil: GilLayout,
    /// Frames.
    pub frame: FrameLayout,
    /// Code objects.
    pub code: CodeLayout,
    /// Strings.
    pub unicode: UnicodeLayout,
    /// Bytes.
    pub bytes: BytesLayout,
    /// Ints.
    pub long: LongLayout,
    /// Generators and coroutines.
    pub gen: GenLayout,
    /// asyncio futures and tasks.
    pub asyncio: AsyncioLayout,
    /// Types, dicts, modules.
    pub dict: DictLayout,
    /// Sets, weak references, async generator awaitables.
    pub containers: ContainerLayout,
}

/// The interpreter version has no layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CPython {0} is not supported (supported: 3.8 to 3.13)")]
pub struct UnsupportedVersion(pub PyVersion);

impl Layout {
    /// Picks the layout of a running interpreter's version.
    pub fn for_version(version: PyVersion) -> Result<&'static Layout, UnsupportedVersion> {
        match version.minor_pair() {
            (3, 8) => Ok(&v3_8::LAYOUT),
            (3, 9) => Ok(&v3_9::LAYOUT),
            (3, 10) => Ok(&v3_10::LAYOUT),
            (3, 11) => Ok(&v3_11::LAYOUT),
            (3, 12) => Ok(&v3_12::LAYOUT),
            (3, 13) => Ok(&v3_13::LAYOUT),
            _ => Err(UnsupportedVersion(version)),
        }
    }

    /// Every built-in layout, oldest first.
    pub fn all() -> [&'static Layout; 6] {
        [
            &v3_8::LAYOUT,
            &v3_9::LAYOUT,
            &v3_10::LAYOUT,
            &v3_11::LAYOUT,
            &v3_12::LAYOUT,
            &v3_13::LAYOUT,
        ]
    }
}

/// What the mirrors of version `3.minor` claim, keyed like the oracle's
/// output, or `None` for a version without mirrors.
pub fn mirror_facts(minor: u8) -> Option<Vec<oracle::Fact>> {
    match minor {
        8 => Some(v3_8::mirror_facts()),
        9 => Some(v3_9::mirror_facts()),
        10 => Some(v3_10::mirror_facts()),
        11 => Some(v3_11::mirror_facts()),
        12 => Some(v3_12::mirror_facts()),
        13 => Some(v3_13::mirror_facts()),
        _ => None,
    }
    .map(|mut facts| {
        let layout = Layout::all()[usize::from(minor - 8)];
        facts.extend(layout.dict.facts(minor));
        facts
    })
}

/// `offset_of!` as the `u64` a [`Layout`] holds, usable in `const` items.
macro_rules! off {
    ($t:ty, $f:ident) => {
        ::core::mem::offset_of!($t, $f) as u64
    };
    ($t:ty, $f:ident . $g:ident, $inner:ty) => {
        (::core::mem::offset_of!($t, $f) + ::core::mem::offset_of!($inner, $g)) as u64
    };
}
pub(crate) use off;

/// Builds a `Fact::Field` from a mirror field: `field!("C.key", Mirror, field)`.
macro_rules! field {
    ($key:literal, $t:ty, $f:ident) => {
        $crate::layout::oracle::Fact::Field {
            key: $key,
            offset: ::core::mem::offset_of!($t, $f) as u64,
            size: $crate::layout::field_size(|m: &$t| &m.$f) as u64,
        }
    };
    ($key:literal, $t:ty, $f:ident . $g:ident, $inner:ty) => {
        $crate::layout::oracle::Fact::Field {
            key: $key,
            offset: (::core::mem::offset_of!($t, $f) + ::core::mem::offset_of!($inner, $g)) as u64,
            size: $crate::layout::field_size(|m: &$inner| &m.$g) as u64,
        }
    };
}
pub(crate) use field;

/// Builds a `Fact::Field` for a flexible array member mirrored as `[T; 0]`:
/// the oracle reports the size of one element.
macro_rules! flex {
    ($key:literal, $t:ty, $f:ident) => {
        $crate::layout::oracle::Fact::Field {
            key: $key,
            offset: ::core::mem::offset_of!($t, $f) as u64,
            size: $crate::layout::elem_size(|m: &$t| &m.$f) as u64,
        }
    };
    ($key:literal, $t:ty, $f:ident . $g:ident, $inner:ty) => {
        $crate::layout::oracle::Fact::Field {
            key: $key,
            offset: (::core::mem::offset_of!($t, $f) + ::core::mem::offset_of!($inner, $g)) as u64,
            size: $crate::layout::elem_size(|m: &$inner| &m.$g) as u64,
        }
    };
}
pub(crate) use flex;

/// Size of the field a projection closure returns.
pub(crate) fn field_size<T, U>(_project: impl Fn(&T) -> &U) -> usize {
    core::mem::size_of::<U>()
}

/// Size of one element of the array a projection closure returns.
pub(crate) fn elem_size<T, U, const N: usize>(_project: impl Fn(&T) -> &[U; N]) -> usize {
    core::mem::size_of::<U>()
}

/// `Fact::Const` shorthand.
pub(crate) const fn konst(key: &'static str, value: i64) -> oracle::Fact {
    oracle::Fact::Const { key, value }
}

/// `Fact::Size` shorthand.
pub(crate) const fn size(key: &'static str, size: usize) -> oracle::Fact {
    oracle::Fact::Size {
        key,
        size: size as u64,
    }
}

/// `Fact::Bits` shorthand.
pub(crate) const fn bits(key: &'static str, shift: u8, width: u8) -> oracle::Fact {
    oracle::Fact::Bits {
        key,
        shift: shift as u64,
        width: width as u64,
    }
}
