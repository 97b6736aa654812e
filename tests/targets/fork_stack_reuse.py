"""Children whose threads may run on the stack of the parent's sampler
thread: a forked child has not that thread, and the C library gives its
stack to a new thread of the child's of the same size (2 MiB, Rust's). Each
child starts four such threads at once, and each of them forks: every
grandchild must run on its own copy of its thread's stack. Reports the exit
status of every child (0: all its grandchildren left as they should)."""

import os
import threading

from _common import report


def fork_deep(n):
    # Each level called from C (`map`): a frame of the interpreter's on the
    # thread's stack, tens of kilobytes down in all, where the fork is made
    # and the grandchild returns through every one of them.
    if n == 0:
        return os.fork()
    return next(map(fork_deep, [n - 1]))


def forker(statuses, i, together):
    # (All alive at once: each on a stack of its own, the cache's first.)
    together.wait()
    pid = fork_deep(100)
    if pid == 0:
        os._exit(7)
    statuses[i] = os.waitpid(pid, 0)[1]


def child():
    threading.stack_size(2 << 20)
    statuses = {}
    together = threading.Barrier(4)
    workers = [threading.Thread(target=forker, args=(statuses, i, together)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    good = len(statuses) == 4 and all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 7 for s in statuses.values())
    os._exit(0 if good else 3)


children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        child()
    children.append(os.waitpid(pid, 0)[1])
report(children=children)
