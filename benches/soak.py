"""The soak: programs that churn everything at once (benches/soak/*.py:
threads, code objects, recursion, generators, GC storms, asyncio tasks,
greenlets, forks and pools with a child killed by SIGKILL, subinterpreters,
the program's own 1 ms timers and faulthandler), each run plain and under
echion at 100 us in every mode (wall, CPU, memory, native, wall with no
sampler thread) and under
repeated `echion -p` attach/detach cycles, on every interpreter.

A run passes when the program's output and exit status are those of the
plain run, it ended before its timeout (no hang), and every profile it left
(parent and children) reads to its last complete sample with no error, the
program's own profile closed (its metadata has `duration`); children that
end by `os._exit` or a signal leave their profile as it was at their last
flush (10 ms), unclosed but readable.

    python benches/soak.py --short          a few minutes (what CI runs)
    python benches/soak.py --minutes 30     before a release: rounds until
                                            the time is up, peak RSS under
                                            echion reported at the start
                                            and at the end

Interpreters: --python PY (repeatable), else .venvs/py3.*/bin/python (each
with echion installed, as scripts/test installs it). Exit status 0 when
every run passed; each failure is one line naming the program, mode,
interpreter and what differed, with the run's directory kept.
"""

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "benches" / "soak"
MODES = {"wall": [], "cpu": ["-c"], "memory": ["-m"], "native": ["-n"], "no-thread": ["--no-thread"]}
# Programs that need something a version or venv may lack.
NEEDS = {"greenlets": "gevent"}

VALIDATE = r"""
import json, os, sys, tempfile
import echion.core as ec
out = {}
for path in sys.argv[1:]:
    d = tempfile.mkdtemp()
    target = os.path.join(d, "p.collapsed")
    try:
        r = ec.convert([path], target, keep_echion=True)
        meta = {}
        with open(target, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("# "):
                    break
                k, _, v = line[2:].rstrip("\n").partition(": ")
                meta[k] = v
        out[path] = {"samples": r["samples"], "cut": r["cut"], "closed": "duration" in meta}
    except Exception as e:
        out[path] = {"error": str(e)}
    finally:
        if os.path.exists(target):
            os.remove(target)
        os.rmdir(d)
print(json.dumps(out))
"""


def pythons(given):
    if given:
        return [os.path.abspath(p) for p in given]
    found = sorted(glob.glob(str(ROOT / ".venvs" / "py3.*" / "bin" / "python")), key=lambda p: int(p.split("py3.")[1].split("/")[0]))
    if not found:
        sys.exit("soak: no interpreter: give --python or make .venvs/py3.X (scripts/test does)")
    return found


def env():
    out = {k: v for k, v in os.environ.items() if not k.startswith("ECHION_")}
    out.pop("PYTHONPATH", None)
    out["PYTHONIOENCODING"] = "utf-8"
    return out


def run_tree(cmd, cwd, timeout):
    """Runs cmd in its own process group; returns (status, stdout, stderr,
    peak RSS in MB of the tree waited for). status: the exit code, -signal,
    or "hang" (killed at the timeout)."""
    with open(os.path.join(cwd, "stdout"), "wb") as out, open(os.path.join(cwd, "stderr"), "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                status = "hang"
                usage = None
                break
            time.sleep(0.02)
        proc.returncode = 0  # reaped above: Popen must not wait again
    # Whatever the program left running in its group goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if status != "hang":
        status = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    rss = usage.ru_maxrss / 1024 if usage else 0.0
    with open(os.path.join(cwd, "stdout"), "rb") as f:
        stdout = f.read()
    with open(os.path.join(cwd, "stderr"), "rb") as f:
        stderr = f.read()
    return status, stdout, stderr, rss


def validate(python, directory, killed):
    """Problems with the profiles in directory (a list of strings)."""
    files = sorted(glob.glob(os.path.join(directory, "*.mojo")))
    if not files:
        return ["no profile"]
    r = subprocess.run([python, "-c", VALIDATE, *files], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        return [f"validation failed (status {r.returncode}): " + (lines[-1] if lines else "no message")]
    problems = []
    cut_allowed = killed
    for path, v in json.loads(r.stdout).items():
        name = os.path.basename(path)
        if "error" in v:
            problems.append(f"{name}: {v['error']}")
        elif v["cut"]:
            # A write cut short by SIGKILL, at worst.
            if cut_allowed > 0:
                cut_allowed -= 1
            else:
                problems.append(f"{name}: cut: {v['cut'][0][1]}")
        elif name == "profile.mojo" and not v["closed"]:
            # The program's own process always ends normally; its children
            # may end by os._exit (forked workers) and close nothing.
            problems.append(f"{name}: not closed")
    return problems


class Soak:
    def __init__(self, args):
        self.args = args
        self.expected = {}
        self.failures = []
        self.runs = 0
        self.rss = {}  # (python, program, mode) -> [first peak, last peak] MB
        self.plain_rss = {}
        self.plain_seconds = {}

    def programs(self, python):
        out = []
        for p in sorted(PROGRAMS.glob("*.py")):
            need = NEEDS.get(p.stem)
            if need and subprocess.run([python, "-c", f"import {need}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                continue
            out.append(p)
        return out

    def fail(self, what, directory):
        self.failures.append(what)
        print("FAIL " + what + f" (kept: {directory})", flush=True)

    def plain(self, python, program, rounds):
        key = (python, program.stem, rounds)
        if key not in self.expected:
            d = tempfile.mkdtemp(prefix="soak-plain-")
            began = time.monotonic()
            # The plain run is the measure of the others: only a broken
            # machine makes it hang.
            status, out, err, rss = run_tree([python, str(program), str(rounds)], d, self.args.timeout * 5)
            self.plain_seconds[key] = time.monotonic() - began
            if status != 0:
                sys.exit(f"soak: {program.name} fails without echion on {python} (status {status}): {err.decode(errors='replace')[-300:]}")
            shutil.rmtree(d)
            self.expected[key] = (status, out)
            self.plain_rss[(python, program.stem)] = rss
        return self.expected[key]

    def limit(self, python, program, rounds):
        """Seconds after which a run under echion is a hang: --timeout, or
        --slowdown times the plain run's, whichever is longer."""
        return max(self.args.timeout, self.args.slowdown * self.plain_seconds[(python, program.stem, rounds)])

    def one(self, python, program, mode, rounds):
        label = f"{program.stem} {mode} {short(python)}"
        status0, out0 = self.plain(python, program, rounds)
        limit = self.limit(python, program, rounds)
        d = tempfile.mkdtemp(prefix=f"soak-{program.stem}-{mode}-")
        echion = str(Path(python).parent / "echion")
        self.runs += 1
        if mode == "attach":
            status, out, problems = self.attach(python, echion, program, rounds, d, limit)
            rss = 0.0
        else:
            cmd = [echion, "-i", self.args.interval, "-o", os.path.join(d, "profile.mojo"), *MODES[mode], python, str(program), str(rounds)]
            status, out, err, rss = run_tree(cmd, d, limit)
            problems = []
            if status == "hang":
                problems.append(f"hung (killed after {limit:.0f} s)")
            if (status, out) != (status0, out0):
                problems.append(f"status/output {status!r} {out[-200:]!r}, plain {status0!r} {out0[-200:]!r}; stderr {err[-300:]!r}")
            if status != "hang":
                problems += validate(python, d, killed=1 if program.stem == "processes" else 0)
        if problems:
            self.fail(f"{label}: " + "; ".join(problems), d)
            return
        shutil.rmtree(d)
        if rss:
            first_last = self.rss.setdefault((short(python), program.stem, mode), [rss, rss])
            first_last[1] = rss

    def attach(self, python, echion, program, rounds, d, limit):
        """The program runs plain; echion attaches, samples 0.2 s and
        detaches, again and again until it ends."""
        status0, out0 = self.plain(python, program, rounds)
        out_path = os.path.join(d, "stdout")
        with open(out_path, "wb") as out, open(os.path.join(d, "stderr"), "wb") as err:
            proc = subprocess.Popen([python, str(program), str(rounds)], cwd=d, env=env(), stdout=out, stderr=err, start_new_session=True)
            cycles = 0
            problems = []
            deadline = time.monotonic() + limit
            while proc.poll() is None and time.monotonic() < deadline:
                r = subprocess.run(
                    [echion, "-p", str(proc.pid), "-x", "0.2", "-i", self.args.interval, "-o", os.path.join(d, f"attach-{cycles}.mojo")],
                    env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                )
                cycles += 1
                if r.returncode != 0 and proc.poll() is None:
                    # The target may end while echion attaches: only an
                    # error while it runs counts.
                    text = r.stderr.decode(errors="replace").strip().splitlines()
                    if not any("exited" in line or "no such process" in line.lower() or "ended" in line for line in text):
                        problems.append(f"attach {cycles}: exit {r.returncode}: {text[-1] if text else ''}")
                        break
            if proc.poll() is None:
                # After a failed attach: the program goes on to its end.
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    problems.append("hung")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = proc.returncode
        with open(out_path, "rb") as f:
            out = f.read()
        if (status, out) != (status0, out0):
            problems.append(f"status/output {status!r} {out[-200:]!r}, plain {status0!r} {out0[-200:]!r} after {cycles} attaches")
        # Attaches that found the program already gone leave no profile.
        if glob.glob(os.path.join(d, "*.mojo")):
            problems += validate(python, d, killed=cycles if program.stem == "processes" else 0)
        return status, out, problems

    def round(self, rounds, modes):
        for python in pythons(self.args.python):
            for program in self.programs(python):
                for mode in modes:
                    self.one(python, program, mode, rounds * (5 if mode == "attach" else 1))


def short(python):
    return Path(python).parent.parent.name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--short", action="store_true", help="one round of small programs (a few minutes)")
    g.add_argument("--minutes", type=float, help="rounds of full-size programs until this many minutes have passed")
    ap.add_argument("--python", action="append", help="an interpreter with echion installed (repeatable)")
    ap.add_argument("--modes", default="wall,cpu,memory,native,no-thread,attach")
    ap.add_argument("--interval", default="100us")
    ap.add_argument("--timeout", type=float, default=120.0, help="a run still going after this many seconds is a hang (unless --slowdown allows longer)")
    ap.add_argument("--slowdown", type=float, default=10.0, help="a run under echion may take this many times the plain run's time before it is a hang")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES and m != "attach"]
    if unknown:
        sys.exit(f"soak: unknown mode {unknown[0]!r}: give some of wall,cpu,memory,native,no-thread,attach")
    soak = Soak(args)
    start = time.monotonic()
    if args.short:
        soak.round(3, modes)
    else:
        n = 0
        while time.monotonic() - start < args.minutes * 60:
            soak.round(20, modes)
            n += 1
            print(f"round {n}: {soak.runs} runs, {len(soak.failures)} failures, {(time.monotonic() - start) / 60:.1f} min", flush=True)
        print("peak RSS under echion (MB: first round -> last round; plain):")
        for (py, prog, mode), (first, last) in sorted(soak.rss.items()):
            plain = soak.plain_rss.get((next(p for p in pythons(args.python) if short(p) == py), prog), 0)
            print(f"  {py:8} {prog:16} {mode:7} {first:7.1f} -> {last:7.1f}   plain {plain:7.1f}")
    took = time.monotonic() - start
    print(f"soak: {soak.runs} runs, {len(soak.failures)} failed, {took / 60:.1f} min")
    return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
