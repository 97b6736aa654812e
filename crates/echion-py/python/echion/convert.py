"""``echion-convert``: MOJO profiles to flame graphs, speedscope, pprof and
collapsed stacks.

    echion-convert IN.mojo [IN.mojo ...] -o OUT [--format F]
    python -m echion.convert IN.mojo -o prof.svg

The format comes from the output's name (``.svg``, ``.speedscope.json``,
``.pprof`` or ``.pb.gz``, ``.collapsed`` or ``.folded``) unless
``--format`` names it; ``-o -`` writes to the standard output (collapsed
stacks unless ``--format`` names another). Several inputs (the files of one family of
processes) merge into one picture, each process apart by its pid. The
conversion itself is Rust (``echion.core.convert``); this module only reads
the command line. Every error is one line on stderr and a non-zero exit.
"""

import argparse
import sys

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        sys.stderr.write(f"echion-convert: {message} (see echion-convert --help)\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="echion-convert",
        description="Convert MOJO profiles (echion's, Austin's, any v1-v4) into a flame graph (SVG), "
        "speedscope JSON, pprof or collapsed stacks.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="MOJO files (several merge into one picture)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the file to write; - for the standard output (collapsed stacks unless --format says otherwise)",
    )
    p.add_argument(
        "-f",
        "--format",
        metavar="FORMAT",
        help="svg, speedscope, pprof or collapsed (default: from OUT's name: .svg, .speedscope.json, "
        ".pprof/.pb.gz, .collapsed/.folded)",
    )
    p.add_argument(
        "--keep-echion",
        action="store_true",
        help="keep echion's own sampler thread and bootstrap frames (left out by default)",
    )
    p.add_argument(
        "--merge-threads", action="store_true", help="flame graph: one tower per process instead of one per thread"
    )
    p.add_argument("--title", help="flame graph and speedscope title")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # The format's rules (names, what an output's name asks for) are the
    # Rust converter's: it says what is wrong.
    from echion.core import convert

    try:
        report = convert(args.inputs, args.output, args.format, args.keep_echion, args.merge_threads, args.title)
    except ValueError as e:
        sys.stderr.write(f"echion-convert: {e}\n")
        return 1
    for path, reason in report["cut"]:
        sys.stderr.write(
            f"echion-convert: {path} is {reason} (its process was killed?): converted the samples before it\n"
        )
    if not args.quiet:
        left = f", {report['left_out']} of echion's own left out" if report["left_out"] else ""
        where = "the standard output" if args.output == "-" else args.output
        sys.stderr.write(
            f"echion-convert: wrote {where} ({report['samples']} samples{left}, {report['stacks']} stacks)\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
