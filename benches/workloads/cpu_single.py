"""CPU-bound, one thread, a fixed amount of work (so that wall and CPU time
measure the profiler's overhead, not a deadline)."""

import os


def work(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def main():
    rounds = int(os.environ.get("ECHION_BENCH_ROUNDS", "40000"))
    for _ in range(rounds):
        work(1000)


main()
