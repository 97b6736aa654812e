"""Forks 100 children that each spin for 0 to 600 microseconds (a
different time each, in order) and leave with os._exit: children that end
around the moment their sampler starts. Reports the children's pids."""

import os
import time

from _common import report

children = []
for i in range(100):
    spin = 0.0006 * i / 100
    pid = os.fork()
    if pid == 0:
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    children.append(pid)
report(parent=os.getpid(), children=children)
