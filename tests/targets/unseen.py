"""Programs that look at what echion's hooks touch: their output and exit
status must be what they are without echion. argv[1] picks one.

threads: counts and names the threads, then joins every one but the main
    one (a common way to wait for a program's work at its end).
names: threads named in ways a hook could trip over: a name with a lone
    surrogate (decoded from bytes with surrogateescape), a subclass whose
    ``name`` is not a string, a rename to such a name, a name set before
    ``Thread.__init__`` (under ``python -O`` that works).
asyncio: coroutines of ``wait_for`` and ``as_completed`` made before they
    are awaited or iterated, or dropped: nothing starts before its time,
    a dropped one warns; the patched functions read as the originals.
gevent: greenlets whose ``name`` is not a string, or has a lone surrogate.
sigquit: sends itself SIGQUIT once a short exposure (-x) is over.
"""

import os
import signal
import sys
import threading
import time


def threads_scenario():
    worker = threading.Thread(target=time.sleep, args=(0.2,), name="worker")
    worker.start()
    print("count", threading.active_count(), sorted(t.name for t in threading.enumerate()))
    stuck = []
    for t in threading.enumerate():
        if t is not threading.main_thread():
            t.join(5.0)
            if t.is_alive():
                stuck.append(t.name)
    print("all joined" if not stuck else "still running: %s" % stuck)


class JobWorker(threading.Thread):
    """A worker named by its job: not a string."""

    def __init__(self, job):
        super().__init__()
        self.job = job

    @property
    def name(self):
        return self.job

    def run(self):
        time.sleep(0.2)
        print("job", self.job)


class EarlyName(threading.Thread):
    def __init__(self):
        try:
            self.name = "early"
        except BaseException as e:
            print("early name:", type(e).__name__)
        super().__init__()
        self.name = "late"

    def run(self):
        print("run", self.name)


def names_scenario():
    odd = os.fsdecode(b"x\xff")
    t = threading.Thread(target=time.sleep, args=(0.2,), name=odd)
    t.start()
    t.join()
    print("surrogate name ran")
    w = JobWorker(42)
    w.start()
    w.join()
    ev = threading.Event()
    r = threading.Thread(target=ev.wait, name="plain")
    r.start()
    try:
        r.name = os.fsdecode(b"renamed-\xfe")
        print("renamed")
    except Exception as e:
        print("rename failed:", type(e).__name__)
    time.sleep(0.2)
    ev.set()
    r.join()
    e = EarlyName()
    e.start()
    e.join()
    print("done")


def asyncio_scenario():
    import asyncio
    import pickle

    async def child(tag):
        print("child", tag, "starts")
        await asyncio.sleep(0.01)
        return tag

    async def main():
        w = asyncio.wait_for(child("wait_for"), 1)
        it = asyncio.as_completed([child("as_completed")])
        await asyncio.sleep(0.05)
        print("main awaits now")
        print(await w)
        for f in it:
            print(await f)
        # Awaited at once: the usual form.
        print(await asyncio.wait_for(child("awaited"), 1))
        # Made and dropped: it never runs, and says so.
        asyncio.wait_for(child("dropped"), 1).close()
        await asyncio.sleep(0.05)

    print("coroutine function", asyncio.iscoroutinefunction(asyncio.wait_for))
    for name in ("shield", "wait_for", "as_completed", "gather"):
        f = getattr(asyncio, name)
        print(name, f.__name__, f.__doc__ is not None, pickle.loads(pickle.dumps(f)) is f)
    asyncio.run(main())


def gevent_scenario():
    import gevent

    class Job(gevent.Greenlet):
        """A greenlet named by its job number: not a string."""

        def __init__(self, n):
            super().__init__()
            self.n = n

        @property
        def name(self):
            return self.n

        def _run(self):
            gevent.sleep(0.01)
            return self.n

    jobs = [Job(i) for i in range(3)]
    for j in jobs:
        j.start()
    gevent.joinall(jobs)
    print([j.value for j in jobs])
    g = gevent.spawn(lambda: 1)
    g.name = os.fsdecode(b"w\xff")
    g.join()
    print(g.value)


def sigquit_scenario():
    import resource

    # (Its default action dumps core: none is wanted.)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    time.sleep(0.6)
    os.kill(os.getpid(), signal.SIGQUIT)
    time.sleep(0.3)
    print("survived SIGQUIT")


{
    "threads": threads_scenario,
    "names": names_scenario,
    "asyncio": asyncio_scenario,
    "gevent": gevent_scenario,
    "sigquit": sigquit_scenario,
}[sys.argv[1]]()
