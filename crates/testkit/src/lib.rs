//! What the tests and benchmarks of every echion crate share: the CPython
//! interpreters 3.8 to 3.13 to run against, and child processes that are
//! killed when the test ends, however it ends.
//!
//! One policy for a missing interpreter: [`pythons`] panics naming every
//! missing version, so that no test passes by testing nothing.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The supported minor versions, oldest first.
pub const MINORS: std::ops::RangeInclusive<u8> = 8..=13;

/// One installed interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// The executable.
    pub exe: PathBuf,
    /// `sys.version_info[:3]`.
    pub version: (u8, u8, u8),
    /// `sysconfig.get_paths()['include']`.
    pub include: PathBuf,
}

impl Python {
    /// `3.X`.
    pub fn minor_name(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }
}

/// The interpreters for 3.8 to 3.13, oldest first: those listed
/// (colon-separated) in `ECHION_PYTHONS`, or else
/// `$PYENV_ROOT/versions/3.X.*/bin/python3` (`/root/.pyenv` by default).
///
/// # Panics
/// Naming every missing version.
pub fn pythons() -> Vec<Python> {
    let candidates: Vec<PathBuf> = match std::env::var("ECHION_PYTHONS") {
        Ok(list) if !list.is_empty() => list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => {
            let root = std::env::var_os("PYENV_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
            let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|d| d.path().join("bin/python3"))
                .filter(|p| p.is_file())
                .collect();
            // Newest micro version last, so that it wins below.
            found.sort();
            found.reverse();
            found
        }
    };
    let mut by_minor: Vec<Option<Python>> = vec![None; usize::from(*MINORS.end()) + 1];
    for exe in candidates {
        let Some(py) = ask(&exe) else { continue };
        let (major, minor, _) = py.version;
        if major == 3 && MINORS.contains(&minor) && by_minor[usize::from(minor)].is_none() {
            by_minor[usize::from(minor)] = Some(py);
        }
    }
    let missing: Vec<String> = MINORS
        .filter(|m| by_minor[usize::from(*m)].is_none())
        .map(|m| format!("3.{m}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no interpreter for {}: install it (pyenv install) or list executables in ECHION_PYTHONS",
        missing.join(", ")
    );
    by_minor.into_iter().flatten().collect()
}

/// Asks `exe` for its version and include directory.
fn ask(exe: &Path) -> Option<Python> {
    let out = Command::new(exe)
        .args([
            "-c",
            "import sys, sysconfig; v = sys.version_info; print(v.major, v.minor, v.micro, sysconfig.get_paths()['include'])",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.trim().splitn(4, ' ');
    let (a, b, c, inc) = (it.next()?, it.next()?, it.next()?, it.next()?);
    Some(Python {
        exe: exe.to_path_buf(),
        version: (a.parse().ok()?, b.parse().ok()?, c.parse().ok()?),
        include: PathBuf::from(inc),
    })
}

/// The workspace root (this crate lives in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A child process that is killed and reaped when dropped, so that a
/// failing test leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_is_found_once() {
        let found = pythons();
        let minors: Vec<u8> = found.iter().map(|p| p.version.1).collect();
        assert_eq!(minors, MINORS.collect::<Vec<_>>());
        assert!(found.iter().all(|p| p.include.join("Python.h").is_file()));
    }

    #[test]
    fn children_are_killed_on_drop() {
        let child = KillOnDrop(Command::new("sleep").arg("60").spawn().expect("sleep"));
        let pid = child.pid();
        drop(child);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "{pid} still there: {stat}");
    }
}
