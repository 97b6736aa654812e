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

/// Sampling interval in microseconds, a positive decimal integer.
pub const ENV_INTERVAL: &str = "ECHION_INTERVAL";
/// CPU mode: `0` or `1`.
pub const ENV_CPU: &str = "ECHION_CPU";
/// Memory mode: `0` or `1`.
pub const ENV_MEMORY: &str = "ECHION_MEMORY";
/// Native mode: `0` or `1`.
pub const ENV_NATIVE: &str = "ECHION_NATIVE";
/// Stealth mode: `0` or `1`.
pub const ENV_STEALTH: &str = "ECHION_STEALTH";
/// Where mode: empty, or the pid to show the stacks of.
pub const ENV_WHERE: &str = "ECHION_WHERE";
/// Exposure in seconds as a decimal (`2`, `0.5`), empty for none.
pub const ENV_EXPOSURE: &str = "ECHION_EXPOSURE";
/// Absolute output path, `%(pid)` left in for each process to expand.
pub const ENV_OUTPUT: &str = "ECHION_OUTPUT";
/// Verbose logging: `0` or `1`.
pub const ENV_VERBOSE: &str = "ECHION_VERBOSE";
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
    let flag = |on: bool| OsString::from(if on { "1" } else { "0" });
    let output = absolute(Path::new(&config.output), cwd).into_os_string();
    let env = vec![
        (ENV_INTERVAL.into(), config.interval_us.to_string().into()),
        (ENV_CPU.into(), flag(config.cpu)),
        (ENV_MEMORY.into(), flag(config.memory)),
        (ENV_NATIVE.into(), flag(config.native)),
        (ENV_STEALTH.into(), flag(config.stealth)),
        (
            ENV_WHERE.into(),
            config
                .where_pid
                .map(|p| p.to_string())
                .unwrap_or_default()
                .into(),
        ),
        (
            ENV_EXPOSURE.into(),
            config.exposure.map(seconds).unwrap_or_default().into(),
        ),
        (ENV_OUTPUT.into(), output),
        (ENV_VERBOSE.into(), flag(config.verbose)),
        (
            ENV_PYTHONPATH.into(),
            prepend_path(&absolute(bootstrap_dir, cwd), pythonpath),
        ),
    ];
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

/// A duration as decimal seconds without trailing zeros: `2`, `0.5`,
/// `1.000001`.
pub(crate) fn seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}
