//! echion's memory mode: which Python stacks hold the memory that is still
//! allocated.
//!
//! [`install`] wraps CPython's three allocator domains (raw, mem, object:
//! what echion 0.3 tracks) with hooks that call the original allocator and
//! then account the block to the Python stack of the thread that allocated
//! it ([`table::Tracker`]); a free takes the block's bytes off the same
//! stack. The sampler thread [`drain`]s the change of every stack once per
//! interval and writes it as MOJO `METRIC_MEMORY` samples, so a profile
//! holds, per stack, the bytes it allocated and did not free.
//!
//! ```no_run
//! # fn main() -> Result<(), echion_memtrace::HookError> {
//! use echion_cpython_layout::PyVersion;
//! // In the profiled interpreter, with the GIL held:
//! echion_memtrace::install(PyVersion::new(3, 12, 1))?;
//! // … the program runs; once per interval, on the sampler thread:
//! let mut changed = echion_memtrace::Drained::default();
//! echion_memtrace::drain(&mut changed);
//! // … and at the end, GIL held again:
//! echion_memtrace::uninstall();
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod hooks;
pub mod table;

#[doc(hidden)]
pub use hooks::{bench_alloc, bench_free, bench_prepare};
pub use hooks::{
    code_freed, drain, install, reset, set_native, stop_tracking, tracking, uninstall,
};
pub use table::{AllocThread, Drained, StackRec, Taken, Tracker, TrackerStats};

use echion_cpython_layout::PyVersion;

/// Why the hooks cannot be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The interpreter's version has no layout here.
    #[error("memory mode does not support CPython {0}")]
    Unsupported(PyVersion),
    /// The interpreter does not export a function the hooks need.
    #[error("memory mode needs {0}, which this Python does not export")]
    MissingSymbol(&'static str),
}
