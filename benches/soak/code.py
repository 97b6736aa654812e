"""Soak: code objects made by compile/exec and freed thousands of times a
second; recursion near the limit ending in an exception; generators and
coroutines created and closed; exceptions thrown through deep stacks; GC
storms of cycles with weakref callbacks."""

import gc
import sys
import weakref

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
total = 0
called = []


def deep(n):
    if n == 0:
        raise ValueError("bottom")
    return deep(n - 1) + 1


class Node:
    pass


def gen(n):
    for i in range(n):
        yield i


async def coro(n):
    return n


for r in range(ROUNDS):
    for i in range(300):
        ns = {}
        exec(compile("def f%d(x):\n    return x * %d\nr = f%d(3)" % (i, i, i), "<soak-%d-%d>" % (r, i), "exec"), ns)
        total += ns["r"]
    try:
        deep(sys.getrecursionlimit() - 100)
    except (ValueError, RecursionError) as e:
        total += len(type(e).__name__)
    for i in range(200):
        g = gen(10)
        total += next(g)
        g.close()
        c = coro(i)
        try:
            c.send(None)
        except StopIteration as s:
            total += s.value
    refs = []
    for i in range(2000):
        a, b = Node(), Node()
        a.other, b.other = b, a
        refs.append(weakref.ref(b, lambda _: called.append(1)))
    del a, b
    gc.collect()
    total += len(refs)
print("code", total, len(called))
