"""Hooks on gevent that give each greenlet its own stack.

Greenlets switch inside one thread: the interpreter only knows the one that
runs. A greenlet trace function (``greenlet.settrace``, chained to any the
program had) tells the sampler at every switch which greenlet now runs and
where the one it leaves stopped (its ``gr_frame``); ``join``, ``joinall``,
``wait`` and ``iwait`` tell it which greenlet waits on which. Greenlets are
known by ``id()``; the frames passed stay alive while their greenlet is
suspended, which is all the time the sampler reads them.

This module imports gevent: ``echion.bootstrap`` imports it only once the
program has imported gevent (``echion.monkey.when_imported``), and calls
``patch()``, as echion 0.3 does.
"""

import gevent
import gevent.greenlet
import gevent.hub
from gevent.monkey import get_original
from greenlet import getcurrent, settrace

import echion.core as ec

_Greenlet = gevent.greenlet.Greenlet
#: The real thread's id (``monkey.patch_all`` makes ``_thread.get_ident``
#: a greenlet's).
get_ident = get_original("_thread", "get_ident")
_joinall = gevent.joinall
_wait = gevent.wait
_iwait = gevent.iwait

_NOT_SET = False  # not started, or finished
_tracked = set()
_previous_tracer = None
#: The thread whose greenlet trace function ``patch`` set.
_trace_thread = None
_patched = False
#: (owner, attribute, original value) of every patch, to undo them.
_originals = []


def _set(owner, name, value):
    _originals.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def _name(g):
    # (A subclass's own `name` may be anything, or raise: the sampler takes
    # any object, and a name that cannot be read is the type's.)
    try:
        return getattr(g, "name", None) or type(g).__qualname__
    except Exception:
        return type(g).__qualname__


def _where(g, frame):
    gid = id(g)
    if gid in _tracked:
        ec.update_greenlet_frame(gid, frame)
        return
    _tracked.add(gid)
    ec.track_greenlet(gid, _name(g), frame)


def _tracer(event, args):
    if _patched and event in ("switch", "throw"):
        try:
            _note_switch(args)
        except Exception:
            # (Raised here, it would end the program's event loop: the
            # sampler only misses this switch.)
            pass
    if _previous_tracer is not None:
        _previous_tracer(event, args)


def _note_switch(args):
    origin, target = args
    if origin.dead:
        # Its last switch: it is gone. (Nothing is linked to the
        # greenlet itself: a link added from a trace function changes
        # how some gevent releases wake their waiters.)
        gid = id(origin)
        if gid in _tracked:
            _tracked.discard(gid)
            ec.untrack_greenlet(gid)
    else:
        _where(origin, origin.gr_frame or _NOT_SET)
    _where(target, None)


def _link(children):
    parent = id(getcurrent())
    for child in children:
        if hasattr(child, "switch"):  # a greenlet, not another waitable
            ec.link_greenlets(id(child), parent)


class Greenlet(_Greenlet):
    """gevent's ``Greenlet``, whose ``join`` tells the sampler who waits."""

    def join(self, *args, **kwargs):
        _link((self,))
        return _Greenlet.join(self, *args, **kwargs)


def joinall(greenlets, *args, **kwargs):
    greenlets = list(greenlets)
    _link(greenlets)
    return _joinall(greenlets, *args, **kwargs)


def wait(objects=None, *args, **kwargs):
    if objects is not None:
        objects = list(objects)
        _link(objects)
    return _wait(objects, *args, **kwargs)


def iwait(objects, *args, **kwargs):
    objects = list(objects)
    _link(objects)
    return _iwait(objects, *args, **kwargs)


def patch():
    """Installs the hooks (once)."""
    global _patched, _previous_tracer
    if _patched:
        return
    _patched = True
    # Greenlets told about to an earlier sampler (an attach before this
    # one): this one knows none of them yet.
    _tracked.clear()
    for owner in (gevent, gevent.greenlet):
        _set(owner, "Greenlet", Greenlet)
    _set(gevent, "spawn", Greenlet.spawn)
    _set(gevent, "spawn_later", Greenlet.spawn_later)
    _set(gevent, "joinall", joinall)
    _set(gevent, "wait", wait)
    _set(gevent, "iwait", iwait)
    global _trace_thread
    _trace_thread = get_ident()
    previous = settrace(_tracer)
    if previous is not _tracer:
        # (Else ours stayed in this thread since an earlier unpatch in
        # another thread, inert, chained to the program's: kept as it is.)
        _previous_tracer = previous


def unpatch():
    """Undoes every hook."""
    global _patched, _previous_tracer
    if not _patched:
        return
    # A greenlet trace function is the thread's own: it can only be put
    # back from the thread that set it (an attach may detach from another;
    # ours then stays there, inert, passing every event on).
    if get_ident() == _trace_thread:
        settrace(_previous_tracer)
        _previous_tracer = None
    while _originals:
        owner, name, value = _originals.pop()
        setattr(owner, name, value)
    _patched = False


def track():
    """Nothing to do: greenlets are told about as they switch (echion 0.3's
    name for the second step of hooking a module)."""


def after_fork_in_child():
    """The child's sampler is new: greenlets are told about again at their
    next switch."""
    _tracked.clear()
