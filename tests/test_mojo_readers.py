"""Files from our writer, and the real files in ../shared/fixtures, read by
austin-python 1.7 and 2.x give what our reader gives."""

import os
import subprocess
from pathlib import Path

import pytest

from harness import ROOT, assert_readers_agree, austin2_available, read_all, read_austin1, read_austin2, read_ours, totals, write_sample

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

FIXTURES = Path(os.environ.get("ECHION_SHARED", ROOT.parent / "shared")) / "fixtures" / "mojo"


def test_our_v3_profile_reads_the_same_everywhere(tmp_path):
    p = read_all(write_sample(tmp_path / "sample.mojo"))
    assert p.ours["version"] == 3
    assert p.ours["metadata"] == {"mode": "wall", "interval": "1000", "sampler": "echion", "samples": "300"}
    assert len(p.ours["samples"]) == 300
    threads = {s["thread"] for s in p.ours["samples"]}
    assert threads == {"MainThread", "worker-1", "café-計算"}
    deep = max(len(s["frames"]) for s in p.ours["samples"])
    assert deep == 83
    assert any(f[1].startswith("計算.café_") and f[0] == "/tmp/données/計算.py" for s in p.ours["samples"] for f in s["frames"])
    assert sum(totals(p.ours).values()) == sum(1000 + i for i in range(300))
    assert p.austin1 is not None
    assert_readers_agree(p)


def test_our_v4_profile_reads_the_same_in_austin_python_2(tmp_path):
    path = write_sample(tmp_path / "sample4.mojo", v4=True)
    v3 = read_all(write_sample(tmp_path / "sample3.mojo"), austin1=False)
    p = read_all(path, austin1=False)
    assert p.ours["version"] == 4
    # STACK_REPEAT makes the file smaller but the samples identical.
    assert path.stat().st_size < (tmp_path / "sample3.mojo").stat().st_size
    assert p.ours["samples"] == v3.ours["samples"]
    if austin2_available():
        assert p.austin2 is not None
        assert_readers_agree(p)
    # austin-python 1.7 does not know STACK_REPEAT: why v3 is the default.
    with pytest.raises(subprocess.CalledProcessError):
        read_austin1(path)


@pytest.mark.once
@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIXTURES.glob("*.mojo") if "corrupt" not in p.name and "austinp" not in p.name) if FIXTURES.is_dir() else ["<missing>"],
)
def test_real_files_read_the_same(name):
    assert FIXTURES.is_dir(), f"fixtures not found at {FIXTURES}: set ECHION_SHARED"
    path = FIXTURES / name
    version = path.read_bytes()[3]
    p = read_all(path, austin1=version < 4)
    assert p.ours["samples"], name
    # austin-python 1.7 reports no interpreter id before v3 as -1 (None here);
    # 2.x does the same with None.
    assert_readers_agree(p)


def test_austinp_file_that_austin_python_rejects():
    """austinp writes native frame definitions before the first STACK, which
    austin-python refuses (it resolves keys in the last STACK's process).
    Ours keeps them in a process-less namespace and reads the file whole."""
    path = FIXTURES / "austin-python-austinp.mojo"
    ours = read_ours(path)
    assert len(ours["samples"]) > 1000
    assert all(s["time"] is not None for s in ours["samples"])
    assert any(not f[0].endswith(".py") and not f[0].startswith("<") for s in ours["samples"] for f in s["frames"])
    with pytest.raises(subprocess.CalledProcessError):
        read_austin1(path)
    if austin2_available():
        with pytest.raises(subprocess.CalledProcessError):
            read_austin2(path)


def test_corrupt_echion_file_is_reported_with_its_offset():
    path = FIXTURES / "echion-0.3.5-nonascii-corrupt-py311.mojo"
    from harness import mojo_tool

    out = subprocess.run([str(mojo_tool()), "dump", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert err.endswith("unknown event 0 at byte offset 35402"), err
    assert len(err.splitlines()) == 1
