//! A live process read from outside: for each interpreter, start
//! `tests/targets/café.py` (threads blocked in known functions, non-ASCII
//! names, a 500-deep recursion, an asyncio loop with named tasks), read what
//! it reports about itself, and compare with what the views read through
//! the pid reader.

use echion_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use echion_cpython_layout::process::find_python;
use echion_cpython_layout::views::{FutureState, Target};
use echion_cpython_layout::{Addr, ProcessReader};
use serde_json::Value;

#[derive(Debug, PartialEq)]
struct Frame {
    file: String,
    name: String,
    qualname: String,
    line: i64,
}

fn expected_stack(thread: &Value, has_qualname: bool) -> Vec<Frame> {
    thread["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Frame {
            file: f["file"].as_str().unwrap().to_owned(),
            name: f["name"].as_str().unwrap().to_owned(),
            qualname: if has_qualname {
                f["qualname"].as_str().unwrap().to_owned()
            } else {
                String::new()
            },
            line: f["line"].as_i64().unwrap(),
        })
        .collect()
}

fn read_stack<R: echion_cpython_layout::MemoryReader + ?Sized>(
    t: &Target<'_, R>,
    frame: Addr,
) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for f in t.frames(frame) {
        let f = f.expect("frame");
        if !f.is_python() {
            continue;
        }
        let code = t.code(f.code).expect("code");
        let (mut file, mut name, mut qualname) = (String::new(), String::new(), String::new());
        t.read_str(code.filename, &mut file).unwrap();
        t.read_str(code.name, &mut name).unwrap();
        if let Some(q) = code.qualname {
            t.read_str(q, &mut qualname).unwrap();
        }
        let line = t
            .location(&code, f.offset.expect("offset"), &mut scratch)
            .expect("location")
            .line
            .map_or(-1, i64::from);
        out.push(Frame {
            file,
            name,
            qualname,
            line,
        });
    }
    out
}

#[test]
fn reads_live_processes_of_every_version() {
    let script = common::workspace_root().join("crates/cpython-layout/tests/targets/café.py");
    for py in common::pythons() {
        let (_, minor, _) = py.version;
        let child = Command::new(&py.exe)
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start target");
        let mut guard = common::KillOnDrop(child);
        let mut line = String::new();
        BufReader::new(guard.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("3.{minor}: bad report {e}: {line}"));
        let pid = guard.0.id();
        let reader = ProcessReader::new(pid).expect("attach");
        let found = find_python(pid, &reader).unwrap_or_else(|e| panic!("3.{minor}: {e}"));
        let v = report["version"].as_array().unwrap();
        assert_eq!(
            found.version.minor,
            v[1].as_u64().unwrap() as u8,
            "version of 3.{minor}"
        );
        if minor >= 11 {
            // Py_Version gives the micro version; ≤ 3.10 it is only known
            // when the binary carries a standalone PY_VERSION string.
            assert_eq!(
                found.version.micro,
                v[2].as_u64().unwrap() as u8,
                "micro of 3.{minor}"
            );
        }
        let t = Target::new(&reader, found.layout);

        let interps: Vec<_> = t
            .interpreters(found.runtime)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(interps.len(), 1, "3.{minor}: one interpreter");
        assert_eq!(interps[0].id, 0);
        let threads: Vec<_> = t.threads(&interps[0]).collect::<Result<_, _>>().unwrap();

        // What `threading` calls each thread, read from its `_active` map
        // (module table, module dict, instance attributes of every layout).
        let names = t
            .threading_names(interps[0].addr)
            .unwrap_or_else(|e| panic!("3.{minor}: threading names: {e}"));
        for expected in report["threads"].as_array().unwrap() {
            let ident = expected["ident"].as_u64().unwrap();
            let name = expected["name"].as_str().unwrap();
            let found = names
                .iter()
                .find(|n| n.ident == ident)
                .unwrap_or_else(|| panic!("3.{minor}: {ident} ({name}) not in {names:?}"));
            assert_eq!(found.name, name, "3.{minor}");
            assert_eq!(
                found.native_id,
                expected["native_id"].as_u64(),
                "3.{minor} {name}: native id"
            );
        }

        for expected in report["threads"].as_array().unwrap() {
            let ident = expected["ident"].as_u64().unwrap();
            let name = expected["name"].as_str().unwrap();
            let th = threads
                .iter()
                .find(|th| th.thread_id == ident)
                .unwrap_or_else(|| panic!("3.{minor}: thread {name} not found"));
            if minor >= 11 {
                assert_eq!(
                    th.native_thread_id,
                    expected["native_id"].as_u64(),
                    "3.{minor} {name}"
                );
            } else {
                assert_eq!(th.native_thread_id, None);
            }
            let got = read_stack(&t, th.frame);
            let want = expected_stack(expected, minor >= 11);
            assert_eq!(got.len(), want.len(), "3.{minor} thread {name}: depth");
            assert_eq!(got, want, "3.{minor} thread {name}");
            if name == "deep" {
                assert!(got.len() > 500);
            }
        }

        for task in report["tasks"].as_array().unwrap() {
            let addr = Addr(task["addr"].as_u64().unwrap());
            let info = t.task(addr).unwrap();
            let mut name = String::new();
            t.task_name(&info, &mut name).unwrap();
            assert_eq!(name, task["name"].as_str().unwrap(), "3.{minor}");
            assert_eq!(
                info.coro.0,
                task["coro"].as_u64().unwrap(),
                "3.{minor} {name} coro"
            );
            assert_eq!(
                info.event_loop.0,
                task["loop"].as_u64().unwrap(),
                "3.{minor} {name} loop"
            );
            assert_eq!(
                info.waiter.0,
                task["waiter"].as_u64().unwrap(),
                "3.{minor} {name} waiter"
            );
            assert_eq!(info.state, FutureState::Pending);
            let mut ty = String::new();
            t.type_name(addr, &mut ty).unwrap();
            assert_eq!(ty, "_asyncio.Task");
            let gen = t.generator(info.coro).unwrap();
            assert!(!gen.running);
            assert_eq!(
                gen.awaiting.map_or(0, |a| a.0),
                task["awaiting"].as_u64().unwrap(),
                "3.{minor} {name} awaiting"
            );
            let frame = gen.frame.expect("suspended coroutine has a frame");
            let first = t.frames(frame).next().unwrap().unwrap();
            let code = t.code(first.code).unwrap();
            let mut cname = String::new();
            t.read_str(code.name, &mut cname).unwrap();
            assert_eq!(cname, task["coro_name"].as_str().unwrap());
        }
    }
}
