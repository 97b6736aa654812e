"""Starts echion inside the profiled process from the ECHION_* environment
that the echion command sets, and keeps it right across threads, forks,
exec and exit."""

import atexit
import os
import sys

import echion.core as ec


def _gevent_patched(module) -> bool:
    """Whether gevent's monkey patching replaced ``module`` (``threading``,
    ``_thread``): its threads are then greenlets and its locks gevent's."""
    monkey = sys.modules.get("gevent.monkey")
    try:
        return monkey is not None and bool(monkey.is_module_patched(module))
    except Exception:
        return False


def _original(module, name):
    """``module.name`` as it was before gevent patched it (an attached
    program may have): echion's own threads and locks are the system's."""
    if _gevent_patched(module):
        return sys.modules["gevent.monkey"].get_original(module, name)
    return getattr(__import__(module), name)


_thread_allocate_lock = _original("_thread", "allocate_lock")

_started = False
_sampler_thread = None
#: The options of the run, as ``echion.core.configure_from_env`` read them.
_options = {}

#: Set in the environment of a profiled process to its pid: subinterpreters
#: run sitecustomize too, and must not start a second sampler.
PROFILED_PID = "_ECHION_PROFILED_PID"


def pid_text() -> str:
    """This process's pid as ``PROFILED_PID`` holds it: ten digits, zero
    padded, so that a forked child writes its own over its parent's in
    place (``echion.core`` does, in the fork)."""
    return "%010d" % os.getpid()


def _configure(env=None) -> None:
    # The variables, their formats and defaults are known to echion.core
    # only (the echion command writes them with the same code). `echion -p`
    # passes them as a dict: an attached process's environment is its own.
    global _options
    _options = ec.configure_from_env(env)


def _sampler_thread_class():
    from threading import Thread

    class SamplerThread(Thread):
        """The thread that shows echion's sampler in the profile, as echion
        0.3's does (named ``echion.core.sampler``, with 0.3's stack): the
        sampler runs in a native thread, for which this one stands
        (``echion.core.stand_in``: its CPU time is the sampler's). It is
        not one of the program's: ``_show_sampler`` takes it out of
        ``threading._active`` once it is there, so that
        ``threading.enumerate()`` and ``active_count()`` are what they are
        without echion (a program that joins every thread but the main one
        would wait for it for ever). Where mode reads its name from
        ``echion.bootstrap._sampler_thread`` instead. Its end finds no
        entry of its own there, which ``_delete`` takes as done."""

        def _delete(self):
            try:
                super()._delete()
            except KeyError:
                import threading

                threading._active.pop(self.ident, None)

    return SamplerThread


#: The process whose run shows its sampler as a thread (see
#: ``_show_sampler``), while it runs.
_shows_sampler_in = None


def _shows_sampler(forked=False) -> bool:
    """Whether the profile shows the sampler as a `threading` thread, as
    echion 0.3's does: not in stealth mode (as in 0.3), nor with
    ``--no-thread`` (there is none), nor in memory mode (0.3's sampler
    allocates nothing from Python there, so it never shows; the thread's
    own start would), nor where `threading`'s threads are gevent's
    greenlets, nor in a forked child (starting a `threading` thread waits
    for it to take the GIL once, a fork's cost many times over)."""
    if forked or _options.get("stealth") or _options.get("no_thread") or _options.get("memory"):
        return False
    return not _gevent_patched("threading")


def _hide_sampler_thread(thread) -> None:
    """Takes the sampler's thread out of ``threading._active`` (see
    ``SamplerThread``), where it puts itself just after ``start()`` has
    returned, as it leaves ``threading._limbo``."""
    import threading
    import time

    # (The system's sleep, where gevent patched `time` only.)
    sleep = _original("time", "sleep")
    deadline = time.monotonic() + 1.0
    while True:
        with threading._active_limbo_lock:
            if thread not in threading._limbo:
                if threading._active.get(thread._ident) is thread:
                    del threading._active[thread._ident]
                return
        if time.monotonic() > deadline:
            return
        sleep(0.001)


def _start_sampler(forked=False) -> None:
    global _shows_sampler_in
    # The sampler runs in a native thread (none with `--no-thread`): echion
    # never imports `threading` into the program.
    ec.start_async(open_first=forked)
    # The sampler sets itself up in its own thread; the program goes on once
    # it has taken its first sample, so that its start is in the profile.
    # An attached program goes on at once (echion -p waits elsewhere). A
    # forked child goes on at once too (`start_async` got its profile
    # ready): it goes on with its parent's work, whose start is in the
    # parent's profile, and may end at any moment, leaving a readable
    # profile or, before its first flush, none.
    if _attached_env is None:
        ec.wait_started(1.0, forked)
    if _shows_sampler(forked):
        # Shown once the program has `threading` (now, or when it imports
        # it: `_hook_threading`).
        _shows_sampler_in = os.getpid()
        if "threading" in sys.modules:
            _show_sampler()


def _show_sampler() -> None:
    """Starts the thread that stands for the sampler in the profile
    (``SamplerThread``), if this process's run shows one and has none."""
    global _sampler_thread
    if _shows_sampler_in != os.getpid() or _sampler_thread is not None:
        return
    thread = _sampler_thread_class()(target=ec.stand_in, name="echion.core.sampler", daemon=True)
    thread._echion_pid = os.getpid()
    thread.start()
    _sampler_thread = thread
    _hide_sampler_thread(thread)


def _track_main_thread() -> None:
    # Until the program imports `threading` (if ever), its one thread is
    # named as `threading` would name it.
    import _thread

    ec.track_thread(_thread.get_ident(), "MainThread", _thread.get_native_id())


def _hook_threading() -> None:
    # Loaded once the program has imported `threading` (importing it here
    # would cost a program that never does: every fork runs its after-fork
    # hook, which writes to pages the child must then copy).
    global _py_fork_hook
    if _fork_hooks and not _py_fork_hook:
        # A thread other than the main one may fork now: its child's run
        # starts from the Python hook (see `echion.core.fork_in_c`). First,
        # whatever patching does.
        _py_fork_hook = True
        os.register_at_fork(after_in_child=ec.after_fork_in_child)
    from echion.monkey import threading as threading_hooks

    threading_hooks.patch()
    # (Its start runs no import: `threading`'s module lock is still held
    # here, and the new thread must set `_started` for `start()` to return.)
    _show_sampler()


# --- fork ------------------------------------------------------------------
#
# From 3.12, os.fork() warns (DeprecationWarning) when the process has more
# than one thread, counting the kernel's threads: echion's sampler would make
# every fork of a single-threaded program warn. Before a fork that would not
# warn without echion, a filter that ignores exactly that warning is put
# first in the filters list, in place (the warnings registries stay valid).
# It takes itself out when it meets the warning (3.12 warns before the
# after-fork hooks run, 3.13 after them), and the child takes it out too.


class _ForkWarningText:
    """Matches the text of CPython's fork-with-threads warning, once (the
    filter machinery calls ``match`` on it)."""

    @staticmethod
    def match(text):
        if text.startswith("This process (pid=") and "is multi-threaded, use of" in text:
            _unhide_fork_warning()
            return True
        return False


_FORK_FILTER = ("ignore", _ForkWarningText(), DeprecationWarning, None, 0)


def _warning_filters():
    mod = sys.modules.get("warnings")
    if mod is not None:
        return getattr(mod, "filters", None)
    import _warnings

    return getattr(_warnings, "filters", None)


def _hide_fork_warning() -> None:
    _unhide_fork_warning()
    if not _started or sys.version_info < (3, 12):
        return
    if ec.threads_besides_echion() != 1:
        return
    filters = _warning_filters()
    if isinstance(filters, list):
        filters.insert(0, _FORK_FILTER)


def _unhide_fork_warning() -> None:
    filters = _warning_filters()
    if isinstance(filters, list):
        for i, f in enumerate(filters):
            if f is _FORK_FILTER:
                del filters[i]
                break


def _after_fork_in_child() -> None:
    # The Python half of `echion.core.after_fork_in_child`: what a child
    # does when the sampler may not restart natively (attached, or asyncio
    # or gevent hooked: they tell the new sampler what they know).
    global _sampler_thread
    _renew_stop_lock()
    _unhide_fork_warning()
    _sampler_thread = None
    if not _started:
        return
    # The sampler thread did not survive the fork: forget the parent's
    # state without writing it.
    ec.reset_after_fork()
    if _attached_env is not None:
        # `echion -p` profiles the process it attached to, not its children:
        # a forked child goes on without echion.
        _restore_profiled_pid()
        _unhook()
        ec.stop()  # nothing runs: takes out the allocator and signal hooks
        attach = sys.modules.get("echion.attach")
        if attach is not None:
            attach.forget_in_child()
        return
    os.environ[PROFILED_PID] = pid_text()
    # Sample this process into its own file, with the parent's settings
    # (`reset_after_fork` kept them).
    # The names posted before this point went to the parent's registry.
    threading_hooks = sys.modules.get("echion.monkey.threading")
    if threading_hooks is not None:
        threading_hooks.track_all()
    else:
        _track_main_thread()
    asyncio_hooks = sys.modules.get("echion.monkey.asyncio")
    if asyncio_hooks is not None:
        asyncio_hooks.after_fork_in_child()
    gevent_hooks = sys.modules.get("echion.monkey.gevent")
    if gevent_hooks is not None:
        gevent_hooks.after_fork_in_child()
    _start_sampler(forked=True)


# --- start and stop ----------------------------------------------------------


def in_profiled_process() -> bool:
    """Whether this interpreter belongs to a process that echion already
    profiles (a subinterpreter of it). A program image started by ``exec``
    in a profiled process inherits its environment but is not profiled yet:
    it starts a profile of its own."""
    if os.environ.get(PROFILED_PID) != pid_text():
        return False
    from echion._interpreters import is_main_interpreter

    return not is_main_interpreter()


def _hook_asyncio() -> None:
    # Loaded once the program has imported asyncio (a program that never
    # does starts sooner).
    from echion.monkey import asyncio as asyncio_hooks

    asyncio_hooks.patch()


def _hook_faulthandler() -> None:
    # faulthandler.enable() installs a SIGSEGV handler: a guarded read of a
    # tick under way that faults would reach it and end the program. The
    # sampler keeps its ticks to system calls while it installs (and after:
    # its handler is then on top).
    import faulthandler

    original = faulthandler.enable
    if getattr(original, "__echion_original__", None) is not None:
        return

    def enable(*args, **kwargs):
        return ec.installing_fault_handler(original, *args, **kwargs)

    enable.__doc__ = original.__doc__
    enable.__echion_original__ = original
    faulthandler.enable = enable


def _unhook_faulthandler() -> None:
    faulthandler = sys.modules.get("faulthandler")
    original = getattr(getattr(faulthandler, "enable", None), "__echion_original__", None)
    if original is not None:
        faulthandler.enable = original


def _hook_gevent() -> None:
    # Imports gevent itself: only once the program has. A forked child
    # tells its new sampler about the greenlets, from Python.
    ec.set_fork_native(False)
    from echion.monkey import gevent as gevent_hooks

    gevent_hooks.patch()


_fork_hooks = False
#: The Python after-fork hook is registered (``echion.core.fork_in_c``
#: makes it needed only once the program may have threads).
_py_fork_hook = False
#: The options ``echion -p`` gave (a dict), ``None`` in run mode.
_attached_env = None


def _restore_profiled_pid() -> None:
    # An attached run does not touch the environment (other threads of the
    # program may be reading it); it only forgets its options.
    global _attached_env
    _attached_env = None


def start(env=None) -> None:
    """Configure (from ``env``, a dict of ``ECHION_*`` values that
    ``echion -p`` passes, or else from the environment), hook the standard
    library and start sampling."""
    global _started, _fork_hooks, _py_fork_hook, _attached_env
    if _started or in_profiled_process():
        return
    if env is not None:
        _attached_env = env
    else:
        os.environ[PROFILED_PID] = pid_text()
    _configure(env)
    # threading, asyncio and gevent are hooked when the program imports
    # them, never imported here.
    from echion.monkey import when_imported

    if "threading" not in sys.modules:
        _track_main_thread()
    when_imported("threading", _hook_threading)

    # A forked child restarts the sampler natively, without a line of
    # Python (see `echion.core.after_fork_in_child`), unless it has more
    # to tell it than its thread's name: asyncio's and gevent's hooks say
    # no when they go in (which may be just below); an attached run's
    # children are not profiled.
    ec.set_fork_native(env is None)
    when_imported("asyncio", _hook_asyncio)
    when_imported("gevent", _hook_gevent)
    when_imported("faulthandler", _hook_faulthandler)
    _started = True
    if not _fork_hooks:
        # Hooks cannot be unregistered: once per process, inert while
        # echion is not sampling (an attached process may be attached again).
        _fork_hooks = True
        # (Before 3.12 no warning to hide: no Python code of ours in the
        # parent's fork either.)
        hides = sys.version_info >= (3, 12)
        ec.set_after_fork(_after_fork_in_child, _FORK_FILTER if hides else None)
        if ec.fork_in_c():
            # A child of the main thread puts its start off in the fork
            # itself: no Python hook (each costs every child a tenth of a
            # fork loop's rate) until the program has threads
            # (`_hook_threading`); a warning to hide only where echion has a
            # sampler thread.
            if hides and not _options.get("no_thread"):
                os.register_at_fork(before=_hide_fork_warning)
            if "threading" in sys.modules:
                os.register_at_fork(after_in_child=ec.after_fork_in_child)
                _py_fork_hook = True
        elif hides:
            os.register_at_fork(before=_hide_fork_warning, after_in_child=ec.after_fork_in_child)
            _py_fork_hook = True
        else:
            os.register_at_fork(after_in_child=ec.after_fork_in_child)
            _py_fork_hook = True
    atexit.register(stop)
    _start_sampler()


#: Held by a stop under way: the program's exit (atexit) waits for a
#: detach that another thread is doing, so that no thread of echion's takes
#: the GIL back from native code while the interpreter finalises (it would
#: be ended by pthread_exit, unwinding through frames that must not be).
_stop_lock = _thread_allocate_lock()
_stop_lock_pid = os.getpid()


def _renew_stop_lock() -> None:
    # In a forked child: another thread of the parent may have held it at
    # the fork.
    global _stop_lock, _stop_lock_pid
    if _stop_lock_pid != os.getpid():
        _stop_lock, _stop_lock_pid = _thread_allocate_lock(), os.getpid()


def watch_control(fd, started, detach, run=None) -> None:
    """The thread of an attach (``echion -p``): waits until the command
    asks to detach, then detaches, from Python with no native frame of
    echion's below (see ``echion.core.watch_control``; ``run`` is what
    ``echion.core.count_watcher`` gave the thread that started it)."""
    if ec.watch_control(fd, started, run):
        detach()


def stop() -> None:
    """Stop sampling and close the profile."""
    _renew_stop_lock()
    with _stop_lock:
        _stop()


def _stop() -> None:
    global _started, _sampler_thread, _shows_sampler_in
    if not _started:
        return
    _shows_sampler_in = None
    # A thread that forks while the sampler finishes (the GIL is let go
    # below) must not restart it natively in the child: nothing would stop
    # it there. First, so that a fork between these two lines takes the
    # Python hook with `_started` still true (and stops at its exit).
    ec.set_fork_native(False)
    _started = False
    ec.stop()
    # The sampler's Python thread takes the GIL once more to return: let it
    # end now, not while the interpreter finalises (where a thread that
    # wants the GIL is ended by pthread_exit, unwinding through native
    # frames).
    thread, _sampler_thread = _sampler_thread, None
    # (A forked child's is its parent's: never joined there, whatever
    # `threading`'s after-fork hook made of it.)
    if thread is not None and getattr(thread, "_echion_pid", None) == os.getpid() and thread.is_alive():
        thread.join(5.0)
    _unhook()
    _restore_profiled_pid()


def _unhook() -> None:
    """Takes out every hook ``start`` put in (the fork hooks stay, inert)."""
    global _started, _sampler_thread, _shows_sampler_in
    _started = False
    _sampler_thread = None
    _shows_sampler_in = None
    ec.set_fork_native(False)
    from echion.monkey import forget

    forget("threading")
    threading_hooks = sys.modules.get("echion.monkey.threading")
    if threading_hooks is not None:
        threading_hooks.unpatch()

    forget("asyncio")
    asyncio_hooks = sys.modules.get("echion.monkey.asyncio")
    if asyncio_hooks is not None:
        asyncio_hooks.unpatch()
    forget("faulthandler")
    _unhook_faulthandler()
    forget("gevent")
    gevent_hooks = sys.modules.get("echion.monkey.gevent")
    if gevent_hooks is not None:
        gevent_hooks.unpatch()
    try:
        atexit.unregister(stop)
    except Exception:  # pragma: no cover - interpreter shutting down
        pass
