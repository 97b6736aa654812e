"""Forks from the main thread. The child's first work is one C-level loop
that computes with the GIL held for longer than echion's interval, then
sleeps for half a second, with no point between the two where CPython runs
a signal handler: a signal that came while it computed is noted but
handled only after the sleep, unless another comes during it. Then the
child works in Python for 0.2 s and ends by os._exit.

Reports the child's pid and how long it computed and slept."""

import functools
import os
import sys
import time

from _common import report

SLEEP = 0.5


def child():
    t0 = time.monotonic()
    # sum() over a range computes in C (tens of milliseconds) and
    # map/list call the next partial from C too.
    call = functools.partial.__call__
    list(map(call, [functools.partial(sum, range(3_000_000)), functools.partial(time.sleep, SLEEP)]))  #@blocked
    took = time.monotonic() - t0
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:  #@after
        pass
    return took


r, w = os.pipe()
pid = os.fork()
if pid == 0:
    took = child()
    os.write(w, ("%f" % took).encode())
    os._exit(0)
os.close(w)
with os.fdopen(r, "rb") as f:
    took = float(f.read() or b"0")
os.waitpid(pid, 0)
report(child=pid, took=took, sleep=SLEEP)
