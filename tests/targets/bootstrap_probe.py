"""Reports what the program sees of its environment under echion: the user's
own sitecustomize ran, sys.path is as without echion, and it busy-waits for
a given time so that exposure can be checked."""

import os
import sys
import time

from _common import report

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

try:
    import sitecustomize

    marker = getattr(sitecustomize, "USER_MARKER", None)
except ImportError:
    marker = None

start = time.monotonic()
duration = float(os.environ.get("PROBE_SECONDS", "0.2"))
while time.monotonic() - start < duration:  #@busy
    pass

report(
    marker=marker,
    bootstrap_on_path=any(p.rstrip("/").endswith(os.path.join("echion", "bootstrap")) for p in sys.path),
    elapsed=time.monotonic() - start,
)
print("probe done")
