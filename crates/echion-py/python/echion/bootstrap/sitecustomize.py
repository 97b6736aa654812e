"""Loaded at interpreter start because the echion command put this directory
first on PYTHONPATH. Starts the profiler, then runs the user's own
sitecustomize (if any), which this module would otherwise hide."""

import os
import sys


def _start_echion() -> None:
    # A subinterpreter of a process echion already profiles: its threads are
    # sampled from the main interpreter's sampler, and echion.core is not
    # even loaded here. A program image started by exec has the same pid and
    # environment, but runs in a main interpreter: it starts its own profile.
    profiled_here = os.environ.get("_ECHION_PROFILED_PID") == "%010d" % os.getpid()
    try:
        _load_own_echion()
        if profiled_here:
            from echion._interpreters import is_main_interpreter

            if not is_main_interpreter():
                return
        import echion.bootstrap as bootstrap
    except (ImportError, OSError) as e:
        # An interpreter echion cannot run in (older than 3.8, or one that
        # cannot load the abi3 module): run the program unprofiled, its
        # output untouched, and say why in one line. A subinterpreter of a
        # profiled process stays silent.
        if not profiled_here:
            sys.stderr.write("echion: not profiling %s: %s\n" % (sys.executable, e))
        return
    bootstrap.start()


def _load_own_echion() -> None:
    # The echion package this directory belongs to, whether or not the
    # interpreter has echion installed (one abi3 build serves 3.8 and up).
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "loader.py")
    # Run through its loader, from the bytecode cached beside it: in an
    # interpreter that found every module's cache fresh, the first
    # compile() warms up the compiler, a millisecond of start-up.
    # (The import system's own modules, already loaded: importing
    # importlib.machinery would add importlib, warnings and types to the
    # program, whose every fork then copies their memory.)
    _bootstrap, _external = _import_system()
    loader = _external.SourceFileLoader("echion_loader", path)
    module = _bootstrap.module_from_spec(_bootstrap.spec_from_loader("echion_loader", loader))
    loader.exec_module(module)
    module.load_echion(os.path.dirname(here))


def _import_system():
    # importlib._bootstrap and importlib._bootstrap_external, as the
    # interpreter loaded them at its start (the names are CPython's since
    # 3.5); through importlib where an embedder left them out.
    bootstrap = sys.modules.get("_frozen_importlib")
    external = sys.modules.get("_frozen_importlib_external")
    if bootstrap is None or external is None:
        from importlib import _bootstrap as bootstrap, _bootstrap_external as external
    return bootstrap, external


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
