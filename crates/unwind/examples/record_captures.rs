//! Writes the recorded captures the unwind tests read
//! (`crates/unwind/tests/captures/*.capture.gz`): real threads of this
//! process captured by the signal handler and unwound live, saved with the
//! unwind information and symbols their frames need.
//!
//! - `rust-qsort`: a thread in a comparison callback of libc's `qsort`;
//! - `python3.X-sorted`: CPython (libpython embedded, one per interpreter
//!   given) running `sorted(data, key=key)` whose key function spins.
//!
//! Run: `cargo run -p echion-unwind --example record_captures -- OUT_DIR
//! [PYTHON ...]` (each PYTHON an interpreter with a shared libpython).
#![allow(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use echion_unwind::record::Recording;
use echion_unwind::{Capturer, NativeUnwinder};

static TID: AtomicI32 = AtomicI32::new(0);

extern "C" fn compare(a: *const libc::c_void, b: *const libc::c_void) -> i32 {
    TID.store(echion_unwind::capture::current_tid(), Ordering::Release);
    loop {
        std::hint::spin_loop();
        if a.is_null() && b.is_null() {
            return 0;
        }
    }
}

#[inline(never)]
fn sort_forever() {
    let mut data: Vec<u32> = (0..64).rev().collect();
    // SAFETY: a valid array of 64 u32 and a comparator of the right type.
    unsafe {
        libc::qsort(
            data.as_mut_ptr() as *mut libc::c_void,
            data.len(),
            4,
            Some(compare),
        )
    };
}

fn capture_and_record(label: &str, tid: i32, check: impl Fn(&[String]) -> bool) -> Recording {
    let mut unwinder = NativeUnwinder::new(std::process::id()).expect("module map");
    let mut capturer = Capturer::new().expect("capturer");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut top = 0;
    loop {
        let (_, cap) = capturer
            .capture(tid, top, Duration::from_secs(1), |_| ())
            .expect("captured");
        if top == 0 {
            // Copy up to the stack's top only (known from the first).
            top = unwinder.stack_top(cap.regs.sp).expect("stack mapped");
            continue;
        }
        let mut pcs = Vec::new();
        unwinder.unwind(&cap, &mut pcs);
        let names: Vec<String> = pcs
            .iter()
            .enumerate()
            .map(|(i, &pc)| unwinder.symbol(pc, i).name)
            .collect();
        if check(&names) {
            let rec = Recording::record(label, &unwinder, &cap, &pcs).expect("record");
            eprintln!("{label}: {} frames: {names:?}", pcs.len());
            return rec;
        }
        assert!(Instant::now() < deadline, "{label}: {names:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write(out: &Path, name: &str, rec: &Recording) {
    let path = out.join(format!("{name}.capture.gz"));
    let file = std::fs::File::create(&path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    gz.write_all(&rec.to_bytes()).expect("write");
    gz.finish().expect("finish");
    eprintln!("wrote {}", path.display());
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(args.next().expect("OUT_DIR"));
    std::fs::create_dir_all(&out).expect("out dir");
    let pythons: Vec<PathBuf> = args.map(PathBuf::from).collect();

    if let Ok(lib) = std::env::var("ECHION_EMBED_LIB") {
        record_python(&out, Path::new(&lib));
        return;
    }

    std::thread::spawn(sort_forever);
    while TID.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rec = capture_and_record(
        "a Rust thread in libc qsort's callback",
        TID.load(Ordering::Acquire),
        |n| n.iter().any(|s| s.contains("compare")) && n.iter().any(|s| s.contains("sort_forever")),
    );
    write(&out, "rust-qsort", &rec);

    // One process per interpreter (one libpython per process).
    let exe = std::env::current_exe().expect("exe");
    for python in pythons {
        let (lib, home) = echion_embed::libpython_of(&python).expect("shared libpython");
        let status = std::process::Command::new(&exe)
            .arg(&out)
            .env("ECHION_EMBED_LIB", &lib)
            .env("PYTHONHOME", &home)
            .status()
            .expect("run");
        assert!(status.success(), "{}", python.display());
    }
}

fn record_python(out: &Path, lib: &Path) {
    let tid_file = std::env::temp_dir().join(format!("echion-record-{}", std::process::id()));
    let script = format!(
        r#"
import threading
with open({path:?}, "w") as f:
    f.write(str(threading.get_native_id()))
def key(x):
    while True:
        pass
def outer():
    sorted([3, 2, 1], key=key)
outer()
"#,
        path = tid_file.display().to_string()
    );
    let python = echion_embed::Embedded::start(lib, &script).expect("embed");
    let version = python.version();
    let deadline = Instant::now() + Duration::from_secs(20);
    let tid = loop {
        if let Some(t) = std::fs::read_to_string(&tid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break t;
        }
        assert!(Instant::now() < deadline, "no tid");
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&tid_file);
    let label = format!("CPython {version} in sorted(data, key=key), key spinning");
    let rec = capture_and_record(&label, tid, |n| {
        n.iter()
            .filter(|s| s.starts_with("_PyEval_EvalFrameDefault"))
            .count()
            >= 2
            && n.iter().any(|s| s.contains("sort"))
    });
    write(
        out,
        &format!("python{}.{}-sorted", version.major, version.minor),
        &rec,
    );
    std::process::exit(0);
}
