#!/usr/bin/env python3
"""Write what a CPython interpreter itself says about its line tables.

Run this under the interpreter to be checked (3.8 to 3.13). It compiles every
`.py` file of that interpreter's standard library (or the files given with
`--source`), walks every code object including nested ones, and writes, for
each instruction offset, the location the interpreter reports:

* 3.11+: `co_positions()`, one tuple per code unit (entry i is byte offset 2*i);
* 3.10: `co_lines()`, the line of the range that contains each even offset;
* 3.8, 3.9: the line `dis.findlinestarts` gives (line of the last line start
  at or before the offset), computed from `co_lnotab`.

The Rust decoder in crates/cpython-layout/src/linetable.rs is checked against
this stream by crates/cpython-layout/tests/linetable_stdlib.rs. The decoder is
never consulted here: the answers come from the interpreter's own APIs.

Usage:
    python3.X gen_linetable_fixtures.py [--source FILE ...] [-o OUT]

Without --source the whole standard library (`sysconfig.get_paths()["stdlib"]`,
without site-packages) is compiled. The output goes to stdout unless -o names a
file.

Output format (all integers little-endian), version 1:

    header   b"ELTF" u8 format_version u8 major u8 minor u8 micro
    records, each starting with one tag byte:
      b"F"   u32 n, n bytes: path (UTF-8) relative to the root it was found in
      b"C"   u32 n, n bytes: code name (co_qualname on 3.11+, else co_name)
             i32 co_firstlineno
             u32 n, n bytes: the table (co_lnotab on 3.8/3.9, else co_linetable)
             u32 n_offsets   number of instruction offsets (len(co_code) // 2)
             u32 n_known     offsets 0, 2, ... 2*(n_known-1) have an answer;
                             the interpreter gives none for the rest
             n_known times 4 x i32: line, end line, column, end column,
                             NONE (-2**31) where the interpreter says None or
                             does not record the value for this version
      b"E"   u32 files compiled, u32 files that failed to compile,
             u32 files that are not valid UTF-8, u32 code objects,
             u64 offsets with an answer
"""

import argparse
import array
import dis
import os
import struct
import sys
import sysconfig
import types
import warnings

FORMAT_VERSION = 1
NONE = -(2**31)


def lnotab_lines(code):
    """Line per instruction offset for 3.8/3.9, the way dis.findlinestarts
    applies co_lnotab: the line of the last line start at or before the
    offset. Returns a list with one entry per 2-byte instruction."""
    n = len(code.co_code) // 2
    lines = [NONE] * n
    starts = list(dis.findlinestarts(code))  # increasing offsets
    # findlinestarts always yields offset 0 first for CPython-compiled code;
    # offsets before the first start (none in practice) keep NONE, which the
    # Rust side would then report as a mismatch.
    for i, (start, line) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else 2 * n
        for off in range(start, min(end, 2 * n), 2):
            lines[off // 2] = line
    return lines


def co_lines_lines(code):
    """Line per instruction offset for 3.10, from co_lines(): the line of the
    range [start, end) that contains the offset (None -> NONE). Returns the
    answers for the offsets co_lines() covers, in order; it stops at the first
    offset not covered."""
    n = len(code.co_code) // 2
    known = {}
    for start, end, line in code.co_lines():
        for off in range(start, end, 2):
            known[off] = NONE if line is None else line
    out = []
    for i in range(n):
        v = known.get(2 * i)
        if v is None:
            break
        out.append(v)
    return out


def encode_code(code, minor, buf):
    """Append one b"C" record for `code`; return the number of answers."""
    name = getattr(code, "co_qualname", code.co_name)
    name_b = name.encode("utf-8", "backslashreplace")
    n_offsets = len(code.co_code) // 2
    values = array.array("i")
    if minor >= 11:
        table = code.co_linetable
        flat = [
            NONE if v is None else v
            for pos in code.co_positions()
            for v in pos
        ]
        values = array.array("i", flat)
        n_known = len(flat) // 4
    elif minor == 10:
        table = code.co_linetable
        lines = co_lines_lines(code)
        n_known = len(lines)
        for line in lines:
            values.extend((line, NONE, NONE, NONE))
    else:
        table = code.co_lnotab
        lines = lnotab_lines(code)
        n_known = len(lines)
        for line in lines:
            values.extend((line, NONE, NONE, NONE))
    if sys.byteorder != "little":
        values.byteswap()
    buf.append(b"C")
    buf.append(struct.pack("<I", len(name_b)))
    buf.append(name_b)
    buf.append(struct.pack("<iI", code.co_firstlineno, len(table)))
    buf.append(bytes(table))
    buf.append(struct.pack("<II", n_offsets, n_known))
    buf.append(values.tobytes())
    return n_known


def walk_code(code):
    """Yield `code` and every code object nested in its constants."""
    stack = [code]
    while stack:
        co = stack.pop()
        yield co
        consts = [c for c in co.co_consts if isinstance(c, types.CodeType)]
        stack.extend(reversed(consts))


def stdlib_files():
    """(root, path) for every .py file of the standard library, sorted,
    skipping site-packages (third-party code, different per machine)."""
    paths = sysconfig.get_paths()
    root = os.path.realpath(paths["stdlib"])
    skip = {
        os.path.realpath(paths[k]) for k in ("purelib", "platlib") if k in paths
    }
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in ("site-packages", "dist-packages", "__pycache__")
            and os.path.realpath(os.path.join(dirpath, d)) not in skip
        )
        for f in sorted(filenames):
            if f.endswith(".py"):
                found.append((root, os.path.join(dirpath, f)))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", nargs="+", help="compile these files instead of the stdlib")
    ap.add_argument("-o", "--output", help="write here instead of stdout")
    args = ap.parse_args()

    warnings.simplefilter("ignore")  # SyntaxWarning/DeprecationWarning noise
    major, minor, micro = sys.version_info[:3]
    if (major, minor) < (3, 8) or (major, minor) > (3, 13):
        sys.exit("gen_linetable_fixtures: Python %d.%d is not supported (3.8-3.13)" % (major, minor))

    if args.source:
        files = [(os.path.dirname(os.path.abspath(p)), os.path.abspath(p)) for p in args.source]
    else:
        files = stdlib_files()

    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    out.write(b"ELTF" + struct.pack("<BBBB", FORMAT_VERSION, major, minor, micro))
    compiled = failed = not_utf8 = n_codes = 0
    n_known = 0
    for root, path in files:
        with open(path, "rb") as fh:
            source = fh.read()
        try:
            source.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 += 1
            continue
        try:
            top = compile(source, path, "exec", dont_inherit=True)
        except Exception:  # SyntaxError, ValueError, RecursionError, ...
            failed += 1
            continue
        compiled += 1
        rel = os.path.relpath(path, root).encode("utf-8", "backslashreplace")
        buf = [b"F", struct.pack("<I", len(rel)), rel]
        for co in walk_code(top):
            n_codes += 1
            n_known += encode_code(co, minor, buf)
        out.write(b"".join(buf))
    out.write(b"E" + struct.pack("<IIIIQ", compiled, failed, not_utf8, n_codes, n_known))
    out.flush()
    if args.output:
        out.close()


if __name__ == "__main__":
    main()
