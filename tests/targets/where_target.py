"""Target of test_where.py: threads with known names in known places, for
``echion -w PID`` to show from outside.

Modes (argv[1]):
- ``threads``: a thread ``sleeper`` sleeps, a thread ``spinner`` spins, the
  main thread waits for a line on stdin, then prints ``done`` and exits 0.
- ``gil``: as ``threads``, but the main thread then calls C's ``sleep``
  through ``ctypes.PyDLL``, which keeps the GIL: every other thread is
  stuck, and so is the interpreter.
- ``sub``: a thread ``runner`` runs code in a subinterpreter that sleeps.
- ``private``: as ``threads``, and the process makes itself non-dumpable
  (only CAP_SYS_PTRACE may read it).
- ``raw``: as ``threads``, plus a thread started with ``_thread`` (which
  `threading` does not know) waiting in ``raw_wait``.
- ``own-quit``: as ``threads``, with a ``SIGQUIT`` handler of its own that
  prints ``own handler`` (on stdout, after ``done``).
- ``asyncio``: a thread ``loop`` runs an event loop whose task ``waiter``
  gathers two tasks, ``nap-1`` and ``nap-2``, sleeping in ``nap``.

Prints ``ready <pid>`` once every thread is in place.
"""

import _thread
import ctypes
import os
import signal
import sys
import threading
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "threads"
started = threading.Barrier({"sub": 2, "raw": 4, "asyncio": 2}.get(mode, 3))
stop = False


def sleeper():
    started.wait()
    time.sleep(3600)  #@sleep


def spin():
    started.wait()
    while not stop: pass  #@spin


SUB = """\
import time

def in_subinterpreter():
    time.sleep(3600)  #@sub-sleep

in_subinterpreter()
"""


def raw_wait():
    started.wait()
    time.sleep(3600)  #@raw


def runner():
    try:
        import _interpreters as interpreters  # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.8 to 3.12
    iid = interpreters.create()
    started.wait()
    interpreters.run_string(iid, SUB)  #@run-sub


def nap():
    import asyncio

    async def nap():
        await asyncio.sleep(3600)  #@nap

    return nap()


def run_loop():
    import asyncio

    async def waiter():
        naps = [asyncio.create_task(nap(), name="nap-%d" % i) for i in (1, 2)]
        await asyncio.sleep(0)
        started.wait()
        await asyncio.gather(*naps)  #@gather

    asyncio.run(waiter())


def main():
    if mode == "other-libpython":
        # Another version's libpython, loaded as a plugin would (its own
        # symbols, never started): mapped before ours in the address space.
        ctypes.CDLL(os.environ["WHERE_OTHER_LIBPYTHON"], mode=os.RTLD_LOCAL)
    if mode == "private":
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    quits = []
    if mode == "own-quit":
        signal.signal(signal.SIGQUIT, lambda *_: quits.append(1))
    if mode == "sub":
        threading.Thread(target=runner, name="runner", daemon=True).start()
    elif mode == "asyncio":
        threading.Thread(target=run_loop, name="loop", daemon=True).start()
    else:
        threading.Thread(target=sleeper, name="sleeper", daemon=True).start()
        threading.Thread(target=spin, name="spinner", daemon=True).start()
    if mode == "raw":
        _thread.start_new_thread(raw_wait, ())
    started.wait()
    time.sleep(0.2)
    print("ready", os.getpid(), flush=True)
    if mode == "gil":
        ctypes.PyDLL(None).sleep(3600)  #@gil
    sys.stdin.readline()  #@main-wait
    print("done", flush=True)
    if quits:
        print("own handler", flush=True)


main()  #@main-call
