"""Threads that `threading` does not know (`_thread.start_new_thread`, and a
thread that C code creates and registers with the interpreter) are sampled
like any other, named by their native id, in wall and in CPU mode."""

import pytest

from harness import assert_close, leaf_is, marker_line, run_echion, samples_of, scope, stack_summary, target, threads, total

TARGET = target("raw_threads.py")
L = {m: marker_line(TARGET, m) for m in ("burn", "raw", "c")}


@pytest.mark.parametrize("mode", ["wall", "cpu"])
def test_unregistered_threads_are_named_by_native_id(tmp_path, mode):
    run = run_echion(tmp_path, TARGET, *(["-c"] if mode == "cpu" else []))
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    ctx = stack_summary(view)
    for kind, caller in (("raw", "raw_body"), ("c", "c_body")):
        name = "Thread-%d" % got[kind]["native_id"]
        assert name in threads(view), f"{kind} thread {name} missing: {sorted(threads(view))}\n{ctx}"
        mine = samples_of(view, name)
        # Its stack is its own: the function it was started with, then burn.
        burning = [s for s in mine if leaf_is(s, ("burn", L["burn"]))]
        assert burning, ctx
        assert all(s["frames"][0][1] == scope(caller) for s in burning), ctx
        assert all(s["frames"][-2][1:3] == [scope(caller), L[kind]] for s in burning), ctx
        measured = got[kind]["wall" if mode == "wall" else "cpu"] * 1e6
        # (A loaded machine that starves the sampler as the thread ends
        # loses its last moments: a quarter short is allowed, never over.)
        assert_close(total(burning), measured, 0.15, f"{mode} time of the {kind} thread", ctx, low=0.25)
