//! Clocks: monotonic time, per-thread CPU time, the scheduler state of a
//! thread, and the timer slack of the sampler's sleeps.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

/// Monotonic time in nanoseconds.
pub fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| ts_ns(&t))
        .unwrap_or(0)
}

fn ts_ns(t: &TimeSpec) -> u64 {
    (t.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec() as u64)
}

/// Asks the kernel for the smallest timer slack for the calling thread, so
/// that sleeps end at their deadline instead of up to 50 µs later (the
/// default slack). Failure only costs precision.
pub fn minimise_timer_slack() {
    let _ = nix::sys::prctl::set_timerslack(1);
}

/// CPU time the calling thread has consumed, in nanoseconds (0 if the
/// clock cannot be read).
pub fn own_cpu_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| ts_ns(&t))
        .unwrap_or(0)
}

/// CPU time consumed by the thread with kernel id `tid` of this process, in
/// nanoseconds.
///
/// The clock id is the kernel's encoding of a per-thread scheduler clock
/// (`MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)` in
/// `include/linux/posix-timers.h`): `(~tid << 3) | CPUCLOCK_PERTHREAD_MASK
/// (4) | CPUCLOCK_SCHED (2)`. Reading it needs no handle on the thread.
pub fn thread_cpu_ns(tid: u64) -> Option<u64> {
    let tid = i32::try_from(tid).ok().filter(|&t| t > 0)?;
    let id = ((!tid) << 3) | 6;
    clock_gettime(ClockId::from_raw(id)).ok().map(|t| ts_ns(&t))
}

/// Whether the thread `tid` of this process is running or runnable right
/// now (state `R` in `/proc/self/task/<tid>/stat`).
pub fn thread_is_running(tid: u64) -> bool {
    use std::io::{Read, Write};
    // Stack buffers: this runs on the sampler's hot path in CPU mode.
    let mut path = [0u8; 48];
    let total = path.len();
    let mut w = &mut path[..];
    if write!(w, "/proc/self/task/{tid}/stat").is_err() {
        return false;
    }
    let len = total - w.len();
    let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path[..len]);
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut stat = [0u8; 1024];
    let Ok(n) = file.read(&mut stat) else {
        return false;
    };
    let stat = &stat[..n];
    // The state follows the command name, which is in parentheses and may
    // itself contain spaces and parentheses: take the last ')'.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    stat.get(close + 2) == Some(&b'R')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_tid() -> u64 {
        nix::unistd::gettid().as_raw() as u64
    }

    #[test]
    fn cpu_clock_of_a_busy_thread_advances() {
        let tid = own_tid();
        let before = thread_cpu_ns(tid).expect("own clock");
        let start = now_ns();
        let mut x = 0u64;
        // Burn until the clock shows 10 ms, or fail after 10 s of wall time
        // (a loaded machine may give us little CPU, but not none).
        let mut after = before;
        while after - before < 10_000_000 {
            assert!(
                now_ns() - start < 10_000_000_000,
                "CPU clock stuck at {after}"
            );
            x = x.wrapping_add(std::hint::black_box(1));
            after = thread_cpu_ns(tid).expect("own clock");
        }
        assert!(x > 0);
        assert!(thread_is_running(tid));
        assert_eq!(thread_cpu_ns(0), None);
        assert!(!thread_is_running(u64::from(u32::MAX)));
    }
}

/// The CPU clocks of threads, as the engine reads them in CPU mode: the
/// kernel's ([`KernelClocks`]), or a test's.
pub trait CpuClocks {
    /// CPU time used by thread `tid` so far, in ns (`None`: it ended).
    fn thread_cpu_ns(&self, tid: u64) -> Option<u64>;
    /// Whether thread `tid` is on a CPU right now.
    fn thread_is_running(&self, tid: u64) -> bool;
}

/// The kernel's clocks of this machine's threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelClocks;

impl CpuClocks for KernelClocks {
    fn thread_cpu_ns(&self, tid: u64) -> Option<u64> {
        thread_cpu_ns(tid)
    }

    fn thread_is_running(&self, tid: u64) -> bool {
        thread_is_running(tid)
    }
}
