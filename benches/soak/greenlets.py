"""Soak: gevent greenlets spawned, switched and joined in waves."""

import sys

import gevent

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def work(i):
    gevent.sleep(0)
    x = sum(range(i % 50))
    gevent.sleep(0.0005 * (i % 2))
    return x


total = 0
for r in range(ROUNDS):
    gs = [gevent.spawn(work, i) for i in range(300)]
    gevent.joinall(gs)
    total += sum(g.value for g in gs)
print("greenlets", total)
