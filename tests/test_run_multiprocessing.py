"""multiprocessing with fork and with spawn: every child process writes a
profile of its own (``%(pid)`` in the output path), valid for every reader,
with its own samples only."""

import pytest

from harness import PY, contains, marker_line, read_ours, run_echion, samples_of, select, stack_summary, target, threads, total

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

TARGET = target("mp.py")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_each_child_writes_its_own_profile(tmp_path, method):
    # run_echion reads every profile written and checks that all readers
    # agree on each: that is the "valid" part.
    run = run_echion(tmp_path, TARGET, args=[method], timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    assert got["exitcodes"] == [0, 0], run.describe()
    parent, children = got["parent"], {int(pid): took for pid, took in got["children"].items()}
    assert run.pid == parent
    assert set(children) <= set(run.profiles), f"profiles for {sorted(run.profiles)}, children {sorted(children)}; {run.describe()}"

    line = marker_line(TARGET, "child-sleep")
    for pid, p in run.profiles.items():
        view = p.ours
        role = "child" if pid in children else "parent" if pid == parent else "another process"
        assert view["samples"], f"empty profile of {pid} ({role}): metadata {view['metadata']}; {run.describe()}"
        assert {s["pid"] for s in view["samples"]} == {pid}, f"profile of {pid} has samples of {sorted({s['pid'] for s in view['samples']})}"
        assert view["metadata"]["sampler"] == "echion"
        working = total(select(view, lambda s: contains(s, [("child_work", line)])))
        if pid in children:
            # The child was sampled while it worked (its sampler starts
            # anew in the child).
            assert working >= 0.5 * children[pid] * 1e6, f"child {pid} in child_work: {working} µs of {children[pid] * 1e6:.0f}\n{stack_summary(view)}"
            if method == "spawn":
                # A spawned child ends through interpreter shutdown (a forked
                # one through os._exit, which runs nothing): it closes its
                # profile with the closing metadata.
                assert "duration" in view["metadata"], f"child {pid}'s profile was not closed: {view['metadata']}"
        else:
            # The parent (and multiprocessing's helpers) never ran it.
            assert working == 0, f"{pid} is no child but has child_work:\n{stack_summary(view)}"


def test_children_that_leave_at_once_leave_readable_profiles_or_none(tmp_path):
    # A forked child goes on at once (a fork's cost) and its profile is
    # made on disk at its first flush (10 ms) or its end: one that leaves by
    # os._exit before then leaves no file (making one costs more than the
    # fork), never an empty or unreadable one (18 of 309 such children left
    # an empty file when the child made it on its sampler thread).
    run = run_echion(tmp_path, target("fork_exit.py"), expect_profile=None, timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    for path in tmp_path.glob("*.mojo"):
        assert path.stat().st_size > 0, f"empty profile {path.name}"
        assert read_ours(path)["metadata"]["mode"] == "wall", path.name
    for pid in got["lived"]:
        # Past its first flush: what it did until then is on disk.
        path = tmp_path / ("profile.%d.mojo" % pid)
        assert path.exists(), f"no profile for child {pid}, which lived 250 ms"
        assert read_ours(path)["samples"], f"no sample from child {pid}, which lived 250 ms"
    for pid in got["exited"]:
        # Through the interpreter's exit: the profile is made and closed.
        path = tmp_path / ("profile.%d.mojo" % pid)
        assert path.exists(), f"no profile for child {pid}, which left by sys.exit"
        assert "duration" in read_ours(path)["metadata"], f"child {pid}'s profile was not closed"
    made = sum((tmp_path / ("profile.%d.mojo" % pid)).exists() for pid in got["instant"])
    assert made < 10, f"{made} of 100 children that left at once made a file"

@pytest.mark.parametrize("no_thread", [False, True], ids=["thread", "no-thread"])
@pytest.mark.parametrize("imported", ["plain", "asyncio"])
def test_a_forked_child_restarts_the_sampler_without_python(tmp_path, imported, no_thread):
    # A child pays for every page it writes to (each is the parent's until
    # then): the sampler restarts in native code, which runs no Python and
    # touches no object of the program's. Where asyncio's hooks are in, the
    # bootstrap's Python hook tells the new sampler about asyncio. With no
    # thread, the main thread's child puts its start off in the fork itself
    # (`pthread_atfork`), the forker's goes through the Python hook that
    # the program's threads made needed.
    options = ["--no-thread"] if no_thread else []
    run = run_echion(tmp_path, target("fork_native.py"), *options, args=[imported], timeout=120)
    assert run.returncode == 0, run.describe()
    line = marker_line(target("fork_native.py"), "child-work")
    for thread, got in (("MainThread", run.result["main"]), ("forker", run.result["forker"])):
        child = got["child"]
        if imported == "plain":
            assert got["ran"] == [], f"echion's Python code ran in the child of {thread}: {got['ran']}"
        else:
            assert "_after_fork_in_child" in got["ran"], got["ran"]
        # Subinterpreters of the child know the process is profiled (and
        # start no sampler of their own): 3.9 and later read the C
        # environment, 3.8 shares the main interpreter's os.environ.
        # (Ten digits, zero-padded: a child's go over its parent's in place.)
        assert got["env"] == got["os_environ"] == "%010d" % child, got
        # The filter that hid the fork warning (3.12+, a fork with no
        # thread but echion's) is the parent's: not left in the child once
        # its sampler started (a start put off in the fork takes it out).
        assert got["filters"] == 0, got
        assert child in run.profiles, f"no profile for child {child}; {run.describe()}"
        view = run.profiles[child].ours
        # The forking thread keeps its name in the child.
        working = total(select(view, lambda s: contains(s, [("child_work", line)]), thread=thread))
        assert working >= 0.15e6, f"child of {thread} in child_work: {working} µs\n{stack_summary(view)}"


def _started_later(run, said, own=False):
    """What fork_later.py's child or grandchild (``said``) shows of a
    sampler started an interval (100 ms) after its fork, counting from it."""
    assert said["then"] == 2, said  # the program's thread and the sampler
    if own and PY < (3, 9):
        # 3.8 puts the start off with SIGURG, which this program handles:
        # started at the fork (a helper thread of its start may be there
        # for a moment too). Later versions put it off in the fork, with a
        # real-time signal of echion's.
        assert said["first"] >= 2, said
    else:
        assert said["first"] == 1, said
    assert said["calls"] == 0, said
    # The signal is given back (or was never taken).
    assert said["default"] is (not own), said
    pid = said["pid"]
    assert pid in run.profiles, f"no profile for {pid}; {run.describe()}"
    view = run.profiles[pid].ours
    assert threads(view) == {"MainThread"}, stack_summary(view)
    working = total(select(view, lambda s: contains(s, ["child_work"])))
    if view["metadata"]["mode"] == "cpu":
        # The first sample holds the CPU time since the fork (the thread's
        # clock started there): the profile has all of it (the child's
        # last 250 ms sleep). From the first tick, it would miss the
        # first 100 ms of child_work's CPU time.
        cpu = said["cpu"] * 1e6
        assert 0.97 * cpu - 0.02e6 <= total(samples_of(view, "MainThread")) <= 1.03 * cpu + 0.01e6, (said, stack_summary(view))
    else:
        assert working >= 0.3e6, f"{pid}: child_work: {working} µs\n{stack_summary(view)}"
    duration = int(view["metadata"]["duration"])
    ended = said["ended"] * 1e6
    assert duration <= 1.05 * ended + 0.05e6, (said, view["metadata"])
    if not own:
        # From the fork to the end (100 ms shorter from the start).
        assert duration >= 0.97 * ended, (said, view["metadata"])
    return view


@pytest.mark.parametrize("mode", ["wall", "cpu", "own", "nested"])
def test_a_forked_child_starts_its_sampler_an_interval_after_the_fork(tmp_path, mode):
    # A thread started in a child costs it about as much as the fork: its
    # sampler starts an interval (here 100 ms) after the fork, called by
    # CPython from a signal's handler, and its profile counts from the
    # fork, in wall and CPU mode. Where the program handles SIGURG itself
    # (the signal 3.8 puts the start off with), echion never calls its
    # handler, and on 3.8 the sampler starts at the fork. A child that
    # forks before its sampler started gives its grandchild its thread's
    # name and a start put off in turn.
    args = ["-c"] if mode == "cpu" else []
    run = run_echion(tmp_path, target("fork_later.py"), "-i", "100000", *args, args=[mode], timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    view = _started_later(run, got, own=mode == "own")
    if mode == "wall":
        # Wall time: the whole of it, but the samples after the last tick
        # (up to an interval).
        assert got["ended"] * 1e6 - 0.21e6 <= total(samples_of(view, "MainThread")), (got, stack_summary(view))
    if mode == "nested":
        _started_later(run, got["grandchild"])


@pytest.mark.parametrize("no_thread", [False, True], ids=["thread", "no-thread"])
def test_a_forked_child_that_blocks_at_once_is_sampled_while_it_blocks(tmp_path, no_thread):
    # A child's put-off start comes as a signal that CPython notes and runs
    # its handler for at the next safe point. The child here computes in one
    # C call when it comes, then sleeps with no safe point between: the
    # noted signal interrupts nothing, and a start that waited for it would
    # miss the whole sleep (as a child that blocks in `recv` would miss its
    # wait). The signal comes again until the start takes it.
    options = ["--no-thread"] if no_thread else []
    script = target("fork_blocked.py")
    run = run_echion(tmp_path, script, *options, timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    assert got["took"] >= got["sleep"], got
    child = got["child"]
    assert child in run.profiles, f"no profile for child {child}; {run.describe()}"
    view = run.profiles[child].ours
    blocked = select(view, lambda s: contains(s, [("child", marker_line(script, "blocked"))]))
    # The first sample counts from the fork: without it, what the child's
    # sampler saw of the sleep.
    seen = total(blocked) - max((s["time"] or 0 for s in blocked), default=0)
    assert seen >= 0.6 * got["sleep"] * 1e6, f"{seen} µs of the {got['sleep']} s sleep seen after the first sample\n{stack_summary(view)}"
    after = total(select(view, lambda s: contains(s, [("child", marker_line(script, "after"))])))
    assert after >= 0.1e6, f"{after} µs of the child's 0.2 s after its sleep\n{stack_summary(view)}"


def test_a_thread_on_the_stack_of_the_parents_sampler_forks_a_working_child(tmp_path):
    # The sampler thread's stack below its run's frame is one a forked child
    # gets empty (the ticks after a fork then copy none of its pages). The
    # child has not that thread, but its C library may give the stack to a
    # thread of the child's, which may fork: that grandchild must get a
    # copy, not zeroes (it would crash at its first return).
    run = run_echion(tmp_path, target("fork_stack_reuse.py"), expect_profile=None, timeout=120)
    assert run.returncode == 0, run.describe()
    assert run.result["children"] == [0] * 6, f"child statuses {run.result['children']}; {run.describe()}"


@pytest.mark.parametrize("mode", ["wall", "cpu", "memory"])
def test_the_sampler_thread_keeps_its_run_where_a_fork_copies_nothing(tmp_path, mode):
    # In wall and CPU mode the run's data and the sampler thread's stack
    # below the run's frame are memory a forked child gets empty, so the
    # ticks after a fork copy none of it; memory mode's hooks keep what they
    # make for the process, so its run stays where it was.
    options = {"wall": [], "cpu": ["-c"], "memory": ["-m"]}[mode]
    run = run_echion(tmp_path, target("sampler_apart.py"), *options, expect_profile=None, timeout=60)
    assert run.returncode == 0, run.describe()
    got = run.result
    assert got["sampler"], f"no echion-sampler thread; {run.describe()}"
    apart = mode != "memory"
    assert got["sp_wiped"] == apart, got
    assert got["region_used"] == apart, got


def test_the_sampler_threads_ticks_after_a_fork_take_no_page_fault(tmp_path):
    # A fork makes the parent's private pages copy-on-write, and the next
    # write to each is a page fault (on a virtual machine, dear). The
    # sampler thread's ticks write only memory a fork leaves alone: its
    # run's data and stack below it, the flag of a tick under way; not the
    # restartable-sequence area the kernel writes in its thread's own data
    # at each wake-up (which the thread leaves), nor `errno` (its naps'
    # futex calls are its own). Before, its ticks took two faults per fork.
    # What is left (wall mode): the C library's note of a write to the
    # profile (every 10 ms), in the thread's own data, a fault per fork
    # between two flushes. (CPU mode reads /proc for some threads' state,
    # which the C library notes the same way.)
    run = run_echion(tmp_path, target("fork_faults.py"), args=["200"], expect_profile=None, timeout=120)
    assert run.returncode == 0, run.describe()
    got = run.result
    assert got["faults"] is not None, f"no echion-sampler thread; {run.describe()}"
    # (Flushes: one every 10 ms of the loop, half as many again for a slow
    # machine's; and a fork in four. Before, two a fork.)
    flushes = got["seconds"] * 100
    assert got["faults"] < 1.5 * flushes + got["forks"] / 4, got
