//! The reader against real files that no one on this project wrote:
//! profiles by Austin (MOJO v1, v2, v4) with austin-python's rendering of
//! them, and profiles by the C++ echion 0.3.5 (v3), read from
//! `../shared/fixtures/mojo` (or `$ECHION_SHARED/fixtures/mojo`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use echion_mojo::{DecodeErrorKind, Frame, Profile, Version};

fn fixtures() -> PathBuf {
    let shared = std::env::var_os("ECHION_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("fixtures/mojo");
    assert!(
        dir.is_dir(),
        "fixtures not found at {}: set ECHION_SHARED to the shared directory",
        dir.display()
    );
    dir
}

fn load(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rendered(p: &Profile) -> String {
    let mut out = Vec::new();
    p.write_austin(&mut out).expect("in memory");
    String::from_utf8(out).expect("UTF-8")
}

/// Splits a rendering into sample lines (in order) and metadata pairs (as a
/// map: austin-python prints metadata that follows the samples at the end).
fn split(text: &str) -> (Vec<&str>, BTreeMap<&str, &str>) {
    let mut samples = Vec::new();
    let mut meta = BTreeMap::new();
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("# ") {
            let (k, v) = m.split_once(": ").expect("metadata line");
            meta.insert(k, v);
        } else {
            samples.push(line);
        }
    }
    (samples, meta)
}

fn agrees_with_rendering(mojo: &str, austin: &str, version: Version) {
    let profile = Profile::parse(&load(mojo)).unwrap_or_else(|e| panic!("{mojo}: {e}"));
    assert_eq!(profile.version, version, "{mojo}");
    let ours = rendered(&profile);
    let theirs = String::from_utf8(load(austin)).expect("UTF-8 rendering");
    let (our_samples, our_meta) = split(&ours);
    let (their_samples, their_meta) = split(&theirs);
    assert_eq!(our_meta, their_meta, "{mojo}: metadata");
    assert_eq!(
        our_samples.len(),
        their_samples.len(),
        "{mojo}: sample count"
    );
    for (i, (a, b)) in our_samples.iter().zip(&their_samples).enumerate() {
        assert_eq!(a, b, "{mojo}: sample {i}");
    }
    let total: i64 = their_samples
        .iter()
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|m| m.parse::<i64>().ok())
                .expect("metric")
        })
        .sum();
    assert_eq!(profile.total_time(), total, "{mojo}: total time");
}

#[test]
fn austin_v1() {
    agrees_with_rendering(
        "austin-python-test.mojo",
        "austin-python-test.austin",
        Version::V1,
    );
}

#[test]
fn austin_v1_multiprocess() {
    agrees_with_rendering(
        "austin-python-mp.mojo",
        "austin-python-mp.austin",
        Version::V1,
    );
    let p = Profile::parse(&load("austin-python-mp.mojo")).expect("valid");
    let pids: std::collections::BTreeSet<_> = p.samples.iter().map(|s| s.pid).collect();
    assert!(pids.len() > 1, "several processes expected, got {pids:?}");
}

#[test]
fn austin_v4_stack_repeat() {
    agrees_with_rendering(
        "austin-python-repeat.mojo",
        "austin-python-repeat.austin",
        Version::V4,
    );
}

#[test]
fn austin_v2_columns() {
    let p = Profile::parse(&load("austin-python-column.mojo")).expect("valid");
    assert_eq!(p.version, Version::V2);
    assert!(!p.samples.is_empty());
    let with_columns = p
        .samples
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| matches!(f, Frame::Frame(i) if i.column > 0 && i.column_end >= i.column && i.line_end >= i.line))
        .count();
    assert!(with_columns > 0, "no frame carries columns");
    assert!(p
        .samples
        .iter()
        .all(|s| s.time.is_some() || s.memory.is_some()));
}

#[test]
fn austinp_native_frames() {
    let p = Profile::parse(&load("austin-python-austinp.mojo")).expect("valid");
    let native = p
        .samples
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| matches!(f, Frame::Frame(i) if i.is_native()))
        .count();
    assert!(native > 0, "austinp profile without native frames");
}

#[test]
fn echion_035_profiles() {
    for (name, mode) in [
        ("echion-0.3.5-wall-py38.mojo", "wall"),
        ("echion-0.3.5-wall-py311.mojo", "wall"),
        ("echion-0.3.5-wall-py313.mojo", "wall"),
        ("echion-0.3.5-cpu-py38.mojo", "cpu"),
        ("echion-0.3.5-cpu-py311.mojo", "cpu"),
        ("echion-0.3.5-cpu-py313.mojo", "cpu"),
    ] {
        let p = Profile::parse(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.version, Version::V3, "{name}");
        assert_eq!(p.metadata("mode"), Some(mode), "{name}");
        assert_eq!(p.metadata("interval"), Some("1000"), "{name}");
        assert_eq!(p.metadata("sampler"), Some("echion"), "{name}");
        assert!(p.samples.iter().any(|s| s.thread == "MainThread"), "{name}");
        // The target script's own functions appear with their file.
        let target = p
            .samples
            .iter()
            .flat_map(|s| &s.frames)
            .any(|f| matches!(f, Frame::Frame(i) if i.filename.ends_with(".py") && i.line > 0));
        assert!(target, "{name}: no Python frame");
        assert!(p.total_time() > 0, "{name}");
    }
}

#[test]
fn echion_035_corrupt_non_ascii() {
    let data = load("echion-0.3.5-nonascii-corrupt-py311.mojo");
    let err = Profile::parse(&data).expect_err("the file is corrupt");
    // austin-python stops at the same place.
    assert_eq!(err.offset, 35402);
    assert_eq!(err.kind, DecodeErrorKind::UnknownEvent(0));
    assert_eq!(err.to_string(), "unknown event 0 at byte offset 35402");
    let (partial, e) = Profile::parse_partial(&data).expect("header is fine");
    assert_eq!(e, Some(err));
    assert!(!partial.samples.is_empty());
    assert!(partial.samples.iter().all(|s| s.time.is_some()));
}

/// The streaming reader gives the samples `Profile::parse` gives, on every
/// fixture (each version, Austin's and echion's writers), read in small
/// pieces so events straddle the reader's chunks.
#[test]
fn sample_reader_streams_what_parse_reads() {
    use echion_mojo::SampleReader;
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(997);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("mojo") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let Ok((whole, err)) = Profile::parse_partial(&data) else {
            continue;
        };
        let mut reader = SampleReader::new(Trickle(&data)).unwrap();
        let mut streamed = Vec::new();
        let mut failed = false;
        loop {
            match reader.next_sample() {
                Ok(Some(s)) => streamed.push(s),
                Ok(None) => break,
                Err(_) => failed = true,
            }
        }
        assert_eq!(failed, err.is_some(), "{}", path.display());
        assert_eq!(streamed, whole.samples, "{}", path.display());
        assert_eq!(reader.metadata(), &whole.metadata[..], "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} fixtures read");
}
