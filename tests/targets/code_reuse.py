"""Generations of code objects that die and are replaced by new ones, which
CPython's allocator tends to put at the address of the one just freed.

Generation i runs ``gen_i`` (defined in the pseudo-file ``gen_i.py``) for a
while, then drops every reference to it. A sampler that cached frames by
code address without noticing the frees would go on showing an older
generation's name. The order in which generations ran is the truth: the
generation numbers in the profile's samples must never go backwards.
"""

import gc
import json
import os
import time

GENERATIONS = 30
SPIN_S = 0.03


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


reused = 0
addresses = set()
for i in range(GENERATIONS):
    namespace = {"spin": spin}
    code = compile(f"def gen_{i}(s):\n    spin(s)\n", f"gen_{i}.py", "exec")
    exec(code, namespace)
    func = namespace[f"gen_{i}"]
    address = id(func.__code__)
    reused += address in addresses
    addresses.add(address)
    func(SPIN_S)
    del func, namespace, code
    gc.collect()

with open(os.environ["TARGET_RESULT"], "w") as f:
    json.dump({"generations": GENERATIONS, "reused_addresses": reused}, f)
