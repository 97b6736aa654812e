//! Locating the directory of the bootstrap `sitecustomize.py`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{escape_controls, CliError, Quoted};
use crate::launch::ENV_BOOTSTRAP_DIR;
use crate::resolve::{interpreter_for, resolve_command, SearchPath};

/// The question asked of the interpreter. Importing `echion.bootstrap` (not
/// just finding it) also proves that `echion.core` loads in that interpreter.
pub const BOOTSTRAP_QUERY: &str =
    "import echion.bootstrap, os; print(os.path.dirname(echion.bootstrap.__file__))";

/// Finds the bootstrap directory for running `program` (already resolved):
/// `explicit` if given; else `$ECHION_BOOTSTRAP_DIR` if set and non-empty;
/// else the answer of the interpreter that `program` runs (see
/// [`crate::resolve::interpreter_for`]), or of `python3` on `path` when it
/// is not a Python program. The directory must contain `sitecustomize.py`.
pub fn find_bootstrap_dir(
    explicit: Option<PathBuf>,
    program: &Path,
    path: &SearchPath,
) -> Result<PathBuf, CliError> {
    let dir = match explicit.or_else(from_env) {
        Some(dir) => dir,
        None => {
            let python = interpreter_for(program, path)
                .or_else(|| resolve_command("python3".as_ref(), path).ok())
                .ok_or(CliError::NoInterpreter)?;
            ask_interpreter(&python)?
        }
    };
    check_bootstrap_dir(&dir)?;
    Ok(dir)
}

/// Finds the bootstrap directory for `echion -p`: `explicit` if given (the
/// `echion` command of the Python package passes its own), else
/// `$ECHION_BOOTSTRAP_DIR`, else the answer of `python3` on `path`. The
/// process attached to needs no echion of its own: the package next to
/// this directory is loaded into it.
pub(crate) fn find_for_attach(
    explicit: Option<PathBuf>,
    path: &SearchPath,
) -> Result<PathBuf, CliError> {
    let dir = match explicit.or_else(from_env) {
        Some(dir) => dir,
        None => {
            let python =
                resolve_command("python3".as_ref(), path).map_err(|_| CliError::NoInterpreter)?;
            ask_interpreter(&python)?
        }
    };
    check_bootstrap_dir(&dir)?;
    Ok(dir)
}

/// `$ECHION_BOOTSTRAP_DIR` when set and not empty.
fn from_env() -> Option<PathBuf> {
    std::env::var_os(ENV_BOOTSTRAP_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Runs [`BOOTSTRAP_QUERY`] with `python` and returns the directory it
/// prints.
pub(crate) fn ask_interpreter(python: &Path) -> Result<PathBuf, CliError> {
    let not_installed = |detail: String| CliError::BootstrapNotInstalled {
        python: Quoted::new(python),
        python_raw: python.to_string_lossy().into_owned(),
        detail,
    };
    let output = Command::new(python)
        .args(["-c", BOOTSTRAP_QUERY])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| not_installed(format!(" ({e})")))?;
    if !output.status.success() {
        // The last line of a traceback names the exception, e.g.
        // `ModuleNotFoundError: No module named 'echion'`.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| format!(" ({})", escape_controls(l)))
            .unwrap_or_default();
        return Err(not_installed(detail));
    }
    let mut stdout = output.stdout;
    while stdout.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        stdout.pop();
    }
    if stdout.is_empty() {
        return Err(not_installed(" (no answer)".to_owned()));
    }
    Ok(PathBuf::from(OsString::from_vec(stdout)))
}

/// Checks that `dir` is a directory with a `sitecustomize.py`.
pub(crate) fn check_bootstrap_dir(dir: &Path) -> Result<(), CliError> {
    let bad = |reason| CliError::BadBootstrapDir {
        dir: Quoted::new(dir),
        reason,
    };
    if !dir.is_dir() {
        return Err(bad("does not exist or is not a directory"));
    }
    if !dir.join("sitecustomize.py").is_file() {
        return Err(bad("has no sitecustomize.py"));
    }
    Ok(())
}
