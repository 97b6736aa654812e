"""Run mode as a first-time user meets it (issue 7): one valid file per
process of a family under one name, re-exec, threads echion does not start,
streams and user code untouched, the first sample of a long interval, where
the profile went, output that cannot be written, fork warnings, and the
documented metadata."""

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import (
    PY,
    ROOT,
    echion_command,
    echion_env,
    marker_line,
    read_all,
    assert_readers_agree,
    run_plain,
    samples_of,
    scope,
    stack_summary,
    target,
    total,
)

# Exit statuses, files and what the program saw; no share of samples or
# time is weighed: may run beside other tests.
pytestmark = pytest.mark.parallel


def run(tmp_path, *args, env=None, timeout=60, stderr=subprocess.PIPE):
    """``echion ARGS…`` in ``tmp_path``, the target's report in result.json."""
    full_env = echion_env(env)
    full_env["TARGET_RESULT"] = str(tmp_path / "result.json")
    t0 = time.monotonic()
    proc = subprocess.run(
        echion_command() + [str(a) for a in args],
        cwd=str(tmp_path),
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        timeout=timeout,
    )
    proc.elapsed = time.monotonic() - t0
    return proc


def result(tmp_path):
    import json

    return json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))


def profiles(directory, pattern):
    """Files of ``directory`` matching ``pattern``, each read by every
    reader (which must agree), by name."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if re.fullmatch(pattern, p.name):
            prof = read_all(p)
            assert_readers_agree(prof)
            out[p.name] = prof.ours
    return out


def has_scope(view, name):
    return any(f[1] == scope(name) for s in view["samples"] for f in s["frames"])


def pids(view):
    return {s["pid"] for s in view["samples"]}


# --- 1. a family of processes under one name ------------------------------------


def test_each_process_of_a_family_gets_a_valid_file_of_its_own(tmp_path):
    (tmp_path / "app.mojo").write_bytes(b"an earlier run's profile")
    proc = run(tmp_path, "-v", "-o", "app.mojo", sys.executable, target("family.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    got = result(tmp_path)
    files = profiles(tmp_path, r"app(\.\d+)*\.mojo")
    expected = {
        "app.mojo": (got["parent"], "parent"),
        "app.%d.mojo" % got["forked"]: (got["forked"], "forked_child"),
        "app.%d.mojo" % got["spawned"]: (got["spawned"], None),
    }
    assert set(files) == set(expected), sorted(files)
    for name, (pid, function) in expected.items():
        view = files[name]
        assert pids(view) == {pid}, (name, pids(view))
        assert int(view["metadata"]["samples"]) >= len(view["samples"]) > 0, name
        if function:
            assert has_scope(view, function), (name, stack_summary(view))
    assert not has_scope(files["app.mojo"], "forked_child")
    # -v says which file each process wrote.
    said = proc.stderr.decode()
    for name, (pid, _) in expected.items():
        assert re.search(r"profile of pid %d written to \S*/%s " % (pid, re.escape(name)), said), said


def test_a_second_run_while_the_first_writes_does_not_share_its_file(tmp_path):
    first = subprocess.Popen(
        echion_command() + ["-o", "app.mojo", sys.executable, "-c", "import time; time.sleep(1.5)"],
        cwd=str(tmp_path),
        env=echion_env(),
    )
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "app.mojo").exists() or (tmp_path / "app.mojo").stat().st_size == 0:
            assert time.monotonic() < deadline, "first run wrote nothing"
            time.sleep(0.02)
        second = run(tmp_path, "-o", "app.mojo", sys.executable, "-c", "pass")
        assert second.returncode == 0
    finally:
        assert first.wait(timeout=30) == 0
    files = profiles(tmp_path, r"app(\.\d+)*\.mojo")
    assert len(files) == 2, sorted(files)
    assert pids(files["app.mojo"]) == {first.pid}


# --- 3. exec ----------------------------------------------------------------------


def test_a_new_program_image_gets_its_own_profile(tmp_path):
    proc = run(tmp_path, "-o", "app.mojo", sys.executable, target("reexec.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    pid = result(tmp_path)["pid"]
    files = profiles(tmp_path, r"app(\.\d+)*\.mojo")
    assert set(files) == {"app.mojo", "app.%d.mojo" % pid}, sorted(files)
    first, second = files["app.mojo"], files["app.%d.mojo" % pid]
    assert has_scope(first, "first_image") and not has_scope(first, "second_image")
    assert has_scope(second, "second_image") and not has_scope(second, "first_image")
    line = marker_line(target("reexec.py"), "second")
    working = [s for s in second["samples"] if any(f[1:3] == [scope("second_image"), line] for f in s["frames"])]
    assert total(working) > 0.2e6, stack_summary(second)
    # With %(pid) in the name, the second image still gets a file of its own.
    for p in tmp_path.glob("app*.mojo"):
        p.unlink()
    proc = run(tmp_path, "-o", "p.%(pid).mojo", sys.executable, target("reexec.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    pid = result(tmp_path)["pid"]
    files = profiles(tmp_path, r"p(\.\d+)+\.mojo")
    assert set(files) == {"p.%d.mojo" % pid, "p.%d.1.mojo" % pid}, sorted(files)
    assert has_scope(files["p.%d.1.mojo" % pid], "second_image")


# --- 4. streams and user code ----------------------------------------------------


def test_streams_are_the_programs_own(tmp_path):
    proc = run(tmp_path, "-o", "app.mojo", sys.executable, target("streams.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    got = result(tmp_path)
    assert got["child_stderr"] == "child stderr", got
    assert proc.stderr == b"", proc.stderr.decode()


def test_the_users_sitecustomize_runs_once(tmp_path):
    site = Path(__file__).resolve().parent / "targets" / "user_site"
    log = tmp_path / "site.log"
    env = {"PYTHONPATH": str(site), "SITECUSTOMIZE_LOG": str(log)}
    proc = run(tmp_path, "-o", "app.mojo", sys.executable, "-c", "import os; print(os.getpid())", env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    runs = log.read_text().split()
    assert runs == proc.stdout.decode().split(), (runs, proc.stdout)
    # And the profile is there: the program ran under echion.
    assert profiles(tmp_path, r"app\.mojo")


# --- 5. a long interval ----------------------------------------------------------


def test_a_long_interval_charges_no_more_than_the_run(tmp_path):
    code = "import time\nt=time.monotonic()\nwhile time.monotonic()-t<0.05: pass"
    proc = run(tmp_path, "-i", "1000s", "-o", "app.mojo", sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr.decode()
    view = profiles(tmp_path, r"app\.mojo")["app.mojo"]
    assert view["samples"], view
    for thread in {s["thread"] for s in view["samples"]}:
        assert total(samples_of(view, thread)) <= proc.elapsed * 1e6, (thread, total(samples_of(view, thread)))


# --- 6. help and where the profile went -----------------------------------------


def test_help_says_what_every_mode_does():
    out = subprocess.run(echion_command() + ["--help"], stdout=subprocess.PIPE, check=True).stdout.decode()
    assert "coming" not in out, out
    usage = out.splitlines()[:4]
    assert any("-p PID" in l for l in usage), usage
    for option, words in (("-n", "Native stacks"), ("-p", "Attach to the running process"), ("-m", "Memory mode")):
        line = next(l for l in out.splitlines() if l.strip().startswith(option + ","))
        assert words in line, line
    where = next(l for l in out.splitlines() if l.strip().startswith("-w,"))
    assert "coming" not in where, where


def test_where_the_profile_went_is_said_on_a_terminal_only(tmp_path):
    # stderr a pipe, no -v: nothing.
    quiet = run(tmp_path, "-o", "a.mojo", sys.executable, "-c", "pass")
    assert quiet.stderr == b""
    # stderr a terminal: one line naming the file, then the summary.
    master, slave = pty.openpty()
    try:
        proc = run(tmp_path, "-o", "b.mojo", sys.executable, "-c", "pass", stderr=slave)
        os.close(slave)
        said = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    lines = [l for l in said.decode().splitlines() if l.strip()]
    assert re.search(r"written to \S*/b\.mojo", lines[0]), lines
    assert re.match(r"echion: \d+ ticks.*, \d+ samples, \d+ errors; ", lines[1]), lines
    assert not any("written to" in l for l in lines[1:]), lines


# --- 7. output that cannot be written ---------------------------------------------


def test_a_fifo_without_reader_neither_stalls_nor_is_silent(tmp_path):
    fifo = tmp_path / "prof.fifo"
    os.mkfifo(str(fifo))
    proc = run(tmp_path, "-o", fifo, sys.executable, "-c", "print('done')", timeout=30)
    assert proc.returncode == 0
    assert proc.stdout == b"done\n"
    assert proc.elapsed < 3, proc.elapsed
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "no reader" in lines[0] and str(fifo) in lines[0], lines


def test_a_profile_whose_directory_is_removed_is_reported(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run(tmp_path, "-o", out / "app.mojo", sys.executable, target("remove_dir.py"), env={"PROFILE_DIR": str(out)})
    assert proc.returncode == 3
    assert proc.stdout == b"still running\n"
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "removed during the run" in lines[0] and "app.mojo" in lines[0], lines


def test_a_process_killed_at_once_leaves_a_profile_with_its_header(tmp_path):
    # Killed before the first tick's flush: the header and the start
    # metadata are on disk already (written when the profile is made).
    out = tmp_path / "killed.mojo"
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc = run(tmp_path, "-o", out, sys.executable, "-c", code)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    prof = read_all(out)
    assert_readers_agree(prof)
    md = prof.ours["metadata"]
    assert md["mode"] == "wall" and md["interval"] == "1000" and md["sampler"] == "echion", md
    assert "duration" not in md, md


@pytest.fixture
def small_filesystem(tmp_path):
    """A 64 KiB tmpfs of its own: full after a second of profile."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("mode", [["-i", "100us"], ["-m"]], ids=["wall", "memory"])
def test_a_full_filesystem_ends_the_profile_cleanly(tmp_path, small_filesystem, mode):
    plain = run_plain(tmp_path, target("fill_disk.py"))
    assert plain.returncode == 4 and plain.stdout == b"made True\n", plain.stderr
    out = small_filesystem / "prof.mojo"
    # (Until the filesystem is full: a busy machine runs the program slowly.)
    proc = run(tmp_path, *mode, "-o", out, sys.executable, target("fill_disk.py"), env={"FILL_DISK_WATCH": str(small_filesystem)}, timeout=120)
    # The program ran as without echion.
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == plain.stdout
    # echion said it once, naming the file and the cause.
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "No space left on device" in lines[0], lines
    assert "holds the samples written until then" in lines[0], lines
    # The file is whole up to its last event: every reader reads it, and it
    # ends with the run's metadata and what happened.
    prof = read_all(out)
    assert_readers_agree(prof)
    md = prof.ours["metadata"]
    assert "No space left on device" in md["write_error"], md
    assert int(md["ticks"]) > 0 and "duration" in md, md
    assert prof.ours["samples"], md
    assert out.stat().st_size <= 64 * 1024


@pytest.mark.parametrize("mode", [["-i", "100us"], ["-c"], ["-n"], ["-m"], ["-m", "-n"]], ids=["wall", "cpu", "native", "memory", "memory-native"])
def test_a_program_at_its_memory_limit_runs_as_without_echion(tmp_path, mode):
    # The program fills its address space (RLIMIT_AS) and lives at the
    # limit. In memory mode echion's own table needs more on the way: that
    # allocation fails, and must neither end the process (Rust's default)
    # nor the profile.
    prog = target("memory_limit.py")
    plain = run_plain(tmp_path, prog)
    assert plain.returncode == 5 and plain.stdout == b"filled True\ndone True\n", plain.stderr
    out = tmp_path / "prof.mojo"
    proc = run(tmp_path, *mode, "-o", out, sys.executable, prog)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == plain.stdout
    lines = proc.stderr.decode().splitlines()
    # Memory and native stacks make a megabyte or two: read by ours only
    # (austin-python takes tens of seconds over them; the file's form is
    # checked by every reader in the other modes).
    independent = "-m" not in mode and "-n" not in mode
    prof = read_all(out, austin1=independent, austin2=independent)
    assert_readers_agree(prof)
    md = prof.ours["metadata"]
    # Closed as usual, with its end metadata.
    assert int(md["ticks"]) > 0 and "duration" in md, md
    assert prof.ours["samples"], md
    if mode == ["-n"]:
        # At the limit the sampler's thread ends and the program goes on
        # making objects; before echion gave its reserve's address space
        # back at the end of sampling, 30 % of these runs crashed on 3.13
        # (CPython 3.13.0 crashes when its interned-string table must grow
        # and cannot: the target keeps to a few names for that reason).
        for i in range(4):
            again = run(tmp_path, *mode, "-o", tmp_path / ("again%d.mojo" % i), sys.executable, prog)
            assert again.returncode == 5, (i, again.stderr)
    if "-m" in mode:
        # The allocations made while filling are in the profile.
        fill = marker_line(prog, "fill")
        assert any(f[1] == "<module>" and f[2] == fill for s in prof.ours["samples"] for f in s["frames"]), md
    if "out_of_memory" in md:
        # A failed allocation of echion's own (memory mode's table growing
        # at the limit, in most runs of it; the sampler alone allocates next
        # to nothing once it runs) is said once, and in the profile.
        assert int(md["out_of_memory"]) > 0, md
        assert len(lines) == 1 and "out of memory" in lines[0] and str(out) in lines[0], lines
    else:
        assert lines == [], lines


@pytest.mark.parametrize("name", ["prôfil 計算.mojo", "prôfil 計算.svg"], ids=["mojo", "svg"])
def test_a_path_with_spaces_and_non_ascii_characters(tmp_path, name):
    # A directory and a file name with spaces and characters outside ASCII,
    # for a family of processes (each child's name is derived from it).
    where = tmp_path / "mes profils à moi"
    where.mkdir()
    proc = run(tmp_path, "-v", "-o", where / name, sys.executable, target("family.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    got = result(tmp_path)
    stem, ext = name.rsplit(".", 1)
    expected = {name: got["parent"], **{f"{stem}.{got[k]}.{ext}": got[k] for k in ("forked", "spawned")}}
    assert {p.name for p in where.iterdir()} == set(expected), sorted(p.name for p in where.iterdir())
    said = proc.stderr.decode("utf-8")
    for file, pid in expected.items():
        assert f"profile of pid {pid} written to {where / file} " in said, said
        if ext == "mojo":
            prof = read_all(where / file)
            assert_readers_agree(prof)
            assert pids(prof.ours) == {pid}, file
        else:
            assert (where / file).read_text(encoding="utf-8").lstrip().startswith("<?xml"), file


# --- 8. fork warnings ---------------------------------------------------------------


@pytest.mark.parametrize("stealth", [False, True], ids=["sampler-thread", "stealth"])
def test_fork_warns_as_it_would_without_echion(tmp_path, stealth):
    plain = run_plain(tmp_path, target("streams.py"))
    assert plain.returncode == 0
    without = result(tmp_path)
    proc = run(tmp_path, *(["-s"] if stealth else []), "-o", "app.mojo", sys.executable, target("streams.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    under = result(tmp_path)
    assert under["fork_alone"] == without["fork_alone"] == [], (under, without)
    # A forked child's sampler thread may not have run yet when the child
    # forks again: it is echion's all the same.
    assert under["fork_in_child"] == without["fork_in_child"] == [], (under, without)
    assert under["fork_with_thread"] == without["fork_with_thread"], (under, without)
    if PY >= (3, 12):
        assert len(under["fork_with_thread"]) == 1 and "fork()" in under["fork_with_thread"][0], under


# --- 9. metadata --------------------------------------------------------------------


def test_every_metadata_key_written_is_documented(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_<>]+)` \|", readme, re.M))
    assert {"mode", "interval", "sampler", "python", "duration", "ticks", "samples", "skipped", "late_ticks"} <= documented, documented
    proc = run(tmp_path, "-c", "-o", "app.mojo", sys.executable, target("threads.py"), env={"ECHION_DIRECT_READS": "0"})
    assert proc.returncode == 0
    keys = set(profiles(tmp_path, r"app\.mojo")["app.mojo"]["metadata"])
    for key in keys:
        pattern = re.sub(r"^skipped_.*", "skipped_<reason>", key)
        assert key in documented or pattern in documented, f"metadata key {key!r} is not in the README"
