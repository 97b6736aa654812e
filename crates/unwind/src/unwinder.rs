//! Unwinding a captured thread with framehop, and naming what was found.

use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, Unwinder};

use crate::capture::{Captured, Registers};
use crate::modules::ModuleMap;

/// The most native frames one unwind yields.
pub const MAX_NATIVE_FRAMES: usize = 512;
/// The least time between two readings of the memory map that an unknown
/// address asks for.
const REFRESH_EVERY: Duration = Duration::from_millis(20);

/// How an unwind ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindEnd {
    /// At the outermost frame (a null return address or no rule past it).
    Complete,
    /// [`MAX_NATIVE_FRAMES`] reached.
    Truncated,
    /// The stack copy ended before the outermost frame.
    StackEnded,
}

/// What a native frame's address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// The function, demangled; `<module>+0x<offset>` when no symbol holds
    /// the address, `<unknown>` when no module does.
    pub name: String,
    /// Whether it is the interpreter's evaluation loop, whose frames are
    /// replaced by the Python frames they run.
    pub eval: bool,
    /// Whether a module holds the address (a name worth keeping: an
    /// address in no module may be in one loaded since the map was read).
    pub known: bool,
}

/// Unwinds captures of threads of one process.
pub struct NativeUnwinder {
    map: ModuleMap,
    cache: CacheX86_64,
    last_refresh: Option<Instant>,
}

impl std::fmt::Debug for NativeUnwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeUnwinder")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl NativeUnwinder {
    /// An unwinder for process `pid`, its module map read now.
    pub fn new(pid: u32) -> std::io::Result<Self> {
        Ok(Self::with_map(ModuleMap::new(pid)?))
    }

    /// An unwinder over a module map built elsewhere.
    pub fn with_map(map: ModuleMap) -> Self {
        NativeUnwinder {
            map,
            cache: CacheX86_64::new(),
            last_refresh: None,
        }
    }

    /// The module map.
    pub fn modules(&self) -> &ModuleMap {
        &self.map
    }

    /// Reads the memory map again if an address found no module and the
    /// last reading is old enough; `true` if it did.
    pub fn refresh_if_due(&mut self) -> bool {
        let due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if due {
            self.last_refresh = Some(Instant::now());
            let _ = self.map.refresh();
        }
        due
    }

    /// Whether `pc` is in no mapping read so far (a library loaded since:
    /// reading the map again helps). An address in a mapping that is no
    /// module (JIT code, trampolines) does not ask for it.
    pub fn unknown(&self, pc: u64) -> bool {
        self.map.module_at(pc).is_none() && self.map.mapping_at(pc).is_none()
    }

    /// Where the stack that holds `sp` ends (one past its highest
    /// address), from the memory map (read again once if `sp` is in no
    /// mapping known).
    pub fn stack_top(&mut self, sp: u64) -> Option<u64> {
        if let Some(m) = self.map.mapping_at(sp) {
            return Some(m.end);
        }
        if self.refresh_if_due() {
            return self.map.mapping_at(sp).map(|m| m.end);
        }
        None
    }

    /// Unwinds `cap` into `out`: the addresses of its native frames,
    /// innermost first (the instruction pointer, then return addresses).
    /// An address in no mapping read so far has the memory map read again
    /// (at most every 20 ms) and the unwind done again.
    pub fn unwind(&mut self, cap: &Captured<'_>, out: &mut Vec<u64>) -> UnwindEnd {
        let end = self.unwind_once(cap, out);
        if out.iter().any(|&pc| self.unknown(pc)) && self.refresh_if_due() {
            return self.unwind_once(cap, out);
        }
        end
    }

    fn unwind_once(&mut self, cap: &Captured<'_>, out: &mut Vec<u64>) -> UnwindEnd {
        let (base, stack) = (cap.regs.sp, cap.stack);
        let read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(base).ok_or(())? as usize;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        self.unwind_with(cap.regs, read_stack, out)
    }

    /// Unwinds from `regs`, reading the stack through `read_stack` (the
    /// `u64` at an address, or `Err` where there is none): a thread
    /// unwinding its own live stack, from a function that is still running.
    /// Addresses innermost first into `out`. Does not read the memory map
    /// again (see [`NativeUnwinder::refresh_if_due`]).
    pub fn unwind_with(
        &mut self,
        regs: Registers,
        mut read_stack: impl FnMut(u64) -> Result<u64, ()>,
        out: &mut Vec<u64>,
    ) -> UnwindEnd {
        out.clear();
        let start = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut frames =
            self.map
                .unwinder
                .iter_frames(regs.ip, start, &mut self.cache, &mut read_stack);
        loop {
            if out.len() >= MAX_NATIVE_FRAMES {
                return UnwindEnd::Truncated;
            }
            match frames.next() {
                Ok(Some(FrameAddress::InstructionPointer(pc))) => out.push(pc),
                Ok(Some(FrameAddress::ReturnAddress(pc))) => out.push(pc.get()),
                Ok(None) => return UnwindEnd::Complete,
                Err(framehop::Error::CouldNotReadStack(_)) => return UnwindEnd::StackEnded,
                Err(_) => return UnwindEnd::Complete,
            }
        }
    }

    /// The function at `pc`, the `index`-th address of an unwind (0: the
    /// instruction pointer; the others are return addresses, looked up one
    /// byte back so that a call that ends its function is named right).
    pub fn symbol(&self, pc: u64, index: usize) -> Symbol {
        let lookup = if index == 0 { pc } else { pc.saturating_sub(1) };
        let Some(module) = self.map.module_at(lookup) else {
            return Symbol {
                name: "<unknown>".to_owned(),
                eval: false,
                known: false,
            };
        };
        match module.symbols.lookup(lookup.wrapping_sub(module.bias)) {
            Some(found) => Symbol {
                eval: is_eval(found.name),
                name: crate::symbols::demangle(found.name),
                known: true,
            },
            None => Symbol {
                name: format!("{}+0x{:x}", module.name(), lookup.wrapping_sub(module.bias)),
                eval: false,
                known: true,
            },
        }
    }
}

/// Whether a function is CPython's evaluation loop (any version 3.8–3.13;
/// a compiler's split-off parts of it, `.cold`, count too).
pub fn is_eval(name: &str) -> bool {
    name == "_PyEval_EvalFrameDefault" || name.starts_with("_PyEval_EvalFrameDefault.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_loops_are_recognised() {
        assert!(is_eval("_PyEval_EvalFrameDefault"));
        assert!(is_eval("_PyEval_EvalFrameDefault.cold"));
        assert!(!is_eval("_PyEval_EvalFrame"));
        assert!(!is_eval("PyEval_EvalCode"));
    }
}
