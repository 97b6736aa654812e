"""Runs at its memory limit: sets RLIMIT_AS 64 MiB above what it uses,
fills it with 1 MiB blocks until MemoryError, lets go of 4 of them, then
for a second keeps making small objects (new code too), giving them all
back whenever an allocation fails. Prints what it did; exits with 5."""

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
        exec(f"def g_{n}():\n    return {n}\n", namespace)
        small.extend([namespace, (n, str(n))] * 50)  #@small
    except (MemoryError, SystemError):
        # (CPython's compiler says SystemError when it runs out of memory
        # at some places.)
        failures += 1
        small.clear()
    n += 1
print("done", n > 10, flush=True)
sys.exit(5)
