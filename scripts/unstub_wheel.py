"""Drops the module's needs of glibc's libpthread and libdl from a built
wheel (in place): `python scripts/unstub_wheel.py dist/echion-*.whl`.

Why: the wheel is linked for glibc 2.17 (manylinux2014), where
`pthread_create`, `dlsym` and the like live in libpthread.so.0 and
libdl.so.2, so the module names both. From glibc 2.34 they are in libc and
those two files are empty stubs, which the module alone would load into
every profiled process: five mappings each, and every mapping costs each
fork of the program (copied at the fork, torn down at the child's exit).
A fork loop ran 5 % slower for them.

What: the two `DT_NEEDED` entries and their version needs go; the symbols
that were bound to them become unversioned references, wherever the
process has them: in libc from glibc 2.34, and before that in the
libpthread and libdl that CPython itself needs (every CPython on glibc
< 2.34 links both, and they are in the global scope where the interpreter
looks an extension module's symbols up). An unversioned reference binds to
a symbol's base version (GLIBC_2.2.5 on x86-64), hidden or not, else to its
one public version. So only references to GLIBC_2.2.5 are dropped (the
same function), and those of the symbols in `NO_OLDER_VERSION` to a later
one (there is no base version to bind to instead: the public one is the
same function); any other makes the script refuse, as a reference to
`pthread_cond_wait@GLIBC_2.3.2` would bind to the older ABI's.

Only ELF64 little-endian (x86-64, aarch64). Refuses anything it does not
expect, leaving the wheel as it was.
"""

import base64
import hashlib
import struct
import sys
import zipfile
from pathlib import Path

#: The libraries whose needs are dropped.
STUBS = (b"libpthread.so.0", b"libdl.so.2")

#: The base version of glibc's symbols on x86-64 (and the one an
#: unversioned reference binds to where it exists).
BASE_VERSION = b"GLIBC_2.2.5"
#: Symbols of the stubs asked for at a later version that have no base
#: version in any glibc.
NO_OLDER_VERSION = {b"pthread_setname_np": b"GLIBC_2.12"}

DT_NULL, DT_NEEDED, DT_VERNEED, DT_VERNEEDNUM = 0, 1, 0x6FFFFFFE, 0x6FFFFFFF
VER_NDX_GLOBAL = 1


class NotExpected(Exception):
    """The file is not what this script knows how to change."""


def _sections(elf: bytes) -> dict:
    """Section name -> (offset, size, address, where its header is)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise NotExpected("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = []
    for i in range(shnum):
        at = shoff + i * shentsize
        name, _type, _flags, addr, offset, size = struct.unpack_from("<IIQQQQ", elf, at)
        headers.append((name, addr, offset, size, at))
    strtab_off = headers[shstrndx][2]
    out = {}
    for name, addr, offset, size, at in headers:
        end = elf.index(b"\0", strtab_off + name)
        out[elf[strtab_off + name : end].decode()] = (offset, size, addr, at)
    return out


def _cstr(elf: bytes, at: int) -> bytes:
    return elf[at : elf.index(b"\0", at)]


def unstub(elf: bytes) -> bytes:
    """The module `elf` without its needs of [`STUBS`]; unchanged if it has
    none."""
    sec = _sections(elf)
    for name in (".dynamic", ".dynstr", ".gnu.version", ".gnu.version_r", ".dynsym"):
        if name not in sec:
            raise NotExpected("no %s section" % name)
    out = bytearray(elf)
    dynstr = sec[".dynstr"][0]
    dyn_off, dyn_size, _, _ = sec[".dynamic"]
    entries = [struct.unpack_from("<qQ", elf, dyn_off + i) for i in range(0, dyn_size, 16)]

    # The version needs: a chain of Verneed records, each with its chain
    # of Vernaux records.
    vr_off, _, vr_addr, vr_header = sec[".gnu.version_r"]
    needs, at = [], vr_off
    while True:
        _version, count, file, aux, nxt = struct.unpack_from("<HHIII", elf, at)
        others, a = [], at + aux
        for _ in range(count):
            _hash, _flags, other, name, anxt = struct.unpack_from("<IHHII", elf, a)
            others.append((other, _cstr(elf, dynstr + name)))
            a += anxt
        needs.append((at, _cstr(elf, dynstr + file), others))
        if nxt == 0:
            break
        at += nxt
    dropped = {other: name for _, file, others in needs if file in STUBS for other, name in others}
    kept = [(at, file) for at, file, _ in needs if file not in STUBS]
    if not dropped:
        return elf
    if not kept or kept[0][0] != vr_off:
        # (The section header would have to move too.)
        raise NotExpected("the first version need is a stub's")
    for (at, _), nxt in zip(kept, kept[1:] + [None]):
        struct.pack_into("<I", out, at + 12, 0 if nxt is None else nxt[0] - at)
    # (The section header's count of them too: readers other than the
    # dynamic linker, auditwheel's among them, go by it.)
    struct.pack_into("<I", out, vr_header + 0x2C, len(kept))

    # The dynamic section: the stubs' DT_NEEDED out (the rest moved up, the
    # end padded with DT_NULL), the needs' count and start set.
    new = []
    for tag, val in entries:
        if tag == DT_NEEDED and _cstr(elf, dynstr + val) in STUBS:
            continue
        if tag == DT_VERNEEDNUM:
            val = len(kept)
        elif tag == DT_VERNEED:
            val = vr_addr + (kept[0][0] - vr_off)
        new.append((tag, val))
    if len(new) != len(entries) - len(STUBS):
        raise NotExpected("the DT_NEEDED entries of %s are not one each" % b", ".join(STUBS).decode())
    new += [(DT_NULL, 0)] * (len(entries) - len(new))
    for i, (tag, val) in enumerate(new):
        struct.pack_into("<qQ", out, dyn_off + 16 * i, tag, val)

    # The symbols bound to the dropped versions: unversioned, where that
    # binds them to the same function.
    vs_off, vs_size, _, _ = sec[".gnu.version"]
    sym_off = sec[".dynsym"][0]
    for i, at in enumerate(range(vs_off, vs_off + vs_size, 2)):
        ndx, = struct.unpack_from("<H", elf, at)
        version = dropped.get(ndx & 0x7FFF)
        if version is None:
            continue
        name = _cstr(elf, dynstr + struct.unpack_from("<I", elf, sym_off + 24 * i)[0])
        if version != BASE_VERSION and NO_OLDER_VERSION.get(name) != version:
            raise NotExpected("%s@%s would bind to another version" % (name.decode(), version.decode()))
        struct.pack_into("<H", out, at, VER_NDX_GLOBAL)
    return bytes(out)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def unstub_wheel(path: Path) -> list:
    """Rewrites the wheel at `path` with each of its shared objects
    unstubbed (its RECORD updated); the names of those changed."""
    with zipfile.ZipFile(path) as z:
        items = [(info, z.read(info)) for info in z.infolist()]
    changed = {}
    for info, data in items:
        if info.filename.endswith(".so") or ".so." in info.filename:
            new = unstub(data)
            if new != data:
                changed[info.filename] = new
    if not changed:
        return []
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in items:
            data = changed.get(info.filename, data)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = []
                for line in data.decode().splitlines():
                    name = line.split(",", 1)[0]
                    if name in changed:
                        line = "%s,%s,%d" % (name, _record_hash(changed[name]), len(changed[name]))
                    lines.append(line)
                data = ("\n".join(lines) + "\n").encode()
            z.writestr(info, data)
    tmp.replace(path)
    return sorted(changed)


def main(argv) -> int:
    if len(argv) < 2:
        print("usage: unstub_wheel.py WHEEL...", file=sys.stderr)
        return 2
    for arg in argv[1:]:
        try:
            names = unstub_wheel(Path(arg))
        except (NotExpected, OSError, zipfile.BadZipFile, struct.error, ValueError) as e:
            print("unstub_wheel: %s: %s" % (arg, e), file=sys.stderr)
            return 1
        print("%s: %s" % (arg, ", ".join(names) or "nothing to drop"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
