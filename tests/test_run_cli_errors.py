"""Bad command lines: one line on stderr naming the problem (and at most
one hint line), a non-zero exit, and nothing run, nothing written."""

import os
import subprocess
import sys

import pytest

from harness import echion_env, profile_files, target

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

TARGET = target("side_effect.py")


def cases(tmp_path):
    not_executable = tmp_path / "not-executable"
    not_executable.write_text("#!/bin/sh\ntouch ran\n")
    os.chmod(not_executable, 0o644)
    py, t = sys.executable, str(TARGET)
    out = ["-o", str(tmp_path / "profile.%(pid).mojo")]
    return {
        # name: (arguments after `echion`, what the error line must name)
        "unknown option": (["--bogus-option", *out, py, t], ("--bogus-option",)),
        "interval zero": (["-i", "0", *out, py, t], ("interval", "0")),
        "interval negative": (["-i", "-5", *out, py, t], ("interval", "-5")),
        "interval unparsable": (["-i", "abc", *out, py, t], ("interval", "abc")),
        "interval unit unknown": (["-i", "10parsecs", *out, py, t], ("interval", "10parsecs")),
        "exposure unparsable": (["-x", "soon", *out, py, t], ("exposure", "soon")),
        "output directory missing": (["-o", str(tmp_path / "missing" / "p.mojo"), py, t], (str(tmp_path / "missing"),)),
        "command not found": ([*out, "echion-no-such-command-xyz", t], ("echion-no-such-command-xyz",)),
        "command not executable": ([*out, str(not_executable)], (str(not_executable),)),
        "no command": (out, ("command",)),
        "nothing at all": ([], ("command",)),
    }


NAMES = [
    "unknown option",
    "interval zero",
    "interval negative",
    "interval unparsable",
    "interval unit unknown",
    "exposure unparsable",
    "output directory missing",
    "command not found",
    "command not executable",
    "no command",
    "nothing at all",
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_line_and_runs_nothing(tmp_path, name):
    table = cases(tmp_path)
    assert sorted(table) == sorted(NAMES)
    args, named = table[name]
    cmd = [sys.executable, "-m", "echion", *args]
    out = subprocess.run(cmd, cwd=str(tmp_path), env=echion_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    err = out.stderr.decode("utf-8", errors="replace")
    what = f"{' '.join(cmd)} → rc {out.returncode}, stderr:\n{err}"
    assert out.returncode > 0, what
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2, what
    assert "Traceback" not in err, what
    for word in named:
        assert word in lines[0], f"the error line does not name {word!r}: {what}"
    assert out.stdout == b"", what
    # Nothing ran and nothing was written.
    assert not (tmp_path / "ran").exists(), what
    assert not profile_files(tmp_path), what
    assert not list(tmp_path.glob("*.echion")), what
