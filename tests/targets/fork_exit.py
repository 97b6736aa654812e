"""Forks children that end around the moment their sampler starts, and
some that do not: 100 that each spin for 0 to 600 microseconds (a
different time each, in order) and leave with os._exit ("instant"); 5 that
sleep 250 ms, past their profile's first flush and the 100 ms a waiting
thread's samples may be held, and leave with os._exit ("lived"); 5 that
leave at once by sys.exit, through the interpreter's exit ("exited").
Reports each group's pids."""

import os
import sys
import time

from _common import report


def fork(child):
    pid = os.fork()
    if pid == 0:
        child()
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def spin_for(seconds):
    def child():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return child


def leave():
    sys.exit(0)


instant = [fork(spin_for(0.0006 * i / 100)) for i in range(100)]
lived = [fork(lambda: time.sleep(0.25)) for _ in range(5)]
exited = [fork(leave) for _ in range(5)]
report(parent=os.getpid(), instant=instant, lived=lived, exited=exited)
