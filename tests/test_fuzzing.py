"""The fuzz harness itself: a crash in the child fails the test, results come back per case."""

import os

import pytest
import torch

from fuzzing import expect_named_error, record, run_isolated, TALLY


def child_case(kind, value):
    """Run by the child interpreter of run_isolated."""
    if kind == "which-stseq":
        import stseq
        from stseq import _native
        return [os.path.abspath(stseq.__file__), _native.NATIVE is not None]
    if kind == "crash":
        os.abort()
    if kind == "raise":
        raise ValueError(f"value must be positive, got {value}")
    return float(torch.as_tensor(value).sum())


def test_run_isolated_reports_each_case():
    results = run_isolated("test_fuzzing:child_case",
                           [{"kind": "ok", "value": torch.ones(3)}, {"kind": "raise", "value": -1}])
    assert results[0] == {"index": 0, "outcome": "returned", "value": 3.0}
    assert results[1]["outcome"] == "raised" and results[1]["type"] == "ValueError"


def test_the_child_imports_the_same_stseq():
    # CI installs stseq and runs pytest from the checkout root: a child that imported the source
    # folder (no _C) instead saw no native ops at all.
    import stseq
    [result] = run_isolated("test_fuzzing:child_case", [{"kind": "which-stseq", "value": 0}])
    from stseq import _native
    assert result["value"] == [os.path.abspath(stseq.__file__), _native.NATIVE is not None]


def test_run_isolated_fails_the_test_on_a_crash():
    with pytest.raises(pytest.fail.Exception, match="died .* in case 1"):
        run_isolated("test_fuzzing:child_case",
                     [{"kind": "ok", "value": 1.0}, {"kind": "crash", "value": 0}])


def test_expect_named_error_checks_the_name_and_records():
    before = TALLY["harness"]["named-error"]
    expect_named_error("harness", lambda: child_case("raise", -1), "value")
    assert TALLY["harness"]["named-error"] == before + 1
    with pytest.raises(AssertionError, match="does not name"):
        expect_named_error("harness", lambda: child_case("raise", -1), "lengths")
    with pytest.raises(ValueError):
        record("harness", "passed")
    del TALLY["harness"]  # not a fuzz case of any op
