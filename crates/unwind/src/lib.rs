//! Native stacks for echion: what C code a Python thread is running, shown
//! between the Python frames that called it.
//!
//! - [`capture`]: a thread's registers and the top of its stack, taken at
//!   one instant in a signal handler on the thread (the crate's only
//!   unsafe code);
//! - [`modules`]: the process's module map (executable, `libpython`, every
//!   shared object, the vDSO), with each module's unwind information
//!   (`.eh_frame`, `.eh_frame_hdr`, `.debug_frame`) and symbols, kept
//!   current as libraries are loaded;
//! - [`unwinder`]: framehop unwinding of a capture into return addresses,
//!   and their names (ELF `.symtab`/`.dynsym`, demangled);
//! - [`interleave`]: each evaluation-loop frame replaced by the Python
//!   frames it runs;
//! - [`record`]: captures saved with the unwind information they need, so
//!   unwinding is tested without a live process.
//!
//! x86_64 Linux only.
#![deny(unsafe_code)]

pub mod capture;
pub mod ehframe;
pub mod interleave;
pub mod maps;
pub mod modules;
pub mod record;
pub mod symbols;
pub mod unwinder;

pub use capture::{CaptureError, Captured, Capturer, Registers};
pub use interleave::{interleave, Piece};
pub use modules::ModuleMap;
pub use unwinder::{NativeUnwinder, Symbol, UnwindEnd};
