"""Faults and fault handlers, which echion's in-process reader shares with
the program. First argument:

crash: works a little, then reads address 8 (a segmentation fault).
faulthandler: works, enables faulthandler (which installs its own SIGSEGV
handler over echion's), works again, ends normally."""

import ctypes
import faulthandler
import resource
import sys
import time

from _common import report


def before(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)  #@before


def after(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)  #@after


def crash():
    # A crash on purpose leaves no core: the cores the test script prints
    # when a run fails are the crashes nobody asked for.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(8, 8)  #@crash


def main():
    before(0.3)
    if sys.argv[1] == "crash":
        crash()
    else:
        faulthandler.enable()
        report(enabled=faulthandler.is_enabled(), through_echion=hasattr(faulthandler.enable, "__echion_original__"))
        after(0.3)
        print("done")


main()
