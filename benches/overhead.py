"""Whole-process overhead of echion against plain python and its peers.

Runs a workload (benches/workloads/*.py) bare and under each profiler,
interleaved, several times, and reports medians and ratios to the bare run:
wall time, CPU time of everything started (user + sys of the process tree),
the share of the samples asked for that the profile holds, and bytes per
sample. Needs root (py-spy) and, for the peers, their own venvs:

    python benches/overhead.py --python .venvs/py3.11/bin/python \\
        --echion035 .venvs/bench-echion035/bin/python --py-spy .venvs/bench-tools/bin/py-spy

Our echion is the one installed for --python (pip install . or the wheel).

With --floor it adds plain python with a preloaded thread that only wakes
up every 1 ms (benches/ticker.c): the part of any 1 ms sampler's CPU ratio
that is this machine's wake-up cost, not the sampler's work.

With --memory it compares memory modes instead, on
benches/workloads/alloc_heavy.py: echion -m, memray's default mode (in its
own venv, --memray), python -X tracemalloc and echion 0.3.5 -m; each run's
peak RSS (os.wait4 on the child) and profile size are reported too, and runs
that crash are counted instead of stopping the benchmark.
benches/memory.sh makes the peers' venvs and runs it.
"""

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# cargo test builds it (optimised in the dev profile too).
MOJO_TOOL = Path(os.environ.get("ECHION_MOJO_TOOL", ROOT / "target" / "debug" / "examples" / "mojo"))


def run(cmd, env=None):
    """Runs cmd; returns (wall seconds, CPU seconds of the whole tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_tree(cmd, stderr, env=None, timeout=None):
    """Runs cmd and waits for it with os.wait4, whose rusage covers the child
    and every descendant it waited for: returns a dict with wall seconds,
    CPU seconds of that tree, its peak RSS in MB (the largest max RSS of any
    one process in it: the launchers exec, memray runs in-process) and
    "status": 0, the exit code, "signal N" or "timeout"."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    timed_out = []

    def kill():
        timed_out.append(True)
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if timer:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if timed_out:
        outcome = "timeout"
    elif proc.returncode < 0:
        outcome = f"signal {signal.Signals(-proc.returncode).name}"
    else:
        outcome = proc.returncode
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "status": outcome,
    }


def profile_bytes(out):
    """Size of the profile written at out (or, where the profiler added a
    suffix such as a pid, of every file whose name starts with it)."""
    if out.exists():
        return out.stat().st_size
    found = list(out.parent.glob(out.name + "*"))
    return sum(f.stat().st_size for f in found) if found else None


def memory_main(args, tmp):
    """--memory: memory modes side by side, each run paired with a plain one."""
    wl = args.workload or str(ROOT / "benches" / "workloads" / "alloc_heavy.py")
    configs = {
        "echion-rs -m": lambda out: [args.python, "-m", "echion", "-m", "-o", str(out), args.python, wl],
    }
    if args.memray:
        configs["memray"] = lambda out: [args.memray, "-m", "memray", "run", "-o", str(out), "--force", wl]
        if args.memray_python_allocators:
            configs["memray pymalloc"] = lambda out: [
                args.memray, "-m", "memray", "run", "--trace-python-allocators", "-o", str(out), "--force", wl
            ]
    if not args.no_tracemalloc:
        configs["tracemalloc"] = lambda out: [args.python, "-X", "tracemalloc", wl]
    if args.echion035:
        configs["echion 0.3.5 -m"] = lambda out: [args.echion035, "-m", "echion", "-m", "-o", str(out), args.echion035, wl]
    configs = {n: c for n, c in configs.items() if not any(s in n for s in args.skip)}

    plain = [args.python, wl]
    results = {"python": [], **{name: [] for name in configs}}
    paired = {name: [] for name in configs}
    log = tmp / "stderr.log"
    for run_no in range(args.runs):
        for name, make in configs.items():
            out = tmp / f"{name.replace(' ', '_')}.{run_no}.out"
            # Each profiled run is paired with a plain run just before it:
            # the host's speed drifts between rounds, much less between
            # two neighbouring runs.
            with open(log, "ab") as err:
                bare = run_tree(plain, err)
            if bare["status"] != 0:
                sys.exit(f"plain python failed ({bare['status']}): see {log}")
            paired[name].append(bare)
            results["python"].append(bare)
            errfile = tmp / f"{name.replace(' ', '_')}.{run_no}.stderr"
            with open(errfile, "wb") as err:
                row = run_tree(make(out), err, timeout=args.timeout)
            row["bytes"] = profile_bytes(out)
            results[name].append(row)
            crashed = "" if row["status"] == 0 else f" CRASHED ({row['status']}, stderr in {errfile})"
            print(
                f"run {run_no} {name:18s} wall {row['wall']:7.3f}s cpu {row['cpu']:7.3f}s rss {row['rss_mb']:7.1f}MB"
                + (f" profile {row['bytes']}B" if row["bytes"] is not None else "")
                + crashed,
                file=sys.stderr,
            )
            if out.exists():
                out.unlink()  # the profiles of a slow peer can be large

    # The machine is shared and its speed drifts: each run is compared with
    # its own plain run (taken moments before), and the median of those
    # ratios is reported. Crashed runs are left out of the medians.
    base = results["python"]
    base_wall = statistics.median(r["wall"] for r in base)
    base_cpu = statistics.median(r["cpu"] for r in base)
    base_rss = statistics.median(r["rss_mb"] for r in base)
    print(
        f"\nworkload {Path(wl).name}, {args.runs} rounds; median of per-round ratios to plain python"
        f" (median plain: wall {base_wall:.3f}s, cpu {base_cpu:.3f}s); peak RSS and profile size: medians"
        " of the runs that did not crash\n"
    )
    print(f"| {'profiler':18s} | wall ratio | CPU ratio | peak RSS (MB) | profile (bytes) | crashed |")
    print(f"|{'-' * 20}|-----------:|----------:|--------------:|----------------:|--------:|")
    print(f"| {'python':18s} | {1:10.3f} | {1:9.3f} | {base_rss:13.1f} | {'-':>15s} | {'':>7s} |")
    for name in configs:
        pairs = [(r, b) for r, b in zip(results[name], paired[name]) if r["status"] == 0]
        crashed = f"{len(results[name]) - len(pairs)}/{len(results[name])}"
        if not pairs:
            print(f"| {name:18s} | {'-':>10s} | {'-':>9s} | {'-':>13s} | {'-':>15s} | {crashed:>7s} |")
            continue
        wall = statistics.median(r["wall"] / b["wall"] for r, b in pairs)
        cpu = statistics.median(r["cpu"] / b["cpu"] for r, b in pairs)
        rss = statistics.median(r["rss_mb"] for r, _ in pairs)
        sizes = [r["bytes"] for r, _ in pairs if r["bytes"] is not None]
        size = f"{statistics.median(sizes):,.0f}" if sizes else "-"
        print(f"| {name:18s} | {wall:10.3f} | {cpu:9.3f} | {rss:13.1f} | {size:>15s} | {crashed:>7s} |")
    spread = statistics.quantiles([r["wall"] for r in base], n=4) if len(base) >= 4 else []
    if spread:
        print(f"\nplain python wall time, quartiles over all {len(base)} plain runs: " + ", ".join(f"{q:.3f}s" for q in spread))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "paired_plain": paired}, indent=1))


def mojo_samples(path, thread="MainThread"):
    """Samples of one thread in a MOJO file, read by our reader: its time
    over the profile's interval. (Our profiles write a stack that did not
    change once with the time of all its ticks, so records undercount the
    ticks; a tick missed shows as time missing.)"""
    out = subprocess.run([str(MOJO_TOOL), "dump", str(path)], check=True, stdout=subprocess.PIPE)
    data = json.loads(out.stdout)
    mine = [s for s in data["samples"] if s["thread"] == thread]
    interval = int(data.get("metadata", {}).get("interval", 0) or 0)
    if interval and all(s.get("time") is not None for s in mine):
        return sum(s["time"] for s in mine) / interval
    return len(mine)


def our_metadata(path, keys=("interval", "ticks", "duration", "sampler_cpu")):
    """Values of metadata `keys` of one of our profiles, read from its first
    4 KiB (where `interval` is) and last 8 KiB (the closing metadata), not
    by decoding the whole file (a profile of many asyncio tasks holds
    millions of samples). A key not found is left out."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read()
    except OSError:
        return {}
    found = {}
    for key in keys:
        # A metadata event: its id (1), the key, NUL, the value, NUL.
        name = b"\1" + key.encode() + b"\0"
        at = tail.rfind(name)
        chunk = tail
        if at < 0:
            at, chunk = head.find(name), head
        if at < 0:
            continue
        value = chunk[at + len(name) :].split(b"\0", 1)[0]
        if value.isdigit():
            found[key] = int(value)
    return found


def tick_share(md):
    """Ticks taken over ticks asked while our sampler ran (`ticks` ÷
    `duration` / `interval` of its metadata `md`): the share of samples
    asked that were taken, without the interpreter's start and end that the
    wall time holds. None when `md` does not say."""
    try:
        return md["ticks"] / (md["duration"] / md["interval"])
    except (KeyError, ZeroDivisionError):
        return None


def pyspy_samples(path):
    """py-spy --format raw: collapsed stacks with counts."""
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            total += int(count)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="interpreter with our echion installed")
    ap.add_argument("--echion035", help="interpreter with echion 0.3.5 from PyPI installed")
    ap.add_argument("--py-spy", help="the py-spy executable")
    ap.add_argument("--memray", help="--memory: interpreter with memray installed")
    ap.add_argument(
        "--memray-python-allocators",
        action="store_true",
        help="--memory: also run memray with --trace-python-allocators (its default mode sees malloc only, not pymalloc)",
    )
    ap.add_argument("--no-tracemalloc", action="store_true", help="--memory: leave out python -X tracemalloc")
    ap.add_argument("--timeout", type=float, default=600, help="--memory: a profiled run still going after this many seconds is killed and counted as crashed")
    ap.add_argument(
        "--workload",
        help="default: benches/workloads/cpu_single.py, or benches/workloads/alloc_heavy.py with --memory",
    )
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="also run the echion installed for PYTHON (another build, say the last release's) at 1 ms and 100 us, labelled LABEL",
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument(
        "--memory",
        action="store_true",
        help="compare memory modes (echion -m, memray, tracemalloc, echion 0.3.5 -m) instead of the time-mode configurations",
    )
    ap.add_argument("--skip", action="append", default=[], help="leave out the configurations whose name contains this")
    ap.add_argument(
        "--native",
        action="store_true",
        help="native stacks: echion -n and py-spy --native (with --py-spy) at 1 ms, beside plain echion at 1 ms",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="add plain python with a thread that only wakes up every 1 ms (benches/ticker.c, built with cc and preloaded): what a 1 ms wake-up costs on this machine",
    )
    ap.add_argument(
        "--no-samples",
        action="store_true",
        help="do not count samples (profiles of many asyncio tasks hold millions): report bytes per tick instead",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="echion-bench-"))
    if args.memory:
        return memory_main(args, tmp)
    wl = args.workload or str(ROOT / "benches" / "workloads" / "cpu_single.py")
    configs = {"python": lambda out: ([args.python, wl], None)}
    for interval, label in ((1000, "1ms"), (100, "100us")):
        configs[f"echion-rs {label}"] = (
            lambda out, i=interval: ([args.python, "-m", "echion", "-i", str(i), "-o", str(out), args.python, wl], i)
        )
        # No sampler thread: the ticks run on the program's main thread
        # (their own time is the profile's `sampler_cpu`).
        configs[f"echion-rs --no-thread {label}"] = (
            lambda out, i=interval: ([args.python, "-m", "echion", "--no-thread", "-i", str(i), "-o", str(out), args.python, wl], i)
        )
    if args.floor:
        ticker = tmp / "ticker.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-pthread", "-o", str(ticker), str(ROOT / "benches" / "ticker.c"), "-lrt"], check=True)
        configs["1 ms wake-ups only"] = lambda out: ([args.python, wl], None, {**os.environ, "LD_PRELOAD": str(ticker)})
    # The same with one process_vm_readv per tick instead of guarded loads.
    configs["echion-rs 1ms syscalls"] = lambda out: (
        [args.python, "-m", "echion", "-i", "1000", "-o", str(out), args.python, wl],
        1000,
        {**os.environ, "ECHION_DIRECT_READS": "0"},
    )
    for spec in args.compare:
        tag, _, other = spec.partition("=")
        if not other:
            ap.error(f"--compare wants LABEL=PYTHON, got {spec!r}")
        for interval, label in ((1000, "1ms"), (100, "100us")):
            configs[f"{tag} {label}"] = (
                lambda out, i=interval, py=other: ([py, "-m", "echion", "-i", str(i), "-o", str(out), py, wl], i)
            )
    if args.echion035:
        for interval, label in ((1000, "1ms"), (100, "100us")):
            configs[f"echion 0.3.5 {label}"] = (
                lambda out, i=interval: ([args.echion035, "-m", "echion", "-i", str(i), "-o", str(out), args.echion035, wl], i)
            )
    if args.py_spy:
        for rate, label in ((1000, "1ms"), (10000, "100us")):
            configs[f"py-spy {label}"] = (
                lambda out, r=rate: (
                    [args.py_spy, "record", "-r", str(r), "-f", "raw", "-o", str(out), "--", args.python, wl],
                    1_000_000 // r,
                )
            )

    if args.native:
        # Native stacks: ours and py-spy's at 1 ms, beside plain echion at
        # 1 ms (the other configurations are left out).
        configs = {k: v for k, v in configs.items() if k in ("python", "echion-rs 1ms")}
        configs["echion-rs -n 1ms"] = lambda out: (
            [args.python, "-m", "echion", "-n", "-i", "1000", "-o", str(out), args.python, wl],
            1000,
        )
        configs["echion-rs -n -c 1ms"] = lambda out: (
            [args.python, "-m", "echion", "-n", "-c", "-i", "1000", "-o", str(out), args.python, wl],
            1000,
        )
        if args.py_spy:
            configs["py-spy --native 1ms"] = lambda out: (
                [args.py_spy, "record", "--native", "-r", "1000", "-f", "raw", "-o", str(out), "--", args.python, wl],
                1000,
            )
    configs = {n: c for n, c in configs.items() if not any(s in n for s in args.skip)}
    results = {name: [] for name in configs}
    paired = {name: [] for name in configs}
    for run_no in range(args.runs):
        for name, make in configs.items():
            if name == "python":
                continue
            out = tmp / f"{name.replace(' ', '_')}.{run_no}.out"
            made = make(out)
            cmd, interval = made[0], made[1]
            env = made[2] if len(made) > 2 else None
            # Each profiled run is paired with a plain run just before it:
            # the host's speed drifts between rounds, much less between
            # two neighbouring runs.
            bare_wall, bare_cpu = run(configs["python"](out)[0])
            paired[name].append({"wall": bare_wall, "cpu": bare_cpu})
            results["python"].append({"wall": bare_wall, "cpu": bare_cpu})
            wall, cpu = run(cmd, env)
            row = {"wall": wall, "cpu": cpu}
            if interval and name.startswith("echion-rs"):
                # The sampler thread's own CPU seconds, measured inside the
                # process: much less noisy than the difference of two
                # whole-process CPU times on a shared machine.
                md = our_metadata(out)
                row["sampler_cpu"] = md["sampler_cpu"] / 1e6 if "sampler_cpu" in md else None
                row["tick_share"] = tick_share(md)
            if interval and args.no_samples:
                row["samples"] = row["expected"] = wall * 1e6 / interval
                row["bytes"] = out.stat().st_size
            elif interval:
                samples = pyspy_samples(out) if name.startswith("py-spy") else mojo_samples(out)
                row["samples"] = samples
                row["expected"] = wall * 1e6 / interval
                row["bytes"] = out.stat().st_size
            results[name].append(row)
            print(f"run {run_no} {name:22s} wall {wall:6.3f}s cpu {cpu:6.3f}s" + (f" samples {row['samples']}" if interval else ""), file=sys.stderr)

    # The machine is shared and its speed drifts: each run is compared with
    # its own plain run (taken moments before), and the median of those
    # ratios is reported.
    base = results["python"]
    base_wall = statistics.median(r["wall"] for r in base)
    base_cpu = statistics.median(r["cpu"] for r in base)
    print(f"\nworkload {Path(wl).name}, {args.runs} rounds; median of per-round ratios to plain python (median plain: wall {base_wall:.3f}s, cpu {base_cpu:.3f}s)\n")
    unit = "bytes / tick" if args.no_samples else "bytes / sample"
    print(f"| {'profiler':22s} | wall ratio | CPU ratio | samples / asked | {unit:>14s} |")
    print(f"|{'-' * 24}|-----------:|----------:|----------------:|---------------:|")
    for name, rows in results.items():
        if name == "python":
            continue
        pairs = list(zip(rows, paired[name]))
        wall = statistics.median(r["wall"] / b["wall"] for r, b in pairs)
        cpu = statistics.median(r["cpu"] / b["cpu"] for r, b in pairs)
        if "samples" in rows[0]:
            share = statistics.median(r["samples"] / r["expected"] for r in rows)
            bps = statistics.median(r["bytes"] / max(r["samples"], 1) for r in rows)
            shown = "not counted" if args.no_samples else f"{share:.1%}"
            print(f"| {name:22s} | {wall:10.3f} | {cpu:9.3f} | {shown:>15s} | {bps:14.1f} |")
        else:
            print(f"| {name:22s} | {wall:10.3f} | {cpu:9.3f} | {'':>15s} | {'':>14s} |")
    # The sampler thread's own CPU time over its paired plain run's CPU
    # time: the CPU ratio without the noise of the program's own CPU time.
    own = {
        name: statistics.median(1 + r["sampler_cpu"] / b["cpu"] for r, b in zip(rows, paired[name]))
        for name, rows in results.items()
        if rows and all(r.get("sampler_cpu") is not None for r in rows)
    }
    if own:
        print("\n1 + the sampler thread's own CPU time (from the profile's `sampler_cpu`) ÷ the paired plain run's CPU time, median;")
        print("ticks taken ÷ ticks asked while it ran (`ticks` ÷ `duration` / `interval`), median:")
        for name, ratio in own.items():
            shares = [r["tick_share"] for r in results[name] if r.get("tick_share") is not None]
            taken = f"{statistics.median(shares):.1%}" if shares else "-"
            print(f"  {name:22s} {ratio:.3f}   {taken}")
    spread = statistics.quantiles([r["wall"] for r in base], n=4) if len(base) >= 4 else []
    if spread:
        print(f"\nplain python wall time, quartiles over all {len(base)} plain runs: " + ", ".join(f"{q:.3f}s" for q in spread))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
