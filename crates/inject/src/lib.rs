//! Runs Python source inside a running CPython process (3.8–3.13, x86-64
//! Linux), at a point where CPython runs Python code safely, with nothing
//! but ptrace and the process's own symbols: no debugger, no helper
//! library, nothing written to its files.
//!
//! How ([`Target::inject`]): the main thread (then, if it cannot, another)
//! is stopped with `PTRACE_SEIZE`/`PTRACE_INTERRUPT`, its native stack is
//! unwound and judged ([`safepoint`]):
//!
//! - waiting in one of CPython's blocking calls that release the GIL and
//!   retry after `EINTR` (`time.sleep`, a lock or `Event`, a socket), it
//!   runs the source right there, with the GIL taken by
//!   `PyGILState_Ensure`, as CPython would run a signal handler's Python
//!   code at that point; the call then sees `EINTR` and goes on;
//! - anywhere else (running bytecode, say), it asks for a *pending call*,
//!   `Py_AddPendingCall(PyRun_SimpleString, source)`, which the main
//!   thread runs with the GIL between two bytecodes at its next check of
//!   the eval breaker;
//! - inside the pending-call machinery or a lock primitive, it is let go
//!   and looked at again a moment later.
//!
//! Either way a page is mapped in the target (one `mmap` system call,
//! single-stepped) with a [`trampoline`] that makes those calls, puts
//! every register back (vector registers too) and returns where the
//! thread was; the thread is let go at once, so the process is stopped
//! only for the microseconds of the decision and of the `mmap`
//! ([`Injection::stopped`]). The source runs in `__main__`'s namespace, as
//! `PyRun_SimpleString` runs it: it must bind nothing there and raise
//! nothing (see the `echion` command's attach entry).
//!
//! From CPython 3.14, `sys.remote_exec` (PEP 768) asks the interpreter to
//! run a file at its next safe point; [`Target::inject`] is the one place
//! that would call it for those versions instead of borrowing a thread.

#![forbid(unsafe_code)]

pub mod safepoint;
mod tracee;
pub mod trampoline;

use std::time::{Duration, Instant};

use echion_unwind::{NativeUnwinder, Registers};

pub use safepoint::Verdict;
use tracee::{Stopped, Tracee};
pub use trampoline::{Calls, Functions};

/// Why an injection failed. Each message names the problem and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// No process has that pid.
    #[error("no process has pid {0}")]
    NoProcess(u32),
    /// ptrace is not allowed.
    #[error(
        "not allowed to trace pid {0}: run echion as root or as the process's user with \
         CAP_SYS_PTRACE, or allow it with `sysctl kernel.yama.ptrace_scope=0`"
    )]
    NotPermitted(u32),
    /// Another tracer (a debugger, another echion) holds the process.
    #[error("pid {0} is already traced by another program (a debugger?)")]
    Traced(u32),
    /// The process exited while being attached to.
    #[error("the process exited during the attach")]
    Exited,
    /// A function the injection calls is not in the process.
    #[error("the process has no {0} function: is it CPython 3.8 or newer?")]
    NoSymbol(&'static str),
    /// The process's memory or map could not be read or written.
    #[error("cannot read the memory of pid {pid}: {reason}")]
    Memory {
        /// The pid.
        pid: u32,
        /// The system's reason.
        reason: String,
    },
    /// The target refused the mapping of the trampoline page.
    #[error("cannot map a page in pid {pid}: errno {errno}")]
    Map {
        /// The pid.
        pid: u32,
        /// The errno `mmap` returned.
        errno: i64,
    },
    /// No thread could be borrowed in time.
    #[error("no thread of pid {0} could be borrowed safely")]
    NoSafeThread(u32),
    /// The source does not fit the page.
    #[error("the source to run is too long ({0} bytes)")]
    TooLong(usize),
    /// This machine cannot run the trampoline.
    #[error("unsupported machine: {0}")]
    Unsupported(&'static str),
    /// Any other ptrace failure.
    #[error("ptrace on pid {pid} failed: {reason}")]
    Ptrace {
        /// The pid.
        pid: u32,
        /// The errno's description.
        reason: String,
    },
}

impl InjectError {
    pub(crate) fn from_errno(pid: u32, e: nix::errno::Errno) -> Self {
        match e {
            nix::errno::Errno::ESRCH => InjectError::Exited,
            nix::errno::Errno::EPERM => {
                if tracer_of(pid).is_some_and(|t| t != 0) {
                    InjectError::Traced(pid)
                } else {
                    InjectError::NotPermitted(pid)
                }
            }
            e => InjectError::Ptrace {
                pid,
                reason: e.desc().to_owned(),
            },
        }
    }

    pub(crate) fn from_io(pid: u32, e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => InjectError::NoProcess(pid),
            std::io::ErrorKind::PermissionDenied => InjectError::NotPermitted(pid),
            _ => InjectError::Memory {
                pid,
                reason: e.to_string(),
            },
        }
    }
}

/// Whether process `pid` is still there: its main thread is neither gone
/// nor a zombie.
pub fn alive(pid: u32) -> bool {
    tracee::thread_alive(pid, pid)
}

/// How long ago process `pid` started (its `stat` start time against
/// `/proc/uptime`), if that can be read.
pub fn age(pid: u32) -> Option<std::time::Duration> {
    // /proc gives the start in USER_HZ ticks since boot: 100 a second on
    // every Linux architecture echion ships for.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's `)`: the state, then the start time 19 fields on.
    let (_, rest) = stat.rsplit_once(')')?;
    let started: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let now: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_secs_f64(
        (now - started / TICKS_PER_SECOND).max(0.0),
    ))
}

/// The pid tracing `pid` (`TracerPid` of its status; 0 for none).
fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A process to inject into: its modules and the addresses the injection
/// needs, read before anything is stopped.
pub struct Target {
    pid: u32,
    unwinder: NativeUnwinder,
    functions: Functions,
    /// A `syscall` instruction in the C library.
    syscall_insn: u64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("pid", &self.pid)
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

/// What an injection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// How the source runs.
    pub calls: Calls,
    /// The thread borrowed.
    pub tid: u32,
    /// How long threads were stopped, all stops added up.
    pub stopped: Duration,
    /// Stops that found no safe moment before the one that did.
    pub retries: u32,
    /// The trampoline page's address in the target.
    pub page: u64,
}

const PROT_ALL: u64 = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
const MAP_ANON_PRIVATE: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;

impl Target {
    /// Reads process `pid`'s modules and finds the functions to call.
    pub fn open(pid: u32) -> Result<Self, InjectError> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(InjectError::NoProcess(pid));
        }
        let unwinder = NativeUnwinder::new(pid).map_err(|e| InjectError::from_io(pid, &e))?;
        let map = unwinder.modules();
        let find = |name: &'static str| {
            map.find_function(name)
                .map(|(a, _)| a)
                .ok_or(InjectError::NoSymbol(name))
        };
        // 3.9–3.11 have `PyInterpreterState_Get` and no `PyUnstable_`
        // functions (3.12+): their `Py_AddPendingCall` queues for the
        // asking thread's interpreter, so the main one is named.
        let public_get = map.find_function("PyInterpreterState_Get").map(|(a, _)| a);
        let unstable = map.find_function("PyUnstable_Code_New").is_some();
        let add_pending_call_to = match (public_get, unstable) {
            (Some(_), false) => Some(find("_PyEval_AddPendingCall")?),
            _ => None,
        };
        let functions = Functions {
            add_pending_call: find("Py_AddPendingCall")?,
            add_pending_call_to,
            interp_main: find("PyInterpreterState_Main")?,
            interp_get: match public_get {
                Some(a) => a,
                None => find("_PyInterpreterState_Get")?,
            },
            run_string: find("PyRun_SimpleString")?,
            ensure: find("PyGILState_Ensure")?,
            release: find("PyGILState_Release")?,
            set_interrupt: find("PyErr_SetInterrupt")?,
            is_finalizing: map
                .find_function("Py_IsFinalizing")
                .or_else(|| map.find_function("_Py_IsFinalizing"))
                .map(|(a, _)| a),
            pending_finishing: None,
        };
        if !cpu_has_xsave() {
            return Err(InjectError::Unsupported("the CPU has no xsave instruction"));
        }
        let syscall_fn = find("syscall")?;
        let mut target = Target {
            pid,
            unwinder,
            functions,
            syscall_insn: 0,
        };
        let mut code = [0u8; 64];
        read_mem(pid, syscall_fn, &mut code)?;
        let at = code
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or(InjectError::NoSymbol("syscall"))?;
        target.syscall_insn = syscall_fn + at as u64;
        Ok(target)
    }

    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where 3.8's `_PyRuntime.ceval.pending.finishing` is (an `int`): the
    /// injection then reads it, in the target, just before it calls, and
    /// asks nothing of a program that has run its last pending calls at
    /// its exit (its atexit handlers are running: `_Py_IsFinalizing()`
    /// does not say so yet, and a pending call added then crashes 3.8).
    pub fn set_pending_finishing(&mut self, addr: u64) {
        self.functions.pending_finishing = Some(addr);
    }

    /// Has `source` run in the process at its next safe point, looking for
    /// a thread that may be borrowed for at most `patience`. The source is
    /// Python without multi-line string literals (it is indented under an
    /// `if 1:`, which [`Target::neutralize`] turns off), at most
    /// [`trampoline::SOURCE_MAX`] bytes in all, and runs in `__main__`'s
    /// namespace: it should bind nothing there, and let nothing but
    /// `KeyboardInterrupt` out (which the program then gets again).
    pub fn inject(&mut self, source: &str, patience: Duration) -> Result<Injection, InjectError> {
        let mut wrapped = String::from("if 1:\n");
        for line in source.lines() {
            wrapped.push(' ');
            wrapped.push_str(line);
            wrapped.push('\n');
        }
        if wrapped.len() >= trampoline::SOURCE_MAX || wrapped.contains('\0') {
            return Err(InjectError::TooLong(source.len()));
        }
        let started = Instant::now();
        let mut stopped = Duration::ZERO;
        let mut retries = 0;
        loop {
            for tid in self.threads() {
                let mut tracee = match Tracee::stop(self.pid, tid) {
                    Ok(t) => t,
                    // A thread that ended meanwhile: the next one.
                    Err(InjectError::Exited) if tid != self.pid => continue,
                    Err(e) => return Err(e),
                };
                let verdict = self.judge(&tracee, tid == self.pid);
                let calls = match verdict {
                    Verdict::Directly => Calls::Directly,
                    Verdict::PendingCall => Calls::PendingCall,
                    Verdict::NotNow => {
                        stopped += tracee.release(None)?;
                        retries += 1;
                        continue;
                    }
                };
                let page = self.map_page(&mut tracee)?;
                let resume = trampoline::resume_of(&tracee.resume_regs(calls == Calls::Directly));
                let bytes =
                    trampoline::build(page, calls, self.functions, wrapped.as_bytes(), resume);
                if let Err(e) = tracee.write(page, &bytes) {
                    let _ = self.unmap_with(&mut tracee, page);
                    return Err(InjectError::from_io(self.pid, &e));
                }
                let mut regs = tracee.regs;
                regs.rip = page;
                // Below the red zone, 16-byte aligned as at a call site.
                regs.rsp = (regs.rsp - 4096) & !15;
                regs.orig_rax = u64::MAX;
                stopped += tracee.release(Some(regs))?;
                return Ok(Injection {
                    calls,
                    tid,
                    stopped,
                    retries,
                    page,
                });
            }
            if started.elapsed() >= patience {
                return Err(InjectError::NoSafeThread(self.pid));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The threads to try, the main thread first.
    fn threads(&self) -> Vec<u32> {
        let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        tids.sort_unstable_by_key(|&t| (t != self.pid, t));
        tids.retain(|&t| tracee::thread_stoppable(self.pid, t));
        tids
    }

    /// Judges a stopped thread by its native stack.
    fn judge(&mut self, tracee: &Tracee, main: bool) -> Verdict {
        let r = &tracee.regs;
        let stopped = tracee.stopped();
        let in_syscall = matches!(stopped, Stopped::Syscall { .. });
        if in_syscall {
            // The thread must go back to a `syscall` instruction to restart.
            let mut insn = [0u8; 2];
            if tracee.read(r.rip - 2, &mut insn).is_err() || insn != [0x0f, 0x05] {
                return Verdict::NotNow;
            }
        }
        let Some(top) = self.unwinder.stack_top(r.rsp) else {
            return Verdict::NotNow;
        };
        let len = (top.saturating_sub(r.rsp)).min(512 * 1024) as usize;
        let mut stack = vec![0u8; len];
        if tracee.read(r.rsp, &mut stack).is_err() {
            return Verdict::NotNow;
        }
        let base = r.rsp;
        let read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(base).ok_or(())? as usize;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut pcs = Vec::with_capacity(64);
        let regs = Registers {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
        };
        self.unwinder.unwind_with(regs, read_stack, &mut pcs);
        let frames: Vec<(String, String)> = pcs
            .iter()
            .take(48)
            .enumerate()
            .map(|(i, &pc)| {
                let lookup = if i == 0 { pc } else { pc.saturating_sub(1) };
                let module = self
                    .unwinder
                    .modules()
                    .module_at(lookup)
                    .map(|m| m.name().to_owned())
                    .unwrap_or_default();
                (self.unwinder.symbol(pc, i).name, module)
            })
            .collect();
        match safepoint::judge(&frames, in_syscall) {
            // Only the main thread runs the source itself: other threads
            // may belong to a subinterpreter, which PyGILState does not
            // know.
            Verdict::Directly if !main => Verdict::PendingCall,
            v => v,
        }
    }

    /// Maps the trampoline page in the target through the stopped thread.
    fn map_page(&self, tracee: &mut Tracee) -> Result<u64, InjectError> {
        let args = [
            0,
            trampoline::PAGE_SIZE as u64,
            PROT_ALL,
            MAP_ANON_PRIVATE,
            u64::MAX,
            0,
        ];
        let got = tracee.syscall(self.pid, self.syscall_insn, libc::SYS_mmap as u64, args)?;
        if (-4095..0).contains(&got) {
            return Err(InjectError::Map {
                pid: self.pid,
                errno: -got,
            });
        }
        if got & 0xfff != 0 {
            return Err(InjectError::Map {
                pid: self.pid,
                errno: 0,
            });
        }
        Ok(got as u64)
    }

    /// Unmaps `page` through the stopped thread `tracee`.
    fn unmap_with(&self, tracee: &mut Tracee, page: u64) -> Result<(), InjectError> {
        let args = [page, trampoline::PAGE_SIZE as u64, 0, 0, 0, 0];
        let got = tracee.syscall(self.pid, self.syscall_insn, libc::SYS_munmap as u64, args)?;
        if got != 0 {
            return Err(InjectError::Map {
                pid: self.pid,
                errno: -got,
            });
        }
        Ok(())
    }

    /// Whether the trampoline of `injection` has made its calls (for a
    /// pending call: the call is queued; run directly: the source ran),
    /// and the last call's result.
    pub fn done(&self, injection: &Injection) -> Option<i32> {
        if self.word(injection, trampoline::done_offset())? == 0 {
            return None;
        }
        let result = self.word(injection, trampoline::result_offset())?;
        Some(result as u32 as i32)
    }

    /// Whether the source of `injection` has run and returned (from then
    /// on the page is only used for the few instructions of a return).
    pub fn returned(&self, injection: &Injection) -> bool {
        self.word(injection, trampoline::returned_offset())
            .is_some_and(|flag| flag != 0)
    }

    /// Whether the trampoline of `injection` asked nothing of the program
    /// because its interpreter is finalizing (the program is ending).
    pub fn exiting(&self, injection: &Injection) -> bool {
        self.done(injection).is_some()
            && self
                .word(injection, trampoline::exiting_offset())
                .is_some_and(|flag| flag != 0)
    }

    /// Whether the source of `injection` was not run because the pending
    /// call came in a subinterpreter (see [`trampoline`]): it returned
    /// without running, and may be injected again.
    pub fn ran_elsewhere(&self, injection: &Injection) -> bool {
        self.returned(injection)
            && self
                .word(injection, trampoline::elsewhere_offset())
                .is_some_and(|flag| flag != 0)
    }

    /// The word at `offset` in the page of `injection`.
    fn word(&self, injection: &Injection, offset: usize) -> Option<u64> {
        let mut bytes = [0u8; 8];
        read_mem(self.pid, injection.page + offset as u64, &mut bytes).ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// Turns the source of `injection` off (its `if 1:` becomes `if 0:`,
    /// one byte, so a reader sees one or the other): it has not run, and a
    /// queued pending call may still run it later.
    pub fn neutralize(&self, injection: &Injection) -> Result<(), InjectError> {
        write_mem(
            self.pid,
            injection.page + trampoline::SOURCE as u64 + 3,
            b"0",
        )
    }

    /// Unmaps the page of `injection`, once its trampoline is done and its
    /// source has returned, if no thread still runs in it; returns how long
    /// the process was stopped. `NoSafeThread` when that is not so yet.
    pub fn unmap(&mut self, injection: &Injection) -> Result<Duration, InjectError> {
        if self.done(injection).is_none() || !self.returned(injection) {
            return Err(InjectError::NoSafeThread(self.pid));
        }
        let page = injection.page..injection.page + trampoline::PAGE_SIZE as u64;
        let main = if alive(self.pid) {
            self.pid
        } else {
            *self.threads().first().ok_or(InjectError::Exited)?
        };
        // The thread that ran the trampoline and the main thread (which ran
        // `run`) must both be out of the page: both are held meanwhile.
        let mut held = vec![Tracee::stop(self.pid, main)?];
        if injection.tid != main && tracee::thread_alive(self.pid, injection.tid) {
            if let Ok(t) = Tracee::stop(self.pid, injection.tid) {
                held.push(t);
            }
        }
        let inside = held.iter().any(|t| page.contains(&t.regs.rip));
        let result = if inside {
            Err(InjectError::NoSafeThread(self.pid))
        } else {
            self.unmap_with(&mut held[0], injection.page)
        };
        let mut stopped = Duration::ZERO;
        for t in held {
            stopped = stopped.max(t.release(None)?);
        }
        result.map(|()| stopped)
    }
}

/// Whether the CPU has `xsave` (the trampoline saves the vector registers
/// with it).
fn cpu_has_xsave() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "xsave"))
    })
}

fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), InjectError> {
    use std::os::unix::fs::FileExt;
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|f| f.read_exact_at(buf, addr))
        .map_err(|e| InjectError::from_io(pid, &e))
}

fn write_mem(pid: u32, addr: u64, bytes: &[u8]) -> Result<(), InjectError> {
    use std::os::unix::fs::FileExt;
    std::fs::File::options()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .and_then(|f| f.write_all_at(bytes, addr))
        .map_err(|e| InjectError::from_io(pid, &e))
}

#[cfg(test)]
mod age_tests {
    use super::age;

    #[test]
    fn a_process_started_now_is_younger_than_init_and_a_gone_one_has_no_age() {
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let young = age(child.id()).expect("the child's age");
        let old = age(1).expect("init's age");
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(young < std::time::Duration::from_secs(5), "{young:?}");
        assert!(old > young, "{old:?} {young:?}");
        assert!(age(u32::MAX).is_none());
    }
}
