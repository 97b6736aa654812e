//! The mirrors agree with the headers of every installed interpreter: compiles
//! `tools/layout-oracle/oracle.c` against each one's headers (internal ones
//! included) with `gcc` (or `$CC`), runs it, and compares. Fails, naming the
//! version, if any of 3.8 to 3.13 is missing. Also catches a stale committed
//! table.

use echion_testkit as common;

use std::process::Command;

use echion_cpython_layout::layout::{generated, mirror_facts, oracle};

#[test]
fn mirrors_match_live_headers() {
    let root = common::workspace_root();
    let src = root.join("tools/layout-oracle/oracle.c");
    let tmp = std::env::temp_dir().join(format!("echion-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let mut problems = Vec::new();
    for py in common::pythons() {
        let (_, minor, micro) = py.version;
        let exe = tmp.join(format!("oracle-3.{minor}"));
        let status = Command::new(&cc)
            .arg("-O0")
            .arg("-w")
            .arg(format!("-I{}", py.include.display()))
            .arg(format!("-I{}", py.include.join("internal").display()))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {cc} (needed to compile the layout oracle): {e}")
            });
        assert!(
            status.success(),
            "compiling the oracle against 3.{minor} headers failed"
        );
        let out = Command::new(&exe).output().expect("run oracle");
        assert!(out.status.success());
        let parsed = oracle::parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(
            (parsed.version_hex >> 16) & 0xff,
            u32::from(minor),
            "headers of {:?}",
            py.exe
        );
        let mirrors = mirror_facts(minor).unwrap();
        for p in oracle::compare(&mirrors, &parsed.facts) {
            problems.push(format!("3.{minor}.{micro} headers: {p}"));
        }
        // The committed table must be what the generator would write now.
        let committed = generated::ALL
            .iter()
            .find(|(v, _)| v.split('.').nth(1) == Some(&minor.to_string()))
            .map(|(_, f)| *f)
            .unwrap();
        let committed: Vec<_> = committed.iter().map(|f| f.to_owned_fact()).collect();
        if committed != parsed.facts {
            problems.push(format!(
                "3.{minor}: generated.rs is stale, rerun tools/layout-oracle/generate.py"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
