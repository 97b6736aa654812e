"""Threads that go back and forth between two callers of the same sleep:
`via_a` and `via_b` call `rest`, whose frame (and, on 3.11+, every frame
of the thread) sits at the same address and instruction whichever called
it. A sampler that took an unmoved innermost frame for an unchanged stack
would show one caller only. TARGET_WORKERS threads (default 4) for
TARGET_SECONDS (default 1.5)."""

import os
import threading
import time

WORKERS = int(os.environ.get("TARGET_WORKERS", "4"))
SECONDS = float(os.environ.get("TARGET_SECONDS", "1.5"))
stop = threading.Event()


def rest():
    time.sleep(0.002)  #@rest


def via_a():
    rest()  #@via_a


def via_b():
    rest()  #@via_b


def worker():
    while not stop.is_set():
        via_a()  #@call_a
        via_b()  #@call_b


threads = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(WORKERS)]
for t in threads:
    t.start()
time.sleep(SECONDS)
stop.set()
for t in threads:
    t.join()
