"""Starts short-lived threads one after another, each joined before the
next starts, and reports how long that took. While a thread starts, up to
3.11, its new thread state carries its creator's thread ids: the sampler
must not show it as a second main thread."""

import threading
import time

from _common import report

COUNT = 400


def brief():
    pass


def main():
    t0 = time.monotonic()
    for i in range(COUNT):
        t = threading.Thread(target=brief, name="brief-%03d" % i)
        t.start()  #@start
        t.join()
    report(seconds=time.monotonic() - t0)


main()
