"""Runs at its memory limit: sets RLIMIT_AS 64 MiB above what it uses,
fills it with 1 MiB blocks until MemoryError, lets go of 4 of them, then
for a second keeps making small objects (new code too, each called),
giving them all back whenever an allocation fails. Prints what it did;
exits with 5."""

import resource
import sys
import time


def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024


soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (64 << 20), hard))
held = []
try:
    while True:
        held.append(bytearray(1 << 20))  #@fill
except MemoryError:
    pass
for _ in range(4):
    held.pop()
print("filled", len(held) > 10, flush=True)

small = []
failures = 0
end = time.monotonic() + 1.0
n = 0
while time.monotonic() < end:
    try:
        namespace = {}
        # Names from a few only: CPython 3.13.0 crashes when its table of
        # interned strings (where every name goes) must grow at the limit,
        # as a plain run of this program with one more thread does.
        name = "g_%d" % (n % 64)
        exec(f"def {name}():\n    return [{n}] * 8\n", namespace)
        small.extend([namespace, namespace[name]()] * 50)  #@small
    except (MemoryError, SystemError):
        # (CPython's compiler says SystemError when it runs out of memory
        # at some places.)
        failures += 1
        small.clear()
    n += 1
print("done", n > 10, flush=True)
sys.exit(5)
