//! [`Launch`]: what to `exec` and with which environment.
//!
//! The environment is the whole contract between this front end and the
//! bootstrap that runs inside the profiled interpreter (`echion.bootstrap`'s
//! `sitecustomize`): every option is passed as an `ECHION_*` variable, and the
//! bootstrap directory goes first on `PYTHONPATH` so that its
//! `sitecustomize` is imported at interpreter start-up.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;

use echion_sampler::options::{env, Options};
use echion_sampler::Mode;

/// Sampling interval in microseconds (see [`echion_sampler::options::env`],
/// where every variable is defined).
pub const ENV_INTERVAL: &str = env::INTERVAL;
/// CPU mode: `0` or `1`.
pub const ENV_CPU: &str = env::CPU;
/// Memory mode: `0` or `1`.
pub const ENV_MEMORY: &str = env::MEMORY;
/// Native mode: `0` or `1`.
pub const ENV_NATIVE: &str = env::NATIVE;
/// Stealth mode: `0` or `1`.
pub const ENV_STEALTH: &str = env::STEALTH;
/// Exposure in seconds as a decimal (`2`, `0.5`), empty for none.
pub const ENV_EXPOSURE: &str = env::EXPOSURE;
/// Absolute output path, `%(pid)` left in for each process to expand.
pub const ENV_OUTPUT: &str = env::OUTPUT;
/// Verbose logging: `0` or `1`.
pub const ENV_VERBOSE: &str = env::VERBOSE;
/// The interpreter's module search path; the bootstrap directory is put first.
pub const ENV_PYTHONPATH: &str = "PYTHONPATH";
/// Overrides where the bootstrap directory is looked for (see [`crate::run`]).
pub const ENV_BOOTSTRAP_DIR: &str = "ECHION_BOOTSTRAP_DIR";

/// The process image to `exec`: the command of a [`Config`] and the
/// variables to set on top of the inherited environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The command as the user wrote it (`argv[0]`); empty when the config
    /// has no command.
    pub program: OsString,
    /// The command's arguments (`argv[1..]`).
    pub args: Vec<OsString>,
    /// Variables to set, in this order: the `ECHION_*` options, then
    /// `PYTHONPATH`. Everything else is inherited unchanged.
    pub env: Vec<(OsString, OsString)>,
}

/// Plans the `exec` of `config`'s command with the bootstrap in
/// `bootstrap_dir`, reading the current `PYTHONPATH` and working directory.
///
/// Relative output and bootstrap paths are made absolute against the
/// current directory, so that a program that changes directory before it
/// forks still writes where the user asked.
pub fn launch_plan(config: &Config, bootstrap_dir: &Path) -> Launch {
    let cwd = std::env::current_dir().ok();
    plan_with(
        config,
        bootstrap_dir,
        std::env::var_os(ENV_PYTHONPATH).as_deref(),
        cwd.as_deref(),
    )
}

/// [`launch_plan`] with its inputs from the environment made explicit.
pub(crate) fn plan_with(
    config: &Config,
    bootstrap_dir: &Path,
    pythonpath: Option<&OsStr>,
    cwd: Option<&Path>,
) -> Launch {
    let options = Options {
        interval: Duration::from_micros(config.interval_us),
        mode: if config.cpu { Mode::Cpu } else { Mode::Wall },
        exposure: config.exposure,
        output: absolute(Path::new(&config.output), cwd)
            .to_string_lossy()
            .into_owned(),
        memory: config.memory,
        native: config.native,
        stealth: config.stealth,
        no_thread: config.no_thread,
        verbose: config.verbose,
        format: config.format.map(|f| f.name().to_owned()),
        summary: config.summary,
        direct_reads: true,
    };
    let mut env: Vec<(OsString, OsString)> = options
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    env.push((
        ENV_PYTHONPATH.into(),
        prepend_path(&absolute(bootstrap_dir, cwd), pythonpath),
    ));
    let mut command = config.command.iter().cloned();
    Launch {
        program: command.next().unwrap_or_default(),
        args: command.collect(),
        env,
    }
}

/// `path` joined to `cwd` when it is relative and `cwd` is known.
fn absolute(path: &Path, cwd: Option<&Path>) -> PathBuf {
    match cwd {
        Some(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    }
}

/// `dir` followed by the existing search path, if it has anything in it.
pub(crate) fn prepend_path(dir: &Path, existing: Option<&OsStr>) -> OsString {
    let mut value = dir.as_os_str().to_os_string();
    if let Some(rest) = existing.filter(|p| !p.is_empty()) {
        value.push(":");
        value.push(rest);
    }
    value
}
