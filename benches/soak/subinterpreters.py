"""Soak: subinterpreters created, run and destroyed."""

import sys

try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.8 to 3.12

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
made = 0
for r in range(ROUNDS):
    for i in range(3):
        iid = interpreters.create()
        interpreters.run_string(iid, "x = sum(range(10000))\ndef f():\n    return [i for i in range(100)]\nf()")
        interpreters.destroy(iid)
        made += 1
print("subinterpreters", made)
