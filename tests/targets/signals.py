"""Works for a while, then ends the way the first argument says: sigint,
sigterm (sent to itself), os_exit (os._exit(7)), or wait: prints "ready"
and goes on working until a signal from outside ends it. Reports how long
the last piece of work took before the end, as measured here."""

import os
import signal
import sys
import time

from _common import report


def warm_up(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)  #@warm-up


def last_work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)  #@last-work


def work_until_killed(t0):
    report(last_work=time.monotonic() - t0)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(0.001)  #@until-killed
        # The time from t0 to the signal, as far as it got.
        report(last_work=time.monotonic() - t0)


def main(how):
    warm_up(0.3)  #@main-warm-up
    t0 = time.monotonic()
    if how == "wait":
        last_work(0.5)  #@main-wait-work
        work_until_killed(t0)  #@main-until-killed
    last_work(0.5)  #@main-last-work
    report(last_work=time.monotonic() - t0)
    if how == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == "os_exit":
        os._exit(7)
    while True:
        time.sleep(0.01)


main(sys.argv[1])
