"""Seeing the profile: run mode writes the format its output names, and
``echion-convert`` turns any MOJO file (ours, Austin's, the C++ echion's)
into a flame graph SVG, speedscope JSON, pprof and collapsed stacks. Each
format is checked by a reader that is not ours: austin-python's
``mojo2austin`` for the collapsed stacks, speedscope's own JSON schema,
the ``protobuf`` package with pprof's message definitions, and a real
headless browser (Debian's chromium) for the SVG's frames and search.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness import ROOT, SAMPLER_THREAD, echion_env

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

SHARED = Path(os.environ.get("ECHION_SHARED", ROOT.parent / "shared"))
FIXTURES = sorted(p for p in (SHARED / "fixtures" / "mojo").glob("*.mojo") if "corrupt" not in p.name)
CORRUPT = SHARED / "fixtures" / "mojo" / "echion-0.3.5-nonascii-corrupt-py311.mojo"
BIN = Path(sys.executable).parent
APP = ROOT / "examples" / "app.py"
FORMATS = {"svg": "prof.svg", "speedscope": "prof.speedscope.json", "pprof": "prof.pprof", "collapsed": "prof.collapsed"}


def convert(*args, check=True):
    cmd = [str(BIN / "echion-convert"), *map(str, args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if check:
        assert out.returncode == 0, f"{cmd}: {out.stderr.decode()}"
    return out


def echion(tmp_path, *args, timeout=60):
    cmd = [str(BIN / "echion"), *map(str, args)]
    return subprocess.run(cmd, cwd=str(tmp_path), env=echion_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


# --- independent readers ---------------------------------------------------------


def austin_renderings(mojo: Path, tmp_path: Path) -> list:
    """(name, counts) of every austin-python ``mojo2austin`` here that
    reads ``mojo`` (2.x where this interpreter has it, and 1.7), its text
    summed per stack line."""
    out = tmp_path / (mojo.name + ".austin")
    attempts = []
    if os.environ.get("ECHION_AUSTIN2_PATH"):
        env = dict(os.environ, PYTHONPATH=os.environ["ECHION_AUSTIN2_PATH"])
        attempts.append(("austin-python 2", [sys.executable, "-c", "import sys; from austin.format.collapsed_stack import main; sys.argv[0] = 'mojo2austin'; main()"], env))
    attempts.append(("austin-python 1.7", [str(BIN / "mojo2austin")], None))
    found = []
    for name, cmd, env in attempts:
        r = subprocess.run(cmd + [str(mojo), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if r.returncode == 0:
            found.append((name, collapsed_counts(out.read_text(encoding="utf-8", errors="replace"))))
    return found


def austin_rendering(mojo: Path, tmp_path: Path) -> Counter:
    """austin-python's ``mojo2austin`` text, summed per stack line: 2.x's
    where this interpreter has it, else 1.7's; for a file neither reads
    (1.7 has no STACK_REPEAT and trips on austinp's native frames), the
    rendering that comes with the fixture, else our own reader's (itself
    checked against austin-python in test_mojo_readers)."""
    found = austin_renderings(mojo, tmp_path)
    return found[0][1] if found else fallback_rendering(mojo)


def fallback_rendering(mojo: Path) -> Counter:
    """For a file no austin-python reads: the rendering that comes with
    the fixture, else our own reader's."""
    given = mojo.with_suffix(".austin")
    if given.exists():
        return collapsed_counts(given.read_text(encoding="utf-8", errors="replace"))
    from harness import mojo_tool

    text = subprocess.run([str(mojo_tool()), "render", str(mojo)], check=True, stdout=subprocess.PIPE).stdout
    return collapsed_counts(text.decode("utf-8", errors="replace"))


def without_invalid(c: Counter) -> Counter:
    """austin-python 2 drops the frames that could not be read where 1.7
    (and we) write ``:INVALID:``: compare the stacks without them."""
    out = Counter()
    for stack, v in c.items():
        out[stack.replace(";:INVALID:", "")] += v
    return out


def collapsed_counts(text: str) -> Counter:
    c = Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        stack, _, value = line.rpartition(" ")
        c[stack] += int(value)
    return c


def speedscope_schema() -> dict:
    path = os.environ.get("ECHION_SPEEDSCOPE_SCHEMA")
    assert path and Path(path).is_file(), (
        "ECHION_SPEEDSCOPE_SCHEMA must name speedscope's file-format-schema.json (scripts/test fetches it from npm)"
    )
    return json.loads(Path(path).read_text())


def check_speedscope(path: Path) -> dict:
    import jsonschema

    doc = json.loads(path.read_text())
    jsonschema.validate(doc, speedscope_schema())
    return doc


def pprof_classes():
    """pprof's messages (field numbers from its profile.proto), built with
    the protobuf package's own descriptors: a decoder that is not ours."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    fd = descriptor_pb2.FileDescriptorProto(name="echion_test_profile.proto", package="perftools.profiles", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    I64, U64, STR, BOOL, MSG = F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_MESSAGE
    ONE, MANY = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    messages = {
        "Profile": [
            ("sample_type", 1, MSG, MANY, "ValueType"),
            ("sample", 2, MSG, MANY, "Sample"),
            ("mapping", 3, MSG, MANY, "Mapping"),
            ("location", 4, MSG, MANY, "Location"),
            ("function", 5, MSG, MANY, "Function"),
            ("string_table", 6, STR, MANY, None),
            ("drop_frames", 7, I64, ONE, None),
            ("keep_frames", 8, I64, ONE, None),
            ("time_nanos", 9, I64, ONE, None),
            ("duration_nanos", 10, I64, ONE, None),
            ("period_type", 11, MSG, ONE, "ValueType"),
            ("period", 12, I64, ONE, None),
            ("comment", 13, I64, MANY, None),
            ("default_sample_type", 14, I64, ONE, None),
        ],
        "ValueType": [("type", 1, I64, ONE, None), ("unit", 2, I64, ONE, None)],
        "Sample": [("location_id", 1, U64, MANY, None), ("value", 2, I64, MANY, None), ("label", 3, MSG, MANY, "Label")],
        "Label": [("key", 1, I64, ONE, None), ("str", 2, I64, ONE, None), ("num", 3, I64, ONE, None), ("num_unit", 4, I64, ONE, None)],
        "Mapping": [("id", 1, U64, ONE, None), ("memory_start", 2, U64, ONE, None), ("memory_limit", 3, U64, ONE, None)],
        "Location": [
            ("id", 1, U64, ONE, None),
            ("mapping_id", 2, U64, ONE, None),
            ("address", 3, U64, ONE, None),
            ("line", 4, MSG, MANY, "Line"),
            ("is_folded", 5, BOOL, ONE, None),
        ],
        "Line": [("function_id", 1, U64, ONE, None), ("line", 2, I64, ONE, None), ("column", 3, I64, ONE, None)],
        "Function": [
            ("id", 1, U64, ONE, None),
            ("name", 2, I64, ONE, None),
            ("system_name", 3, I64, ONE, None),
            ("filename", 4, I64, ONE, None),
            ("start_line", 5, I64, ONE, None),
        ],
    }
    for name, fields in messages.items():
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = ".perftools.profiles." + type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName("perftools.profiles.Profile")
    try:
        from google.protobuf.message_factory import GetMessageClass

        return GetMessageClass(desc)
    except ImportError:
        from google.protobuf.message_factory import MessageFactory

        return MessageFactory(pool).GetPrototype(desc)


def read_pprof(path: Path):
    """(sample types, {(pid, thread, (frames outermost first)): value})."""
    profile = pprof_classes()()
    profile.ParseFromString(gzip.decompress(path.read_bytes()))
    s = list(profile.string_table)
    assert s[0] == ""
    functions = {f.id: f for f in profile.function}
    locations = {}
    for loc in profile.location:
        (line,) = loc.line
        f = functions[line.function_id]
        # As Austin's text writes them: frames with no file (INVALID, GC)
        # have no line either.
        locations[loc.id] = f"{s[f.filename]}:{s[f.name]}:{line.line}" if s[f.filename] else f":{s[f.name]}:"
    stacks = Counter()
    for sample in profile.sample:
        labels = {s[l.key]: (s[l.str] if l.str else l.num) for l in sample.label}
        frames = tuple(locations[i] for i in reversed(sample.location_id))
        stacks[(labels["pid"], labels["thread"], frames)] += sample.value[1]
    types = [(s[t.type], s[t.unit]) for t in profile.sample_type]
    return types, stacks


def chromium_dom(svg: Path, search: str) -> str:
    """The SVG's DOM after a real browser ran its script with a search."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed to check the flame graph (scripts/test installs Debian's)"
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", f"{svg.as_uri()}?s={search}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout, f"chromium failed on {svg}"
    return out.stdout.decode()


def check_all_formats(mojo: Path, tmp_path: Path, keep_echion: bool):
    """Converts ``mojo`` to every format; each is read by its independent
    reader, and every total agrees with austin-python's rendering."""
    extra = ["--keep-echion"] if keep_echion else []
    for fmt, name in FORMATS.items():
        convert(mojo, "-o", tmp_path / name, *extra, "-q")
    ours = collapsed_counts((tmp_path / "prof.collapsed").read_text(encoding="utf-8"))
    total = sum(ours.values())
    doc = check_speedscope(tmp_path / "prof.speedscope.json")
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == sum(v for v in ours.values() if v > 0)
    _, pprof = read_pprof(tmp_path / "prof.pprof")
    assert sum(pprof.values()) == total
    return ours, doc, pprof


# --- the converter on files other tools wrote ------------------------------------


@pytest.mark.once
@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_other_writers_files_convert_to_every_format(fixture, tmp_path):
    ours, doc, pprof = check_all_formats(fixture, tmp_path, keep_echion=True)
    # Collapsed stacks are austin-python's rendering, summed per stack:
    # every version's that reads the file (run on one interpreter only,
    # this test meets 1.7 and 2.x together), else the fixture's own.
    for name, rendering in austin_renderings(fixture, tmp_path) or [("fallback", fallback_rendering(fixture))]:
        assert without_invalid(ours) == without_invalid(rendering), name
    # pprof holds the same stacks with the same values.
    as_collapsed = Counter()
    for (pid, thread, frames), v in pprof.items():
        as_collapsed[(pid, str(thread), frames)] += v
    ours_keyed = Counter()
    for stack, v in ours.items():
        parts = stack.split(";")
        pid = int(parts[0][1:])
        thread = parts[1][1:].split(":", 1)[-1] if ":" in parts[1] else parts[1][1:]
        ours_keyed[(pid, thread, tuple(parts[2:]))] += v
    assert as_collapsed == ours_keyed
    # The flame graph in a browser: frames drawn, search finds one.
    convert(fixture, "-o", tmp_path / "f.svg", "--keep-echion", "-q")
    leaf = max(ours, key=ours.get).split(";")[-1].split(":")
    scope = leaf[1] if len(leaf) > 2 else leaf[0]
    dom = chromium_dom(tmp_path / "f.svg", scope)
    assert scope in dom
    matched = dom.split('id="matched"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    assert matched.startswith("Matched: ") and float(matched[len("Matched: ") : -1]) > 0, matched


# --- run mode ----------------------------------------------------------------------


def test_run_mode_writes_each_format_and_leaves_out_echion(tmp_path):
    for fmt, name in FORMATS.items():
        r = echion(tmp_path, "-o", name, sys.executable, APP)
        assert r.returncode == 0, r.stderr.decode()
        assert (tmp_path / name).stat().st_size > 0, fmt
        assert not (tmp_path / (name + ".mojo")).exists(), f"{fmt}: the MOJO beside it was not removed"
        assert r.stderr == b"", f"stderr is not a terminal: nothing printed ({r.stderr!r})"
    ours = collapsed_counts((tmp_path / "prof.collapsed").read_text())
    assert not any(SAMPLER_THREAD in s for s in ours), "the sampler thread is left out"
    assert not any("/echion/" in s for s in ours), "echion's frames are left out"
    assert any(s.endswith(":fib:12") for s in ours)
    doc = check_speedscope(tmp_path / "prof.speedscope.json")
    names = {p["name"] for p in doc["profiles"]}
    assert any("MainThread" in n and "pid" in n for n in names), names
    assert doc["profiles"][0]["unit"] == "microseconds"
    types, pprof = read_pprof(tmp_path / "prof.pprof")
    assert types == [("samples", "count"), ("wall", "microseconds")]
    assert {t for (_, t, _) in pprof} == {"MainThread", "Worker"}
    dom = chromium_dom(tmp_path / "prof.svg", "fib")
    assert "fib (" in dom and "Worker" in dom
    assert "echion wall" in dom, "titled with the mode and command line"
    assert sys.executable in dom


def test_format_option_overrides_the_name_and_cpu_mode_says_so(tmp_path):
    r = echion(tmp_path, "-c", "--format", "pprof", "-o", "out.bin", sys.executable, APP)
    assert r.returncode == 0, r.stderr.decode()
    types, pprof = read_pprof(tmp_path / "out.bin")
    assert types == [("samples", "count"), ("cpu", "microseconds")]
    assert sum(pprof.values()) > 0


def test_summary_on_request_and_never_unasked(tmp_path):
    r = echion(tmp_path, "--summary", "-o", "p.mojo", sys.executable, APP)
    err = r.stderr.decode()
    assert r.returncode == 0
    lines = err.splitlines()
    assert lines[0].startswith("echion: ") and "ticks" in lines[0] and "errors" in lines[0], err
    assert "top by own wall" in err and "top by total wall" in err
    assert any("fib (" in l for l in lines) and any("worker (" in l for l in lines), err
    assert len(lines) <= 24, "fits one screen"
    r = echion(tmp_path, "-o", "q.mojo", sys.executable, APP)
    assert r.stderr == b""


def test_a_family_gets_one_file_per_process(tmp_path):
    script = tmp_path / "fam.py"
    script.write_text(
        "import os, time\n"
        "def work():\n"
        "    t = time.time()\n"
        "    while time.time() - t < 0.2: pass\n"
        "pid = os.fork()\n"
        "work()\n"
        "if pid: os.waitpid(pid, 0)\n"
        "else: os._exit(0)\n"
    )
    r = echion(tmp_path, "--summary", "-o", "fam.svg", sys.executable, script)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode().count("top by own") == 1, "one summary a family: " + r.stderr.decode()
    svgs = sorted(p.name for p in tmp_path.glob("fam*.svg"))
    assert len(svgs) == 2, svgs
    assert not list(tmp_path.glob("*.mojo"))
    for s in svgs:
        assert "work (" in chromium_dom(tmp_path / s, "work")


def test_a_killed_program_leaves_a_mojo_file_that_converts(tmp_path):
    script = tmp_path / "spin.py"
    script.write_text("import time\ndef spin():\n    while True: time.sleep(0.001)\nspin()\n")
    proc = subprocess.Popen([str(BIN / "echion"), "-o", "k.svg", sys.executable, str(script)], cwd=str(tmp_path), env=echion_env())
    mojo = tmp_path / "k.svg.mojo"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not mojo.exists() or mojo.stat().st_size < 2000):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert mojo.stat().st_size > 0
    assert (tmp_path / "k.svg").stat().st_size == 0, "the picture is made at the end"
    r = convert(mojo, "-o", tmp_path / "k2.svg")
    assert b"wrote" in r.stderr
    assert "spin (" in chromium_dom(tmp_path / "k2.svg", "spin")
    # The same, cut in the middle of an event: what is complete converts.
    data = mojo.read_bytes()
    cut = tmp_path / "cut.mojo"
    cut.write_bytes(data[: len(data) - 3])
    r = convert(cut, "-o", tmp_path / "cut.collapsed")
    assert sum(collapsed_counts((tmp_path / "cut.collapsed").read_text()).values()) > 0


def test_several_inputs_merge_with_their_processes_apart(tmp_path):
    a, b = FIXTURES[0], [f for f in FIXTURES if "echion-0.3.5-wall" in f.name][0]
    convert(a, b, "-o", tmp_path / "m.collapsed", "--keep-echion")
    merged = collapsed_counts((tmp_path / "m.collapsed").read_text(encoding="utf-8"))
    assert without_invalid(merged) == without_invalid(austin_rendering(a, tmp_path) + austin_rendering(b, tmp_path))
    convert(a, b, "-o", tmp_path / "m.speedscope.json")
    doc = check_speedscope(tmp_path / "m.speedscope.json")
    assert len({p["name"].split(" · ")[0] for p in doc["profiles"]}) >= 2


# --- bad input ---------------------------------------------------------------------


def one_line_error(r, *words):
    err = r.stderr.decode().strip()
    assert r.returncode != 0
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_bad_inputs_and_outputs_get_one_line(tmp_path):
    not_mojo = tmp_path / "notes.txt"
    not_mojo.write_text("hello")
    one_line_error(convert(not_mojo, "-o", tmp_path / "x.svg", check=False), "notes.txt", "not a readable MOJO")
    header_only = tmp_path / "h.mojo"
    header_only.write_bytes(FIXTURES[0].read_bytes()[:2])
    one_line_error(convert(header_only, "-o", tmp_path / "x.svg", check=False), "h.mojo")
    one_line_error(convert(CORRUPT, "-o", tmp_path / "x.svg", check=False), CORRUPT.name, "35402")
    one_line_error(convert(FIXTURES[0], "-o", tmp_path / "x.svg", "--format", "png", check=False), "png")
    one_line_error(convert(FIXTURES[0], "-o", tmp_path / "x.txt", check=False), "--format")
    one_line_error(convert(FIXTURES[0], "-o", tmp_path / "no" / "x.svg", check=False), "x.svg")
    one_line_error(convert(tmp_path / "missing.mojo", "-o", tmp_path / "x.svg", check=False), "missing.mojo")
    assert not (tmp_path / "x.svg").exists(), "no half-written output"
    r = echion(tmp_path, "--format", "jpeg", sys.executable, APP)
    # echion's usage errors: the error, then where to look (its convention).
    assert r.returncode == 2
    assert r.stderr.decode().splitlines()[0] == "echion: unknown format 'jpeg': give one of mojo, svg, speedscope, pprof, collapsed"


def test_stdout_fifos_and_links_get_the_picture_and_stay_what_they_are(tmp_path):
    import threading

    convert(FIXTURES[0], "-o", tmp_path / "file.collapsed")
    expected = (tmp_path / "file.collapsed").read_text(encoding="utf-8")
    r = convert(FIXTURES[0], "-o", "-")
    assert r.stdout.decode() == expected
    assert "wrote the standard output" in r.stderr.decode()
    # A FIFO is written into, not replaced by a file.
    fifo = tmp_path / "pipe.collapsed"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    convert(FIXTURES[0], "-o", fifo)
    reader.join(60)
    assert got == [expected]
    assert fifo.is_fifo()
    # A link keeps pointing at the file it names, which gets the picture.
    real = tmp_path / "runs" / "real.speedscope.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.speedscope.json"
    link.symlink_to(real)
    convert(FIXTURES[0], "-o", link)
    assert link.is_symlink()
    check_speedscope(real)


def test_python_dash_m_echion_convert_is_the_same_converter(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "echion.convert", str(FIXTURES[0]), "-o", str(tmp_path / "p.collapsed")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert without_invalid(collapsed_counts((tmp_path / "p.collapsed").read_text())) == without_invalid(
        austin_rendering(FIXTURES[0], tmp_path)
    )


def test_memory_profiles_convert_in_bytes(tmp_path):
    """Memory mode: the live bytes of each stack, in bytes, with the same
    total in MOJO (our reader), pprof and speedscope."""
    from harness import read_ours, target

    r = echion(tmp_path, "-m", "-o", "m.mojo", sys.executable, target("memory.py"), "hold")
    assert r.returncode == 0, r.stderr.decode()
    view = read_ours(tmp_path / "m.mojo")
    live = sum(s["memory"] or 0 for s in view["samples"] if s["thread"] != SAMPLER_THREAD)
    assert live > 40_000_000, "the scenario holds about 50 MB"
    convert(tmp_path / "m.mojo", "-o", tmp_path / "m.pprof")
    types, pprof = read_pprof(tmp_path / "m.pprof")
    assert types == [("samples", "count"), ("space", "bytes")]
    held = sum(v for (_, _, frames), v in pprof.items() if any(":hold:" in f for f in frames))
    assert held > 40_000_000
    convert(tmp_path / "m.mojo", "-o", tmp_path / "m.collapsed")
    ours = collapsed_counts((tmp_path / "m.collapsed").read_text())
    assert sum(pprof.values()) == sum(ours.values())
    convert(tmp_path / "m.mojo", "-o", tmp_path / "m.speedscope.json")
    doc = check_speedscope(tmp_path / "m.speedscope.json")
    assert {p["unit"] for p in doc["profiles"]} == {"bytes"}
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == sum(v for v in ours.values() if v > 0)
    # Run mode straight to a flame graph in bytes.
    r = echion(tmp_path, "-m", "-o", "m.svg", sys.executable, target("memory.py"), "hold")
    assert r.returncode == 0, r.stderr.decode()
    dom = chromium_dom(tmp_path / "m.svg", "hold")
    assert "bytes" in dom and "hold (" in dom
