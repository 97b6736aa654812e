//! `linetable::location` against the interpreters themselves.
//!
//! `tools/linetable/gen_linetable_fixtures.py`, run by each interpreter,
//! compiles that interpreter's whole standard library and streams, for every
//! instruction offset of every code object, the location the interpreter
//! reports (`co_positions()` on 3.11+, `co_lines()` on 3.10,
//! `dis.findlinestarts` on 3.8/3.9). This test decodes each offset with
//! [`location`] and compares all four fields.
//!
//! * `stdlib_matches_every_interpreter` needs CPython 3.8 to 3.13: the
//!   executables listed in `ECHION_PYTHONS` (colon-separated), else
//!   `$PYENV_ROOT/versions/3.{8..13}.*/bin/python3` (`PYENV_ROOT` defaults to
//!   `/root/.pyenv`). It fails, naming the version, when one is missing.
//! * `committed_fixtures_match` checks the small streams the same generator
//!   wrote into `tests/data/linetable/` and needs no interpreter.
//!
//! Run with `--nocapture` to see the per-version counts. The package is built
//! optimised even in the dev profile (see the root `Cargo.toml`), which keeps
//! the stdlib check to a couple of minutes.

use echion_cpython_layout::linetable::{
    location, ranges, AddressRange, LineTableError, Location, TableFormat,
};
use echion_cpython_layout::PyVersion;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const GENERATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tools/linetable/gen_linetable_fixtures.py"
);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/linetable");
/// The generator's encoding of `None`.
const NONE: i32 = i32::MIN;
/// Mismatches described in the failure message; the rest are only counted.
const MAX_REPORTED: usize = 20;
/// Fewer stdlib files than this means the generator looked in the wrong place.
const MIN_STDLIB_FILES: u64 = 500;

/// Counts of one stream.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    files: u64,
    codes: u64,
    offsets: u64,
    mismatches: u64,
    failed_to_compile: u32,
    not_utf8: u32,
}

/// One offset where the decoder and the interpreter disagree.
struct Mismatch {
    /// `location` or `ranges`: which API gave `got`.
    api: &'static str,
    version: PyVersion,
    file: String,
    code: String,
    offset: u32,
    expected: Result<Location, LineTableError>,
    got: Result<Location, LineTableError>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:?} offset {}: expected {:?}, {} gave {:?}",
            self.version, self.file, self.code, self.offset, self.expected, self.api, self.got
        )
    }
}

/// Kills and reaps the generator if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stream<R> {
    r: R,
}

impl<R: Read> Stream<R> {
    fn bytes_into(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        buf.clear();
        buf.resize(n, 0);
        self.r.read_exact(buf)
    }
    fn u8(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn i32(&mut self) -> io::Result<i32> {
        self.u32().map(|v| v as i32)
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// A length-prefixed byte string, bounded so a corrupt stream cannot
    /// make the test allocate gigabytes.
    fn blob(&mut self, buf: &mut Vec<u8>, what: &str) -> Result<(), String> {
        let n = self.u32().map_err(|e| format!("{what} length: {e}"))? as usize;
        if n > 64 << 20 {
            return Err(format!("{what} of {n} bytes: corrupt stream"));
        }
        self.bytes_into(buf, n).map_err(|e| format!("{what}: {e}"))
    }
}

fn opt(v: i32) -> Option<i32> {
    (v != NONE).then_some(v)
}

/// Reads one generator stream, decodes every offset and compares. Returns
/// the interpreter version of the stream and its counts; details of the
/// first mismatches go to `report`.
fn check_stream(r: impl Read, report: &mut Vec<Mismatch>) -> Result<(PyVersion, Stats), String> {
    let mut s = Stream { r };
    let mut magic = Vec::new();
    s.bytes_into(&mut magic, 4)
        .map_err(|e| format!("header: {e}"))?;
    if magic != b"ELTF" {
        return Err(format!("bad magic {magic:?}"));
    }
    let fmt_version = s.u8().map_err(|e| e.to_string())?;
    if fmt_version != 1 {
        return Err(format!("stream format {fmt_version}, expected 1"));
    }
    let (ma, mi, mc) = (
        s.u8().map_err(|e| e.to_string())?,
        s.u8().map_err(|e| e.to_string())?,
        s.u8().map_err(|e| e.to_string())?,
    );
    let version = PyVersion::new(ma, mi, mc);
    let format = TableFormat::for_version(version).map_err(|e| e.to_string())?;

    let mut stats = Stats::default();
    let mut file = String::new();
    let (mut name, mut table, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut answered = 0u64;
    loop {
        let tag = s
            .u8()
            .map_err(|e| format!("{version}: stream ended without trailer: {e}"))?;
        match tag {
            b'F' => {
                s.blob(&mut name, "file name")?;
                file = String::from_utf8_lossy(&name).into_owned();
                stats.files += 1;
            }
            b'C' => {
                s.blob(&mut name, "code name")?;
                let first_line = s.i32().map_err(|e| e.to_string())?;
                s.blob(&mut table, "table")?;
                let n_offsets = s.u32().map_err(|e| e.to_string())?;
                let n_known = s.u32().map_err(|e| e.to_string())?;
                if n_known > n_offsets {
                    return Err(format!("{file}: {n_known} answers for {n_offsets} offsets"));
                }
                s.bytes_into(&mut values, 16 * n_known as usize)
                    .map_err(|e| format!("{file}: values: {e}"))?;
                stats.codes += 1;
                stats.offsets += u64::from(n_offsets);
                answered += u64::from(n_known);
                let mut known = values.chunks_exact(16).map(|c| {
                    let v = |i: usize| {
                        opt(i32::from_le_bytes(
                            c[4 * i..4 * i + 4].try_into().expect("4-byte slice"),
                        ))
                    };
                    Location {
                        line: v(0),
                        line_end: v(1),
                        column: v(2),
                        column_end: v(3),
                    }
                });
                // Every offset through `location`, and the same offsets
                // through one walk of `ranges`.
                let mut walk = ranges(format, &table, first_line);
                let mut range: Option<Result<AddressRange, LineTableError>> = walk.next();
                for i in 0..n_offsets {
                    let offset = 2 * i;
                    let expected = known.next().ok_or(LineTableError::OffsetPastTable);
                    let got = location(format, &table, first_line, offset);
                    while let Some(Ok(r)) = range {
                        if u64::from(offset) < r.end {
                            break;
                        }
                        range = walk.next();
                    }
                    let from_walk = match range {
                        Some(Ok(r)) => Ok(r.location),
                        Some(Err(e)) => Err(e),
                        None => Err(LineTableError::OffsetPastTable),
                    };
                    for (api, got) in [("location", got), ("ranges", from_walk)] {
                        if got != expected {
                            stats.mismatches += 1;
                            if report.len() < MAX_REPORTED {
                                report.push(Mismatch {
                                    api,
                                    version,
                                    file: file.clone(),
                                    code: String::from_utf8_lossy(&name).into_owned(),
                                    offset,
                                    expected,
                                    got,
                                });
                            }
                        }
                    }
                }
            }
            b'E' => {
                let compiled = s.u32().map_err(|e| e.to_string())?;
                stats.failed_to_compile = s.u32().map_err(|e| e.to_string())?;
                stats.not_utf8 = s.u32().map_err(|e| e.to_string())?;
                let codes = s.u32().map_err(|e| e.to_string())?;
                let known = s.u64().map_err(|e| e.to_string())?;
                if (u64::from(compiled), u64::from(codes), known)
                    != (stats.files, stats.codes, answered)
                {
                    return Err(format!(
                        "{version}: trailer says {compiled} files, {codes} code objects, \
                         {known} answers; the stream had {}, {}, {answered}",
                        stats.files, stats.codes
                    ));
                }
                let mut rest = Vec::new();
                s.r.read_to_end(&mut rest).map_err(|e| e.to_string())?;
                if !rest.is_empty() {
                    return Err(format!("{version}: {} bytes after the trailer", rest.len()));
                }
                return Ok((version, stats));
            }
            other => {
                return Err(format!(
                    "{version}: unknown record tag {other:#x} after {file}"
                ))
            }
        }
    }
}

fn summary(version: PyVersion, st: &Stats) -> String {
    format!(
        "linetable {version}: {} files, {} code objects, {} offsets, {} mismatches \
         (skipped: {} not compiling, {} not UTF-8)",
        st.files, st.codes, st.offsets, st.mismatches, st.failed_to_compile, st.not_utf8
    )
}

fn fail_with(report: &[Mismatch], total: u64) -> ! {
    let lines: Vec<String> = report.iter().map(|m| format!("  {m}")).collect();
    panic!(
        "{total} offsets decoded differently from the interpreter; first {}:\n{}",
        report.len(),
        lines.join("\n")
    );
}

/// Runs the generator under `python` and checks its stream while it is
/// being written.
fn check_interpreter(
    python: &Path,
    report: &mut Vec<Mismatch>,
) -> Result<(PyVersion, Stats), String> {
    let child = Command::new(python)
        .arg(GENERATOR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: cannot run the generator: {e}", python.display()))?;
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let result = check_stream(BufReader::with_capacity(1 << 20, stdout), report);
    let status = child.0.wait().map_err(|e| e.to_string())?;
    match result {
        Ok(r) if status.success() => Ok(r),
        Ok(_) => Err(format!(
            "{}: generator exited with {status}",
            python.display()
        )),
        Err(e) => Err(format!("{}: {e} (generator: {status})", python.display())),
    }
}

/// One interpreter checked: its index in the list, the outcome, the
/// mismatches it reported and its seconds.
type Checked = (
    usize,
    Result<(PyVersion, Stats), String>,
    Vec<Mismatch>,
    f64,
);

/// About 100 s optimised, two interpreters at a time, about 10 minutes
/// unoptimised (the per-offset `location` calls walk each table from its
/// start): the workspace builds this package with `opt-level = 3` even in
/// the dev profile, so plain `cargo test` runs it at full speed.
#[test]
fn stdlib_matches_every_interpreter() {
    let mut found: Vec<(PyVersion, PathBuf)> = echion_testkit::pythons()
        .into_iter()
        .map(|p| {
            let (a, b, c) = p.version;
            (PyVersion::new(a, b, c), p.exe)
        })
        .collect();
    found.sort();
    let versions: Vec<PyVersion> = found.iter().map(|(v, _)| *v).collect();
    let missing: Vec<String> = (8..=13)
        .filter(|&m| !versions.iter().any(|v| v.minor_pair() == (3, m)))
        .map(|m| format!("3.{m}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no interpreter for CPython {} (found {:?}); install it with pyenv or list \
         the executables in ECHION_PYTHONS (colon-separated)",
        missing.join(", "),
        versions.iter().map(|v| v.to_string()).collect::<Vec<_>>()
    );

    let start = Instant::now();
    // Two interpreters at a time: each generator is one Python process
    // compiling its standard library, the decoding keeps up beside it. The
    // newest first: from 3.11 a table has three times the offsets.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Checked> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let taken = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(i) = found.len().checked_sub(taken + 1) else {
                            return done;
                        };
                        let python = &found[i].1;
                        let t = Instant::now();
                        let mut report = Vec::new();
                        let result = check_interpreter(python, &mut report);
                        done.push((i, result, report, t.elapsed().as_secs_f64()));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    results.sort_by_key(|r| r.0);
    let mut report = Vec::new();
    let mut total_mismatches = 0;
    for (i, result, mismatches, seconds) in results {
        let (expected_version, python) = &found[i];
        let (version, stats) = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, *expected_version, "{}", python.display());
        eprintln!("{} [{seconds:.1}s]", summary(version, &stats));
        assert!(
            stats.files >= MIN_STDLIB_FILES,
            "{version}: only {} stdlib files compiled; the generator looked in the wrong place",
            stats.files
        );
        total_mismatches += stats.mismatches;
        report.extend(
            mismatches
                .into_iter()
                .take(MAX_REPORTED.saturating_sub(report.len())),
        );
    }
    eprintln!(
        "linetable: all interpreters checked in {:.1?}",
        start.elapsed()
    );
    if total_mismatches > 0 {
        fail_with(&report, total_mismatches);
    }
}

#[test]
fn committed_fixtures_match() {
    let mut report = Vec::new();
    let mut total_mismatches = 0;
    for minor in 8..=13 {
        let path = Path::new(FIXTURES).join(format!("3.{minor}.bin"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (regenerate, see README.md there)", path.display())
        });
        let (version, stats) = check_stream(BufReader::new(file), &mut report)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(version.minor_pair(), (3, minor), "{}", path.display());
        assert!(stats.offsets > 0, "{}: empty fixture", path.display());
        eprintln!("{}", summary(version, &stats));
        total_mismatches += stats.mismatches;
    }
    if total_mismatches > 0 {
        fail_with(&report, total_mismatches);
    }
}
