"""Read a MOJO file with austin-python and print it as normalised JSON.

Usage: python read_austin.py {1|2} FILE

austin-python 1.7 (``austin.format.mojo.MojoFile``) and 2.x
(``austin.format.mojo.MojoStreamReader``) are the same package, so the two
cannot live in one environment: the harness runs this script with the 2.x
copy first on ``PYTHONPATH``. The output has the shape of our own reader's
``mojo dump``, reduced to what austin-python keeps (Python frames only).
"""

import json
import sys


def _frame(filename, scope, line, line_end, column, column_end):
    return [filename, scope, line, line_end or 0, column or 0, column_end or 0]


def read_v1(path):
    from austin.format.mojo import MojoFile, MojoMetricType

    with open(path, "rb") as f:
        mojo = MojoFile(f)
        mojo.unwind()
    samples = []
    for s in mojo.samples:
        time = memory = None
        for m in s.metrics:
            if m.metric_type is MojoMetricType.TIME:
                time = m.value
            else:
                memory = m.value
        samples.append(
            {
                "pid": s.pid,
                "iid": None if s.iid < 0 else s.iid,
                "thread": s.thread,
                "frames": [
                    _frame(
                        fr.filename.string.value,
                        fr.scope.string.value,
                        fr.line,
                        fr.line_end,
                        fr.column,
                        fr.column_end,
                    )
                    for fr in s.frames
                ],
                "time": time,
                "memory": memory,
                "gc": bool(s.gc),
            }
        )
    metadata = dict(mojo.metadata)
    for s in mojo.samples:
        metadata.update(s.metadata)
    return {"version": mojo.mojo_version, "metadata": metadata, "samples": samples}


def read_v2(path):
    from austin.format.mojo import MojoStreamReader

    with open(path, "rb") as f:
        reader = MojoStreamReader(f)
        reader.unwind()
    samples = [
        {
            "pid": s.pid,
            "iid": s.iid,
            "thread": s.thread,
            "frames": [
                _frame(fr.filename, fr.function, fr.line, fr.line_end, fr.column, fr.column_end)
                for fr in (s.frames or ())
            ],
            "time": s.metrics.time,
            "memory": s.metrics.memory,
            "gc": bool(s.gc),
        }
        for s in reader.samples
    ]
    return {"version": reader.mojo_version, "metadata": dict(reader.metadata), "samples": samples}


def main():
    which, path = sys.argv[1], sys.argv[2]
    result = read_v1(path) if which == "1" else read_v2(path)
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
