//! Native stacks in the engine (`echion -n`): each sampled thread is
//! captured by a signal (registers and stack top, see
//! [`echion_unwind::capture`]); while it waits in the handler its Python
//! frames are walked, so that both belong to the same instant; then it is
//! released, its native stack unwound, and each evaluation-loop frame
//! replaced by the Python frames it runs ([`echion_unwind::interleave`]).
//! Native frames are written as echion 0.3 writes them: file
//! `native@0x<pc>`, the function's (demangled) name, line 0.

use std::collections::HashMap;
use std::time::Duration;

use echion_cpython_layout::views::ViewError;
use echion_cpython_layout::views::{FrameInfo, FrameKind, FrameVisitor, Target};
use echion_cpython_layout::{Addr, MemoryReader};
use echion_mojo::{FrameId, FrameSpec};
use echion_unwind::{interleave, CaptureError, Capturer, NativeUnwinder, Piece, UnwindEnd};

use crate::cache::FrameCache;

/// The most Python frames one capture walks while the thread waits.
const MAX_PYTHON_FRAMES: usize = 4096;
/// The longest the sampler waits for a thread to take the capture signal.
const CAPTURE_TIMEOUT: Duration = Duration::from_millis(10);
/// Ticks between two checks of whether a thread that did not take the
/// signal still has it pending (it blocks it).
const PENDING_CHECK_TICKS: u64 = 64;

/// Why native stacks cannot be sampled.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No capture signal (see [`CaptureError`]).
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// The process's memory map cannot be read.
    #[error("cannot read the process's memory map: {0}")]
    Maps(#[from] std::io::Error),
}

/// Gives the native stacks' signal back to its default action once
/// sampling has stopped (see [`echion_unwind::capture::release_signal`]);
/// `false` if it had to stay (a thread still has it pending).
pub fn release_native_signal() -> bool {
    echion_unwind::capture::release_signal()
}

/// Counters of native sampling, written to the profile's metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NativeStats {
    /// Threads captured and unwound.
    pub captures: u64,
    /// Threads that did not take the signal in time (sampled with Python
    /// frames only).
    pub timeouts: u64,
    /// Samples left without native frames because a signal sent earlier
    /// was still pending (the thread blocks it).
    pub blocked: u64,
    /// Captures that failed otherwise (the thread ended, the signal was
    /// taken over by the program).
    pub failed: u64,
    /// Unwinds that stopped before the outermost frame.
    pub truncated: u64,
    /// Samples not taken because their thread was still to run free for
    /// as long as its last capture held it (see [`NativeStacks::resting`]):
    /// their time goes to the thread's next sample.
    pub rested: u64,
    /// Time captures held threads in all, in µs (from the signal sent to
    /// the thread let go: at most that).
    pub held_us: u64,
}

/// What is known of a thread captured before.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// The top of its stack (0: not known yet).
    top: u64,
    /// The tick and request of its capture that last timed out (tick 0:
    /// none pending).
    pending_since: u64,
    pending: u32,
    /// Until when (the engine's time) it runs free: as long after its
    /// last capture's release as that capture held it.
    free_at_ns: u64,
    /// The tick of that capture: a thread with a thread state in several
    /// interpreters is captured for each in one tick.
    captured_tick: u64,
}

/// What the engine keeps for native stacks.
pub(crate) struct NativeStacks {
    capturer: Capturer,
    unwinder: NativeUnwinder,
    /// Python frames walked while the thread waited, innermost first.
    raw: Vec<FrameInfo>,
    pcs: Vec<u64>,
    eval: Vec<bool>,
    ids: Vec<FrameId>,
    pieces: Vec<Piece>,
    /// Interned native frames by address (and whether each is the
    /// evaluation loop).
    frames: HashMap<u64, (FrameId, bool)>,
    /// Per thread (kernel id).
    threads: HashMap<u64, Known>,
    name: String,
    /// The thread the engine runs on.
    own_tid: i32,
    pub(crate) stats: NativeStats,
}

impl std::fmt::Debug for NativeStacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeStacks")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl NativeStacks {
    /// Sets up captures of this process's threads.
    pub(crate) fn new() -> Result<Self, NativeError> {
        Ok(NativeStacks {
            capturer: Capturer::new()?,
            unwinder: NativeUnwinder::new(std::process::id())?,
            raw: Vec::with_capacity(MAX_PYTHON_FRAMES),
            pcs: Vec::new(),
            eval: Vec::new(),
            ids: Vec::new(),
            pieces: Vec::new(),
            frames: HashMap::new(),
            threads: HashMap::new(),
            name: String::new(),
            own_tid: echion_unwind::capture::current_tid(),
            stats: NativeStats::default(),
        })
    }

    /// Captures thread `tid` and, while it waits, walks its Python frames
    /// from the frame its thread state at `tstate` holds at that instant
    /// (read live), in the engine's tick `tick` at `now_ns`. `false`: no
    /// capture this time (the caller walks the Python stack alone); else
    /// the frames are in [`NativeStacks::raw`].
    pub(crate) fn capture<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        cache: &FrameCache,
        tstate: Addr,
        tid: u64,
        tick: u64,
        now_ns: u64,
    ) -> bool {
        let Ok(tid_i32) = i32::try_from(tid) else {
            return false;
        };
        if tid_i32 == self.own_tid {
            // The sampler's own thread (not stealth): Python frames only.
            return false;
        }
        let mut known = self.threads.get(&tid).copied().unwrap_or_default();
        if known.pending_since != 0 {
            // A thread that was only slow to run has taken the signal by
            // now (its handler says so); one that blocks it still has it
            // pending: checked on the next tick, then every
            // PENDING_CHECK_TICKS.
            if !self.capturer.taken_late(known.pending) {
                let since = tick.saturating_sub(known.pending_since);
                if since > 1 && since % PENDING_CHECK_TICKS != 0 {
                    self.stats.blocked += 1;
                    return false;
                }
                if echion_unwind::capture::signal_pending(tid_i32, self.capturer.signal()) {
                    self.stats.blocked += 1;
                    return false;
                }
            }
            known.pending_since = 0;
            known.pending = 0;
            self.threads.insert(tid, known);
        }
        if self.threads.len() > 4096 {
            // Ended threads' entries: start again.
            self.threads.clear();
        }
        let raw = &mut self.raw;
        raw.clear();
        let sent_ns = crate::clock::now_ns();
        let result = self
            .capturer
            .capture(tid_i32, known.top, CAPTURE_TIMEOUT, |_| {
                // The thread waits: its frames are those of this instant.
                // No allocation here (`raw` has its capacity).
                let Ok(t) = target.thread(tstate) else {
                    return false;
                };
                let mut walk = RawWalk { raw, cache };
                target.walk(t.frame, &mut walk).is_ok()
            });
        let released_ns = crate::clock::now_ns();
        let (walked, cap) = match result {
            Ok(r) => r,
            Err(CaptureError::Timeout) => {
                self.stats.timeouts += 1;
                known.pending_since = tick.max(1);
                known.pending = self.capturer.last_request();
                self.threads.insert(tid, known);
                return false;
            }
            Err(_) => {
                self.stats.failed += 1;
                return false;
            }
        };
        if !walked {
            self.raw.clear();
        }
        // The thread waited in its handler (at most) from the signal to its
        // release: it runs free as long before the next capture. A capture
        // that takes as long as the interval (a loaded machine, a short
        // interval) would otherwise hold it nearly all the time: a
        // program that barely moves (1 ms: never; 100 µs on an idle
        // machine: every other tick).
        // (`now_ns`, the tick's time, is the engine's clock: the release
        // was about a hold after it, the next capture a hold later.)
        let held = released_ns.saturating_sub(sent_ns);
        self.stats.held_us += held / 1000;
        known.free_at_ns = now_ns.saturating_add(held.saturating_mul(2));
        known.captured_tick = tick;
        if known.top == 0 || cap.regs.sp >= known.top {
            known.top = self.unwinder.stack_top(cap.regs.sp).unwrap_or(0);
        }
        self.threads.insert(tid, known);
        let end = self.unwinder.unwind(&cap, &mut self.pcs);
        if end != UnwindEnd::Complete {
            self.stats.truncated += 1;
        }
        self.stats.captures += 1;
        true
    }

    /// Whether thread `tid` is still to run free at `now_ns`, in `tick`,
    /// after its capture in an earlier tick (see [`Known::free_at_ns`]):
    /// the engine then takes no sample of it (counted in
    /// [`NativeStats::rested`]). Its other thread states (its own in other
    /// interpreters) are captured in the same tick as the first.
    pub(crate) fn resting(&mut self, tid: u64, now_ns: u64, tick: u64) -> bool {
        let resting = self
            .threads
            .get(&tid)
            .is_some_and(|k| k.captured_tick != tick && now_ns < k.free_at_ns);
        self.stats.rested += u64::from(resting);
        resting
    }

    /// The Python frames of the last capture, innermost first.
    pub(crate) fn raw(&self) -> &[FrameInfo] {
        &self.raw
    }

    /// Interns the native frames of the last capture (through `intern`)
    /// and interleaves them with its Python frames, cut into `groups` (see
    /// [`groups`]).
    /// Calls `push` with the stack's entries innermost first: `Ok(i)` for
    /// Python frame `i`, `Err(id)` for a native frame.
    pub(crate) fn interleave(
        &mut self,
        groups: &[usize],
        mut intern: impl FnMut(&FrameSpec<'_>) -> FrameId,
        mut push: impl FnMut(Result<usize, FrameId>),
    ) {
        self.eval.clear();
        self.ids.clear();
        for (i, &pc) in self.pcs.iter().enumerate() {
            let (id, eval) = match self.frames.get(&pc) {
                Some(&hit) => hit,
                None => {
                    let sym = self.unwinder.symbol(pc, i);
                    use std::fmt::Write as _;
                    self.name.clear();
                    let _ = write!(self.name, "native@0x{pc:x}");
                    let id = intern(&FrameSpec {
                        filename: &self.name,
                        scope: &sym.name,
                        line: 0,
                        line_end: 0,
                        column: 0,
                        column_end: 0,
                    });
                    if self.frames.len() > 1 << 20 {
                        self.frames.clear();
                    }
                    // An address in no known module is named again next
                    // time (the map is read again when one shows up).
                    if sym.known {
                        self.frames.insert(pc, (id, sym.eval));
                    }
                    (id, sym.eval)
                }
            };
            self.eval.push(eval);
            self.ids.push(id);
        }
        interleave(&self.eval, groups, &mut self.pieces);
        for &piece in self.pieces.iter().rev() {
            match piece {
                Piece::Python(i) => push(Ok(i)),
                Piece::Native(n) => push(Err(self.ids[n])),
            }
        }
    }
}

/// Collects a walk's frames as they are (no decoding, no allocation: at
/// most the buffer's capacity).
struct RawWalk<'a> {
    raw: &'a mut Vec<FrameInfo>,
    cache: &'a FrameCache,
}

impl<R: MemoryReader + ?Sized> FrameVisitor<R> for RawWalk<'_> {
    type Error = ViewError;

    fn first_traceable(&mut self, target: &Target<'_, R>, code: Addr) -> Result<i32, ViewError> {
        match self.cache.peek_first_traceable(code.0) {
            Some(v) => Ok(v),
            None => target.code_firsttraceable(code),
        }
    }

    fn frame(&mut self, _target: &Target<'_, R>, info: &FrameInfo) -> Result<(), ViewError> {
        if self.raw.len() < self.raw.capacity() {
            self.raw.push(*info);
        }
        Ok(())
    }
}

/// How many Python frames each evaluation-loop call of `raw` (innermost
/// first, shims and incomplete frames included as the walk gave them)
/// runs, innermost call first, into `groups`: a call ends at its entry
/// frame (3.11 flags it, 3.12+ puts a shim after it; an entry frame not
/// started yet ends an empty group); `per_frame`: every frame is a call of
/// its own (≤ 3.10).
pub(crate) fn groups(raw: &[FrameInfo], per_frame: bool, groups: &mut Vec<usize>) {
    groups.clear();
    let mut count = 0;
    for info in raw {
        match info.kind {
            FrameKind::Python => {
                count += 1;
                if per_frame || info.is_entry {
                    groups.push(count);
                    count = 0;
                }
            }
            FrameKind::Incomplete => {
                if info.is_entry {
                    groups.push(count);
                    count = 0;
                }
            }
            FrameKind::Shim => {
                groups.push(count);
                count = 0;
            }
        }
    }
    if count > 0 {
        groups.push(count);
    }
}
