"""Starts a child with a Python that has no echion installed (the base
interpreter of the venv) and reports exactly what its stderr held; forks
once single-threaded and once with a thread running, and reports the
warnings each fork raised."""

import os
import subprocess
import sys
import threading
import warnings

from _common import report

base = os.path.join(sys.base_prefix, "bin", "python3")
child = subprocess.run([base, "-c", "import sys; sys.stderr.write('child stderr')"], stderr=subprocess.PIPE)


def fork_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return [str(w.message).split(",")[1].strip() for w in caught if issubclass(w.category, DeprecationWarning)]


alone = fork_warnings()
stop = threading.Event()
t = threading.Thread(target=stop.wait, name="waiter")
t.start()
with_thread = fork_warnings()
stop.set()
t.join()
report(base=base, child_stderr=child.stderr.decode(), fork_alone=alone, fork_with_thread=with_thread)
