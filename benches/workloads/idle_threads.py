"""Many threads that wait (a server between requests): ECHION_BENCH_THREADS
threads (default 1,000) block on one Event for ECHION_BENCH_SECONDS (default
5) while the main thread sleeps, then all are released and joined. What a
profiler costs here is the price of looking at threads that do nothing."""

import os
import threading
import time

N = int(os.environ.get("ECHION_BENCH_THREADS", "1000"))
SECONDS = float(os.environ.get("ECHION_BENCH_SECONDS", "5"))

go = threading.Event()
threads = [threading.Thread(target=go.wait, name=f"idle-{i}") for i in range(N)]
for t in threads:
    t.start()
time.sleep(SECONDS)
go.set()
for t in threads:
    t.join()
