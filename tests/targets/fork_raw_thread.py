"""Forks from a thread that `_thread` started (`threading` never imported),
then works on the main thread. The child works 0.2 s and leaves through the
interpreter's exit (where echion's stop runs). Reports both pids and the
child's exit status."""

import _thread
import os
import sys
import time

from _common import report


def burn(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  #@burn
        pass


done = _thread.allocate_lock()
done.acquire()
got = {}


def forker():
    pid = os.fork()
    if pid == 0:
        burn(0.2)
        sys.exit(0)
    got["child"] = pid
    got["status"] = os.waitpid(pid, 0)[1]
    done.release()


_thread.start_new_thread(forker, ())
done.acquire()
burn(0.3)
report(parent=os.getpid(), **got)
