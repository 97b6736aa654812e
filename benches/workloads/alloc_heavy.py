"""Allocation-heavy, one thread, a fixed amount of work (for memory mode).

Keeps a list of LIVE small objects (a 3-tuple holding a 3-item list and a
short str) alive, and in each of STEPS steps replaces a random slot with a
new such object: the one it replaced is freed. Each step also builds a few
temporaries (an int list and a str) that die at once, so about 3.4 million
short-lived objects are created in all while about 100,000 stay live.
Seeded, so every run allocates the same; prints nothing. ECHION_BENCH_STEPS
changes the number of steps.
"""

import os
import random

LIVE = 100_000
STEPS = int(os.environ.get("ECHION_BENCH_STEPS", "570000"))


def make(i):
    # Three objects live on: the tuple, the list and the str.
    return (i, [i, i + 1, i + 2], "k%d" % i)


def churn(i):
    # Three short-lived objects: a list, a str and the sum (an int past the
    # small-int cache); they die when this returns.
    tmp = [i, -i]
    s = str(i)
    return len(s) + sum(tmp) + i * 1_000_003


def main():
    rng = random.Random(1234)
    live = [make(i) for i in range(LIVE)]
    pick = rng.randrange
    total = 0
    for i in range(STEPS):
        live[pick(LIVE)] = make(i)
        total += churn(i)
    return total, len(live)


main()
