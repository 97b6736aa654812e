"""Works 0.3 s in spin without importing threading, and reports whether
anything imported it (echion -s must not)."""

import sys
import time

from _common import report


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


spin(0.3)
report(threading_imported="threading" in sys.modules)
