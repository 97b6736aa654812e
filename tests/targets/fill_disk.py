"""Runs about 1.5 s making new code objects all the time (each a function
of its own name: a profile grows fast), prints how many, exits with 4."""

import sys
import time

end = time.monotonic() + 1.5
n = 0
while time.monotonic() < end:
    namespace = {}
    exec(f"def f_{n}(x):\n    return [i * x for i in range(200)]\n", namespace)  #@exec
    namespace[f"f_{n}"](n)
    n += 1
print("made", n > 100)
sys.exit(4)
