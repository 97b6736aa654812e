//! `SIGQUIT` (Ctrl-\) under echion prints where every thread is, on
//! stderr, and the program goes on; as echion 0.3 does.
//!
//! The handler only sets a flag ([`echion_sampler::request_dump`]); the
//! sampler's loop prints the dump at its next tick, outside the signal
//! handler. It is installed once per process, only when `SIGQUIT` still has
//! its default action: a program that ignores it, or installs its own
//! handler (before or after us), keeps its own.

use std::sync::Once;

extern "C" fn on_sigquit(_signal: libc::c_int) {
    echion_sampler::request_dump();
}

/// Installs the handler if `SIGQUIT` has its default action.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction with a null new action only reads the current
        // disposition into a zeroed, properly sized struct.
        let current = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGQUIT, std::ptr::null(), &mut old) != 0 {
                return;
            }
            old.sa_sigaction
        };
        if current != libc::SIG_DFL {
            return;
        }
        // SAFETY: the handler is an `extern "C"` function that only stores
        // to an atomic (async-signal-safe); SA_RESTART keeps the program's
        // interrupted system calls going as if nothing happened.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigquit as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGQUIT, &action, std::ptr::null_mut());
        }
    });
}
