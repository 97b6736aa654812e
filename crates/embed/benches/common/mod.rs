//! What the in-process benches share: one interpreter per process.

use std::path::{Path, PathBuf};
use std::process::Command;

use echion_cpython_layout::{process, Layout, PyVersion};
use echion_embed::{libpython_of, Embedded};
use echion_sampler::mem::guarded::{self, GuardedReader};

/// Runs `bench` with the libpython that `ECHION_EMBED_LIB` names; without
/// it, runs this executable again (same arguments) once per interpreter of
/// `echion_testkit::pythons()`, with `ECHION_EMBED_LIB` and `PYTHONHOME` set
/// for it, and fails if one of those runs does.
pub fn per_interpreter(bench: fn(&Path)) {
    if let Ok(lib) = std::env::var("ECHION_EMBED_LIB") {
        bench(&PathBuf::from(lib));
        return;
    }
    let exe = std::env::current_exe().expect("bench binary");
    for python in echion_testkit::pythons().into_iter().map(|p| p.exe) {
        let (lib, prefix) = libpython_of(&python)
            .unwrap_or_else(|| panic!("{}: no shared libpython", python.display()));
        let status = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("ECHION_EMBED_LIB", &lib)
            .env("PYTHONHOME", &prefix)
            .status()
            .expect("run the bench for one interpreter");
        assert!(status.success(), "{}: {status}", python.display());
    }
}

/// The interpreter of `lib` embedded and running `script`, its version and
/// layout, and a fault-guarded reader of this process (for the calling
/// thread) checked against its `_PyRuntime`.
pub fn start(lib: &Path, script: &str) -> (Embedded, PyVersion, &'static Layout, GuardedReader) {
    let python = Embedded::start(lib, script).expect("embed python");
    let version = python.version();
    let layout = Layout::for_version(version).expect("supported version");
    guarded::prepare_thread();
    let reader = GuardedReader::new().expect("own process");
    assert!(reader.refresh(), "fault handler in place");
    process::check_runtime(&reader, python.runtime(), layout).expect("runtime");
    (python, version, layout, reader)
}
