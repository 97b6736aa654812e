"""Forks twice: first from the main thread while the program has no other
thread (from 3.12 echion hides the fork warning it would cause, and the
child must drop its filter), then from a thread named "forker". Each child
works for 0.3 s in child_work and ends by os._exit. With "asyncio" as
argument, the program has imported asyncio first (echion's asyncio hooks
are in).

Reports, from each child: which functions of echion's Python code ran in
the forking thread during the fork (seen by a profile function; the
parent's "before" hooks are not counted), the profiled pid as the C
environment has it at once and ``os.environ`` once the child's sampler has
started (what subinterpreters read), and how many of echion's
fork-warning filters are left then."""

import ctypes
import json
import os
import sys
import threading
import time
import warnings

from _common import report

if sys.argv[1:] == ["asyncio"]:
    import asyncio  # noqa: F401

# echion's package directory (the bootstrap loaded it).
ECHION = os.path.dirname(sys.modules["echion"].__file__) + os.sep
ran = []


def watch(frame, event, arg):
    if event == "call" and frame.f_code.co_filename.startswith(ECHION):
        ran.append((os.getpid(), frame.f_code.co_name))


def child_work(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  #@child-work
        pass


def fork():
    r, w = os.pipe()
    del ran[:]
    sys.setprofile(watch)
    pid = os.fork()
    sys.setprofile(None)
    if pid == 0:
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        env = libc.getenv(b"_ECHION_PROFILED_PID")
        said = {
            "ran": [f for pid, f in ran if pid == os.getpid()],
            "env": env.decode() if env else None,
        }
        child_work(0.3)
        # (Once the child's sampler has started: an interval after the fork.)
        said["os_environ"] = os.environ.get("_ECHION_PROFILED_PID")
        said["filters"] = sum(type(f[1]).__name__ == "_ForkWarningText" for f in warnings.filters)
        os.write(w, json.dumps(said).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = json.loads(f.read() or b"null")
    os.waitpid(pid, 0)
    said["child"] = pid
    return said


got = {"main": fork()}


def fork_in_thread():
    got["forker"] = fork()


t = threading.Thread(target=fork_in_thread, name="forker")
t.start()
t.join()
report(parent=os.getpid(), **got)
