//! The code a borrowed thread runs in the target: a few calls into
//! CPython, then every register as it was, and back where the thread was.
//!
//! The thread gets there by ptrace setting its instruction and stack
//! pointers; from then on it needs nothing from us, so the process is
//! released before the calls run (a call that waits for the GIL waits with
//! nobody stopped). The page it lives in holds, in order: the code, the
//! data slots (the saved registers, the call targets, the results), the
//! `xsave` area of the floating-point and vector registers, and the Python
//! source to run.
//!
//! The code, in the page's own words:
//!
//! ```text
//! cld
//! mov eax, 0x2e7; xor edx, edx; xsave64 [XSAVE] ; x87, SSE, AVX, AVX-512, PKRU
//! ldmxcsr [MXCSR]; fninit                        ; the ABI's defaults
//! call [IS_FINALIZING]; test eax, eax; jnz 3f    ; where it has one
//! call [INTERP_MAIN]; test rax, rax; jz 3f       ; the interpreter is going
//! <calls>                                        ; see `Calls`
//! jmp 4f
//! 3: mov qword [EXITING], 1                      ; the program is ending
//! 4: mov eax, 0x2e7; xor edx, edx; xrstor64 [XSAVE]
//! mov qword [DONE], 1
//! push qword [RFLAGS]; popfq
//! mov rax, [RAX] … mov r15, [R15]                ; all but rsp
//! mov rsp, [RSP]
//! jmp [RIP]
//!
//! run(source):                                   ; what CPython calls
//! push rdi
//! call [INTERP_GET]; mov [SCRATCH], rax
//! call [INTERP_MAIN]; cmp rax, [SCRATCH]
//! jne 2f                                         ; not the main interpreter
//! mov rdi, [rsp]; call [RUN_STRING]              ; PyRun_SimpleString
//! test eax, eax; jz 1f
//! call [SET_INTERRUPT]                           ; a Ctrl-C it swallowed
//! 1: mov qword [RETURNED], 1
//! pop rdi; xor eax, eax; ret                     ; a pending call never fails
//! 2: mov qword [ELSEWHERE], 1; mov qword [RETURNED], 1
//! pop rdi; xor eax, eax; ret
//! ```
//!
//! A program whose interpreter is finalizing (or gone) is not asked for
//! anything: its pending calls are torn down with it (a `Py_AddPendingCall`
//! once the main interpreter was deleted took a lock that was no more, and
//! crashed the program), and a thread that took the GIL would be ended.
//!
//! `run` always returns 0: a pending call that returned -1 would become a
//! `SystemError` in the program. The source lets only `KeyboardInterrupt`
//! out (the program's Ctrl-C, arrived while it ran): `PyRun_SimpleString`
//! then prints it and returns -1, and `run` raises it again for the program
//! with `PyErr_SetInterrupt`. The `xsave` mask leaves out AMX tile data,
//! whose 8 KiB the area has no room for (and which CPython never uses).

/// The size of the page set: code and slots, `xsave` area, source.
pub const PAGE_SIZE: usize = 3 * 4096;
/// Where `run` starts.
const RUN: usize = 0x300;
/// Where the data slots start.
const SLOTS: usize = 0x400;
/// The `xsave` components saved: x87, SSE, AVX, the AVX-512 state, PKRU.
const XSAVE_MASK: u32 = 0x2e7;
/// Where the `xsave` area starts (64-byte aligned, one page).
const XSAVE: usize = 0x1000;
/// Where the Python source starts.
pub const SOURCE: usize = 0x2000;
/// The longest source, with its NUL.
pub const SOURCE_MAX: usize = PAGE_SIZE - SOURCE;

/// The slots, 8 bytes each from [`SLOTS`].
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
enum Slot {
    // The 16 general registers in encoding order, then rflags and rip.
    Rflags = 16,
    Rip,
    Mxcsr,
    Done,
    // Call targets.
    AddPendingCall,
    AddPendingCallTo,
    InterpMain,
    InterpGet,
    RunString,
    Ensure,
    Release,
    SetInterrupt,
    IsFinalizing,
    // An address to read: 3.8's `ceval.pending.finishing`.
    PendingFinishing,
    // Results.
    Result,
    GilState,
    Returned,
    Elsewhere,
    Exiting,
    Scratch,
    // The source's address, `run`'s address.
    SourcePtr,
    RunPtr,
}

fn slot(s: Slot) -> usize {
    SLOTS + 8 * s as usize
}

fn reg_slot(reg: u8) -> usize {
    SLOTS + 8 * reg as usize
}

/// Encoding numbers of the general registers.
const RAX: u8 = 0;
const RDX: u8 = 2;
const RSP: u8 = 4;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// What the borrowed thread calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// `Py_AddPendingCall(run, source)`: the main thread runs the source
    /// at its next check of the eval breaker, with the GIL, between two
    /// bytecodes. Any thread may ask. On 3.9–3.11, where that call queues
    /// for the interpreter the asking thread runs (a subinterpreter's
    /// queue is lost with it), the call is queued for the main interpreter
    /// itself: `_PyEval_AddPendingCall(PyInterpreterState_Main(), run,
    /// source)`.
    PendingCall,
    /// `s = PyGILState_Ensure(); run(source); PyGILState_Release(s)`: for
    /// a thread waiting in a blocking call that released the GIL, at the
    /// point where CPython would run a signal handler (it goes on as after
    /// one: the call sees `EINTR`).
    Directly,
}

/// The addresses of the CPython functions the trampoline calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Functions {
    /// `Py_AddPendingCall`.
    pub add_pending_call: u64,
    /// `_PyEval_AddPendingCall(interp, func, arg)` where it has that
    /// signature and `Py_AddPendingCall` queues for the asking thread's
    /// interpreter (3.9–3.11); `None` elsewhere.
    pub add_pending_call_to: Option<u64>,
    /// `PyInterpreterState_Main`.
    pub interp_main: u64,
    /// `PyInterpreterState_Get` (`_PyInterpreterState_Get` on 3.8): the
    /// calling thread's interpreter.
    pub interp_get: u64,
    /// `PyRun_SimpleString` (takes a `const char *`, returns an `int`: a
    /// pending call's signature).
    pub run_string: u64,
    /// `PyGILState_Ensure`.
    pub ensure: u64,
    /// `PyGILState_Release`.
    pub release: u64,
    /// `PyErr_SetInterrupt`.
    pub set_interrupt: u64,
    /// `Py_IsFinalizing` (3.13) or `_Py_IsFinalizing` (3.8–3.12), where
    /// the interpreter exports one.
    pub is_finalizing: Option<u64>,
    /// The address of 3.8's `_PyRuntime.ceval.pending.finishing` (an
    /// `int`): not 0 from the end of the program's last pending calls at
    /// its exit, before its atexit handlers, while `_Py_IsFinalizing()`
    /// still says no. A pending call added then fails, and on a thread
    /// with no thread state crashes the process.
    pub pending_finishing: Option<u64>,
}

/// Where the borrowed thread goes back to, with which registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The general registers in encoding order (rax, rcx, rdx, rbx, rsp,
    /// rbp, rsi, rdi, r8–r15).
    pub regs: [u64; 16],
    /// The flags.
    pub rflags: u64,
    /// The instruction to go on at.
    pub rip: u64,
}

/// A little x86-64 assembler: only the forms the trampoline uses, every
/// memory operand relative to the instruction pointer, code and operands in
/// one page (offsets from the page's start, so the page may be anywhere).
struct Asm {
    code: Vec<u8>,
}

impl Asm {
    fn disp(&self, end: usize, target: usize) -> [u8; 4] {
        ((target as i64 - end as i64) as i32).to_le_bytes()
    }

    /// `op` with a ModRM of `reg` (register or extension) and a rip-relative
    /// operand at page offset `target`; `rex_w` for 64-bit operands.
    fn rip_op(&mut self, rex_w: bool, opcode: &[u8], reg: u8, target: usize, imm: &[u8]) {
        let rex = 0x40 | (u8::from(rex_w) << 3) | ((reg >> 3) << 2);
        if rex != 0x40 {
            self.code.push(rex);
        }
        self.code.extend_from_slice(opcode);
        self.code.push(((reg & 7) << 3) | 0b101);
        let end = self.code.len() + 4 + imm.len();
        let d = self.disp(end, target);
        self.code.extend_from_slice(&d);
        self.code.extend_from_slice(imm);
    }

    fn load(&mut self, reg: u8, target: usize) {
        self.rip_op(true, &[0x8b], reg, target, &[]);
    }

    fn store(&mut self, target: usize, reg: u8) {
        self.rip_op(true, &[0x89], reg, target, &[]);
    }

    fn call(&mut self, target: usize) {
        self.rip_op(false, &[0xff], 2, target, &[]);
    }

    fn xsave_mask(&mut self) {
        // mov eax, XSAVE_MASK; xor edx, edx
        self.code.push(0xb8);
        self.code.extend_from_slice(&XSAVE_MASK.to_le_bytes());
        self.code.extend_from_slice(&[0x31, 0xd2]);
    }
}

/// The page's bytes for a trampoline at address `base` that makes `calls`
/// with `functions`, runs `source` (without NUL; at most
/// [`SOURCE_MAX`]` - 1` bytes) and then resumes as `resume` says.
pub fn build(
    base: u64,
    calls: Calls,
    functions: Functions,
    source: &[u8],
    resume: Resume,
) -> Vec<u8> {
    assert!(source.len() < SOURCE_MAX, "source too long");
    let mut a = Asm {
        code: Vec::with_capacity(256),
    };
    a.code.push(0xfc); // cld
    a.xsave_mask();
    a.rip_op(true, &[0x0f, 0xae], 4, XSAVE, &[]); // xsave64
    a.rip_op(false, &[0x0f, 0xae], 2, slot(Slot::Mxcsr), &[]); // ldmxcsr
    a.code.extend_from_slice(&[0xdb, 0xe3]); // fninit
                                             // Jumps to `exiting` (rel32 ends, patched below).
    let mut to_exiting = Vec::new();
    if functions.is_finalizing.is_some() {
        a.call(slot(Slot::IsFinalizing));
        a.code.extend_from_slice(&[0x85, 0xc0]); // test eax, eax
        a.code.extend_from_slice(&[0x0f, 0x85, 0, 0, 0, 0]); // jnz exiting
        to_exiting.push(a.code.len());
    }
    if functions.pending_finishing.is_some() {
        a.load(RAX, slot(Slot::PendingFinishing));
        a.code.extend_from_slice(&[0x8b, 0x00]); // mov eax, [rax]
        a.code.extend_from_slice(&[0x85, 0xc0]); // test eax, eax
        a.code.extend_from_slice(&[0x0f, 0x85, 0, 0, 0, 0]); // jnz exiting
        to_exiting.push(a.code.len());
    }
    a.call(slot(Slot::InterpMain));
    a.code.extend_from_slice(&[0x48, 0x85, 0xc0]); // test rax, rax
    a.code.extend_from_slice(&[0x0f, 0x84, 0, 0, 0, 0]); // jz exiting
    to_exiting.push(a.code.len());
    match calls {
        Calls::PendingCall if functions.add_pending_call_to.is_some() => {
            a.call(slot(Slot::InterpMain));
            a.code.extend_from_slice(&[0x48, 0x89, 0xc7]); // mov rdi, rax
            a.load(RSI, slot(Slot::RunPtr));
            a.load(RDX, slot(Slot::SourcePtr));
            a.call(slot(Slot::AddPendingCallTo));
            a.store(slot(Slot::Result), RAX);
        }
        Calls::PendingCall => {
            a.load(RDI, slot(Slot::RunPtr));
            a.load(RSI, slot(Slot::SourcePtr));
            a.call(slot(Slot::AddPendingCall));
            a.store(slot(Slot::Result), RAX);
        }
        Calls::Directly => {
            a.call(slot(Slot::Ensure));
            a.store(slot(Slot::GilState), RAX);
            a.load(RDI, slot(Slot::SourcePtr));
            a.call(slot(Slot::RunPtr));
            a.load(RDI, slot(Slot::GilState));
            a.call(slot(Slot::Release));
        }
    }
    a.code.extend_from_slice(&[0xe9, 0, 0, 0, 0]); // jmp after
    let jmp_end = a.code.len();
    let exiting = a.code.len();
    a.rip_op(true, &[0xc7], 0, slot(Slot::Exiting), &1u32.to_le_bytes());
    let after = a.code.len();
    let rel = |from: usize, to: usize| ((to as i64 - from as i64) as i32).to_le_bytes();
    for end in to_exiting {
        a.code[end - 4..end].copy_from_slice(&rel(end, exiting));
    }
    a.code[jmp_end - 4..jmp_end].copy_from_slice(&rel(jmp_end, after));
    a.xsave_mask();
    a.rip_op(true, &[0x0f, 0xae], 5, XSAVE, &[]); // xrstor64
    a.rip_op(true, &[0xc7], 0, slot(Slot::Done), &1u32.to_le_bytes()); // mov qword [DONE], 1
    a.rip_op(false, &[0xff], 6, slot(Slot::Rflags), &[]); // push qword [RFLAGS]
    a.code.push(0x9d); // popfq
    for reg in (0..16u8).filter(|&r| r != RSP) {
        a.load(reg, reg_slot(reg));
    }
    a.load(RSP, reg_slot(RSP));
    a.rip_op(false, &[0xff], 4, slot(Slot::Rip), &[]); // jmp [RIP]
    assert!(a.code.len() <= RUN, "trampoline code overflows its space");

    // run(source), called by CPython (a pending call) or by the code above.
    a.code.resize(RUN, 0xcc);
    a.code.push(0x57); // push rdi: the source, and the stack aligned for calls
    a.call(slot(Slot::InterpGet));
    a.store(slot(Slot::Scratch), RAX);
    a.call(slot(Slot::InterpMain));
    a.rip_op(true, &[0x3b], RAX, slot(Slot::Scratch), &[]); // cmp rax, [SCRATCH]
    a.code.extend_from_slice(&[0x75, 0x00]); // jne elsewhere (patched below)
    let jne_end = a.code.len();
    a.code.extend_from_slice(&[0x48, 0x8b, 0x3c, 0x24]); // mov rdi, [rsp]
    a.call(slot(Slot::RunString));
    a.code.extend_from_slice(&[0x85, 0xc0, 0x74, 0x06]); // test eax, eax; jz +6
    a.call(slot(Slot::SetInterrupt)); // 6 bytes
    a.rip_op(true, &[0xc7], 0, slot(Slot::Returned), &1u32.to_le_bytes());
    a.code.extend_from_slice(&[0x5f, 0x31, 0xc0, 0xc3]); // pop rdi; xor eax, eax; ret
                                                         // elsewhere: a subinterpreter's thread state (3.8 runs pending calls
                                                         // in whichever interpreter the main thread is in, even one whose
                                                         // importlib is being set up): the source is not run there.
    a.code[jne_end - 1] = (a.code.len() - jne_end) as u8;
    a.rip_op(true, &[0xc7], 0, slot(Slot::Elsewhere), &1u32.to_le_bytes());
    a.rip_op(true, &[0xc7], 0, slot(Slot::Returned), &1u32.to_le_bytes());
    a.code.extend_from_slice(&[0x5f, 0x31, 0xc0, 0xc3]); // pop rdi; xor eax, eax; ret
    assert!(a.code.len() <= SLOTS, "run overflows its space");

    let mut page = vec![0u8; PAGE_SIZE];
    page[..a.code.len()].copy_from_slice(&a.code);
    let mut put = |at: usize, v: u64| page[at..at + 8].copy_from_slice(&v.to_le_bytes());
    for (reg, v) in resume.regs.iter().enumerate() {
        put(reg_slot(reg as u8), *v);
    }
    put(slot(Slot::Rflags), resume.rflags);
    put(slot(Slot::Rip), resume.rip);
    put(slot(Slot::Mxcsr), 0x1f80);
    put(slot(Slot::AddPendingCall), functions.add_pending_call);
    put(
        slot(Slot::AddPendingCallTo),
        functions.add_pending_call_to.unwrap_or(0),
    );
    put(slot(Slot::InterpMain), functions.interp_main);
    put(slot(Slot::InterpGet), functions.interp_get);
    put(slot(Slot::RunString), functions.run_string);
    put(slot(Slot::Ensure), functions.ensure);
    put(slot(Slot::Release), functions.release);
    put(slot(Slot::SetInterrupt), functions.set_interrupt);
    put(
        slot(Slot::IsFinalizing),
        functions.is_finalizing.unwrap_or(0),
    );
    put(
        slot(Slot::PendingFinishing),
        functions.pending_finishing.unwrap_or(0),
    );
    put(slot(Slot::SourcePtr), base + SOURCE as u64);
    put(slot(Slot::RunPtr), base + RUN as u64);
    page[SOURCE..SOURCE + source.len()].copy_from_slice(source);
    page
}

/// The page offset of the flag the trampoline sets (to 1) once its calls
/// have returned.
pub fn done_offset() -> usize {
    slot(Slot::Done)
}

/// The page offset of `Py_AddPendingCall`'s result (an `int`, in the low
/// 32 bits; 0 for a direct run).
pub fn result_offset() -> usize {
    slot(Slot::Result)
}

/// The page offset of the flag `run` sets (to 1) once the source has run
/// (the page's code is then used only for the few instructions of its
/// return).
pub fn returned_offset() -> usize {
    slot(Slot::Returned)
}

/// The page offset of the flag `run` sets (to 1, with the returned flag)
/// when it was called in a subinterpreter and did not run the source.
pub fn elsewhere_offset() -> usize {
    slot(Slot::Elsewhere)
}

/// The page offset of the flag the trampoline sets (to 1) when it asked
/// nothing of the program because its interpreter is finalizing.
pub fn exiting_offset() -> usize {
    slot(Slot::Exiting)
}

/// The registers of the [`Resume`] that `regs` describe.
pub fn resume_of(regs: &libc::user_regs_struct) -> Resume {
    Resume {
        regs: [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
            regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ],
        rflags: regs.eflags,
        rip: regs.rip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn functions() -> Functions {
        Functions {
            add_pending_call: 0x1111,
            add_pending_call_to: None,
            interp_main: 0x6666,
            interp_get: 0x7777,
            run_string: 0x2222,
            ensure: 0x3333,
            release: 0x4444,
            set_interrupt: 0x5555,
            is_finalizing: Some(0x9999),
            pending_finishing: None,
        }
    }

    #[test]
    fn a_program_past_its_last_pending_calls_is_asked_nothing() {
        // 3.8: the flag is read where it is, after the finalizing test and
        // before any call of `calls`; set, it goes where finalizing goes.
        let mut f = functions();
        f.pending_finishing = Some(0xabc0);
        for calls in [Calls::PendingCall, Calls::Directly] {
            let page = build(0x10_0000, calls, f, b"x", resume());
            let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
            assert_eq!(word(slot(Slot::PendingFinishing)), 0xabc0);
            let load = (0..RUN - 7)
                .find(|&i| {
                    page[i..i + 3] == [0x48, 0x8b, 0x05]
                        && operand(&page, i + 7, 0) == slot(Slot::PendingFinishing)
                })
                .expect("the flag's address is loaded");
            assert_eq!(
                &page[load + 7..load + 13],
                &[0x8b, 0x00, 0x85, 0xc0, 0x0f, 0x85]
            );
            let fin = (0..RUN - 6)
                .find(|&i| {
                    page[i..i + 2] == [0xff, 0x15]
                        && operand(&page, i + 6, 0) == slot(Slot::IsFinalizing)
                })
                .unwrap();
            assert!(fin < load);
            assert_eq!(
                lands(&page, load + 17),
                lands(&page, fin + 14),
                "both go to `exiting`"
            );
            let first = match calls {
                Calls::PendingCall => Slot::AddPendingCall,
                Calls::Directly => Slot::Ensure,
            };
            let call = (0..RUN - 6)
                .find(|&i| {
                    page[i..i + 2] == [0xff, 0x15] && operand(&page, i + 6, 0) == slot(first)
                })
                .unwrap();
            assert!(load < call);
        }
        // Elsewhere nothing is read.
        let page = build(0x10_0000, Calls::PendingCall, functions(), b"x", resume());
        assert!(!(0..RUN - 7).any(|i| page[i..i + 3] == [0x48, 0x8b, 0x05]
            && operand(&page, i + 7, 0) == slot(Slot::PendingFinishing)));
    }

    #[test]
    fn encodes_rip_relative_forms() {
        let mut a = Asm { code: Vec::new() };
        a.load(RAX, 0x400);
        // 48 8b 05 <0x400 - 7>
        assert_eq!(a.code, [0x48, 0x8b, 0x05, 0xf9, 0x03, 0, 0]);
        a.code.clear();
        a.load(15, 0x400);
        // 4c 8b 3d <disp>: REX.R for r15
        assert_eq!(&a.code[..3], &[0x4c, 0x8b, 0x3d]);
        a.code.clear();
        a.call(0x400);
        assert_eq!(a.code, [0xff, 0x15, 0xfa, 0x03, 0, 0]);
        a.code.clear();
        a.rip_op(true, &[0xc7], 0, 0x400, &1u32.to_le_bytes());
        // The displacement counts from the end of the immediate.
        assert_eq!(a.code, [0x48, 0xc7, 0x05, 0xf5, 0x03, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn page_holds_the_saved_state_and_the_source() {
        let resume = Resume {
            regs: std::array::from_fn(|i| 0x100 + i as u64),
            rflags: 0x246,
            rip: 0x7777,
        };
        let page = build(0x10_0000, Calls::Directly, functions(), b"print(1)", resume);
        assert_eq!(page.len(), PAGE_SIZE);
        let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
        assert_eq!(word(reg_slot(RSP)), 0x104);
        assert_eq!(word(slot(Slot::Rip)), 0x7777);
        assert_eq!(word(slot(Slot::Ensure)), 0x3333);
        assert_eq!(word(slot(Slot::SourcePtr)), 0x10_0000 + SOURCE as u64);
        assert_eq!(&page[SOURCE..SOURCE + 9], b"print(1)\0");
        assert_eq!(word(done_offset()), 0);
        // The code starts with cld and ends with jmp [RIP].
        assert_eq!(page[0], 0xfc);
        let jmp = page[..SLOTS]
            .windows(2)
            .rposition(|w| w == [0xff, 0x25])
            .unwrap();
        let disp = i32::from_le_bytes(page[jmp + 2..jmp + 6].try_into().unwrap());
        assert_eq!(jmp as i64 + 6 + i64::from(disp), slot(Slot::Rip) as i64);
    }

    /// Registers to go back to (their values do not matter here).
    fn resume() -> Resume {
        Resume {
            regs: [0; 16],
            rflags: 0x246,
            rip: 0x7777,
        }
    }

    /// Where the rip-relative operand of the instruction ending at `end`
    /// points (its displacement is the 4 bytes before `end - imm`).
    fn operand(page: &[u8], end: usize, imm: usize) -> usize {
        let at = end - imm - 4;
        let disp = i32::from_le_bytes(page[at..at + 4].try_into().unwrap());
        (end as i64 + i64::from(disp)) as usize
    }

    #[test]
    fn run_leaves_the_source_alone_outside_the_main_interpreter() {
        let page = build(0x10_0000, Calls::PendingCall, functions(), b"x", resume());
        let code = &page[RUN..SLOTS];
        // push rdi; call [INTERP_GET]
        assert_eq!(code[0], 0x57);
        assert_eq!(&code[1..3], &[0xff, 0x15]);
        assert_eq!(operand(&page, RUN + 7, 0), slot(Slot::InterpGet));
        // The jne after the comparison with the main interpreter lands on
        // the store to ELSEWHERE, and the path it skips calls RUN_STRING.
        let jne = code.windows(2).position(|w| w[0] == 0x75).unwrap();
        assert_eq!(&code[jne - 7..jne - 4], &[0x48, 0x3b, 0x05]);
        assert_eq!(operand(&page, RUN + jne, 0), slot(Slot::Scratch));
        let target = jne + 2 + code[jne + 1] as usize;
        assert_eq!(&code[target..target + 3], &[0x48, 0xc7, 0x05]);
        assert_eq!(operand(&page, RUN + target + 11, 4), slot(Slot::Elsewhere));
        assert_eq!(&code[jne + 2..jne + 6], &[0x48, 0x8b, 0x3c, 0x24]);
        assert_eq!(operand(&page, RUN + jne + 12, 0), slot(Slot::RunString));
        // Both paths pop what they pushed and return 0.
        let rets = code
            .windows(4)
            .filter(|w| w == &[0x5f, 0x31, 0xc0, 0xc3])
            .count();
        assert_eq!(rets, 2);
    }

    /// Follows the rel32 jump whose opcode bytes are `op` and that ends
    /// `at`: where it lands.
    fn lands(page: &[u8], at: usize) -> usize {
        let disp = i32::from_le_bytes(page[at - 4..at].try_into().unwrap());
        (at as i64 + i64::from(disp)) as usize
    }

    #[test]
    fn a_finalizing_program_is_asked_nothing() {
        for calls in [Calls::PendingCall, Calls::Directly] {
            let page = build(0x10_0000, calls, functions(), b"x", resume());
            let code = &page[..RUN];
            let call_to = |s: Slot| {
                (0..RUN - 6)
                    .find(|&i| {
                        code[i..i + 2] == [0xff, 0x15] && operand(&page, i + 6, 0) == slot(s)
                    })
                    .unwrap()
            };
            // Asked first whether it is finalizing, then for the main
            // interpreter; either jumps past every call of `calls`.
            let fin = call_to(Slot::IsFinalizing);
            assert_eq!(&code[fin + 6..fin + 10], &[0x85, 0xc0, 0x0f, 0x85]);
            let main = call_to(Slot::InterpMain);
            assert!(fin < main);
            assert_eq!(&code[main + 6..main + 11], &[0x48, 0x85, 0xc0, 0x0f, 0x84]);
            let exiting = lands(&page, fin + 14);
            assert_eq!(exiting, lands(&page, main + 15));
            let first = match calls {
                Calls::PendingCall => Slot::AddPendingCall,
                Calls::Directly => Slot::Ensure,
            };
            assert!(main < call_to(first) && call_to(first) < exiting);
            // It says so, and goes on to put everything back; the calls'
            // path jumps over the saying.
            assert_eq!(&code[exiting..exiting + 3], &[0x48, 0xc7, 0x05]);
            assert_eq!(operand(&page, exiting + 11, 4), exiting_offset());
            assert_eq!(code[exiting - 5], 0xe9);
            assert_eq!(lands(&page, exiting), exiting + 11);
            assert_eq!(&code[exiting + 11..exiting + 16], &[0xb8, 0xe7, 0x02, 0, 0]);
        }
        // Without the function, only the main interpreter is asked for.
        let mut f = functions();
        f.is_finalizing = None;
        let page = build(0x10_0000, Calls::PendingCall, f, b"x", resume());
        assert!(!(0..RUN - 6).any(|i| page[i..i + 2] == [0xff, 0x15]
            && operand(&page, i + 6, 0) == slot(Slot::IsFinalizing)));
    }

    #[test]
    fn a_pending_call_goes_to_the_main_interpreter_where_asked() {
        let mut f = functions();
        let plain = build(0x10_0000, Calls::PendingCall, f, b"x", resume());
        f.add_pending_call_to = Some(0x8888);
        let to_main = build(0x10_0000, Calls::PendingCall, f, b"x", resume());
        let word = |p: &[u8], at: usize| u64::from_le_bytes(p[at..at + 8].try_into().unwrap());
        assert_eq!(word(&to_main, slot(Slot::AddPendingCallTo)), 0x8888);
        let calls = |p: &[u8], s: Slot| {
            (0..RUN - 6)
                .filter(|&i| p[i..i + 2] == [0xff, 0x15] && operand(p, i + 6, 0) == slot(s))
                .count()
        };
        assert_eq!(calls(&plain, Slot::AddPendingCall), 1);
        assert_eq!(calls(&plain, Slot::AddPendingCallTo), 0);
        assert_eq!(calls(&to_main, Slot::AddPendingCall), 0);
        assert_eq!(calls(&to_main, Slot::AddPendingCallTo), 1);
        // The main interpreter is asked for (first whether there is one),
        // and is the first argument.
        assert_eq!(calls(&to_main, Slot::InterpMain), 2);
        assert!(to_main[..RUN].windows(3).any(|w| w == [0x48, 0x89, 0xc7]));
    }
}
