/*
 * layout-oracle: prints the real offset and size of every CPython field that
 * echion-cpython-layout reads, as compiled against one interpreter's headers.
 *
 * Build (one interpreter, see generate.py which does this for each one):
 *   gcc -DPy_BUILD_CORE -I$PREFIX/include/python3.X \
 *       -I$PREFIX/include/python3.X/internal oracle.c -o oracle
 *
 * Output, one fact a line (keys are "<C type>.<C field path>"):
 *   V <PY_VERSION_HEX>                  the headers' version
 *   F <key> <offset> <size>             a field
 *   S <key> <size>                      sizeof of a whole struct
 *   B <key> <shift> <width>             a bit field inside a 32-bit word
 *   C <key> <value>                     an enum value or macro constant
 *
 * The program only uses offsetof/sizeof and writes into a zeroed local
 * struct to find bit positions; it never links against libpython.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <frameobject.h>
#include <opcode.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if PY_VERSION_HEX < 0x03090000
#include <internal/pycore_pystate.h>
#else
#include <internal/pycore_interp.h>
#include <internal/pycore_runtime.h>
#endif
#if PY_VERSION_HEX >= 0x030b0000
#include <internal/pycore_frame.h>
#endif
#if PY_VERSION_HEX < 0x030b0000
#include <longintrepr.h>
#else
#include <internal/pycore_dict.h>
#endif

/* The GIL's state has no typedef of its own. */
typedef struct _gil_runtime_state _gil_runtime_state;

#define F(type, path)                                                         \
    printf("F %s.%s %zu %zu\n", #type, #path, offsetof(type, path),           \
           sizeof(((type *)0)->path))
#define S(type) printf("S %s %zu\n", #type, sizeof(type))
#define C(name, value) printf("C %s %lld\n", name, (long long)(value))

/* Finds where a bit field of PyASCIIObject.state lives inside its 32-bit
   word: set every bit of the field in a zeroed object, then look. */
#define B(field, width)                                                       \
    do {                                                                      \
        PyASCIIObject o;                                                      \
        unsigned int word;                                                    \
        memset(&o, 0, sizeof o);                                              \
        o.state.field = (1u << (width)) - 1;                                  \
        memcpy(&word, (char *)&o + offsetof(PyASCIIObject, state),            \
               sizeof word);                                                  \
        int shift = 0;                                                        \
        while (shift < 32 && !((word >> shift) & 1u)) shift++;                \
        printf("B PyASCIIObject.state.%s %d %d\n", #field, shift, width);     \
    } while (0)

int main(void) {
    printf("V %lu\n", (unsigned long)PY_VERSION_HEX);

    /* Object headers (Include/object.h). */
    F(PyObject, ob_type);
    F(PyVarObject, ob_size);
    F(PyTypeObject, tp_name);
    F(PyTypeObject, tp_base);

    /* Sets and weak references (Include/cpython/setobject.h,
       Include/cpython/weakrefobject.h): asyncio's task sets. */
    F(PySetObject, used);
    F(PySetObject, mask);
    F(PySetObject, table);
    F(setentry, key);
    F(setentry, hash);
    S(setentry);
    F(PyWeakReference, wr_object);
    F(PyListObject, ob_item);

    /* The GIL (Include/internal/pycore_gil.h): who took it last and how
       often it changed hands. */
    F(_gil_runtime_state, last_holder);
    F(_gil_runtime_state, switch_number);
#if PY_VERSION_HEX < 0x030c0000
    F(_PyRuntimeState, ceval.gil.last_holder);
    F(_PyRuntimeState, ceval.gil.switch_number);
#else
    F(PyInterpreterState, ceval.gil);
#endif

    /* Runtime and interpreter state. */
    F(_PyRuntimeState, interpreters.head);
#if PY_VERSION_HEX < 0x03090000
    /* Set once the interpreter's exit has run its last pending calls,
       before the atexit handlers (an attach must not queue one then). */
    F(_PyRuntimeState, ceval.pending.finishing);
#endif
#if PY_VERSION_HEX >= 0x030d0000
    F(_PyRuntimeState, debug_offsets);
    S(_Py_DebugOffsets);
#endif
    F(PyInterpreterState, next);
    F(PyInterpreterState, id);
#if PY_VERSION_HEX >= 0x030b0000
    F(PyInterpreterState, threads.head);
#else
    F(PyInterpreterState, tstate_head);
#endif

    /* Thread state (Include/cpython/pystate.h). */
    F(PyThreadState, next);
    F(PyThreadState, interp);
    F(PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030b0000
    F(PyThreadState, native_thread_id);
#endif
#if PY_VERSION_HEX >= 0x030d0000
    F(PyThreadState, current_frame);
#elif PY_VERSION_HEX >= 0x030b0000
    F(PyThreadState, cframe);
    F(_PyCFrame, current_frame);
#else
    F(PyThreadState, frame);
#endif

    /* Frames. */
#if PY_VERSION_HEX < 0x030b0000
    F(PyFrameObject, f_back);
    F(PyFrameObject, f_code);
    F(PyFrameObject, f_lasti);
    F(PyFrameObject, f_lineno);
#if PY_VERSION_HEX < 0x030a0000
    F(PyFrameObject, f_stacktop);
#else
    F(PyFrameObject, f_valuestack);
    F(PyFrameObject, f_stackdepth);
    F(PyFrameObject, f_state);
    C("FRAME_EXECUTING", FRAME_EXECUTING);
#endif
#else
#if PY_VERSION_HEX >= 0x030d0000
    F(_PyInterpreterFrame, f_executable);
    F(_PyInterpreterFrame, instr_ptr);
#else
    F(_PyInterpreterFrame, f_code);
    F(_PyInterpreterFrame, prev_instr);
#endif
    F(_PyInterpreterFrame, previous);
    F(PyFrameObject, f_frame);
    F(_PyInterpreterFrame, stacktop);
    F(_PyInterpreterFrame, owner);
    F(_PyInterpreterFrame, localsplus);
#if PY_VERSION_HEX < 0x030c0000
    F(_PyInterpreterFrame, is_entry);
#else
    C("FRAME_OWNED_BY_CSTACK", FRAME_OWNED_BY_CSTACK);
#endif
    C("FRAME_OWNED_BY_THREAD", FRAME_OWNED_BY_THREAD);
    C("FRAME_OWNED_BY_GENERATOR", FRAME_OWNED_BY_GENERATOR);
    C("FRAME_OWNED_BY_FRAME_OBJECT", FRAME_OWNED_BY_FRAME_OBJECT);
    C("FRAME_CREATED", FRAME_CREATED);
    C("FRAME_SUSPENDED", FRAME_SUSPENDED);
#if PY_VERSION_HEX >= 0x030d0000
    C("FRAME_SUSPENDED_YIELD_FROM", FRAME_SUSPENDED_YIELD_FROM);
#endif
    C("FRAME_EXECUTING", FRAME_EXECUTING);
    C("FRAME_COMPLETED", FRAME_COMPLETED);
    C("FRAME_CLEARED", FRAME_CLEARED);
#endif

    /* Code objects (Include/code.h, Include/cpython/code.h). */
    F(PyCodeObject, co_filename);
    F(PyCodeObject, co_name);
    F(PyCodeObject, co_firstlineno);
#if PY_VERSION_HEX < 0x030a0000
    F(PyCodeObject, co_lnotab);
#else
    F(PyCodeObject, co_linetable);
#endif
#if PY_VERSION_HEX < 0x030b0000
    F(PyCodeObject, co_code);
#else
    F(PyCodeObject, co_qualname);
    F(PyCodeObject, _co_firsttraceable);
    F(PyCodeObject, co_code_adaptive);
#endif

    /* Opcodes the awaited-object logic of genobject.c looks at. */
#if PY_VERSION_HEX < 0x030b0000
    C("YIELD_FROM", YIELD_FROM);
#else
    C("RESUME", RESUME);
#if PY_VERSION_HEX < 0x030c0000
    C("RESUME_QUICK", RESUME_QUICK);
#else
    C("INSTRUMENTED_RESUME", INSTRUMENTED_RESUME);
#endif
#endif

    /* Strings (Include/cpython/unicodeobject.h). */
    F(PyASCIIObject, length);
    F(PyASCIIObject, state);
    S(PyASCIIObject);
    S(PyCompactUnicodeObject);
    F(PyUnicodeObject, data);
    B(interned, 2);
    B(kind, 3);
    B(compact, 1);
    B(ascii, 1);
#if PY_VERSION_HEX < 0x030c0000
    B(ready, 1);
#endif

    /* Bytes and ints. */
    F(PyBytesObject, ob_sval);
#if PY_VERSION_HEX >= 0x030c0000
    F(PyLongObject, long_value.lv_tag);
    F(PyLongObject, long_value.ob_digit);
    C("_PyLong_NON_SIZE_BITS", _PyLong_NON_SIZE_BITS);
#else
    F(PyLongObject, ob_digit);
#endif
    C("PyLong_SHIFT", PyLong_SHIFT);
    S(digit);

    /* Generators and coroutines (genobject.h, cpython/genobject.h). */
#if PY_VERSION_HEX < 0x030b0000
    F(PyGenObject, gi_frame);
#if PY_VERSION_HEX < 0x030a0000
    F(PyGenObject, gi_running);
#endif
#else
    F(PyGenObject, gi_frame_state);
    F(PyGenObject, gi_iframe);
#endif

    /* Types, dicts and the module table (threading's names of threads).
       Before 3.11 PyDictKeysObject is private to Objects/dict-common.h. */
#if PY_VERSION_HEX >= 0x030c0000
    F(PyInterpreterState, imports.modules);
#else
    F(PyInterpreterState, modules);
#endif
    F(PyTypeObject, tp_basicsize);
    F(PyTypeObject, tp_flags);
    F(PyTypeObject, tp_dictoffset);
    F(PyDictObject, ma_used);
    F(PyDictObject, ma_keys);
    F(PyDictObject, ma_values);
#if PY_VERSION_HEX >= 0x030b0000
    F(PyHeapTypeObject, ht_cached_keys);
    C("Py_TPFLAGS_MANAGED_DICT", Py_TPFLAGS_MANAGED_DICT);
    F(PyDictKeysObject, dk_log2_index_bytes);
    F(PyDictKeysObject, dk_kind);
    F(PyDictKeysObject, dk_nentries);
    printf("F PyDictKeysObject.dk_indices %zu 1\n",
           offsetof(PyDictKeysObject, dk_indices));
    S(PyDictKeyEntry);
    S(PyDictUnicodeEntry);
    F(PyDictValues, values);
#endif
#if PY_VERSION_HEX >= 0x030d0000
    C("Py_TPFLAGS_INLINE_VALUES", Py_TPFLAGS_INLINE_VALUES);
    F(PyDictValues, valid);
#endif
    return 0;
}
