"""Memory mode (`echion -m`): every allocation of CPython's allocator
domains is accounted to the Python stack that made it and every free to the
same stack, so a profile says, per stack, how many bytes it allocated and
did not free. Checked through the real `echion` command on every
interpreter, each profile read by our reader and austin-python (1.7, and
2.x where it runs) and checked to agree."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import assert_readers_agree, contains, echion_command, echion_env, marker_line, read_all, run_echion, select, target

# Shapes, bytes and exit statuses only: most may run beside other tests
# (marked one by one). A loaded machine may not run the sampler for 100 ms
# and more (measured: 143 ms). Each interval's sample is a stack's net
# change, so memory a subinterpreter holds for less than that and then
# frees is not seen: the subinterpreter holds its 3 MB for 0.3 s, and its
# test runs alone. (The thread test found the other effect of such a
# stretch: stacks named after an ended thread with the same ident, fixed.)
parallel = pytest.mark.parallel

TARGET = target("memory.py")


def held(view, patterns, thread=None):
    """Net bytes of the samples whose stack contains ``patterns``."""
    return sum(s["memory"] or 0 for s in select(view, lambda s: contains(s, patterns), thread))


def summary(view, thread=None, top=10):
    acc = {}
    for s in view["samples"]:
        if thread is None or s["thread"] == thread:
            key = (s["thread"], " > ".join(f"{f[1]}:{f[2]}" for f in s["frames"][-6:]))
            acc[key] = acc.get(key, 0) + (s["memory"] or 0)
    rows = sorted(acc.items(), key=lambda kv: -abs(kv[1]))[:top]
    return "\n".join(f"  {t}: {v} B: {st}" for (t, st), v in rows)


def run_memory(tmp_path, scenario, *extra, timeout=120):
    run = run_echion(tmp_path, TARGET, "-m", *extra, args=[scenario], timeout=timeout)
    assert run.returncode == 0, run.describe()
    return run


@parallel
def test_held_memory_is_on_the_stack_that_holds_it(tmp_path):
    run = run_memory(tmp_path, "hold")
    view = run.view
    md = view["metadata"]
    assert md["mode"] == "memory", md
    assert md["interval"] == "1000", md
    assert all(s["time"] is None and s["memory"] is not None for s in view["samples"])
    hold = held(view, [("hold", marker_line(TARGET, "hold"))])
    payload = 50_000 * 1000
    # Everything the function keeps: at least 95 % of the 50 MB of payload,
    # and no more than the objects' real sizes plus the list that holds them.
    assert hold >= 0.95 * payload, f"hold: {hold} B\n{summary(view)}"
    assert hold <= run.result["held"] + 1_000_000, f"hold: {hold} B of {run.result['held']}\n{summary(view)}"
    # What churned was freed by the time the program ended: next to nothing
    # is left on its stack (an allocator's free list may keep a few blocks).
    churned = held(view, [("churn", marker_line(TARGET, "churn"))])
    assert abs(churned) < 100_000, f"churn: {churned} B\n{summary(view)}"
    # The churn did allocate (its stack has samples of both signs).
    churn_samples = select(view, lambda s: contains(s, [("churn", marker_line(TARGET, "churn"))]))
    assert any(s["memory"] > 0 for s in churn_samples) and any(s["memory"] < 0 for s in churn_samples), summary(view)
    assert int(md["tracked_allocations"]) > 50_000, md


@parallel
def test_each_thread_holds_its_own(tmp_path):
    run = run_memory(tmp_path, "threads")
    view = run.view
    line = marker_line(TARGET, "keep")
    for name in ("alloc-a", "alloc-b", "alloc-c"):
        want = run.result[name]
        got = held(view, [("keep", line)], thread=name)
        # The bytes objects, and the list that holds them.
        assert want <= got <= want * 1.05 + 65_536, f"{name}: {got} B, objects {want} B\n{summary(view)}"
    # No thread's allocations are put on another thread's stacks.
    assert held(view, [("keep", line)], thread="MainThread") == 0, summary(view)


@parallel
def test_code_made_all_the_time_keeps_the_table_small_and_every_stack_exact(tmp_path):
    def table(count):
        (tmp_path / str(count)).mkdir()
        run = run_echion(tmp_path / str(count), TARGET, "-m", args=["code", str(count)], timeout=120)
        assert run.returncode == 0, run.describe()
        return run, int(run.view["metadata"]["stack_table"])

    # Code objects made and freed, each allocating: the table holds the
    # stacks that are live (start-up's modules' objects among them), not
    # every stack the program ran. Before, 8,000 more code objects took
    # 8,000 slots more (3 stacks each: more than 20,000).
    _, small = table(1000)
    run, big = table(N_CODE)
    assert big - small < 500, (small, big)
    view = run.view
    by_file = {}
    for s in view["samples"]:
        files = {f[0] for f in s["frames"] if f[0].startswith("<gen-")}
        for name in files:
            by_file[name] = by_file.get(name, 0) + (s["memory"] or 0)
    held_sizes = {int(i): n for i, n in run.result["held"].items()}
    # Slots are given again: a change put on the wrong stack would leave
    # bytes on a code object whose bytearray was freed, or take them off
    # one that is held. Every block held to the end is on its own stack;
    # every other one nets to nothing.
    wrong = []
    for i in range(N_CODE):
        got = by_file.get(f"<gen-{i}>", 0)
        if i in held_sizes:
            if not held_sizes[i] <= got <= held_sizes[i] + 256:
                wrong.append((i, got, held_sizes[i]))
        elif got != 0:
            wrong.append((i, got, 0))
    assert not wrong, f"(i, bytes on <gen-i>, held): {wrong[:20]}\n{summary(view)}"
    # The freed ones were seen allocating (their stacks were written).
    seen = sum(1 for i in range(N_CODE) if i not in held_sizes and f"<gen-{i}>" in by_file)
    assert seen >= 300, f"{seen} freed code objects seen"


N_CODE = 9000


@parallel
def test_realloc_growth_nets_to_the_final_size(tmp_path):
    run = run_memory(tmp_path, "realloc")
    view = run.view
    got = held(view, [("grow", marker_line(TARGET, "grow"))])
    # Every reallocation frees the old item array and allocates the new one:
    # what is left is exactly the array the list has now.
    assert got == run.result["items"], f"grow: {got} B, list items {run.result['items']} B\n{summary(view)}"
    assert len(select(view, lambda s: contains(s, [("grow", marker_line(TARGET, "grow"))]))) >= 1


@parallel
def test_a_forked_child_has_its_own_profile(tmp_path):
    run = run_memory(tmp_path, "fork")
    child = run.result["child"]
    assert run.result["status"] == 0, run.describe()
    assert set(run.profiles) == {run.pid, child}, f"profiles of {sorted(run.profiles)}; {run.describe()}"
    parent, kid = run.profiles[run.pid].ours, run.profiles[child].ours
    p_line, c_line = marker_line(TARGET, "parent_keep"), marker_line(TARGET, "child_keep")
    assert held(parent, [("parent_keep", p_line)]) >= 2000 * 1000, summary(parent)
    assert held(parent, [("child_keep", c_line)]) == 0, summary(parent)
    # The child ended with os._exit: its profile holds what was flushed
    # while it slept, and nothing of the parent's table.
    assert held(kid, [("child_keep", c_line)]) >= 3000 * 1000, summary(kid)
    assert held(kid, [("parent_keep", p_line)]) == 0, summary(kid)
    assert {s["pid"] for s in kid["samples"]} == {child}
    # The child's thread is named as the parent's was.
    assert held(kid, [("child_keep", c_line)], thread="MainThread") >= 3000 * 1000, summary(kid)


@parallel
def test_raw_allocations_without_the_gil(tmp_path):
    # Four threads compress at once: zlib's state and buffers come from the
    # raw domain while the GIL is released. The program's results are
    # right, and what zlib freed nets to zero on the threads' stacks.
    run = run_memory(tmp_path, "raw")
    assert run.result == {"z0": True, "z1": True, "z2": True, "z3": True}, run.describe()
    view = run.view
    line = marker_line(TARGET, "compress")
    for name in ("z0", "z1", "z2", "z3"):
        on_stack = select(view, lambda s: contains(s, [("compress_many", line)]), thread=name)
        assert on_stack, f"{name}: nothing tracked\n{summary(view)}"
        # Each compression allocates at least its output (~1 MB) and frees it.
        assert max(s["memory"] for s in on_stack) > 100_000, summary(view, thread=name)
        assert abs(held(view, [("compress_many", line)], thread=name)) < 65_536, summary(view, thread=name)


def test_a_subinterpreter_allocates_under_its_id(tmp_path):
    run = run_memory(tmp_path, "subinterp")
    view, got = run.view, run.result
    assert got["sub"] != got["main"], got
    # Line 1 of the code the subinterpreter ran, with the subinterpreter's id.
    def sub_code(s):
        # Its <module> (and, before 3.12, the list comprehension's frame).
        f = s["frames"]
        return bool(f) and all(x[0] == "<string>" for x in f) and (f[0][1], f[0][2]) == ("<module>", 1)

    in_sub = [s for s in view["samples"] if s["iid"] == got["sub"] and sub_code(s) and s["memory"] > 0]
    assert sum(s["memory"] for s in in_sub) >= 3000 * 1000, summary(view)
    assert all(s["thread"] == "MainThread" for s in in_sub), summary(view)
    # None of it is put on the main interpreter.
    assert not any(s["iid"] == got["main"] and sub_code(s) for s in view["samples"]), summary(view)


@parallel
def test_upstream_leak_shape(tmp_path):
    # echion's tests/test_memory.py (v0.3.0 and HEAD): one thread, at least
    # 1 MB in all, the leaking function's stack found.
    run = run_memory(tmp_path, "leak")
    view = run.view
    assert {s["thread"] for s in view["samples"]} == {"MainThread"}, summary(view)
    assert sum(s["memory"] for s in view["samples"]) >= 1e6, summary(view)
    stack = ("<module>", "scenario_leak")
    leak = select(view, lambda s: contains(s, [("scenario_leak", marker_line(TARGET, "leak"))]))
    assert leak and all(s["frames"][0][1] == "<module>" for s in leak), summary(view)
    assert any(contains(s, [stack[0], stack[1]]) for s in leak), summary(view)
    # 100,000 objects of at least 48 bytes each.
    assert sum(s["memory"] for s in leak) >= 100_000 * 48, summary(view)


@parallel
def test_exposure_stops_tracking_and_the_program_goes_on(tmp_path):
    run = run_echion(tmp_path, TARGET, "-m", "-x", "0.1", args=["late"], timeout=120)
    assert run.returncode == 0, run.describe()
    # The program allocates after the exposure time: none of it is tracked,
    # and the profile was closed when tracking stopped.
    assert held(run.view, [("hold", marker_line(TARGET, "hold"))]) == 0, summary(run.view)
    assert run.result["n"] == 5000
    assert "duration" in run.view["metadata"], run.view["metadata"]
    assert int(run.view["metadata"]["duration"]) < 400_000, run.view["metadata"]


@parallel
@pytest.mark.parametrize("scenario,code", [("empty", 0), ("exit", 3)])
def test_200_runs_end_as_without_echion(tmp_path, scenario, code):
    # echion 0.3.5 segfaulted on an empty script in about half its runs.
    cmd = echion_command() + ["-m", "-o", str(tmp_path / "p.%(pid).mojo"), sys.executable, str(TARGET), scenario]
    env = echion_env()

    def once(_):
        p = subprocess.run(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stderr.decode(errors="replace")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(once, range(200)))
    bad = [(rc, err) for rc, err in results if rc != code or err.strip()]
    assert not bad, f"{len(bad)} of 200 runs ended otherwise: {bad[:3]}"
    assert len(list(tmp_path.glob("p.*.mojo"))) == 200


@parallel
def test_echion_core_tracks_memory_in_process(tmp_path):
    # The functions of echion 0.3 (set_memory, start_async, stop) from the
    # program itself, without the echion command.
    out = tmp_path / "core.mojo"
    code = (
        "import echion.core as ec\n"
        f"ec.set_memory(True); ec.set_output({str(out)!r}); ec.start_async()\n"
        "kept = [bytearray(1000) for _ in range(5000)]  # kept\n"
        "import time; time.sleep(0.05)\n"
        "ec.stop()\n"
        "after = [bytearray(1000) for _ in range(5000)]\n"
        "print(len(kept) + len(after))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == b"10000", p.stderr.decode()
    prof = read_all(out)
    assert_readers_agree(prof)
    view = prof.ours
    assert view["metadata"]["mode"] == "memory"
    kept = sum(s["memory"] for s in view["samples"] if s["frames"] and s["frames"][-1][2] == 3)
    assert kept >= 5000 * 1000, summary(view)
    # Nothing after stop() is tracked.
    assert not any(s["frames"] and s["frames"][-1][2] == 6 for s in view["samples"]), summary(view)


@parallel
def test_native_frames_of_the_allocating_stack(tmp_path):
    # -m -n: each allocation's native frames are interleaved with its Python
    # frames, as in the time modes.
    run = run_memory(tmp_path, "hold_few", "-n")
    view = run.view
    md = view["metadata"]
    assert md["mode"] == "memory", md
    hold_line = marker_line(TARGET, "hold")
    holding = select(view, lambda s: contains(s, [("hold", hold_line)]))
    held_bytes = sum(s["memory"] for s in holding)
    assert held_bytes >= 0.95 * 5_000 * 10_000, summary(view)
    # Under the Python frame that allocates: C frames only (bytearray's
    # constructor, the allocator), the leaf native; outermost, the
    # interpreter's C entry.
    native = lambda f: f[0].startswith("native@")
    with_c = [s for s in holding if native(s["frames"][-1])]
    assert sum(s["memory"] for s in with_c) >= 0.95 * held_bytes, summary(view)
    for s in with_c[:20]:
        f = s["frames"]
        i = max(j for j, fr in enumerate(f) if (fr[1], fr[2]) == ("hold", hold_line))
        below = f[i + 1 :]
        assert below and all(native(fr) for fr in below), f
        assert native(f[0]), f
    names = {fr[1] for s in with_c for fr in s["frames"] if native(fr)}
    assert any("bytearray" in n for n in names), sorted(names)
    assert "Py_BytesMain" in names, sorted(names)
    # No evaluation loop is left: each was replaced by its Python frames.
    assert not any(n.startswith("_PyEval_EvalFrameDefault") for n in names), sorted(n for n in names if "Eval" in n)
