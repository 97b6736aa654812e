"""Hooks on asyncio that tell the sampler what it cannot read by itself:
where asyncio keeps its tasks, which thread runs which event loop, and which
task waits on which where no field of theirs says so (``gather``, ``wait``,
``as_completed``, ``shield``, ``wait_for`` before 3.12, ``TaskGroup``).

echion never imports asyncio: ``echion.bootstrap`` loads this module and
installs these hooks when the program imports it. Every hook calls the
original and passes its result and exceptions through unchanged; links are
posted as addresses only, so no task is kept alive by them.
"""

import functools
import opcode
import sys
from _thread import get_ident

import echion.core as ec

_GET_AWAITABLE = opcode.opmap["GET_AWAITABLE"]
#: How many cache entries follow each instruction (3.11+; none before).
_CACHES = getattr(opcode, "_inline_cache_entries", None)

_patched = False
#: (owner, attribute, original value) of every patch, to undo them.
_originals = []


def _set(owner, name, value):
    original = owner.__dict__.get(name, getattr(owner, name))
    _originals.append((owner, name, original))
    if callable(original) and callable(value):
        # Seen as the original (its name, module and docstring, and
        # `__wrapped__`): `help()` and `inspect` say the same, and pickle
        # finds the wrapper where it finds the original.
        functools.update_wrapper(value, original)
    setattr(owner, name, value)


def _awaited_at_once(frame) -> bool:
    """Whether the call under way in ``frame`` is awaited as soon as it
    returns (``await f(...)``): the next instruction is ``GET_AWAITABLE``."""
    try:
        code = frame.f_code.co_code
        at = frame.f_lasti
        if at < 0:
            return False
        following = at + 2 + 2 * (_CACHES[code[at]] if _CACHES else 0)
        return following < len(code) and code[following] == _GET_AWAITABLE
    except Exception:
        return False


def _current_task():
    from asyncio import tasks

    try:
        return tasks.current_task()
    except RuntimeError:  # no running loop in this thread
        return None


def _link(parent, children):
    if parent is None:
        return
    from asyncio import tasks

    for child in children:
        # A future that is not a task has no stack: linking it would only
        # hide its waiter.
        if isinstance(child, tasks.Task):
            ec.link_tasks(parent, child)


def track():
    """Tells the sampler where asyncio keeps its tasks, and which loop this
    thread runs (if any)."""
    from asyncio import events, tasks

    if hasattr(tasks, "_scheduled_tasks"):
        scheduled = tasks._scheduled_tasks.data
        eager = getattr(tasks, "_eager_tasks", None)
    else:
        scheduled = tasks._all_tasks.data
        eager = None
    ec.init_asyncio(tasks._current_tasks, scheduled, eager)
    running = events._get_running_loop()
    if running is not None:
        ec.track_asyncio_loop(get_ident(), running)


def patch():
    """Installs the hooks (once) and tells the sampler about asyncio."""
    global _patched
    if _patched:
        return
    _patched = True
    # A forked child tells its new sampler about asyncio again, from
    # Python (`after_fork_in_child` below).
    ec.set_fork_native(False)
    import asyncio
    from asyncio import events, tasks

    # Which thread runs which loop: every loop (asyncio's, uvloop's, one
    # run without set_event_loop) says so through _set_running_loop when
    # it starts and stops running. uvloop takes asyncio._set_running_loop
    # when it is imported, which is after this.
    original_set_running_loop = events._set_running_loop

    def _set_running_loop(loop):
        ec.track_asyncio_loop(get_ident(), loop)
        return original_set_running_loop(loop)

    _set(events, "_set_running_loop", _set_running_loop)
    if getattr(asyncio, "_set_running_loop", None) is original_set_running_loop:
        _set(asyncio, "_set_running_loop", _set_running_loop)

    # gather: the task that gathers waits on each child.
    gathering_init = tasks._GatheringFuture.__init__

    def _gathering_init(self, children, *args, **kwargs):
        gathering_init(self, children, *args, **kwargs)
        _link(_current_task(), children)

    _set(tasks._GatheringFuture, "__init__", _gathering_init)

    # wait: the waiting task waits on every future it was given.
    original_wait = tasks._wait

    def _wait(fs, *args, **kwargs):
        _link(_current_task(), fs)
        return original_wait(fs, *args, **kwargs)

    _set(tasks, "_wait", _wait)

    # as_completed: the futures are made tasks here, as the original does
    # itself, so that they can be linked to the caller. Before 3.13 the
    # original is a generator, which makes them at its first `next()`: so
    # does the wrapper's. (With `loop=` (3.8, 3.9), the original's own
    # warning must name the program's line: no link then.)
    original_as_completed = tasks.as_completed

    if sys.version_info < (3, 13):

        def _linked_as_completed(fs, args, kwargs):
            parent = _current_task()
            if parent is not None:
                fs = {tasks.ensure_future(f) for f in set(fs)}
                _link(parent, fs)
            return (yield from original_as_completed(fs, *args, **kwargs))

        _linked_as_completed.__name__ = _linked_as_completed.__qualname__ = "as_completed"

        def as_completed(fs, *args, **kwargs):
            if "loop" in kwargs or asyncio.isfuture(fs) or asyncio.iscoroutine(fs):
                return original_as_completed(fs, *args, **kwargs)
            return _linked_as_completed(fs, args, kwargs)

    else:

        def as_completed(fs, *args, **kwargs):
            parent = _current_task()
            if parent is not None and not (asyncio.isfuture(fs) or asyncio.iscoroutine(fs)):
                fs = {tasks.ensure_future(f) for f in set(fs)}
                _link(parent, fs)
            return original_as_completed(fs, *args, **kwargs)

    for owner in (tasks, asyncio):
        if getattr(owner, "as_completed", None) is original_as_completed:
            _set(owner, "as_completed", as_completed)

    # shield: the caller waits on the shielded task through a future of
    # its own.
    original_shield = tasks.shield

    def shield(arg, *args, **kwargs):
        parent = _current_task()
        # (With `loop=` (3.8, 3.9) the original warns, naming its caller's
        # line: no link then, so that the caller is the program's.)
        if parent is not None and "loop" not in kwargs:
            arg = tasks.ensure_future(arg, loop=kwargs.get("loop"))
            _link(parent, (arg,))
        return original_shield(arg, *args, **kwargs)

    for owner in (tasks, asyncio):
        if getattr(owner, "shield", None) is original_shield:
            _set(owner, "shield", shield)

    # wait_for before 3.12 runs its argument as a task and waits on a
    # future of its own (3.12+ awaits the argument directly). The original
    # is a coroutine function: it makes that task once it is awaited, and
    # not at all if it never is. So the wrapper makes it here only when
    # the call is awaited at once (`await wait_for(...)`, the same moment),
    # and leaves any other use as it is, unlinked.
    if sys.version_info < (3, 12):
        original_wait_for = tasks.wait_for

        def wait_for(fut, timeout, *args, **kwargs):
            parent = _current_task()
            if (
                parent is not None
                and timeout is not None
                and "loop" not in kwargs
                and _awaited_at_once(sys._getframe(1))
            ):
                fut = tasks.ensure_future(fut)
                _link(parent, (fut,))
            return original_wait_for(fut, timeout, *args, **kwargs)

        for owner in (tasks, asyncio):
            if getattr(owner, "wait_for", None) is original_wait_for:
                _set(owner, "wait_for", wait_for)
        # (`asyncio.iscoroutinefunction` says what it says of the original;
        # `inspect`'s reads the code's flags, and says no.)
        marker = getattr(sys.modules.get("asyncio.coroutines"), "_is_coroutine", None)
        if marker is not None:
            wait_for._is_coroutine = marker

    # TaskGroup (3.11+): the task that entered the group waits on its tasks
    # in __aexit__.
    task_group = getattr(asyncio, "TaskGroup", None)
    if task_group is not None:
        original_create_task = task_group.create_task

        def create_task(self, *args, **kwargs):
            task = original_create_task(self, *args, **kwargs)
            _link(getattr(self, "_parent_task", None), (task,))
            return task

        _set(task_group, "create_task", create_task)

    track()


def unpatch():
    """Undoes every hook."""
    global _patched
    while _originals:
        owner, name, value = _originals.pop()
        setattr(owner, name, value)
    _patched = False


def after_fork_in_child():
    """The child's sampler is new: tell it about asyncio again (the links
    of the parent's tasks are not carried over)."""
    if _patched:
        track()

