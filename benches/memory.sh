#!/usr/bin/env bash
# Memory mode against its peers, whole process: makes the peers' venvs if
# missing, then runs benches/overhead.py --memory on
# benches/workloads/alloc_heavy.py. Extra arguments go to overhead.py
# (e.g. --runs 3, --json out.json, --memray-python-allocators).
# Our echion must be installed in .venvs/py3.11 (the wheel). Not run by CI.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENVS="$ROOT/.venvs"
PY311=/root/.pyenv/versions/3.11.7/bin/python3
PY310=/root/.pyenv/versions/3.10.13/bin/python3

if ! "$VENVS/bench-memray/bin/python" -c 'import memray' 2>/dev/null; then
    "$PY311" -m venv "$VENVS/bench-memray"
    "$VENVS/bench-memray/bin/pip" install memray
fi

# echion 0.3.5 from PyPI, on 3.11; on 3.10 should its 3.11 install fail.
if ! "$VENVS/bench-echion035/bin/python" -c 'import echion' 2>/dev/null; then
    rm -rf "$VENVS/bench-echion035"
    if ! { "$PY311" -m venv "$VENVS/bench-echion035" && "$VENVS/bench-echion035/bin/pip" install echion==0.3.5; }; then
        echo "echion 0.3.5 does not install on 3.11: using 3.10" >&2
        rm -rf "$VENVS/bench-echion035"
        "$PY310" -m venv "$VENVS/bench-echion035"
        "$VENVS/bench-echion035/bin/pip" install echion==0.3.5
    fi
fi

"$VENVS/bench-memray/bin/python" -m pip list 2>/dev/null | grep -i '^memray ' >&2
"$VENVS/bench-echion035/bin/python" -m pip list 2>/dev/null | grep -i '^echion ' >&2

exec "$VENVS/py3.11/bin/python" "$ROOT/benches/overhead.py" --memory \
    --python "$VENVS/py3.11/bin/python" \
    --memray "$VENVS/bench-memray/bin/python" \
    --echion035 "$VENVS/bench-echion035/bin/python" \
    "$@"
