"""Starts a child with a Python that has no echion installed (the base
interpreter of the venv) and reports exactly what its stderr held; forks
once single-threaded, once from a child that forks again at once (a double
fork), and once with a thread running, and reports the warnings each fork
raised."""

import ast
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


def fork_in_child():
    # A child that forks again at once, as a daemon's double fork does: the
    # warnings of its own fork, sent back through a pipe.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, repr(fork_warnings()).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return ast.literal_eval(data.decode())


alone = fork_warnings()
in_child = fork_in_child()
stop = threading.Event()
t = threading.Thread(target=stop.wait, name="waiter")
t.start()
with_thread = fork_warnings()
stop.set()
t.join()
report(base=base, child_stderr=child.stderr.decode(), fork_alone=alone, fork_in_child=in_child, fork_with_thread=with_thread)
