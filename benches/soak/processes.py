"""Soak: forks in a loop, multiprocessing pools (fork and spawn), and a
child killed by SIGKILL while it runs."""

import multiprocessing as mp
import os
import signal
import sys
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def square(x):
    return x * x


def linger():
    while True:
        time.sleep(0.01)


if __name__ == "__main__":
    codes = 0
    for i in range(ROUNDS * 3):
        pid = os.fork()
        if pid == 0:
            os._exit(i % 7)
        _, status = os.waitpid(pid, 0)
        codes += os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    total = 0
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(2) as pool:
            total += sum(pool.map(square, range(ROUNDS * 5)))
    victim = mp.get_context("fork").Process(target=linger)
    victim.start()
    time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    print("processes", codes, total, victim.exitcode)
