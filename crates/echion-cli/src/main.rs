//! The `echion` command: see the `echion_cli` crate.

#![forbid(unsafe_code)]

fn main() {
    std::process::exit(echion_cli::run(std::env::args_os().skip(1).collect(), None))
}
