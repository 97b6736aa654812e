"""multiprocessing with the start method given as argument (fork or spawn):
two children do known work; the parent waits. Reports the children's pids
and how long each worked, as they measured it."""

import multiprocessing
import os
import sys
import time

from _common import report


def child_work(seconds, results):
    t0 = time.monotonic()
    time.sleep(seconds)  #@child-sleep
    results.put((os.getpid(), time.monotonic() - t0))


def main(method):
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    children = [ctx.Process(target=child_work, args=(0.6, results), name="child-%d" % i) for i in range(2)]
    for p in children:
        p.start()
    got = dict(results.get(timeout=60) for _ in children)
    for p in children:
        p.join()
    report(parent=os.getpid(), children={str(pid): took for pid, took in got.items()}, exitcodes=[p.exitcode for p in children])


if __name__ == "__main__":
    main(sys.argv[1])
