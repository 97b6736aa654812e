//! The runtime, its interpreters and their thread states.

use super::{get, get_addr, CycleGuard, Target, ViewError, MAX_INTERPRETERS, MAX_THREADS, SPAN};
use crate::addr::Addr;
use crate::layout::{CurrentFrame, GilLocation};
use crate::reader::{MemError, MemoryReader};

/// One `PyInterpreterState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterInfo {
    /// Its address.
    pub addr: Addr,
    /// `id` (0 for the main interpreter).
    pub id: i64,
    /// `next`.
    pub next: Addr,
    /// The first thread state (`tstate_head` / `threads.head`).
    pub threads_head: Addr,
}

/// One `PyThreadState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadInfo {
    /// Its address.
    pub addr: Addr,
    /// `next`.
    pub next: Addr,
    /// `interp`.
    pub interp: Addr,
    /// `thread_id`: the `pthread_t` (what `threading.get_ident()` returns).
    pub thread_id: u64,
    /// `native_thread_id`: the kernel thread id (3.11+; `None` before, where
    /// the field does not exist).
    pub native_thread_id: Option<u64>,
    /// The innermost frame (`PyFrameObject *` ≤ 3.10, `_PyInterpreterFrame *`
    /// 3.11+), null when the thread runs no Python code.
    pub frame: Addr,
}

/// What an interpreter's GIL says of who ran: while `switch_number` stays
/// the same between two looks, only `last_holder` can have run Python code
/// (a thread must take the GIL to run any, and taking it from another
/// thread counts one switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilInfo {
    /// Where the GIL's state is (the same for every interpreter that shares
    /// the GIL).
    pub addr: Addr,
    /// `last_holder`: the thread state that took it last.
    pub last_holder: Addr,
    /// `switch_number`.
    pub switch_number: u64,
}

impl<'r, R: MemoryReader + ?Sized> Target<'r, R> {
    /// The GIL the interpreter `interp` of the runtime at `runtime` runs
    /// under.
    pub fn gil(&self, runtime: Addr, interp: &InterpreterInfo) -> Result<GilInfo, ViewError> {
        let l = &self.layout.gil;
        let addr = match l.location {
            GilLocation::Runtime(off) => runtime.offset(off).ok_or(MemError::Overflow)?,
            GilLocation::Interp(off) => self.field_addr(interp.addr, off)?,
        };
        let end = l.last_holder.max(l.switch_number) + 8;
        let mut buf = [0u8; SPAN];
        let b = self.span(addr, end, &mut buf)?;
        Ok(GilInfo {
            addr,
            last_holder: get_addr(b, l.last_holder)?,
            switch_number: get(b, l.switch_number)?,
        })
    }

    /// The head of the interpreter list of the `_PyRuntimeState` at
    /// `runtime`.
    pub fn interpreters_head(&self, runtime: Addr) -> Result<Addr, ViewError> {
        self.field_addr(runtime, self.layout.runtime.interpreters_head)
    }

    /// Reads the interpreter state at `addr`.
    pub fn interpreter(&self, addr: Addr) -> Result<InterpreterInfo, ViewError> {
        let l = &self.layout.interp;
        // The 3.13 fields sit ~7 KiB in, so read them one by one.
        let next = self.field_addr(addr, l.next)?;
        let id = self.read_u64(addr.offset(l.id).ok_or(MemError::Overflow)?)? as i64;
        let threads_head = self.field_addr(addr, l.threads_head)?;
        if id < 0 {
            return Err(ViewError::Invalid("interpreter id"));
        }
        Ok(InterpreterInfo {
            addr,
            id,
            next,
            threads_head,
        })
    }

    /// Reads the thread state at `addr`, including where its current frame
    /// is.
    pub fn thread(&self, addr: Addr) -> Result<ThreadInfo, ViewError> {
        self.thread_knowing(addr, |_, _| None)
    }

    /// [`Target::thread`], with `known(addr, thread_id)` telling the
    /// current frame of a thread state that cannot have moved since the
    /// caller last read it (its thread has not held the GIL since): where
    /// the frame is found through the thread's `cframe` (3.11, 3.12),
    /// which lives on the thread's own stack, that read is spared.
    pub fn thread_knowing(
        &self,
        addr: Addr,
        known: impl FnOnce(Addr, u64) -> Option<Addr>,
    ) -> Result<ThreadInfo, ViewError> {
        let l = &self.layout.thread;
        let mut end = (l.next + 8).max(l.interp + 8).max(l.thread_id + 8);
        if let Some(n) = l.native_thread_id {
            end = end.max(n + 8);
        }
        end = end.max(match l.current_frame {
            CurrentFrame::Direct(off) => off + 8,
            CurrentFrame::ViaCFrame { cframe, .. } => cframe + 8,
        });
        let mut buf = [0u8; SPAN];
        let b = self.span(addr, end, &mut buf)?;
        let frame = match l.current_frame {
            CurrentFrame::Direct(off) => get_addr(b, off)?,
            CurrentFrame::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let cf = get_addr(b, cframe)?;
                if cf.is_null() {
                    Addr::NULL
                } else if let Some(frame) = known(addr, get(b, l.thread_id)?) {
                    frame
                } else {
                    self.field_addr(cf, current_frame)?
                }
            }
        };
        Ok(ThreadInfo {
            addr,
            next: get_addr(b, l.next)?,
            interp: get_addr(b, l.interp)?,
            thread_id: get(b, l.thread_id)?,
            native_thread_id: match l.native_thread_id {
                Some(off) => Some(get(b, off)?),
                None => None,
            },
            frame,
        })
    }

    /// Walks the interpreters of the `_PyRuntimeState` at `runtime`, newest
    /// first (the main interpreter is last).
    pub fn interpreters(&self, runtime: Addr) -> Interpreters<'r, R> {
        let (next, error) = match self.interpreters_head(runtime) {
            Ok(head) => (head, None),
            Err(e) => (Addr::NULL, Some(e)),
        };
        Interpreters {
            target: *self,
            next,
            error,
            guard: CycleGuard::new(next, MAX_INTERPRETERS, "interpreters"),
        }
    }

    /// Walks the thread states of an interpreter, newest first.
    pub fn threads(&self, interp: &InterpreterInfo) -> Threads<'r, R> {
        Threads {
            target: *self,
            next: interp.threads_head,
            interp: interp.addr,
            failed: false,
            guard: CycleGuard::new(interp.threads_head, MAX_THREADS, "thread states"),
        }
    }
}

/// Iterator over interpreter states; ends after the first error.
#[derive(Debug)]
pub struct Interpreters<'r, R: MemoryReader + ?Sized> {
    target: Target<'r, R>,
    next: Addr,
    error: Option<ViewError>,
    guard: CycleGuard,
}

impl<R: MemoryReader + ?Sized> Iterator for Interpreters<'_, R> {
    type Item = Result<InterpreterInfo, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.next = Addr::NULL;
            return Some(Err(e));
        }
        if self.next.is_null() {
            return None;
        }
        let info = match self.target.interpreter(self.next) {
            Ok(i) => i,
            Err(e) => {
                self.next = Addr::NULL;
                return Some(Err(e));
            }
        };
        self.next = info.next;
        if !info.next.is_null() {
            if let Err(e) = self.guard.step(info.next) {
                self.error = Some(e);
            }
        }
        Some(Ok(info))
    }
}

/// Iterator over the thread states of one interpreter; ends after the first
/// error.
#[derive(Debug)]
pub struct Threads<'r, R: MemoryReader + ?Sized> {
    target: Target<'r, R>,
    next: Addr,
    interp: Addr,
    failed: bool,
    guard: CycleGuard,
}

impl<R: MemoryReader + ?Sized> Threads<'_, R> {
    /// The next thread state, read with [`Target::thread_knowing`].
    pub fn next_knowing(
        &mut self,
        known: impl FnOnce(Addr, u64) -> Option<Addr>,
    ) -> Option<Result<ThreadInfo, ViewError>> {
        if self.failed || self.next.is_null() {
            return None;
        }
        let result = self.target.thread_knowing(self.next, known).and_then(|t| {
            // A thread state that belongs to another interpreter means the
            // list changed under us or the pointer is garbage.
            if t.interp != self.interp {
                return Err(ViewError::Invalid("thread state interp"));
            }
            if !t.next.is_null() {
                self.guard.step(t.next)?;
            }
            Ok(t)
        });
        match result {
            Ok(t) => {
                self.next = t.next;
                Some(Ok(t))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl<R: MemoryReader + ?Sized> Iterator for Threads<'_, R> {
    type Item = Result<ThreadInfo, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_knowing(|_, _| None)
    }
}
