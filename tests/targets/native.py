"""Targets of the native-stack tests (tests/test_native.py): Python code
that calls C code that calls Python code again, in threads, under its own
SIGPROF timer and in asyncio tasks. The scenario is the first argument."""

import sys
import threading
import time
from time import monotonic

from _common import report


# --- echion's tests/target.py --------------------------------------------------


def cpu_sleep(t):
    end = monotonic() + t
    while monotonic() <= end:  #@cpu_sleep
        pass


def foo():
    cpu_sleep(1)  #@foo


def bar():
    time.sleep(1.5)  #@bar_sleep
    foo()  #@bar_foo


def main():
    bar()  #@main


def upstream_wall():
    t = threading.Thread(target=main, name="SecondaryThread")
    t.start()
    main()  #@module_main
    t.join()


# --- echion's tests/target_cpu.py ---------------------------------------------------


def idle():
    time.sleep(0.5)


def keep_cpu_busy():
    a = []
    i = 0
    idle()
    end = monotonic() + 1
    while monotonic() <= end:  #@busy
        i += 1
        a.append(i)


def upstream_cpu():
    threading.Thread(target=keep_cpu_busy, name="SecondaryThread").start()
    keep_cpu_busy()  #@module_busy


# --- C calling Python ----------------------------------------------------------------


def key(x):
    s = 0
    for i in range(30):  #@key
        s += i
    return -x


def sort_with_key(seconds=1.5):
    data = list(range(5000))
    end = monotonic() + seconds
    n = 0
    while monotonic() < end:
        sorted(data, key=key)  #@sorted
        n += 1
    return n


def sort_key():
    report(sorts=sort_with_key())


def qsort():
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    cmp_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

    def compare(a, b):
        s = 0
        for i in range(20):  #@compare
            s += i
        return a[0] - b[0]

    callback = cmp_type(compare)
    array_type = ctypes.c_int * 3000
    end = monotonic() + 1.5
    n = 0
    while monotonic() < end:
        array = array_type(*range(3000, 0, -1))
        libc.qsort(array, len(array), ctypes.sizeof(ctypes.c_int), callback)  #@qsort
        assert list(array[:3]) == [1, 2, 3]
        n += 1
    report(sorts=n)


def encode_json():
    import ujson

    data = [{"x": i * 0.1, "y": [j / 7 for j in range(20)], "name": "item %d" % i} for i in range(2000)]
    end = monotonic() + 1.5
    n = 0
    while monotonic() < end:
        ujson.dumps(data)  #@ujson
        n += 1
    report(dumps=n)


# --- threads ----------------------------------------------------------------------------


def compress_for(seconds):
    import zlib

    data = bytes(range(256)) * 4096
    end = monotonic() + seconds
    while monotonic() < end:
        zlib.compress(data, 9)  #@compress


def threads():
    workers = [threading.Thread(target=compress_for, args=(1.5,), name="compressor-%d" % i) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


# --- a thread that blocks every signal ---------------------------------------------------


def blocks_signals():
    import signal

    def deaf():
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
        compress_for(1.0)  #@deaf

    t = threading.Thread(target=deaf, name="deaf")
    t.start()
    compress_for(1.0)
    t.join()


# --- a program with its own SIGPROF timer -------------------------------------------------


def own_sigprof():
    import signal

    ticks = [0]

    def on_prof(signum, frame):
        ticks[0] += 1

    signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)
    start = time.process_time()
    sorts = sort_with_key(1.5)
    cpu = time.process_time() - start
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    report(ticks=ticks[0], cpu=cpu, sorts=sorts)


def count_for(seconds=1.0):
    # A thread that only runs Python code: how far it gets in a second.
    n = 0
    end = monotonic() + seconds
    while monotonic() < end:
        n += 1  #@count
    report(iterations=n)


# --- asyncio ---------------------------------------------------------------------------------


def on_cpu_task():
    import asyncio
    import zlib

    data = bytes(range(256)) * 4096

    async def crunch():
        end = monotonic() + 1.5
        while monotonic() < end:
            zlib.compress(data, 9)  #@task_compress
            await asyncio.sleep(0)

    async def waiter():
        await asyncio.sleep(1.6)  #@task_wait

    async def amain():
        await asyncio.gather(
            asyncio.create_task(crunch(), name="cruncher"),
            asyncio.create_task(waiter(), name="waiter"),
        )

    asyncio.run(amain())


if __name__ == "__main__":
    globals()[sys.argv[1]]()
