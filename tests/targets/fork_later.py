"""Forks one child that counts its threads at once, works 0.55 s in
child_work, counts them again and says whether its SIGURG handler is the
default, sleeps 0.25 s, says how long it ran so far and leaves through
the interpreter's exit. With "own" as
argument, the program handles SIGURG itself first (the child counts the
calls of that handler). Reports the child's pid, its counts, how long it
lived (from the fork) and what it said of SIGURG."""

import json
import os
import signal
import sys
import time

from _common import report

own = sys.argv[1:] == ["own"]
calls = []
if own:
    signal.signal(signal.SIGURG, lambda *args: calls.append(1))


def child_work(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


r, w = os.pipe()
forked = time.perf_counter()
pid = os.fork()
if pid == 0:
    began = time.perf_counter()
    first = len(os.listdir("/proc/self/task"))
    child_work(0.55)
    said = {
        "first": first,
        "then": len(os.listdir("/proc/self/task")),
        "default": signal.getsignal(signal.SIGURG) == signal.SIG_DFL,
        "calls": len(calls),
    }
    time.sleep(0.25)
    said["ended"] = time.perf_counter() - began
    os.write(w, json.dumps(said).encode())
    sys.exit(0)
os.close(w)
with os.fdopen(r, "rb") as f:
    said = json.loads(f.read() or b"null")
os.waitpid(pid, 0)
report(child=pid, lived=time.perf_counter() - forked, **said)
