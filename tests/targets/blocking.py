"""The main thread's blocking calls, each of which a signal interrupts
(with echion --no-thread a timer signal comes every interval): sleeps,
waits with a timeout, a blocking read, a pipe to a child, its own interval
timer. Prints what each gave back (the same with or without a profiler:
the test compares them) and reports how long each took."""

import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time

from _common import report

took = {}
said = []


def timed(name, fn):
    t0 = time.monotonic()
    said.append("%s: %r" % (name, fn()))
    took[name] = time.monotonic() - t0


def read_later():
    r, w = os.pipe()
    threading.Timer(0.2, lambda: os.write(w, b"late")).start()
    try:
        return os.read(r, 100)
    finally:
        os.close(r)
        os.close(w)


def select_nothing():
    r, w = os.pipe()
    try:
        return select.select([r], [], [], 0.2)
    finally:
        os.close(r)
        os.close(w)


def alarms():
    fired = []
    signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
    end = time.monotonic() + 2
    while len(fired) < 20 and time.monotonic() < end:
        signal.pause()
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return len(fired) >= 20


timed("sleep", lambda: time.sleep(0.2))
timed("event", lambda: threading.Event().wait(0.2))
timed("lock", lambda: (lambda l: (l.acquire(), l.acquire(timeout=0.2)))(threading.Lock()))
def get_nothing():
    try:
        return queue.Queue().get(timeout=0.2)
    except queue.Empty:
        return "empty"


timed("queue", get_nothing)
timed("read", read_later)
timed("select", select_nothing)
timed("child", lambda: subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2); print('hi')"], capture_output=True).stdout)
timed("alarms", alarms)
print("\n".join(said))
report(took=took)
