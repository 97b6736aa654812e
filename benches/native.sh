#!/usr/bin/env bash
# Native stacks against py-spy --native, whole process: makes py-spy's venv
# if missing, then runs benches/overhead.py --native on
# benches/workloads/cpu_single.py (a CPU-bound single thread). Extra
# arguments go to overhead.py (e.g. --runs 3, --json out.json). Our echion
# must be installed in .venvs/py3.11 (the wheel). Needs root (py-spy reads
# the process from outside). Not run by CI.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENVS="$ROOT/.venvs"
PY311=/root/.pyenv/versions/3.11.7/bin/python3

if ! [ -x "$VENVS/bench-tools/bin/py-spy" ]; then
    "$PY311" -m venv "$VENVS/bench-tools"
    "$VENVS/bench-tools/bin/pip" install py-spy
fi
"$VENVS/bench-tools/bin/py-spy" --version >&2

exec "$VENVS/py3.11/bin/python" "$ROOT/benches/overhead.py" --native \
    --python "$VENVS/py3.11/bin/python" \
    --py-spy "$VENVS/bench-tools/bin/py-spy" \
    "$@"
