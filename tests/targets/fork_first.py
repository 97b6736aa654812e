"""Forks three children, one after the other: one that sleeps 0.3 s from the
fork, one that computes for 0.3 s from the fork, and one that sleeps 8 ms
(less than a waiting child's start is put off); each leaves through the
interpreter's exit. Reports their pids."""

import os
import sys
import time

from _common import report


def child_sleeps():
    time.sleep(0.3)


def child_computes():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass


def child_ends_early():
    time.sleep(0.008)


pids = {}
for name, work in (("sleeps", child_sleeps), ("computes", child_computes), ("ends_early", child_ends_early)):
    pid = os.fork()
    if pid == 0:
        work()
        sys.exit(0)
    os.waitpid(pid, 0)
    pids[name] = pid
report(**pids)
