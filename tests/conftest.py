import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "parallel: the file's tests weigh no share of samples or time, so they may run beside others "
        "(scripts/test runs them two at a time, the rest one at a time)",
    )
