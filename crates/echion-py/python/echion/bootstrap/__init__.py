"""Starts echion inside the profiled process from the ECHION_* environment
that the echion command sets, and keeps it right across threads, forks and
exit."""

import atexit
import os
import sys

import echion.core as ec

_started = False


def _flag(name: str) -> bool:
    return bool(int(os.getenv(name, "0") or "0"))


def output_path(pid: int = 0) -> str:
    """The output file of this process: ``%(pid)`` is replaced in each
    process, so that forked and spawned children write files of their own."""
    path = os.getenv("ECHION_OUTPUT") or "%(pid).echion"
    return path.replace("%(pid)", str(pid or os.getpid()))


def _configure() -> None:
    ec.set_interval(int(os.getenv("ECHION_INTERVAL", "1000")))
    ec.set_cpu(_flag("ECHION_CPU"))
    ec.set_memory(_flag("ECHION_MEMORY"))
    ec.set_native(_flag("ECHION_NATIVE"))
    ec.set_where(bool(os.getenv("ECHION_WHERE")))
    exposure = os.getenv("ECHION_EXPOSURE")
    ec.set_exposure(float(exposure) if exposure else 0.0)
    ec.set_output(output_path())


def _start_sampler() -> None:
    if _flag("ECHION_STEALTH"):
        ec.start_async()
    else:
        from threading import Thread

        Thread(target=ec.start, name="echion.core.sampler", daemon=True).start()
    # The sampler sets itself up in its own thread; the program goes on once
    # it has taken its first sample, so that its start is in the profile.
    ec.wait_started(1.0)


def _after_fork_in_child() -> None:
    if not _started:
        return
    os.environ[PROFILED_PID] = str(os.getpid())
    # The sampler thread did not survive the fork: forget the parent's
    # state without writing it, and sample this process into its own file.
    ec.reset_after_fork()
    ec.set_output(output_path())
    # The names posted before this point went to the parent's registry.
    from echion.monkey import threading as threading_hooks

    threading_hooks.track_all()
    _start_sampler()


#: Set in the environment of a profiled process to its pid: subinterpreters
#: run sitecustomize too, and must not start a second sampler.
PROFILED_PID = "_ECHION_PROFILED_PID"


def in_profiled_process() -> bool:
    """Whether this interpreter belongs to a process that echion already
    profiles (a subinterpreter of it)."""
    return os.environ.get(PROFILED_PID) == str(os.getpid())


def start() -> None:
    """Configure, hook the standard library and start sampling."""
    global _started
    if _started or in_profiled_process():
        return
    os.environ[PROFILED_PID] = str(os.getpid())
    _configure()
    from echion.monkey import threading as threading_hooks

    threading_hooks.patch()
    _started = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(stop)
    _start_sampler()


def stop() -> None:
    """Stop sampling and close the profile."""
    global _started
    if not _started:
        return
    _started = False
    ec.stop()
    from echion.monkey import threading as threading_hooks

    threading_hooks.unpatch()
    try:
        atexit.unregister(stop)
    except Exception:  # pragma: no cover - interpreter shutting down
        pass
