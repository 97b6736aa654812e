//! `SIGQUIT` (Ctrl-\) under echion prints where every thread is, on
//! stderr, and the program goes on; as echion 0.3 does.
//!
//! The handler only sets a flag ([`echion_sampler::request_dump`]); the
//! sampler's loop prints the dump at its next tick, outside the signal
//! handler. It is installed when sampling starts, only when `SIGQUIT` still
//! has its default action (a program that ignores it, or installs its own
//! handler, before or after us, keeps its own), and taken out when sampling
//! stops.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the handler is installed (and was found in place since). An
/// atomic, not a lock: a run that ends by itself takes the handler out on
/// the sampler's thread, without the GIL, where a fork by the program
/// could copy a lock held into a child that then installs it again.
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigquit(_signal: libc::c_int) {
    echion_sampler::request_dump();
}

/// The handler installed for `SIGQUIT` now, `None` if it cannot be read.
fn current() -> Option<libc::sighandler_t> {
    // SAFETY: sigaction with a null new action only reads the current
    // disposition into a zeroed, properly sized struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGQUIT, std::ptr::null(), &mut old) == 0)
            .then_some(old.sa_sigaction)
    }
}

fn ours() -> libc::sighandler_t {
    on_sigquit as *const () as libc::sighandler_t
}

/// Installs the handler if `SIGQUIT` has its default action.
pub(crate) fn install() {
    if INSTALLED.load(Ordering::Acquire) || current() != Some(libc::SIG_DFL) {
        return;
    }
    // SAFETY: sigaction gets a zeroed, fully set struct of its own type and
    // no old action; the handler is an `extern "C"` function that only
    // stores to an atomic (async-signal-safe); SA_RESTART keeps the
    // program's interrupted system calls going as if nothing happened. The
    // block yields only whether the call succeeded.
    let done = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ours();
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGQUIT, &action, std::ptr::null_mut()) == 0
    };
    INSTALLED.store(done, Ordering::Release);
}

/// Puts the default action back if the handler is still ours (a program
/// that installed its own since keeps it).
pub(crate) fn uninstall() {
    if !INSTALLED.swap(false, Ordering::AcqRel) || current() != Some(ours()) {
        return;
    }
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags; the old
    // action is not asked.
    unsafe {
        let action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGQUIT, &action, std::ptr::null_mut());
    }
}
