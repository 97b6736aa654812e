#![doc = include_str!("../README.md")]
// Unsafe code is allowed in one module only: `mem::guarded`.
#![deny(unsafe_code)]

pub mod cache;
pub mod clock;
pub mod codewatch;
pub mod dump;
pub mod engine;
pub mod greenlets;
pub mod mem;
pub mod native;
pub mod options;
pub mod output;
pub mod pthread;
pub mod registry;
pub mod run;
pub mod session;
pub mod sink;
pub mod tasks;

pub use dump::Dump;
pub use echion_cpython_layout::PyVersion;
pub use engine::{Engine, Mode, SkipReason, StackSet, Stats, ThreadFilter};
pub use mem::guarded::release_fault_handler;
pub use native::release_native_signal;
pub use options::Options;
pub use registry::{RegistryQueue, Update};
pub use run::{
    note_out_of_memory, prepare, reader_for, request_dump, run, sidecar_path, Config, Control,
    SamplerError, Summary, Ticking,
};
pub use session::{Session, SessionError};
pub use sink::{Sink, ThreadIds};
