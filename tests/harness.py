"""End-to-end harness: run things that write MOJO, read the result with
every independent reader available and with our own.

Later issues add targets and assertions; the reading and comparing lives
here once. Environment:

- ``ECHION_MOJO_TOOL``: our reader/writer front end (the ``mojo`` example of
  echion-mojo); defaults to ``target/debug/examples/mojo`` (``cargo test``
  builds it).
- ``ECHION_AUSTIN2_PATH``: a directory holding austin-python 2.x (installed
  with ``pip --target``); unset on interpreters older than 3.10.
"""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

ROOT = Path(__file__).resolve().parent.parent
READ_AUSTIN = Path(__file__).resolve().parent / "readers" / "read_austin.py"


def mojo_tool() -> Path:
    tool = Path(os.environ.get("ECHION_MOJO_TOOL", ROOT / "target" / "debug" / "examples" / "mojo"))
    if not tool.exists():
        raise RuntimeError(f"{tool} not found: build it with `cargo build -p echion-mojo --example mojo`")
    return tool


def _run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return json.loads(out.stdout.decode("utf-8"))


def read_ours(path) -> dict:
    """Our reader's view, reduced to what austin-python keeps."""
    raw = _run_json([str(mojo_tool()), "dump", str(path)])
    for s in raw["samples"]:
        s["frames"] = [
            [f["filename"], f["scope"], f["line"], f["line_end"], f["column"], f["column_end"]]
            for f in s["frames"]
            if f["kind"] == "python"
        ]
        del s["idle"]
    return raw


def read_austin1(path) -> dict:
    return _run_json([sys.executable, str(READ_AUSTIN), "1", str(path)])


def austin2_available() -> bool:
    return bool(os.environ.get("ECHION_AUSTIN2_PATH"))


def read_austin2(path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.environ["ECHION_AUSTIN2_PATH"]
    return _run_json([sys.executable, str(READ_AUSTIN), "2", str(path)], env=env)


@dataclass
class Profiles:
    """One profile as each reader sees it."""

    path: Path
    ours: dict
    austin1: Optional[dict]
    austin2: Optional[dict]

    def readers(self):
        """(name, view) of every reader that read the file."""
        return [(n, v) for n, v in (("austin-python 1.7", self.austin1), ("austin-python 2", self.austin2)) if v is not None]


def read_all(path, austin1=True, austin2=True) -> Profiles:
    """Read ``path`` with our reader, austin-python 1.7 (unless told not to:
    it cannot read MOJO v4) and austin-python 2.x where available (unless
    told not to)."""
    # The three readers run side by side (austin-python's, pure Python,
    # take seconds over a big profile).
    with ThreadPoolExecutor(max_workers=3) as pool:
        a1 = pool.submit(read_austin1, path) if austin1 else None
        a2 = pool.submit(read_austin2, path) if austin2 and austin2_available() else None
        ours = read_ours(path)
        return Profiles(
            path=Path(path),
            ours=ours,
            austin1=a1.result() if a1 else None,
            austin2=a2.result() if a2 else None,
        )


def totals(view: dict) -> dict:
    """Metric totals per thread name."""
    out = {}
    for s in view["samples"]:
        out[s["thread"]] = out.get(s["thread"], 0) + (s["time"] or 0)
    return out


def assert_readers_agree(p: Profiles, compare_iid=True):
    """Every independent reader sees the same samples (pid, iid, thread,
    frames, metrics), the same metadata and the same totals as ours."""
    for name, view in p.readers():
        assert view["metadata"] == p.ours["metadata"], f"{name}: metadata differs"
        assert len(view["samples"]) == len(p.ours["samples"]), f"{name}: sample count differs"
        for i, (a, b) in enumerate(zip(view["samples"], p.ours["samples"])):
            keys = ["pid", "thread", "frames", "time", "memory", "gc"] + (["iid"] if compare_iid else [])
            for k in keys:
                assert a[k] == b[k], f"{name}: sample {i} differs in {k}: {a[k]!r} != {b[k]!r}"
        assert totals(view) == totals(p.ours), f"{name}: totals differ"


def write_sample(path, v4=False):
    """Drive our writer through the example binary (until the CLI exists)."""
    cmd = [str(mojo_tool()), "write-sample", str(path)] + (["--v4"] if v4 else [])
    subprocess.run(cmd, check=True)
    return Path(path)


# --- running the echion command ------------------------------------------------
#
# The end-to-end tests run ``python -m echion … python target.py`` with the
# interpreter pytest runs in (each venv has the wheel installed), read every
# profile the run wrote with every reader, and query the result. Targets live
# in ``tests/targets``; they report what they measured themselves (lifetimes,
# CPU time, pids) as JSON into the file named by ``TARGET_RESULT``.

TARGETS = Path(__file__).resolve().parent / "targets"
PY = sys.version_info[:2]
SAMPLER_THREAD = "echion.core.sampler"
PROFILE_NAME = "profile.%(pid).mojo"
_PROFILE_RE = re.compile(r"^profile\.(\d+)\.mojo$")


def scope(qualname: str) -> str:
    """The scope name a frame of ``qualname`` has on this interpreter:
    qualified from 3.11, the plain function name before."""
    return qualname if PY >= (3, 11) else qualname.rsplit(".", 1)[-1]


def thread_prefix() -> Tuple[str, ...]:
    """The outermost frames of every thread started with ``threading``,
    echion's own hook included (as echion 0.3 shows them)."""
    return (scope("Thread._bootstrap"), "thread_bootstrap_inner", scope("Thread._bootstrap_inner"), scope("Thread.run"))


def marker_line(path, name: str) -> int:
    """The line of ``path`` that carries the comment ``#@name`` (exactly one)."""
    return _marker_line(str(path), name)


@functools.lru_cache(maxsize=None)
def _marker_line(path: str, name: str) -> int:
    # Cached: tests ask for it in predicates run over every sample (the
    # targets do not change during a test run).
    tag = "#@" + name
    lines = [
        i
        for i, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
        if re.search(re.escape(tag) + r"(\s|$)", text)
    ]
    assert len(lines) == 1, f"marker {tag} found on lines {lines} of {path}"
    return lines[0]


def target(name: str) -> Path:
    path = TARGETS / name
    assert path.is_file(), path
    return path


def all_pythons() -> List[str]:
    """CPython 3.8 to 3.13: ``ECHION_PYTHONS`` (as scripts/test sets it), or
    the newest of each under /root/.pyenv/versions; all six must exist."""
    listed = [p for p in os.environ.get("ECHION_PYTHONS", "").split(":") if p]
    if not listed:
        for minor in range(8, 14):
            found = sorted(Path("/root/.pyenv/versions").glob("3.%d.*/bin/python3" % minor))
            listed.append(str(found[-1]) if found else "missing-3.%d" % minor)
    assert len(listed) == 6 and all(os.path.exists(p) for p in listed), listed
    return listed


def echion_env(env=None) -> dict:
    """The environment of a run: ours, without anything that would configure
    echion behind the command line's back, plus ``env`` (a value of None
    removes the variable)."""
    out = {k: v for k, v in os.environ.items() if not (k.startswith("ECHION_") and k not in ("ECHION_MOJO_TOOL", "ECHION_AUSTIN2_PATH", "ECHION_SHARED"))}
    out.pop("PYTHONPATH", None)
    out["PYTHONIOENCODING"] = "utf-8"
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@dataclass
class Run:
    """A finished run: the command, what it printed, how it ended, the
    profiles it left (by pid, each read by every reader and checked to agree)
    and what the target reported."""

    cmd: List[str]
    pid: int
    returncode: int
    stdout: bytes
    stderr: bytes
    profiles: Dict[int, "Profiles"]
    result: Optional[dict]
    elapsed: float

    @property
    def profile(self) -> "Profiles":
        """The profile of the process the command started."""
        assert self.pid in self.profiles, f"no profile for pid {self.pid}: {sorted(self.profiles)}; {self.describe()}"
        return self.profiles[self.pid]

    @property
    def view(self) -> dict:
        """Our reader's view of :attr:`profile` (the others agree with it)."""
        return self.profile.ours

    def describe(self) -> str:
        return f"{' '.join(self.cmd)} → rc {self.returncode}\nstdout: {self.stdout.decode(errors='replace')[-2000:]}\nstderr: {self.stderr.decode(errors='replace')[-4000:]}"


def profile_files(directory) -> Dict[int, Path]:
    """Profiles written under ``directory`` by :data:`PROFILE_NAME`, by pid."""
    out = {}
    for p in Path(directory).iterdir():
        m = _PROFILE_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def read_profiles(directory, check=True, independent=True) -> Dict[int, "Profiles"]:
    """Every profile in ``directory`` read by every reader (by ours only
    without ``independent``); with ``check``, each is checked with
    :func:`assert_readers_agree`."""
    out = {}
    for pid, path in sorted(profile_files(directory).items()):
        try:
            p = read_all(path, austin1=independent, austin2=independent)
        except subprocess.CalledProcessError as e:
            raise AssertionError(f"{path} does not parse: {' '.join(map(str, e.cmd))}: {e.stderr.decode(errors='replace').strip()}") from None
        if check:
            assert_readers_agree(p)
        out[pid] = p
    return out


def echion_command() -> List[str]:
    """The real ``echion`` command as pip installed it beside this
    interpreter (the front-end executable: no site code of its own)."""
    command = Path(sys.executable).parent / "echion"
    assert command.is_file(), f"{command} missing: install the echion wheel in this venv"
    return [str(command)]


def echion_cmd(tmp_path, *echion_args, output=True) -> List[str]:
    out = echion_command()
    if output:
        out += ["-o", str(Path(tmp_path) / PROFILE_NAME)]
    return out + [str(a) for a in echion_args]


def _group_members(pgid: int) -> List[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # state, ppid, pgrp: zombies are done.
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _wait_group(pgid: int, deadline: float):
    while _group_members(pgid):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of group {pgid} still running: {_group_members(pgid)}")
        time.sleep(0.02)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_echion(
    tmp_path,
    target,
    *echion_args,
    env=None,
    timeout=60,
    expect_profile=True,
    args=(),
    stdin=None,
    echion=True,
    on_start: Optional[Callable] = None,
    independent_readers=True,
) -> Run:
    """Run ``echion -o tmp_path/profile.%(pid).mojo *echion_args python target
    *args`` in ``tmp_path`` and collect the outcome.

    ``expect_profile``: True requires the started process to leave a profile
    and reads (and cross-checks) every profile written; False requires that
    none is written; None reads nothing. ``echion=False`` runs the same
    command without echion, for comparisons. ``on_start(proc)`` is called
    with the running process (its stdout is a pipe, stdin too when ``stdin``
    is given) before waiting for it. ``independent_readers=False`` reads
    the profiles with ours only: for a test of what the run did to the
    program whose profile is large (austin-python, pure Python, takes tens
    of seconds over a megabyte of it), the file's form being checked by
    the others. The process group is killed if anything
    goes wrong, so no child outlives the test.
    """
    tmp_path = Path(tmp_path)
    cmd = (echion_cmd(tmp_path, *echion_args) if echion else []) + [sys.executable, str(target), *[str(a) for a in args]]
    result_file = tmp_path / "result.json"
    if result_file.exists():
        result_file.unlink()
    full_env = echion_env(env)
    full_env["TARGET_RESULT"] = str(result_file)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=str(tmp_path),
        env=full_env,
        stdin=subprocess.PIPE if stdin is not None or on_start else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        if on_start is not None:
            on_start(proc)
        out, err = proc.communicate(stdin, timeout=timeout)
        # Processes the target left behind (multiprocessing's helpers) may
        # still be closing their profiles: give them the rest of the time.
        _wait_group(proc.pid, deadline=start + timeout)
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    finally:
        _kill_group(proc)
    elapsed = time.monotonic() - start
    run = Run(cmd, proc.pid, proc.returncode, out, err, {}, None, elapsed)
    if result_file.exists():
        run.result = json.loads(result_file.read_text(encoding="utf-8"))
    if expect_profile is True:
        assert profile_files(tmp_path), f"no profile written: {run.describe()}"
        run.profiles = read_profiles(tmp_path, independent=independent_readers)
        assert proc.pid in run.profiles, f"no profile for pid {proc.pid}: {sorted(run.profiles)}; {run.describe()}"
    elif expect_profile is False:
        assert not profile_files(tmp_path), f"profiles written: {sorted(profile_files(tmp_path))}; {run.describe()}"
    return run


def run_plain(tmp_path, target, **kw) -> Run:
    """The same target without echion (see :func:`run_echion`)."""
    return run_echion(tmp_path, target, echion=False, expect_profile=None, **kw)


# --- queries over a view ----------------------------------------------------------
#
# A view is one reader's dict (``Profiles.ours`` and friends): samples with
# ``thread``, ``iid``, ``pid``, ``frames`` (outermost first, each
# [filename, scope, line, line_end, column, column_end]) and ``time``.
# A frame pattern is a scope name or a (scope, line) pair.

FramePattern = Union[str, Tuple[str, int]]


def threads(view) -> set:
    """Names of the threads that have samples."""
    return {s["thread"] for s in view["samples"]}


def samples_of(view, thread: Optional[str] = None, iid: Optional[int] = None) -> List[dict]:
    return [s for s in view["samples"] if (thread is None or s["thread"] == thread) and (iid is None or s["iid"] == iid)]


def scopes(sample) -> Tuple[str, ...]:
    return tuple(f[1] for f in sample["frames"])


def _matches(frame, pattern: FramePattern) -> bool:
    if isinstance(pattern, str):
        return frame[1] == pattern
    name, line = pattern
    return frame[1] == name and frame[2] == line


def starts_with(sample, patterns: Sequence[FramePattern]) -> bool:
    """The sample's stack begins (outermost) with ``patterns``."""
    f = sample["frames"]
    return len(f) >= len(patterns) and all(_matches(a, b) for a, b in zip(f, patterns))


def is_stack(sample, patterns: Sequence[FramePattern]) -> bool:
    """The sample's stack is exactly ``patterns``."""
    return len(sample["frames"]) == len(patterns) and starts_with(sample, patterns)


def contains(sample, patterns: Sequence[FramePattern]) -> bool:
    """``patterns`` occur as consecutive frames somewhere in the stack."""
    f, n = sample["frames"], len(patterns)
    return any(all(_matches(f[i + j], patterns[j]) for j in range(n)) for i in range(len(f) - n + 1))


def leaf_is(sample, pattern: FramePattern) -> bool:
    return bool(sample["frames"]) and _matches(sample["frames"][-1], pattern)


def select(view, pred: Callable[[dict], bool], thread: Optional[str] = None, iid: Optional[int] = None) -> List[dict]:
    return [s for s in samples_of(view, thread, iid) if pred(s)]


def total(samples: Iterable[dict]) -> int:
    """Sum of the time metric (µs) of ``samples``."""
    return sum(s["time"] or 0 for s in samples)


def total_prefix(view, patterns, thread=None, iid=None) -> int:
    """Time of the samples whose stack starts with ``patterns``."""
    return total(select(view, lambda s: starts_with(s, patterns), thread, iid))


def total_containing(view, patterns, thread=None, iid=None) -> int:
    """Time of the samples whose stack contains ``patterns``."""
    return total(select(view, lambda s: contains(s, patterns), thread, iid))


def total_leaf(view, pattern, thread=None, iid=None) -> int:
    """Time of the samples whose innermost frame is ``pattern``."""
    return total(select(view, lambda s: leaf_is(s, pattern), thread, iid))


def find_stack(view, patterns, thread=None, iid=None) -> Optional[dict]:
    """The first sample whose stack contains ``patterns``, or None."""
    found = select(view, lambda s: contains(s, patterns), thread, iid)
    return found[0] if found else None


def stack_summary(view, thread=None, top=12) -> str:
    """The heaviest stacks, for assertion messages."""
    acc: Dict[tuple, list] = {}
    for s in samples_of(view, thread):
        key = (s["thread"], s["iid"], tuple(f"{f[1]}:{f[2]}" for f in s["frames"]))
        a = acc.setdefault(key, [0, 0])
        a[0] += s["time"] or 0
        a[1] += 1
    rows = sorted(acc.items(), key=lambda kv: -kv[1][0])[:top]
    return "\n".join(f"  {t}/{iid}: {v[0]} µs in {v[1]} samples: {' > '.join(st[-8:])}" for (t, iid, st), v in rows)


def assert_close(got: float, expected: float, rel: float, what: str, context: str = "", low: Optional[float] = None):
    """``got`` is within ``rel`` (a fraction) of ``expected``; ``low``, when
    given, is the shortfall allowed instead (a sampler starved at the end
    of a short-lived thread loses the thread's last moments, but never
    counts time twice)."""
    assert expected > 0, f"{what}: nothing expected"
    err = (got - expected) / expected
    below = rel if low is None else low
    assert -below <= err <= rel, (
        f"{what}: got {got:.0f}, expected {expected:.0f} -{below:.0%}/+{rel:.0%} (off by {err:+.1%})\n{context}"
    )
