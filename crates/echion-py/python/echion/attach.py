"""The attached side of ``echion -p PID``: starts profiling inside a running
process and takes everything out again when the ``echion`` command asks
(or exits, however it exits).

The ``echion`` command makes a control directory with ``options`` (the
``ECHION_*`` values, one ``name=value`` per line), ``status`` (this side
appends one line per event: ``started``, ``busy``, ``error: …``,
``stopped`` (by the program, before the first sample), ``detached``) and
``control``, a FIFO that the command holds open: a byte on it, or its end
of file, means detach.
"""

import os
import sys

import echion.core as ec
from echion import bootstrap

#: The control pipe's read end while attached.
_control_fd = None
_report = None


def _read_options(control):
    env = {}
    with open(os.path.join(control, "options"), "r", encoding="utf-8") as f:
        for line in f:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep:
                env[name] = value
    return env


def run(control, report):
    """Starts profiling with the options in ``control``; ``report(line)``
    writes a status line for the ``echion`` command."""
    global _control_fd, _report
    if bootstrap._started or os.environ.get(bootstrap.PROFILED_PID) == bootstrap.pid_text():
        report("busy")
        return
    env = _read_options(control)
    fd = os.open(os.path.join(control, "control"), os.O_RDONLY | os.O_NONBLOCK)
    # echion wrote one byte into the FIFO as it made it: there while echion
    # holds its end, gone with it (a FIFO keeps nothing once nobody has it
    # open). Without it echion died before this moment (killed while the
    # program held the GIL in C code, say): this process would never see
    # the end of file that tells it to detach (only a reader that saw a
    # writer does), and would be profiled until it ends.
    try:
        hello = os.read(fd, 1)
    except BlockingIOError:
        hello = b""
    if hello != b"h":
        os.close(fd)
        # (What echion would have taken away as it ended, where this
        # process may.)
        for name in ("control", "options", "status"):
            try:
                os.unlink(os.path.join(control, name))
            except OSError:
                pass
        try:
            os.rmdir(control)
        except OSError:
            pass
        return
    try:
        ec.set_quiet(True)
        bootstrap.start(env)
        if not bootstrap._started:
            raise RuntimeError("echion did not start")
        _control_fd, _report = fd, report
        # A thread of `_thread`, not `threading`: it is in no list of the
        # program's threads (its one frame is the bootstrap's, left out of
        # every picture). It says `started` once the sampler has taken its
        # first sample; the program goes on meanwhile.
        # (The system's, where gevent patched `_thread`.)
        start_new_thread = bootstrap._original("_thread", "start_new_thread")
        # Counted before it starts: the program may exit as soon as this
        # returns, and its exit (atexit's stop) waits for the threads
        # counted, which then say `stopped`. A thread still waiting for the
        # GIL would be ended with the interpreter, unheard.
        run_no = ec.count_watcher()
        try:
            start_new_thread(bootstrap.watch_control, (fd, _started, _detach, run_no))
        except BaseException:
            ec.uncount_watcher()
            raise
    except BaseException:
        os.close(fd)
        if bootstrap._started:
            bootstrap.stop()
        else:
            # Failed half-way: whatever start() put in goes.
            bootstrap._unhook()
            bootstrap._restore_profiled_pid()
            ec.stop()
        ec.set_quiet(False)
        raise


def _started(ok):
    report = _report
    if report is None:
        return
    if ok:
        report("started %d" % os.getpid())
    elif not bootstrap._started:
        # Stopped before its first sample: by the program's exit (atexit),
        # or by the program itself. The profile is closed.
        report("stopped")
    else:
        report("error: the sampler did not start")


def forget_in_child():
    """In a forked child of an attached process: the attach is the
    parent's; the child keeps no part of it."""
    global _control_fd, _report
    fd, _control_fd, _report = _control_fd, None, None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _detach():
    """Stops profiling, takes every hook out and tells the command."""
    global _control_fd, _report
    fd, report = _control_fd, _report
    _control_fd = _report = None
    try:
        bootstrap.stop()
        ec.set_quiet(False)
    finally:
        # `Thread.join` above made this thread known to `threading` as a
        # dummy thread: it is gone from the program's list with it.
        threading = sys.modules.get("threading")
        if threading is not None:
            ident = bootstrap._original("_thread", "get_ident")()
            if bootstrap._gevent_patched("threading"):
                # Its lock is gevent's (this is no greenlet): one dict
                # operation, atomic under the GIL.
                threading._active.pop(ident, None)
            else:
                with threading._active_limbo_lock:
                    threading._active.pop(ident, None)
        if fd is not None:
            os.close(fd)
        if report is not None:
            report("detached")
