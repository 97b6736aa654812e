//! asyncio task stacks: which tasks each event loop has, what each one is
//! suspended in, and who waits on whom.
//!
//! Once per tick (when a thread that runs an event loop is sampled) the
//! pending tasks are read from asyncio's own task sets, whose addresses
//! Python gave us ([`crate::Update::AsyncioRoots`]): `_scheduled_tasks`
//! (before 3.12 `_all_tasks`, a `WeakSet`, read through its `data` set of
//! weak references, each slot of which keeps its task's address in its
//! hash), 3.12+ `_eager_tasks`, and the task each loop is running
//! (`_current_tasks`). For each task: its name (as `get_name()` gives it),
//! its loop, what it waits on (`task_fut_waiter`), and its coroutine chain
//! (the coroutine, what it awaits, through async generators' `asend`
//! objects, down to the frame that is suspended), each coroutine's one
//! frame interned like any other frame. Links that no field records
//! (`wait`, `as_completed`, `shield`, `TaskGroup`, `wait_for`) come from
//! the Python hooks as [`crate::Update::LinkTask`].
//!
//! A thread's stacks are then one per *leaf* task of its loop (a pending
//! task that waits on no other pending task), plus the task on the CPU: the
//! thread's frames down to where the loop steps the task on the CPU (all of
//! them when none is), then for each task from the outermost waiter down
//! to the leaf a frame named after the task and the task's coroutine
//! frames; the task on the CPU shows its real frames from the thread's
//! stack instead, with whatever plain functions it is in.
//!
//! Bounded: a tick reads at most its *budget* of tasks: as many as can be
//! read in 0.5 % of the sampling interval ([`INTERVAL_SHARE`]), at what
//! reading a task has cost in the ticks before (measured, as reading is
//! bound by the memory it touches, which the program keeps busy), at least
//! [`MIN_BUDGET`], at most [`MAX_TASKS`]. When more are pending,
//! each tick reads the next share of the scheduled set's table (a window of
//! slots that goes round it) and every stack of a task read that way
//! carries the time of the ticks that did not read it (its [`weight`]: the
//! table's slots over the window's), so each task's time is an unbiased
//! estimate of what reading every task every tick would give, at a bounded
//! cost (in wall mode a tick whose share holds none of a loop's tasks shows
//! nothing for its thread: the weighted stacks carry that time). The task
//! on the CPU and eager tasks are read every tick, a task seen on the CPU
//! until it is read suspended, and the first tick that finds more tasks
//! than its budget reads them all once. Such ticks are
//! counted in `tasks_sampled_ticks`. A task read in an earlier tick that
//! waits on one read now (a `gather`'s parent, say) keeps its place above
//! it, from what was read of it then. Coroutine chains are at most
//! [`MAX_CHAIN`] long, waiter chains at most [`MAX_CHAIN`] and cut at a
//! cycle (tasks that wait on each other). Buffers are kept between ticks.
//!
//! [`weight`]: crate::engine::StackSet::weights

use std::collections::HashMap;

use echion_cpython_layout::views::{pointer_of_hash, FrameKind, GenMark, Target, ViewError};
use echion_cpython_layout::{Addr, MemoryReader};
use echion_mojo::{FrameId, FrameSpec, StackEntry};

use crate::cache::AddrMap;

/// Most tasks read in one tick (the largest budget).
pub const MAX_TASKS: usize = 8192;
/// The fewest tasks a tick reads when more are pending.
pub const MIN_BUDGET: usize = 8;
/// The share of the sampling interval that reading tasks may take, as a
/// divisor: 0.5 %.
pub const INTERVAL_SHARE: u64 = 200;
/// Most tasks seen on the CPU that are read every tick until read
/// suspended.
const RAN_LATELY: usize = 8;
/// Most tasks read by the tick that finds more tasks than its budget for
/// the first time (it reads them all, once).
const FIRST_SHARE_READ: usize = 1 << 16;
/// What reading one task is taken to cost before it was measured (ns).
const FIRST_COST_NS: f64 = 1_000.0;
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
    /// `_current_tasks` (a `dict`, loop → the task it runs), 0 if unknown.
    pub current: u64,
}

/// What Python told the sampler about asyncio.
#[derive(Debug, Default)]
pub struct AsyncioKnown {
    /// The task sets, once asyncio is imported.
    pub roots: Option<AsyncioRoots>,
    /// The event loop each thread (by `threading.get_ident()`) runs.
    pub loops: AddrMap<u64, u64>,
    /// Task → the task that waits on it, where no field says so, and the
    /// epoch the link came in.
    links: AddrMap<u64, (u64, u64)>,
    /// Task → how many tasks of `links` it waits on.
    waiting: AddrMap<u64, u32>,
    /// Counts the task reader's prunings: a link is kept through the one
    /// after it came in, by which time its task has been read if pending.
    epoch: u64,
}

impl AsyncioKnown {
    /// Records that the task `parent` waits on the task `child`.
    pub fn link(&mut self, child: u64, parent: u64) {
        if let Some((old, _)) = self.links.insert(child, (parent, self.epoch)) {
            self.unlink_parent(old);
        }
        *self.waiting.entry(parent).or_default() += 1;
    }

    /// Keeps the links whose child `keep` accepts, and those that came in
    /// since the last time; a new epoch begins.
    fn retain_links(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let mut gone = std::mem::take(&mut self.waiting);
        let epoch = self.epoch;
        self.links.retain(|&child, &mut (parent, born)| {
            let k = born == epoch || keep(child);
            if !k {
                if let Some(n) = gone.get_mut(&parent) {
                    *n -= 1;
                    if *n == 0 {
                        gone.remove(&parent);
                    }
                }
            }
            k
        });
        self.waiting = gone;
        self.epoch += 1;
    }

    /// Forgets the link of the task `child` (another task now at its
    /// address).
    fn unlink(&mut self, child: u64) {
        if let Some((parent, _)) = self.links.remove(&child) {
            self.unlink_parent(parent);
        }
    }

    fn unlink_parent(&mut self, parent: u64) {
        if let Some(n) = self.waiting.get_mut(&parent) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(&parent);
            }
        }
    }

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

/// One pending task, as read this tick (or, for a task that waits on one
/// read this tick, as read in an earlier one).
#[derive(Debug, Clone, Copy)]
struct Task {
    addr: u64,
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
    /// Read this tick: its stack is shown when it is a leaf. `false` for a
    /// waiter known from an earlier tick, shown only above its children.
    shown: bool,
    /// The ticks' worth of time its stack carries.
    weight: f32,
}

/// Which task waits on a task, as read from the waiting one: `task`, whose
/// waiter was `via` (the task itself, or the `gather` future it is a child
/// of) at tick `tick`.
#[derive(Debug, Clone, Copy)]
struct Parent {
    task: u64,
    via: u64,
    tick: u64,
}

/// What reading one address of a task set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A pending task, now in the table.
    Pending,
    /// A task that is done.
    Done,
    /// Not a task.
    NotATask,
}

/// Counters of the task reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Ticks that read a share of the scheduled tasks (more were pending
    /// than the tick's budget, or the table is much larger than its tasks).
    pub sampled_ticks: u64,
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
    /// Most tasks a tick reads (0: [`MAX_TASKS`]).
    budget: usize,
    /// Time a tick may spend reading tasks (0: no limit but the budget).
    target_ns: u64,
    /// What reading one task has cost lately (ns, a moving average).
    cost_ns: f64,
    /// The slot of the scheduled set's table the next window starts at.
    cursor: u64,
    /// Whether the last tick read the whole table, and from which tick on
    /// records of tasks not read since are stale (see `keep`).
    whole: bool,
    horizon: u64,
    /// Whether ticks are reading shares: the first tick that finds more
    /// tasks than its budget reads them all (once), so that the tasks that
    /// wait on others (a `gather`'s parent) are known from the start.
    sharing: bool,
    /// Tasks seen on the CPU and not yet read suspended since (at most
    /// [`RAN_LATELY`]): read every tick while shares are read, so that one
    /// that starts waiting on others (a `gather`) is known at once.
    ran_lately: Vec<u64>,
    /// Whether this tick's read stopped at its most tasks.
    cut: bool,
    /// The event loops whose tasks were read lately, with the tick.
    loops_read: Vec<(u64, u64)>,
    /// Tasks found at an address that held another task (its chain had
    /// another coroutine), this tick: their links are stale.
    reborn: Vec<u64>,
    /// Ticks a record is kept unread: two rounds of the window and a bit.
    keep: u64,
    next_prune: u64,
    /// The tick the table was read in, and whether that worked.
    read_tick: u64,
    read_ok: bool,
    tasks: Vec<Task>,
    index: AddrMap<u64, u32>,
    frames: Vec<StackEntry>,
    /// This tick's candidates: an address, the weak reference it came
    /// from (0: none) and the weight of its stack.
    scratch: Vec<(u64, u64, f32)>,
    chain: Vec<u32>,
    leaves: Vec<u32>,
    /// Each task's coroutine chain as last read, kept while the task does
    /// not move (see [`Chain`]).
    chains: AddrMap<u64, u32>,
    slots: Vec<Chain>,
    free: Vec<u32>,
    links: Vec<(u64, GenMark)>,
    /// Task → the task that waits on it, as last read from the latter.
    parents: AddrMap<u64, Parent>,
    /// Task → the last tick it was read in (when reading shares).
    last_read: AddrMap<u64, u64>,
    stats: TaskStats,
}

/// A suspended task's coroutine chain and name as read in an earlier tick:
/// reused as long as the task drives the same coroutine, waits on the same
/// future, holds the same name object and every coroutine of the chain has
/// the same [`GenMark`] (the same frame at the same instruction, in the same
/// state): one read per coroutine instead of following the chain again. A
/// task on the CPU is never reused. It is also what a waiting task shows
/// above its children in a tick that did not read it.
#[derive(Debug, Default)]
struct Chain {
    coro: u64,
    waiter: u64,
    event_loop: u64,
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

    /// Sets the time a tick may spend reading tasks for a sampling
    /// interval of `interval_ns` (see the module documentation); `None`:
    /// every tick reads up to [`MAX_TASKS`] tasks, whatever it takes (a
    /// one-off dump).
    pub fn set_interval(&mut self, interval_ns: Option<u64>) {
        self.target_ns = interval_ns.map_or(0, |i| (i / INTERVAL_SHARE).max(1));
        self.cost_ns = FIRST_COST_NS;
        self.budget = self.budget_for_cost();
    }

    fn budget_for_cost(&self) -> usize {
        if self.target_ns == 0 {
            return MAX_TASKS;
        }
        let n = (self.target_ns as f64 / self.cost_ns.max(1.0)) as usize;
        n.clamp(MIN_BUDGET, MAX_TASKS)
    }

    /// Takes in that reading `read` tasks took `spent_ns`.
    fn measured(&mut self, read: usize, spent_ns: u64) {
        if self.target_ns == 0 || read == 0 {
            return;
        }
        let cost = spent_ns as f64 / read as f64;
        self.cost_ns = 0.9 * self.cost_ns + 0.1 * cost;
        self.budget = self.budget_for_cost();
    }

    fn budget(&self) -> usize {
        if self.budget == 0 {
            MAX_TASKS
        } else {
            self.budget
        }
    }

    /// Reads the pending tasks (all, or this tick's share; see the module
    /// documentation) once for tick `tick` (again only on the next tick).
    /// `false` if the sets could not be read.
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
        let started = if self.target_ns != 0 {
            crate::clock::now_ns()
        } else {
            0
        };
        let whole = match self.collect(target, roots) {
            Ok(w) => w,
            Err(_) => {
                self.stats.error_ticks += 1;
                return false;
            }
        };
        if !whole {
            self.stats.sampled_ticks += 1;
        }
        self.whole = whole;
        // Records from before this tick count only when shares are read.
        self.horizon = if whole {
            tick
        } else {
            tick.saturating_sub(self.keep)
        };
        let candidates = std::mem::take(&mut self.scratch);
        let mut unread = 0;
        for &(addr, weak, weight) in &candidates {
            // A task that cannot be read now (it finished, or changed
            // while read) is left out of this tick. An address that holds
            // no task (a task whose class hashes otherwise) is looked up
            // through the weak reference it came from.
            let found = self.read_task(target, Addr(addr), interner, tick, weight);
            let found = match found {
                Ok(Found::NotATask) | Err(_) if weak != 0 => match target.weakref(Addr(weak)) {
                    Ok((ty, task)) if self.kind_of_type(target, ty) == Kind::WeakRef => {
                        self.read_task(target, task, interner, tick, weight)
                    }
                    _ => continue,
                },
                other => other,
            };
            if found.is_err() {
                unread += 1;
            }
        }
        let read = candidates.len();
        self.scratch = candidates;
        // A task that ran stays on the list until it is read suspended.
        let (index, tasks) = (&self.index, &self.tasks);
        self.ran_lately
            .retain(|t| index.get(t).is_some_and(|&i| tasks[i as usize].running));
        self.link(target, known, tick);
        for i in 0..self.reborn.len() {
            let addr = self.reborn[i];
            known.unlink(addr);
            self.parents.remove(&addr);
        }
        self.reborn.clear();
        self.prune(known, tick, unread == 0 && !self.cut);
        if started != 0 {
            self.measured(read, crate::clock::now_ns().saturating_sub(started));
        }
        self.read_ok = true;
        true
    }

    /// Drops the records of tasks no longer read: every tick when the
    /// whole set is read (and then the links of tasks that are no longer
    /// pending, if every task could be read), else once per `keep` ticks.
    fn prune(&mut self, known: &mut AsyncioKnown, tick: u64, all_read: bool) {
        if !self.whole && tick < self.next_prune {
            return;
        }
        self.next_prune = tick + self.keep;
        let horizon = self.horizon;
        let (chains, slots, free) = (&mut self.chains, &mut self.slots, &mut self.free);
        chains.retain(|_, slot| {
            let keep = slots[*slot as usize].seen >= horizon;
            if !keep {
                free.push(*slot);
            }
            keep
        });
        self.parents.retain(|_, p| p.tick >= horizon);
        if !self.sharing {
            // Every pending task was read this tick.
            self.last_read.clear();
            if all_read {
                let index = &self.index;
                known.retain_links(|child| index.contains_key(&child));
            }
        } else {
            self.last_read.retain(|_, &mut t| t >= horizon);
            let last_read = &self.last_read;
            known.retain_links(|child| last_read.contains_key(&child));
        }
    }

    /// Collects this tick's candidates into `scratch`: the task each loop
    /// runs (and, when shares are read, those that ran lately), the tasks of the scheduled set's table (all of it, or the next
    /// window of it when more tasks are pending than the budget), and the
    /// eager tasks. `true` if the whole table was read.
    fn collect<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        roots: AsyncioRoots,
    ) -> Result<bool, ViewError> {
        self.scratch.clear();
        let budget = self.budget() as u64;
        let scratch = &mut self.scratch;
        let recent = &mut self.ran_lately;
        if roots.current != 0 {
            // A loop being closed may change it under us: then the task on
            // the CPU is found among the others, if at all.
            let _ = target.dict_items(Addr(roots.current), &mut |_, task| {
                if !recent.contains(&task.0) {
                    if recent.len() >= RAN_LATELY {
                        recent.remove(0);
                    }
                    recent.push(task.0);
                }
                scratch.push((task.0, 0, 1.0));
                Ok(if scratch.len() < MAX_CHAIN {
                    std::ops::ControlFlow::Continue(())
                } else {
                    std::ops::ControlFlow::Break(())
                })
            });
        }
        if self.sharing {
            scratch.extend(recent.iter().map(|&t| (t, 0, 1.0)));
        }
        let shape = target.set_shape(Addr(roots.scheduled))?;
        if shape.slots > MAX_SET_SLOTS as u64 {
            return Err(ViewError::TooMany(MAX_SET_SLOTS));
        }
        // Slots read at most: a table that grew for many tasks keeps its
        // size after they are gone.
        let most_slots = if self.target_ns == 0 {
            MAX_SET_SLOTS as u64
        } else {
            (budget * 16).max(1024)
        };
        let count = if shape.used <= budget {
            self.sharing = false;
            shape.slots.min(most_slots)
        } else if !self.sharing {
            self.sharing = true;
            shape.slots
        } else {
            // About `budget` tasks' worth of slots.
            (shape.slots * budget)
                .div_ceil(shape.used.max(1))
                .min(most_slots)
        }
        .clamp(1, shape.slots);
        let whole = count == shape.slots;
        let from = if whole { 0 } else { self.cursor % shape.slots };
        self.cursor = (from + count) % shape.slots;
        self.keep = 2 * shape.slots.div_ceil(count) + 2;
        let weight = shape.slots as f32 / count as f32;
        // The one whole read that starts the shares may read more.
        let most = if whole && shape.used > budget {
            FIRST_SHARE_READ
        } else {
            MAX_TASKS
        };
        let limit = scratch.len() + most;
        let cut = &mut self.cut;
        *cut = false;
        target.set_entries(&shape, from, count, &mut |weak, hash| {
            scratch.push((pointer_of_hash(hash).0, weak.0, weight));
            *cut = scratch.len() >= limit;
            !*cut
        })?;
        if roots.eager != 0 {
            let limit = scratch.len() + MAX_TASKS;
            target.set_keys(Addr(roots.eager), MAX_SET_SLOTS, &mut |task| {
                scratch.push((task.0, 0, 1.0));
                scratch.len() < limit
            })?;
        }
        Ok(whole)
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

    /// Reads one task (if it is a pending task) into the table, its stack
    /// carrying `weight` ticks' worth of time.
    fn read_task<R: MemoryReader + ?Sized, I: FrameInterner<R>>(
        &mut self,
        target: &Target<'_, R>,
        addr: Addr,
        interner: &mut I,
        tick: u64,
        weight: f32,
    ) -> Result<Found, ViewError> {
        if self.index.contains_key(&addr.0) {
            return Ok(Found::Pending);
        }
        let info = target.task(addr)?;
        if self.kind_of_type(target, info.ty) != Kind::Task {
            return Ok(Found::NotATask);
        }
        if info.state != echion_cpython_layout::views::FutureState::Pending {
            return Ok(Found::Done);
        }
        let start = self.frames.len();
        let (name, running, coro_frame, gathering) =
            if let Some(hit) = self.cached_chain(target, addr.0, &info, tick) {
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
                            let task = (info.event_loop.0, outer, gathering);
                            self.keep_chain(key, start, task, (info.name.0, name), tick);
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
            addr: addr.0,
            event_loop: info.event_loop.0,
            waiter: info.waiter.0,
            name,
            running,
            coro_frame,
            frames: (start as u32, end as u32),
            gathering,
            parent: NONE,
            waits: false,
            shown: true,
            weight,
        });
        self.index.insert(addr.0, idx);
        if self.sharing {
            self.last_read.insert(addr.0, tick);
        }
        let event_loop = info.event_loop.0;
        if let Some(l) = self.loops_read.iter_mut().find(|(l, _)| *l == event_loop) {
            l.1 = tick;
        } else if self.loops_read.len() < MAX_CHAIN {
            self.loops_read.push((event_loop, tick));
        }
        Ok(Found::Pending)
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
        (event_loop, outer, gathering): (u64, u64, bool),
        (name_obj, name): (u64, FrameId),
        tick: u64,
    ) {
        let slot = match self.chains.get(&task) {
            Some(&s) => {
                if self.slots[s as usize].coro != coro {
                    // Another task at this address: what was known of the
                    // one before is not its.
                    self.reborn.push(task);
                }
                s
            }
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
        c.event_loop = event_loop;
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

    /// Finds who waits on whom. First what each task read now waits on: a
    /// task, or the children of the `gather` it waits on (recorded in
    /// `parents`); then, for each task read now, the task waiting on it
    /// (from `parents` while the waiting task still waits that way, else
    /// from the links the hooks posted), and so on up. A waiting task not
    /// read now is taken from what was read of it before.
    fn link<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        known: &AsyncioKnown,
        tick: u64,
    ) {
        let read = self.tasks.len();
        for i in 0..read {
            let t = self.tasks[i];
            if t.waiter == 0 {
                continue;
            }
            if t.gathering {
                // A gather of futures that are not tasks waits on no task.
                let on_tasks = self.gathered(target, &t, tick);
                self.tasks[i].gathering = on_tasks;
            } else if self.index.contains_key(&t.waiter)
                || (!self.whole && self.kind(target, Addr(t.waiter)) == Kind::Task)
            {
                self.record_parent(t.waiter, t.addr, t.waiter, tick);
            }
        }
        for i in 0..read {
            let mut child = i as u32;
            for _ in 0..MAX_CHAIN {
                if self.tasks[child as usize].parent != NONE {
                    break;
                }
                let addr = self.tasks[child as usize].addr;
                let Some(parent) = self.parent_of(addr, known) else {
                    break;
                };
                let Some(p) = self.ancestor(parent) else {
                    break;
                };
                if !self.set_parent(child, p) || self.tasks[p as usize].shown {
                    // Its own turn in this loop goes on from there.
                    break;
                }
                child = p;
            }
        }
        if !self.whole {
            // A task read now whose children were not: it waits if what it
            // waits on is pending, or the hooks linked a task to it.
            for i in 0..read {
                let t = self.tasks[i];
                if t.waits {
                    continue;
                }
                // (A task the hooks linked to it: only while it waits on
                // something.)
                let hooked = t.waiter != 0 && known.waiting.contains_key(&t.addr);
                let waits = hooked
                    || (t.waiter != 0
                        && (t.gathering || self.kind(target, Addr(t.waiter)) == Kind::Task)
                        && target.future_state(Addr(t.waiter)).ok()
                            == Some(echion_cpython_layout::views::FutureState::Pending));
                self.tasks[i].waits = waits;
            }
        }
    }

    /// Records that `parent` waits on `child` (through `via`), the first
    /// such record of a tick winning.
    fn record_parent(&mut self, child: u64, parent: u64, via: u64, tick: u64) {
        let p = Parent {
            task: parent,
            via,
            tick,
        };
        match self.parents.get_mut(&child) {
            Some(old) if old.tick == tick => {}
            Some(old) => *old = p,
            None => {
                self.parents.insert(child, p);
            }
        }
    }

    /// The task that waits on the task at `child`, if any.
    fn parent_of(&self, child: u64, known: &AsyncioKnown) -> Option<u64> {
        if let Some(p) = self.parents.get(&child).filter(|p| p.tick >= self.horizon) {
            // It still waits that way.
            let via = match self.index.get(&p.task) {
                Some(&i) => Some(self.tasks[i as usize].waiter),
                None => self
                    .chains
                    .get(&p.task)
                    .map(|&s| &self.slots[s as usize])
                    .filter(|c| c.seen >= self.horizon)
                    .map(|c| c.waiter),
            };
            if via == Some(p.via) {
                return Some(p.task);
            }
        }
        known.links.get(&child).map(|&(parent, _)| parent)
    }

    /// The index of the task at `task` in this tick's table: read now, or
    /// added from its chain as read in an earlier tick (not shown on its
    /// own).
    fn ancestor(&mut self, task: u64) -> Option<u32> {
        if let Some(&i) = self.index.get(&task) {
            return Some(i);
        }
        let &slot = self.chains.get(&task)?;
        let c = &self.slots[slot as usize];
        if c.seen < self.horizon {
            return None;
        }
        let start = self.frames.len() as u32;
        self.frames.extend_from_slice(&c.frames);
        let idx = self.tasks.len() as u32;
        self.tasks.push(Task {
            addr: task,
            event_loop: c.event_loop,
            waiter: c.waiter,
            name: c.name,
            running: false,
            coro_frame: c.outer,
            frames: (start, self.frames.len() as u32),
            gathering: c.gathering,
            parent: NONE,
            waits: true,
            shown: false,
            weight: 0.0,
        });
        self.index.insert(task, idx);
        Some(idx)
    }

    /// `true` if `child` had no parent and now has `parent`.
    fn set_parent(&mut self, child: u32, parent: u32) -> bool {
        if child != parent && self.tasks[child as usize].parent == NONE {
            self.tasks[child as usize].parent = parent;
            self.tasks[parent as usize].waits = true;
            true
        } else {
            false
        }
    }

    /// Records the children of the `_GatheringFuture` that the task `t`
    /// waits on (its `_children` list) as waited on by `t`; `true` if one
    /// of them is a pending task.
    fn gathered<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        t: &Task,
        tick: u64,
    ) -> bool {
        let Ok(Some(children)) = target.instance_attr(Addr(t.waiter), "_children") else {
            return false;
        };
        let mut found = std::mem::take(&mut self.scratch);
        let start = found.len();
        let _ = target.list_items(children, MAX_SET_SLOTS, &mut |child| {
            found.push((child.0, 0, 0.0));
        });
        let mut on_tasks = false;
        for &(child, _, _) in &found[start..] {
            self.record_parent(child, t.addr, t.waiter, tick);
            if !on_tasks {
                on_tasks = self.index.contains_key(&child)
                    || (self.kind(target, Addr(child)) == Kind::Task
                        && target.future_state(Addr(child)).ok()
                            == Some(echion_cpython_layout::views::FutureState::Pending));
            }
        }
        found.truncate(start);
        self.scratch = found;
        on_tasks
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
                if t.event_loop == event_loop
                    && t.shown
                    && !t.waits
                    && Some(i as u32) != on_cpu.map(|o| o.0)
                {
                    self.leaves.push(i as u32);
                }
            }
        }
        if self.leaves.is_empty() {
            // While shares are read, a tick whose share held none of this
            // loop's tasks shows nothing for the thread: its time is carried
            // by the weighted stacks of its tasks in the other ticks.
            return !cpu_only
                && self.sharing
                && self
                    .loops_read
                    .iter()
                    .any(|&(l, t)| l == event_loop && t >= self.horizon);
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
            // The task on the CPU is read every tick.
            let weight = match on_cpu {
                Some((r, _)) if r == leaf => 1.0,
                _ => self.tasks[leaf as usize].weight,
            };
            out.close_weighted(weight);
        }
        true
    }
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
                addr: u64::from(name),
                shown: true,
                weight: 1.0,
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
    fn a_share_of_tasks_carries_its_weight_and_waiters_read_before_show_only_above() {
        // 200 and 300 were read in this tick's share (weight 4), 100 (which
        // waits on both) was read in an earlier tick: it shows above them
        // and has no stack of its own; 400 is on the CPU, whatever the
        // share, with weight 1.
        let mut t = table(&[
            (100, &[10], NONE, false, 0),
            (200, &[20], 0, false, 0),
            (300, &[30], 0, false, 0),
            (400, &[40], NONE, true, 0x3),
        ]);
        t.tasks[0].shown = false;
        for i in 1..3 {
            t.tasks[i].weight = 4.0;
        }
        t.tasks[3].weight = 4.0;
        let thread: Vec<_> = [1, 2, 3].iter().map(|&n| f(n)).collect();
        let mut set = StackSet::default();
        assert!(t.stacks(1, &thread, &[0x1, 0x2, 0x3], false, &mut set));
        assert_eq!(set.len(), 3);
        assert_eq!(set.weights(), [1.0, 4.0, 4.0]);
        let leaves: Vec<_> = set
            .iter()
            .map(|s| match s.last() {
                Some(StackEntry::Frame(id)) => id.key(),
                _ => 0,
            })
            .collect();
        assert_eq!(leaves, [3, 20, 30]);
    }

    #[test]
    fn a_budget_follows_the_measured_cost_of_a_task() {
        let mut t = TaskTable::default();
        t.set_interval(Some(10_000_000));
        // 0.5 % of 10 ms at the first guess of 1 µs a task.
        assert_eq!(t.budget(), 50);
        for _ in 0..100 {
            t.measured(10, 1_000);
        }
        // 100 ns a task: 500 tasks fit.
        assert!((450..=550).contains(&t.budget()), "{}", t.budget());
        for _ in 0..100 {
            t.measured(10, 1_000_000);
        }
        assert_eq!(t.budget(), MIN_BUDGET);
        t.set_interval(None);
        assert_eq!(t.budget(), MAX_TASKS);
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
