"""Forks in a loop for a while; each child leaves at once (os._exit), the
parent waits for it. Prints the forks per second: what a program that forks
a lot (a pre-fork server's respawns, subprocess-heavy tools) pays for a
profiler that starts again in every child."""

import os
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
n = 0
end = time.monotonic() + seconds
start = time.monotonic()
while time.monotonic() < end:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
print("%.1f" % (n / (time.monotonic() - start)))
