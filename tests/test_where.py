"""Where mode: ``echion -w PID`` shows what every thread of a running
process is doing, read from outside (the target runs plain ``python``, or
runs under ``echion``), as text and as JSON; its error cases each say what
is wrong in one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import PY, all_pythons, echion_command, echion_env, marker_line, scope, target, thread_prefix

# One-off pictures of where threads are: no share of samples or time is
# weighed (the bound on a dump's time is generous): may run beside others.
pytestmark = pytest.mark.parallel

TARGET = target("where_target.py")
HEADER = "🐴 Echion reporting for duty"
THREAD_RE = re.compile(r"^    🧵 (?P<name>.+?)(?: \(interpreter (?P<iid>\d+)\))?:$")
FRAME_RE = re.compile(r"^          (?P<func>\S.*) \((?P<file>.*):(?P<line>-?\d+)\)$")


class Target:
    """The target process, started plain or under echion, stopped (and
    reaped) at the end."""

    def __init__(self, tmp_path, mode, under_echion=False, stderr=subprocess.PIPE, python=None, echion_args=()):
        cmd = [python or sys.executable, str(TARGET), mode]
        if under_echion:
            cmd = echion_command() + ["-o", str(Path(tmp_path) / "profile.mojo"), *echion_args] + cmd
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(tmp_path),
            env=echion_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("ready"), f"target said {line!r}"
        self.pid = int(line.split()[1])
        assert self.pid == self.proc.pid
        if mode != "gil":
            _wait_reading_stdin(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def finish(self):
        """Lets the target end as it would (main thread reads a line)."""
        out, err = self.proc.communicate(b"go\n", timeout=30)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(mode, under_echion=False, stderr=subprocess.PIPE, python=None, echion_args=()):
        t = Target(tmp_path, mode, under_echion, stderr, python, echion_args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def where(pid, *extra, env=None):
    return subprocess.run(
        echion_command() + ["-w", str(pid), *extra],
        env=echion_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=30,
    )


def parse(text):
    """{(iid, thread name): [(function, file, line), ...]} of a where dump."""
    lines = text.splitlines()
    assert lines[0] == HEADER, text
    threads = {}
    current = None
    for line in lines[1:]:
        if not line.strip():
            current = None
            continue
        m = THREAD_RE.match(line)
        if m:
            current = (int(m.group("iid") or 0), m.group("name"))
            assert current not in threads, f"{current} twice:\n{text}"
            threads[current] = []
            continue
        m = FRAME_RE.match(line)
        if m and current is not None:
            threads[current].append((m.group("func"), m.group("file"), int(m.group("line"))))
            continue
        assert line.strip() == "(no Python frame)" and current is not None, f"unexpected line {line!r}:\n{text}"
    return threads


def line_of(name):
    return marker_line(TARGET, name)


def expect_worker(stack, func, marker, text, under_echion=False):
    """A `threading` thread's stack: its bootstrap frames (with echion's
    hook when the target runs under echion), then ``func`` at ``marker``."""
    file = str(TARGET)
    assert stack[-1] == (func, file, line_of(marker)), text
    prefix = thread_prefix() if under_echion else (scope("Thread._bootstrap"), scope("Thread._bootstrap_inner"), scope("Thread.run"))
    assert tuple(f for f, _, _ in stack[: len(prefix)]) == prefix, text


def test_plain_target_named_threads_ten_times(spawn):
    t = spawn("threads")
    file = str(TARGET)
    for _ in range(10):
        r = where(t.pid)
        text = r.stdout.decode()
        assert r.returncode == 0, r.stderr.decode()
        threads = parse(text)
        assert set(threads) == {(0, "MainThread"), (0, "sleeper"), (0, "spinner")}, text
        assert threads[(0, "MainThread")] == [("<module>", file, line_of("main-call")), ("main", file, line_of("main-wait"))], text
        expect_worker(threads[(0, "sleeper")], "sleeper", "sleep", text)
        expect_worker(threads[(0, "spinner")], "spin", "spin", text)
        assert "\x1b[" not in text, "colours on a pipe"
        assert t.alive()
    # The target was never stopped or changed: it goes on and ends as usual.
    rc, out, err = t.finish()
    assert (rc, out, err) == (0, b"done\n", b"")


def test_a_second_libpython_never_started_is_passed_over(spawn, monkeypatch):
    # A process may map another version's libpython (a plugin linked with
    # it): its _PyRuntime lists no interpreter, the one that runs does.
    other = next(p for p in all_pythons() if "/%d.%d." % sys.version_info[:2] not in p)
    lib = subprocess.run(
        [other, "-c", "import os, sysconfig as s; print(os.path.join(s.get_config_var('LIBDIR'), s.get_config_var('INSTSONAME')))"],
        stdout=subprocess.PIPE,
        check=True,
    ).stdout.decode().strip()
    assert os.path.exists(lib), lib
    monkeypatch.setenv("WHERE_OTHER_LIBPYTHON", lib)
    t = spawn("other-libpython")
    maps = open("/proc/%d/maps" % t.pid).read()
    assert os.path.realpath(lib) in maps or lib in maps, "the other libpython is not mapped"
    r = where(t.pid)
    assert r.returncode == 0, r.stderr.decode()
    threads = parse(r.stdout.decode())
    assert {n for _, n in threads} == {"MainThread", "sleeper", "spinner"}, r.stdout.decode()
    assert t.finish()[0] == 0


def test_any_supported_version_from_this_interpreter(spawn):
    # The echion of this interpreter reads targets of every version.
    for python in all_pythons():
        t = spawn("threads", python=python)
        r = where(t.pid, "--json")
        assert r.returncode == 0, (python, r.stderr.decode())
        doc = json.loads(r.stdout)
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        assert doc["python"] == version, python
        by_name = {th["name"]: th for th in doc["threads"]}
        assert set(by_name) == {"MainThread", "sleeper", "spinner"}, (python, doc)
        sleeper = by_name["sleeper"]["frames"][-1]
        assert (sleeper["function"], sleeper["line"]) == ("sleeper", line_of("sleep")), (python, doc)
        t.kill()


def test_threads_threading_does_not_know_are_named_by_native_id(spawn):
    # On every version, also before 3.11 where only glibc knows a thread's
    # kernel id (read at the offset this process's glibc uses, checked
    # against the target's main thread).
    for python in all_pythons():
        t = spawn("raw", python=python)
        doc = json.loads(where(t.pid, "--json").stdout)
        unknown = [th for th in doc["threads"] if th["name"] not in ("MainThread", "sleeper", "spinner")]
        assert len(unknown) == 1, (python, doc)
        raw = unknown[0]
        assert raw["native_id"] is not None and os.path.isdir(f"/proc/{t.pid}/task/{raw['native_id']}"), (python, raw)
        assert raw["name"] == "Thread-%d" % raw["native_id"], (python, raw)
        assert (raw["frames"][-1]["function"], raw["frames"][-1]["line"]) == ("raw_wait", line_of("raw")), (python, raw)
        # threading's threads carry their native ids too.
        assert all(th["native_id"] for th in doc["threads"]), (python, doc)
        t.kill()


def _where_on_a_terminal(pid, env=None):
    """``echion -w pid`` with stdout a terminal; what it printed there."""
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run(echion_command() + ["-w", str(pid)], env=echion_env(env), stdout=slave, stderr=subprocess.PIPE, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        os.close(slave)
        slave = None
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out.decode()
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


def test_colours_on_a_terminal_only(spawn):
    t = spawn("threads")
    coloured = _where_on_a_terminal(t.pid)
    assert HEADER in coloured and "\x1b[33;1msleeper\x1b[0m" in coloured, coloured
    plain = _where_on_a_terminal(t.pid, env={"NO_COLOR": "1"})
    assert HEADER in plain and "\x1b[" not in plain, plain


def test_json_form(spawn):
    t = spawn("threads")
    r = where(t.pid, "--json")
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert doc["pid"] == t.pid
    assert doc["python"].startswith("%d.%d." % PY)
    by_name = {th["name"]: th for th in doc["threads"]}
    assert set(by_name) == {"MainThread", "sleeper", "spinner"}
    sleeper = by_name["sleeper"]
    assert sleeper["interpreter"] == 0
    assert isinstance(sleeper["thread_id"], int) and sleeper["thread_id"] > 0
    assert isinstance(sleeper["native_id"], int) and os.path.isdir(f"/proc/{t.pid}/task/{sleeper['native_id']}")
    assert sleeper["frames"][-1] == {"function": "sleeper", "filename": str(TARGET), "line": line_of("sleep")}
    assert by_name["MainThread"]["frames"][0]["function"] == "<module>"
    assert t.alive()


def test_target_stuck_in_c_holding_the_gil(spawn):
    t = spawn("gil")
    deadline = time.monotonic() + 10
    while True:
        r = where(t.pid)
        assert r.returncode == 0, r.stderr.decode()
        threads = parse(r.stdout.decode())
        main = threads[(0, "MainThread")]
        if main[-1][0] == "main" and main[-1][2] == line_of("gil"):
            break
        assert time.monotonic() < deadline, r.stdout.decode()
        time.sleep(0.1)
    expect_worker(threads[(0, "sleeper")], "sleeper", "sleep", r.stdout.decode())
    # The spinner waits for the GIL inside its loop.
    expect_worker(threads[(0, "spinner")], "spin", "spin", r.stdout.decode())
    assert t.alive()


def test_subinterpreters_are_shown_with_their_ids(spawn):
    t = spawn("sub")
    text = where(t.pid).stdout.decode()
    threads = parse(text)
    subs = [k for k in threads if k[0] != 0]
    assert len(subs) == 1, text
    iid, name = subs[0]
    # The thread that runs the subinterpreter is `runner` in both.
    assert name == "runner", text
    sub_stack = threads[subs[0]]
    code = re.search(r'SUB = """\\\n(.*?)"""', TARGET.read_text(encoding="utf-8"), re.S).group(1).splitlines()
    sleep_line = next(i for i, l in enumerate(code, 1) if "#@sub-sleep" in l)
    assert sub_stack[-1] == ("in_subinterpreter", "<string>", sleep_line), text
    main_side = threads[(0, "runner")]
    assert main_side[-1] == ("runner", str(TARGET), line_of("run-sub")), text
    assert t.alive()


def test_target_under_echion_shows_the_sampler_thread(spawn, tmp_path):
    t = spawn("threads", under_echion=True)
    r = where(t.pid)
    assert r.returncode == 0, r.stderr.decode()
    threads = parse(r.stdout.decode())
    names = {n for _, n in threads}
    assert {"MainThread", "sleeper", "spinner", "echion.core.sampler"} <= names, r.stdout.decode()
    expect_worker(threads[(0, "sleeper")], "sleeper", "sleep", r.stdout.decode(), under_echion=True)
    rc, out, err = t.finish()
    assert (rc, out) == (0, b"done\n"), err
    assert (tmp_path / "profile.mojo").stat().st_size > 0


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _old_python():
    for v in ("3.7", "3.6"):
        found = sorted(Path("/root/.pyenv/versions").glob(v + ".*/bin/python3"))
        if found:
            return found[-1]
    raise AssertionError("no CPython 3.7 or 3.6 under /root/.pyenv/versions to check the unsupported-version error")


def test_errors_are_one_line_each(spawn, tmp_path):
    cases = []
    pid = _dead_pid()
    cases.append((where(pid), f"echion: cannot show the stacks of pid {pid}: no process with pid {pid}: check the pid"))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cases.append((where(sleeper.pid), f"echion: cannot show the stacks of pid {sleeper.pid}: pid {sleeper.pid} does not look like CPython"))
    finally:
        sleeper.kill()
        sleeper.wait()
    old = subprocess.Popen([str(_old_python()), "-c", "import time; print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        old.stdout.readline()
        cases.append((where(old.pid), "is not supported (supported: 3.8 to 3.13)"))
    finally:
        old.kill()
        old.wait()
    private = spawn("private")
    denied = subprocess.run(
        ["setpriv", "--bounding-set", "-sys_ptrace", *echion_command(), "-w", str(private.pid)],
        env=echion_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=30,
    )
    cases.append((denied, "not permitted to read the memory of pid %d: run as root" % private.pid))
    for r, expected in cases:
        err = r.stderr.decode()
        assert r.returncode == 1, (expected, r.returncode, err)
        assert r.stdout == b"", expected
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert expected in err, (expected, err)
        assert "CAP_SYS_PTRACE" in err or "not permitted" not in expected
    assert private.alive()
    usage = where(private.pid, "python3")
    assert usage.returncode == 2 and b"takes no command" in usage.stderr


def test_a_hundred_threads_dump_quickly(tmp_path):
    code = (
        "import threading, time\n"
        "ev = threading.Event()\n"
        "ts = [threading.Thread(target=ev.wait, name='w%d' % i, daemon=True) for i in range(100)]\n"
        "[t.start() for t in ts]\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=echion_env())
    try:
        p.stdout.readline()
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            r = where(p.pid)
            times.append(time.monotonic() - t0)
            assert r.returncode == 0
            names = {n for _, n in parse(r.stdout.decode())}
            assert {"w%d" % i for i in range(100)} <= names
        times.sort()
        # The whole command, launcher included; the median is reported by
        # the benchmark, this only guards against a regression to seconds.
        assert times[2] < 2.0, times
    finally:
        p.kill()
        p.wait()


def _wait_for(path, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(encoding="utf-8", errors="replace")
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not in {text!r}"
        time.sleep(0.05)


def _wait_reading_stdin(pid, timeout=10):
    """Until the main thread of ``pid`` is blocked in read(2) (x86-64: 0),
    past the ``print`` of its ready line."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/syscall").read_text().split()[0] != "0":
        assert time.monotonic() < deadline, "target never blocked reading stdin"
        time.sleep(0.01)


def test_sigquit_under_echion_prints_the_dump_and_goes_on(spawn, tmp_path):
    from harness import read_all, assert_readers_agree

    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        t = spawn("threads", under_echion=True, stderr=err)
        _wait_reading_stdin(t.pid)
        os.kill(t.pid, signal.SIGQUIT)
        _wait_for(err_path, "🧵 spinner:")
        os.kill(t.pid, signal.SIGQUIT)
        time.sleep(0.3)
        rc, out, _ = t.finish()
    # The program's exit status and output are what they are without echion.
    assert (rc, out) == (0, b"done\n")
    text = err_path.read_text(encoding="utf-8")
    assert text.count(HEADER) == 2, text
    first = text[text.index(HEADER) : text.index(HEADER, 1)]
    threads = parse(first)
    assert {"MainThread", "sleeper", "spinner", "echion.core.sampler"} <= {n for _, n in threads}, first
    expect_worker(threads[(0, "sleeper")], "sleeper", "sleep", first, under_echion=True)
    assert threads[(0, "MainThread")][-1] == ("main", str(TARGET), line_of("main-wait")), first
    # The profile is whole and every reader reads the same.
    p = read_all(tmp_path / "profile.mojo")
    assert_readers_agree(p)
    assert any(s["thread"] == "sleeper" for s in p.ours["samples"])


def test_sigquit_dump_comes_between_ticks_of_a_long_interval(spawn, tmp_path):
    # With -i 10s the next tick is seconds away: the dump does not wait for
    # it (the loop looks at the request after every nap, 50 ms at most).
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        t = spawn("threads", under_echion=True, stderr=err, echion_args=["-i", "10s"])
        _wait_reading_stdin(t.pid)
        os.kill(t.pid, signal.SIGQUIT)
        text = _wait_for(err_path, "🧵 spinner:", timeout=5)
        rc, out, _ = t.finish()
    assert (rc, out) == (0, b"done\n")
    assert text.count(HEADER) == 1, text


def test_sigquit_under_echion_n_shows_native_frames(spawn, tmp_path):
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        t = spawn("threads", under_echion=True, stderr=err, echion_args=["-n"])
        os.kill(t.pid, signal.SIGQUIT)
        text = _wait_for(err_path, "🧵 spinner:")
        time.sleep(0.3)
        rc, out, _ = t.finish()
    assert (rc, out) == (0, b"done\n")
    text = err_path.read_text(encoding="utf-8")
    dump = text[text.index(HEADER) :]
    frames = {}
    current = None
    for line in dump.splitlines()[1:]:
        m = THREAD_RE.match(line)
        if m:
            current = m.group("name")
            frames[current] = []
        elif current and line.strip():
            m = FRAME_RE.match(line)
            assert m, line
            frames[current].append((m.group("func"), m.group("file")))
    # The sleeper: its Python frames, then time.sleep's C function and the
    # libc call under them, written as echion 0.3 writes native frames.
    sleeper = frames["sleeper"]
    names = [f for f, _ in sleeper]
    assert "sleeper" in names and "time_sleep" in names, sleeper
    assert names.index("sleeper") < names.index("time_sleep"), sleeper
    assert all(file.startswith("native@0x") for f, file in sleeper[names.index("time_sleep") :]), sleeper
    # The main thread's outermost frames are the interpreter's C entry.
    assert frames["MainThread"][0][1].startswith("native@0x"), frames["MainThread"]


def test_the_programs_own_sigquit_handler_wins(spawn, tmp_path):
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        t = spawn("own-quit", under_echion=True, stderr=err)
        os.kill(t.pid, signal.SIGQUIT)
        time.sleep(0.5)
        rc, out, _ = t.finish()
    assert (rc, out) == (0, b"done\nown handler\n")
    assert HEADER not in err_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("under_echion", [False, True])
def test_asyncio_task_stacks(spawn, under_echion, tmp_path):
    # One stack per leaf task of the loop's thread: the thread's frames,
    # the task that gathers, then the task waited on and its coroutine.
    t = spawn("asyncio", under_echion=under_echion)
    r = where(t.pid, "--json")
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    stacks = [[f["function"] for f in th["frames"]] for th in doc["threads"] if th["name"] == "loop"]
    assert len(stacks) == 2, doc
    leaves = set()
    for stack in stacks:
        i = stack.index("Task-1")
        assert stack[i + 1] == scope("run_loop.<locals>.waiter"), stack
        assert stack[i + 3 :] == [scope("nap.<locals>.nap"), "sleep"], stack
        leaves.add(stack[i + 2])
    assert leaves == {"nap-1", "nap-2"}, stacks
    task_frame = next(f for th in doc["threads"] if th["name"] == "loop" for f in th["frames"] if f["function"] == "nap-1")
    assert task_frame["line"] == 0
    gather = next(f for th in doc["threads"] if th["name"] == "loop" for f in th["frames"] if f["function"] == scope("run_loop.<locals>.waiter"))
    assert gather["line"] == line_of("gather")
    text = where(t.pid).stdout.decode()
    assert text.count("nap-1") == 1 and text.count("nap-2") == 1, text
    assert t.alive()
