"""Replaces itself with a new program image (os.execv of the same
interpreter) once; each image works in a function of its own."""

import os
import sys
import time

from _common import report


def work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def first_image():
    work(0.2)  #@first


def second_image():
    work(0.3)  #@second


if len(sys.argv) == 1:
    first_image()
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, __file__, "again"])
else:
    second_image()
    report(pid=os.getpid())
