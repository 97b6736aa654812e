"""echion's target_generators, with time in both generators: one delegating
to another with ``yield from``, consumed by a plain function."""

import time


def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def generator2(j):
    for i in range(5):
        busy(0.01)  #@busy
        yield i * j


def generator():
    for i in range(10):
        yield from generator2(i)  #@yield-from
        time.sleep(0.05)  #@sleep


def my_function():
    for _ in generator():  #@consume
        pass


if __name__ == "__main__":
    my_function()  #@main
