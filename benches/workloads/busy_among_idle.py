"""One thread works while many wait (a server with one busy request):
ECHION_BENCH_THREADS threads (default 100) block on one Event while the main
thread does a fixed amount of CPU work (ECHION_BENCH_ROUNDS, as in
cpu_single.py), then all are released and joined. The program uses about one
core, so the ratio to plain is what looking at the waiting threads adds to
a program's CPU time (idle_threads.py, whose program uses almost none, gives
the absolute price instead)."""

import os
import threading

N = int(os.environ.get("ECHION_BENCH_THREADS", "100"))
ROUNDS = int(os.environ.get("ECHION_BENCH_ROUNDS", "40000"))


def work(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


go = threading.Event()
threads = [threading.Thread(target=go.wait, name=f"idle-{i}") for i in range(N)]
for t in threads:
    t.start()
for _ in range(ROUNDS):
    work(1000)
go.set()
for t in threads:
    t.join()
