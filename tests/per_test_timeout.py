"""pytest plugin: ``--per-test-timeout SECONDS`` fails a test that runs longer than that.

For the GPU check (scripts/gpu_check.sh), which must finish in minutes and may not have
pytest-timeout. A test body still running after SECONDS gets a ``TimeoutError`` raised in it
(SIGALRM; the test fails and ``-x`` stops the run cleanly, JUnit XML included); a test stuck
in C code, where Python signal handlers cannot run (a hung CUDA synchronisation), gets every
thread's traceback dumped and the process ended ``HARD_STOP_AFTER`` seconds later.

    python -m pytest tests -m cuda -x --per-test-timeout 60

tests/conftest.py loads it; ``-p per_test_timeout`` loads it elsewhere.
"""

import faulthandler
import signal

import pytest

HARD_STOP_AFTER = 15.0  # seconds after the timeout


def pytest_addoption(parser):
    parser.addoption("--per-test-timeout", type=float, default=None, metavar="SECONDS",
                     help="fail a test whose body runs longer than SECONDS (SIGALRM); end the "
                     f"process {HARD_STOP_AFTER:g} s later if it is stuck outside Python")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    seconds = item.config.getoption("--per-test-timeout")
    if not seconds:
        return (yield)

    def expire(signum, frame):
        raise TimeoutError(f"{item.nodeid} ran longer than --per-test-timeout={seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds + HARD_STOP_AFTER, exit=True)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
