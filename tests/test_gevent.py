"""gevent through the real ``echion`` command: each greenlet gets its own
stack (echion's ``tests/test_gevent.py`` shapes), the greenlets that wait on
it above it; the program runs as without echion."""

from harness import contains, marker_line, run_echion, run_plain, scope, select, stack_summary, target, total

GREEN = target("green.py")


def line(name):
    return marker_line(GREEN, name)


def with_stack(view, frames):
    return select(view, lambda s: contains(s, frames), "MainThread")


def test_each_greenlet_has_its_stack(tmp_path):
    r = run_echion(tmp_path, GREEN)
    assert r.returncode == 0, r.describe()
    # Nothing of echion's shows on the program's streams.
    assert r.stderr == b"", r.describe()
    view = r.view
    ctx = stack_summary(view)
    # The greenlet names are frames with line 0, then the greenlet's frames.
    for frames, at_least in (
        ((("Greenlet-1", 0), ("f2", line("f2"))), 0.8e6),
        ((("Greenlet-0", 0), ("f3", line("f3-sleep"))), 0.3e6),
        ((("Greenlet-0", 0), ("f3", line("f3-join")), scope("Greenlet.join"), ("Greenlet-2", 0), ("f1", line("f1"))), 0.3e6),
    ):
        found = with_stack(view, frames)
        assert total(found) >= at_least, f"{frames}: {total(found)} µs\n{ctx}"
    # The main greenlet waits in joinall on each of them.
    waiting = ("<module>", "main", "joinall", "Greenlet-1", "f2")
    assert with_stack(view, waiting), ctx
    # The hub runs its loop between switches.
    assert with_stack(view, ("Hub", scope("Hub.run"))), ctx


def test_program_output_unchanged(tmp_path):
    plain = run_plain(tmp_path, GREEN)
    profiled = run_echion(tmp_path, GREEN)
    assert plain.stdout == b"f1 done\nf3 done\nf2 done\njoined 2 True\n", plain.describe()
    assert (profiled.returncode, profiled.stdout, profiled.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    # joinall waited for both: the run is as long as without echion.
    assert profiled.elapsed >= 1.0, profiled.describe()
