"""`echion python app.py` on two named threads with known stacks (one
sleeping, one burning CPU) and the main thread waiting for them: wall and
CPU time per thread and per stack, line numbers, and the sampler thread
(present, or absent in stealth mode)."""

from pathlib import Path

import pytest

from harness import (
    PY,
    SAMPLER_THREAD,
    assert_close,
    contains,
    is_stack,
    marker_line,
    run_echion,
    samples_of,
    scope,
    select,
    stack_summary,
    starts_with,
    target,
    thread_prefix,
    threads,
    total,
    totals,
)

TARGET = target("threads.py")
L = {m: marker_line(TARGET, m) for m in ("burn", "snooze", "burner", "sleeper", "join", "main")}


def burner_stack():
    return thread_prefix() + (("burner", L["burner"]), ("burn", L["burn"]))


def sleeper_stack():
    return thread_prefix() + (("sleeper", L["sleeper"]), ("snooze", L["snooze"]))


def main_prefix():
    return (("<module>", L["main"]), ("main", L["join"]), scope("Thread.join"))


def expected_threads(stealth):
    return {"MainThread", "burner", "sleeper"} | (set() if stealth else {SAMPLER_THREAD})


def check_metadata(view, mode):
    meta = view["metadata"]
    assert meta["mode"] == mode
    assert meta["interval"] == "1000"
    assert meta["sampler"] == "echion"
    assert meta["python"].startswith("%d.%d." % PY)
    for key in ("duration", "ticks", "samples", "skipped", "late_ticks", "sampler_cpu"):
        assert meta.get(key, "").isdigit(), f"closing metadata {key!r} missing: {meta}"
    # The sampler's own CPU time: some, and less than the run lasted.
    assert 0 < int(meta["sampler_cpu"]) < int(meta["duration"]), meta
    # Samples taken; the file may hold fewer (an unchanged stack's time is
    # added to its last sample).
    assert 0 < len(view["samples"]) <= int(meta["samples"])


@pytest.mark.parametrize("stealth", [False, True], ids=["sampler-thread", "stealth"])
def test_wall_time_per_thread_is_its_lifetime(tmp_path, stealth):
    run = run_echion(tmp_path, TARGET, *(["-s"] if stealth else []))
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    ctx = stack_summary(view)
    check_metadata(view, "wall")
    assert {"MainThread", "burner", "sleeper"} <= threads(view), ctx
    # In stealth mode the sampler has no Python thread to show.
    assert (SAMPLER_THREAD in threads(view)) is not stealth, ctx
    per_thread = totals(view)

    # Every sample of the workers is the stack we know, line numbers
    # included (bootstrap, start and end of a thread aside).
    for name, stack, lifetime in (
        ("burner", burner_stack(), got["burner"]["wall"]),
        ("sleeper", sleeper_stack(), got["sleeper"]["wall"]),
    ):
        mine = total(select(view, lambda s: is_stack(s, stack), name))
        assert_close(per_thread[name], lifetime * 1e6, 0.10, f"wall time of thread {name}", ctx)
        assert_close(mine, lifetime * 1e6, 0.10, f"wall time of {name} in {stack[-2:]}", ctx)

    # Sampling starts before the program's first line: the main thread's
    # total covers the whole script at least.
    assert per_thread["MainThread"] >= 0.9 * got["main"]["script"] * 1e6, (
        f"MainThread sampled for {per_thread['MainThread']} µs, the script ran {got['main']['script'] * 1e6:.0f} µs\n{ctx}"
    )

    # The main thread waits in join() for as long as the workers live.
    joining = total(select(view, lambda s: starts_with(s, main_prefix()), "MainThread"))
    assert_close(joining, got["main"]["join"] * 1e6, 0.10, "wall time of MainThread in join()", ctx)

    if not stealth:
        # The sampler thread sits in its run() (in the native start()) for
        # the whole run.
        sampler = samples_of(view, SAMPLER_THREAD)
        assert all(is_stack(s, thread_prefix()) for s in sampler), stack_summary(view, SAMPLER_THREAD)
        assert_close(per_thread[SAMPLER_THREAD], int(view["metadata"]["duration"]), 0.10, "wall time of the sampler thread", ctx)

    # A wall-time sample stands for the time since the thread's previous
    # one: never nothing.
    empty = [s for s in view["samples"] if not s["time"]]
    assert not empty, f"{len(empty)} wall samples with no time, e.g. {[(s['thread'], [f[1] for f in s['frames']][-3:]) for s in empty[:5]]}"
    # Only threading's names, and all of them (a thread's first and last
    # moments, before threading knows it and after it forgot it, are still
    # that thread's).
    assert threads(view) == expected_threads(stealth), f"native ids: burner {got['burner']['native_id']}, sleeper {got['sleeper']['native_id']}\n{ctx}"


@pytest.mark.parametrize("stealth", [False, True], ids=["sampler-thread", "stealth"])
def test_cpu_time_is_where_the_cpu_was_burnt(tmp_path, stealth):
    run = run_echion(tmp_path, TARGET, "-c", *(["-s"] if stealth else []))
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    ctx = stack_summary(view)
    check_metadata(view, "cpu")

    burning = total(select(view, lambda s: is_stack(s, burner_stack()), "burner"))
    assert_close(burning, got["burner"]["cpu_burn"] * 1e6, 0.15, "CPU time of burner in burn()", ctx)
    # Nothing of the burner's CPU time is lost to other stacks either.
    assert_close(totals(view)["burner"], got["burner"]["cpu"] * 1e6, 0.15, "CPU time of thread burner", ctx)

    # Sleeping is not CPU time: the sleeping frames carry at most the CPU
    # the thread burnt in them (going to sleep, waking, taking the GIL
    # back), never the time asleep, and the sampler does not show them
    # tick after tick.
    for name, stack, cpu in (
        ("sleeper", sleeper_stack(), got["sleeper"]["cpu"]),
        ("MainThread", main_prefix(), got["main"]["join_cpu"]),
    ):
        asleep = select(view, lambda s: starts_with(s, stack), name)
        assert total(asleep) <= cpu * 1e6 + 1000, f"{name} asleep in {stack[-1]} carries {total(asleep)} µs of CPU; it burnt {cpu * 1e6:.0f} µs there:\n{stack_summary(view, name)}"
        assert len(asleep) <= 10, f"{len(asleep)} CPU samples of {name} asleep in {stack[-1]}:\n{stack_summary(view, name)}"

    seen = threads(view)
    assert "burner" in seen, ctx
    # Only threading's names (a thread's last CPU burst after its Python
    # code ended is still that thread's).
    assert seen <= expected_threads(stealth), f"native ids: burner {got['burner']['native_id']}, sleeper {got['sleeper']['native_id']}\n{ctx}"
    if stealth:
        assert SAMPLER_THREAD not in seen, ctx
    else:
        # The sampler burns some CPU of its own while sampling.
        assert SAMPLER_THREAD in seen, ctx


def test_waiting_threads_cost_the_file_one_sample_per_tenth_of_a_second(tmp_path):
    # 200 threads wait 1.5 s at 100 µs: 3 million samples taken, and each
    # thread's stack stays the same, so each writes one sample per 100 ms
    # held with the time of all (every total exact) instead of one a tick.
    workload = Path(__file__).resolve().parent.parent / "benches" / "workloads" / "idle_threads.py"
    env = {"ECHION_BENCH_THREADS": "200", "ECHION_BENCH_SECONDS": "1.5"}
    run = run_echion(tmp_path, workload, "-i", "100us", env=env, timeout=120)
    assert run.returncode == 0, run.describe()
    view = run.view
    meta = view["metadata"]
    ctx = f"metadata {meta}\n{stack_summary(view)}"
    idle = {name: t for name, t in totals(view).items() if name.startswith("idle-")}
    assert len(idle) == 200, ctx
    # Each waited 1.5 s (its whole life but for its start and end).
    assert all(1.4e6 <= t <= 2.5e6 for t in idle.values()), sorted(idle.values())[:5]
    written = sum(1 for s in view["samples"] if s["thread"].startswith("idle-"))
    seconds = int(meta["duration"]) / 1e6
    assert written <= 200 * (seconds * 10 + 5), (written, ctx)
    assert int(meta["samples"]) >= 20 * len(view["samples"]), ctx
    # Nearly every one of those samples was taken without a walk: the GIL
    # did not change hands while the threads waited.
    assert int(meta.get("unwalked_samples", 0)) >= 0.8 * 200 * int(meta["ticks"]), ctx
    size = run.profile.path.stat().st_size
    assert size / seconds < 200_000, (size, seconds)


@pytest.mark.parametrize("workers", [1, 4])
def test_a_thread_that_moved_is_walked_again(tmp_path, workers):
    # Each worker spends half its time in rest() called by via_a and half
    # called by via_b: the innermost frame is the same either way. One
    # worker alone takes the GIL back from itself (no switch counted: it is
    # the GIL's last holder); four take it from each other.
    alt = target("alternating.py")
    lines = {m: marker_line(alt, m) for m in ("rest", "via_a", "via_b", "call_a", "call_b")}
    env = {"TARGET_WORKERS": str(workers), "TARGET_SECONDS": "1.5"}
    run = run_echion(tmp_path, alt, "-i", "200us", env=env, timeout=120)
    assert run.returncode == 0, run.describe()
    view = run.view
    ctx = f"metadata {view['metadata']}\n{stack_summary(view)}"
    for i in range(workers):
        name = f"worker-{i}"
        via = {}
        for caller in ("a", "b"):
            tail = (("worker", lines[f"call_{caller}"]), (f"via_{caller}", lines[f"via_{caller}"]), ("rest", lines["rest"]))
            via[caller] = total(select(view, lambda s, t=tail: contains(s, t), name))
        both = via["a"] + via["b"]
        assert both >= 1.0e6, (name, via, ctx)
        # Half each; a stale stack would give one caller far more.
        assert 0.35 <= via["a"] / both <= 0.65, (name, via, ctx)
