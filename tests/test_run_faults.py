"""echion reads the interpreter with loads guarded by its own SIGSEGV/SIGBUS
handler. A fault of the program must end it exactly as without echion
(faulthandler's report included), and a program that installs its own
handler later is still profiled (through process_vm_readv from then on)."""

import signal

from harness import marker_line, run_echion, run_plain, stack_summary, target, total_leaf

TARGET = target("faults.py")
L = {m: marker_line(TARGET, m) for m in ("before", "after", "crash")}


def test_a_crash_of_the_program_is_the_same_crash(tmp_path):
    env = {"PYTHONFAULTHANDLER": "1"}
    (tmp_path / "plain").mkdir()
    (tmp_path / "echion").mkdir()
    plain = run_plain(tmp_path / "plain", TARGET, args=["crash"], env=env)
    run = run_echion(tmp_path / "echion", TARGET, args=["crash"], env=env)
    assert plain.returncode == -signal.SIGSEGV, plain.describe()
    assert run.returncode == plain.returncode, run.describe()
    # faulthandler (installed before echion's handler) still reports it,
    # naming the line that crashed.
    for r in (plain, run):
        assert b"Fatal Python error: Segmentation fault" in r.stderr, r.describe()
        assert f"line {L['crash']}".encode() in r.stderr, r.describe()
    # The profile written until the crash is valid (every reader agreed).
    view = run.view
    assert total_leaf(view, ("before", L["before"]), "MainThread") > 0, stack_summary(view)


def test_a_handler_installed_later_switches_to_system_calls(tmp_path):
    run = run_echion(tmp_path, TARGET, args=["faulthandler"])
    assert run.returncode == 0, run.describe()
    assert run.stdout == b"done\n"
    view = run.view
    meta = view["metadata"]
    ctx = f"metadata {meta}\n{stack_summary(view)}"
    # faulthandler.enable() ran while no tick read with loads (a fault of
    # such a tick would have gone to faulthandler's new handler: a crash
    # seen once in the long soak), and did what it does.
    assert run.result == {"enabled": True, "through_echion": True}, run.result
    # Ticks before faulthandler.enable() used loads, the ones after did not.
    syscall_ticks = int(meta.get("syscall_read_ticks", 0))
    assert 0 < syscall_ticks < int(meta["ticks"]), ctx
    # A thread may change under a read now and then (counted, not shown).
    assert int(meta["skipped"]) <= int(meta["ticks"]) // 50, ctx
    # Both halves are profiled, with their time.
    for part in ("before", "after"):
        got = total_leaf(view, (part, L[part]), "MainThread")
        assert 0.2e6 < got < 0.45e6, f"{part}: {got} µs\n{ctx}"
