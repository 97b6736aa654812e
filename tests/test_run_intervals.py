"""`-i 10ms`, `-i 500us`, `-i 2000` (µs): the sampler ticks at the interval
asked (at least 70 % of the ticks on this shared machine, never more), each
tick samples every thread (one sample per tick of its life, ±20 %, as the
profile's `samples` counts them), and the profile says which interval it was taken at."""

import pytest

from harness import SAMPLER_THREAD, assert_close, run_echion, samples_of, stack_summary, target

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
