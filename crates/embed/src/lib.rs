//! A CPython interpreter inside this process, for the benchmarks and tests
//! of echion's in-process read path.
//!
//! The profiler runs inside the interpreter it samples; a Rust benchmark
//! that reads another process measures `process_vm_readv` on a foreign
//! address space instead. [`Embedded::start`] loads `libpython3.X.so` with
//! `dlopen`, starts the interpreter on a thread of its own and runs a script
//! there (which usually ends up blocked, holding a known stack), so that a
//! sampler on another thread of this process reads it exactly as
//! `echion.core` does.
//!
//! One interpreter per process: run one process per Python version.
// Unsafe code is allowed in one module only: `ffi`.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};

use echion_cpython_layout::{Addr, PyVersion};

#[allow(unsafe_code)]
mod ffi;

/// Why the interpreter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// `dlopen` failed.
    #[error("cannot load {path}: {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// `dlerror()`.
        reason: String,
    },
    /// A symbol the embedding needs is missing.
    #[error("{0} is not in the library")]
    Symbol(&'static str),
    /// `Py_GetVersion` did not give a version.
    #[error("cannot parse the version {0:?}")]
    Version(String),
    /// The script contains a NUL byte.
    #[error("the script contains a NUL byte")]
    Script,
}

/// A running interpreter in this process.
#[derive(Debug)]
pub struct Embedded {
    runtime: Addr,
    version: PyVersion,
}

impl Embedded {
    /// Loads `libpython` (with `PYTHONHOME` set by the caller when the
    /// library's prefix is not where this executable is), starts the
    /// interpreter on a new thread and runs `script` there. The thread keeps
    /// the interpreter for as long as the script runs; returns at once.
    pub fn start(libpython: &Path, script: &str) -> Result<Self, EmbedError> {
        let script = std::ffi::CString::new(script).map_err(|_| EmbedError::Script)?;
        let lib = ffi::Library::open(libpython)?;
        let version_text = lib.version()?;
        let version = parse_version(&version_text).ok_or(EmbedError::Version(version_text))?;
        let runtime = lib.runtime()?;
        lib.run_on_new_thread(script)?;
        Ok(Self { runtime, version })
    }

    /// The address of `_PyRuntime`.
    pub fn runtime(&self) -> Addr {
        self.runtime
    }

    /// The interpreter's version.
    pub fn version(&self) -> PyVersion {
        self.version
    }
}

/// `"3.11.7 (main, ...)"` → 3.11.7.
fn parse_version(text: &str) -> Option<PyVersion> {
    let head = text.split_whitespace().next()?;
    let mut parts = head.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let micro: String = parts
        .next()
        .unwrap_or("0")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(PyVersion::new(major, minor, micro.parse().unwrap_or(0)))
}

/// The `libpython3.X.so` of an interpreter executable
/// (`PREFIX/bin/python3` → `PREFIX/lib/libpython3.X.so.1.0`), found by
/// asking the interpreter; with the prefix to use as `PYTHONHOME`.
pub fn libpython_of(python: &Path) -> Option<(PathBuf, PathBuf)> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, sysconfig; print(sys.base_prefix); print(sysconfig.get_config_var('LDLIBRARY') or '')",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let prefix = PathBuf::from(lines.next()?);
    let name = lines.next()?;
    if name.is_empty() || !name.ends_with(".so") && !name.contains(".so.") {
        return None;
    }
    let lib = prefix.join("lib").join(name);
    lib.exists().then_some((lib, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("3.11.7 (main, Jan  1 2024, 00:00:00) [GCC 12.2.0]"),
            Some(PyVersion::new(3, 11, 7))
        );
        assert_eq!(
            parse_version("3.13.0rc1 (main)"),
            Some(PyVersion::new(3, 13, 0))
        );
        assert_eq!(parse_version("nonsense"), None);
    }
}
