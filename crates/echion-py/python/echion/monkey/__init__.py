"""Hooks on the standard library and on gevent that tell the sampler what
only Python knows: thread names, their native ids, renames and exits;
asyncio's tasks and loops; gevent's greenlets.

Hooks on a module that the program may never use (asyncio, gevent) go in
when the program imports it, never before: ``when_imported``.
"""

import os
import sys

#: Module name → what to run right after it has been imported.
_pending = {}


class _PatchingLoader:
    """Runs a module's own loader, then its hook."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        hook = _pending.pop(self._name, None)
        if not _pending:
            _remove_finder()
        if hook is not None:
            try:
                hook()
            except Exception as e:  # never break the program's import
                if os.environ.get("ECHION_VERBOSE", "0") not in ("", "0"):
                    print("echion: cannot hook %s: %s" % (self._name, e), file=sys.stderr)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """Finds nothing itself: when a module with a pending hook is imported,
    it wraps the loader that the other finders give, so that the hook runs
    right after the module has run (before any code of the program uses
    it)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is cls:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, name)
        return spec


def _remove_finder():
    try:
        sys.meta_path.remove(_Finder)
    except ValueError:
        pass


def when_imported(name, hook):
    """Runs ``hook()`` now if the module ``name`` is imported, or else right
    after the program imports it."""
    if name in sys.modules:
        hook()
        return
    _pending[name] = hook
    if _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def forget(name):
    """Drops the pending hook of ``name``."""
    _pending.pop(name, None)
    if not _pending:
        _remove_finder()
