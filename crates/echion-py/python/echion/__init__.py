"""echion: a near-zero-overhead, in-process sampling profiler for CPython.

Run ``echion [options] python app.py`` (see ``echion --help``). The profile is
written in Austin's MOJO format.
"""

from echion.core import __version__  # noqa: F401
