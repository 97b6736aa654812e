"""The bootstrap: exposure, the user's own sitecustomize, a clean sys.path,
and the native module's contract for features of later releases."""

import subprocess
import sys

import pytest

from harness import run_echion, samples_of, target, total


def test_exposure_stops_sampling_but_not_the_program(tmp_path):
    run = run_echion(tmp_path, target("bootstrap_probe.py"), "-x", "0.3", env={"PROBE_SECONDS": "1.0"})
    assert run.returncode == 0, run.describe()
    assert run.stdout.decode().strip() == "probe done"
    assert run.result["elapsed"] >= 1.0
    view = run.view
    duration_us = int(view["metadata"]["duration"])
    assert 0.25e6 <= duration_us <= 0.5e6, duration_us
    main_time = total(samples_of(view, "MainThread"))
    assert 0.2e6 <= main_time <= 0.5e6, main_time


def test_users_sitecustomize_still_runs_and_sys_path_is_clean(tmp_path):
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("USER_MARKER = 'user sitecustomize ran'\n")
    run = run_echion(tmp_path, target("bootstrap_probe.py"), env={"PYTHONPATH": str(user)})
    assert run.returncode == 0, run.describe()
    assert run.result["marker"] == "user sitecustomize ran"
    assert run.result["bootstrap_on_path"] is False
    assert samples_of(run.view, "MainThread"), "no samples"


def core(code):
    return subprocess.run([sys.executable, "-c", "import echion.core as ec\n" + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize(
    "call, feature",
    [
        ("ec.set_where(True)", "where mode"),
        ("ec.set_pipe_name('x')", "where mode"),
    ],
)
def test_later_features_raise_not_implemented_naming_them(call, feature):
    out = core(f"try:\n    {call}\nexcept NotImplementedError as e:\n    print(e)\nelse:\n    print('no error')")
    assert out.returncode == 0, out.stderr.decode()
    assert feature in out.stdout.decode(), out.stdout.decode()


def test_asyncio_and_greenlet_functions_take_echion_03s_arguments():
    # What the hooks call, callable by hand as in echion 0.3; a wrong
    # argument is a TypeError naming it.
    out = core(
        "import asyncio.tasks as t\n"
        "ec.init_asyncio(t._current_tasks, getattr(t, '_scheduled_tasks', getattr(t, '_all_tasks', None)).data, getattr(t, '_eager_tasks', None))\n"
        "ec.track_asyncio_loop(1, None); ec.track_asyncio_loop(1, object())\n"
        "ec.link_tasks(None, object()); ec.link_tasks(object(), object())\n"
        "import sys\n"
        "ec.track_greenlet(1, 'g', sys._getframe()); ec.update_greenlet_frame(1, None); ec.update_greenlet_frame(1, False)\n"
        "ec.link_greenlets(2, 1); ec.untrack_greenlet(1)\n"
        "try:\n    ec.init_asyncio({}, [], None)\nexcept TypeError as e:\n    print('refused:', e)\n"
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "refused: init_asyncio: scheduled_tasks must be a set, not list\n", out.stdout


def test_switching_later_features_off_is_fine_and_bad_settings_are_refused():
    out = core(
        "ec.set_memory(False); ec.set_native(False); ec.set_where(False); ec.set_cpu(True); ec.set_interval(250)\n"
        "for bad in (lambda: ec.set_interval(0), lambda: ec.set_interval(-3), lambda: ec.set_exposure(-1.0)):\n"
        "    try:\n        bad()\n    except ValueError as e:\n        print('refused:', e)\n"
        "print(ec.__version__)"
    )
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    assert [line.startswith("refused:") for line in lines[:3]] == [True] * 3, lines
    assert lines[3].count(".") == 2, lines


def test_start_in_a_thread_then_stop_and_exit(tmp_path):
    # echion 0.3's way from Python: `start()` in a thread of the program's,
    # `stop()`, exit. The thread takes the GIL back on its way out of
    # `start`: had the interpreter begun finalising by then, that would end
    # it by pthread_exit through echion's frames (a crash in 40 % of the
    # runs before `stop` waited for it).
    code = (
        "import sys, threading\n"
        "import echion.core as ec\n"
        "ec.set_output(sys.argv[1])\n"
        "threading.Thread(target=ec.start, daemon=True).start()\n"
        "ec.wait_started(1.0)\n"
        "ec.stop()\n"
        "print('ok')\n"
    )
    failed = []
    for i in range(20):
        out = str(tmp_path / ("p.%d.mojo" % i))
        p = subprocess.run([sys.executable, "-c", code, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0 or p.stdout.strip() != b"ok":
            failed.append((p.returncode, p.stderr.decode()[-500:]))
    assert not failed, f"{len(failed)} of 20 runs failed: {failed[:2]}"
    assert len(list(tmp_path.glob("p.*.mojo"))) == 20
