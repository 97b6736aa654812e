"""Run by ``echion -p`` inside the process it attaches to, at a point where
CPython runs Python code safely (a pending call, or where a blocking call
would run a signal handler), with ``CONTROL`` set to the attach's control
directory. Loads the echion package of the ``echion`` command (the process
need not have echion installed; nothing goes on ``sys.path``) and starts
profiling. Every outcome is written to ``CONTROL/status``; nothing but the
program's own ``KeyboardInterrupt`` raises out of here, and nothing is left
in ``__main__``.
"""


def _status(control, line):
    import os

    try:
        fd = os.open(os.path.join(control, "status"), os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _attach(control):
    import os

    if not os.path.isdir(control):
        # echion gave up on this attach before this ran: do nothing.
        return
    _status(control, "running")
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "loader.py")
    namespace = {"__name__": "echion_loader"}
    with open(path, "rb") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    namespace["load_echion"](os.path.dirname(here))
    from echion import attach

    attach.run(control, lambda line: _status(control, line))


try:
    _attach(CONTROL)  # noqa: F821 (set by the code that runs this file)
except KeyboardInterrupt:
    # The program's own Ctrl-C, arrived while this ran: it goes out, and
    # the injected code raises it again for the program once this is over.
    _status(CONTROL, "error: interrupted by the program's Ctrl-C")  # noqa: F821
    raise
except BaseException as e:  # never raise into the program
    _status(CONTROL, "error: %s: %s" % (type(e).__name__, e))  # noqa: F821
