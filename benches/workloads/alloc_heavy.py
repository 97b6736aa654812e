"""Allocation-heavy, one thread, a fixed amount of work (for memory mode).

Keeps 100,000 small objects (Item: two slots, each an int) alive in a list,
and in each of STEPS steps replaces a random slot with a new Item: the one
it replaces is freed with its two ints. Each step also builds a scratch
list (144 pointers) and sorts it in place, then drops it. A step makes five
objects (the loop counter, the slot number, the new Item and its value, the
scratch list) and frees about as many, so 680,000 steps make about 3.4
million short-lived objects while about 100,000 Items stay live; CPython's
allocators see about 12 calls a step (random's own ints included). It
takes about 2 s plain on CPython 3.11 (2-core dev machine). Seeded, so
every run allocates the same; prints nothing. ECHION_BENCH_STEPS changes
the number of steps.
"""

import os
import random

LIVE = 100_000
STEPS = int(os.environ.get("ECHION_BENCH_STEPS", "680000"))


class Item:
    __slots__ = ("key", "value")

    def __init__(self, key, value):
        self.key = key
        self.value = value


def main():
    rng = random.Random(1234)
    pick = rng.randrange
    live = [Item(i, i) for i in range(LIVE)]
    for i in range(STEPS):
        j = pick(LIVE)
        old = live[j]
        live[j] = Item(i, old.value + 1)
        scratch = [old.key, j, i, old.value] * 36
        scratch.sort()
    return live


main()
