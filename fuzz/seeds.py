"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from
real data: MOJO profiles written by Austin and by echion 0.3 (the shared
fixtures), the line tables of the standard library's code objects of every
interpreter, the memory images of real processes that
crates/sampler/tests/images.rs replays, and the native captures that
crates/unwind/tests/recorded.rs replays.

    python fuzz/seeds.py FIXTURES_DIR PYTHON...

Seeds go next to what earlier runs found (a seed that exists is kept)."""

import gzip
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# Dumps (format, first line, table) of the code objects of a few standard
# modules, one record per code object: u8 format, i32 first line, u32
# length, table. Runs in each interpreter.
LINE_TABLES = r"""
import sys, struct, types
import json, argparse, asyncio, email.message, http.client, tokenize
fmt = 0 if sys.version_info < (3, 10) else 1 if sys.version_info < (3, 11) else 2
out = sys.stdout.buffer
def codes(c):
    yield c
    for k in c.co_consts:
        if isinstance(k, types.CodeType):
            yield from codes(k)
seen = 0
for m in (json.decoder, argparse, asyncio.tasks, email.message, http.client, tokenize):
    for f in vars(m).values():
        for fn in (getattr(f, "__dict__", {}).values() if isinstance(f, type) else (f,)):
            c = getattr(fn, "__code__", None)
            if c is None:
                continue
            for k in codes(c):
                table = k.co_lnotab if fmt == 0 else k.co_linetable
                out.write(struct.pack("<BiI", fmt, k.co_firstlineno, len(table)) + table)
                seen += 1
                if seen >= 150:
                    raise SystemExit
"""


def put(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def snapshot_regions(snap):
    """The start addresses of the regions of a SnapshotReader serialization
    (each one where the sampler read an object)."""
    assert snap[:8] == b"ECHSNAP1"
    (count,) = struct.unpack_from("<Q", snap, 8)
    at, starts = 16, []
    for _ in range(count):
        addr, n = struct.unpack_from("<QQ", snap, at)
        starts.append(addr)
        at += 16 + n
    return starts, at


def images():
    for img in sorted((ROOT / "crates/sampler/tests/images").glob("py3.*.img")):
        data = img.read_bytes()
        assert data[:8] == b"ECHIMG1\n", img
        (n,) = struct.unpack_from("<Q", data, 8)
        header = json.loads(data[16 : 16 + n])
        minor = header["python"][1]
        rest = data[16 + n :]
        starts, end = snapshot_regions(rest)
        snap_a, snap_b = rest[:end], rest[end:]
        yield minor, header["runtime"], starts, snap_a, snap_b


def main():
    fixtures = Path(sys.argv[1])
    pythons = sys.argv[2:]
    n = {}
    for f in sorted(fixtures.glob("*.mojo")):
        # The readers meet a whole file in CI's conversions; the fuzzer
        # works on its first 16 KB (its -max_len).
        put("mojo", f.read_bytes()[:16384])
        n["mojo"] = n.get("mojo", 0) + 1
    for py in pythons:
        raw = subprocess.run([py, "-c", LINE_TABLES], check=True, stdout=subprocess.PIPE).stdout
        at = 0
        while at < len(raw):
            fmt, first, length = struct.unpack_from("<BiI", raw, at)
            at += 9
            put("linetable", struct.pack("<Bi", fmt, first) + raw[at : at + length])
            at += length
            n["linetable"] = n.get("linetable", 0) + 1
    for minor, runtime, starts, snap_a, snap_b in images():
        for snap in (snap_a, snap_b):
            put("image", struct.pack("<B6Q", minor - 8, runtime, 0, 0, 0, 0, 0) + snap)
            n["image"] = n.get("image", 0) + 1
        # Each view from three objects the sampler read, spread over the
        # image (and the runtime, where the walks start).
        picks = [runtime] + [starts[i * len(starts) // 3] for i in range(3)]
        for view in range(15):
            for addr in picks:
                put("objects", struct.pack("<BBBQ", minor - 8, 0, view, addr) + snap_a)
                n["objects"] = n.get("objects", 0) + 1
    for cap in sorted((ROOT / "crates/unwind/tests/captures").glob("*.capture.gz")):
        put("unwind", gzip.decompress(cap.read_bytes()))
        n["unwind"] = n.get("unwind", 0) + 1
    print("seeds: " + ", ".join(f"{k} {v}" for k, v in sorted(n.items())))


if __name__ == "__main__":
    main()
