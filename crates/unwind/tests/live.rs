//! Unwinding a live thread of this process that is inside libc's `qsort`,
//! in a comparison callback of ours.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use echion_unwind::{Capturer, NativeUnwinder, UnwindEnd};

static SPIN: AtomicBool = AtomicBool::new(true);
static TID: AtomicI32 = AtomicI32::new(0);

#[inline(never)]
extern "C" fn echion_test_compare(a: *const libc::c_void, b: *const libc::c_void) -> i32 {
    // SAFETY: gettid cannot fail.
    TID.store(unsafe { libc::gettid() }, Ordering::Release);
    while SPIN.load(Ordering::Relaxed) {
        std::hint::spin_loop();
    }
    // SAFETY: qsort passes pointers to two elements of the u32 array.
    let (a, b) = unsafe { (*(a as *const u32), *(b as *const u32)) };
    a.cmp(&b) as i32
}

#[inline(never)]
fn echion_test_sort() {
    let mut data: Vec<u32> = (0..64).rev().collect();
    // SAFETY: a valid array of 64 u32 and a comparator of the right type.
    unsafe {
        libc::qsort(
            data.as_mut_ptr() as *mut libc::c_void,
            data.len(),
            4,
            Some(echion_test_compare),
        )
    };
    assert!(data.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn a_thread_in_a_qsort_callback_unwinds_through_libc_to_its_start() {
    let worker = std::thread::spawn(echion_test_sort);
    while TID.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let tid = TID.load(Ordering::Acquire);
    let mut unwinder = NativeUnwinder::new(std::process::id()).expect("module map");
    let mut capturer = Capturer::new().expect("capturer");
    let mut names = Vec::new();
    for _ in 0..5 {
        let (_, cap) = capturer
            .capture(tid, 0, Duration::from_secs(1), |_| ())
            .expect("captured");
        let top = unwinder.stack_top(cap.regs.sp).expect("stack mapped");
        assert!(top > cap.regs.sp);
        let mut pcs = Vec::new();
        let end = unwinder.unwind(&cap, &mut pcs);
        assert_eq!(end, UnwindEnd::Complete, "{pcs:x?}");
        names = pcs
            .iter()
            .enumerate()
            .map(|(i, &pc)| unwinder.symbol(pc, i).name)
            .collect();
        let at = |n: &str| names.iter().position(|s| s.contains(n));
        let cmp = at("echion_test_compare").expect("the callback");
        let qsort = at("qsort").expect("libc's qsort");
        let sort = at("echion_test_sort").expect("the caller");
        assert!(cmp < qsort && qsort < sort, "{names:#?}");
        // Outermost: libc's thread start (a local symbol: named by offset
        // when libc keeps no .symtab).
        let last = names.last().expect("frames");
        assert!(
            last.contains("libc") || last.contains("clone"),
            "{names:#?}"
        );
    }
    SPIN.store(false, Ordering::Relaxed);
    worker.join().unwrap();
    eprintln!("{names:#?}");
}
