"""Loaded at interpreter start because the echion command put this directory
first on PYTHONPATH. Starts the profiler, then runs the user's own
sitecustomize (if any), which this module would otherwise hide."""

import os
import sys


def _start_echion() -> None:
    # A subinterpreter of a process echion already profiles: its threads are
    # sampled from the main interpreter's sampler, and echion is not even
    # imported here. A program image started by exec has the same pid and
    # environment, but runs in a main interpreter: it starts its own profile.
    profiled_here = os.environ.get("_ECHION_PROFILED_PID") == str(os.getpid())
    if profiled_here:
        try:
            from echion._interpreters import is_main_interpreter
        except ImportError:
            return
        if not is_main_interpreter():
            return
    try:
        import echion.bootstrap as bootstrap
    except ImportError as e:
        # An interpreter the echion package is not installed for (or a
        # subinterpreter that cannot load it): run the program unprofiled,
        # its output untouched; say why only when asked to.
        if not profiled_here and os.environ.get("ECHION_VERBOSE") == "1":
            sys.stderr.write("echion: not profiling %s: %s\n" % (sys.executable, e))
        return
    bootstrap.start()


def _chain_to_user_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.pop("sitecustomize", None)
    # Our directory is only needed to get here: take it off sys.path so that
    # the program sees the path it would see without echion (PYTHONPATH
    # keeps it for child processes).
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import sitecustomize  # noqa: F401  (the user's, if there is one)
    except ImportError as e:
        if getattr(e, "name", None) != "sitecustomize":
            raise
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_start_echion()
_chain_to_user_sitecustomize()
