"""How long `echion -p` stops the target, and how long until the first
sample, for each shape of target (tests/targets/attach_target.py): the main
thread computing, sleeping in time.sleep while a worker computes, waiting on
an Event. Medians over --runs attaches per shape and interpreter; each
attach uses -x 0.2 and -v (which says how the thread was borrowed).

    .venvs/py3.12/bin/python benches/attach.py [--runs 7] [--versions 3.8 3.12]

The echion command is the one installed beside the Python that runs this
script; targets run with each plain pyenv interpreter (no echion in it).
Not run by CI.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "targets" / "attach_target.py"
ECHION = Path(sys.executable).parent / "echion"
ATTACHED = re.compile(r"stopped (\d+) us, first sample after (\d+) ms")
BORROWED = re.compile(r"borrowed for (a direct run|a pending call)")


def python_for(version):
    found = sorted(Path("/root/.pyenv/versions").glob(version + ".*/bin/python3"))
    if not found:
        raise SystemExit("no CPython %s under /root/.pyenv/versions" % version)
    return str(found[-1])


def one(python, scenario, tmp):
    stop = Path(tmp) / ("stop-%s-%f" % (scenario, time.time()))
    target = subprocess.Popen([python, str(TARGET), scenario, str(stop)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        pid = int(target.stdout.readline().split()[1])
        time.sleep(0.3)
        run = subprocess.run(
            [str(ECHION), "-v", "-x", "0.2", "-o", str(Path(tmp) / "p.mojo"), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        err = run.stderr.decode()
        m, how = ATTACHED.search(err), BORROWED.search(err)
        if run.returncode != 0 or not m:
            raise SystemExit("attach failed: " + err)
        stop.touch()
        target.wait(timeout=30)
        return int(m.group(1)), int(m.group(2)), how.group(1) if how else "?"
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--versions", nargs="*", default=["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"])
    args = ap.parse_args()
    print("%-6s %-13s %-16s %14s %18s" % ("python", "target", "borrowed for", "stopped (us)", "first sample (ms)"))
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.versions:
            python = python_for(version)
            for scenario in ("busy", "sleep_worker", "event"):
                results = [one(python, scenario, tmp) for _ in range(args.runs)]
                hows = sorted({r[2] for r in results})
                print(
                    "%-6s %-13s %-16s %14d %18d"
                    % (
                        version,
                        scenario,
                        "/".join(hows),
                        statistics.median(r[0] for r in results),
                        statistics.median(r[1] for r in results),
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
