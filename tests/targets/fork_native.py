"""A thread named "forker" forks; the child works for 0.3 s in
child_work and ends by os._exit. With "asyncio" as argument, the program
has imported asyncio first (echion's asyncio hooks are in).

Reports, from the child: which functions of echion's Python code ran in
the forking thread during the fork (seen by a profile function), and the
profiled pid in the C environment that subinterpreters read."""

import ctypes
import json
import os
import sys
import threading
import time

from _common import report

if sys.argv[1:] == ["asyncio"]:
    import asyncio  # noqa: F401

ran = []


def watch(frame, event, arg):
    if event == "call" and "echion" in frame.f_code.co_filename:
        ran.append((os.getpid(), frame.f_code.co_name))


def child_work(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  #@child-work
        pass


def fork():
    r, w = os.pipe()
    sys.setprofile(watch)
    pid = os.fork()
    sys.setprofile(None)
    if pid == 0:
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        env = libc.getenv(b"_ECHION_PROFILED_PID")
        child_work(0.3)
        os.write(w, json.dumps({"ran": [f for pid, f in ran if pid == os.getpid()], "env": env.decode() if env else None}).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = json.loads(f.read() or b"null")
    os.waitpid(pid, 0)
    got.update(child=pid, **said)


got = {}
t = threading.Thread(target=fork, name="forker")
t.start()
t.join()
report(parent=os.getpid(), **got)
