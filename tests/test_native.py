"""Native stacks (`echion -n`): C frames interleaved with the Python frames
that called them, each evaluation-loop frame replaced by the Python frames
it runs. Checked through the real `echion` command on every interpreter,
each profile read by our reader and austin-python (1.7, and 2.x where it
runs) and checked to agree; the upstream cases are echion's own
`test_wall_time_native` and `test_cpu_time_native` (marked as expected to
fail there)."""

import subprocess
import sys

import pytest

from harness import assert_readers_agree, read_all, PY, SAMPLER_THREAD, contains, marker_line, run_echion, run_plain, samples_of, scope, select, stack_summary, target, threads

TARGET = target("native.py")


def line(name):
    return marker_line(TARGET, name)


def is_native(frame):
    return frame[0].startswith("native@")


def natives(sample):
    return [f[1] for f in sample["frames"] if is_native(f)]


def run_native(tmp_path, scenario, *extra, timeout=90, independent_readers=True):
    run = run_echion(tmp_path, TARGET, "-n", *extra, args=[scenario], timeout=timeout, independent_readers=independent_readers)
    assert run.returncode == 0, run.describe()
    md = run.view["metadata"]
    assert int(md["native_captures"]) > 0, md
    return run


def _is(frame, pattern):
    return frame[1] == pattern if isinstance(pattern, str) else (frame[1], frame[2]) == pattern


def between(sample, outer, inner):
    """The frames strictly between the first frame matching ``outer`` and
    the next frame after it matching ``inner`` (None if there are none);
    a pattern is a scope or a (scope, line) pair."""
    f = sample["frames"]
    for i, a in enumerate(f):
        if _is(a, outer):
            for j in range(i + 1, len(f)):
                if _is(f[j], inner):
                    return f[i + 1 : j]
            return None
    return None


def mostly_native(found, share=0.9):
    """At least ``share`` of the runs of frames in ``found`` are C frames
    only (a thread that did not take the capture signal in time is sampled
    with its Python frames alone; the metadata counts those)."""
    good = [c for c in found if c and all(is_native(f) for f in c)]
    return len(good) >= share * len(found)


def native_frames_are_echions(view):
    """Every native frame is written as echion 0.3 writes them: file
    ``native@0x<pc>``, line 0."""
    for s in view["samples"]:
        for f in s["frames"]:
            if is_native(f):
                assert f[0] == "native@0x%x" % int(f[0][len("native@0x") :], 16), f
                assert f[2] == 0 and f[1], f


@pytest.mark.parametrize("stealth", [False, True], ids=["thread", "stealth"])
def test_wall_time_native(tmp_path, stealth):
    run = run_native(tmp_path, "upstream_wall", *(["-s"] if stealth else []))
    view = run.view
    md = view["metadata"]
    assert md["mode"] == "wall" and md["interval"] == "1000", md
    expected = {"MainThread", "SecondaryThread"} | (set() if stealth else {SAMPLER_THREAD})
    assert threads(view) == expected, threads(view)
    main, bar_sleep, bar_foo, foo = line("main"), line("bar_sleep"), line("bar_foo"), line("foo")
    summary = stack_summary(view)
    if PY >= (3, 11):
        # One evaluation-loop call runs main and bar: no C frame between.
        assert select(view, lambda s: contains(s, [("main", main), ("bar", bar_sleep)]), "MainThread"), summary
        assert select(view, lambda s: contains(s, [("bar", bar_foo), ("foo", foo)]), "SecondaryThread"), summary
    else:
        # Every Python call goes through C.
        assert select(view, lambda s: contains(s, [("bar", bar_sleep)]), "MainThread"), summary
        assert select(view, lambda s: contains(s, [("foo", foo)]), "SecondaryThread"), summary
        calls = [between(s, ("main", main), ("bar", bar_sleep)) for s in samples_of(view, "MainThread")]
        assert any(c and all(is_native(f) for f in c) for c in calls), summary
    # time.sleep's C function under bar, the libc call under it, and the
    # interpreter's own C frames outermost.
    sleeping = select(view, lambda s: contains(s, [("bar", bar_sleep)]), "MainThread")
    assert any("time_sleep" in natives(s) and is_native(s["frames"][-1]) for s in sleeping), summary
    outermost_native = sum(s["time"] for s in sleeping if is_native(s["frames"][0]))
    assert outermost_native >= 0.9 * sum(s["time"] for s in sleeping), summary
    assert any("Py_BytesMain" in natives(s) for s in sleeping), summary
    native_frames_are_echions(view)
    # Most of the time has native frames: the sleeps (2 × 1.5 s) at least.
    with_native = sum(s["time"] for s in view["samples"] if natives(s) and s["thread"] != SAMPLER_THREAD)
    assert with_native >= 2.5e6, (with_native, md)


@pytest.mark.parametrize("stealth", [False, True], ids=["thread", "stealth"])
def test_cpu_time_native(tmp_path, stealth):
    run = run_native(tmp_path, "upstream_cpu", "-c", *(["-s"] if stealth else []))
    view = run.view
    md = view["metadata"]
    assert md["mode"] == "cpu" and md["interval"] == "1000", md
    assert {"MainThread", "SecondaryThread"} <= threads(view), threads(view)
    busy, module_busy = line("busy"), line("module_busy")
    summary = stack_summary(view)
    if PY >= (3, 11):
        assert select(view, lambda s: contains(s, [("upstream_cpu", module_busy), ("keep_cpu_busy", busy)]), "MainThread"), summary
    else:
        assert select(view, lambda s: contains(s, [("keep_cpu_busy", busy)]), "MainThread"), summary
    assert select(view, lambda s: contains(s, [("keep_cpu_busy", busy)]), "SecondaryThread"), summary
    native_frames_are_echions(view)
    # CPU time goes to running code: monotonic()'s C function is on CPU
    # under the busy loop, the sleep in idle() is not (but for the moments
    # around it: a sample carries the CPU time used since the last one).
    busy_time = sum(s["time"] for s in select(view, lambda s: contains(s, [("keep_cpu_busy", busy)])))
    clock_time = sum(s["time"] for s in select(view, lambda s: contains(s, [("keep_cpu_busy", busy)]) and "time_monotonic" in natives(s)))
    assert clock_time > 0, summary
    # The two threads sleep 0.5 s each: CPU mode charges those stacks only
    # the CPU time around the sleep (a sample carries the time used since
    # the one before), far from the second of wall time. Not the captures'
    # own cost either: each capture runs echion's signal handler on the
    # sleeping thread's clock (about 45 ms over the sleeps here, 220 ms on
    # a slow machine, before the engine took it out).
    sleeping = sum(s["time"] for s in view["samples"] if "time_sleep" in natives(s))
    assert sleeping < 25_000, (sleeping, busy_time, summary)


def test_a_sleeping_thread_is_not_charged_the_captures_between_its_rests(tmp_path):
    # At 100 µs a captured thread rests before its next sample (see
    # test_captures_leave_a_thread_at_least_half_its_time): that sample is
    # still the first since the capture, whose own CPU time (the handler's
    # copy and wait) is not the program's.
    run = run_native(tmp_path, "upstream_cpu", "-c", "-i", "100us")
    view = run.view
    md = view["metadata"]
    assert int(md.get("native_rested", 0)) > 0, md
    sleeping = sum(s["time"] for s in view["samples"] if "time_sleep" in natives(s))
    assert sleeping < 25_000, (sleeping, md, stack_summary(view))


def test_sorted_shows_the_sort_between_its_caller_and_the_key_function(tmp_path):
    run = run_native(tmp_path, "sort_key")
    view = run.view
    outer, inner = ("sort_with_key", line("sorted")), "key"
    found = [between(s, outer, inner) for s in samples_of(view, "MainThread")]
    found = [c for c in found if c is not None]
    summary = stack_summary(view)
    assert found, summary
    # Only C frames between them, the sort's among them.
    assert mostly_native(found), summary
    assert any(any("sort" in f[1] for f in c) for c in found), summary
    # The key function's time is most of the run's (it does the work).
    in_key = sum(s["time"] for s in samples_of(view, "MainThread") if between(s, outer, inner) is not None)
    assert in_key >= 0.3 * 1.5e6, (in_key, summary)


def test_a_ctypes_callback_from_libc_qsort(tmp_path):
    run = run_native(tmp_path, "qsort")
    view = run.view
    outer, inner = ("qsort", line("qsort")), scope("qsort.<locals>.compare")
    found = [between(s, outer, inner) for s in samples_of(view, "MainThread")]
    found = [c for c in found if c is not None]
    summary = stack_summary(view)
    assert found, summary
    assert mostly_native(found), summary
    # libc's qsort and libffi's call are among the C frames.
    assert any(any(f[1] in ("qsort", "qsort_r") for f in c) for c in found), summary
    assert any(any("ffi_call" in f[1] for f in c) for c in found), summary


def test_a_c_extension_from_pypi(tmp_path):
    # ujson (C and C++) is installed in every test venv by scripts/test.
    run = run_native(tmp_path, "encode_json")
    view = run.view
    caller = ("encode_json", line("ujson"))
    encoding = select(view, lambda s: contains(s, [caller]), "MainThread")
    summary = stack_summary(view)
    assert encoding, summary
    # ujson's exported encoder runs under the Python call, and its C++
    # float formatting shows demangled.
    assert any("JSON_EncodeObject" in natives(s) for s in encoding), summary
    names = {n for s in encoding for n in natives(s)}
    assert any(n.startswith("double_conversion::") for n in names), sorted(names)
    assert not any(n.startswith("_Z") for n in names), sorted(names)


def test_threads_each_show_their_own_c_frames(tmp_path):
    run = run_native(tmp_path, "threads")
    view = run.view
    caller = ("compress_for", line("compress"))
    summary = stack_summary(view)
    for i in range(3):
        name = "compressor-%d" % i
        compressing = select(view, lambda s: contains(s, [caller]), name)
        assert compressing, (name, summary)
        # zlib's deflate (the system libz) under the Python call.
        assert any(any(n.startswith("deflate") for n in natives(s)) for s in compressing), (name, summary)
        assert sum(s["time"] for s in compressing) >= 0.5e6, (name, summary)


def test_a_thread_that_blocks_the_signal_is_sampled_without_native_frames(tmp_path):
    run = run_native(tmp_path, "blocks_signals")
    view = run.view
    md = view["metadata"]
    summary = stack_summary(view)
    deaf = select(view, lambda s: contains(s, [(scope("blocks_signals.<locals>.deaf"), line("deaf"))]), "deaf")
    # Sampled all along, with its Python frames only; the main thread, which
    # takes the signal, with its C frames.
    assert sum(s["time"] for s in deaf) >= 0.7e6, summary
    assert not any(natives(s) for s in deaf), summary
    main = select(view, lambda s: contains(s, [("compress_for", line("compress"))]), "MainThread")
    assert any(any(n.startswith("deflate") for n in natives(s)) for s in main), summary
    # Counted: one capture timed out, then the signal was still pending.
    assert int(md.get("native_timeouts", 0)) >= 1, md
    assert int(md.get("native_blocked", 0)) >= 100, md
    # One signal pending on it at most, never a queue of them.
    assert int(md["native_timeouts"]) <= 1 + int(md["ticks"]) // 64, md


def test_captures_leave_a_thread_at_least_half_its_time(tmp_path):
    # At 10 µs every capture (the signal, the copy of the stack, the
    # sampler reading the Python frames while the thread waits) takes
    # longer than the interval: back to back, they held the thread nearly
    # all the time (at 100 µs on an idle machine it ran at 6 % of its
    # speed; the soak's pool, on a busy one, never got to its end). Each
    # thread now runs free after a capture for as long as it was held.
    plain = run_plain(tmp_path, TARGET, args=["count_for"])
    assert plain.returncode == 0, plain.describe()
    # (A megabyte of native stacks: read by ours only, see run_echion.)
    run = run_native(tmp_path, "count_for", "-i", "10us", independent_readers=False)
    md = run.view["metadata"]
    duration = int(md["duration"])
    assert int(md["native_held"]) <= 0.55 * duration, md
    assert int(md.get("native_rested", 0)) > 0, md
    # What that means for the program: it keeps (well over) a fifth of its
    # speed.
    assert run.result["iterations"] >= 0.2 * plain.result["iterations"], (run.result, plain.result, md)
    main = select(run.view, lambda s: contains(s, [("count_for", line("count"))]), "MainThread")
    assert any(natives(s) for s in main), stack_summary(run.view)


def test_a_program_with_its_own_sigprof_timer_works_unchanged(tmp_path):
    run = run_native(tmp_path, "own_sigprof", "-c")
    result = run.result
    # ITIMER_PROF fires every 10 ms of the process's CPU time: the program's
    # own handler got its ticks (our signal is another one).
    assert result["ticks"] >= 0.5 * result["cpu"] / 0.01, result
    view = run.view
    outer, inner = ("sort_with_key", line("sorted")), "key"
    assert any(between(s, outer, inner) for s in samples_of(view, "MainThread")), stack_summary(view)


def test_native_frames_of_the_task_on_the_cpu(tmp_path):
    run = run_native(tmp_path, "on_cpu_task")
    view = run.view
    summary = stack_summary(view, top=20)
    crunch = scope("on_cpu_task.<locals>.crunch")
    crunching = select(view, lambda s: contains(s, ["cruncher", (crunch, line("task_compress"))]), "MainThread")
    assert crunching, summary
    # The task on the CPU: its name, its coroutine, then the C code it runs.
    assert any(any(n.startswith("deflate") for n in natives(s)) and is_native(s["frames"][-1]) for s in crunching), summary
    # The waiting task: its name and its coroutine at its await, nothing
    # under it (but for the moments it runs: starting, ending).
    waiter = scope("on_cpu_task.<locals>.waiter")
    waiting = select(view, lambda s: contains(s, ["waiter", (waiter, line("task_wait"))]), "MainThread")
    assert waiting, summary
    at_await = sum(s["time"] for s in waiting if not is_native(s["frames"][-1]))
    assert at_await >= 0.9 * sum(s["time"] for s in waiting), summary
    # Every native frame is named: the map is read again when a library
    # loaded later (zlib's) shows up.
    unknown = sum(s["time"] for s in view["samples"] if "<unknown>" in natives(s))
    assert unknown <= 0.02 * sum(s["time"] for s in view["samples"]), summary


def test_echion_core_samples_native_stacks_in_process(tmp_path):
    # echion 0.3's functions (set_native, start_async, stop) from the
    # program itself, without the echion command.
    out = tmp_path / "core.mojo"
    code = (
        "import echion.core as ec, zlib, time\n"
        f"ec.set_native(True); ec.set_output({str(out)!r}); ec.start_async()\n"
        "data = bytes(range(256)) * 4096\n"
        "end = time.monotonic() + 0.5\n"
        "while time.monotonic() < end:\n"
        "    zlib.compress(data, 9)\n"
        "ec.stop()\n"
        "print('done')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == b"done", p.stderr.decode()
    prof = read_all(out)
    assert_readers_agree(prof)
    view = prof.ours
    assert int(view["metadata"]["native_captures"]) > 0, view["metadata"]
    compressing = [s for s in view["samples"] if any(n.startswith("deflate") for n in natives(s))]
    assert sum(s["time"] for s in compressing) >= 0.2e6, stack_summary(view)
