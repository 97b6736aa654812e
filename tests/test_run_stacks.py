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
    target,
    thread_prefix,
    threads,
    total,
)

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
    run = run_echion(tmp_path, RECURSION)
    assert run.returncode == 0, run.describe()
    view = run.view
    line = {m: marker_line(RECURSION, m) for m in ("bottom", "recurse", "last", "main-recurse", "main")}
    stack = (
        (("<module>", line["main"]), ("main", line["main-recurse"]))
        + (("recurse", line["recurse"]),) * 899
        + (("recurse", line["last"]), ("bottom", line["bottom"]))
    )
    assert len(stack) == 903
    deepest = max((s for s in view["samples"] if s["thread"] == "MainThread"), key=lambda s: len(s["frames"]))
    found = select(view, lambda s: is_stack(s, stack), "MainThread")
    assert found, (
        f"no sample with the whole stack; the deepest has {len(deepest['frames'])} frames, "
        f"from {[f[1:3] for f in deepest['frames'][:3]]} to {[f[1:3] for f in deepest['frames'][-3:]]}; metadata {view['metadata']}"
    )
    assert all(f[0] == str(RECURSION) for s in found for f in s["frames"])
    # Deep stacks are not cut short: the bottom is where the time went.
    at_bottom = total(select(view, lambda s: s["frames"] and s["frames"][-1][1] == "bottom", "MainThread"))
    assert total(found) == at_bottom, stack_summary(view, "MainThread")
