"""Allocation-dense, one thread (for memory mode): almost nothing but
allocating and freeing, 15 Python frames deep.

Keeps 100,000 small objects alive in a list and, 1,700,000 times, makes a
short-lived tuple and replaces a random slot with a new object (the one it
replaces is freed): about 3.4 million short-lived objects and as many
frees, with little else in between, so that every allocation's cost shows.
About 1.3 s plain on CPython 3.11 (2-core dev machine). Seeded; prints
nothing.
"""

import random


class Obj:
    __slots__ = ("a", "b")

    def __init__(self, a):
        self.a = a
        self.b = None


def deep(n, f):
    if n == 0:
        return f()
    return deep(n - 1, f)


def work():
    live = [Obj(i) for i in range(100_000)]
    r = random.Random(1)
    for i in range(1_700_000):
        t = (i, i + 1)  # short-lived
        live[r.randrange(100_000)] = Obj(t)
    return live


deep(15, work)
