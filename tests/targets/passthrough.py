"""Writes to stdout and stderr, echoes stdin, then ends the way the first
argument says: ok, exit3 (sys.exit(3)), raise (an uncaught exception),
sigterm or sigkill (sent to itself), os_exit (os._exit(5))."""

import os
import signal
import sys
import time


def main(how):
    sys.stdout.write("out: héllo 計算\n")
    sys.stderr.write("err: wörld 計算\n")
    data = sys.stdin.read()
    sys.stdout.write("stdin: %r\n" % data)
    sys.stdout.write("argv: %r\n" % sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    if how == "ok":
        return
    if how == "exit3":
        sys.exit(3)
    if how == "raise":
        raise RuntimeError("raised on purpose")
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "os_exit":
        os._exit(5)
    # A signal is delivered on the way back to the interpreter loop; make
    # sure it never gets past here.
    while True:
        time.sleep(0.01)


main(sys.argv[1])
