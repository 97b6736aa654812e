"""Loads the echion package this file belongs to into an interpreter that
may not have echion installed, without putting anything on ``sys.path``.

Not imported: the run-mode ``sitecustomize`` and the attach entry run it by
path (``echion`` is not importable yet when they need it) and call
``load_echion``. It must run on every CPython from 3.8 on.
"""


def load_echion(package_dir):
    """Returns the ``echion`` package at ``package_dir`` (the directory with
    its ``__init__.py``), loading it under the name ``echion`` if no
    ``echion`` is loaded yet. Raises ``ImportError`` when another ``echion``
    is already loaded, or when this one cannot load (``echion.core`` is an
    abi3 module: it loads on 3.8 and newer)."""
    import os
    import sys

    package_dir = os.path.realpath(package_dir)
    loaded = sys.modules.get("echion")
    if loaded is not None:
        paths = [os.path.realpath(p) for p in getattr(loaded, "__path__", [])]
        if package_dir not in paths:
            raise ImportError(
                "another echion is loaded in this process (%s)" % (getattr(loaded, "__file__", None) or "?"),
                name="echion",
            )
        return loaded
    # The import system's own modules, as the interpreter loaded them at its
    # start (importlib.machinery would import importlib, warnings and types
    # into the program too); through importlib where an embedder left them
    # out.
    bootstrap = sys.modules.get("_frozen_importlib")
    external = sys.modules.get("_frozen_importlib_external")
    if bootstrap is None or external is None:
        from importlib import _bootstrap as bootstrap, _bootstrap_external as external
    module_from_spec = bootstrap.module_from_spec  # (importlib.util's)
    PathFinder = external.PathFinder

    # The finder is asked about this one directory: nothing else of the
    # site-packages that holds echion becomes importable.
    spec = PathFinder.find_spec("echion", [os.path.dirname(package_dir)])
    if spec is None or spec.origin is None or os.path.dirname(os.path.realpath(spec.origin)) != package_dir:
        raise ImportError("no echion package in %s" % package_dir, name="echion")
    module = module_from_spec(spec)
    sys.modules["echion"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["echion"]
        raise
    return module
