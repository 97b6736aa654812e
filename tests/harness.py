"""End-to-end harness: run things that write MOJO, read the result with
every independent reader available and with our own.

Later issues add targets and assertions; the reading and comparing lives
here once. Environment:

- ``ECHION_MOJO_TOOL``: our reader/writer front end (the ``mojo`` example of
  echion-mojo); defaults to ``target/release/examples/mojo``.
- ``ECHION_AUSTIN2_PATH``: a directory holding austin-python 2.x (installed
  with ``pip --target``); unset on interpreters older than 3.10.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
READ_AUSTIN = Path(__file__).resolve().parent / "readers" / "read_austin.py"


def mojo_tool() -> Path:
    tool = Path(os.environ.get("ECHION_MOJO_TOOL", ROOT / "target" / "release" / "examples" / "mojo"))
    if not tool.exists():
        raise RuntimeError(f"{tool} not found: build it with `cargo build --release -p echion-mojo --example mojo`")
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


def read_all(path, austin1=True) -> Profiles:
    """Read ``path`` with our reader, austin-python 1.7 (unless told not to:
    it cannot read MOJO v4) and austin-python 2.x where available."""
    return Profiles(
        path=Path(path),
        ours=read_ours(path),
        austin1=read_austin1(path) if austin1 else None,
        austin2=read_austin2(path) if austin2_available() else None,
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
