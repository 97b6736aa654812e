"""Stacks as they are: non-ASCII names of functions, methods, files and
threads, and a stack 900 frames deep, every frame in order."""

from harness import (
    SAMPLER_THREAD,
    is_stack,
    marker_line,
    run_echion,
    scope,
    select,
    stack_summary,
    starts_with,
    target,
    thread_prefix,
    threads,
    total,
)
import pytest

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

NON_ASCII = target("données_計算.py")
RECURSION = target("recursion.py")


def test_non_ascii_names(tmp_path):
    run = run_echion(tmp_path, NON_ASCII)
    assert run.returncode == 0, run.describe()
    view = run.view
    ctx = stack_summary(view)
    assert threads(view) == {"MainThread", "ñandú-計算", SAMPLER_THREAD}, ctx

    line = {m: marker_line(NON_ASCII, m) for m in ("compute", "cafe", "main-cafe", "main")}
    tail = (("café", line["cafe"]), (scope("Données.計算"), line["compute"]))
    for thread, stack in (
        ("MainThread", (("<module>", line["main"]), ("main", line["main-cafe"])) + tail),
        ("ñandú-計算", thread_prefix() + tail),
    ):
        found = select(view, lambda s: is_stack(s, stack), thread)
        assert found, f"no sample of {thread} in {stack}:\n{ctx}"
        # The file's name is the target's, whatever the reader.
        for s in found:
            assert [f[0] for f in s["frames"][-len(tail) :]] == [str(NON_ASCII)] * len(tail)


def test_recursion_900_deep(tmp_path):
    # Every sample holds 903 frames: fewer samples keep the readers quick.
    run = run_echion(tmp_path, RECURSION, "-i", "10ms")
    assert run.returncode == 0, run.describe()
    view = run.view
    line = {m: marker_line(RECURSION, m) for m in ("bottom", "recurse", "last", "main-recurse", "main")}
    stack = (
        (("<module>", line["main"]), ("main", line["main-recurse"]))
        + (("recurse", line["recurse"]),) * 899
        + (("recurse", line["last"]), ("bottom", line["bottom"]))
    )
    assert len(stack) == 903
    at_bottom = select(view, lambda s: bool(s["frames"]) and s["frames"][-1][1] == "bottom", "MainThread")
    exact, cut, wrong = [], [], []
    for s in at_bottom:
        if is_stack(s, stack):
            exact.append(s)
        elif len(s["frames"]) < len(stack) and is_stack(s, stack[-len(s["frames"]) :]):
            # A sample taken just as the recursion unwinds may see the
            # innermost frames only (the outer ones already freed): at most
            # one such.
            cut.append(s)
        else:
            # A stack with frames that are not in this one is never right.
            wrong.append(s)

    def show(s):
        f = s["frames"]
        return f"{len(f)} frames: {[tuple(x[1:3]) for x in f[:3]]} … {[tuple(x[1:3]) for x in f[-3:]]}"

    assert exact, f"no sample with the whole stack; at the bottom: {[show(s) for s in at_bottom[:5]]}; metadata {view['metadata']}"
    assert all(f[0] == str(RECURSION) for s in exact for f in s["frames"])
    assert not wrong, f"{len(wrong)} samples at the bottom with another stack: {[show(s) for s in wrong[:5]]}"
    assert len(cut) <= 1, f"{len(cut)} samples at the bottom cut short: {[show(s) for s in cut[:5]]}"
    assert total(exact) >= 0.5e6, f"{total(exact)} µs with the whole stack"


def test_generators_and_yield_from(tmp_path):
    # A running generator is on its consumer's stack; one delegating with
    # `yield from` has the one it delegates to above it.
    gen = target("generators.py")
    run = run_echion(tmp_path, gen)
    assert run.returncode == 0, run.describe()
    view = run.view
    line = {m: marker_line(gen, m) for m in ("main", "consume", "yield-from", "sleep", "busy")}
    outer = (("<module>", line["main"]), ("my_function", line["consume"]))
    for stack in (
        outer + (("generator", line["sleep"]),),
        outer + (("generator", line["yield-from"]), ("generator2", line["busy"]), "busy"),
    ):
        found = select(view, lambda s: starts_with(s, stack), "MainThread")
        assert total(found) >= 0.3e6, f"{stack}\n{stack_summary(view)}"
