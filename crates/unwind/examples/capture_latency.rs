//! How long one capture of a busy thread takes, and how much of it the
//! thread waits in its handler: `cargo run --release -p echion-unwind
//! --example capture_latency`.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use echion_unwind::{Capturer, NativeUnwinder};

static STOP: AtomicBool = AtomicBool::new(false);
static TID: AtomicI32 = AtomicI32::new(0);

fn main() {
    let worker = std::thread::spawn(|| {
        TID.store(echion_unwind::capture::current_tid(), Ordering::Release);
        let mut x = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
    while TID.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let tid = TID.load(Ordering::Acquire);
    let mut capturer = Capturer::new().expect("capturer");
    let mut unwinder = NativeUnwinder::new(std::process::id()).expect("map");
    let mut pcs = Vec::new();
    let mut top = 0;
    let n = 2000;
    let (mut total, mut held, mut unwind) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut len = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let (t1, cap) = capturer
            .capture(tid, top, Duration::from_millis(50), |_| Instant::now())
            .expect("capture");
        let t2 = Instant::now();
        if top == 0 {
            top = unwinder.stack_top(cap.regs.sp).unwrap_or(0);
        }
        len = cap.stack.len();
        unwinder.unwind(&cap, &mut pcs);
        let t3 = Instant::now();
        total += t2 - t0;
        held += t2 - t1;
        unwind += t3 - t2;
        std::thread::sleep(Duration::from_micros(500));
    }
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    println!(
        "per capture: {:?} until captured+released ({:?} from captured to released), unwind {:?} ({} frames), stack copy {} bytes",
        total / n,
        held / n,
        unwind / n,
        pcs.len(),
        len
    );
}
