//! The mirrors agree with the committed oracle table (always runs; no
//! compiler or interpreter needed). Regenerate the table with
//! `python3 tools/layout-oracle/generate.py`.

use echion_cpython_layout::layout::{generated, mirror_facts, oracle, Layout};
use echion_cpython_layout::PyVersion;

#[test]
fn mirrors_match_committed_table() {
    assert_eq!(generated::ALL.len(), 6, "the table must cover 3.8 to 3.13");
    let mut problems = Vec::new();
    for (version, facts) in generated::ALL {
        let minor: u8 = version.split('.').nth(1).unwrap().parse().unwrap();
        let mirrors = mirror_facts(minor).expect("a mirror module for every table");
        for p in oracle::compare(&mirrors, facts) {
            problems.push(format!("{version}: {p}"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_supported_version_has_a_layout() {
    for minor in 8..=13 {
        let l = Layout::for_version(PyVersion::new(3, minor, 0)).unwrap();
        assert_eq!(l.python, (3, minor));
    }
    assert!(Layout::for_version(PyVersion::new(3, 7, 0)).is_err());
    assert!(Layout::for_version(PyVersion::new(3, 14, 0)).is_err());
    let msg = Layout::for_version(PyVersion::new(3, 14, 1))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("3.14.1") && msg.contains("3.8 to 3.13"),
        "{msg}"
    );
}
