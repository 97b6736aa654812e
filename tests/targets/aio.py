"""asyncio programs for the task-stack tests: ``python aio.py SCENARIO``.

Each scenario runs about a second; the shapes follow echion's own asyncio
tests (gather, wait, as_completed, async generators, context managers,
executors, on-CPU tasks, a deadlock) plus the ways of waiting echion 0.3 did
not link (TaskGroup, wait_for, shield), renames, two loops, many tasks,
uvloop. What the target saw itself goes to TARGET_RESULT as JSON.
"""

import json
import os
import sys
import time

if sys.argv[1] != "no_asyncio":
    import asyncio


def report(**data):
    path = os.environ.get("TARGET_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(data, f)


# --- gather of tasks (echion's target_gather_tasks) -------------------------


async def f1():
    await f2()


async def f2():
    await asyncio.create_task(f3(), name="F3")


async def f3():
    await asyncio.gather(
        asyncio.create_task(f4(), name="F4_0"),
        asyncio.create_task(f4(), name="F4_1"),
    )


async def f4():
    await f5()


async def f5():
    await asyncio.sleep(1)


async def gather_tasks():
    await asyncio.create_task(f1(), name="F1")


# --- gather of coroutines -----------------------------------------------------


async def inner_1():
    await asyncio.sleep(0.6)


async def inner_2():
    await asyncio.sleep(1)


async def gather_coroutines():
    await asyncio.gather(inner_1(), inner_2())


# --- a task awaiting another directly; a CPU-bound task beside ---------------


async def outer_function():
    async def background_wait_function():
        await asyncio.sleep(1.2)

    async def background_math_function():
        s = 0.0
        for i in range(100000):
            s += i * 0.5

    background = asyncio.get_running_loop().create_task(background_wait_function(), name="Task-background_wait")
    math_task = asyncio.get_running_loop().create_task(background_math_function(), name="Task-background_math")

    async def sub_coro():
        end = time.time() + 0.5
        while time.time() < end:
            await asyncio.sleep(0.1)

    async def main_coro():
        await sub_coro()

    await main_coro()
    await background
    await math_task


def coroutines():
    # A loop made and set before anything runs, as echion's test does.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(loop.create_task(outer_function(), name="Task-main"))
    loop.close()


# --- asyncio.wait, as_completed ------------------------------------------------


async def waited(i):
    await asyncio.sleep(0.3 + i * 0.1)


async def wait_outer():
    pending = [asyncio.create_task(waited(i), name="inner-%d" % i) for i in range(6)]
    while pending:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)


async def wait_scenario():
    await wait_outer()


async def other(t):
    await asyncio.sleep(t)


async def wait_and_return_delay(t):
    await other(t)
    return t


async def as_completed_scenario():
    futures = [
        asyncio.create_task(wait_and_return_delay(i / 10), name="delay-%d" % i) if i % 2 == 0 else wait_and_return_delay(i / 10)
        for i in range(2, 10)
    ]
    result = []
    for future in asyncio.as_completed(futures):
        result.append(await future)
    assert sorted(result) == result


# --- async generators and context managers -------------------------------------


async def deep_dependency():
    await asyncio.sleep(0.1)


async def async_generator_dep(i):
    for j in range(i):
        await deep_dependency()
        yield j


async def async_generator():
    for i in range(5):
        async for j in async_generator_dep(i):
            yield j


async def asynchronous_function():
    async for _ in async_generator():
        pass


async def async_gen_scenario():
    await asynchronous_function()


async def context_manager_dep():
    await asyncio.sleep(0.4)


async def some_function():
    await asyncio.sleep(0.4)


class AsyncContextManager:
    async def __aenter__(self):
        await context_manager_dep()

    async def __aexit__(self, *exc):
        await asyncio.sleep(0.4)


async def with_function():
    async with AsyncContextManager():
        await some_function()


async def async_with_scenario():
    await with_function()


# --- executors ------------------------------------------------------------------


def slow_sync_function():
    time.sleep(1)


async def executor_function():
    await asyncio.get_running_loop().run_in_executor(None, slow_sync_function)


async def executor_scenario():
    await executor_function()


# --- on the CPU -----------------------------------------------------------------


def sync_code():
    end = time.time() + 1
    n = 0
    while time.time() < end:
        n += 1
    return n


def sync_code_outer():
    return sync_code()


async def inner3():
    return sync_code_outer()


async def inner2():
    return await inner3()


async def inner1_task():
    return await asyncio.create_task(inner2())


async def inner1_coro():
    return await inner2()


async def outer_task():
    return await inner1_task()


async def outer_coro():
    return await inner1_coro()


async def on_cpu_tasks():
    return await outer_task()


async def on_cpu_coros():
    return await outer_coro()


# --- a deadlock -------------------------------------------------------------------

t1 = t2 = None


async def task_a():
    try:
        await t2
    except asyncio.CancelledError:
        pass


async def task_b():
    try:
        await t1
    except asyncio.CancelledError:
        pass


async def deadlock():
    global t1, t2
    t1 = asyncio.create_task(task_a(), name="task_a")
    t2 = asyncio.create_task(task_b(), name="task_b")
    await asyncio.sleep(1)
    try:
        t1.cancel()
    except RecursionError:
        pass
    try:
        t2.cancel()
    except RecursionError:
        pass


# --- TaskGroup, wait_for, shield ----------------------------------------------------


async def grouped(t):
    await asyncio.sleep(t)


async def task_group():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(grouped(1), name="grouped-1")
        tg.create_task(grouped(0.8), name="grouped-2")


async def slow_answer():
    await asyncio.sleep(1)
    return 42


async def wait_for_scenario():
    task = asyncio.create_task(slow_answer(), name="answer")
    assert await asyncio.wait_for(task, timeout=5) == 42


async def shielded():
    await asyncio.sleep(1)


async def shield_scenario():
    await asyncio.shield(asyncio.create_task(shielded(), name="shield-inner"))


# --- renamed, not started, two loops, many ------------------------------------------


async def named_sleeper():
    await asyncio.sleep(0.5)
    asyncio.current_task().set_name("renamed")
    await asyncio.sleep(0.5)


async def renamed():
    await asyncio.create_task(named_sleeper(), name="first-name")


async def never_started():
    await asyncio.sleep(0)


def blocking():
    time.sleep(0.8)


async def not_started():
    # Created, then the loop is blocked so that it never starts.
    task = asyncio.create_task(never_started(), name="not-started")
    blocking()
    await task


async def loop_in_thread(tag):
    await asyncio.create_task(asyncio.sleep(1), name="sleeper-" + tag)


def two_loops():
    import threading

    t = threading.Thread(target=asyncio.run, args=(loop_in_thread("worker"),), name="loop-thread")
    t.start()
    asyncio.run(loop_in_thread("main"))
    t.join()


async def shared_main():
    # Enough tasks that a 1 ms tick reads a share of them.
    n = int(os.environ.get("AIO_TASKS", "300"))
    background = [asyncio.create_task(asyncio.sleep(1.5), name="bg-%d" % i) for i in range(n)]
    loop = asyncio.get_running_loop()

    async def on_futures():
        # A gather of futures that are not tasks.
        await asyncio.gather(loop.run_in_executor(None, time.sleep, 1), loop.run_in_executor(None, time.sleep, 1))

    await asyncio.gather(asyncio.create_task(on_futures(), name="on-futures"), *background)


def shared_loops():
    import threading

    t = threading.Thread(target=asyncio.run, args=(loop_in_thread("worker"),), name="loop-thread")
    t.start()
    asyncio.run(shared_main())
    t.join()


async def many_sleeper():
    await asyncio.sleep(float(os.environ.get("AIO_SLEEP", "1")))


async def many():
    n = int(os.environ.get("AIO_TASKS", "5000"))
    tasks = [asyncio.create_task(many_sleeper(), name="many-%d" % i) for i in range(n)]
    if os.environ.get("AIO_HOW") == "wait":
        # Linked by echion's hook on asyncio.wait, not by a field.
        await asyncio.wait(tasks)
    else:
        await asyncio.gather(*tasks)


async def cpu_mixed():
    async def idle():
        await asyncio.sleep(1.2)

    async def busy():
        await asyncio.sleep(0)
        sync_code()

    await asyncio.gather(
        asyncio.create_task(idle(), name="idle-1"),
        asyncio.create_task(idle(), name="idle-2"),
        asyncio.create_task(busy(), name="busy-task"),
    )


def no_asyncio():
    end = time.time() + 0.3
    while time.time() < end:
        pass
    report(asyncio_imported="asyncio" in sys.modules, threading_imported="threading" in sys.modules)


def uvloop_scenario():
    import uvloop

    seen = {}

    async def uv_main():
        seen["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
        await asyncio.gather(
            asyncio.create_task(grouped(1), name="uv-1"),
            asyncio.create_task(grouped(0.8), name="uv-2"),
        )

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(uv_main())
    else:
        uvloop.install()
        asyncio.run(uv_main())
    report(**seen)


SCENARIOS = {
    "gather_tasks": gather_tasks,
    "gather_coroutines": gather_coroutines,
    "wait": wait_scenario,
    "as_completed": as_completed_scenario,
    "async_gen": async_gen_scenario,
    "async_with": async_with_scenario,
    "executor": executor_scenario,
    "on_cpu_tasks": on_cpu_tasks,
    "on_cpu_coros": on_cpu_coros,
    "deadlock": deadlock,
    "task_group": task_group,
    "wait_for": wait_for_scenario,
    "shield": shield_scenario,
    "renamed": renamed,
    "not_started": not_started,
    "many": many,
    "cpu_mixed": cpu_mixed,
}
PLAIN = {"coroutines": coroutines, "two_loops": two_loops, "shared_loops": shared_loops, "no_asyncio": no_asyncio, "uvloop": uvloop_scenario}


def main():
    name = sys.argv[1]
    if name in PLAIN:
        PLAIN[name]()
    elif name == "deadlock":
        # Cancelling tasks that wait on each other recurses in asyncio
        # itself (as in echion's own test).
        try:
            asyncio.run(deadlock())
        except RecursionError:
            pass
    else:
        asyncio.run(SCENARIOS[name]())


if __name__ == "__main__":
    main()
