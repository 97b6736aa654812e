"""Makes new code objects all the time (each a function of its own name: a
profile grows fast) for about 1.5 s, prints how many, exits with 4. With
FILL_DISK_WATCH naming a directory, it goes on (for at most 60 s) until the
filesystem there has at most a page free and then 3 s more: a busy machine
that ran it slowly still fills it. (Not until it is full: a profile cut
short at a full disk gives back the partial event it ends with.)"""

import os
import sys
import time


def full(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize <= 4096


watch = os.environ.get("FILL_DISK_WATCH")
start = time.monotonic()
end = start + 1.5
filled_at = None
n = 0
while True:
    now = time.monotonic()
    if watch:
        if filled_at is None and full(watch):
            filled_at = now
        if (filled_at is not None and now >= max(end, filled_at + 3.0)) or now >= start + 60:
            break
    elif now >= end:
        break
    namespace = {}
    exec(f"def f_{n}(x):\n    return [i * x for i in range(200)]\n", namespace)  #@exec
    namespace[f"f_{n}"](n)
    n += 1
print("made", n > 100)
sys.exit(4)
