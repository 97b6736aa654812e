"""200 named threads alive at once, all waiting on one event while the main
thread lets them be sampled for a while. Reports each thread's lifetime."""

import threading
import time

from _common import report

COUNT = 200


def waiter(started, go, lifetimes):
    t0 = time.monotonic()
    started.release()
    go.wait()  #@wait
    lifetimes[threading.current_thread().name] = time.monotonic() - t0


def main():
    started = threading.Semaphore(0)
    go = threading.Event()
    lifetimes = {}
    workers = [threading.Thread(target=waiter, args=(started, go, lifetimes), name="worker-%03d" % i) for i in range(COUNT)]
    for t in workers:
        t.start()
    for _ in workers:
        started.acquire()
    # All 200 are alive and waiting: let the sampler see them.
    time.sleep(0.6)
    go.set()
    for t in workers:
        t.join()
    report(lifetimes=lifetimes)


main()
