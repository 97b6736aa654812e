"""asyncio task stacks through the real ``echion`` command, every profile read
by austin-python and by ours (``run_echion`` checks that they agree).

A thread that runs an event loop yields one stack per leaf task: the
thread's frames down to the loop's select (or to the handle running the task
on the CPU), then each task from the outermost waiter to the leaf, a frame
named after it (line 0) and its coroutine frames. Shapes as echion's own
asyncio tests expect them."""

import pytest

from harness import (
    PY,
    contains,
    profile_files,
    read_ours,
    run_echion,
    samples_of,
    scope,
    select,
    stack_summary,
    target,
    thread_prefix,
    total,
)

#: A test of the stacks of tasks that wait (wall time, which a busy machine
#: does not take from them): it may run beside another (``parallel``). The
#: others (a task's share of the CPU, the share of 10,000 tasks a tick
#: has time to read) run one at a time.
shapes = pytest.mark.parallel

AIO = target("aio.py")
SELECT = (scope("BaseEventLoop._run_once"), scope("EpollSelector.select"))
HANDLE = (scope("BaseEventLoop._run_once"), scope("Handle._run"))


def run(tmp_path, scenario, *echion_args, **kw):
    r = run_echion(tmp_path, AIO, *echion_args, args=(scenario,), **kw)
    assert r.returncode == 0, r.describe()
    return r


def with_stack(view, frames, thread="MainThread"):
    """The samples of ``thread`` whose stack holds ``frames`` in a row."""
    return select(view, lambda s: contains(s, frames), thread)


def assert_stack(view, frames, at_least_us=1, thread="MainThread"):
    found = with_stack(view, frames, thread)
    assert total(found) >= at_least_us, f"{frames}: {total(found)} µs\n{stack_summary(view)}"


def task_frames(view):
    """Every frame that names a task: line 0 and no file."""
    return {f[1] for s in view["samples"] for f in s["frames"] if f[2] == 0 and f[0] == ""}


@shapes
def test_gather_of_tasks(tmp_path):
    view = run(tmp_path, "gather_tasks").view
    for t in ("F4_0", "F4_1"):
        stack = SELECT + ("Task-1", "gather_tasks", "F1", "f1", "f2", "F3", "f3", t, "f4", "f5", "sleep")
        assert_stack(view, stack, 0.6e6)
    # The task frames carry line 0, the coroutines their own lines.
    s = with_stack(view, ("F4_0", "f4", "f5"))[0]
    names = [f[1] for f in s["frames"]]
    i = names.index("F4_0")
    assert s["frames"][i][2] == 0 and s["frames"][i + 1][2] > 0
    # Every sample of the loop's thread while it sleeps is a task's.
    assert task_frames(view) >= {"Task-1", "F1", "F3", "F4_0", "F4_1"}


@shapes
def test_gather_of_coroutines(tmp_path):
    view = run(tmp_path, "gather_coroutines").view
    # gather wraps each coroutine in a task of its own, in order.
    assert_stack(view, ("Task-1", "gather_coroutines", "Task-2", "inner_1", "sleep"), 0.4e6)
    assert_stack(view, ("Task-1", "gather_coroutines", "Task-3", "inner_2", "sleep"), 0.8e6)


@shapes
def test_task_awaiting_a_task_and_coroutines(tmp_path):
    view = run(tmp_path, "coroutines").view
    wait_fn = scope("outer_function.<locals>.background_wait_function")
    assert_stack(view, SELECT + ("Task-main", "outer_function", "Task-background_wait", wait_fn, "sleep"), 0.3e6)
    # Before the main task awaits it, the background task is a leaf.
    assert_stack(view, SELECT + ("Task-background_wait", wait_fn, "sleep"), 0.2e6)
    main_coro, sub_coro = scope("outer_function.<locals>.main_coro"), scope("outer_function.<locals>.sub_coro")
    assert_stack(view, SELECT + ("Task-main", "outer_function", main_coro, sub_coro, "sleep"), 0.2e6)
    # The CPU-bound task never waits on the sleeping one.
    math_fn = scope("outer_function.<locals>.background_math_function")
    assert not with_stack(view, (math_fn, "Task-background_wait")), stack_summary(view)


@shapes
def test_wait(tmp_path):
    view = run(tmp_path, "wait").view
    for i in range(1, 6):
        chain = SELECT + ("Task-1", "wait_scenario", "wait_outer", "wait", "_wait", f"inner-{i}", "waited", "sleep")
        assert_stack(view, chain, 0.2e6)


@shapes
def test_as_completed(tmp_path):
    view = run(tmp_path, "as_completed").view
    wait_for_one = "_AsCompletedIterator._wait_for_one" if PY >= (3, 13) else scope("as_completed.<locals>._wait_for_one")
    waiting = ("Task-1", "as_completed_scenario", wait_for_one, scope("Queue.get"))
    # Tasks made by the program and tasks as_completed made of coroutines.
    for t in ("delay-8", "delay-6"):
        assert_stack(view, waiting + (t, "wait_and_return_delay", "other", "sleep"), 0.4e6)
    # (Only tasks seen running wait_and_return_delay: the loop's own tasks
    # at its end, shutdown_asyncgens's, are tasks too, and a tick may see
    # one.)
    def runs_delay(t):
        return any(
            [f[1] for f in s["frames"][i : i + 2]] == [t, "wait_and_return_delay"]
            for s in view["samples"]
            for i in range(len(s["frames"]))
        )

    made = {n for n in task_frames(view) if n.startswith("Task-") and n != "Task-1" and runs_delay(n)}
    assert len(made) >= 3, made
    for t in made:
        assert with_stack(view, waiting + (t, "wait_and_return_delay")), t


@shapes
def test_async_generators(tmp_path):
    view = run(tmp_path, "async_gen").view
    chain = ("Task-1", "async_gen_scenario", "asynchronous_function", "async_generator", "async_generator_dep", "deep_dependency", "sleep")
    assert_stack(view, SELECT + chain, 0.8e6)


@shapes
def test_async_context_managers(tmp_path):
    view = run(tmp_path, "async_with").view
    head = SELECT + ("Task-1", "async_with_scenario", "with_function")
    assert_stack(view, head + (scope("AsyncContextManager.__aenter__"), "context_manager_dep", "sleep"), 0.3e6)
    assert_stack(view, head + ("some_function", "sleep"), 0.3e6)
    assert_stack(view, head + (scope("AsyncContextManager.__aexit__"), "sleep"), 0.3e6)


@shapes
def test_executor(tmp_path):
    view = run(tmp_path, "executor").view
    assert_stack(view, SELECT + ("Task-1", "executor_scenario", "executor_function"), 0.8e6)
    worker = "ThreadPoolExecutor-0_0" if PY < (3, 9) else "asyncio_0"
    assert_stack(view, thread_prefix() + ("_worker", scope("_WorkItem.run"), "slow_sync_function"), 0.8e6, thread=worker)


@pytest.mark.parametrize("kind", ["tasks", "coros"])
def test_on_cpu(tmp_path, kind):
    # CPU mode: the task on the CPU with its real frames, down to the plain
    # functions it calls.
    view = run(tmp_path, f"on_cpu_{kind}", "-c").view
    chain = {
        "tasks": ("Task-1", "on_cpu_tasks", "outer_task", "inner1_task", "Task-2", "inner2", "inner3"),
        "coros": ("Task-1", "on_cpu_coros", "outer_coro", "inner1_coro", "inner2", "inner3"),
    }[kind]
    stack = HANDLE + chain + ("sync_code_outer", "sync_code")
    assert_stack(view, stack, 0.8e6)
    # Of the time the loop ran (the program's imports before it are not
    # the claim, and weigh more on some versions than others).
    main = [
        s
        for s in view["samples"]
        if s["thread"] == "MainThread" and any(f[1].split(".")[-1] == "run_forever" for f in s["frames"])
    ]
    on_cpu = with_stack(view, stack)
    assert total(main) >= 0.8e6
    assert total(on_cpu) >= 0.9 * total(main), stack_summary(view)


def test_cpu_mode_shows_only_the_task_on_the_cpu(tmp_path):
    view = run(tmp_path, "cpu_mixed", "-c").view
    assert_stack(view, HANDLE + ("Task-1", "cpu_mixed", "busy-task", scope("cpu_mixed.<locals>.busy"), "sync_code"), 0.8e6)
    assert "busy-task" in task_frames(view)
    # The idle tasks only run for their first step (a few µs each): they
    # may be caught on the CPU then, never while they wait.
    idle = total(with_stack(view, ("idle-1",))) + total(with_stack(view, ("idle-2",)))
    assert idle <= 0.02e6, stack_summary(view)


def test_wall_mode_shows_waiting_tasks_beside_the_one_on_the_cpu(tmp_path):
    view = run(tmp_path, "cpu_mixed").view
    assert_stack(view, HANDLE + ("Task-1", "cpu_mixed", "busy-task", scope("cpu_mixed.<locals>.busy"), "sync_code"), 0.8e6)
    # While busy runs, the idle tasks wait: their stacks sit on the same
    # loop frames.
    for t in ("idle-1", "idle-2"):
        assert_stack(view, HANDLE + ("Task-1", "cpu_mixed", t, scope("cpu_mixed.<locals>.idle"), "sleep"), 0.8e6)


@shapes
def test_deadlock(tmp_path):
    # Two tasks awaiting each other: neither is a leaf, and nothing loops.
    r = run(tmp_path, "deadlock")
    assert_stack(r.view, SELECT + ("Task-1", "deadlock", "sleep"), 0.8e6)


@shapes
@pytest.mark.parametrize("scenario", ["wait_for", "shield"] + (["task_group"] if PY >= (3, 11) else []))
def test_links(tmp_path, scenario):
    view = run(tmp_path, scenario).view
    chains = {
        "wait_for": [("Task-1", "wait_for_scenario", "wait_for", "answer", "slow_answer", "sleep")],
        "shield": [("Task-1", "shield_scenario", "shield-inner", "shielded", "sleep")],
        "task_group": [
            ("Task-1", "task_group", scope("TaskGroup.__aexit__"), "grouped-1", "grouped", "sleep"),
            ("Task-1", "task_group", scope("TaskGroup.__aexit__"), "grouped-2", "grouped", "sleep"),
        ],
    }[scenario]
    for chain in chains:
        assert_stack(view, SELECT + chain, 0.6e6)


@shapes
def test_renamed_task(tmp_path):
    view = run(tmp_path, "renamed").view
    for name in ("first-name", "renamed"):
        assert_stack(view, SELECT + ("Task-1", "renamed", name, "named_sleeper", "sleep"), 0.3e6)


@shapes
def test_task_not_started(tmp_path):
    view = run(tmp_path, "not_started").view
    # The task is created, then the loop is blocked: its coroutine is shown
    # at its first line.
    assert_stack(view, HANDLE + ("Task-1", "not_started", "blocking"), 0.6e6)
    assert_stack(view, HANDLE + ("not-started", "never_started"), 0.6e6)


def test_loops_in_two_threads(tmp_path):
    view = run(tmp_path, "two_loops").view
    for thread, tag in (("MainThread", "main"), ("loop-thread", "worker")):
        found = [s for s in with_stack(view, SELECT, thread) if contains(s, ("loop_in_thread", f"sleeper-{tag}", "sleep"))]
        assert total(found) >= 0.8e6, stack_summary(view)
        other = "worker" if tag == "main" else "main"
        assert not with_stack(view, (f"sleeper-{other}",), thread), stack_summary(view)


def many_tasks_view(tmp_path, tasks, sleep, *echion_args, how="gather"):
    """Runs ``tasks`` tasks that sleep ``sleep`` s under one gather; checks
    that every task is seen, under the task that gathers them, and that
    their stacks carry the time they slept (each tick reads a share of them
    when there are more than it can read, each stack then carrying the
    time of the ticks that skipped it). The profile is read by our reader
    only (the other tests check that the readers agree)."""
    r = run(
        tmp_path,
        "many",
        *echion_args,
        expect_profile=None,
        timeout=120,
        env={"AIO_TASKS": str(tasks), "AIO_SLEEP": str(sleep), "AIO_HOW": how},
    )
    files = profile_files(tmp_path)
    assert list(files) == [r.pid], files
    view = read_ours(files[r.pid])
    names = {n for n in task_frames(view) if n.startswith("many-")}
    assert len(names) == tasks, len(names)
    slept = [s for s in view["samples"] if any(f[1].startswith("many-") for f in s["frames"])]
    # Each task sleeps `sleep` s (creating them all takes a moment more).
    got, want = total(slept), tasks * sleep * 1e6
    assert 0.75 * want <= got <= 1.5 * want, (got, want)
    under = total(s for s in slept if contains(s, ("Task-1", "many")))
    assert under >= 0.9 * got, (under, got)
    return view


@shapes
def test_many_tasks(tmp_path):
    # 5,000 tasks at a slow interval.
    many_tasks_view(tmp_path, 5000, 2, "-i", "200ms")


def test_more_tasks_than_a_tick_reads(tmp_path):
    # 10,000 tasks at 1 ms: a tick reads the share of them that fits in 0.5 %
    # of the interval, says so in the metadata, and the program runs as it
    # would.
    view = many_tasks_view(tmp_path, 10000, 3)
    meta = view["metadata"]
    assert int(meta["tasks_sampled_ticks"]) >= 1, meta
    assert int(meta["tasks_sampled_ticks"]) <= int(meta["ticks"]), meta
    assert "task_error_ticks" not in meta, meta


def test_more_tasks_than_a_tick_reads_linked_by_a_hook(tmp_path):
    # The same with asyncio.wait, whose links come from echion's hook: kept
    # until each task has been read in its share.
    view = many_tasks_view(tmp_path, 2000, 2, how="wait")
    assert int(view["metadata"]["tasks_sampled_ticks"]) >= 1, view["metadata"]


def test_shares_of_tasks_keep_every_shape(tmp_path):
    # 300 tasks beside the ones checked: at 1 ms each tick reads a share.
    view = run(tmp_path, "shared_loops").view
    assert int(view["metadata"]["tasks_sampled_ticks"]) >= 1, view["metadata"]
    # A task waiting on a gather of futures that are not tasks is a leaf.
    assert_stack(view, ("on-futures", scope("shared_main.<locals>.on_futures")), 0.6e6)
    # The other loop's task carries its thread's time, and the thread's own
    # stack is not shown on top of it in the ticks that did not read it.
    worker = with_stack(view, ("loop_in_thread", "sleeper-worker", "sleep"), "loop-thread")
    assert 0.7e6 <= total(worker) <= 1.5e6, stack_summary(view)
    bare = [s for s in samples_of(view, "loop-thread") if not any(f[2] == 0 and f[0] == "" for f in s["frames"])]
    assert total(bare) <= 0.15 * total(worker), stack_summary(view)


@shapes
def test_uvloop(tmp_path):
    r = run(tmp_path, "uvloop")
    assert r.result == {"loop": "uvloop"}, r.result
    for t, at_least in (("uv-1", 0.8e6), ("uv-2", 0.6e6)):
        assert_stack(r.view, ("Task-1", scope("uvloop_scenario.<locals>.uv_main"), t, "grouped", "sleep"), at_least)


@shapes
def test_program_without_asyncio_does_not_import_it(tmp_path):
    r = run(tmp_path, "no_asyncio")
    # Nor `threading`: the sampler runs in a native thread, and a program
    # without `threading` has no thread to show it in.
    assert r.result == {"asyncio_imported": False, "threading_imported": False}, r.describe()
    assert_stack(r.view, ("<module>", "main", "no_asyncio"), 0.2e6)
    assert not task_frames(r.view)
    assert {s["thread"] for s in r.view["samples"]} == {"MainThread"}, r.describe()
