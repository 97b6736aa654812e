//! asyncio task stacks: which tasks each event loop has, what each one is
//! suspended in, and who waits on whom.
//!
//! Once per tick (when a thread that runs an event loop is sampled) every
//! pending task is read from asyncio's own task sets, whose addresses Python
//! gave us ([`crate::Update::AsyncioRoots`]): `_scheduled_tasks` (before
//! 3.12 `_all_tasks`, a `WeakSet`, read through its `data` set of weak
//! references) and, 3.12+, `_eager_tasks`. For each task: its name (as
//! `get_name()` gives it), its loop, the task it waits on
//! (`task_fut_waiter`), and its coroutine chain (the coroutine, what it
//! awaits, through async generators' `asend` objects, down to the frame
//! that is suspended), each coroutine's one frame interned like any other
//! frame. Links that no field records (`gather`, `wait`, `as_completed`,
//! `shield`, `TaskGroup`, `wait_for`) come from the Python hooks as
//! [`crate::Update::LinkTask`].
//!
//! A thread's stacks are then one per *leaf* task of its loop (a pending
//! task that waits on no other pending task), plus the task on the CPU: the
//! thread's frames down to where the loop steps the task on the CPU (all of
//! them when none is), then for each task from the outermost waiter down
//! to the leaf a frame named after the task and the task's coroutine
//! frames; the task on the CPU shows its real frames from the thread's
//! stack instead, with whatever plain functions it is in.
//!
//! Bounded: at most [`MAX_TASKS`] tasks a tick (the rest are left out and
//! the tick counted in `tasks_capped`), coroutine chains of at most
//! [`MAX_CHAIN`], waiter chains of at most [`MAX_CHAIN`] and cut at a cycle
//! (tasks that wait on each other). Buffers are kept between ticks.

use std::collections::HashMap;

use echion_cpython_layout::views::{FrameKind, GenMark, Target, ViewError};
use echion_cpython_layout::{Addr, MemoryReader};
use echion_mojo::{FrameId, FrameSpec, StackEntry};

use crate::cache::AddrMap;

/// Most tasks read in one tick.
pub const MAX_TASKS: usize = 8192;
/// Most coroutines followed down one task, and most tasks followed up from
/// one leaf.
pub const MAX_CHAIN: usize = 128;
/// Largest set table read (slots).
const MAX_SET_SLOTS: usize = 1 << 20;
const NONE: u32 = u32::MAX;

/// Where asyncio keeps its tasks in the profiled process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsyncioRoots {
    /// The `set` of weak references behind `_scheduled_tasks.data`
    /// (`_all_tasks.data` before 3.12).
    pub scheduled: u64,
    /// `_eager_tasks` (a `set` of tasks; 3.12+), 0 if none.
    pub eager: u64,
}

/// What Python told the sampler about asyncio.
#[derive(Debug, Default)]
pub struct AsyncioKnown {
    /// The task sets, once asyncio is imported.
    pub roots: Option<AsyncioRoots>,
    /// The event loop each thread (by `threading.get_ident()`) runs.
    pub loops: AddrMap<u64, u64>,
    /// Task → the task that waits on it, where no field says so.
    pub links: AddrMap<u64, u64>,
}

impl AsyncioKnown {
    /// The loop the thread `thread_id` runs, if any.
    pub fn loop_of(&self, thread_id: u64) -> Option<u64> {
        self.roots?;
        self.loops.get(&thread_id).copied().filter(|&l| l != 0)
    }
}

/// What an object is, for following a coroutine chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    /// `_asyncio.Task` or a subclass.
    Task,
    /// A coroutine, generator or async generator.
    Generator,
    /// `async_generator_asend`: `await agen.__anext__()`.
    ASend,
    /// `weakref.ref`.
    WeakRef,
    /// `asyncio.tasks._GatheringFuture`: what `gather` returns; its
    /// `_children` are waited on by whoever waits on it.
    Gathering,
    /// `str` (a task's name).
    Str,
    /// `int` (an unnamed task's counter, 3.12+).
    Int,
    /// Anything else (a future's iterator, the set's dummy…).
    #[default]
    Other,
}

/// One pending task, as read this tick.
#[derive(Debug, Clone, Copy)]
struct Task {
    event_loop: u64,
    waiter: u64,
    /// The frame named after the task.
    name: FrameId,
    /// Whether its coroutine is executing.
    running: bool,
    /// The frame of its outermost coroutine (0 if finished).
    coro_frame: u64,
    /// Its coroutine frames in `TaskTable::frames`, outermost first.
    frames: (u32, u32),
    /// Whether its waiter is a `gather`'s future.
    gathering: bool,
    /// The task that waits on it.
    parent: u32,
    /// Whether it waits on another pending task.
    waits: bool,
}

/// Counters of the task reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Ticks that found more than [`MAX_TASKS`] tasks.
    pub capped_ticks: u64,
    /// Ticks whose task sets could not be read (stacks shown without
    /// tasks).
    pub error_ticks: u64,
}

/// Reads tasks and builds task stacks; kept in the engine between ticks.
#[derive(Debug, Default)]
pub struct TaskTable {
    kinds: AddrMap<u64, Kind>,
    /// The types met most, checked before the map.
    recent: [(u64, Kind); 8],
    names: HashMap<String, FrameId>,
    /// Names of unnamed tasks (`Task-<n>`) by counter.
    numbered: AddrMap<u64, FrameId>,
    name_buf: String,
    type_buf: String,
    /// The tick the table was read in, and whether that worked.
    read_tick: u64,
    read_ok: bool,
    tasks: Vec<Task>,
    index: AddrMap<u64, u32>,
    frames: Vec<StackEntry>,
    scratch: Vec<u64>,
    chain: Vec<u32>,
    leaves: Vec<u32>,
    /// Each task's coroutine chain as last read, kept while the task does
    /// not move (see [`Chain`]).
    chains: AddrMap<u64, u32>,
    slots: Vec<Chain>,
    free: Vec<u32>,
    links: Vec<(u64, GenMark)>,
    stats: TaskStats,
}

/// A suspended task's coroutine chain and name as read in an earlier tick:
/// reused as long as the task drives the same coroutine, waits on the same
/// future, holds the same name object and every coroutine of the chain has
/// the same [`GenMark`] (the same frame at the same instruction, in the same
/// state): one read per coroutine instead of following the chain again. A task on the CPU is never reused.
#[derive(Debug, Default)]
struct Chain {
    coro: u64,
    waiter: u64,
    links: Vec<(u64, GenMark)>,
    frames: Vec<StackEntry>,
    outer: u64,
    gathering: bool,
    /// The task's `task_name` object and the frame named after it.
    name_obj: u64,
    name: FrameId,
    seen: u64,
}

/// Turns a coroutine's frame into an interned frame (the engine's frame
/// cache and sink).
pub(crate) trait FrameInterner<R: MemoryReader + ?Sized> {
    /// The id of the frame `info`.
    fn intern(
        &mut self,
        target: &Target<'_, R>,
        info: &echion_cpython_layout::views::FrameInfo,
    ) -> Result<FrameId, ViewError>;
    /// `_co_firsttraceable` of `code`, from the cache.
    fn first_traceable(&mut self, target: &Target<'_, R>, code: Addr) -> Result<i32, ViewError>;
    /// The sink, to intern task-name frames.
    fn intern_spec(&mut self, spec: &FrameSpec<'_>) -> FrameId;
}

impl TaskTable {
    /// The counters so far.
    pub fn stats(&self) -> TaskStats {
        self.stats
    }

    /// Reads every pending task once for tick `tick` (again only on the
    /// next tick). `false` if the sets could not be read.
    pub(crate) fn read<R: MemoryReader + ?Sized, I: FrameInterner<R>>(
        &mut self,
        target: &Target<'_, R>,
        known: &mut AsyncioKnown,
        tick: u64,
        interner: &mut I,
    ) -> bool {
        if self.read_tick == tick {
            return self.read_ok;
        }
        self.read_tick = tick;
        self.read_ok = false;
        self.tasks.clear();
        self.index.clear();
        self.frames.clear();
        let Some(roots) = known.roots else {
            return false;
        };
        let capped = match self.collect(target, roots) {
            Ok(c) => c,
            Err(_) => {
                self.stats.error_ticks += 1;
                return false;
            }
        };
        if capped {
            self.stats.capped_ticks += 1;
        }
        let candidates = std::mem::take(&mut self.scratch);
        let mut unread = 0;
        for &addr in &candidates {
            // A task that cannot be read now (it finished, or changed
            // while read) is left out of this tick.
            if self.read_task(target, Addr(addr), interner, tick).is_err() {
                unread += 1;
            }
        }
        self.scratch = candidates;
        let (chains, slots, free) = (&mut self.chains, &mut self.slots, &mut self.free);
        chains.retain(|_, slot| {
            let keep = slots[*slot as usize].seen == tick;
            if !keep {
                free.push(*slot);
            }
            keep
        });
        self.link(target, known);
        if !capped && unread == 0 {
            // Links of tasks that are no longer pending go (only after a
            // tick that read every task: one unreadable for a moment keeps
            // its link).
            let index = &self.index;
            known.links.retain(|child, _| index.contains_key(child));
        }
        self.read_ok = true;
        true
    }

    /// Collects the addresses of the tasks in the sets into `scratch`;
    /// `true` if there were more than [`MAX_TASKS`].
    fn collect<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        roots: AsyncioRoots,
    ) -> Result<bool, ViewError> {
        self.scratch.clear();
        let mut capped = false;
        append_keys(target, roots.scheduled, &mut self.scratch, &mut capped)?;
        // Weak references to their tasks (dead ones point to None, whose
        // type is not a task; the set's dummy is not a weak reference).
        let mut kept = 0;
        for i in 0..self.scratch.len() {
            let Ok((ty, task)) = target.weakref(Addr(self.scratch[i])) else {
                continue;
            };
            if self.kind_of_type(target, ty) == Kind::WeakRef {
                self.scratch[kept] = task.0;
                kept += 1;
            }
        }
        self.scratch.truncate(kept);
        if roots.eager != 0 && !capped {
            append_keys(target, roots.eager, &mut self.scratch, &mut capped)?;
        }
        Ok(capped)
    }

    /// What the object at `obj` is (its type's kind, cached by type).
    fn kind<R: MemoryReader + ?Sized>(&mut self, target: &Target<'_, R>, obj: Addr) -> Kind {
        match target.ob_type(obj) {
            Ok(ty) => self.kind_of_type(target, ty),
            Err(_) => Kind::Other,
        }
    }

    /// What the objects of the type at `ty` are.
    fn kind_of_type<R: MemoryReader + ?Sized>(&mut self, target: &Target<'_, R>, ty: Addr) -> Kind {
        if ty.is_null() {
            return Kind::Other;
        }
        if let Some(&(_, k)) = self.recent.iter().find(|(t, _)| *t == ty.0) {
            return k;
        }
        if let Some(&k) = self.kinds.get(&ty.0) {
            return k;
        }
        let k = self.classify(target, ty);
        if k != Kind::Other {
            if let Some(free) = self.recent.iter_mut().find(|(t, _)| *t == 0) {
                *free = (ty.0, k);
            }
        }
        if self.kinds.len() > 4096 {
            self.kinds.clear();
        }
        self.kinds.insert(ty.0, k);
        k
    }

    fn classify<R: MemoryReader + ?Sized>(&mut self, target: &Target<'_, R>, ty: Addr) -> Kind {
        let mut t = ty;
        // A subclass of the C task has its layout: follow `tp_base` a few
        // steps.
        for depth in 0..8 {
            self.type_buf.clear();
            if target.tp_name(t, &mut self.type_buf).is_err() {
                return Kind::Other;
            }
            let kind = match self.type_buf.as_str() {
                "_asyncio.Task" => Kind::Task,
                "coroutine" | "generator" | "async_generator" if depth == 0 => Kind::Generator,
                "async_generator_asend" if depth == 0 => Kind::ASend,
                "weakref" | "weakref.ReferenceType" if depth == 0 => Kind::WeakRef,
                "_GatheringFuture" => Kind::Gathering,
                "str" if depth == 0 => Kind::Str,
                "int" if depth == 0 => Kind::Int,
                _ => Kind::Other,
            };
            if kind != Kind::Other {
                return kind;
            }
            match target.type_base(t) {
                Ok(b) if !b.is_null() => t = b,
                _ => return Kind::Other,
            }
        }
        Kind::Other
    }

    /// Reads one task (if it is a pending task) into the table.
    fn read_task<R: MemoryReader + ?Sized, I: FrameInterner<R>>(
        &mut self,
        target: &Target<'_, R>,
        addr: Addr,
        interner: &mut I,
        tick: u64,
    ) -> Result<(), ViewError> {
        if self.index.contains_key(&addr.0) {
            return Ok(());
        }
        let info = target.task(addr)?;
        if self.kind_of_type(target, info.ty) != Kind::Task {
            return Ok(());
        }
        if info.state != echion_cpython_layout::views::FutureState::Pending {
            return Ok(());
        }
        let start = self.frames.len();
        let (name, running, coro_frame, gathering) = if let Some(hit) =
            self.cached_chain(target, addr.0, &info, tick)
        {
            hit
        } else {
            let name = self.task_name(target, info.name, interner)?;
            self.links.clear();
            let gathering =
                !info.waiter.is_null() && self.kind(target, info.waiter) == Kind::Gathering;
            match self.coroutine_chain(target, info.coro, interner) {
                Ok((running, outer)) => {
                    if !running {
                        let key = (addr.0, info.coro.0, info.waiter.0);
                        self.keep_chain(key, start, outer, gathering, (info.name.0, name), tick);
                    }
                    (name, running, outer, gathering)
                }
                Err(e) => {
                    self.frames.truncate(start);
                    return Err(e);
                }
            }
        };
        let end = self.frames.len();
        let idx = self.tasks.len() as u32;
        self.tasks.push(Task {
            event_loop: info.event_loop.0,
            waiter: info.waiter.0,
            name,
            running,
            coro_frame,
            frames: (start as u32, end as u32),
            gathering,
            parent: NONE,
            waits: false,
        });
        self.index.insert(addr.0, idx);
        Ok(())
    }

    /// The frame named after a task whose `task_name` is `name`: the `str`,
    /// or for an unnamed task whose name is still its counter (an `int`,
    /// 3.12+), `Task-<n>` as `get_name()` makes it.
    fn task_name<R: MemoryReader + ?Sized, I: FrameInterner<R>>(
        &mut self,
        target: &Target<'_, R>,
        name: Addr,
        interner: &mut I,
    ) -> Result<FrameId, ViewError> {
        if name.is_null() {
            return Err(ViewError::Null("task_name"));
        }
        let counter = match self.kind(target, name) {
            Kind::Str => None,
            Kind::Int => {
                let n = target.read_int(name)?;
                let key = u64::try_from(n).map_err(|_| ViewError::Invalid("task counter"))?;
                if let Some(&id) = self.numbered.get(&key) {
                    return Ok(id);
                }
                Some(key)
            }
            _ => return Err(ViewError::WrongType),
        };
        self.name_buf.clear();
        match counter {
            Some(n) => {
                use std::fmt::Write as _;
                let _ = write!(self.name_buf, "Task-{n}");
            }
            None => {
                target.read_str(name, &mut self.name_buf)?;
                if let Some(&id) = self.names.get(self.name_buf.as_str()) {
                    return Ok(id);
                }
            }
        }
        let id = interner.intern_spec(&FrameSpec {
            filename: "",
            scope: &self.name_buf,
            line: 0,
            line_end: 0,
            column: 0,
            column_end: 0,
        });
        match counter {
            Some(n) => {
                if self.numbered.len() > 1 << 16 {
                    self.numbered.clear();
                }
                self.numbered.insert(n, id);
            }
            None => {
                if self.names.len() > 1 << 16 {
                    self.names.clear();
                }
                self.names.insert(self.name_buf.clone(), id);
            }
        }
        Ok(id)
    }

    /// The task's chain (and name) from an earlier tick, pushed onto
    /// `frames`, if it still holds (see [`Chain`]): the task's name frame,
    /// `false` (not running), its outermost frame and whether it waits on a
    /// `gather`.
    fn cached_chain<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        task: u64,
        info: &echion_cpython_layout::views::TaskInfo,
        tick: u64,
    ) -> Option<(FrameId, bool, u64, bool)> {
        let slot = *self.chains.get(&task)?;
        let c = &mut self.slots[slot as usize];
        // The name is an immutable object the task holds: the same address
        // is the same name.
        if c.coro != info.coro.0 || c.waiter != info.waiter.0 || c.name_obj != info.name.0 {
            return None;
        }
        for &(generator, mark) in &c.links {
            if target.generator_mark(Addr(generator)).ok()? != mark {
                return None;
            }
        }
        c.seen = tick;
        self.frames.extend_from_slice(&c.frames);
        Some((c.name, false, c.outer, c.gathering))
    }

    /// Keeps the chain just read (`frames[start..]`, links in `links`).
    fn keep_chain(
        &mut self,
        (task, coro, waiter): (u64, u64, u64),
        start: usize,
        outer: u64,
        gathering: bool,
        (name_obj, name): (u64, FrameId),
        tick: u64,
    ) {
        let slot = match self.chains.get(&task) {
            Some(&s) => s,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(Chain::default());
                        (self.slots.len() - 1) as u32
                    }
                };
                self.chains.insert(task, s);
                s
            }
        };
        let c = &mut self.slots[slot as usize];
        c.coro = coro;
        c.waiter = waiter;
        c.outer = outer;
        c.gathering = gathering;
        c.name_obj = name_obj;
        c.name = name;
        c.seen = tick;
        c.links.clear();
        c.links.extend_from_slice(&self.links);
        c.frames.clear();
        c.frames.extend_from_slice(&self.frames[start..]);
    }

    /// Follows a task's coroutine down to where it is suspended, pushing
    /// each coroutine's frame (outermost first). Returns whether the
    /// outermost coroutine is executing, and its frame's address.
    fn coroutine_chain<R: MemoryReader + ?Sized, I: FrameInterner<R>>(
        &mut self,
        target: &Target<'_, R>,
        coro: Addr,
        interner: &mut I,
    ) -> Result<(bool, u64), ViewError> {
        let mut obj = coro;
        let (mut running, mut outer) = (false, 0u64);
        for depth in 0..MAX_CHAIN {
            match self.kind(target, obj) {
                Kind::Generator => {}
                Kind::ASend => {
                    obj = target.asend_generator(obj)?;
                    continue;
                }
                _ => break,
            }
            let mark = target.generator_mark(obj)?;
            let gen = target.generator(obj)?;
            self.links.push((obj.0, mark));
            let Some(frame) = gen.frame else { break };
            if depth == 0 {
                running = gen.running;
                outer = frame.0;
            }
            let (mut info, _) =
                target.frame_with(frame, &mut |code| interner.first_traceable(target, code))?;
            match info.kind {
                FrameKind::Python => {}
                // A coroutine not started yet: shown at its first line.
                FrameKind::Incomplete => {
                    info.kind = FrameKind::Python;
                    info.offset = None;
                }
                FrameKind::Shim => break,
            }
            let id = interner.intern(target, &info)?;
            self.frames.push(StackEntry::Frame(id));
            match gen.awaiting {
                Some(next) if next != obj => obj = next,
                _ => break,
            }
        }
        Ok((running, outer))
    }

    /// Finds who waits on whom: a task's waiter that is a task, or the
    /// children of the `gather` it waits on; then the links the hooks
    /// posted.
    fn link<R: MemoryReader + ?Sized>(&mut self, target: &Target<'_, R>, known: &AsyncioKnown) {
        for i in 0..self.tasks.len() {
            let waiter = self.tasks[i].waiter;
            if waiter == 0 {
                continue;
            }
            if let Some(&child) = self.index.get(&waiter) {
                self.set_parent(child, i as u32);
            } else if self.tasks[i].gathering {
                self.gathered(target, Addr(waiter), i as u32);
            }
        }
        for (child, parent) in &known.links {
            let (Some(&c), Some(&p)) = (self.index.get(child), self.index.get(parent)) else {
                continue;
            };
            self.set_parent(c, p);
        }
    }

    fn set_parent(&mut self, child: u32, parent: u32) {
        if child != parent && self.tasks[child as usize].parent == NONE {
            self.tasks[child as usize].parent = parent;
            self.tasks[parent as usize].waits = true;
        }
    }

    /// Links the pending children of the `_GatheringFuture` at `gathering`
    /// (its `_children` list) to the task `parent` that waits on it.
    fn gathered<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        gathering: Addr,
        parent: u32,
    ) {
        let Ok(Some(children)) = target.instance_attr(gathering, "_children") else {
            return;
        };
        let mut found = std::mem::take(&mut self.chain);
        found.clear();
        let index = &self.index;
        let _ = target.list_items(children, MAX_TASKS, &mut |child| {
            if let Some(&c) = index.get(&child.0) {
                found.push(c);
            }
        });
        for &c in &found {
            self.set_parent(c, parent);
        }
        self.chain = found;
    }

    /// Builds the stacks of a thread that runs `event_loop` into `out`:
    /// `thread` is its own stack, outermost first, and `thread_frames` the
    /// frames' addresses in the same order. `cpu_only`: only the stack of
    /// the task on the CPU. Returns `false` (and builds nothing) when the
    /// loop has no task to show: the caller shows the thread's own stack.
    pub(crate) fn stacks(
        &mut self,
        event_loop: u64,
        thread: &[StackEntry],
        thread_frames: &[u64],
        cpu_only: bool,
        out: &mut crate::engine::StackSet,
    ) -> bool {
        if !self.read_ok {
            return false;
        }
        // The task on the CPU: its outermost coroutine's frame is on the
        // thread's stack; what is outside it is the loop's.
        let mut on_cpu = None;
        for (i, t) in self.tasks.iter().enumerate() {
            if t.event_loop == event_loop && t.running && t.coro_frame != 0 {
                if let Some(k) = thread_frames.iter().position(|&f| f == t.coro_frame) {
                    on_cpu = Some((i as u32, k));
                    break;
                }
            }
        }
        let upper = on_cpu.map_or(thread.len(), |(_, k)| k);
        self.leaves.clear();
        if let Some((r, _)) = on_cpu {
            self.leaves.push(r);
        }
        if !cpu_only {
            for (i, t) in self.tasks.iter().enumerate() {
                if t.event_loop == event_loop && !t.waits && Some(i as u32) != on_cpu.map(|o| o.0) {
                    self.leaves.push(i as u32);
                }
            }
        }
        if self.leaves.is_empty() {
            return false;
        }
        for li in 0..self.leaves.len() {
            let leaf = self.leaves[li];
            self.chain.clear();
            let mut t = leaf;
            while t != NONE && self.chain.len() < MAX_CHAIN && !self.chain.contains(&t) {
                self.chain.push(t);
                t = self.tasks[t as usize].parent;
            }
            let buf = out.open();
            buf.extend_from_slice(&thread[..upper]);
            for &ti in self.chain.iter().rev() {
                let task = &self.tasks[ti as usize];
                buf.push(StackEntry::Frame(task.name));
                match on_cpu {
                    Some((r, k)) if r == ti => buf.extend_from_slice(&thread[k..]),
                    _ => {
                        let (a, b) = task.frames;
                        buf.extend_from_slice(&self.frames[a as usize..b as usize]);
                    }
                }
            }
            out.close();
        }
        true
    }
}

/// Appends the keys of the set at `set` to `out`, up to [`MAX_TASKS`] in
/// all; `capped` says whether some were left out.
fn append_keys<R: MemoryReader + ?Sized>(
    target: &Target<'_, R>,
    set: u64,
    out: &mut Vec<u64>,
    capped: &mut bool,
) -> Result<(), ViewError> {
    target.set_keys(Addr(set), MAX_SET_SLOTS, &mut |key| {
        if out.len() >= MAX_TASKS {
            *capped = true;
            return false;
        }
        out.push(key.0);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StackSet;

    fn f(n: u32) -> StackEntry {
        StackEntry::Frame(FrameId::new(n))
    }

    /// A table as `read` leaves it: tasks with their frames (ids from
    /// `frames`), loop 1, `parent`s as given.
    fn table(tasks: &[(u32, &[u32], u32, bool, u64)]) -> TaskTable {
        let mut t = TaskTable {
            read_ok: true,
            ..TaskTable::default()
        };
        for &(name, frames, parent, running, coro_frame) in tasks {
            let start = t.frames.len() as u32;
            t.frames.extend(frames.iter().map(|&n| f(n)));
            t.tasks.push(Task {
                event_loop: 1,
                waiter: 0,
                name: FrameId::new(name),
                running,
                coro_frame,
                frames: (start, t.frames.len() as u32),
                gathering: false,
                parent,
                waits: false,
            });
        }
        for i in 0..t.tasks.len() {
            let p = t.tasks[i].parent;
            if p != NONE {
                t.tasks[p as usize].waits = true;
            }
        }
        t
    }

    fn stacks(t: &mut TaskTable, thread: &[u32], addrs: &[u64], cpu_only: bool) -> Vec<Vec<u32>> {
        let thread: Vec<_> = thread.iter().map(|&n| f(n)).collect();
        let mut set = StackSet::default();
        if !t.stacks(1, &thread, addrs, cpu_only, &mut set) {
            return Vec::new();
        }
        set.iter()
            .map(|s| {
                s.iter()
                    .map(|e| match e {
                        StackEntry::Frame(id) => id.key() as u32,
                        _ => 0,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_stack_per_leaf_under_its_waiters() {
        // Task 100 (frames 10, 11) waits on tasks 200 (20) and 300 (30).
        let mut t = table(&[
            (100, &[10, 11], NONE, false, 0),
            (200, &[20], 0, false, 0),
            (300, &[30], 0, false, 0),
        ]);
        // The thread sits in the loop's select: frames 1, 2.
        let got = stacks(&mut t, &[1, 2], &[0x1, 0x2], false);
        assert_eq!(
            got,
            [
                vec![1, 2, 100, 10, 11, 200, 20],
                vec![1, 2, 100, 10, 11, 300, 30]
            ]
        );
        // CPU mode, nothing on the CPU: the thread's own stack is shown.
        assert!(stacks(&mut t, &[1, 2], &[0x1, 0x2], true).is_empty());
    }

    #[test]
    fn the_task_on_the_cpu_shows_the_threads_frames_from_its_coroutine() {
        // Task 200 runs: its outermost coroutine's frame is at 0x3 on the
        // thread's stack (frames 1, 2 are the loop's, 3 its coroutine, 4 a
        // plain function it called).
        let mut t = table(&[
            (100, &[10], NONE, false, 0),
            (200, &[20], 0, true, 0x3),
            (300, &[30], 0, false, 0),
        ]);
        let thread = [1, 2, 3, 4];
        let addrs = [0x1, 0x2, 0x3, 0x4];
        let got = stacks(&mut t, &thread, &addrs, false);
        assert_eq!(
            got,
            [vec![1, 2, 100, 10, 200, 3, 4], vec![1, 2, 100, 10, 300, 30]]
        );
        assert_eq!(
            stacks(&mut t, &thread, &addrs, true),
            [vec![1, 2, 100, 10, 200, 3, 4]]
        );
    }

    #[test]
    fn waiting_cycles_end() {
        // 100 and 200 wait on each other, 300 waits on nothing and is
        // waited on by 200: the walk up from 300 stops at the cycle.
        let mut t = table(&[
            (100, &[10], 1, false, 0),
            (200, &[20], 0, false, 0),
            (300, &[30], 1, false, 0),
        ]);
        let got = stacks(&mut t, &[1], &[0x1], false);
        assert_eq!(got, [vec![1, 100, 10, 200, 20, 300, 30]]);
    }
}
