"""echion: a near-zero-overhead, in-process sampling profiler for CPython.

Run ``echion [options] python app.py`` (see ``echion --help``). The profile is
written in Austin's MOJO format.
"""


def __getattr__(name):
    # The native module is loaded only when something asks for it, so that
    # the pure-Python parts load anywhere (a subinterpreter among them).
    if name == "__version__":
        from echion.core import __version__

        return __version__
    raise AttributeError("module 'echion' has no attribute %r" % name)
