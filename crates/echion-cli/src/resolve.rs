//! Finding the command like `execvp` would, before anything runs, and finding
//! the Python interpreter it will run.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::config::io_reason;
use crate::error::{CliError, Quoted};

/// glibc's search path when `PATH` is unset (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The directories a command name without `/` is searched in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath(pub OsString);

impl SearchPath {
    /// This process's `PATH`, or glibc's default when it is unset.
    pub fn from_env() -> Self {
        SearchPath(std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()))
    }

    /// The directories in search order; an empty entry is the current
    /// directory, as for `execvp`.
    pub(crate) fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.0.as_bytes().split(|&b| b == b':').map(|entry| {
            if entry.is_empty() {
                PathBuf::from(".")
            } else {
                PathBuf::from(OsStr::from_bytes(entry))
            }
        })
    }
}

/// Why a candidate file cannot be executed, or `None` when it can.
fn not_executable(path: &Path) -> Result<Option<String>, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(Some("is a directory".to_owned()));
    }
    if !meta.is_file() {
        return Ok(Some("not a regular file".to_owned()));
    }
    Ok(access(path, AccessFlags::X_OK)
        .err()
        .map(|errno| errno.desc().to_lowercase()))
}

/// Resolves `command` the way `execvp` does: a name containing `/` is used
/// as is; otherwise the first executable regular file of that name on
/// `path` wins, and entries that exist but cannot be executed are skipped.
///
/// Fails with [`CliError::CommandNotFound`] when nothing of that name exists
/// and [`CliError::CommandNotExecutable`] when only unusable entries do.
pub fn resolve_command(command: &OsStr, path: &SearchPath) -> Result<PathBuf, CliError> {
    let not_found = |on_path| CliError::CommandNotFound {
        command: Quoted::new(command),
        on_path,
    };
    let not_executable_err = |reason| CliError::CommandNotExecutable {
        command: Quoted::new(command),
        reason,
    };
    if command.is_empty() {
        return Err(not_found(false));
    }
    if command.as_bytes().contains(&b'/') {
        let candidate = PathBuf::from(command);
        return match not_executable(&candidate) {
            Ok(None) => Ok(candidate),
            Ok(Some(reason)) => Err(not_executable_err(reason)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(false)),
            Err(e) => Err(not_executable_err(io_reason(&e))),
        };
    }
    let mut unusable = None;
    for dir in path.dirs() {
        let candidate = dir.join(command);
        match not_executable(&candidate) {
            Ok(None) => return Ok(candidate),
            Ok(Some(reason)) => {
                unusable.get_or_insert(reason);
            }
            // Missing here (or an unreadable directory): keep looking, as
            // execvp does.
            Err(_) => {}
        }
    }
    match unusable {
        Some(reason) => Err(not_executable_err(reason)),
        None => Err(not_found(true)),
    }
}

/// Whether a file name looks like a CPython interpreter (`python`,
/// `python3`, `python3.11`, `python3.13t`, …).
pub fn is_python_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"python")
}

/// The Python interpreter that running `program` (already resolved) will
/// start: the program itself when its name starts with `python`, else the
/// interpreter named by its `#!` line (directly or through `env`), else
/// `None`.
pub fn interpreter_for(program: &Path, path: &SearchPath) -> Option<PathBuf> {
    if program.file_name().is_some_and(is_python_name) {
        return Some(program.to_path_buf());
    }
    let line = shebang(program)?;
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(OsStr::from_bytes);
    let interpreter = Path::new(words.next()?);
    if interpreter.file_name().is_some_and(is_python_name) {
        return Some(interpreter.to_path_buf());
    }
    if interpreter.file_name() == Some(OsStr::new("env")) {
        // `#!/usr/bin/env [-S] [VAR=value…] python3 …`
        let name =
            words.find(|w| !w.as_bytes().starts_with(b"-") && !w.as_bytes().contains(&b'='))?;
        if is_python_name(name) {
            return resolve_command(name, path).ok();
        }
    }
    None
}

/// The `#!` line of `program` without the `#!`, if it has one.
fn shebang(program: &Path) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(program)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let rest = head.strip_prefix(b"#!")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    Some(rest[..end].to_vec())
}
