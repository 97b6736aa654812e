//! Is this a moment at which the stopped thread may be borrowed, and for
//! what? Decided from its native stack, innermost frame first.
//!
//! - A thread waiting in one of CPython's blocking calls that release the
//!   GIL and go on after `EINTR` (PEP 475: `time.sleep`, lock and `Event`
//!   waits, sockets, `select`, file reads) may run Python code right there,
//!   with the GIL taken the documented way (`PyGILState_Ensure`): that is
//!   where CPython itself runs a signal handler's Python code.
//! - Any other thread may ask for a pending call, unless it is inside the
//!   pending-call machinery or a lock primitive (the call takes the
//!   pending-calls lock, which the thread could hold), or the dynamic
//!   linker.

/// What the stopped thread may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run the code itself, now (a blocking call with the GIL released).
    Directly,
    /// Ask for a pending call.
    PendingCall,
    /// Neither: let it go and look again a moment later.
    NotNow,
}

/// CPython's GIL-released blocking calls that retry after `EINTR`, by the
/// function names the interpreter and its standard extension modules use
/// from 3.8 to 3.13.
const BLOCKING: &[&str] = &[
    // time.sleep (pysleep is often inlined into it)
    "pysleep",
    "time_sleep",
    // locks, Event, Condition, Thread.join, queue.Queue
    "acquire_timed",
    "lock_PyThread_acquire_lock",
    "rlock_acquire",
    // sockets: sock_call_ex and the sock_*_impl are inlined into the
    // methods in most builds
    "sock_call_ex",
    "sock_call",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_recvmsg",
    "sock_recvmsg_into",
    "sock_accept",
    "sock_send",
    "sock_sendall",
    "sock_sendto",
    "sock_sendmsg",
    "sock_connect",
    "sock_connect_ex",
    // select, poll, epoll
    "select_select",
    "select_select_impl",
    "select_poll_poll",
    "select_poll_poll_impl",
    "select_epoll_poll",
    "select_epoll_poll_impl",
    // os.read, FileIO.read, os.waitpid
    "_Py_read",
    "os_waitpid",
    "os_waitpid_impl",
];

/// Between the system call and the blocking call: the C library's wrappers
/// and CPython's own lock layers (the GIL is released before them).
fn is_wait_layer(name: &str, module: &str) -> bool {
    module.starts_with("libc.so")
        || module.starts_with("libc-")
        || module.starts_with("libpthread")
        || matches!(
            name,
            "PyThread_acquire_lock_timed"
                | "PyThread_acquire_lock_timed_with_retries"
                | "_PySemaphore_Wait"
                | "_PySemaphore_PlatformWait"
                | "_PyParkingLot_Park"
                | "_PyMutex_LockTimed"
                | "_PyMutex_LockSlow"
        )
}

/// Frames that hold, or may hold, the pending-calls lock or another lock
/// the pending call would take, or the dynamic linker's state.
fn forbids_pending_call(name: &str) -> bool {
    is_pending_call_machinery(name)
        || name.starts_with("PyThread_acquire_lock")
        || name.starts_with("PyThread_release_lock")
        || name.contains("Mutex")
        || name.contains("mutex")
        || name.contains("ParkingLot")
        || name.contains("Semaphore")
        || name.contains("sem_")
        || name.contains("futex")
        || name.contains("lll_")
        || name.starts_with("_dl_")
        || name.starts_with("__GI__dl")
}

/// The verdict for a thread whose frames (innermost first) have these
/// names in these modules, stopped in a system call or not.
pub fn judge(frames: &[(String, String)], in_syscall: bool) -> Verdict {
    if frames.is_empty() {
        return Verdict::NotNow;
    }
    if in_syscall {
        for (name, module) in frames {
            if BLOCKING.contains(&name.as_str()) {
                return Verdict::Directly;
            }
            if !is_wait_layer(name, module) {
                break;
            }
        }
    }
    if frames.iter().any(|(name, _)| forbids_pending_call(name)) {
        return Verdict::NotNow;
    }
    Verdict::PendingCall
}

/// CPython's own pending-call and eval-breaker functions, 3.8 to 3.13
/// (`Py_AddPendingCall`, `_push_pending_call`, `make_pending_calls`,
/// `_Py_HandlePending`, ...), matched without case or underscores. Not
/// every name with "pending" in it: an event loop's callbacks run Python
/// code under `ev_invoke_pending` (libev, gevent) or `uv__run_pending`
/// (libuv, uvloop), so such a program is nearly always inside one.
fn is_pending_call_machinery(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    folded.contains("pendingcall") || folded.contains("handlepending")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect()
    }

    #[test]
    fn a_sleep_runs_directly() {
        let f = frames(&[
            ("clock_nanosleep", "libc.so.6"),
            ("pysleep", "libpython3.12.so.1.0"),
            ("time_sleep", "libpython3.12.so.1.0"),
            ("_PyEval_EvalFrameDefault", "libpython3.12.so.1.0"),
        ]);
        assert_eq!(judge(&f, true), Verdict::Directly);
        // The same frames outside a system call: only a pending call.
        assert_eq!(judge(&f, false), Verdict::PendingCall);
    }

    #[test]
    fn a_lock_wait_runs_directly_through_the_lock_layers() {
        let f = frames(&[
            ("__futex_abstimed_wait_common", "libc.so.6"),
            ("sem_clockwait", "libc.so.6"),
            ("_PySemaphore_PlatformWait", "libpython3.13.so.1.0"),
            ("_PySemaphore_Wait", "libpython3.13.so.1.0"),
            ("_PyParkingLot_Park", "libpython3.13.so.1.0"),
            ("_PyMutex_LockTimed", "libpython3.13.so.1.0"),
            ("lock_PyThread_acquire_lock", "libpython3.13.so.1.0"),
        ]);
        assert_eq!(judge(&f, true), Verdict::Directly);
    }

    #[test]
    fn a_socket_wait_runs_directly() {
        let f = frames(&[
            ("recv", "libc.so.6"),
            ("sock_recv", "_socket.cpython-38-x86_64-linux-gnu.so"),
            ("method_vectorcall_VARARGS", "libpython3.8.so.1.0"),
        ]);
        assert_eq!(judge(&f, true), Verdict::Directly);
    }

    #[test]
    fn a_blocking_call_of_unknown_code_is_not_borrowed() {
        // A C extension blocking in read() with the GIL held, say.
        let f = frames(&[
            ("read", "libc.so.6"),
            ("my_blocking_read", "ext.so"),
            ("time_sleep", "libpython3.12.so.1.0"),
        ]);
        assert_eq!(judge(&f, true), Verdict::PendingCall);
    }

    #[test]
    fn lock_and_pending_call_machinery_waits() {
        for leaf in [
            "Py_AddPendingCall",
            "make_pending_calls",
            "PyThread_release_lock",
            "sem_post",
            "_dl_fixup",
            "pthread_mutex_lock",
        ] {
            let f = frames(&[
                (leaf, "libpython3.8.so.1.0"),
                ("_PyEval_EvalFrameDefault", "libpython3.8.so.1.0"),
            ]);
            assert_eq!(judge(&f, false), Verdict::NotNow, "{leaf}");
        }
        assert_eq!(judge(&[], false), Verdict::NotNow);
    }

    #[test]
    fn the_eval_breakers_own_names_wait() {
        for leaf in [
            "_PyEval_AddPendingCall",
            "_push_pending_call",
            "_Py_HandlePending",
            "Py_MakePendingCalls",
        ] {
            let f = frames(&[(leaf, "libpython3.12.so.1.0")]);
            assert_eq!(judge(&f, false), Verdict::NotNow, "{leaf}");
        }
    }

    #[test]
    fn an_event_loops_callback_may_ask_for_a_pending_call() {
        // Python code run by libev's (gevent) and libuv's (uvloop)
        // callbacks: the loop's "pending" queues are not CPython's.
        for (leaf, module) in [
            (
                "ev_invoke_pending",
                "corecext.cpython-39-x86_64-linux-gnu.so",
            ),
            ("uv__run_pending", "loop.cpython-311-x86_64-linux-gnu.so"),
        ] {
            let f = frames(&[
                ("_PyEval_EvalFrameDefault", "libpython3.9.so.1.0"),
                ("_PyObject_Call", "libpython3.9.so.1.0"),
                ("gevent_callback", module),
                (leaf, module),
                ("ev_run", module),
            ]);
            assert_eq!(judge(&f, false), Verdict::PendingCall, "{leaf}");
        }
    }
}
