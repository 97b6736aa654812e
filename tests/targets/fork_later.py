"""Forks one child that counts its threads at once, works 0.55 s in
child_work, counts them again and says whether its SIGURG handler is the
default, sleeps 0.25 s, says how long it ran so far (and its CPU time)
and leaves through the interpreter's exit. Arguments: "own", the program
handles SIGURG itself first (the child counts the calls of that handler);
"nested", the child forks a grandchild at once, before its own sampler
starts, and both do the same. Reports the pids, what each said and how
long the child lived (from the fork, as the parent saw it)."""

import json
import os
import signal
import sys
import time

from _common import report

own = "own" in sys.argv[1:]
nested = "nested" in sys.argv[1:]
calls = []
if own:
    signal.signal(signal.SIGURG, lambda *args: calls.append(1))


def child_work(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def work(began, first, **more):
    child_work(0.55)
    said = {
        "pid": os.getpid(),
        "first": first,
        "then": len(os.listdir("/proc/self/task")),
        "default": signal.getsignal(signal.SIGURG) == signal.SIG_DFL,
        "calls": len(calls),
        **more,
    }
    time.sleep(0.25)
    said["ended"] = time.perf_counter() - began
    said["cpu"] = time.thread_time()
    return said


def fork(body):
    """Runs body(began, first) in a child; returns (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        began = time.perf_counter()
        first = len(os.listdir("/proc/self/task"))
        os.close(r)
        said = body(began, first)
        os.write(w, json.dumps(said).encode())
        sys.exit(0)
    os.close(w)
    return pid, r


def collect(pid, r):
    with os.fdopen(r, "rb") as f:
        said = json.loads(f.read() or b"null")
    os.waitpid(pid, 0)
    return said


def child(began, first):
    if not nested:
        return work(began, first)
    inner = fork(work)
    return work(began, first, grandchild=collect(*inner))


forked = time.perf_counter()
said = collect(*fork(child))
report(lived=time.perf_counter() - forked, **said)
