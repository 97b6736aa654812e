"""The profiled program's stdin, stdout, stderr and exit status (death by
signal included) are what they are without echion: the command is exec'd."""

import signal

import pytest

from harness import run_echion, run_plain, target

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

TARGET = target("passthrough.py")
STDIN = "stdin: ünïcode 計算\nsecond line\n".encode("utf-8")

CASES = {
    "ok": 0,
    "exit3": 3,
    "raise": 1,
    "os_exit": 5,
    "sigterm": -signal.SIGTERM,
    "sigkill": -signal.SIGKILL,
}


@pytest.mark.parametrize("how", list(CASES))
def test_output_and_exit_status_are_unchanged(tmp_path, how):
    (tmp_path / "plain").mkdir()
    plain = run_plain(tmp_path / "plain", TARGET, args=[how], stdin=STDIN)
    assert plain.returncode == CASES[how], plain.describe()
    # What the profile holds is for the other tests: a program killed with
    # SIGKILL may leave anything.
    profiled = run_echion(tmp_path, TARGET, args=[how], stdin=STDIN, expect_profile=None)
    assert profiled.returncode == plain.returncode, profiled.describe()
    assert profiled.stdout.decode("utf-8") == plain.stdout.decode("utf-8")
    assert profiled.stderr.decode("utf-8") == plain.stderr.decode("utf-8")
    assert "stdin: 'stdin: ünïcode 計算\\nsecond line\\n'" in profiled.stdout.decode("utf-8")
