"""The ``echion`` command: ``python -m echion``, and what the shell launcher
of a source build runs.

The front end is the Rust one (crates/echion-cli), reached through the
native module so that ``pip install echion`` and ``cargo install`` give the
same command. It validates the options and then replaces this process with
the profiled command, so nothing here runs after it.
"""

import os
import sys


def main() -> None:
    from echion.core import cli_main

    bootstrap = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(cli_main(sys.argv[1:], bootstrap))


if __name__ == "__main__":
    main()
