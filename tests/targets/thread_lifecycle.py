"""Threads that come and go while the program is sampled: one that starts,
works briefly and ends while the main thread goes on, and one that renames
itself halfway. Reports the phases' durations as measured here."""

import threading
import time

from _common import report


def snooze(seconds):
    time.sleep(seconds)  #@snooze


def brief(out):
    t0 = time.monotonic()
    snooze(0.3)  #@brief
    out["brief"] = time.monotonic() - t0


def before_rename(seconds):
    snooze(seconds)  #@before


def after_rename(seconds):
    snooze(seconds)  #@after


def renamed(out):
    t0 = time.monotonic()
    before_rename(0.5)  #@renamed-before
    t1 = time.monotonic()
    threading.current_thread().name = "after-rename"
    t2 = time.monotonic()
    after_rename(0.5)  #@renamed-after
    out["before"], out["after"] = t1 - t0, time.monotonic() - t2


def afterwards(seconds):
    snooze(seconds)  #@afterwards


def main():
    out = {}
    t = threading.Thread(target=brief, args=(out,), name="short-lived")
    t.start()
    t.join()
    # The short-lived thread is gone; the program goes on for a while.
    afterwards(0.3)  #@main-afterwards
    r = threading.Thread(target=renamed, args=(out,), name="before-rename")
    r.start()
    r.join()
    report(**out)


main()
