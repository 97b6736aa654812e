//! One thread of the target under ptrace: stopped, read, changed, let go.
//! Memory goes through `/proc/<pid>/mem`, which a tracer may write even
//! where the pages are read-only.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::InjectError;

/// The kernel's "restart the system call" codes, as `-rax` after a stop in
/// one: ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK.
const ERESTARTSYS: u64 = 512;
const ERESTARTNOINTR: u64 = 513;
const ERESTARTNOHAND: u64 = 514;
const ERESTART_RESTARTBLOCK: u64 = 516;
/// `restart_syscall`, which the kernel has a thread call to go on with a
/// system call that left `ERESTART_RESTARTBLOCK`.
const NR_RESTART_SYSCALL: u64 = 219;
const EINTR: u64 = 4;

/// Where a stopped thread was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Running its own code.
    User,
    /// In system call `nr`, which the stop interrupted (the kernel would
    /// restart it, `restart_block` telling how, or it returns `EINTR`).
    Syscall {
        /// The system call's number.
        nr: u64,
        /// Whether it restarts through `restart_syscall`.
        restart_block: bool,
        /// Whether it must never fail with `EINTR`.
        no_intr: bool,
        /// Whether it already fails with `EINTR` (one that is never
        /// restarted, `epoll_wait` say).
        eintr: bool,
    },
}

/// A thread of the target, seized and stopped.
pub struct Tracee {
    pid: Pid,
    mem: File,
    /// Its registers when it stopped.
    pub regs: libc::user_regs_struct,
    /// Whether `regs` were read (and are to be put back on the way out).
    regs_read: bool,
    /// A signal of the program's that arrived while the thread was held:
    /// delivered when it is let go.
    pending: Option<Signal>,
    /// When the stop began.
    since: Instant,
    attached: bool,
}

impl Tracee {
    /// Seizes thread `tid` of process `pid` and stops it.
    pub fn stop(pid: u32, tid: u32) -> Result<Self, InjectError> {
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| InjectError::from_io(pid, &e))?;
        let t = Pid::from_raw(tid as i32);
        let since = Instant::now();
        ptrace::seize(t, ptrace::Options::empty()).map_err(|e| InjectError::from_errno(pid, e))?;
        let mut tracee = Tracee {
            pid: t,
            mem,
            regs: zeroed_regs(),
            regs_read: false,
            pending: None,
            since,
            attached: true,
        };
        ptrace::interrupt(t).map_err(|e| InjectError::from_errno(pid, e))?;
        tracee.wait_stop(pid)?;
        tracee.regs = ptrace::getregs(t).map_err(|e| InjectError::from_errno(pid, e))?;
        tracee.regs_read = true;
        Ok(tracee)
    }

    /// Waits for the thread's next stop; `Some(SIGTRAP)` for a trap. A
    /// signal of the program's that stops it instead is kept for the
    /// release (the thread is stopped all the same).
    fn wait_stop(&mut self, pid: u32) -> Result<Option<Signal>, InjectError> {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceEvent(_, _, _)) => return Ok(None),
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => return Ok(Some(Signal::SIGTRAP)),
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.pending = Some(sig);
                    return Ok(None);
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    self.attached = false;
                    return Err(InjectError::Exited);
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) | Err(Errno::ESRCH) => {
                    self.attached = false;
                    return Err(InjectError::Exited);
                }
                Err(e) => return Err(InjectError::from_errno(pid, e)),
            }
        }
    }

    /// Where the thread stopped.
    pub fn stopped(&self) -> Stopped {
        let r = &self.regs;
        let code = r.rax.wrapping_neg();
        if r.orig_rax as i64 >= 0
            && matches!(
                code,
                ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK | EINTR
            )
        {
            // A system call that is never restarted (epoll_wait, say)
            // already returns EINTR when the stop interrupts it.
            Stopped::Syscall {
                nr: r.orig_rax,
                restart_block: code == ERESTART_RESTARTBLOCK,
                no_intr: code == ERESTARTNOINTR,
                eintr: code == EINTR,
            }
        } else {
            Stopped::User
        }
    }

    /// The registers that take the thread on from its stop as if nothing
    /// had happened (a system call restarts), or, with `eintr`, as if a
    /// signal handler had run (a system call fails with `EINTR`).
    pub fn resume_regs(&self, eintr: bool) -> libc::user_regs_struct {
        let mut r = self.regs;
        if let Stopped::Syscall {
            nr,
            restart_block,
            no_intr,
            eintr: already,
        } = self.stopped()
        {
            if already {
                // It returns EINTR whatever happens.
            } else if eintr && !no_intr {
                r.rax = EINTR.wrapping_neg();
            } else {
                r.rip -= 2;
                r.rax = if restart_block {
                    NR_RESTART_SYSCALL
                } else {
                    nr
                };
            }
        }
        r
    }

    /// Reads `buf.len()` bytes of the target at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.mem.read_exact_at(buf, addr)
    }

    /// Writes `bytes` into the target at `addr`.
    pub fn write(&self, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.mem.write_all_at(bytes, addr)
    }

    /// Runs one `syscall` instruction (at `insn`) in the thread with
    /// `args`, single-stepped; returns its result (negative errno on
    /// failure). The thread's registers are put back after.
    pub fn syscall(
        &mut self,
        pid: u32,
        insn: u64,
        nr: u64,
        args: [u64; 6],
    ) -> Result<i64, InjectError> {
        let mut r = self.regs;
        r.rip = insn;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) =
            (args[0], args[1], args[2], args[3], args[4], args[5]);
        ptrace::setregs(self.pid, r).map_err(|e| InjectError::from_errno(pid, e))?;
        ptrace::step(self.pid, None).map_err(|e| InjectError::from_errno(pid, e))?;
        loop {
            if self.wait_stop(pid)? == Some(Signal::SIGTRAP) {
                break;
            }
            // A signal of the program's stopped it before the step (kept
            // for the release): step on, without it.
            ptrace::step(self.pid, None).map_err(|e| InjectError::from_errno(pid, e))?;
        }
        let after = ptrace::getregs(self.pid).map_err(|e| InjectError::from_errno(pid, e))?;
        ptrace::setregs(self.pid, self.regs).map_err(|e| InjectError::from_errno(pid, e))?;
        if after.rip != insn + 2 {
            return Err(InjectError::Ptrace {
                pid,
                reason: format!("the system call step ended at {:#x}", after.rip),
            });
        }
        Ok(after.rax as i64)
    }

    /// Lets the thread go on with `regs` (its own, or a trampoline's), and
    /// returns how long it was stopped.
    pub fn release(
        mut self,
        regs: Option<libc::user_regs_struct>,
    ) -> Result<Duration, InjectError> {
        if let Some(r) = regs {
            ptrace::setregs(self.pid, r).map_err(|_| InjectError::Exited)?;
        }
        self.attached = false;
        ptrace::detach(self.pid, self.pending).map_err(|_| InjectError::Exited)?;
        Ok(self.since.elapsed())
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if self.attached {
            // An error on the way: the thread goes on as it was.
            if self.regs_read {
                let _ = ptrace::setregs(self.pid, self.regs);
            }
            let _ = ptrace::detach(self.pid, self.pending);
        }
    }
}

/// An all-zero register set (before the first `getregs`).
fn zeroed_regs() -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}

/// Whether `tid` of `pid` is a live thread (not gone, not a zombie).
pub fn thread_alive(pid: u32, tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !stat_says_dead(rest)))
        .unwrap_or(false)
}

/// Whether thread `tid` of `pid` is alive and may be stopped now: not in
/// an uninterruptible wait (`D`: a stuck network file system, a `vfork`
/// parent waiting for its child's `exec`), which `PTRACE_INTERRUPT` does
/// not end, so that the wait for its stop would last as long as it does
/// (and echion, its signals blocked meanwhile, with it).
pub fn thread_stoppable(pid: u32, tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !stat_says_dead(rest) && !rest.trim_start().starts_with('D'))
        })
        .unwrap_or(false)
}

/// Whether the fields of a `stat` line after the command's `)` say the
/// task is dead or ending: a zombie (`Z`), dead (`X`), or exiting
/// (`PF_EXITING` in its flags, the 7th field from there: its memory may
/// already be gone).
fn stat_says_dead(rest: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    state.starts_with(['Z', 'X']) || flags & PF_EXITING != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_dead_as_a_zombie_or_once_it_is_exiting() {
        // From `S`, the fields after `)`: state ppid pgrp session tty tpgid flags …
        let running = "R 1 1 1 0 -1 4194560 100 0 0 0";
        assert!(!stat_says_dead(running));
        assert!(stat_says_dead("Z 1 1 1 0 -1 4194560 100 0 0 0"));
        assert!(stat_says_dead("X 1 1 1 0 -1 4194560 100 0 0 0"));
        // PF_EXITING (0x4) in the flags: its memory may already be gone.
        assert!(stat_says_dead("R 1 1 1 0 -1 4194564 100 0 0 0"));
        assert!(thread_alive(std::process::id(), std::process::id()));
        assert!(thread_stoppable(std::process::id(), std::process::id()));
    }

    #[test]
    fn a_thread_in_an_uninterruptible_wait_is_not_stopped() {
        // A `posix_spawn` parent waits for its child's `exec` in `D`: the
        // child opens a FIFO nobody writes (a file action) before it would.
        let dir = std::env::temp_dir().join(format!("echion-dwait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("f");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let python = &echion_testkit::pythons()[0].exe;
        let code = format!(
            "import os\nos.posix_spawn('/bin/true', ['true'], {{}}, \
             file_actions=[(os.POSIX_SPAWN_OPEN, 0, {fifo:?}, os.O_RDONLY, 0)])\n",
            fifo = fifo.to_str().unwrap()
        );
        let mut child = std::process::Command::new(python)
            .arg("-c")
            .arg(&code)
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen_d = false;
        while std::time::Instant::now() < deadline && !seen_d {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            seen_d = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('D'));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let judged = thread_stoppable(pid, pid);
        // Let it go: a writer lets the child's open return, and it execs.
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo);
        let _ = child.wait();
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(seen_d, "the spawning parent never waited in D");
        assert!(!judged, "a thread in D was judged stoppable");
    }
}
