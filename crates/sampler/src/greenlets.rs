//! gevent greenlets: one stack per greenlet, as echion 0.3 shows them.
//!
//! Greenlets switch inside one thread without the interpreter knowing: the
//! thread's stack only shows the one that runs. `echion.monkey.gevent`
//! tells the sampler, at every switch (greenlet's `settrace`), which
//! greenlet runs and where the one it leaves stopped (its `gr_frame`, a
//! frame object that lives as long as the greenlet is suspended), and which
//! greenlet waits on which (`join`, `joinall`, `wait`). A thread that has
//! greenlets yields one stack per leaf greenlet (one that no other waits
//! on): the greenlets that wait on it, outermost first, each a frame named
//! after it (line 0) and its own frames, then the leaf; the greenlet that
//! runs is the thread's own stack.

use crate::cache::AddrMap;
use echion_mojo::FrameId;

/// Where a greenlet is, as the hooks said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreenletFrame {
    /// Not started, or finished: nothing to show.
    NotSet,
    /// Running: its frames are the thread's.
    Running,
    /// Suspended at this frame object (`gr_frame`).
    At(u64),
}

/// What the sampler knows of one greenlet.
#[derive(Debug, Clone)]
pub struct Greenlet {
    /// `threading.get_ident()` of the thread it belongs to (the real one,
    /// not gevent's).
    pub thread_id: u64,
    /// Its name (`Greenlet.name`, or its type's name).
    pub name: String,
    /// Where it is.
    pub frame: GreenletFrame,
    /// The frame named after it, once interned.
    pub name_frame: Option<FrameId>,
}

/// The greenlets Python told the sampler about.
#[derive(Debug, Default)]
pub struct GreenletsKnown {
    /// By greenlet id.
    pub greenlets: AddrMap<u64, Greenlet>,
    /// Greenlet → the greenlet that waits on it.
    pub parents: AddrMap<u64, u64>,
}

/// Most greenlets followed up from one leaf.
pub const MAX_GREENLET_CHAIN: usize = 512;

impl GreenletsKnown {
    /// Whether the thread `thread_id` has greenlets to show.
    pub fn has_thread(&self, thread_id: u64) -> bool {
        !self.greenlets.is_empty() && self.greenlets.values().any(|g| g.thread_id == thread_id)
    }

    /// The leaf greenlets of a thread (sorted, for stable output), and for
    /// each the chain of greenlets from the outermost waiter down to it,
    /// into `out` as `(leaf index in out, chain)`: `chains` receives every
    /// chain, outermost first, one after the other; `ends` the end of each
    /// in `chains`. `cpu_only`: the running greenlet only.
    pub fn chains(
        &self,
        thread_id: u64,
        cpu_only: bool,
        chains: &mut Vec<u64>,
        ends: &mut Vec<usize>,
    ) {
        chains.clear();
        ends.clear();
        let mut waiting: Vec<u64> = self.parents.values().copied().collect();
        waiting.sort_unstable();
        let mut leaves: Vec<u64> = self
            .greenlets
            .iter()
            .filter(|(id, g)| {
                g.thread_id == thread_id
                    && g.frame != GreenletFrame::NotSet
                    && !(cpu_only && g.frame != GreenletFrame::Running)
                    && waiting.binary_search(id).is_err()
            })
            .map(|(id, _)| *id)
            .collect();
        leaves.sort_unstable();
        for leaf in leaves {
            let start = chains.len();
            chains.push(leaf);
            let mut at = leaf;
            while let Some(&parent) = self.parents.get(&at) {
                if chains.len() - start >= MAX_GREENLET_CHAIN || chains[start..].contains(&parent) {
                    break;
                }
                match self.greenlets.get(&parent).map(|g| g.frame) {
                    Some(GreenletFrame::At(_)) => chains.push(parent),
                    _ => break,
                }
                at = parent;
            }
            chains[start..].reverse();
            ends.push(chains.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(thread_id: u64, frame: GreenletFrame) -> Greenlet {
        Greenlet {
            thread_id,
            name: String::new(),
            frame,
            name_frame: None,
        }
    }

    #[test]
    fn leaves_with_their_waiters_outermost_first() {
        let mut k = GreenletsKnown::default();
        k.greenlets.insert(1, g(7, GreenletFrame::At(0x10)));
        k.greenlets.insert(2, g(7, GreenletFrame::At(0x20)));
        k.greenlets.insert(3, g(7, GreenletFrame::Running));
        k.greenlets.insert(4, g(7, GreenletFrame::NotSet));
        k.greenlets.insert(5, g(8, GreenletFrame::At(0x50)));
        k.parents.insert(2, 1);
        let (mut chains, mut ends) = (Vec::new(), Vec::new());
        k.chains(7, false, &mut chains, &mut ends);
        assert_eq!(chains, [1, 2, 3]);
        assert_eq!(ends, [2, 3]);
        k.chains(7, true, &mut chains, &mut ends);
        assert_eq!((chains.as_slice(), ends.as_slice()), (&[3][..], &[1][..]));
        assert!(k.has_thread(8) && !k.has_thread(9));
    }

    #[test]
    fn cycles_end() {
        let mut k = GreenletsKnown::default();
        k.greenlets.insert(1, g(7, GreenletFrame::At(0x10)));
        k.greenlets.insert(2, g(7, GreenletFrame::At(0x20)));
        k.greenlets.insert(3, g(7, GreenletFrame::At(0x30)));
        k.parents.insert(3, 2);
        k.parents.insert(2, 1);
        k.parents.insert(1, 2);
        let (mut chains, mut ends) = (Vec::new(), Vec::new());
        k.chains(7, false, &mut chains, &mut ends);
        assert_eq!(chains, [1, 2, 3]);
        assert_eq!(ends, [3]);
    }
}
