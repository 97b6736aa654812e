"""A small program to profile: a main thread that computes and a worker
thread that sleeps and computes.

    echion -o app.mojo python examples/app.py
"""

import threading
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def worker():
    time.sleep(0.3)
    fib(22)


def main():
    t = threading.Thread(target=worker, name="Worker")
    t.start()
    for _ in range(3):
        fib(22)
    t.join()
    print("fib(22) =", fib(22))


if __name__ == "__main__":
    main()
