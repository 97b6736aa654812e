"""Subinterpreters (``_xxsubinterpreters`` on 3.8 to 3.12, ``_interpreters``
from 3.13) are sampled, each under its own interpreter id, and the
program's output is what it is without echion."""

import importlib.util
import re

import pytest

from harness import PY, assert_close, contains, run_echion, run_plain, select, stack_summary, target, total

TARGET = target("subinterpreters.py")


def test_the_interpreter_has_subinterpreters():
    # Every supported version has one of the two modules: the tests below
    # run everywhere, nothing is skipped.
    module = "_interpreters" if PY >= (3, 13) else "_xxsubinterpreters"
    assert importlib.util.find_spec(module) is not None, f"Python {PY} without {module}"


def _code_lines():
    # The subinterpreters run CODE from the target: its markers count from
    # CODE's first line.
    source = TARGET.read_text(encoding="utf-8")
    code = re.search(r'CODE = """\\\n(.*?)"""', source, re.S).group(1).splitlines()
    return {m: next(i for i, text in enumerate(code, 1) if "#@" + m in text) for m in ("sub-sleep", "sub-call")}


def test_subinterpreters_appear_with_their_ids(tmp_path):
    run = run_echion(tmp_path, TARGET)
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    ctx = stack_summary(view, top=20)
    sub_ids = {int(i) for i in got["durations"]}
    assert len(sub_ids) == 2 and got["main"] not in sub_ids, f"the program's subinterpreters did not both run: {got}\n{run.describe()}"
    iids = {s["iid"] for s in view["samples"]}
    assert iids == {got["main"]} | sub_ids, f"interpreter ids {iids}, expected {got['main']} and {sorted(sub_ids)}\n{ctx}"

    line = _code_lines()
    stack = [("<module>", line["sub-call"]), ("in_subinterpreter", line["sub-sleep"])]
    for iid in got["durations"]:
        found = select(view, lambda s: contains(s, stack), iid=int(iid))
        assert found, f"interpreter {iid} never seen in in_subinterpreter():\n{ctx}"
        assert all(s["frames"][-1][0] == "<string>" for s in found)
        # CODE sleeps 0.6 s in in_subinterpreter().
        assert_close(total(found), 0.6e6, 0.10, f"wall time in interpreter {iid}", ctx)
    # The main interpreter's frames stay in the main interpreter, and it
    # has its own time.
    runners = select(view, lambda s: any(f[1] == "run_in" for f in s["frames"]))
    assert runners and {s["iid"] for s in runners} == {got["main"]}, ctx
    joining = total(select(view, lambda s: any(f[1] == "main" for f in s["frames"]), "MainThread", iid=got["main"]))
    assert joining >= 0.5e6, f"MainThread of the main interpreter has {joining} µs in main():\n{ctx}"
    # No thread's time is taken by another's (a thread runs in several
    # interpreters): a wall sample never stands for no time.
    empty = [s for s in view["samples"] if not s["time"]]
    assert not empty, f"{len(empty)} wall samples with no time, e.g. {[(s['iid'], s['thread'], [f[1] for f in s['frames']][-2:]) for s in empty[:5]]}"


@pytest.mark.parametrize("mode", ["wall", "cpu"])
def test_a_thread_counts_only_in_the_interpreter_it_runs_in(tmp_path, mode):
    # A thread that ran a subinterpreter (the one that made it, the ones
    # that ran code there) keeps a thread state there with no frame while
    # it runs elsewhere: sampled, its time (its CPU time, in CPU mode) was
    # counted twice, once on an empty stack (3.8: 25 ms wall, 16 ms CPU).
    run = run_echion(tmp_path, TARGET, *(["-c"] if mode == "cpu" else []))
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    subs = {int(i) for i in got["durations"]}
    empty = [s for s in view["samples"] if s["iid"] in subs and not s["frames"]]
    assert total(empty) < 2000, f"{total(empty)} µs on no frame in the subinterpreters:\n{stack_summary(view, top=20)}"


def test_with_native_frames_every_thread_state_of_a_thread_is_sampled(tmp_path):
    # A thread with a thread state in several interpreters is captured for
    # each in the same tick: the rest after a capture is the thread's from
    # one tick to the next, not one thread state's against the others.
    run = run_echion(tmp_path, TARGET, "-n")
    assert run.returncode == 0, run.describe()
    view, got = run.view, run.result
    ctx = stack_summary(view, top=20)
    for iid in got["durations"]:
        mine = [s for s in view["samples"] if s["iid"] == int(iid) and any(f[1] == "in_subinterpreter" for f in s["frames"])]
        assert_close(total(mine), 0.6e6, 0.10, f"wall time in interpreter {iid}", ctx)
    joining = total(select(view, lambda s: any(f[1] == "main" for f in s["frames"]), "MainThread", iid=got["main"]))
    assert joining >= 0.5e6, f"MainThread of the main interpreter has {joining} µs in main():\n{ctx}"
    runners = select(view, lambda s: any(f[1] == "run_in" for f in s["frames"]), iid=got["main"])
    assert total(runners) >= 2 * 0.5e6, f"the runners' main-interpreter stacks have {total(runners)} µs:\n{ctx}"


def test_subinterpreters_output_is_unchanged(tmp_path):
    plain = run_plain(tmp_path, TARGET)
    profiled = run_echion(tmp_path, TARGET, expect_profile=None)
    assert plain.returncode == 0, plain.describe()
    assert (profiled.returncode, profiled.stdout) == (plain.returncode, plain.stdout)
    assert profiled.stderr.decode() == plain.stderr.decode()
