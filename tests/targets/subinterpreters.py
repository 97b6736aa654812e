"""Two subinterpreters, each running code in a thread of its own while the
main interpreter's main thread waits. Reports their interpreter ids and
how long the code ran in each. Prints a line so that the output can be
compared with a run without echion."""

import sys
import threading
import time

from _common import report

try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.8 to 3.12

# Line numbers in "<string>" count from the first line of CODE.
CODE = """\
import time

def in_subinterpreter(seconds):
    time.sleep(seconds)  #@sub-sleep

in_subinterpreter(0.6)  #@sub-call
"""


def run_in(iid, out):
    t0 = time.monotonic()
    interpreters.run_string(iid, CODE)
    out[str(int(iid))] = time.monotonic() - t0


def main():
    ids = [interpreters.create() for _ in range(2)]
    out = {}
    runners = [threading.Thread(target=run_in, args=(iid, out), name="runner-%d" % int(iid)) for iid in ids]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    for iid in ids:
        interpreters.destroy(iid)
    main_id = interpreters.get_main()
    if isinstance(main_id, tuple):  # 3.13: (id, whence)
        main_id = main_id[0]
    report(main=int(main_id), durations=out)
    print("ran code in %d subinterpreters" % len(ids))
    sys.stdout.flush()


main()
