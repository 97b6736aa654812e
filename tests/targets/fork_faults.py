"""Forks children that leave at once, with a pause after each long enough
for the sampler to tick (1.5 ms, at 1 ms), and reports the page faults its
thread took over the loop (the thread's `minflt` in /proc): a sampler whose
ticks after a fork write a page the fork made shared takes one per fork
and page."""

import os
import sys
import time

from _common import report

FORKS = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def sampler_faults():
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % tid) as f:
                if f.read().strip() != "echion-sampler":
                    continue
            with open("/proc/self/task/%s/stat" % tid) as f:
                # (The fields after the command's closing parenthesis:
                # minflt is the stat file's tenth field.)
                return int(f.read().rsplit(")", 1)[1].split()[7])
        except OSError:
            # (A thread that ended meanwhile.)
            continue
    return None


time.sleep(0.1)
before = sampler_faults()
start = time.monotonic()
for _ in range(FORKS):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.0015)
after = sampler_faults()
report(
    forks=FORKS,
    faults=None if before is None or after is None else after - before,
    seconds=time.monotonic() - start,
)
