"""A program that ends by SIGINT (the KeyboardInterrupt path), by SIGTERM
(its default action: death) or by os._exit leaves a profile that every
reader parses, holding the samples up to the end: the last piece of work
before the end is in it."""

import signal

import pytest

from harness import assert_close, contains, marker_line, run_echion, select, stack_summary, target, total

TARGET = target("signals.py")
L = {m: marker_line(TARGET, m) for m in ("last-work", "main-last-work", "main-wait-work", "main-until-killed", "until-killed")}


def check_profile(run, stacks, closed):
    # run_echion has read the profile with every reader and compared them.
    view, got = run.view, run.result
    ctx = f"metadata {view['metadata']}\n{stack_summary(view)}"
    assert view["samples"], ctx
    last = total(select(view, lambda s: any(contains(s, st) for st in stacks), "MainThread"))
    assert_close(last, got["last_work"] * 1e6, 0.10, "wall time of the work just before the end", ctx)
    if closed:
        for key in ("duration", "ticks", "samples", "skipped"):
            assert key in view["metadata"], f"profile not closed: {ctx}"
        assert 0 < len(view["samples"]) <= int(view["metadata"]["samples"])


@pytest.mark.parametrize(
    "how, returncode, closed",
    [
        ("sigint", -signal.SIGINT, True),  # KeyboardInterrupt, atexit runs
        ("sigterm", -signal.SIGTERM, False),  # no Python code runs
        ("os_exit", 7, False),  # no Python code runs
    ],
)
def test_program_ends_itself(tmp_path, how, returncode, closed):
    run = run_echion(tmp_path, TARGET, args=[how])
    assert run.returncode == returncode, run.describe()
    if how == "sigint":
        assert b"KeyboardInterrupt" in run.stderr, run.describe()
    check_profile(run, [[("main", L["main-last-work"]), ("last_work", L["last-work"])]], closed)


@pytest.mark.parametrize("signum, closed", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["SIGINT", "SIGTERM"])
def test_program_killed_from_outside(tmp_path, signum, closed):
    def kill_when_ready(proc):
        # The target says when it is in its last piece of work.
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signum)

    run = run_echion(tmp_path, TARGET, args=["wait"], on_start=kill_when_ready)
    assert run.returncode == -signum, run.describe()
    check_profile(
        run,
        [
            [("main", L["main-wait-work"]), ("last_work", L["last-work"])],
            [("main", L["main-until-killed"]), "work_until_killed"],
        ],
        closed,
    )
