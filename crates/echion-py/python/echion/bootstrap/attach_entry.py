"""Run by ``echion -p`` inside the process it attaches to, at a point where
CPython runs Python code safely (a pending call, or where a blocking call
would run a signal handler), with ``CONTROL`` set to the attach's control
directory and ``MAIN_MODULES`` to ``id(sys.modules)`` of the main
interpreter (0 if unknown). Loads the echion package of the ``echion``
command (the process need not have echion installed; nothing goes on
``sys.path``) and starts profiling. Every outcome is written to
``CONTROL/status``; nothing but the program's own ``KeyboardInterrupt``
raises out of here, and nothing is left in ``__main__``.

Some moments are safe for CPython but not for starting echion: the thread
may run a subinterpreter (echion belongs in the main one), a module that
the bootstrap or its hooks use may be half imported (``asyncio`` while its
import runs, say: its names are not all there yet), the thread may be in
importlib's taking of a module's lock (before 3.12 that keeps one entry
per thread, which an import made here would take away: the program's own
import then fails with a ``KeyError``), or ``threading``'s own lock may be
held (by this very thread, perhaps, and the bootstrap takes it). Then nothing is done, ``later: <why>`` is written, and ``echion -p``
borrows the process again a moment later.
"""

#: Packages the bootstrap and its hooks import or patch: none may be half
#: imported when it runs. With those the bootstrap imports on its way (3.8-
#: 3.13), and ``site``: an attach while the interpreter starts (``site``
#: importing ``os``) waits until it has.
_USED = frozenset(
    ("asyncio", "threading", "_threading_local", "gevent", "greenlet", "uvloop", "importlib", "weakref", "warnings", "atexit", "echion")
    + ("os", "posixpath", "genericpath", "stat", "_collections_abc", "collections", "functools", "keyword", "operator")
    + ("reprlib", "types", "_weakrefset", "linecache", "abc", "io", "codecs", "encodings", "site", "sitecustomize")
)


def _bad_moment():
    """Why this is no moment to start echion, or None."""
    import sys

    if sys.is_finalizing():
        # (A pending call queued just before the program's exit.) The
        # command sees the exit, or its next borrow is told.
        return "the interpreter is finalizing"
    if MAIN_MODULES and id(sys.modules) != MAIN_MODULES:  # noqa: F821
        return "the thread runs a subinterpreter"
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in _USED and getattr(getattr(module, "__spec__", None), "_initializing", False):
            return "%s is being imported" % name
    blocking_on = getattr(sys.modules.get("_frozen_importlib"), "_blocking_on", None)
    if type(blocking_on) is dict:  # before 3.12 (later: a list per thread)
        import _thread

        if _thread.get_ident() in blocking_on:
            return "the thread is taking a module's import lock"
    threading = sys.modules.get("threading")
    lock = getattr(threading, "_active_limbo_lock", None)
    if lock is not None:
        # A Lock (an RLock from 3.13) held by another thread, or a Lock
        # held by this one: the bootstrap would wait for it.
        if not lock.acquire(False):
            return "threading's lock is held"
        lock.release()
    return None


def _exiting():
    """Whether the program's atexit handlers run: a run started now would
    never be stopped, since an ``atexit.register`` made while they run is
    not called. ``threading`` shows it where the program imported it: its
    shutdown, the exit's first step, sets ``_SHUTTING_DOWN`` (3.9+; 3.8
    stops the main thread's ``Thread``), and once it has returned the
    atexit handlers come. While it still waits for the program's threads
    (a frame of ``_shutdown`` on this, the main, thread: a server whose
    main thread ended) they are still to come, and the attach goes on.
    Without ``threading`` nothing shows it, and a run started then ends
    its threads' waits without the GIL once the interpreter finalizes
    (``echion.core``)."""
    import sys

    threading = sys.modules.get("threading")
    if threading is None:
        return False
    down = getattr(threading, "_SHUTTING_DOWN", None)
    if down is None:
        down = getattr(getattr(threading, "_main_thread", None), "_is_stopped", False)
    if down is not True:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        # (By name: gevent puts a `_shutdown` of its own in.)
        if frame.f_code.co_name == "_shutdown":
            return False
        frame = frame.f_back
    return True


def _status(control, line):
    # Through io (which read this file) rather than os: in a subinterpreter
    # that is starting, os may be half imported.
    try:
        with open(control + "/status", "ab") as f:
            f.write((line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _attach(control):
    if _exiting():
        _status(control, "exiting")
        return
    why = _bad_moment()
    if why is not None:
        _status(control, "later: " + why)
        return
    import os

    if not os.path.isdir(control):
        # echion gave up on this attach before this ran: do nothing.
        return
    _status(control, "running")
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "loader.py")
    namespace = {"__name__": "echion_loader"}
    with open(path, "rb") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    namespace["load_echion"](os.path.dirname(here))
    from echion import attach

    attach.run(control, lambda line: _status(control, line))


try:
    _attach(CONTROL)  # noqa: F821 (set by the code that runs this file)
except KeyboardInterrupt:
    # The program's own Ctrl-C, arrived while this ran: it goes out, and
    # the injected code raises it again for the program once this is over.
    _status(CONTROL, "error: interrupted by the program's Ctrl-C")  # noqa: F821
    raise
except BaseException as e:  # never raise into the program
    _status(CONTROL, "error: %s: %s" % (type(e).__name__, e))  # noqa: F821
