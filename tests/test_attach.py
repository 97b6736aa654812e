"""Attach mode: ``echion -p PID`` profiles a process that is already
running, started by an interpreter that has no echion installed, and leaves
it as it found it. Every target checks from inside, after echion detached,
that nothing of echion is active (threads, allocator hooks, signal
handlers, the code type's deallocator, ``threading``'s patches, ``sys.path``
and ``sys.meta_path``, the environment), then exits with its own status."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import all_pythons, contains, echion_command, echion_env, mojo_tool, read_all, samples_of, scope, stack_summary, target, threads, total

TARGET = target("attach_target.py")
#: This interpreter without the venv: echion is not installed in it.
BASE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")
#: A test that weighs no share of samples or time (what a profile shows,
#: statuses, messages): it may run beside another (``parallel``). The
#: others (the attach's pause and first sample timed, the share of a
#: thread's time; gevent's loop, whose attach waits on a starved thread)
#: run one at a time.
shapes = pytest.mark.parallel
ATTACHED_RE = re.compile(r"attached to pid (\d+): stopped (\d+) us, first sample after (\d+) ms")


class Target:
    """attach_target.py in a plain interpreter."""

    count = 0

    def __init__(self, tmp_path, scenario, python=BASE_PYTHON, user=None, flags=(), prefix=()):
        Target.count += 1
        self.stopfile = Path(tmp_path) / ("stop-%s-%d" % (scenario, Target.count))
        cmd = [*prefix, python, *flags, str(TARGET), scenario, str(self.stopfile)]
        if user:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(tmp_path),
            env=echion_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("ready"), "target said %r; stderr %r" % (line, self.proc.stderr.read()[-2000:])
        self.pid = int(line.split()[1])

    def finish(self, timeout=30):
        """Asks the target to end; returns its status and its report."""
        self.stopfile.touch()
        out, err = self.proc.communicate(timeout=timeout)
        report = json.loads(out.decode()) if out.strip() else None
        return self.proc.returncode, report, err.decode(errors="replace")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def targets():
    started = []
    yield started
    for t in started:
        t.kill()


def start(targets, tmp_path, scenario, **kw):
    t = Target(tmp_path, scenario, **kw)
    targets.append(t)
    return t


def attach(tmp_path, pid, *args, timeout=90, name="profile.mojo", env=None):
    out = Path(tmp_path) / name
    cmd = echion_command() + ["-o", str(out)] + [str(a) for a in args] + ["-p", str(pid)]
    run = subprocess.run(cmd, env=echion_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return run, out


def attach_in_background(tmp_path, pid, name="profile.mojo"):
    """``echion -p PID`` running until told otherwise, its stderr piped."""
    cmd = echion_command() + ["-o", str(Path(tmp_path) / name), "-p", str(pid)]
    return subprocess.Popen(cmd, env=echion_env(), stderr=subprocess.PIPE)


def assert_left_as_found(rc, report, err, page_may_stay=False):
    assert rc == 7, "target status %r, stderr %s" % (rc, err[-2000:])
    assert report is not None, err[-2000:]
    before, after = report["before"], report["after"]
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if page_may_stay:
        # A pending call still queued points into the injection's page.
        assert after["rwx_pages"] <= before["rwx_pages"] + 1, changed
        changed.pop("rwx_pages", None)
    assert not changed, "echion left this behind: %r" % changed
    assert not report["echion_started"]
    # The target's own output only: nothing of echion on its stderr.
    assert "echion" not in err, err[-2000:]


def attached_line(stderr):
    m = ATTACHED_RE.search(stderr)
    assert m, stderr
    return int(m.group(2)), int(m.group(3))


# --- what a user gets -----------------------------------------------------------


@pytest.mark.parametrize(
    "scenario, thread, frames",
    [
        ("busy", "MainThread", ["<module>", "spin"]),
        ("sleep_worker", "worker", ["worker", "spin"]),
        ("event", "MainThread", ["<module>", scope("Event.wait"), scope("Condition.wait")]),
        ("socket", "MainThread", ["<module>"]),
        ("asyncio_idle", "MainThread", []),
    ],
)
def test_attach_profiles_and_detaches(tmp_path, targets, scenario, thread, frames):
    t = start(targets, tmp_path, scenario)
    run, out = attach(tmp_path, t.pid, "-x", "1")
    stderr = run.stderr.decode()
    assert run.returncode == 0, stderr
    stopped_us, first_ms = attached_line(stderr)
    # The process is stopped only while the injection decides and maps its
    # page; the profile starts within a second or two on a busy machine.
    assert stopped_us < 50_000, stderr
    assert first_ms < 2_000, stderr
    assert "detached from pid %d" % t.pid in stderr
    assert_left_as_found(*t.finish())
    p = read_all(out)
    view = p.ours
    assert thread in threads(view), stack_summary(view)
    found = [s for s in samples_of(view, thread) if contains(s, frames)]
    assert found, stack_summary(view, thread)
    if scenario == "sleep_worker":
        # The main thread sleeps in time.sleep at the module's top level
        # (the attach's own bootstrap, run there, may be in a first sample).
        main = samples_of(view, "MainThread")
        asleep = [s for s in main if [f[1] for f in s["frames"]] == ["<module>"]]
        assert total(asleep) >= 0.98 * total(main) > 0, stack_summary(view, "MainThread")
    for name, other in p.readers():
        assert len(other["samples"]) == len(view["samples"]), name


@shapes
def test_an_attach_to_a_program_in_development_mode_leaves_no_warning(tmp_path, targets):
    # `python -X dev` shows every ResourceWarning: the attach's own code,
    # run in the program, must leave no file open for the collector.
    t = start(targets, tmp_path, "busy", flags=("-X", "dev"))
    run, out = attach(tmp_path, t.pid, "-x", "1")
    assert run.returncode == 0, run.stderr.decode()
    rc, report, err = t.finish()
    assert "ResourceWarning" not in err, err[-2000:]
    assert_left_as_found(rc, report, err)
    assert read_all(out).ours["samples"]


@shapes
@pytest.mark.parametrize("mode", ["-c", "-m", "-n", "-s"])
def test_attach_in_every_mode(tmp_path, targets, mode):
    t = start(targets, tmp_path, "busy")
    run, out = attach(tmp_path, t.pid, mode, "-x", "1")
    assert run.returncode == 0, run.stderr.decode()
    assert_left_as_found(*t.finish())
    p = read_all(out)
    view = p.ours
    metadata = view["metadata"]
    spin = [s for s in samples_of(view, "MainThread") if contains(s, ["spin"])]
    assert spin, stack_summary(view)
    if mode == "-c":
        assert metadata["mode"] == "cpu"
    elif mode == "-m":
        assert metadata["mode"] == "memory"
        allocs = [s for s in samples_of(view, "MainThread") if contains(s, ["allocate"])]
        assert allocs, stack_summary(view)
    elif mode == "-n":
        assert int(metadata["native_captures"]) > 0, metadata
        raw = subprocess.run(
            [str(mojo_tool()), "dump", str(out)],
            stdout=subprocess.PIPE,
            check=True,
        )
        samples = json.loads(raw.stdout)["samples"]
        natives = [f for s in samples if s["thread"] == "MainThread" for f in s["frames"] if f["filename"].startswith("native@")]
        assert any(f["scope"].startswith("_PyEval_EvalFrame") or f["scope"] == "PyEval_EvalCode" for f in natives), natives[:20]
    elif mode == "-s":
        assert "echion.core.sampler" not in threads(view)


@shapes
def test_ten_attach_and_detach_cycles(tmp_path, targets):
    t = start(targets, tmp_path, "busy")
    for i in range(10):
        run, out = attach(tmp_path, t.pid, "-x", "0.3", name="cycle%d.mojo" % i)
        assert run.returncode == 0, (i, run.stderr.decode())
        view = read_all(out, austin1=False).ours
        assert any(contains(s, ["spin"]) for s in samples_of(view, "MainThread")), (i, stack_summary(view))
    assert_left_as_found(*t.finish())


@shapes
def test_ctrl_c_on_echion_detaches(tmp_path, targets):
    t = start(targets, tmp_path, "sleep_worker")
    out = tmp_path / "profile.mojo"
    proc = attach_in_background(tmp_path, t.pid)
    line = proc.stderr.readline().decode()
    assert "until Ctrl-C" in line, line
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 0, rest
    assert "detached from pid %d" % t.pid in rest
    assert_left_as_found(*t.finish())
    assert "worker" in threads(read_all(out).ours)


@shapes
def test_the_target_exiting_ends_the_profile(tmp_path, targets):
    t = start(targets, tmp_path, "busy")
    out = tmp_path / "profile.mojo"
    proc = attach_in_background(tmp_path, t.pid)
    assert "attached to pid" in proc.stderr.readline().decode()
    time.sleep(0.3)
    rc, report, err = t.finish()
    assert rc == 7, err
    rest = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 0, rest
    assert "pid %d exited" % t.pid in rest
    view = read_all(out).ours
    assert any(contains(s, ["spin"]) for s in samples_of(view, "MainThread")), stack_summary(view)


@shapes
def test_a_program_that_exits_as_it_is_attached_to(tmp_path, targets):
    # Its exit stops echion before the attach thread has said that the
    # sampler started: that is the end of the attach, not a failure to
    # start ("the sampler did not start" before, seen in the soak).
    t = start(targets, tmp_path, "exit_on_attach")
    run, out = attach(tmp_path, t.pid)
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert "pid %d exited" % t.pid in err, err
    out_t, err_t = t.proc.communicate(timeout=30)
    assert t.proc.returncode == 7, err_t.decode()[-2000:]
    assert b"echion" not in err_t, err_t.decode()[-2000:]
    view = read_all(out, austin1=False).ours
    assert "duration" in view["metadata"], view["metadata"]


def attach_again_and_again(tmp_path, targets, scenario, times, exposure):
    """Attaches `times` times to a target of `scenario`: each attach starts,
    samples the main thread and leaves the program as it found it."""
    t = start(targets, tmp_path, scenario)
    for i in range(times):
        run, out = attach(tmp_path, t.pid, "-x", exposure, name="%s%d.mojo" % (scenario, i))
        assert run.returncode == 0, (i, run.stderr.decode())
        view = read_all(out, austin1=False).ours
        assert samples_of(view, "MainThread"), (i, stack_summary(view))
    assert_left_as_found(*t.finish())


@shapes
def test_a_thread_in_a_subinterpreter_is_borrowed_later(tmp_path, targets):
    # The main thread runs in a subinterpreter nearly all the time: echion's
    # start must not run there (the bootstrap says "later" and the command
    # borrows the thread again until it is back in the main interpreter).
    attach_again_and_again(tmp_path, targets, "subinterp", 3, "0.3")


@shapes
@pytest.mark.parametrize("module", ["os", "site", "posixpath"])
def test_an_attach_while_the_interpreter_starts_comes_back_later(tmp_path, module):
    # `echion -p` right after the program started borrowed it while `site`
    # imported `os` (the soak, 3.10): the bootstrap's `import os` found it
    # half made ("partially initialized module 'os' has no attribute
    # 'path'") and the attach failed. A module the bootstrap uses being
    # imported is no moment to start: the entry says "later".
    code = (
        "import sys, types, os\n"
        "half = types.ModuleType(%(name)r)\n"
        "half.__spec__ = types.SimpleNamespace(_initializing=True)\n"
        "sys.modules[%(name)r] = half\n"
        "import echion.bootstrap\n"
        "path = os.path.join(os.path.dirname(echion.bootstrap.__file__), 'attach_entry.py')\n"
        "ns = {'CONTROL': %(control)r, 'MAIN_MODULES': 0, '__name__': 'echion_attach'}\n"
        "exec(compile(open(path).read(), path, 'exec'), ns)\n"
    ) % {"name": module + "._half_made", "control": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], env=echion_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    status = (tmp_path / "status").read_text()
    assert status == "later: %s._half_made is being imported\n" % module, status


@shapes
def test_an_attach_while_the_main_thread_waits_for_an_import_comes_back_later(tmp_path, targets):
    # Borrowed inside importlib's wait for a module's lock (the soak, 3.10:
    # the program's own `import multiprocessing` then failed with a
    # KeyError): before 3.12 that wait keeps one entry per thread, which an
    # import of the bootstrap's there would take away. The entry says
    # "later" until the import is done, then the attach goes on.
    t = start(targets, tmp_path, "import_wait")
    run, out = attach(tmp_path, t.pid, "-x", "1")
    stderr = run.stderr.decode()
    assert run.returncode == 0, stderr
    assert "detached from pid %d" % t.pid in stderr
    assert_left_as_found(*t.finish())
    view = read_all(out).ours
    assert total(samples_of(view, "MainThread")) > 0, stack_summary(view)


@shapes
def test_subinterpreters_set_up_back_to_back(tmp_path, targets):
    # The main thread is mostly creating and destroying interpreters. A
    # pending call asked for there went to the subinterpreter's queue
    # (3.9 to 3.11: lost with it, 40 % of attaches found no safe point on
    # 3.9) or ran in an interpreter whose importlib was being set up (3.8,
    # 3.10: the program died, "failed to initialize importlib").
    attach_again_and_again(tmp_path, targets, "subinterp_churn", 6, "0.2")


def test_gevent_program_attached_twice(tmp_path, targets):
    # The second attach finds gevent's tracer of the first one's run gone
    # (not chained to itself: a RecursionError in the program before).
    t = start(targets, tmp_path, "gevent", python=sys.executable)
    for i in range(2):
        # At 1.3 ms: the greenlets wake every 1 ms or so, and a sampler
        # ticking at the same period can stay in phase with their sleeps.
        run, out = attach(tmp_path, t.pid, "-x", "0.5", "-i", "1300us", name="green%d.mojo" % i)
        assert run.returncode == 0, (i, run.stderr.decode())
        view = read_all(out, austin1=False).ours
        assert any(contains(s, ["green", "spin"]) for s in samples_of(view, "MainThread")), (i, stack_summary(view))
        # Each greenlet its own stack, the second time too (the greenlets
        # the first run had been told about are told about again).
        named = {f[1] for s in view["samples"] for f in s["frames"] if f[1].startswith("Greenlet-")}
        assert len(named) >= 2, (i, stack_summary(view))
    rc, report, err = t.finish()
    assert "RecursionError" not in err and "Traceback" not in err, err[-2000:]
    assert rc == 7, err[-2000:]


@shapes
def test_attach_to_every_other_version(tmp_path, targets):
    """One echion command serves every interpreter: attach to each version
    other than this one (the abi3 module and the package come from here)."""
    mine = "%d.%d" % sys.version_info[:2]
    others = [p for p in all_pythons() if "/%s." % mine not in p]
    assert len(others) == 5, others
    for python in others:
        t = start(targets, tmp_path, "busy", python=python)
        run, out = attach(tmp_path, t.pid, "-x", "0.5", name="other-%d.mojo" % t.pid)
        assert run.returncode == 0, (python, run.stderr.decode())
        assert_left_as_found(*t.finish())
        view = read_all(out, austin1=False).ours
        assert any(contains(s, ["spin"]) for s in samples_of(view, "MainThread")), (python, stack_summary(view))


@shapes
def test_run_mode_profiles_an_interpreter_without_echion(tmp_path):
    out = tmp_path / "run.mojo"
    stop = tmp_path / "stop-busy"
    proc = subprocess.Popen(
        echion_command() + ["-o", str(out), BASE_PYTHON, str(TARGET), "busy", str(stop)],
        env=echion_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith(b"ready")
    time.sleep(0.5)
    stop.touch()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 7, stderr.decode()
    assert b"not profiling" not in stderr
    view = read_all(out).ours
    assert any(contains(s, ["spin"]) for s in samples_of(view, "MainThread")), stack_summary(view)


# --- errors: one line, non-zero, the target untouched -----------------------------


def one_line_error(run, *fragments):
    err = run.stderr.decode()
    assert run.returncode != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@shapes
def test_no_such_process(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run, _ = attach(tmp_path, gone.pid)
    one_line_error(run, "cannot attach to pid %d" % gone.pid, "no process")


@shapes
def test_not_a_python_process(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    try:
        run, _ = attach(tmp_path, proc.pid)
        one_line_error(run, "does not look like CPython")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@shapes
def test_an_attach_before_the_program_is_python_waits_for_it(tmp_path):
    # `python app.py & echion -p $!` may look at the process between the
    # shell's fork and its exec of Python (and `subprocess.Popen` returns
    # before the new program is mapped: the soak's first attach once found
    # "no python-like files"). A young process is looked at again.
    stop = tmp_path / "stop"
    late = subprocess.Popen(
        ["sh", "-c", 'sleep 0.5; exec "$0" "$@"', BASE_PYTHON, str(TARGET), "busy", str(stop)],
        cwd=str(tmp_path),
        env=echion_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        run, out = attach(tmp_path, late.pid, "-x", "0.5")
        assert run.returncode == 0, run.stderr.decode()
        view = read_all(out, austin1=False).ours
        assert any(contains(s, ["spin"]) for s in samples_of(view, "MainThread")), stack_summary(view)
    finally:
        stop.touch()
        try:
            late.communicate(timeout=30)
        finally:
            if late.poll() is None:
                os.killpg(late.pid, signal.SIGKILL)
                late.wait()
    assert late.returncode == 7, late.returncode


@shapes
def test_no_permission_says_what_to_do(tmp_path, targets):
    system_python = "/usr/bin/python3"
    if not os.path.exists(system_python):
        pytest.fail("this machine has no /usr/bin/python3 to run a target as another user")
    t = start(targets, tmp_path, "busy", python=system_python, user=65534)
    cmd = ["capsh", "--drop=cap_sys_ptrace", "--"] + ["-c", " ".join(echion_command() + ["-p", str(t.pid)])]
    run = subprocess.run(cmd, env=echion_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    one_line_error(run, "not permitted", "CAP_SYS_PTRACE", "ptrace_scope")
    assert t.proc.poll() is None


@shapes
def test_a_process_already_profiled_by_echion(tmp_path, targets):
    t = start(targets, tmp_path, "busy")
    first = attach_in_background(tmp_path, t.pid, "first.mojo")
    assert "attached to pid" in first.stderr.readline().decode()
    run, _ = attach(tmp_path, t.pid, name="second.mojo")
    one_line_error(run, "already being profiled by echion")
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=30) == 0
    assert_left_as_found(*t.finish())


@shapes
def test_a_process_run_under_echion_is_already_profiled(tmp_path):
    stop = tmp_path / "stop-busy"
    proc = subprocess.Popen(
        echion_command() + ["-o", str(tmp_path / "run.mojo"), sys.executable, str(TARGET), "busy", str(stop)],
        env=echion_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        pid = int(proc.stdout.readline().split()[1])
        run, _ = attach(tmp_path, pid, name="attach.mojo")
        one_line_error(run, "already being profiled by echion")
    finally:
        stop.touch()
        proc.communicate(timeout=60)
    assert proc.returncode == 7


@shapes
def test_no_safe_point_leaves_nothing_behind(tmp_path, targets):
    """The main thread holds the GIL in C code for 6 s: echion says so after
    3 s, and suggests -w; what it asked for runs later as a no-op."""
    t = start(targets, tmp_path, "gil_in_c")
    run, _ = attach(tmp_path, t.pid)
    one_line_error(run, "no point where Python code can safely run", "echion -w %d" % t.pid)
    rc, report, err = t.finish()
    assert_left_as_found(rc, report, err, page_may_stay=True)
    assert not report["echion_loaded"]


@shapes
def test_an_attach_whose_echion_was_killed_before_it_ran_starts_nothing(tmp_path, targets):
    # The injection is queued while the program holds the GIL in C code
    # for 6 s; echion is killed (SIGKILL: nothing of it runs) before the
    # program runs it. The bootstrap then found the control directory and
    # a FIFO nobody had opened to write: no end of file would ever come,
    # and the program was profiled until it ended.
    t = start(targets, tmp_path, "gil_in_c")
    proc = attach_in_background(tmp_path, t.pid, "p.mojo")
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    rc, report, err = t.finish()
    assert_left_as_found(rc, report, err, page_may_stay=True)


@shapes
def test_the_target_exiting_during_the_attach(tmp_path, targets):
    t = start(targets, tmp_path, "gil_in_c")
    proc = attach_in_background(tmp_path, t.pid, "p.mojo")
    time.sleep(1.0)
    t.kill()
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == ["echion: cannot attach to pid %d: the process exited during the attach" % t.pid], err


@shapes
def test_a_finalizing_program_is_asked_nothing(tmp_path, targets):
    # The soak (3.12, 1 run in 40): an attach borrowed the main thread as
    # the interpreter was being deleted, and its pending call took a lock
    # that was no more: the program crashed (SIGSEGV) at its exit. A
    # program whose interpreter is finalizing is now asked nothing.
    t = start(targets, tmp_path, "finalizing")
    assert t.proc.stdout.readline() == b"finalizing\n"
    run, _ = attach(tmp_path, t.pid, "-x", "0.2")
    err = run.stderr.decode()
    assert run.returncode == 1, err
    assert err.strip().splitlines() == [
        "echion: cannot attach to pid %d: the process exited during the attach (its interpreter was "
        "already finalizing); nothing was left running in it" % t.pid
    ], err
    out_t, err_t = t.proc.communicate(timeout=30)
    assert t.proc.returncode == 0, err_t.decode()[-2000:]
    assert out_t == b"done\n", out_t
    assert b"echion" not in err_t, err_t.decode()[-2000:]


@shapes
def test_a_process_that_sees_other_files_is_refused_at_once(tmp_path, targets):
    # A private /tmp (a container, a service with PrivateTmp=): it cannot
    # see the control directory echion makes there. Each try found it "not
    # at a good moment", and echion stopped it about 260 times in 10 s.
    private = tmp_path / "tmp"
    private.mkdir()
    mount_then = ("unshare", "--mount", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(private))
    t = start(targets, tmp_path, "busy", prefix=mount_then)
    began = time.monotonic()
    run, out = attach(tmp_path, t.pid, "-x", "1", env={"TMPDIR": str(private)})
    took = time.monotonic() - began
    err = run.stderr.decode()
    assert run.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("echion: cannot attach to pid %d: " % t.pid), err
    assert str(private) in lines[0] and "nsenter -t %d" % t.pid in lines[0], err
    assert took < 5, took
    assert_left_as_found(*t.finish())


@shapes
def test_a_process_in_another_mount_namespace_that_sees_the_same_files_is_attached(tmp_path, targets):
    # A hardened service (ProtectSystem=, PrivateDevices=) has a namespace
    # of its own whose /tmp and site-packages are the host's.
    t = start(targets, tmp_path, "busy", prefix=("unshare", "--mount"))
    run, out = attach(tmp_path, t.pid, "-x", "1")
    assert run.returncode == 0, run.stderr.decode()
    assert_left_as_found(*t.finish())
    assert read_all(out).ours["samples"]


def attach_while_exiting(tmp_path, targets, form):
    """Attaches for 0.5 s to ``attach_exiting.py`` in a plain interpreter
    once its atexit handler runs (it sleeps 0.4 s, then the interpreter
    finalizes for 1 s), checks that the program ended unharmed, and returns
    the command's outcome, profile and stderr."""
    proc = subprocess.Popen(
        # (-S: no `.pth` file imports `threading` into the bare form.)
        [BASE_PYTHON, "-S", str(target("attach_exiting.py")), "0.4", form],
        cwd=str(tmp_path),
        env=echion_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    t = type("Exiting", (), {"proc": proc, "pid": proc.pid, "kill": Target.kill})()
    targets.append(t)
    line = proc.stdout.readline()
    assert line == b"ready\n", (line, proc.stderr.read().decode()[-2000:])
    assert proc.stdout.readline() == b"exiting\n"
    run, out = attach(tmp_path, t.pid, "-x", "0.5")
    err = run.stderr.decode()
    out_t, err_t = t.proc.communicate(timeout=30)
    # The program ends as it would have, with nothing of echion's shown.
    assert t.proc.returncode == 0, (t.proc.returncode, err_t.decode()[-2000:], err)
    assert out_t == b"done\n", out_t
    assert b"echion" not in err_t and b"Error" not in err_t, err_t.decode()[-2000:]
    return run, out, err


@shapes
def test_a_program_running_its_atexit_handlers_is_not_attached_to(tmp_path, targets):
    # A run started then would never be stopped (an atexit.register made
    # while the handlers run is not called); 3.13 crashed at the end.
    # `threading` shows the exit has begun (3.8: past its last pending
    # calls, the program is asked nothing).
    run, _, err = attach_while_exiting(tmp_path, targets, "threading")
    lines = err.strip().splitlines()
    assert run.returncode == 1, err
    assert len(lines) == 1 and lines[0].startswith("echion: cannot attach to pid "), err
    assert "exiting" in lines[0] or "finalizing" in lines[0], err


@shapes
def test_a_run_attached_as_the_program_exits_leaves_it_unharmed(tmp_path, targets):
    # Without `threading` nothing shows the exit has begun: the run starts
    # and nothing stops it. Its exposure ends as the interpreter
    # finalizes, when its threads' waits end: one that took the GIL back
    # then was ended by pthread_exit through echion's frames (SIGSEGV).
    run, out, err = attach_while_exiting(tmp_path, targets, "bare")
    if sys.version_info < (3, 9):
        # 3.8, past its last pending calls before its atexit handlers, is
        # asked nothing.
        assert run.returncode == 1 and "finalizing" in err, err
        return
    if sys.version_info[:2] == (3, 12):
        # 3.12 makes no thread once its exit has begun: echion says so.
        assert run.returncode == 1 and "can't create new thread" in err, err
        return
    if run.returncode == 1 and "already finalizing" in err:
        # A loaded machine: the attach came after the handler's 0.4 s,
        # when the interpreter finalized. echion said so, in one line, and
        # the program ended unharmed (above).
        assert len(err.strip().splitlines()) == 1, err
        return
    assert run.returncode == 0, err
    assert "exited" in err, err
    # The profile holds what was written before the process ended.
    assert read_all(out, austin1=False).ours["samples"], err


@shapes
def test_a_pending_call_run_as_the_program_ends_starts_nothing(monkeypatch):
    # Queued before the interpreter began to finalize, run after: the entry
    # does nothing ("later"; the command then sees the exit).
    import echion

    entry = Path(echion.__file__).parent / "bootstrap" / "attach_entry.py"
    namespace = {"MAIN_MODULES": 0, "CONTROL": "/nonexistent"}
    exec(compile(entry.read_text(), str(entry), "exec"), namespace)
    assert namespace["_bad_moment"]() is None
    monkeypatch.setattr(sys, "is_finalizing", lambda: True)
    assert namespace["_bad_moment"]() == "the interpreter is finalizing"


@shapes
def test_a_process_traced_by_a_debugger(tmp_path, targets):
    t = start(targets, tmp_path, "busy")
    gdb = subprocess.Popen(
        ["gdb", "-p", str(t.pid), "-batch", "-ex", "shell sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with open("/proc/%d/status" % t.pid) as f:
                if any(l.startswith("TracerPid:") and l.split()[1] != "0" for l in f):
                    break
            time.sleep(0.05)
        else:
            pytest.fail("gdb did not attach")
        run, _ = attach(tmp_path, t.pid)
        one_line_error(run, "already traced by another program")
    finally:
        os.killpg(gdb.pid, signal.SIGKILL)
        gdb.wait()
