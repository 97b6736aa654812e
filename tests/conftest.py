import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "parallel: the test weighs no share of samples or time, so it may run beside others "
        "(scripts/test runs them two at a time, the rest one at a time)",
    )
    config.addinivalue_line(
        "markers",
        "once: the test's subject does not depend on the interpreter that runs pytest (files other tools "
        "wrote, converted or read by echion's Rust code and austin-python): scripts/test runs it on one "
        "interpreter (3.12) instead of six",
    )

    # A pytest started in the background by a shell without job control
    # (`pytest ... &` in a script) has SIGINT and SIGQUIT ignored, and every
    # program it starts inherits that: the tests of what a program does on
    # Ctrl-C or Ctrl-\ would then see it ignore them. The programs start with
    # the actions a terminal gives them (a caught signal is reset at exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
