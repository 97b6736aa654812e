//! The `echion` command: see the `echion_cli` crate.
//!
//! The published wheel installs it as the `echion` command itself
//! (`PREFIX/bin/echion`: no shell and no Python start before the profiled
//! program); the bootstrap directory is that of the package it came with.

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() {
    std::process::exit(echion_cli::run(
        std::env::args_os().skip(1).collect(),
        package_bootstrap(),
    ))
}

/// The bootstrap directory of the package this executable came with
/// ([`echion_cli::beside_executable`]); `None` elsewhere (`cargo install`:
/// the front end asks the program's interpreter where echion is).
fn package_bootstrap() -> Option<PathBuf> {
    echion_cli::beside_executable(&std::env::current_exe().ok()?)
}
