"""A code object freed and its address reused must not show a stale name."""

import re

from harness import run_echion, samples_of, target


def test_freed_code_objects_never_show_a_stale_name(tmp_path):
    run = run_echion(tmp_path, target("code_reuse.py"), "-i", "1ms")
    assert run.returncode == 0, run.describe()
    # The test only means something if CPython did reuse addresses.
    assert run.result["reused_addresses"] >= 5, run.result
    for p in run.profiles.values():
        for name, view in [("ours", p.ours)] + p.readers():
            seen = []
            for s in samples_of(view, "MainThread"):
                for f in s["frames"]:
                    m = re.fullmatch(r"gen_(\d+)", f[1].rsplit(".", 1)[-1])
                    if m:
                        # The pseudo-file and the name always agree...
                        assert f[0] == f"gen_{m.group(1)}.py", (name, f)
                        seen.append(int(m.group(1)))
            # ...every generation shows up, and never one that already ended.
            assert sorted(set(seen)) == list(range(run.result["generations"])), (name, sorted(set(seen)))
            assert seen == sorted(seen), f"{name}: a stale frame after a newer one: {seen}"
