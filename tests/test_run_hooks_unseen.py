"""What echion's hooks in the program (threading, asyncio, SIGQUIT, the
sampler's own thread) must not change: each scenario of ``unseen.py`` has
the output, errors and exit status it has without echion."""

import signal
import subprocess
import sys

import pytest

from harness import SAMPLER_THREAD, echion_cmd, echion_env, read_ours, run_echion, run_plain, target, threads

# Outputs and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

TARGET = target("unseen.py")


def same_as_plain(tmp_path, scenario, *echion_args, env=None, expect_profile=True):
    (tmp_path / "plain").mkdir()
    plain = run_plain(tmp_path / "plain", TARGET, args=[scenario], env=env, timeout=30)
    profiled = run_echion(tmp_path, TARGET, *echion_args, args=[scenario], env=env, timeout=30, expect_profile=expect_profile)
    assert profiled.returncode == plain.returncode, profiled.describe()
    assert profiled.stdout.decode() == plain.stdout.decode(), profiled.describe()
    assert profiled.stderr.decode() == plain.stderr.decode(), profiled.describe()
    return plain, profiled


def test_the_sampler_thread_is_not_one_of_the_programs_threads(tmp_path):
    # echion 0.3's sampler is a `threading` thread, and a program that joins
    # every thread but the main one waited for it for ever.
    plain, profiled = same_as_plain(tmp_path, "threads")
    assert "count 2 ['MainThread', 'worker']" in plain.stdout.decode(), plain.describe()
    assert "all joined" in plain.stdout.decode(), plain.describe()
    # The profile still names it as echion 0.3's does.
    assert SAMPLER_THREAD in threads(profiled.view), sorted(threads(profiled.view))


@pytest.mark.parametrize("optimize", ["", "1"], ids=["asserts", "-O"])
def test_thread_names_of_any_kind_never_raise_in_the_program(tmp_path, optimize):
    # A hook that raised did so inside `Thread.start` (whose caller then
    # waited for ever), or in the program's rename.
    plain, profiled = same_as_plain(tmp_path, "names", env={"PYTHONOPTIMIZE": optimize})
    assert plain.stdout.decode().endswith("done\n"), plain.describe()
    names = threads(profiled.view)
    # Named as the program named them: a lone surrogate replaced, and
    # what is not a string as `str()` gives it.
    assert "x\ufffd" in names and "42" in names and "renamed-\ufffd" in names, sorted(names)


def test_asyncio_hooks_start_nothing_early_and_read_as_the_originals(tmp_path):
    plain, _ = same_as_plain(tmp_path, "asyncio")
    out = plain.stdout.decode()
    # (The order is the check: nothing starts before `main` awaits it.)
    assert out.index("main awaits now") < out.index("child wait_for starts"), out
    assert "child dropped starts" not in out and "never awaited" in plain.stderr.decode(), plain.describe()


def test_greenlet_names_of_any_kind_never_raise_in_the_program(tmp_path):
    # Raised in gevent's trace function, it ended the program's event loop.
    plain, _ = same_as_plain(tmp_path, "gevent")
    assert plain.stdout.decode() == "[0, 1, 2]\n1\n", plain.describe()


@pytest.mark.parametrize("mode", [(), ("--no-thread",), ("-s",)], ids=["sampler-thread", "no-thread", "stealth"])
def test_echion_imports_nothing_into_the_program_but_itself(tmp_path, mode):
    # Every module imported is start-up time and memory that each fork of
    # the program copies (importlib, importlib.machinery, warnings and
    # types were: a fork loop's rate; `threading`, for a sampler thread of
    # its own, was a third of an empty script's start-up, and its after-fork
    # hook runs in every child). In a venv of its own, whose site-packages
    # has no `.pth` file that imports them first.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    command = [str(venv / "bin" / "python"), str(target("modules.py"))]
    plain = subprocess.run(command, capture_output=True, timeout=30, env=echion_env(None))
    profiled = subprocess.run(echion_cmd(tmp_path, *mode) + command, capture_output=True, timeout=30, env=echion_env(None))
    assert plain.returncode == 0 and "'os'" in plain.stdout.decode(), plain
    assert profiled.returncode == 0 and not profiled.stderr, profiled
    assert profiled.stdout.decode() == plain.stdout.decode()
    profiles = sorted(tmp_path.glob("profile*.mojo"))
    assert profiles, sorted(tmp_path.iterdir())
    # Sampled all the same, with no thread but the program's (a sampler
    # thread's first tick comes before the program's first line; without
    # one, at the end of the first interval, which a short program may not
    # reach).
    view = read_ours(profiles[0])
    seen = {s["thread"] for s in view["samples"]}
    assert seen <= {"MainThread"} if mode == ("--no-thread",) else seen == {"MainThread"}, view["metadata"]


def test_sigquit_once_sampling_is_over_has_its_default_action(tmp_path):
    # Under echion Ctrl-\ prints the stacks (as in echion 0.3); once an
    # exposure (-x) has ended, nothing would print them.
    plain, profiled = same_as_plain(tmp_path, "sigquit", "-x", "0.2", expect_profile=None)
    assert plain.returncode == -signal.SIGQUIT, plain.describe()
