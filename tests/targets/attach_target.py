"""A program for `echion -p` to attach to, started with an interpreter that
has no echion installed. It records what echion could leave behind before
anything attaches, runs its workload until the test creates the stop file,
then checks the same things again (after echion has detached), prints them
as JSON and exits with its own status, 7.

Usage: attach_target.py SCENARIO STOPFILE
  busy          the main thread runs Python code
  sleep_worker  the main thread sleeps in time.sleep, a worker spins
  event         the main thread waits on a threading.Event
  socket        the main thread waits in socket.recv
  asyncio_idle  the main thread runs an asyncio loop that waits in epoll
  gil_in_c      the main thread holds the GIL in C code (6 s), then spins
  subinterp     the main thread spends most of its time running code in
                subinterpreters it creates and destroys one after another
  subinterp_churn  the same with next to nothing run in each: the main
                thread is mostly setting up and tearing down interpreters
  gevent        gevent's monkey patches, greenlets that spin and sleep
  exit_on_attach  the main thread spins until echion's attach has run in
                it, then exits at once (status 7, no report)
  finalizing    ends at once (status 0, no report); as the interpreter
                finalizes, an object's __del__ prints "finalizing", sleeps
                3 s and prints "done"
"""

import ctypes
import inspect
import json
import os
import sys
import threading
import time
import types

SCENARIO, STOPFILE = sys.argv[1], sys.argv[2]


class Allocator(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("ctx", "malloc", "calloc", "realloc", "free")]


def allocators():
    get = ctypes.pythonapi.PyMem_GetAllocator
    get.argtypes = [ctypes.c_int, ctypes.POINTER(Allocator)]
    out = []
    for domain in range(3):
        a = Allocator()
        get(domain, ctypes.byref(a))
        out.append([a.ctx, a.malloc, a.free])
    return out


#: glibc's own handlers for threads (SIGCANCEL and SIGSETXID, signals 32
#: and 33), which its first pthread_create installs in a process.
GLIBC_THREAD_SIGNALS = (1 << 31) | (1 << 32)


def caught_signals():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return hex(int(line.split()[1], 16) & ~GLIBC_THREAD_SIGNALS)


def code_dealloc():
    # tp_dealloc of the code type: 24 bytes of header, then tp_name,
    # tp_basicsize, tp_itemsize, tp_dealloc.
    return ctypes.c_void_p.from_address(id(types.CodeType) + 48).value


def executable_anonymous_mappings():
    # The injection's page is one (writable and executable, no file).
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[1] == "rwxp" and len(line.split()) == 5)


def os_threads():
    return len(os.listdir("/proc/self/task"))


def state():
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "os_threads": os_threads(),
        "allocators": allocators(),
        "signals": caught_signals(),
        "code_dealloc": code_dealloc(),
        # (getattr_static: gevent's patched Thread is a subclass.)
        "bootstrap_inner": id(inspect.getattr_static(threading.Thread, "_bootstrap_inner")),
        "thread_name": id(inspect.getattr_static(threading.Thread, "name")),
        "path": list(sys.path),
        "meta_path": [repr(f) for f in sys.meta_path],
        "profiled_pid": os.environ.get("_ECHION_PROFILED_PID"),
        "rwx_pages": executable_anonymous_mappings(),
    }


BEFORE = None


def spin(n):
    x = 0
    for i in range(n):
        x += i
    return x


def allocate(n):
    return [str(i) for i in range(n)]


_next_check = [0.0]


def stopped():
    # Not a system call per loop: a thread that drops and takes the GIL
    # that often starves the others (CPython's convoy effect).
    now = time.monotonic()
    if now < _next_check[0]:
        return False
    _next_check[0] = now + 0.1
    return os.path.exists(STOPFILE)


def finish():
    after = state()
    # echion's threads end just after it says it detached.
    deadline = time.time() + 5
    while after != BEFORE and time.time() < deadline:
        time.sleep(0.05)
        after = state()
    bootstrap = sys.modules.get("echion.bootstrap")
    report = {
        "before": BEFORE,
        "after": after,
        "echion_loaded": "echion" in sys.modules,
        "echion_started": bool(bootstrap and bootstrap._started),
    }
    print(json.dumps(report), flush=True)
    os._exit(7)


def worker():
    while BEFORE is None:
        time.sleep(0.01)
    while not stopped():
        spin(10000)
        allocate(100)
    finish()


def ready():
    global BEFORE
    BEFORE = state()
    print("ready %d" % os.getpid(), flush=True)


if SCENARIO == "busy":
    ready()
    while not stopped():
        spin(10000)
        allocate(100)
    finish()
elif SCENARIO == "sleep_worker":
    threading.Thread(target=worker, name="worker", daemon=True).start()
    ready()
    time.sleep(3600)
elif SCENARIO == "event":
    event = threading.Event()

    def setter():
        while not stopped():
            time.sleep(0.05)
        event.set()
        time.sleep(3600)

    threading.Thread(target=setter, name="setter", daemon=True).start()
    ready()
    event.wait()
    finish()
elif SCENARIO == "socket":
    import socket

    mine, theirs = socket.socketpair()

    def sender():
        while not stopped():
            time.sleep(0.05)
        theirs.send(b"x")
        time.sleep(3600)

    threading.Thread(target=sender, name="sender", daemon=True).start()
    ready()
    mine.recv(1)
    finish()
elif SCENARIO == "asyncio_idle":
    import asyncio

    async def idle():
        while not stopped():
            await asyncio.sleep(0.1)

    ready()
    asyncio.run(idle())
    finish()
elif SCENARIO == "gil_in_c":
    libc = ctypes.PyDLL(None)
    ready()
    libc.sleep(6)
    while not stopped():
        spin(10000)
    finish()
elif SCENARIO in ("subinterp", "subinterp_churn"):
    try:
        import _interpreters as interpreters  # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.8 to 3.12
    if SCENARIO == "subinterp":
        CODE = "import time\nend = time.monotonic() + 0.03\nwhile time.monotonic() < end:\n    pass\n"
        MAIN_SECONDS, MAIN_SPIN = 0.02, 1000
    else:
        CODE, MAIN_SECONDS, MAIN_SPIN = "x = 1\n", 0.002, 100
    ready()
    while not stopped():
        iid = interpreters.create()
        interpreters.run_string(iid, CODE)
        interpreters.destroy(iid)
        # A while in the main interpreter too (where echion may start).
        end = time.monotonic() + MAIN_SECONDS
        while time.monotonic() < end:
            spin(MAIN_SPIN)
    finish()
elif SCENARIO == "import_wait":
    # The main thread waits in importlib's lock of a module whose import a
    # thread has begun (its body takes 1.5 s), then goes on.
    import tempfile

    modules = tempfile.mkdtemp()
    with open(os.path.join(modules, "slow_module.py"), "w") as f:
        f.write("import time\ntime.sleep(1.5)\n")
    sys.path.insert(0, modules)
    def importer():
        import slow_module  # noqa: F401

        time.sleep(3600)

    threading.Thread(target=importer, name="importer", daemon=True).start()
    while "slow_module" not in sys.modules:
        time.sleep(0.01)
    ready()
    import slow_module  # noqa: F401
    while not stopped():
        spin(10000)
    finish()
elif SCENARIO == "exit_on_attach":
    ready()
    # The pending call runs between two of these checks: the program exits
    # before echion's attach thread has had the GIL once.
    while "echion.attach" not in sys.modules:
        pass
    sys.exit(7)
elif SCENARIO == "finalizing":

    class Late:
        # Runs once the interpreter is finalizing (as `__main__` is
        # cleared), with what it uses bound beforehand.
        def __del__(self, write=os.write, sleep=time.sleep):
            write(1, b"finalizing\n")
            sleep(3)
            write(1, b"done\n")

    late = Late()
    ready()
elif SCENARIO == "gevent":
    from gevent import monkey

    monkey.patch_all()
    import gevent

    def green(n):
        while not stopped():
            spin(n)
            gevent.sleep(0.001)

    ready()
    # Each spins about as long as it sleeps: a sampler whose ticks fall in
    # phase with the 1 ms sleeps (timers coalesce) still finds them running.
    gevent.joinall([gevent.spawn(green, 20000), gevent.spawn(green, 40000)])
    finish()
else:
    raise SystemExit("unknown scenario " + SCENARIO)
