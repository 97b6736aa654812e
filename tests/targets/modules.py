"""Prints the modules the program finds imported, less echion's own package
and the two modules its start needs (``atexit``, a built-in, and the
``sitecustomize`` that starts it)."""

import sys

print(sorted(m for m in sys.modules if m.split(".")[0] not in ("echion", "sitecustomize", "atexit")))
