//! Finding the interpreter in a process: where `_PyRuntime` is and which
//! CPython version runs.
//!
//! For a pid (the own one or another), [`find_python`] reads
//! `/proc/<pid>/maps`, opens the ELF files of the mapped `libpython3.X.so`
//! and the executable (read-only, through the `object` crate), looks up the
//! `_PyRuntime` symbol and adds the load bias of the mapping. The version
//! comes from the `Py_Version` symbol (3.11+, read from memory), else from
//! the `PY_VERSION` string in the binary's read-only data, cross-checked with
//! the `python3.X` / `libpython3.X` file name. On 3.13 the `_Py_DebugOffsets`
//! at the start of `_PyRuntime` are checked against the built-in layout.
//! A runtime that lists no interpreter (a libpython of another version that
//! a plugin loaded, never started) gives way to one that does.

use std::fs::File;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::addr::Addr;
use crate::layout::{debug_offsets, Layout, UnsupportedVersion};
use crate::reader::{MemError, MemoryReader, ReadExt};
use crate::version::PyVersion;

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: Addr,
    /// End address (exclusive).
    pub end: Addr,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// Offset in the file.
    pub offset: u64,
    /// The mapped file, if any (`[heap]` and the like are not paths).
    pub path: Option<PathBuf>,
}

/// Why the interpreter could not be found. Each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `/proc/<pid>/maps` could not be read.
    #[error(
        "cannot read /proc/{pid}/maps: {source} (does the process exist, and may we read it?)"
    )]
    Maps {
        /// The pid.
        pid: u32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No mapped file defines `_PyRuntime`.
    #[error("pid {pid} does not look like CPython: no mapped libpython or python executable defines _PyRuntime (looked at: {looked_at})")]
    NotPython {
        /// The pid.
        pid: u32,
        /// The files examined.
        looked_at: String,
    },
    /// The version could not be determined.
    #[error("cannot tell the CPython version of {path}: no Py_Version symbol, no PY_VERSION string and no python3.X in the file name")]
    UnknownVersion {
        /// The file that defines `_PyRuntime`.
        path: PathBuf,
    },
    /// The version is not supported.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedVersion),
    /// Reading the process's memory failed.
    #[error("cannot read {what} in pid {pid}: {source}")]
    Read {
        /// The pid.
        pid: u32,
        /// What was being read.
        what: &'static str,
        /// The error.
        #[source]
        source: MemError,
    },
    /// The 3.13 debug offsets disagree with the built-in layout.
    #[error(transparent)]
    DebugOffsets(#[from] debug_offsets::DebugOffsetsError),
}

/// What was found.
#[derive(Debug, Clone)]
pub struct PythonProcess {
    /// The pid.
    pub pid: u32,
    /// The address of `_PyRuntime`.
    pub runtime: Addr,
    /// The interpreter's version.
    pub version: PyVersion,
    /// The layout for that version.
    pub layout: &'static Layout,
    /// The ELF file that defines `_PyRuntime` (libpython, or the executable
    /// of a static build).
    pub binary: PathBuf,
    /// Its load bias.
    pub load_bias: u64,
}

/// Parses `/proc/<pid>/maps`.
pub fn read_maps(pid: u32) -> Result<Vec<Mapping>, ProcessError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| ProcessError::Maps { pid, source })?;
    Ok(parse_maps(&text))
}

/// Parses the text of a maps file; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let range = f.next()?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let _inode = f.next()?;
            let path = f.next().map(str::trim).filter(|p| p.starts_with('/'));
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: Addr(u64::from_str_radix(s, 16).ok()?),
                end: Addr(u64::from_str_radix(e, 16).ok()?),
                perms,
                offset,
                path: path.map(|p| PathBuf::from(p.trim_end_matches(" (deleted)"))),
            })
        })
        .collect()
}

/// `3.X` from a file name like `libpython3.12.so.1.0` or `python3.9`.
pub fn minor_from_file_name(path: &Path) -> Option<u8> {
    let name = path.file_name()?.to_str()?;
    let rest = name
        .strip_prefix("libpython3.")
        .or_else(|| name.strip_prefix("python3."))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Finds `PY_VERSION` strings (`"3.X.Y"`, optionally with a release level
/// like `"rc1"` or a `+`) standing alone between NUL bytes in `data`.
pub fn version_strings(data: &[u8]) -> Vec<PyVersion> {
    let mut found: Vec<PyVersion> = Vec::new();
    for s in data.split(|b| *b == 0) {
        if s.len() < 5 || s.len() > 16 || !s.starts_with(b"3.") {
            continue;
        }
        let Ok(text) = std::str::from_utf8(s) else {
            continue;
        };
        let mut parts = text.splitn(3, '.');
        let (Some(_), Some(minor), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let micro: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let level = &tail[micro.len()..];
        let level_ok = level.is_empty()
            || level == "+"
            || ["a", "b", "rc"].iter().any(|p| {
                level.strip_prefix(p).is_some_and(|n| {
                    let n = n.trim_end_matches('+');
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                })
            });
        let (Ok(minor), Ok(micro)) = (minor.parse::<u8>(), micro.parse::<u8>()) else {
            continue;
        };
        if level_ok && !found.contains(&PyVersion::new(3, minor, micro)) {
            found.push(PyVersion::new(3, minor, micro));
        }
    }
    found
}

struct Symbols {
    runtime: Option<u64>,
    py_version: Option<u64>,
    first_load_vaddr: Option<u64>,
    rodata_versions: Vec<PyVersion>,
}

fn elf_symbols(path: &Path) -> Option<Symbols> {
    let file = File::open(path).ok()?;
    let cache = object::read::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let mut runtime = None;
    let mut py_version = None;
    // Both symbols are exported (PyAPI_DATA), so the small dynamic symbol
    // table has them; the full one is only searched for builds that do not
    // export them. Every symbol read through the file cache costs a system
    // call, so stop as soon as both are known.
    let want_version = |rt: Option<u64>, v: Option<u64>| rt.is_none() || v.is_none();
    for table in [elf.dynamic_symbols(), elf.symbols()] {
        for sym in table {
            match sym.name() {
                Ok("_PyRuntime") if runtime.is_none() => runtime = Some(sym.address()),
                Ok("Py_Version") if py_version.is_none() => py_version = Some(sym.address()),
                _ => {}
            }
            if !want_version(runtime, py_version) {
                break;
            }
        }
        if runtime.is_some() {
            break;
        }
    }
    // The segment mapped from file offset 0 gives the bias of the mapping
    // that starts at offset 0.
    let first_load_vaddr = elf
        .segments()
        .filter(|s| s.file_range().0 == 0)
        .map(|s| s.address() & !0xfff)
        .min();
    let rodata_versions = if runtime.is_some() && py_version.is_none() {
        elf.section_by_name(".rodata")
            .and_then(|s| s.data().ok())
            .map(version_strings)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(Symbols {
        runtime,
        py_version,
        first_load_vaddr,
        rodata_versions,
    })
}

/// Checks what can be checked of a runtime found by other means (in-process,
/// `dlsym`): on 3.13+, that its `_Py_DebugOffsets` agree with `layout`.
pub fn check_runtime<R: MemoryReader + ?Sized>(
    reader: &R,
    runtime: Addr,
    layout: &Layout,
) -> Result<(), ProcessError> {
    if layout.runtime.debug_offsets.is_some() {
        let table = debug_offsets::read(reader, runtime, layout)?;
        debug_offsets::check(&table, layout)?;
    }
    Ok(())
}

/// Finds `_PyRuntime` and the version of the CPython running as `pid`, and
/// picks its layout. `reader` must read that process (for the own process:
/// a reader of `std::process::id()`).
pub fn find_python<R: MemoryReader + ?Sized>(
    pid: u32,
    reader: &R,
) -> Result<PythonProcess, ProcessError> {
    let maps = read_maps(pid)?;
    // libpython first (the usual shared build), then the executable (static
    // builds), then anything else with "python" in its name.
    let mut files: Vec<&Path> = Vec::new();
    let paths: Vec<&Path> = maps.iter().filter_map(|m| m.path.as_deref()).collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    for p in &paths {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libpython3"))
        {
            push_unique(&mut files, p);
        }
    }
    if let Some(exe) = exe.as_deref() {
        if let Some(p) = paths.iter().find(|p| **p == exe) {
            push_unique(&mut files, p);
        }
    }
    for p in &paths {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("python"))
        {
            push_unique(&mut files, p);
        }
    }
    // Why each file was passed over, for the error.
    let mut why: Vec<&str> = Vec::with_capacity(files.len());
    // The first runtime found with no interpreter yet, and the first file
    // that failed (what is said when no file gives a runtime).
    let mut unstarted = None;
    let mut first_error = None;
    for path in &files {
        // Read the file as the target sees it (it may live in another mount
        // namespace), falling back to our own view.
        let rooted = PathBuf::from(format!("/proc/{pid}/root{}", path.display()));
        let Some(syms) = elf_symbols(&rooted).or_else(|| elf_symbols(path)) else {
            why.push("not a readable ELF file");
            continue;
        };
        let Some(runtime_sym) = syms.runtime else {
            why.push("no _PyRuntime symbol");
            continue;
        };
        let Some(base) = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(*path) && m.offset == 0)
            .map(|m| m.start)
            .min()
        else {
            why.push("its first page is not mapped");
            continue;
        };
        let bias = base.0.wrapping_sub(syms.first_load_vaddr.unwrap_or(0));
        let found = match runtime_of(pid, reader, path, &syms, runtime_sym, bias) {
            Ok(found) => found,
            Err(e) => {
                // Not one we can read (an unsupported or unknown version, a
                // plugin's libpython): the others may be.
                why.push("not usable");
                first_error.get_or_insert(e);
                continue;
            }
        };
        if has_interpreter(reader, found.runtime, found.layout) {
            return Ok(found);
        }
        // Loaded but not started: another version's libpython that a
        // plugin loaded (`RTLD_LOCAL`), or an interpreter still starting.
        why.push("its _PyRuntime has no interpreter");
        unstarted.get_or_insert(found);
    }
    if let Some(found) = unstarted {
        // None has one yet: the first (a process caught as it starts).
        return Ok(found);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Err(ProcessError::NotPython {
        pid,
        looked_at: if files.is_empty() {
            "no python-like files".to_owned()
        } else {
            files
                .iter()
                .zip(&why)
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

/// The runtime, version and layout of the CPython in `path` (whose
/// `_PyRuntime` symbol is at `runtime_sym`, loaded with `bias`).
fn runtime_of<R: MemoryReader + ?Sized>(
    pid: u32,
    reader: &R,
    path: &Path,
    syms: &Symbols,
    runtime_sym: u64,
    bias: u64,
) -> Result<PythonProcess, ProcessError> {
    let runtime = Addr(bias.wrapping_add(runtime_sym));
    let version = match syms.py_version {
        Some(v) => {
            // why: `const unsigned long Py_Version = PY_VERSION_HEX`
            // (Python/getversion.c, v3.11.7+).
            let hex = reader
                .read_pod::<u64>(Addr(bias.wrapping_add(v)))
                .map_err(|source| ProcessError::Read {
                    pid,
                    what: "Py_Version",
                    source,
                })?;
            PyVersion::from_hex(hex as u32)
        }
        None => version_without_symbol(path, &syms.rodata_versions).ok_or_else(|| {
            ProcessError::UnknownVersion {
                path: path.to_path_buf(),
            }
        })?,
    };
    let layout = Layout::for_version(version)?;
    check_runtime(reader, runtime, layout)?;
    Ok(PythonProcess {
        pid,
        runtime,
        version,
        layout,
        binary: path.to_path_buf(),
        load_bias: bias,
    })
}

/// Whether the `_PyRuntime` at `runtime` lists an interpreter.
fn has_interpreter<R: MemoryReader + ?Sized>(reader: &R, runtime: Addr, layout: &Layout) -> bool {
    reader
        .read_pod::<u64>(Addr(
            runtime.0.wrapping_add(layout.runtime.interpreters_head),
        ))
        .is_ok_and(|head| head != 0)
}

fn push_unique<'a>(files: &mut Vec<&'a Path>, p: &'a Path) {
    if !files.contains(&p) {
        files.push(p);
    }
}

/// The version of a ≤ 3.10 binary: a `PY_VERSION` string of the minor
/// version its file name says, or the only minor version among the strings.
fn version_without_symbol(path: &Path, found: &[PyVersion]) -> Option<PyVersion> {
    match minor_from_file_name(path) {
        Some(minor) => Some(
            found
                .iter()
                .copied()
                .find(|v| v.minor == minor)
                .unwrap_or(PyVersion::new(3, minor, 0)),
        ),
        None => {
            let first = *found.first()?;
            found
                .iter()
                .all(|v| v.minor == first.minor)
                .then_some(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps(
            "7f00-7f10 r--p 00000000 08:01 42 /usr/lib/libpython3.9.so.1.0\n\
             7f10-7f20 r-xp 00001000 08:01 42 /usr/lib/libpython3.9.so.1.0 (deleted)\n\
             7f30-7f40 rw-p 00000000 00:00 0 [heap]\n\
             garbage\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, Addr(0x7f00));
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(
            m[1].path.as_deref(),
            Some(Path::new("/usr/lib/libpython3.9.so.1.0"))
        );
        assert_eq!(m[2].path, None);
    }

    #[test]
    fn file_names_and_version_strings() {
        assert_eq!(
            minor_from_file_name(Path::new("/x/libpython3.10.so.1.0")),
            Some(10)
        );
        assert_eq!(minor_from_file_name(Path::new("/x/python3.8")), Some(8));
        assert_eq!(minor_from_file_name(Path::new("/x/python3")), None);
        let data = b"\x003.9.18\x00junk 3.9.18 (main)\x003.10.0rc2\x003.x.1\x003.8\x00";
        assert_eq!(
            version_strings(data),
            vec![PyVersion::new(3, 9, 18), PyVersion::new(3, 10, 0)]
        );
        let p = Path::new("/x/libpython3.9.so");
        assert_eq!(
            version_without_symbol(p, &[PyVersion::new(3, 10, 0), PyVersion::new(3, 9, 18)]),
            Some(PyVersion::new(3, 9, 18))
        );
        assert_eq!(version_without_symbol(Path::new("/x/python"), &[]), None);
    }

    #[test]
    fn a_python_named_program_without_the_runtime_says_why_it_was_passed_over() {
        // `sleep` copied under a python-like name: an ELF file found by its
        // name, without `_PyRuntime`.
        let dir = std::env::temp_dir().join(format!("echion-notpy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("python3-not-really");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let reader = crate::reader::ProcessReader::new(child.id()).unwrap();
        // The exec may not be done at once: its maps name the file then.
        let mut said = String::new();
        for _ in 0..200 {
            match find_python(child.id(), &reader) {
                Err(e @ ProcessError::NotPython { .. })
                    if e.to_string().contains("python3-not-really") =>
                {
                    said = e.to_string();
                    break;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            said.contains("python3-not-really: no _PyRuntime symbol"),
            "{said}"
        );
    }
}
