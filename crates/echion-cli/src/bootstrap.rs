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

/// Where pip puts packages under an install prefix (`PREFIX/bin/echion`
/// is the command): a venv's or `--user`'s `lib/python3.X/site-packages`,
/// Fedora's `lib64` (platform wheels), Debian's `dist-packages`.
const PACKAGE_DIRS: [(&str, &str); 4] = [
    ("lib", "site-packages"),
    ("lib64", "site-packages"),
    ("lib", "dist-packages"),
    ("local/lib", "dist-packages"),
];

/// Whether the packages directory `site` holds the record of this version
/// of echion (`echion-VERSION.dist-info`).
fn has_own_record(site: &Path) -> bool {
    let version = env!("CARGO_PKG_VERSION");
    match version.split_once(['-', '+']) {
        None => site.join(format!("echion-{version}.dist-info")).is_dir(),
        Some((release, _)) => {
            // pip spells a pre-release as PEP 440 does (0.5.0-rc.1 is
            // 0.5.0rc1): the release is what is compared.
            let prefix = format!("echion-{release}");
            std::fs::read_dir(site)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".dist-info")
                })
        }
    }
}

/// The bootstrap directory of the echion package that the executable
/// `exe` came with: for the `echion` command that pip installed as
/// `PREFIX/bin/echion`, the package of this same version
/// (`echion-VERSION.dist-info` beside it) under `PREFIX`'s packages. `None`
/// for an executable installed otherwise (`cargo install`): the program's
/// interpreter is then asked.
pub fn beside_executable(exe: &Path) -> Option<PathBuf> {
    let prefix = exe.parent()?.parent()?;
    for (lib, packages) in PACKAGE_DIRS {
        let lib = prefix.join(lib);
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut pythons: Vec<OsString> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.as_encoded_bytes().starts_with(b"python3"))
            .collect();
        pythons.sort();
        for python in pythons {
            let site = lib.join(python).join(packages);
            let bootstrap = site.join("echion").join("bootstrap");
            if bootstrap.join("sitecustomize.py").is_file() && has_own_record(&site) {
                return Some(bootstrap);
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn the_command_finds_its_own_package_under_its_prefix() {
        let root = std::env::temp_dir().join(format!("echion-beside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // PREFIX/bin/echion: a package without this version's record (another
        // version, installed for another Python) is passed over.
        let venv = root.join("venv");
        let exe = venv.join("bin/echion");
        let other = venv.join("lib/python3.10/site-packages");
        touch(&other.join("echion/bootstrap/sitecustomize.py"));
        std::fs::create_dir_all(other.join("echion-0.0.1.dist-info")).unwrap();
        assert_eq!(beside_executable(&exe), None);
        let ours = venv.join("lib/python3.12/site-packages");
        touch(&ours.join("echion/bootstrap/sitecustomize.py"));
        std::fs::create_dir_all(
            ours.join(format!("echion-{}.dist-info", env!("CARGO_PKG_VERSION"))),
        )
        .unwrap();
        assert_eq!(beside_executable(&exe), Some(ours.join("echion/bootstrap")));
        // Debian's layout.
        let system = root.join("usr");
        let debian = system.join("local/lib/python3.11/dist-packages");
        touch(&debian.join("echion/bootstrap/sitecustomize.py"));
        std::fs::create_dir_all(
            debian.join(format!("echion-{}.dist-info", env!("CARGO_PKG_VERSION"))),
        )
        .unwrap();
        assert_eq!(
            beside_executable(&system.join("bin/echion")),
            Some(debian.join("echion/bootstrap"))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
