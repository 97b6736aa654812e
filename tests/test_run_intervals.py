"""`-i 10ms`, `-i 500us`, `-i 2000` (µs): the sampler ticks at the interval
asked (at least 70 % of the ticks on this shared machine, never more), each
tick samples every thread (one sample per tick of its life, ±20 %, as the
profile's `samples` counts them), and the profile says which interval it was taken at."""

import pytest

from harness import PY, SAMPLER_THREAD, assert_close, run_echion, samples_of, stack_summary, target, total

TARGET = target("threads.py")


@pytest.mark.parametrize("interval, micros", [("10ms", 10_000), ("500us", 500), ("2000", 2000)])
def test_sample_count_follows_the_interval(tmp_path, interval, micros):
    run = run_echion(tmp_path, TARGET, "-i", interval)
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    meta = view["metadata"]
    assert meta["interval"] == str(micros), meta
    ctx = f"metadata {meta}\n{stack_summary(view)}"
    ticks, sampled = int(meta["ticks"]), int(meta["duration"])
    delivered = ticks * micros / sampled
    assert 0.70 <= delivered <= 1.05, f"{ticks} ticks in {sampled} µs at -i {interval}: {delivered:.0%} of those asked\n{ctx}"
    per_us = ticks / sampled
    # Each tick samples every live thread: the two workers' lives are
    # measured in the target; the main and the sampler thread live as long
    # as the sampling does. (The file holds fewer: a thread whose stack did
    # not change adds its time to its last sample; `samples` counts them
    # all.)
    expected = 2 * ticks + (got["burner"]["wall"] + got["sleeper"]["wall"]) * 1e6 * per_us
    assert_close(int(meta["samples"]), expected, 0.20, f"samples taken at -i {interval}", ctx)
    assert len(view["samples"]) <= int(meta["samples"]), ctx
    # Every thread was seen, each with the time of its life.
    for name, lifetime in (("burner", got["burner"]["wall"]), ("sleeper", got["sleeper"]["wall"])):
        assert_close(sum(s["time"] for s in samples_of(view, name)), lifetime * 1e6, 0.20, f"wall time of {name} at -i {interval}", ctx)
    for name in ("MainThread", SAMPLER_THREAD):
        assert samples_of(view, name), ctx


@pytest.mark.parametrize("no_thread", [False, True], ids=["thread", "no-thread"])
def test_a_forked_child_starts_once_it_has_run_an_interval_or_after_16_ms(tmp_path, no_thread):
    # From 3.9 the fork puts a child's start off with two timers: one of
    # its CPU clock, an interval (1 ms) ahead, seen at the kernel's next
    # tick, and one of the monotonic clock 16 ms ahead (a timer due before
    # the CPU's next tick would cost each child two exits to the
    # hypervisor). A child that computes starts first; one that sleeps
    # starts at 16 ms. Either way its first sample holds its time from
    # the fork, so its total is its life.
    options = ["--no-thread"] if no_thread else []
    run = run_echion(tmp_path, target("fork_first.py"), *options, timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    after = {}
    for name in ("sleeps", "computes"):
        assert got[name] in run.profiles, f"no profile for child {name}; {run.describe()}"
        view = run.profiles[got[name]].ours
        # (Every version puts the start off: 3.8 from its Python hook.)
        after[name] = int(view["metadata"]["started_after_fork"])
        assert after[name] > 0, view["metadata"]
        # From the fork to the end (its exit's stop: less than 0.35 s).
        main = total(samples_of(view, "MainThread"))
        assert 0.28e6 <= main <= 0.45e6, (name, main, stack_summary(view))
    if PY >= (3, 9):
        assert 16_000 <= after["sleeps"] < 100_000, after
        # 1 ms of running, then up to a tick (4 ms at 250 Hz) and a safe
        # point: before the 16 ms timer (a time-weighing test: it runs
        # alone, so that the child gets its CPU).
        assert after["computes"] < 15_000, after
    # A child that ends before its start came: started at its exit, its
    # life still counts from the fork. (On a busy machine its start may come
    # in its sleep, 3.8's after 1 ms of CPU spent in the fork's Python
    # hooks: the ticks after its first sample then hold the rest of the
    # sleep, less the last interval's and a late tick's.) Either way its
    # first sample holds its life from the fork to its start.
    early = got["ends_early"]
    assert early in run.profiles, f"no profile for child ends_early; {run.describe()}"
    view = run.profiles[early].ours
    main = total(samples_of(view, "MainThread"))
    started = int(view["metadata"]["started_after_fork"])
    assert main >= started, (main, view["metadata"], stack_summary(view))
    assert 4_000 <= main <= 0.2e6, (main, view["metadata"], stack_summary(view))
