//! Generators, coroutines and asyncio's C `Task`/`Future`.

use super::{get, get_addr, Target, ViewError, SPAN};
use crate::addr::Addr;
use crate::layout::{FrameLayout, GenLayout, ValueStack};
use crate::reader::{MemError, MemoryReader};

/// Deepest value stack accepted when looking for an awaited object.
const MAX_STACKTOP: i64 = 1 << 20;

/// A generator, coroutine or async generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenInfo {
    /// Its frame (`gi_frame` ≤ 3.10, the embedded `gi_iframe` 3.11+), or
    /// `None` once it has finished.
    pub frame: Option<Addr>,
    /// Whether it is executing right now.
    pub running: bool,
    /// What it is suspended on in an `await` / `yield from` (CPython's
    /// `_PyGen_yf`), if anything.
    pub awaiting: Option<Addr>,
}

/// `fut_state` of a future or task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutureState {
    /// `STATE_PENDING`.
    Pending,
    /// `STATE_CANCELLED`.
    Cancelled,
    /// `STATE_FINISHED`.
    Finished,
}

/// An asyncio C `Task` (`_asyncio.Task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its address.
    pub addr: Addr,
    /// Its type (`ob_type`), read with the rest: the caller checks that it
    /// is a task before trusting the other fields.
    pub ty: Addr,
    /// `task_name`: a `str`, or on 3.13 an `int` for an unnamed task (see
    /// [`Target::task_name`]).
    pub name: Addr,
    /// `task_coro`: the coroutine it drives.
    pub coro: Addr,
    /// `task_loop`: its event loop.
    pub event_loop: Addr,
    /// `task_fut_waiter`: the future it waits on (null when runnable).
    pub waiter: Addr,
    /// `task_state`.
    pub state: FutureState,
}

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// Reads the generator or coroutine at `addr`.
    pub fn generator(&self, addr: Addr) -> Result<GenInfo, ViewError> {
        let mut buf = [0u8; SPAN];
        match self.layout.gen {
            GenLayout::Object {
                gi_frame,
                gi_running,
                yield_from,
            } => {
                let end = (gi_frame + 8).max(gi_running.map_or(0, |o| o + 1));
                let b = self.span(addr, end, &mut buf)?;
                let frame = get_addr(b, gi_frame)?;
                if frame.is_null() {
                    return Ok(GenInfo {
                        frame: None,
                        running: false,
                        awaiting: None,
                    });
                }
                let FrameLayout::Object(fl) = &self.layout.frame else {
                    return Err(ViewError::Unsupported("frame model"));
                };
                let running = match (gi_running, fl.f_state) {
                    (Some(off), _) => get::<u8>(b, off)? != 0,
                    (None, Some((off, executing))) => {
                        self.read_i8(frame.offset(off).ok_or(MemError::Overflow)?)? == executing
                    }
                    (None, None) => false,
                };
                let awaiting = self.yf_object_frame(frame, yield_from)?;
                Ok(GenInfo {
                    frame: Some(frame),
                    running,
                    awaiting,
                })
            }
            GenLayout::Embedded {
                gi_frame_state,
                gi_iframe,
                states,
                resume,
            } => {
                let state = self.read_i8(addr.offset(gi_frame_state).ok_or(MemError::Overflow)?)?;
                let frame = addr.offset(gi_iframe).ok_or(MemError::Overflow)?;
                // why: the frame is live from FRAME_CREATED until completion
                // (Include/internal/pycore_frame.h, v3.11.7-v3.13.0: states
                // below FRAME_COMPLETED).
                let live = state < states.completed;
                let running = state == states.executing;
                let awaiting = if !live || state == states.created {
                    None
                } else if let Some(yf_state) = states.suspended_yield_from {
                    // why: 3.13 records "suspended in yield from" in the state
                    // itself (Objects/genobject.c v3.13.0, _PyGen_yf).
                    if state == yf_state {
                        self.stack_top(frame)?
                    } else {
                        None
                    }
                } else {
                    // why: 3.11/3.12 look at the instruction after
                    // prev_instr: RESUME with oparg >= 2 means "resumed after
                    // yield from/await" (Objects/genobject.c v3.11.7 and
                    // v3.12.1, _PyGen_yf).
                    self.yf_after_resume(frame, resume)?
                };
                Ok(GenInfo {
                    frame: live.then_some(frame),
                    running,
                    awaiting,
                })
            }
        }
    }

    fn read_i8(&self, addr: Addr) -> Result<i8, ViewError> {
        let mut b = [0u8; 1];
        self.reader.read(addr, &mut b)?;
        Ok(i8::from_ne_bytes(b))
    }

    /// `_PyGen_yf` for `PyFrameObject`s (Objects/genobject.c, v3.8.18 to
    /// v3.10.13): the next opcode after `f_lasti` is `YIELD_FROM` and the
    /// awaited object is on top of the value stack.
    fn yf_object_frame(&self, frame: Addr, yield_from: u8) -> Result<Option<Addr>, ViewError> {
        let FrameLayout::Object(l) = &self.layout.frame else {
            return Err(ViewError::Unsupported("frame model"));
        };
        let mut buf = [0u8; SPAN];
        let end = match l.stack {
            ValueStack::Top { f_stacktop } => f_stacktop + 8,
            ValueStack::Depth {
                f_valuestack,
                f_stackdepth,
            } => (f_valuestack + 8).max(f_stackdepth + 4),
        }
        .max(l.f_lasti + 4)
        .max(l.f_code + 8);
        let b = self.span(frame, end, &mut buf)?;
        let lasti: i32 = get(b, l.f_lasti)?;
        if lasti < 0 {
            return Ok(None);
        }
        let code = get_addr(b, l.f_code)?;
        let co_code_off = self
            .layout
            .code
            .co_code
            .ok_or(ViewError::Unsupported("co_code"))?;
        let bytecode = self.field_addr(code, co_code_off)?;
        let next = u64::from(lasti.unsigned_abs()) * l.lasti_unit + 2;
        let size = self.read_u64(
            bytecode
                .offset(self.layout.bytes.ob_size)
                .ok_or(MemError::Overflow)?,
        )?;
        if next >= size {
            return Ok(None);
        }
        let op = self.read_i8(
            bytecode
                .offset(self.layout.bytes.ob_sval)
                .and_then(|a| a.offset(next))
                .ok_or(MemError::Overflow)?,
        )? as u8;
        if op != yield_from {
            return Ok(None);
        }
        let top = match l.stack {
            ValueStack::Top { f_stacktop } => {
                let st = get_addr(b, f_stacktop)?;
                if st.is_null() {
                    return Ok(None);
                }
                Addr(st.0.checked_sub(8).ok_or(MemError::Overflow)?)
            }
            ValueStack::Depth {
                f_valuestack,
                f_stackdepth,
            } => {
                let depth: i32 = get(b, f_stackdepth)?;
                if depth < 1 || i64::from(depth) > MAX_STACKTOP {
                    return Ok(None);
                }
                get_addr(b, f_valuestack)?
                    .offset((depth as u64 - 1) * 8)
                    .ok_or(MemError::Overflow)?
            }
        };
        let yf = Addr(self.read_u64(top)?);
        Ok((!yf.is_null()).then_some(yf))
    }

    fn yf_after_resume(&self, frame: Addr, resume: (u8, u8)) -> Result<Option<Addr>, ViewError> {
        let FrameLayout::Interpreter(l) = &self.layout.frame else {
            return Err(ViewError::Unsupported("frame model"));
        };
        let prev = self.field_addr(frame, l.instr_ptr)?;
        let mut unit = [0u8; 2];
        self.reader
            .read(prev.offset(2).ok_or(MemError::Overflow)?, &mut unit)?;
        // A code unit is (opcode, oparg) in memory order.
        let (op, arg) = (unit[0], unit[1]);
        if (op != resume.0 && op != resume.1) || arg < 2 {
            return Ok(None);
        }
        self.stack_top(frame)
    }

    /// `localsplus[stacktop - 1]` of an interpreter frame
    /// (`_PyFrame_StackPeek`).
    fn stack_top(&self, frame: Addr) -> Result<Option<Addr>, ViewError> {
        let FrameLayout::Interpreter(l) = &self.layout.frame else {
            return Err(ViewError::Unsupported("frame model"));
        };
        let mut b = [0u8; 4];
        self.reader
            .read(frame.offset(l.stacktop).ok_or(MemError::Overflow)?, &mut b)?;
        let top = i32::from_ne_bytes(b);
        if top < 1 || i64::from(top) > MAX_STACKTOP {
            return Err(ViewError::Invalid("stacktop"));
        }
        let slot = frame
            .offset(l.localsplus)
            .and_then(|a| a.offset((top as u64 - 1) * 8))
            .ok_or(MemError::Overflow)?;
        let yf = Addr(self.read_u64(slot)?);
        Ok((!yf.is_null()).then_some(yf))
    }

    /// Reads the asyncio C task at `addr` (an instance of `_asyncio.Task`;
    /// the caller checks the type, e.g. with [`Target::type_name`]).
    pub fn task(&self, addr: Addr) -> Result<TaskInfo, ViewError> {
        let a = &self.layout.asyncio;
        let end = (a.fut_loop + 8)
            .max(a.fut_state + 4)
            .max(a.task_fut_waiter + 8)
            .max(a.task_coro + 8)
            .max(a.task_name + 8)
            .max(self.layout.object.ob_type + 8);
        let mut buf = [0u8; SPAN];
        let b = self.span(addr, end, &mut buf)?;
        Ok(TaskInfo {
            addr,
            ty: get_addr(b, self.layout.object.ob_type)?,
            name: get_addr(b, a.task_name)?,
            coro: get_addr(b, a.task_coro)?,
            event_loop: get_addr(b, a.fut_loop)?,
            waiter: get_addr(b, a.task_fut_waiter)?,
            state: future_state(get(b, a.fut_state)?)?,
        })
    }

    /// The state of the asyncio C future (or task) at `addr`.
    pub fn future_state(&self, addr: Addr) -> Result<FutureState, ViewError> {
        let mut b = [0u8; 4];
        self.reader.read(
            addr.offset(self.layout.asyncio.fut_state)
                .ok_or(MemError::Overflow)?,
            &mut b,
        )?;
        future_state(i32::from_ne_bytes(b))
    }

    /// Appends a task's name as `Task.get_name()` returns it: the `str`, or
    /// for an unnamed 3.13 task whose name is still its `int` counter,
    /// `Task-<n>` (Modules/_asynciomodule.c v3.13.0, `_asyncio_Task_get_name`).
    pub fn task_name(&self, task: &TaskInfo, out: &mut String) -> Result<(), ViewError> {
        if task.name.is_null() {
            return Err(ViewError::Null("task_name"));
        }
        let mut ty = String::new();
        self.type_name(task.name, &mut ty)?;
        match ty.as_str() {
            "str" => self.read_str(task.name, out),
            "int" => {
                let n = self.read_int(task.name)?;
                use std::fmt::Write;
                write!(out, "Task-{n}").map_err(|_| ViewError::Invalid("task name"))
            }
            _ => Err(ViewError::WrongType),
        }
    }
}

fn future_state(v: i32) -> Result<FutureState, ViewError> {
    // why: `fut_state` enum of Modules/_asynciomodule.c (all tags):
    // STATE_PENDING, STATE_CANCELLED, STATE_FINISHED.
    match v {
        0 => Ok(FutureState::Pending),
        1 => Ok(FutureState::Cancelled),
        2 => Ok(FutureState::Finished),
        _ => Err(ViewError::Invalid("future state")),
    }
}

/// Where an interpreter's asyncio keeps its tasks, as read from its module
/// table (what `echion.core.init_asyncio` is told in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioSets {
    /// The `set` of weak references behind `asyncio.tasks._scheduled_tasks`
    /// (`_all_tasks` before 3.12).
    pub scheduled: Addr,
    /// `asyncio.tasks._eager_tasks` (3.12+), null if none.
    pub eager: Addr,
    /// `asyncio.tasks._current_tasks` (loop → the task it runs), null if
    /// none.
    pub current: Addr,
}

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// The task sets of the interpreter at `interp`; `None` when it has not
    /// imported asyncio.
    pub fn asyncio_sets(&self, interp: Addr) -> Result<Option<AsyncioSets>, ViewError> {
        let Some(tasks) = self.module(interp, "asyncio.tasks")? else {
            return Ok(None);
        };
        let weak = match self.module_global(tasks, "_scheduled_tasks")? {
            Some(w) => w,
            None => match self.module_global(tasks, "_all_tasks")? {
                Some(w) => w,
                None => return Ok(None),
            },
        };
        let Some(scheduled) = self.instance_attr(weak, "data")? else {
            return Ok(None);
        };
        let eager = self
            .module_global(tasks, "_eager_tasks")?
            .unwrap_or(Addr(0));
        let current = self
            .module_global(tasks, "_current_tasks")?
            .unwrap_or(Addr(0));
        Ok(Some(AsyncioSets {
            scheduled,
            eager,
            current,
        }))
    }

    /// The `threading.get_ident()` of the thread that runs the asyncio event
    /// loop at `event_loop` (`BaseEventLoop._thread_id`, set while it runs);
    /// `None` when it does not run or keeps no such attribute (uvloop).
    pub fn loop_thread_id(&self, event_loop: Addr) -> Result<Option<u64>, ViewError> {
        let Some(id) = self.instance_attr(event_loop, "_thread_id")? else {
            return Ok(None);
        };
        let mut ty = String::new();
        self.type_name(id, &mut ty)?;
        if ty != "int" {
            return Ok(None);
        }
        let n = self.read_int(id)?;
        Ok(u64::try_from(n).ok().filter(|&n| n != 0))
    }
}

/// Where a generator is, in as few reads as possible: equal marks taken at
/// two moments mean it did not move in between (same frame, same
/// instruction, same state), so that what was read of it before still
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenMark {
    /// Its frame's address (0 once finished).
    pub frame: u64,
    /// The frame's instruction (`f_lasti` ≤ 3.10, `prev_instr`/`instr_ptr`
    /// 3.11+).
    pub at: u64,
    /// Its state (`gi_running` / `f_state` / `gi_frame_state`).
    pub state: i64,
}

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// The [`GenMark`] of the generator or coroutine at `addr`: one read
    /// from 3.11 (the frame is embedded), two before.
    pub fn generator_mark(&self, addr: Addr) -> Result<GenMark, ViewError> {
        let mut buf = [0u8; SPAN];
        match (&self.layout.gen, &self.layout.frame) {
            (
                GenLayout::Object {
                    gi_frame,
                    gi_running,
                    ..
                },
                FrameLayout::Object(fl),
            ) => {
                let end = (gi_frame + 8).max(gi_running.map_or(0, |o| o + 1));
                let b = self.span(addr, end, &mut buf)?;
                let frame = get_addr(b, *gi_frame)?;
                let mut state = match gi_running {
                    Some(o) => i64::from(get::<u8>(b, *o)?),
                    None => 0,
                };
                if frame.is_null() {
                    return Ok(GenMark {
                        frame: 0,
                        at: 0,
                        state,
                    });
                }
                let mut fb = [0u8; SPAN];
                let end = (fl.f_lasti + 4).max(fl.f_state.map_or(0, |(o, _)| o + 1));
                let f = self.span(frame, end, &mut fb)?;
                if let Some((o, _)) = fl.f_state {
                    state = i64::from(get::<i8>(f, o)?);
                }
                Ok(GenMark {
                    frame: frame.0,
                    at: u64::from(get::<i32>(f, fl.f_lasti)? as u32),
                    state,
                })
            }
            (
                GenLayout::Embedded {
                    gi_frame_state,
                    gi_iframe,
                    ..
                },
                FrameLayout::Interpreter(fl),
            ) => {
                let end = (gi_frame_state + 1).max(gi_iframe + fl.instr_ptr + 8);
                let b = self.span(addr, end, &mut buf)?;
                Ok(GenMark {
                    frame: addr.offset(*gi_iframe).ok_or(MemError::Overflow)?.0,
                    at: get_addr(b, gi_iframe + fl.instr_ptr)?.0,
                    state: i64::from(get::<i8>(b, *gi_frame_state)?),
                })
            }
            _ => Err(ViewError::Unsupported("generator model")),
        }
    }
}
