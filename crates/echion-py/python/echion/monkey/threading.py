"""Thread names, native ids, renames and exits, for the sampler.

The hooks keep echion 0.3's shape: a started thread's stack shows
``Thread._bootstrap`` → ``thread_bootstrap_inner`` → ``Thread._bootstrap_inner``,
as profiles of the C++ echion do.
"""

import sys
import threading
from threading import Thread

import echion.core as ec

_original_set_native_id = getattr(Thread, "_set_native_id", None)
_original_bootstrap_inner = Thread._bootstrap_inner
_original_name = Thread.name
_patched = False


def _real_ident(thread: Thread):
    """The thread's ``pthread_t``, what the sampler knows threads by. Once
    gevent has patched ``threading``, the main thread's ``ident`` is its
    main greenlet's id; the real one is known from the main thread itself
    (where an attach's bootstrap and a forked child's hooks run)."""
    ident = thread.ident
    monkey = sys.modules.get("gevent.monkey")
    if (
        ident is not None
        and monkey is not None
        and thread is threading.main_thread()
        and monkey.is_module_patched("threading")
        and getattr(thread, "native_id", None) == threading.get_native_id()
    ):
        return monkey.get_original("_thread", "get_ident")()
    return ident


def _track(thread: Thread) -> None:
    # Runs in the program's threads (as one starts, inside `Thread.start`,
    # whose caller waits for it, and where the program renames one): an
    # error here, from a subclass's own `name` or `ident`, would be the
    # program's. The sampler then only misses the name.
    try:
        _track_or_raise(thread)
    except Exception:
        pass


def _track_or_raise(thread: Thread) -> None:
    ident = _real_ident(thread)
    if ident is not None:
        native_id = getattr(thread, "native_id", None) or 0
        # (Not `current_thread()`: called while a thread starts, it would
        # make a dummy thread, whose start calls this again.)
        if native_id and ident == threading.get_ident():
            # A forked child's thread keeps the `native_id` its parent's
            # had (`threading` does not set it again after a fork): the
            # kernel's own is what the sampler tells threads apart by.
            native_id = threading.get_native_id()
        ec.track_thread(ident, thread.name, native_id)


def thread_set_native_id(self, *args, **kwargs):
    _original_set_native_id(self, *args, **kwargs)
    # Ident and native id are both known from here on.
    _track(self)


def thread_bootstrap_inner(self, *args, **kwargs):
    try:
        return _original_bootstrap_inner(self, *args, **kwargs)
    finally:
        # The thread is about to end: the sampler stops naming it.
        ident = getattr(self, "_ident", None)
        if ident is not None:
            ec.untrack_thread(ident)


def _set_name(self, name):
    _original_name.fset(self, name)
    # (Read as `threading` keeps it: a thread named before its
    # `Thread.__init__` has run has no `_ident` yet, and `ident` itself
    # asserts that `__init__` ran.)
    if getattr(self, "_ident", None) is not None:
        _track(self)


def patch() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    if _original_set_native_id is not None:
        Thread._set_native_id = thread_set_native_id
    Thread._bootstrap_inner = thread_bootstrap_inner
    Thread.name = property(_original_name.fget, _set_name, _original_name.fdel, _original_name.__doc__)
    track_all()


def track_all() -> None:
    """Tells the sampler about every running thread, the main one among
    them (at start, and in a forked child), and where `threading`'s threads
    start (their stacks are only shown while they are named)."""
    ec.set_thread_bootstrap(id(Thread._bootstrap.__code__))
    for thread in list(threading._active.values()):
        _track(thread)


def unpatch() -> None:
    global _patched
    if not _patched:
        return
    _patched = False
    if _original_set_native_id is not None:
        Thread._set_native_id = _original_set_native_id
    Thread._bootstrap_inner = _original_bootstrap_inner
    Thread.name = _original_name
