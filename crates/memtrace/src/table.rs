//! The accounting of memory mode: which Python stack made each live
//! allocation, and how many bytes each stack holds.
//!
//! [`Tracker::alloc`] is given the allocating thread's state; it walks that
//! thread's Python stack with the views' walker ([`Target::walk`]), finds the
//! stack in the table (or adds it, decoding its new frames once, while their
//! code objects are certainly alive), and links the address to it. A free
//! finds the address and takes its bytes off the same stack, so what was
//! freed nets to zero and what a stack still holds is the memory it made
//! that is still allocated.
//!
//! The sampler thread takes what changed with [`Tracker::drain`] once per
//! interval, as one delta per stack, together with the frames and stacks it
//! has not seen yet (handed over, not copied: the tracker keeps of a stack
//! only what finds it again), and writes them after letting go of the
//! lock. A code object freed takes with it its decoded frames and the
//! stacks that ran it out of the indexes (not the others: a program that
//! makes and frees code objects all the time would make its other stacks
//! again at each free). A stack out of the index that no live allocation
//! is linked to any more is done with: its id is given to a new stack at
//! once if no change of its waits to be drained, else after the drain that
//! hands over its last change, so that a program that makes new code all
//! the time (`exec`, subinterpreters) keeps a table as big as what is
//! live, not as all it ran. A decoded frame's index is given again the
//! same way, once its code object is freed and no stack kept uses it.
//!
//! Bounded: at most [`MAX_LIVE`] live allocations are linked (those made
//! past it are counted in [`TrackerStats::untracked`] and their frees
//! ignored), stacks are walked at most [`MAX_FRAMES`] deep, and a stack
//! that cannot be read (counted in [`TrackerStats::unwalkable`]) is not
//! linked.

use std::sync::Arc;

use echion_cpython_layout::linetable::{self, TableFormat};
use echion_cpython_layout::views::{self, FrameKind, FrameVisitor, Target, ViewError};
use echion_cpython_layout::{Addr, MemoryReader};
use echion_mojo::FrameInfo;
use hashbrown::HashMap;

/// Most live allocations linked to their stacks (a 16-byte entry each, about
/// 34 bytes with the hash table's slack: at most about 2.3 GB at the cap).
pub const MAX_LIVE: usize = 1 << 26;
/// Deepest stack kept (frames further out are left out).
pub const MAX_FRAMES: usize = 1024;

/// The second field of a walked stack's entry, when native frames are
/// kept (see [`Tracker::set_native`]): `(pc, NATIVE)` is a native frame
/// (they follow every Python frame, innermost first) ...
pub const NATIVE: u32 = u32::MAX - 1;
/// ... and `(0, GROUP_END)` ends the group of Python frames that one call
/// of the evaluation loop runs (it follows the group's outermost frame; a
/// group may be empty: a call whose frame has not started).
pub const GROUP_END: u32 = u32::MAX - 2;
/// The largest instruction offset a walked stack holds (`u32::MAX`: none).
pub const MAX_OFFSET: u32 = u32::MAX - 3;

/// One stack that allocated: where it ran and its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRec {
    /// The interpreter's id.
    pub iid: i64,
    /// The thread's `threading.get_ident()`.
    pub thread_id: u64,
    /// The thread's kernel id (0: unknown). A thread's `get_ident()` is
    /// taken again by a thread started after it ended: the two threads'
    /// stacks are told apart by this, and so named apart.
    pub native_id: u64,
    /// Indices into the frame list, outermost first.
    pub frames: Box<[u32]>,
}

/// The thread an allocation was made on, as the hook found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocThread {
    /// `threading.get_ident()` (the thread state's `thread_id`).
    pub thread_id: u64,
    /// The kernel thread id (0: unknown).
    pub native_id: u64,
    /// The address of the interpreter state it runs in.
    pub interp: u64,
}

/// What changed since the last [`Tracker::drain`].
#[derive(Debug, Default)]
pub struct Drained {
    /// Frames first seen since, with their indices, in the order they
    /// were decoded. An index is either new (one more than the largest
    /// handed so far) or that of a frame no stack uses any more, which
    /// this one replaces.
    pub frames: Vec<(u32, FrameInfo)>,
    /// Stacks first seen since, with their ids, in the order they were
    /// made. An id is either new (one more than the largest handed so
    /// far) or that of a stack done with at an earlier drain, which this
    /// one replaces (see the module docs).
    pub stacks: Vec<(u32, StackRec)>,
    /// Each stack whose live bytes changed, and by how much (the stacks
    /// of this drain's `stacks` by their new meaning).
    pub deltas: Vec<(u32, i64)>,
}

impl Drained {
    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.stacks.clear();
        self.deltas.clear();
    }
}

/// A block [`Tracker::unlink`] took off its stack, to give back with
/// [`Tracker::relink`] if the reallocation that freed it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The stack's id.
    pub stack: u32,
    /// The block's size.
    pub size: u64,
    /// Which use of the id it was (an id done with is given to another
    /// stack: the block is not given back to that one).
    generation: u32,
}

/// Counters of the tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Allocations linked to a stack.
    pub tracked: u64,
    /// Allocations not linked because [`MAX_LIVE`] were live.
    pub untracked: u64,
    /// Allocations whose stack could not be read.
    pub unwalkable: u64,
    /// Allocations made by a thread with no Python frame (they belong to
    /// no stack: the interpreter starting or ending a thread, C code).
    pub frameless: u64,
    /// The most stacks the table held at once (the ids it has: a stack
    /// done with gives its id to a new one).
    pub stack_table: u64,
}

/// A code object's names and line table, kept while it is alive, with
/// what was found through it: the offsets decoded (keys of
/// `frame_index`) and the stacks that ran it (in `stack_index`), all
/// forgotten with it.
#[derive(Debug)]
struct CodeRec {
    filename: Arc<str>,
    scope: Arc<str>,
    firstlineno: i32,
    linetable: Vec<u8>,
    offsets: Vec<u32>,
    /// The stacks that ran it, with their ids' generations (an id given
    /// to another stack is passed over), pruned of those out of the index
    /// when it reaches `prune_at`: a code object that is never freed (a
    /// module's, 3.11's static ones, which every subinterpreter runs)
    /// lists no more than twice the stacks found through it.
    stacks: Vec<(u32, u32)>,
    prune_at: usize,
}

#[derive(Debug)]
struct Stack {
    rec: StackRec,
    /// The frames as walked: (code object, instruction offset), innermost
    /// first; compared to tell stacks with the same hash apart.
    raw: Box<[(u64, u32)]>,
    /// The interpreter state it ran in.
    interp: u64,
    /// Its hash (its key in `stack_index`).
    hash: u64,
    /// The next stack with the same hash, or `NONE`.
    next: u32,
    /// Whether it is in `stack_index` (until a code object it ran is
    /// freed: a new one may take the address).
    indexed: bool,
    delta: i64,
    dirty: bool,
    /// How many live blocks are linked to it.
    links: u32,
    /// Bumped each time its id is given to another stack.
    generation: u32,
    /// Whether its id is in `Tracker::free` (done with).
    free: bool,
    /// Whether its id is in `Tracker::fresh` (not drained yet).
    fresh: bool,
}

const NONE: u32 = u32::MAX;
/// The use count of a frame index that is free.
const FREE_FRAME: u32 = u32::MAX;
/// The shortest list of a code object's stacks that is pruned.
const PRUNE_AT_LEAST: usize = 64;

/// Live allocations and the stacks that made them (see the module docs).
#[derive(Debug)]
pub struct Tracker {
    format: TableFormat,
    codes: HashMap<u64, CodeRec>,
    frame_index: HashMap<(u64, u32), u32>,
    /// The frames not drained yet, with their indices (the sampler keeps
    /// those drained).
    frames: Vec<(u32, FrameInfo)>,
    /// Per frame index: how many kept stacks use it, and whether it can
    /// still be found (its code object alive, or a native frame named).
    frame_refs: Vec<u32>,
    frame_found: Vec<bool>,
    /// Frame indices no stack uses and nothing finds, for new frames.
    free_frames: Vec<u32>,
    /// Stack hash → the first stack with that hash.
    stack_index: HashMap<u64, u32>,
    stacks: Vec<Stack>,
    /// Address → stack (high 32 bits) and size (low 32 bits; `u32::MAX`:
    /// the size is in `big`).
    live: HashMap<u64, u64>,
    big: HashMap<u64, u64>,
    dirty: Vec<u32>,
    /// Stacks made (or ids given again) since the last drain.
    fresh: Vec<u32>,
    /// Stacks done with whose last change waits to be drained.
    orphans: Vec<u32>,
    /// Ids of stacks done with, for new stacks.
    free: Vec<u32>,
    interps: Vec<(u64, i64)>,
    raw: Vec<(u64, u32)>,
    stats: TrackerStats,
    /// The stacks found last, compared before hashing.
    recent: [u32; 8],
    recent_at: usize,
    /// Native frames: the unwinder of this process, and each native
    /// frame's index and whether it is the evaluation loop, by address.
    native: Option<echion_unwind::NativeUnwinder>,
    native_index: HashMap<u64, (u32, bool)>,
    pcs: Vec<u64>,
}

/// Collects a walk's Python frames as (code, offset).
struct Keys<'a> {
    out: &'a mut Vec<(u64, u32)>,
}

impl<R: MemoryReader + ?Sized> FrameVisitor<R> for Keys<'_> {
    type Error = ViewError;

    fn frame(
        &mut self,
        _target: &Target<'_, R>,
        frame: &views::FrameInfo,
    ) -> Result<(), ViewError> {
        if frame.kind == FrameKind::Python && self.out.len() < MAX_FRAMES {
            self.out
                .push((frame.code.0, frame.offset.unwrap_or(u32::MAX)));
        }
        Ok(())
    }
}

impl Tracker {
    /// An empty tracker for an interpreter whose line tables are in
    /// `format`.
    pub fn new(format: TableFormat) -> Self {
        Self {
            format,
            codes: HashMap::new(),
            frame_index: HashMap::new(),
            frames: Vec::new(),
            frame_refs: Vec::new(),
            frame_found: Vec::new(),
            free_frames: Vec::new(),
            stack_index: HashMap::new(),
            stacks: Vec::new(),
            live: HashMap::new(),
            big: HashMap::new(),
            dirty: Vec::new(),
            fresh: Vec::new(),
            orphans: Vec::new(),
            free: Vec::new(),
            interps: Vec::new(),
            raw: Vec::with_capacity(MAX_FRAMES),
            stats: TrackerStats::default(),
            recent: [NONE; 8],
            recent_at: 0,
            native: None,
            native_index: HashMap::new(),
            pcs: Vec::new(),
        }
    }

    /// Keeps native frames with the Python frames from now on: the hook
    /// appends them to each walked stack (`NATIVE` and `GROUP_END`
    /// entries), and a stack seen for the first time is interleaved with
    /// `unwinder`'s names of them.
    pub fn set_native(&mut self, unwinder: echion_unwind::NativeUnwinder) {
        self.native = Some(unwinder);
    }

    /// Whether native frames are kept.
    pub fn native(&self) -> bool {
        self.native.is_some()
    }

    /// The unwinder, and a buffer for one unwind (given back with
    /// [`Tracker::put_pcs`]), for the hook to unwind its own stack.
    pub fn unwinder_and_pcs(&mut self) -> Option<(&mut echion_unwind::NativeUnwinder, Vec<u64>)> {
        let pcs = std::mem::take(&mut self.pcs);
        self.native.as_mut().map(|u| (u, pcs))
    }

    /// Gives back the buffer of [`Tracker::unwinder_and_pcs`].
    pub fn put_pcs(&mut self, pcs: Vec<u64>) {
        self.pcs = pcs;
    }

    /// The counters so far.
    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            stack_table: self.stacks.len() as u64,
            ..self.stats
        }
    }

    /// How many allocations are linked to a stack now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// How many stacks are kept now (those done with, waiting for their
    /// ids to be given again, not counted).
    pub fn stacks(&self) -> usize {
        self.stacks.len() - self.free.len()
    }

    /// Links the `size` bytes at `ptr` to the current Python stack of the
    /// thread whose state is at `tstate` (read through `target`, which
    /// must see that thread's own memory as it is now).
    pub fn alloc<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        tstate: Addr,
        ptr: u64,
        size: u64,
    ) {
        match self.stack_of(target, tstate) {
            Ok(Some(stack)) => self.link(ptr, stack, size),
            Ok(None) => self.stats.frameless += 1,
            Err(_) => self.stats.unwalkable += 1,
        }
    }

    /// Links the `size` bytes at `ptr` to the stack `raw` (as
    /// [`Tracker::alloc`] would walk it: Python frames only, innermost
    /// first, (code, offset or `u32::MAX`)) of `thread`; `target` decodes
    /// frames not seen yet.
    pub fn alloc_walked<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        thread: AllocThread,
        raw: &[(u64, u32)],
        ptr: u64,
        size: u64,
    ) {
        if raw.is_empty() {
            self.stats.frameless += 1;
            return;
        }
        match self.find_or_add(target, thread, raw) {
            Ok(stack) => self.link(ptr, stack, size),
            Err(_) => self.stats.unwalkable += 1,
        }
    }

    /// The buffer the hook walks a stack into (given back with
    /// [`Tracker::put_keys`]), so that a warm hook does not allocate.
    pub fn take_keys(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.raw)
    }

    /// Gives back the buffer of [`Tracker::take_keys`].
    pub fn put_keys(&mut self, keys: Vec<(u64, u32)>) {
        self.raw = keys;
    }

    /// Takes the bytes at `ptr` off the stack that allocated them, if it
    /// was linked.
    pub fn free(&mut self, ptr: u64) {
        self.unlink(ptr);
    }

    /// [`Tracker::free`], returning the stack and size the block had, so
    /// that a reallocation that fails can put them back
    /// ([`Tracker::relink`]).
    pub fn unlink(&mut self, ptr: u64) -> Option<Taken> {
        let packed = self.live.remove(&ptr)?;
        let stack = (packed >> 32) as u32;
        let mut size = packed & 0xffff_ffff;
        if size == 0xffff_ffff {
            size = self.big.remove(&ptr).unwrap_or(0);
        }
        self.add(stack, -(size as i64));
        self.unlinked(stack);
        Some(Taken {
            stack,
            size,
            generation: self.stacks[stack as usize].generation,
        })
    }

    /// Links the block at `ptr` again to the stack [`Tracker::unlink`]
    /// took it off, unless that stack has been done with since (a drain
    /// in between found it out of the index with nothing linked).
    ///
    /// The free is taken back: it does not count as a new allocation.
    pub fn relink(&mut self, ptr: u64, taken: Taken) {
        let Some(s) = self.stacks.get(taken.stack as usize) else {
            return;
        };
        // (Not linked past `MAX_LIVE` either: it was counted already.)
        let room = self.live.len() < MAX_LIVE || self.live.contains_key(&ptr);
        if s.generation == taken.generation && !s.free && room {
            self.link(ptr, taken.stack, taken.size);
            self.stats.tracked = self.stats.tracked.saturating_sub(1);
        }
    }

    /// One block fewer on `stack`: done with at the next drain if it was
    /// the last one of a stack out of the index.
    fn unlinked(&mut self, stack: u32) {
        let s = &mut self.stacks[stack as usize];
        s.links -= 1;
        if s.links == 0 && !s.indexed {
            self.orphaned(stack);
        }
    }

    /// Stack `id` is out of the index and holds no block: its id is free
    /// now if it has no change to drain, else after the next drain.
    fn orphaned(&mut self, id: u32) {
        if self.stacks[id as usize].delta == 0 {
            self.give_up(id);
        } else {
            self.orphans.push(id);
        }
    }

    /// Gives stack `id`'s id to the next new stack, and lets go of its
    /// frames.
    fn give_up(&mut self, id: u32) {
        let s = &mut self.stacks[id as usize];
        s.free = true;
        let frames = std::mem::take(&mut s.rec.frames);
        self.free.push(id);
        for &f in frames.iter() {
            self.frame_refs[f as usize] -= 1;
            self.release_frame(f);
        }
    }

    /// Frees frame index `i` if no kept stack uses it and nothing finds it.
    fn release_frame(&mut self, i: u32) {
        if self.frame_refs[i as usize] == 0 && !self.frame_found[i as usize] {
            self.frame_refs[i as usize] = FREE_FRAME;
            self.free_frames.push(i);
        }
    }

    /// A new frame index for `info`, found again (by its code and offset,
    /// or its address) while `found`.
    fn new_frame(&mut self, info: FrameInfo, found: bool) -> u32 {
        let i = match self.free_frames.pop() {
            Some(i) => i,
            None => {
                self.frame_refs.push(0);
                self.frame_found.push(false);
                (self.frame_refs.len() - 1) as u32
            }
        };
        self.frame_refs[i as usize] = 0;
        self.frame_found[i as usize] = found;
        self.frames.push((i, info));
        i
    }

    /// Forgets what was decoded from the code object at `code`, which is
    /// being freed: a new one may take its address. Stacks already found
    /// keep their frames and their live bytes, but those that ran it are
    /// found no more (the next allocation in such a stack makes a new
    /// one); every other stack stays found, so that a program that makes
    /// and frees code objects all the time does not make its other stacks
    /// again and again.
    pub fn code_freed(&mut self, code: u64) {
        let Some(rec) = self.codes.remove(&code) else {
            return;
        };
        for offset in rec.offsets {
            if let Some(i) = self.frame_index.remove(&(code, offset)) {
                self.frame_found[i as usize] = false;
                self.release_frame(i);
            }
        }
        for (id, generation) in rec.stacks {
            if self.stacks[id as usize].generation == generation {
                self.unindex(id);
            }
        }
    }

    /// Takes stack `id` out of `stack_index` (and of the recent ones).
    fn unindex(&mut self, id: u32) {
        let Some(s) = self.stacks.get_mut(id as usize) else {
            return;
        };
        if !s.indexed {
            return;
        }
        s.indexed = false;
        // Only compared while indexed.
        s.raw = Box::new([]);
        let orphan = s.links == 0;
        let (hash, next) = (s.hash, s.next);
        let head = self.stack_index.get(&hash).copied().unwrap_or(NONE);
        if head == id {
            if next == NONE {
                self.stack_index.remove(&hash);
            } else {
                self.stack_index.insert(hash, next);
            }
        } else {
            let mut at = head;
            while at != NONE {
                let n = self.stacks[at as usize].next;
                if n == id {
                    self.stacks[at as usize].next = next;
                    break;
                }
                at = n;
            }
        }
        for r in &mut self.recent {
            if *r == id {
                *r = NONE;
            }
        }
        if orphan {
            self.orphaned(id);
        }
    }

    /// Hands what changed since the last call to `out` (cleared first),
    /// then gives up the stacks done with, whose last change it handed.
    pub fn drain(&mut self, out: &mut Drained) {
        out.clear();
        out.frames.append(&mut self.frames);
        for &id in &self.fresh {
            let s = &mut self.stacks[id as usize];
            s.fresh = false;
            out.stacks.push((id, s.rec.clone()));
        }
        self.fresh.clear();
        for &i in &self.dirty {
            let s = &mut self.stacks[i as usize];
            s.dirty = false;
            if s.delta != 0 {
                out.deltas.push((i, s.delta));
                s.delta = 0;
            }
        }
        self.dirty.clear();
        let orphans = std::mem::take(&mut self.orphans);
        for &id in &orphans {
            let s = &self.stacks[id as usize];
            // Linked again since (a failed reallocation given back)?
            if !s.free && !s.indexed && s.links == 0 {
                self.give_up(id);
            }
        }
        self.orphans = orphans;
        self.orphans.clear();
    }

    fn link(&mut self, ptr: u64, stack: u32, size: u64) {
        if self.live.len() >= MAX_LIVE && !self.live.contains_key(&ptr) {
            self.stats.untracked += 1;
            return;
        }
        // Counted first: the old link below may be this stack's last one.
        self.stacks[stack as usize].links += 1;
        let packed_size = if size >= 0xffff_ffff {
            0xffff_ffff
        } else {
            size
        };
        if let Some(old) = self
            .live
            .insert(ptr, (u64::from(stack) << 32) | packed_size)
        {
            // An address handed out twice without a free in between (a
            // free we did not see): the old link is gone.
            let old_stack = (old >> 32) as u32;
            let mut old_size = old & 0xffff_ffff;
            if old_size == 0xffff_ffff {
                old_size = self.big.remove(&ptr).unwrap_or(0);
            }
            self.add(old_stack, -(old_size as i64));
            self.unlinked(old_stack);
        }
        if packed_size == 0xffff_ffff {
            self.big.insert(ptr, size);
        }
        self.stats.tracked += 1;
        self.add(stack, size as i64);
    }

    fn add(&mut self, stack: u32, bytes: i64) {
        let s = &mut self.stacks[stack as usize];
        s.delta += bytes;
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(stack);
        }
    }

    /// The stack the thread at `tstate` is in, found or added; `None` if it
    /// runs no Python code.
    fn stack_of<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        tstate: Addr,
    ) -> Result<Option<u32>, ViewError> {
        let thread = target.thread(tstate)?;
        if thread.frame.is_null() {
            return Ok(None);
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let walked = target.walk(thread.frame, &mut Keys { out: &mut raw });
        let found = match walked {
            Ok(_) if raw.is_empty() => Ok(None),
            Ok(_) => self
                .find_or_add(
                    target,
                    AllocThread {
                        thread_id: thread.thread_id,
                        native_id: thread.native_thread_id.unwrap_or(0),
                        interp: thread.interp.0,
                    },
                    &raw,
                )
                .map(Some),
            Err(e) => Err(e),
        };
        self.raw = raw;
        found
    }

    fn find_or_add<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        thread: AllocThread,
        raw: &[(u64, u32)],
    ) -> Result<u32, ViewError> {
        let AllocThread {
            thread_id,
            native_id,
            interp,
        } = thread;
        // Most allocations come from a few stacks in turn: those are
        // compared first, without hashing the whole stack.
        for &id in &self.recent {
            if id == NONE {
                continue;
            }
            let s = &self.stacks[id as usize];
            if s.raw.len() == raw.len()
                && s.raw[0] == raw[0]
                && s.rec.thread_id == thread_id
                && s.rec.native_id == native_id
                && s.interp == interp
                && *s.raw == *raw
            {
                return Ok(id);
            }
        }
        let mut hash = thread_id ^ interp.rotate_left(17) ^ native_id.rotate_left(41);
        for &(code, offset) in raw {
            hash = (hash ^ code ^ (u64::from(offset) << 40))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        let mut at = self.stack_index.get(&hash).copied().unwrap_or(NONE);
        let head = at;
        while at != NONE {
            let s = &self.stacks[at as usize];
            if s.rec.thread_id == thread_id
                && s.rec.native_id == native_id
                && s.interp == interp
                && *s.raw == *raw
            {
                self.remember(at);
                return Ok(at);
            }
            at = s.next;
        }
        let iid = self.interpreter_id(target, Addr(interp))?;
        let frames = if raw.iter().any(|&(_, o)| o == NATIVE || o == GROUP_END) {
            self.interleaved(target, raw)?
        } else {
            let mut frames = Vec::with_capacity(raw.len());
            for &(code, offset) in raw.iter().rev() {
                frames.push(self.frame(target, code, offset)?);
            }
            frames
        };
        for &f in &frames {
            self.frame_refs[f as usize] += 1;
        }
        let mut stack = Stack {
            rec: StackRec {
                iid,
                thread_id,
                native_id,
                frames: frames.into_boxed_slice(),
            },
            raw: raw.into(),
            interp,
            hash,
            next: head,
            indexed: true,
            delta: 0,
            dirty: false,
            links: 0,
            generation: 0,
            free: false,
            fresh: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                let old = &mut self.stacks[id as usize];
                stack.generation = old.generation.wrapping_add(1);
                // Given up with no change waiting (its delta is 0), but
                // maybe still listed: listed once, for the new stack.
                stack.dirty = old.dirty;
                let listed = old.fresh;
                *old = stack;
                if !listed {
                    self.fresh.push(id);
                }
                id
            }
            None => {
                let id = u32::try_from(self.stacks.len())
                    .map_err(|_| ViewError::TooMany(u32::MAX as usize))?;
                self.stacks.push(stack);
                self.fresh.push(id);
                id
            }
        };
        self.stack_index.insert(hash, id);
        // Forgotten with any code object it ran (once per code object).
        let generation = self.stacks[id as usize].generation;
        let mut last = 0;
        for &(code, offset) in raw {
            if offset == NATIVE || offset == GROUP_END || code == last {
                continue;
            }
            last = code;
            if let Some(c) = self.codes.get_mut(&code) {
                if c.stacks.last() != Some(&(id, generation)) {
                    c.stacks.push((id, generation));
                }
                if c.stacks.len() >= c.prune_at {
                    let stacks = &self.stacks;
                    c.stacks.retain(|&(id, generation)| {
                        let s = &stacks[id as usize];
                        s.generation == generation && s.indexed
                    });
                    c.prune_at = (2 * c.stacks.len()).max(PRUNE_AT_LEAST);
                }
            }
        }
        self.remember(id);
        Ok(id)
    }

    /// The frames of a walked stack with native frames, outermost first:
    /// each evaluation-loop frame replaced by the Python frames it ran
    /// ([`echion_unwind::interleave`]).
    fn interleaved<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        raw: &[(u64, u32)],
    ) -> Result<Vec<u32>, ViewError> {
        let (mut python, mut groups, mut pcs) = (Vec::new(), Vec::new(), Vec::new());
        let mut count = 0;
        for &(a, o) in raw {
            match o {
                NATIVE => pcs.push(a),
                GROUP_END => {
                    groups.push(count);
                    count = 0;
                }
                _ => {
                    python.push((a, o));
                    count += 1;
                }
            }
        }
        if count > 0 {
            groups.push(count);
        }
        let mut eval = Vec::with_capacity(pcs.len());
        let mut ids = Vec::with_capacity(pcs.len());
        for &pc in &pcs {
            let (id, is_eval) = self.native_frame(pc);
            ids.push(id);
            eval.push(is_eval);
        }
        let mut pieces = Vec::new();
        echion_unwind::interleave(&eval, &groups, &mut pieces);
        let mut frames = Vec::with_capacity(pieces.len());
        for piece in pieces {
            frames.push(match piece {
                echion_unwind::Piece::Python(i) => {
                    match self.frame(target, python[i].0, python[i].1) {
                        Ok(f) => f,
                        Err(e) => {
                            // No stack: the native frames named for it alone
                            // (at addresses in no known module) are let go.
                            for &id in &ids {
                                self.release_frame(id);
                            }
                            return Err(e);
                        }
                    }
                }
                echion_unwind::Piece::Native(n) => ids[n],
            });
        }
        Ok(frames)
    }

    /// The index of the native frame at `pc` (a return address), named now
    /// if it is new, and whether it is the evaluation loop.
    fn native_frame(&mut self, pc: u64) -> (u32, bool) {
        if let Some(&hit) = self.native_index.get(&pc) {
            return hit;
        }
        let sym = match &self.native {
            Some(u) => u.symbol(pc, 1),
            None => echion_unwind::Symbol {
                name: "<unknown>".to_owned(),
                eval: false,
                known: false,
            },
        };
        // An address in no known module is named again next time.
        let i = self.new_frame(
            FrameInfo {
                filename: format!("native@0x{pc:x}").into(),
                scope: sym.name.into(),
                line: 0,
                line_end: 0,
                column: 0,
                column_end: 0,
            },
            sym.known,
        );
        if sym.known {
            self.native_index.insert(pc, (i, sym.eval));
        }
        (i, sym.eval)
    }

    /// Puts `stack` among the few compared first.
    fn remember(&mut self, stack: u32) {
        self.recent[self.recent_at] = stack;
        self.recent_at = (self.recent_at + 1) % self.recent.len();
    }

    fn interpreter_id<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        interp: Addr,
    ) -> Result<i64, ViewError> {
        if let Some(&(_, id)) = self.interps.iter().find(|(a, _)| *a == interp.0) {
            return Ok(id);
        }
        let id = target.interpreter(interp)?.id;
        if self.interps.len() >= 64 {
            self.interps.clear();
        }
        self.interps.push((interp.0, id));
        Ok(id)
    }

    /// The index of the frame at `offset` of the code object at `code`,
    /// decoded now if it is new.
    fn frame<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        code: u64,
        offset: u32,
    ) -> Result<u32, ViewError> {
        if let Some(&i) = self.frame_index.get(&(code, offset)) {
            return Ok(i);
        }
        if !self.codes.contains_key(&code) {
            let c = target.code_source(Addr(code))?;
            self.codes.insert(
                code,
                CodeRec {
                    filename: c.filename.into(),
                    scope: c.scope.into(),
                    firstlineno: c.firstlineno,
                    linetable: c.linetable,
                    offsets: Vec::new(),
                    stacks: Vec::new(),
                    prune_at: PRUNE_AT_LEAST,
                },
            );
        }
        let c = self.codes.get_mut(&code).expect("inserted above");
        c.offsets.push(offset);
        let at = linetable::position(
            self.format,
            &c.linetable,
            c.firstlineno,
            (offset != u32::MAX).then_some(offset),
        );
        let rec = FrameInfo {
            filename: c.filename.clone(),
            scope: c.scope.clone(),
            line: at.line,
            line_end: at.line_end,
            column: at.column,
            column_end: at.column_end,
        };
        let i = self.new_frame(rec, true);
        self.frame_index.insert((code, offset), i);
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_cpython_layout::{Layout, PyVersion, SnapshotReader};

    const STR: u64 = 0x1_0000;
    const BYTES: u64 = 0x2_0000;
    const INTERP: u64 = 0x3_0000;
    /// Three code objects, each named "f" in "f" with an empty line table.
    const CODES: [u64; 3] = [0x4_0000, 0x5_0000, 0x6_0000];

    fn put(buf: &mut [u8], at: u64, bytes: &[u8]) {
        buf[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// An image, laid out as `layout` says, of the code objects, their
    /// strings and line table, and an interpreter state with id 0.
    fn image(layout: &Layout) -> SnapshotReader {
        let mut snap = SnapshotReader::new();
        let u = &layout.unicode;
        let mut s = vec![0u8; 256];
        put(&mut s, u.length, &1i64.to_ne_bytes());
        let mut state: u32 = (1 << u.kind_shift) | (1 << u.compact_shift) | (1 << u.ascii_shift);
        if let Some(r) = u.ready_shift {
            state |= 1 << r;
        }
        put(&mut s, u.state, &state.to_ne_bytes());
        s[u.ascii_size as usize] = b'f';
        snap.insert(Addr(STR), &s);
        snap.insert(Addr(BYTES), &vec![0u8; layout.bytes.ob_sval as usize + 8]);
        snap.insert(Addr(INTERP), &vec![0u8; 16 * 1024]);
        let c = &layout.code;
        for code in CODES {
            let mut b = vec![0u8; 512];
            for at in [Some(c.filename), Some(c.name), c.qualname]
                .into_iter()
                .flatten()
            {
                put(&mut b, at, &STR.to_ne_bytes());
            }
            put(&mut b, c.firstlineno, &1i32.to_ne_bytes());
            put(&mut b, c.linetable, &BYTES.to_ne_bytes());
            snap.insert(Addr(code), &b);
        }
        snap
    }

    /// Thread 1 (kernel id 7) of the image's interpreter.
    const THREAD: AllocThread = AllocThread {
        thread_id: 1,
        native_id: 7,
        interp: INTERP,
    };

    /// CPython 3.`minor`'s layout, the image of it and an empty table.
    fn table(minor: u8) -> (&'static Layout, SnapshotReader, Tracker) {
        let version = PyVersion::new(3, minor, 0);
        let layout = Layout::for_version(version).unwrap();
        let format = TableFormat::for_version(version).unwrap();
        (layout, image(layout), Tracker::new(format))
    }

    #[test]
    fn a_freed_code_object_forgets_only_the_stacks_that_ran_it() {
        let (layout, snap, mut t) = table(11);
        let target = Target::new(&snap, layout);
        let [a, b, c] = CODES;
        let (ab, only_c) = ([(a, 0), (b, 0)], [(c, 0)]);
        let thread = THREAD;
        t.alloc_walked(&target, thread, &ab, 0x100, 10);
        t.alloc_walked(&target, thread, &only_c, 0x200, 20);
        t.alloc_walked(&target, thread, &only_c, 0x300, 30);
        assert_eq!(t.stats().unwalkable, 0);
        let mut out = Drained::default();
        t.drain(&mut out);
        let ids: Vec<u32> = out.stacks.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 1]);
        let frames: Vec<u32> = out.frames.iter().map(|(i, _)| *i).collect();
        assert_eq!(frames, [0, 1, 2]);
        assert_eq!(out.deltas, vec![(0, 10), (1, 50)]);

        // `a` freed: the stack that ran it is found no more, the other
        // one still is (it was made again at every free before).
        t.code_freed(a);
        t.alloc_walked(&target, thread, &only_c, 0x400, 40);
        t.alloc_walked(&target, thread, &ab, 0x500, 50);
        t.free(0x100);
        t.drain(&mut out);
        // Stack 0 still holds 10 bytes when `a` goes: kept, a new id.
        assert_eq!(out.stacks.len(), 1, "one new stack");
        assert_eq!(out.stacks[0].0, 2);
        // `a` decoded again (a new code object may have its address), `b`
        // still known: the old `a` frame is used by stack 0, kept, so the
        // new one takes a new index.
        assert_eq!(out.frames.len(), 1);
        assert_eq!(out.frames[0].0, 3);
        assert_eq!(out.stacks[0].1.frames.len(), 2);
        assert!(out.stacks[0].1.frames.contains(&3));
        let mut deltas = out.deltas.clone();
        deltas.sort_unstable();
        assert_eq!(deltas, vec![(0, -10), (1, 40), (2, 50)]);

        // Freeing every code object (the new `a` too) leaves the indexes
        // empty; the live bytes stay with their stacks.
        t.code_freed(c);
        t.code_freed(b);
        t.code_freed(b);
        t.code_freed(a);
        assert!(t.stack_index.is_empty() && t.frame_index.is_empty());
        t.free(0x200);
        t.drain(&mut out);
        assert_eq!(out.deltas, vec![(1, -20)]);
        assert!(out.stacks.is_empty() && out.frames.is_empty());
    }

    #[test]
    fn a_stack_done_with_gives_its_id_to_a_new_one_after_its_last_change() {
        let (layout, snap, mut t) = table(11);
        let target = Target::new(&snap, layout);
        let [a, b, c] = CODES;
        let thread = THREAD;
        let mut out = Drained::default();
        // A program that makes new code all the time: each round's code
        // object takes the last one's address once that one is freed.
        for round in 0..1000u64 {
            t.alloc_walked(&target, thread, &[(a, 0), (b, 0)], 0x100 + round, 10);
            t.alloc_walked(&target, thread, &[(c, 0)], 0x10_0000 + round, 1);
            t.drain(&mut out);
            t.free(0x100 + round);
            t.code_freed(a);
            t.drain(&mut out);
        }
        // The stack of `c` (its blocks live) and one id waiting.
        assert_eq!(t.stacks(), 1);
        assert_eq!(t.stacks.len(), 2);
        assert_eq!(t.live(), 1000);
        // `b`, never freed, ran a thousand stacks: it lists the few found.
        assert!(t.codes[&b].stacks.len() < PRUNE_AT_LEAST);
        // Each round decoded `a` again: its index is given again once the
        // stack that used it is done with (`b`, `c` and one `a`).
        assert!(
            t.frame_refs.len() <= 4,
            "{} frame indices",
            t.frame_refs.len()
        );

        // Its last change is drained with it, under its old meaning; the
        // id is given again only after that drain.
        t.alloc_walked(&target, thread, &[(a, 0)], 0x200, 5);
        t.drain(&mut out);
        let (id, _) = out.stacks[0];
        t.code_freed(a);
        t.free(0x200);
        t.alloc_walked(&target, thread, &[(a, 0), (a, 0)], 0x300, 7);
        t.drain(&mut out);
        assert_ne!(out.stacks[0].0, id, "not given while its change waits");
        let mut deltas = out.deltas.clone();
        deltas.sort_unstable();
        assert!(deltas.contains(&(id, -5)), "{deltas:?}");
        t.code_freed(a);
        t.free(0x300);
        t.alloc_walked(&target, thread, &[(b, 0), (a, 0)], 0x400, 9);
        t.drain(&mut out);
        assert_eq!(out.stacks.len(), 1);
        assert_eq!(out.stacks[0].0, id, "given after the drain");
        assert_eq!(out.stacks[0].1.frames.len(), 2);
        assert!(out.deltas.contains(&(id, 9)), "{:?}", out.deltas);

        // A failed reallocation's block is not given back to a stack done
        // with meanwhile, nor to the stack its id went to.
        t.code_freed(a);
        let taken = t.unlink(0x400).expect("linked");
        t.drain(&mut out);
        assert!(out.deltas.contains(&(id, -9)), "{:?}", out.deltas);
        t.relink(0x400, taken);
        assert_eq!(t.unlink(0x400), None, "not linked to a stack done with");
        t.alloc_walked(&target, thread, &[(a, 0)], 0x500, 3);
        t.drain(&mut out);
        assert_eq!(out.stacks[0].0, id);
        t.relink(0x400, taken);
        assert_eq!(t.unlink(0x400), None, "not linked to the id's new stack");
        // A relink before the next drain still counts.
        t.code_freed(a);
        let taken = t.unlink(0x500).expect("linked");
        t.relink(0x500, taken);
        t.drain(&mut out);
        assert!(out.deltas.is_empty(), "{:?}", out.deltas);
        assert_eq!(t.unlink(0x500).map(|k| (k.stack, k.size)), Some((id, 3)));

        // A code object's list names an id by its use: freeing `b` does not
        // take out of the index the stack its old stack's id went to.
        t.alloc_walked(&target, thread, &[(b, 0), (a, 0)], 0x600, 1);
        t.drain(&mut out);
        let (old, _) = out.stacks[0];
        t.code_freed(a);
        t.free(0x600);
        t.drain(&mut out);
        t.alloc_walked(&target, thread, &[(c, 0), (c, 0)], 0x700, 1);
        t.drain(&mut out);
        assert_eq!(out.stacks[0].0, old, "the id given again");
        t.code_freed(b);
        t.alloc_walked(&target, thread, &[(c, 0), (c, 0)], 0x800, 1);
        t.drain(&mut out);
        assert!(out.stacks.is_empty(), "found again: {:?}", out.stacks);
        assert_eq!(out.deltas, vec![(old, 1)]);

        // A stack done with that has no change waiting gives its id at
        // once, without a drain: between two drains of a loaded machine a
        // program may make thousands. One never drained is handed once,
        // as the stack its id went to.
        let before = t.stacks.len();
        for i in 0..100 {
            t.alloc_walked(&target, thread, &[(a, 0), (b, 0), (a, 0)], 0x900, 4);
            t.free(0x900);
            t.code_freed(a);
            t.alloc_walked(&target, thread, &[(b, 0), (b, 0), (a, 0)], 0xa00 + i, 2);
            t.free(0xa00 + i);
            t.code_freed(a);
        }
        assert!(t.stacks.len() <= before + 1, "{} ids", t.stacks.len());
        t.alloc_walked(&target, thread, &[(c, 0), (a, 0)], 0xb00, 6);
        t.drain(&mut out);
        assert_eq!(out.stacks.len(), 1, "{:?}", out.stacks);
        assert_eq!(out.stacks[0].1.frames.len(), 2);
        assert_eq!(out.deltas, vec![(out.stacks[0].0, 6)]);
    }

    #[test]
    fn threads_with_one_ident_have_their_own_stacks_and_links_stay_exact() {
        let (layout, snap, mut t) = table(12);
        let target = Target::new(&snap, layout);
        let [a, b, _] = CODES;
        let thread = THREAD;
        t.alloc_walked(&target, thread, &[(a, 0)], 0x100, 3_000_000);
        t.alloc_walked(&target, thread, &[(b, 0)], 0x200, 7);
        t.free(0x100);
        let mut out = Drained::default();
        t.drain(&mut out);
        // One net change per stack (a block made and freed between two
        // drains nets to nothing).
        assert_eq!(out.deltas, vec![(1, 7)]);
        // A reallocation that moves the block: the old block freed, the new
        // one made, by the same stack; the live bytes net to the new size.
        t.unlink(0x200);
        t.alloc_walked(&target, thread, &[(b, 0)], 0x300, 20);
        t.drain(&mut out);
        assert_eq!(out.deltas, vec![(1, 13)]);
        // Another thread that got the ended one's `get_ident()`: a stack of
        // its own (named after it), though its frames are the same.
        let next = AllocThread {
            native_id: 8,
            ..thread
        };
        t.alloc_walked(&target, next, &[(b, 0)], 0x400, 5);
        t.drain(&mut out);
        assert_eq!(out.deltas, vec![(2, 5)]);
        assert_eq!(out.stacks[0].0, 2);
        assert_eq!(
            (out.stacks[0].1.thread_id, out.stacks[0].1.native_id),
            (1, 8)
        );

        // A reallocation that fails: the block was taken off and is given
        // back; nothing changed.
        let tracked = t.stats().tracked;
        let taken = t.unlink(0x400).expect("linked");
        t.relink(0x400, taken);
        assert_eq!(t.stats().tracked, tracked, "not a new allocation");
        t.drain(&mut out);
        assert!(out.deltas.is_empty(), "{:?}", out.deltas);
        assert_eq!(t.unlink(0x400).map(|k| (k.stack, k.size)), Some((2, 5)));

        // A block too big for the packed size, its address handed out
        // again without a free seen: its bytes leave its stack.
        t.alloc_walked(&target, next, &[(b, 0)], 0x600, 5 << 32);
        t.alloc_walked(&target, thread, &[(a, 0)], 0x600, 3);
        t.drain(&mut out);
        assert_eq!(out.deltas, vec![(2, -5), (0, 3)]);
        assert!(t.big.is_empty());
    }
}
