"""The installed wheel is fit to publish: a version that sorts after the C++
echion's releases, a manylinux tag, no debug information in the module,
licence files, project URLs and a description written for users."""

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import echion
import pytest

# Shapes, bytes and exit statuses only: may run beside other tests.
pytestmark = pytest.mark.parallel

try:
    from importlib import metadata
except ImportError:  # pragma: no cover
    import importlib_metadata as metadata  # type: ignore

DIST = metadata.distribution("echion")


def version_tuple(text):
    return tuple(int(p) for p in re.match(r"(\d+(?:\.\d+)*)", text).group(1).split("."))


def test_version_sorts_after_the_cpp_echion():
    assert echion.__version__ == DIST.version
    assert version_tuple(DIST.version) > (0, 3, 5), DIST.version


def test_the_wheel_is_manylinux2014():
    tags = [l.split(":", 1)[1].strip() for l in DIST.read_text("WHEEL").splitlines() if l.startswith("Tag:")]
    assert tags and all(t.startswith("cp38-abi3-") for t in tags), tags
    assert any(t.endswith("manylinux_2_17_x86_64") for t in tags), tags


def elf_sections(path):
    """Names and sizes of the sections of a 64-bit little-endian ELF file."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = data[strtab[4] : strtab[4] + strtab[5]]
    out = {}
    for h in headers:
        name = names[h[0] : names.index(b"\0", h[0])].decode()
        out[name] = h[5]
    return out


def test_the_module_carries_no_debug_information():
    import echion.core

    sections = elf_sections(echion.core.__file__)
    debug = {n: s for n, s in sections.items() if n.startswith(".debug") or n.startswith(".zdebug")}
    assert not debug, debug
    assert ".eh_frame" in sections and ".dynsym" in sections
    assert os.path.getsize(echion.core.__file__) < 4 * 1024 * 1024


def test_licences_urls_and_a_users_description():
    meta = DIST.metadata
    assert meta["License"] == "MIT OR Apache-2.0" or meta.get("License-Expression") == "MIT OR Apache-2.0"
    files = {Path(str(f)).name for f in DIST.files or []}
    assert {"LICENSE-MIT", "LICENSE-APACHE"} <= files, files
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues"} <= set(urls), urls
    description = meta.get_payload() if hasattr(meta, "get_payload") else meta["Description"]
    assert "pip install echion" in description
    for developer_only in ("scripts/test", "../shared", "cargo fmt", ".ci/run"):
        assert developer_only not in description, developer_only
    assert re.search(r"Rust toolchain, 1\.\d+ or newer", description), "building from source needs Rust: say which"


def glibc_versions_needed(path):
    """The GLIBC_x.y versions an ELF file's symbols need."""
    data = Path(path).read_bytes()
    return sorted({tuple(int(p) for p in m.split(b".")) for m in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\x00", data)})


def test_the_echion_command_is_the_front_end_executable(tmp_path):
    # The published wheel's `echion` is the Rust front end itself: no shell
    # and no Python start before the profiled program (a Python front end
    # cost 8 ms of every run, the shell launcher 0.6 ms).
    command = Path(sys.executable).parent / "echion"
    assert os.access(str(command), os.X_OK), command
    sections = elf_sections(command)
    assert not [n for n in sections if n.startswith(".debug")], sections
    needed = glibc_versions_needed(command)
    assert needed and max(needed) <= (2, 17), needed
    assert not (Path(echion.__file__).parent / "_echion").exists(), "the front end is in the wheel once, as the command"
    version = subprocess.run([str(command), "--version"], stdout=subprocess.PIPE)
    python_front_end = subprocess.run([sys.executable, "-m", "echion", "--version"], stdout=subprocess.PIPE)
    assert version.returncode == 0 and version.stdout == python_front_end.stdout and version.stdout.strip(), (version, python_front_end)
    # It finds the package it came with (not by asking a Python: the
    # program's interpreter here is not the one echion is installed for).
    no_python = dict(os.environ, PATH="/usr/bin:/bin")
    verbose = subprocess.run([str(command), "-v", "-o", str(tmp_path / "p.mojo"), "/bin/true"], stderr=subprocess.PIPE, env=no_python)
    assert verbose.returncode == 0, verbose.stderr.decode()
    boot = Path(os.path.realpath(echion.__file__)).parent / "bootstrap"
    assert "bootstrap directory '%s'" % boot in verbose.stderr.decode() or "bootstrap directory %s" % boot in verbose.stderr.decode(), verbose.stderr.decode()


def test_a_source_build_gets_the_shell_launcher_that_runs_the_front_end_in_python(tmp_path):
    # `pip install .` of the source tree installs the launcher of
    # crates/echion-py/data/scripts as PREFIX/bin/echion: it finds the
    # package under PREFIX and runs the same front end in that Python,
    # with -I -S, without starting any process of its own on the way.
    launcher = Path(__file__).resolve().parents[1] / "crates" / "echion-py" / "data" / "scripts" / "echion"
    assert launcher.read_bytes().startswith(b"#!/bin/sh"), launcher
    version = "python%d.%d" % sys.version_info[:2]
    (tmp_path / "bin").mkdir()
    site = tmp_path / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (site / "echion").symlink_to(Path(echion.__file__).parent)
    (tmp_path / "bin" / version).symlink_to(sys.executable)
    command = tmp_path / "bin" / "echion"
    command.write_bytes(launcher.read_bytes())
    command.chmod(0o755)
    traced = subprocess.run(["sh", "-x", str(command), "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert traced.returncode == 0, traced.stderr.decode()
    assert "-I -S -c" in traced.stderr.decode(), traced.stderr.decode()
    assert not re.search(r"^\+ .*\$\(|^\+ (readlink|dirname|basename) ", traced.stderr.decode(), re.M), traced.stderr.decode()
    python_front_end = subprocess.run([sys.executable, "-m", "echion", "--version"], stdout=subprocess.PIPE)
    assert traced.stdout == python_front_end.stdout and traced.stdout.strip(), (traced.stdout, python_front_end.stdout)
    run = subprocess.run([str(command), "-o", str(tmp_path / "p.mojo"), sys.executable, "-c", "print('ran')"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.returncode == 0 and run.stdout == b"ran\n", run
    assert (tmp_path / "p.mojo").read_bytes().startswith(b"MOJ"), "no profile"



def elf_needed(path):
    """The libraries a 64-bit little-endian ELF file names as needed
    (`DT_NEEDED` entries of its `.dynamic` section)."""
    data = Path(path).read_bytes()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = data[headers[shstrndx][4] : headers[shstrndx][4] + headers[shstrndx][5]]
    by_name = {names[h[0] : names.index(b"\0", h[0])]: h for h in headers}
    dynamic, dynstr = by_name[b".dynamic"], by_name[b".dynstr"]
    strings = data[dynstr[4] : dynstr[4] + dynstr[5]]
    needed = []
    for at in range(dynamic[4], dynamic[4] + dynamic[5], 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == 0:  # DT_NULL
            break
        if tag == 1:  # DT_NEEDED
            needed.append(strings[value : strings.index(b"\0", value)].decode())
    return needed


MAPPED_FILES = """
import time
time.sleep(0.3)
names = set()
for line in open("/proc/self/maps"):
    fields = line.split(None, 5)
    if len(fields) > 5 and fields[5].startswith("/"):
        path = fields[5].rstrip("\\n")
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        names.add(path.rsplit("/", 1)[-1])
print("\\n".join(sorted(names)))
"""


def test_a_profiled_process_maps_no_library_but_echion(tmp_path):
    # Every mapping of the program is copied by each of its forks and torn
    # down at each child's exit: the extension loads nothing but itself.
    # (librt, for three timer calls, was five more mappings on every glibc;
    # libpthread and libdl, which glibc 2.17 keeps outside libc, five each
    # where they are empty stubs: scripts/unstub_wheel.py drops them.)
    import echion.core

    needed = set(elf_needed(echion.core.__file__))
    assert needed <= {"libc.so.6", "ld-linux-x86-64.so.2"}, needed
    assert "libc.so.6" in needed, needed
    script = tmp_path / "maps.py"
    script.write_text(MAPPED_FILES)
    plain = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, check=True)
    command = [str(Path(sys.executable).parent / "echion"), "-s", "-o", str(tmp_path / "p.mojo"), sys.executable, str(script)]
    profiled = subprocess.run(command, stdout=subprocess.PIPE, check=True)
    added = set(profiled.stdout.decode().splitlines()) - set(plain.stdout.decode().splitlines())
    assert added == {os.path.basename(echion.core.__file__)}, added
