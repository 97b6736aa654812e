//! The `echion` command: see the `echion_cli` crate.
//!
//! Built into the Python package as `echion/_echion`, where the package's
//! `echion` launcher runs it (no Python starts before the profiled one):
//! the bootstrap directory is then its sibling.

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() {
    std::process::exit(echion_cli::run(
        std::env::args_os().skip(1).collect(),
        package_bootstrap(),
    ))
}

/// `bootstrap/` next to this executable, when it has the `sitecustomize.py`
/// of an installed echion package; `None` elsewhere (`cargo install`: the
/// front end asks the program's interpreter where echion is).
fn package_bootstrap() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.join("bootstrap");
    dir.join("sitecustomize.py").is_file().then_some(dir)
}
