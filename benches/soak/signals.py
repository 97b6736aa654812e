"""Soak: the program's own signal handlers with interval timers firing
every millisecond (real and profiling time), and faulthandler enabled and
dumping every thread's traceback about every 10 ms. (From the program's own
thread: `dump_traceback_later`'s watchdog reads the frames without the
GIL, and crashes plain CPython now and then.)"""

import faulthandler
import os
import signal
import sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
hits = {"alrm": 0, "prof": 0}


def on_alrm(signum, frame):
    hits["alrm"] += 1


def on_prof(signum, frame):
    hits["prof"] += 1


signal.signal(signal.SIGALRM, on_alrm)
signal.signal(signal.SIGPROF, on_prof)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
faulthandler.enable()
sink = open(os.devnull, "w")
total = 0
for r in range(ROUNDS):
    for i in range(30000):
        total += i % 13
        if i % 10000 == 0:
            faulthandler.dump_traceback(file=sink, all_threads=True)
    os.getpid()
signal.setitimer(signal.ITIMER_REAL, 0)
signal.setitimer(signal.ITIMER_PROF, 0)
print("signals", total, hits["alrm"] > 0)
