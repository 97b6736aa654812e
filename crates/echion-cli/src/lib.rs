#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod args;
mod attach;
mod bootstrap;
mod config;
mod error;
mod launch;
mod resolve;
mod where_mode;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

pub use bootstrap::{beside_executable, find_bootstrap_dir, BOOTSTRAP_QUERY};
pub use config::{
    expand_pid, parse, parse_exposure, parse_interval, Config, DEFAULT_INTERVAL_US, DEFAULT_OUTPUT,
    PID_PLACEHOLDER,
};
pub use error::{CliError, Quoted, EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_USAGE};
pub use launch::{
    launch_plan, Launch, ENV_BOOTSTRAP_DIR, ENV_CPU, ENV_EXPOSURE, ENV_INTERVAL, ENV_MEMORY,
    ENV_NATIVE, ENV_OUTPUT, ENV_PYTHONPATH, ENV_STEALTH, ENV_VERBOSE,
};
pub use resolve::{interpreter_for, is_python_name, resolve_command, SearchPath};

/// Runs the `echion` command line `args` (without argv\[0\]): parses and
/// validates it, finds the bootstrap directory (`bootstrap_dir` if given,
/// else as [`find_bootstrap_dir`] does) and `exec`s the command with the
/// [`launch_plan`] environment, so that the command's exit status, signals
/// and standard streams are those of this process.
///
/// Returns only when nothing was run: 0 after `-h`/`-V`, otherwise the
/// error's exit code (see [`CliError::exit_code`]) after printing
/// `echion: <message>` (and at most a hint line) on stderr.
pub fn run(args: Vec<OsString>, bootstrap_dir: Option<PathBuf>) -> i32 {
    match exec(args, bootstrap_dir) {
        Ok(never) => match never {},
        Err(err) => err.report(),
    }
}

/// [`run`] up to the `exec`, which only returns on failure.
fn exec(args: Vec<OsString>, bootstrap_dir: Option<PathBuf>) -> Result<Infallible, CliError> {
    let ctx = config::Context::current();
    let config = config::parse_in(args, &ctx)?;
    if let Some(pid) = config.where_pid {
        std::process::exit(where_mode::show(pid, config.json)?);
    }
    if config.attach_pid.is_some() {
        let dir = bootstrap::find_for_attach(bootstrap_dir, &ctx.path)?;
        if config.verbose {
            eprintln!("echion: bootstrap directory {}", Quoted::new(&dir));
        }
        std::process::exit(attach::run(&config, &dir)?);
    }
    // `parse_in` checked that there is a command and that it resolves.
    let program = resolve_command(&config.command[0], &ctx.path)?;
    let bootstrap_dir = find_bootstrap_dir(bootstrap_dir, &program, &ctx.path)?;
    let plan = launch_plan(&config, &bootstrap_dir);
    if config.verbose {
        eprintln!(
            "echion: bootstrap directory {}",
            Quoted::new(&bootstrap_dir)
        );
        for (key, value) in &plan.env {
            eprintln!("echion: {}={}", key.to_string_lossy(), Quoted::new(value));
        }
        eprintln!("echion: exec {}", Quoted::new(&program));
    }
    // The first process to profile keeps the name it was given, and takes it
    // over only when it is empty: a profile from an earlier run (that no
    // running process still writes) is emptied now.
    if !config.output.contains(PID_PLACEHOLDER) {
        echion_sampler::output::reset(std::path::Path::new(&config.output));
    }
    // Exec the resolved file (no second PATH search) with argv[0] as the
    // user wrote it, like a shell does.
    let source = Command::new(&program)
        .arg0(&plan.program)
        .args(&plan.args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(CliError::Exec {
        command: Quoted::new(&plan.program),
        source,
    })
}
