"""Reports, while sampling, where the sampler thread's stack pointer is
among this process's mappings that a forked child gets empty (`wf` in
/proc/self/smaps), and how much of those mappings is in memory."""

import os
import time

from _common import report

time.sleep(0.2)
wiped = []
current = None
rss = 0
with open("/proc/self/smaps") as f:
    for line in f:
        first = line.split()[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first):
            current = [int(x, 16) for x in first.split("-")]
            rss = 0
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("VmFlags") and " wf" in line:
            wiped.append((current[0], current[1], rss))
sampler_sp = None
for tid in os.listdir("/proc/self/task"):
    with open("/proc/self/task/%s/comm" % tid) as f:
        if f.read().strip() == "echion-sampler":
            # Blocked in its nap, the syscall file gives its stack pointer
            # ("running" in a tick: looked at again).
            for _ in range(1000):
                with open("/proc/self/task/%s/syscall" % tid) as f:
                    fields = f.read().split()
                if len(fields) > 2:
                    sampler_sp = int(fields[-2], 16)
                    break
                time.sleep(0.0005)
report(
    sampler=sampler_sp is not None,
    sp_wiped=sampler_sp is not None and any(lo <= sampler_sp < hi for lo, hi, _ in wiped),
    # The region the run's data comes from: mapped and in use (not the stack's).
    region_used=any(kb > 0 and not (lo <= (sampler_sp or 0) < hi) for lo, hi, kb in wiped),
)
