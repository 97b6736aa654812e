"""A program whose exit is under way when echion attaches: its atexit
handler says ``exiting`` and sleeps (a moment where an attach can run), then
the interpreter finalizes for a second with nobody holding the GIL (an
object freed then sleeps). With ``threading`` as its second argument it
imports ``threading`` first, which shows that the exit has begun.

Arguments: the handler's sleep in seconds, and ``threading`` or ``bare``."""

import atexit
import sys
import time

if sys.argv[2] == "threading":
    import threading  # noqa: F401
elif "threading" in sys.modules:
    # (Run with -S: a `.pth` file of the interpreter's may import it.)
    sys.exit("threading is imported: the bare form needs python -S")


class Late:
    """Freed as the interpreter finalizes: the finalization then waits."""

    def __init__(self, sleep):
        self.sleep = sleep

    def __del__(self):
        self.sleep(1.0)


late = Late(time.sleep)


def at_exit():
    print("exiting", flush=True)
    time.sleep(float(sys.argv[1]))
    print("done", flush=True)


atexit.register(at_exit)
print("ready", flush=True)
