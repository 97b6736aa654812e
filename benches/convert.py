"""Converting a large MOJO file: time and peak memory of each of our formats
against austin-python's converters on the same file.

    python benches/convert.py --python .venvs/py3.11/bin/python [--size-mb 100]

Makes the profile first (unless --mojo names one): a program with 1,000
idle threads and one busy one, profiled at 100 µs, until the file holds
--size-mb MB. Then, each --runs times: ``echion-convert`` to SVG,
speedscope, pprof and collapsed stacks; austin-python 1.7's ``mojo2austin``
(MOJO to Austin's collapsed text), and its ``austin2speedscope`` and
``austin2pprof`` (which read that text, not MOJO: the time of
``mojo2austin`` is theirs too). Reports medians of wall time and of peak
RSS (``os.wait4``), and, to show that ours streams, our peak RSS when the
file is given twice (twice the bytes, the same stacks: it must not double).
Our echion must be installed for --python; austin-python comes with the
test venvs. Not run by CI.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = """
import threading, time
stop = threading.Event()
def idle():
    stop.wait()
threads = [threading.Thread(target=idle, daemon=True) for _ in range(1000)]
for t in threads: t.start()
def busy(n):
    return n if n < 2 else busy(n - 1) + busy(n - 2)
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    busy(18)
stop.set()
"""


def measure(cmd, stdout=subprocess.DEVNULL):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed: {err.strip()}")
    return wall, usage.ru_maxrss / 1024


def make_profile(python: Path, out: Path, size_mb: int):
    script = out.with_suffix(".py")
    script.write_text(WORKLOAD)
    seconds = max(2.0, size_mb / 20.0)
    while True:
        subprocess.run([str(python.parent / "echion"), "-i", "100", "-o", str(out), str(python), str(script), str(seconds)], check=True)
        size = out.stat().st_size / 1e6
        if size >= size_mb * 0.95:
            return
        seconds *= size_mb / max(size, 1.0) * 1.1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, type=Path)
    ap.add_argument("--mojo", type=Path, help="convert this file instead of making one")
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peer-runs", type=int, default=1, help="runs of austin-python's converters (minutes each on 100 MB)")
    ap.add_argument("--no-peers", action="store_true", help="only ours")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="echion-convert-bench-"))
    bindir = args.python.parent
    mojo = args.mojo
    if mojo is None:
        mojo = tmp / "big.mojo"
        make_profile(args.python, mojo, args.size_mb)
    size = mojo.stat().st_size / 1e6
    ours = {
        "echion-convert svg": lambda m: [bindir / "echion-convert", "-q", m, "-o", tmp / "o.svg"],
        "echion-convert speedscope": lambda m: [bindir / "echion-convert", "-q", m, "-o", tmp / "o.speedscope.json"],
        "echion-convert pprof": lambda m: [bindir / "echion-convert", "-q", m, "-o", tmp / "o.pprof"],
        "echion-convert collapsed": lambda m: [bindir / "echion-convert", "-q", m, "-o", tmp / "o.collapsed"],
    }
    austin_text = tmp / "o.austin"
    peers = {
        "mojo2austin (austin-python 1.7)": lambda m: [bindir / "mojo2austin", m, austin_text],
        "austin2speedscope (after mojo2austin)": lambda m: [bindir / "austin2speedscope", austin_text, tmp / "a.speedscope.json"],
        "austin2pprof (after mojo2austin)": lambda m: [bindir / "austin2pprof", austin_text, tmp / "a.pprof"],
    }
    rows = {}
    print(f"\n{mojo} ({size:.1f} MB), medians\n", flush=True)
    print("| converter | runs | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|", flush=True)
    jobs = [(name, make, args.runs) for name, make in ours.items()]
    if not args.no_peers:
        jobs += [(name, make, args.peer_runs) for name, make in peers.items()]
    for name, make, runs in jobs:
        r = [measure([str(a) for a in make(mojo)]) for _ in range(runs)]
        rows[name] = r
        wall = statistics.median(w for w, _ in r)
        if "after mojo2austin" in name:
            wall += statistics.median(w for w, _ in rows["mojo2austin (austin-python 1.7)"])
        print(f"| {name} | {runs} | {wall:.2f} | {statistics.median(x for _, x in r):.0f} |", flush=True)
    # Streaming: our peak memory when the same file is read twice (the
    # bytes double, the distinct stacks do not).
    one = [measure([str(a) for a in ours["echion-convert pprof"](mojo)])[1] for _ in range(args.runs)]
    two = [measure([str(bindir / "echion-convert"), "-q", str(mojo), str(mojo), "-o", str(tmp / "d.pprof")])[1] for _ in range(args.runs)]
    print(
        f"\nstreaming: pprof of one copy {statistics.median(one):.0f} MB peak, "
        f"of the same file read twice ({2 * size:.0f} MB in) {statistics.median(two):.0f} MB peak"
    )


if __name__ == "__main__":
    main()
