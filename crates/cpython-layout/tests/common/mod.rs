//! Helpers shared by the tests that need real interpreters.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One installed interpreter.
#[derive(Debug, Clone)]
pub struct Python {
    /// The executable.
    pub exe: PathBuf,
    /// `sys.version_info[:3]`.
    pub version: (u8, u8, u8),
    /// `sysconfig.get_paths()['include']`.
    pub include: PathBuf,
}

/// The interpreters for 3.8 to 3.13: those listed (colon-separated) in
/// `ECHION_PYTHONS`, or else `~/.pyenv/versions/3.*/bin/python3.X`.
/// Panics naming every missing version: these tests must not pass vacuously.
pub fn pythons() -> Vec<Python> {
    let candidates: Vec<PathBuf> = match std::env::var("ECHION_PYTHONS") {
        Ok(list) if !list.is_empty() => list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            let root = Path::new(&home).join(".pyenv/versions");
            let mut found = Vec::new();
            if let Ok(dirs) = std::fs::read_dir(&root) {
                for d in dirs.flatten() {
                    let name = d.file_name().to_string_lossy().into_owned();
                    let mut parts = name.split('.');
                    if let (Some("3"), Some(minor)) = (parts.next(), parts.next()) {
                        found.push(d.path().join("bin").join(format!("python3.{minor}")));
                    }
                }
            }
            found.sort();
            found
        }
    };
    let mut by_minor: Vec<Option<Python>> = vec![None; 14];
    for exe in candidates {
        let Ok(out) = Command::new(&exe)
            .args([
                "-c",
                "import sys, sysconfig; v = sys.version_info; print(v.major, v.minor, v.micro, sysconfig.get_paths()['include'])",
            ])
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text.trim().splitn(4, ' ');
        let (Some(a), Some(b), Some(c), Some(inc)) = (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let (Ok(a), Ok(b), Ok(c)) = (a.parse::<u8>(), b.parse::<u8>(), c.parse::<u8>()) else {
            continue;
        };
        if a == 3 && (8..=13).contains(&b) && by_minor[b as usize].is_none() {
            by_minor[b as usize] = Some(Python {
                exe,
                version: (a, b, c),
                include: PathBuf::from(inc),
            });
        }
    }
    let missing: Vec<String> = (8..=13)
        .filter(|m| by_minor[*m].is_none())
        .map(|m| format!("3.{m}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no interpreter for {}: install it (pyenv install) or list executables in ECHION_PYTHONS",
        missing.join(", ")
    );
    by_minor.into_iter().flatten().collect()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}
