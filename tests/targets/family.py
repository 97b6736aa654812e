"""A family of processes under one output name: the parent forks a child
and spawns another Python; each works in a function of its own. Reports
the pids."""

import os
import subprocess
import sys
import time

from _common import report


def work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def forked_child():
    work(0.2)  #@forked


def parent():
    pid = os.fork()
    if pid == 0:
        forked_child()
        # A normal exit: atexit handlers (and echion's) run.
        sys.exit(0)
    spawned = subprocess.Popen([sys.executable, "-c", "import time\nt=time.monotonic()\nwhile time.monotonic()-t<0.2: pass\nimport os, sys\nsys.stdout.write(str(os.getpid()))"], stdout=subprocess.PIPE)
    out, _ = spawned.communicate()
    os.waitpid(pid, 0)
    work(0.1)  #@parent
    report(parent=os.getpid(), forked=pid, spawned=int(out))


parent()
