import json
import os
import sys

import pytest
import torch
from per_test_timeout import pytest_addoption, pytest_runtest_call  # noqa: F401  (hooks)

# Triton kernels run through its interpreter on a machine with no GPU; the variable must be set
# before any module defining @triton.jit kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_sessionstart(session):
    """Stop at once, with the cause and the fix, when the stseq under test has no compiled
    extension (e.g. ``python -m pytest`` in a checkout that is not the installed build), instead
    of hundreds of failures on the slow reference path."""
    from stseq._native import NATIVE, NATIVE_ERROR

    if NATIVE is None:
        pytest.exit(f"stseq's tests need the compiled extension: {NATIVE_ERROR}", returncode=4)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter):
    """The fuzz suites' tally (tests/fuzzing.py): cases per op and outcome class, printed and,
    with STSEQ_FUZZ_REPORT=path, written as JSON."""
    fuzzing = sys.modules.get("fuzzing")
    if fuzzing is None or not fuzzing.TALLY:
        return
    tally = {op: dict(sorted(counts.items())) for op, counts in sorted(fuzzing.TALLY.items())}
    terminalreporter.section(f"fuzz cases per op and outcome (profile {fuzzing.PROFILE})")
    for op, counts in tally.items():
        terminalreporter.write_line(
            f"{op}: " + ", ".join(f"{outcome} {n}" for outcome, n in counts.items()))
    path = os.environ.get("STSEQ_FUZZ_REPORT")
    if path:
        with open(path, "w") as file:
            json.dump({"profile": fuzzing.PROFILE, "cases": tally}, file, indent=2)
