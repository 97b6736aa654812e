//! What only Python knows about its threads: names and native ids, told by
//! the `threading` hooks and read by the sampler.
//!
//! Python threads push updates to a queue guarded by a mutex that is held
//! only to push or to move the updates out, never while anything else runs, so
//! neither side waits for the other for more than a few instructions. The
//! sampler applies the updates to its own map at the start of each tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

use crate::cache::AddrMap;
use crate::greenlets::{Greenlet, GreenletFrame, GreenletsKnown};
use crate::tasks::{AsyncioKnown, AsyncioRoots};

/// A change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A thread started, or was renamed.
    Track {
        /// `threading.get_ident()` (the `pthread_t`).
        thread_id: u64,
        /// `Thread.name`.
        name: String,
        /// `Thread.native_id` (0 if unknown).
        native_id: u64,
    },
    /// A thread is ending.
    Untrack {
        /// `threading.get_ident()`.
        thread_id: u64,
    },
    /// The code object that `threading` starts each of its threads in
    /// (`Thread._bootstrap`): a thread state that no `Track` names and whose
    /// outermost frame runs it is a `threading` thread before it registers
    /// or after it has said it is ending, and is not shown.
    BootstrapCode {
        /// The code object's address (`id(Thread._bootstrap.__code__)`).
        code: u64,
    },
    /// A thread of Python's stands in the profile for a native thread:
    /// its stacks are its own, but its kernel id (for its CPU time and its
    /// native frames) is the other thread's. echion's sampler runs in a
    /// native thread and is shown, as echion 0.3 shows its own, by the
    /// `threading` thread `echion.core.sampler`, which waits for the run's
    /// end (`echion.core.stand_in`).
    StandIn {
        /// `threading.get_ident()` of the thread shown.
        thread_id: u64,
        /// The kernel id of the thread it stands for (0: none any more).
        native_id: u64,
    },
    /// asyncio was imported: where it keeps its tasks
    /// (`echion.core.init_asyncio`).
    AsyncioRoots {
        /// `id()` of the set behind `_scheduled_tasks.data` (`_all_tasks`
        /// before 3.12).
        scheduled: u64,
        /// `id(_eager_tasks)` (3.12+), 0 if none.
        eager: u64,
        /// `id(_current_tasks)` (the dict of the task each loop runs), 0
        /// if unknown.
        current: u64,
    },
    /// A thread started (or stopped, with 0) running an event loop
    /// (`echion.core.track_asyncio_loop`).
    Loop {
        /// `threading.get_ident()`.
        thread_id: u64,
        /// `id(loop)`, 0 when it no longer runs one.
        event_loop: u64,
    },
    /// A greenlet started, switched or ended (`echion.core.track_greenlet`,
    /// `update_greenlet_frame`).
    Greenlet {
        /// Its id (gevent's `thread.get_ident(greenlet)`).
        id: u64,
        /// The real thread it belongs to (0: as known before).
        thread_id: u64,
        /// Its name (`None`: as known before).
        name: Option<String>,
        /// Where it is.
        frame: GreenletFrame,
    },
    /// A greenlet is gone (`echion.core.untrack_greenlet`).
    UntrackGreenlet {
        /// Its id.
        id: u64,
    },
    /// The greenlet `parent` waits on `child` (`join`, `joinall`, `wait`:
    /// `echion.core.link_greenlets`).
    LinkGreenlets {
        /// The greenlet waited on.
        child: u64,
        /// The greenlet waiting.
        parent: u64,
    },
    /// `parent` waits on `child` in a way no field of theirs records
    /// (`gather`, `wait`…: `echion.core.link_tasks`).
    LinkTask {
        /// `id()` of the task waited on.
        child: u64,
        /// `id()` of the task waiting.
        parent: u64,
    },
}

/// The Python side of the registry: where updates are posted.
#[derive(Debug, Default)]
pub struct RegistryQueue {
    pending: Mutex<Vec<Update>>,
    /// Whether `pending` may hold updates (set under its lock): a tick
    /// with nothing posted reads this and writes nothing (after a fork,
    /// every page the parent writes is copied).
    posted: AtomicBool,
    dropped: AtomicU64,
}

/// Attempts to take the queue's lock before an update is given up. The
/// sampler holds the lock to move the updates out only, so the first attempt nearly
/// always succeeds; the bound matters in a forked child, where a sampler
/// thread that no longer exists may have held it at the fork: the child
/// must not hang on it.
const POST_ATTEMPTS: u32 = 10_000;

impl RegistryQueue {
    /// Posts an update. Never blocks for long: if the lock cannot be had
    /// (see [`POST_ATTEMPTS`]) the update is dropped and counted.
    pub fn post(&self, update: Update) {
        for _ in 0..POST_ATTEMPTS {
            let mut q = match self.pending.try_lock() {
                Ok(q) => q,
                // A poisoned lock only means a panic elsewhere; the queue
                // is still a valid Vec.
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            q.push(update);
            self.posted.store(true, Ordering::Release);
            return;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Updates given up because the lock could not be had.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes every pending update, leaving `into` with them (and its
    /// previous contents cleared) and the queue empty.
    pub fn drain_into(&self, into: &mut Vec<Update>) {
        into.clear();
        // (An update posted after this load, or under way at it, is
        // drained at the next tick.)
        if !self.posted.load(Ordering::Acquire) {
            return;
        }
        // Never waits: a tick may run in a signal handler on a thread that
        // holds the lock to post (then the updates wait for the next tick).
        let mut q = match self.pending.try_lock() {
            Ok(q) => q,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.posted.store(false, Ordering::Relaxed);
        // Moved, not swapped: each buffer stays where it was made (the
        // sampler's may come from a heap of its own, see `echion.core`'s
        // `--no-thread`).
        into.append(&mut q);
    }
}

/// What the sampler knows of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMeta {
    /// Its name.
    pub name: String,
    /// Its kernel thread id, 0 if unknown.
    pub native_id: u64,
}

/// The sampler's view of the registry.
#[derive(Debug, Default)]
pub struct ThreadNames {
    map: AddrMap<u64, ThreadMeta>,
    /// Threads untracked by the last refresh: memory mode names the stacks
    /// a thread made just before it ended.
    /// (A thread started and ended since may have had the same
    /// `get_ident()`: all of them are kept, with their kernel ids.)
    retired: Vec<(u64, ThreadMeta)>,
    bootstrap_codes: Vec<u64>,
    /// The thread that stands for another ([`Update::StandIn`]): its
    /// ident and the other's kernel id.
    stand_in: Option<(u64, u64)>,
    scratch: Vec<Update>,
    asyncio: AsyncioKnown,
    greenlets: GreenletsKnown,
    /// Counts the refreshes that tracked or untracked a thread.
    generation: u64,
}

impl ThreadNames {
    /// Applies the pending updates of `queue`.
    pub fn refresh(&mut self, queue: &RegistryQueue) {
        let mut scratch = std::mem::take(&mut self.scratch);
        queue.drain_into(&mut scratch);
        self.retired.clear();
        if scratch
            .iter()
            .any(|u| matches!(u, Update::Track { .. } | Update::Untrack { .. }))
        {
            self.generation += 1;
        }
        for update in scratch.drain(..) {
            match update {
                Update::Track {
                    thread_id,
                    name,
                    native_id,
                } => {
                    let meta = ThreadMeta { name, native_id };
                    if let Some(old) = self.map.insert(thread_id, meta) {
                        if old.native_id != 0 && native_id != 0 && old.native_id != native_id {
                            // Another thread that took the ident of one
                            // that ended unseen (a thread of C code never
                            // says it ends): the old one's stacks keep
                            // its name.
                            self.retired.push((thread_id, old));
                        }
                    }
                }
                Update::Untrack { thread_id } => {
                    if let Some(meta) = self.map.remove(&thread_id) {
                        self.retired.push((thread_id, meta));
                    }
                    self.asyncio.loops.remove(&thread_id);
                }
                Update::AsyncioRoots {
                    scheduled,
                    eager,
                    current,
                } => {
                    self.asyncio.roots = (scheduled != 0).then_some(AsyncioRoots {
                        scheduled,
                        eager,
                        current,
                    });
                }
                Update::Loop {
                    thread_id,
                    event_loop,
                } => {
                    if event_loop == 0 {
                        self.asyncio.loops.remove(&thread_id);
                    } else {
                        self.asyncio.loops.insert(thread_id, event_loop);
                    }
                }
                Update::LinkTask { child, parent } => {
                    if child != 0 && parent != 0 {
                        self.asyncio.link(child, parent);
                    }
                }
                Update::Greenlet {
                    id,
                    thread_id,
                    name,
                    frame,
                } => {
                    let g = self.greenlets.greenlets.entry(id).or_insert(Greenlet {
                        thread_id,
                        name: String::new(),
                        frame,
                        name_frame: None,
                    });
                    g.frame = frame;
                    if thread_id != 0 {
                        g.thread_id = thread_id;
                    }
                    if let Some(name) = name {
                        if name != g.name {
                            g.name = name;
                            g.name_frame = None;
                        }
                    }
                }
                Update::UntrackGreenlet { id } => {
                    self.greenlets.greenlets.remove(&id);
                    self.greenlets.parents.remove(&id);
                    self.greenlets.parents.retain(|_, p| *p != id);
                }
                Update::LinkGreenlets { child, parent } => {
                    if child != parent {
                        self.greenlets.parents.insert(child, parent);
                    }
                }
                Update::StandIn {
                    thread_id,
                    native_id,
                } => {
                    self.stand_in = (native_id != 0).then_some((thread_id, native_id));
                }
                Update::BootstrapCode { code } => {
                    if code != 0 && !self.bootstrap_codes.contains(&code) {
                        self.bootstrap_codes.push(code);
                    }
                }
            }
        }
        self.scratch = scratch;
    }

    /// The kernel id of the thread that `thread_id` stands for
    /// ([`Update::StandIn`]), if it stands for one.
    pub fn stands_for(&self, thread_id: u64) -> Option<u64> {
        self.stand_in
            .filter(|&(id, _)| id == thread_id)
            .map(|(_, native_id)| native_id)
    }

    /// Changes each time a refresh tracks or untracks a thread (names
    /// that were a thread's are still its own while it stays the same).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What is known of the thread `thread_id`.
    pub fn get(&self, thread_id: u64) -> Option<&ThreadMeta> {
        self.map.get(&thread_id)
    }

    /// The thread `thread_id` whose kernel id is `native_id` (0: either
    /// unknown, any fits): what [`ThreadNames::get`] says, or for a thread
    /// that ended since the refresh before the last, what it said then.
    /// `get_ident()` values are taken again by threads started after others
    /// ended: the kernel id tells which of them is meant.
    pub fn get_or_retired(&self, thread_id: u64, native_id: u64) -> Option<&ThreadMeta> {
        let fits = |m: &ThreadMeta| native_id == 0 || m.native_id == 0 || m.native_id == native_id;
        self.map.get(&thread_id).filter(|m| fits(m)).or_else(|| {
            // The latest first: the one a refresh's updates left last.
            self.retired
                .iter()
                .rev()
                .find(|(id, m)| *id == thread_id && fits(m))
                .map(|(_, m)| m)
        })
    }

    /// Whether a stack whose outermost Python frame runs the code object at
    /// `code` belongs to a thread that is not shown unless named (see
    /// [`Update::BootstrapCode`]).
    pub fn hides_outermost(&self, code: u64) -> bool {
        code != 0 && self.bootstrap_codes.contains(&code)
    }

    /// What Python told of greenlets.
    pub fn greenlets(&self) -> &GreenletsKnown {
        &self.greenlets
    }

    /// What Python told of greenlets, to remember interned names.
    pub fn greenlets_mut(&mut self) -> &mut GreenletsKnown {
        &mut self.greenlets
    }

    /// What Python told of asyncio.
    pub fn asyncio(&self) -> &AsyncioKnown {
        &self.asyncio
    }

    /// What Python told of asyncio, to update (links of finished tasks go).
    pub fn asyncio_mut(&mut self) -> &mut AsyncioKnown {
        &mut self.asyncio
    }

    /// Number of threads known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no thread is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_gives_up_on_a_lock_that_is_never_released() {
        let q = RegistryQueue::default();
        let held = q.pending.lock().expect("free");
        q.post(Update::Untrack { thread_id: 1 });
        drop(held);
        assert_eq!(q.dropped(), 1);
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_drain_never_waits_for_the_lock_and_leaves_the_updates_for_the_next() {
        let q = RegistryQueue::default();
        q.post(Update::Untrack { thread_id: 3 });
        let mut out = vec![Update::Untrack { thread_id: 99 }];
        {
            // Held as by a thread a tick stopped while it posted.
            let _held = q.pending.lock().expect("free");
            q.drain_into(&mut out);
            assert!(out.is_empty(), "returned at once, with nothing");
        }
        q.drain_into(&mut out);
        assert_eq!(out, vec![Update::Untrack { thread_id: 3 }]);
    }

    #[test]
    fn a_tick_with_nothing_posted_takes_no_lock() {
        let q = std::sync::Arc::new(RegistryQueue::default());
        let held = q.pending.lock().expect("free");
        let (tx, rx) = std::sync::mpsc::channel();
        let drainer = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                q.drain_into(&mut out);
                let _ = tx.send(out.len());
            })
        };
        // (Were the lock taken, the drain would wait for `held`.)
        let drained = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        drainer.join().expect("drainer");
        assert_eq!(drained, Ok(0));
        // What is posted later is drained.
        q.post(Update::Untrack { thread_id: 7 });
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out.len(), 1);
        q.drain_into(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_stand_in_lends_its_kernel_id_to_one_thread_until_taken_back() {
        let q = RegistryQueue::default();
        let mut names = ThreadNames::default();
        q.post(Update::StandIn {
            thread_id: 5,
            native_id: 500,
        });
        names.refresh(&q);
        assert_eq!(names.stands_for(5), Some(500));
        assert_eq!(names.stands_for(6), None);
        // A later one replaces it; one with no kernel id ends it.
        q.post(Update::StandIn {
            thread_id: 6,
            native_id: 600,
        });
        names.refresh(&q);
        assert_eq!(
            (names.stands_for(5), names.stands_for(6)),
            (None, Some(600))
        );
        q.post(Update::StandIn {
            thread_id: 6,
            native_id: 0,
        });
        names.refresh(&q);
        assert_eq!(names.stands_for(6), None);
    }

    #[test]
    fn updates_apply_in_order() {
        let q = RegistryQueue::default();
        let mut names = ThreadNames::default();
        q.post(Update::Track {
            thread_id: 1,
            name: "MainThread".into(),
            native_id: 100,
        });
        q.post(Update::Track {
            thread_id: 2,
            name: "worker".into(),
            native_id: 101,
        });
        q.post(Update::Track {
            thread_id: 2,
            name: "renamed".into(),
            native_id: 101,
        });
        names.refresh(&q);
        assert_eq!(names.len(), 2);
        assert_eq!(names.get(2).map(|m| m.name.as_str()), Some("renamed"));
        q.post(Update::Untrack { thread_id: 2 });
        names.refresh(&q);
        assert_eq!(names.get(2), None);
        assert_eq!(names.get(1).map(|m| m.native_id), Some(100));
    }

    #[test]
    fn threads_that_took_the_same_ident_in_turn_keep_their_names() {
        // Between two refreshes (a sampler the machine did not run), three
        // threads ran one after the other and got the same `get_ident()`.
        let q = RegistryQueue::default();
        let mut names = ThreadNames::default();
        for (name, tid) in [("alloc-a", 201), ("alloc-b", 202), ("alloc-c", 203)] {
            q.post(Update::Track {
                thread_id: 7,
                name: name.into(),
                native_id: tid,
            });
            if name != "alloc-c" {
                q.post(Update::Untrack { thread_id: 7 });
            }
        }
        names.refresh(&q);
        let name =
            |names: &ThreadNames, native| names.get_or_retired(7, native).map(|m| m.name.clone());
        assert_eq!(name(&names, 201).as_deref(), Some("alloc-a"));
        assert_eq!(name(&names, 202).as_deref(), Some("alloc-b"));
        assert_eq!(name(&names, 203).as_deref(), Some("alloc-c"));
        // Unknown kernel id: the thread that has the ident now.
        assert_eq!(name(&names, 0).as_deref(), Some("alloc-c"));
        // A thread none of them was: no name rather than a wrong one.
        assert_eq!(name(&names, 999), None);
        // The next refresh forgets the ended ones.
        names.refresh(&q);
        assert_eq!(name(&names, 201), None);
        // A thread that never said it ended (C code's) and another that took
        // its ident: both named.
        q.post(Update::Track {
            thread_id: 7,
            name: "next".into(),
            native_id: 204,
        });
        names.refresh(&q);
        assert_eq!(name(&names, 203).as_deref(), Some("alloc-c"));
        assert_eq!(name(&names, 204).as_deref(), Some("next"));
    }

    #[test]
    fn bootstrap_codes_hide_only_their_own_stacks() {
        let q = RegistryQueue::default();
        let mut names = ThreadNames::default();
        assert!(!names.hides_outermost(0x1000));
        q.post(Update::BootstrapCode { code: 0x1000 });
        q.post(Update::BootstrapCode { code: 0x1000 });
        q.post(Update::BootstrapCode { code: 0 });
        names.refresh(&q);
        assert!(names.hides_outermost(0x1000));
        assert!(!names.hides_outermost(0x2000));
        assert!(!names.hides_outermost(0), "an empty stack is never hidden");
        assert_eq!(names.bootstrap_codes, [0x1000]);
    }
}
