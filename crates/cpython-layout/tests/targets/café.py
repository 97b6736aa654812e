"""Target of tests/live_process.rs: a process in a known state.

Threads with known names block in known functions (one recursing 500 deep,
one in a function and file with non-ASCII names), an asyncio loop runs named
tasks blocked on futures. A reporter thread then prints, as one JSON line,
what the process says about itself (sys._current_frames(), threading names,
asyncio.all_tasks()), and exits; the process then blocks until killed.
"""
import asyncio
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from 計算 import 計算  # noqa: E402

N_READY = 5
ready = threading.Semaphore(0)
forever = threading.Event()


def café(ev):
    ready.release()
    ev.wait()


def recurse(n, ev):
    if n == 0:
        ready.release()
        ev.wait()
        return
    recurse(n - 1, ev)


class Klass:
    def method(self, ev):
        ready.release()
        ev.wait()


async def inner(fut):
    await fut


async def outer(fut):
    await inner(fut)


def loop_main():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def start():
        futs = [loop.create_future() for _ in range(3)]
        loop.create_task(outer(futs[0]), name="task-alpha")
        loop.create_task(outer(futs[1]), name="task-βeta-😀")
        loop.create_task(inner(futs[2]))  # unnamed: Task-<n>
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ready.release()
        await loop.create_future()

    loop.run_until_complete(start())


def stack_of(frame):
    out = []
    while frame is not None:
        co = frame.f_code
        out.append({
            "file": co.co_filename,
            "name": co.co_name,
            "qualname": getattr(co, "co_qualname", co.co_name),
            "line": frame.f_lineno,
        })
        frame = frame.f_back
    return out


def report():
    me = threading.get_ident()
    main_ident = threading.main_thread().ident
    # Wait until the main thread is parked in block_main().
    while not any(f["name"] == "block_main" for f in stack_of(sys._current_frames()[main_ident])):
        time.sleep(0.01)
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    natives = {t.ident: getattr(t, "native_id", None) for t in threading.enumerate()}
    threads = [
        {"ident": ident, "name": names.get(ident), "native_id": natives.get(ident), "stack": stack_of(f)}
        for ident, f in frames.items() if ident != me
    ]
    print(json.dumps({
        "pid": os.getpid(),
        "version": list(sys.version_info[:3]),
        "threads": threads,
        "tasks": TASKS,
    }, ensure_ascii=False), flush=True)


def block_main():
    forever.wait()


TASKS = []


def main():
    ev = threading.Event()
    threading.Thread(target=café, args=(ev,), name="thread-café", daemon=True).start()
    threading.Thread(target=計算, args=(ev, ready), name="thread-計算", daemon=True).start()
    threading.Thread(target=recurse, args=(500, ev), name="deep", daemon=True).start()
    threading.Thread(target=Klass().method, args=(ev,), name="klass", daemon=True).start()
    lt = threading.Thread(target=loop_main, name="asyncio-loop", daemon=True)
    lt.start()
    r = threading.Thread(target=report_with_tasks, name="reporter")
    r.start()
    block_main()


def report_with_tasks():
    for _ in range(N_READY):
        ready.acquire()
    for _ in range(N_READY):
        ready.release()
    for t in sorted(asyncio.all_tasks(LOOP[0]), key=lambda t: t.get_name()):
        coro = t.get_coro()
        TASKS.append({
            "addr": id(t),
            "name": t.get_name(),
            "coro": id(coro),
            "coro_name": coro.cr_code.co_name,
            "loop": id(LOOP[0]),
            "waiter": id(t._fut_waiter) if t._fut_waiter is not None else 0,
            "awaiting": id(coro.cr_await) if coro.cr_await is not None else 0,
        })
    report()


LOOP = []
_orig_new_event_loop = asyncio.new_event_loop


def _recording_new_event_loop():
    loop = _orig_new_event_loop()
    LOOP.append(loop)
    return loop


asyncio.new_event_loop = _recording_new_event_loop

if __name__ == "__main__":
    main()
