"""Shared machinery of the property-based (fuzz) suites, ``tests/ops/test_<op>_fuzz.py``.

- hypothesis profiles, chosen by the environment variable ``STSEQ_FUZZ``: ``ci`` (the default: a
  fixed seed, few examples, no deadline, so CI stays fast and repeatable) and ``large`` (many
  examples, a fresh seed each run).
- ``record(op, outcome)``: every fuzz case records what happened, one outcome class of
  ``OUTCOMES``; the tally per op prints at the end of the run and goes to the JSON file named by
  ``STSEQ_FUZZ_REPORT`` when it is set (``tests/conftest.py`` does both).
- ``expect_named_error(op, fn, argument)``: the call must raise ``ValueError`` or ``TypeError``
  whose message names ``argument``.
- ``run_isolated(target, cases)``: risky cases run in a child interpreter, so that a crash
  (segfault, abort) fails the test that found it instead of killing the whole run.

Example::

    from fuzzing import expect_named_error, record

    @fuzz_settings
    @given(...)
    def test_time_gap_matches_reference(...):
        torch.testing.assert_close(native, reference)
        record("time_gap_embedding", "match")
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

import hypothesis
import pytest
import torch

hypothesis.settings.register_profile(
    "ci", max_examples=25, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow,
                           hypothesis.HealthCheck.data_too_large])
hypothesis.settings.register_profile(
    "large", max_examples=500, deadline=None, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow,
                           hypothesis.HealthCheck.data_too_large])
PROFILE = os.environ.get("STSEQ_FUZZ", "ci")
hypothesis.settings.load_profile(PROFILE)

# "match": valid input, the same answer as the reference twin (NaN/inf where it has them);
# "named-error": invalid input refused with a ValueError/TypeError naming the argument;
# "no-crash": a risky case run in a child interpreter that returned or raised cleanly.
OUTCOMES = ("match", "named-error", "no-crash")
TALLY = collections.defaultdict(collections.Counter)


def record(op, outcome):
    """Count one fuzz case of ``op`` with ``outcome`` (one of ``OUTCOMES``)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    TALLY[op][outcome] += 1


def expect_named_error(op, fn, argument, *, errors=(ValueError, TypeError)):
    """Call ``fn()``; it must raise one of ``errors`` whose message contains ``argument``.
    Records a ``named-error`` case of ``op`` and returns the exception."""
    with pytest.raises(errors) as info:
        fn()
    assert argument in str(info.value), (
        f"the error does not name {argument!r}: {type(info.value).__name__}: {info.value}")
    record(op, "named-error")
    return info.value


_CHILD = r"""
import importlib, json, sys, traceback
import torch
target, path = sys.argv[1], sys.argv[2]
module, function = target.split(":")
fn = getattr(importlib.import_module(module), function)
for index, case in enumerate(torch.load(path, weights_only=True)):
    print(json.dumps({"start": index}), flush=True)
    try:
        value = fn(**case)
        result = {"outcome": "returned", "value": value}
    except Exception as error:  # reported to the parent, which decides
        result = {"outcome": "raised", "type": type(error).__name__, "message": str(error)[:2000]}
    print(json.dumps({"index": index, **result}), flush=True)
"""


def run_isolated(target, cases, *, timeout=300):
    """Run ``target`` ("module:function", importable from the test's ``sys.path``) on each case
    (a dict of keyword arguments: tensors, numbers, strings, lists) in one child interpreter.

    Returns one dict per case: ``{"outcome": "returned", "value": ...}`` (the function's return
    value, which must be JSON-serialisable) or ``{"outcome": "raised", "type": ..., "message":
    ...}``. Fails the calling test, naming the case, when the child dies or hangs.
    """
    cases = list(cases)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cases.pt")
        torch.save(cases, path)
        # The child imports the stseq this process imported (the installed build, with its _C),
        # not a source checkout that happens to be on sys.path or the working directory: its
        # folder goes first, and the child runs in the temporary folder.
        import stseq
        installed = os.path.dirname(os.path.dirname(os.path.abspath(stseq.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [installed, *(os.path.abspath(p) for p in sys.path if p)]))
        try:
            child = subprocess.run([sys.executable, "-c", _CHILD, target, path], env=env,
                                   cwd=folder, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            pytest.fail(f"{target}: the child interpreter hung ({timeout} s); "
                        f"last output: {(expired.stdout or '')[-500:]}")
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    results = [line for line in lines if "index" in line]
    if child.returncode != 0:
        started = [line["start"] for line in lines if "start" in line]
        case = started[-1] if started else None
        pytest.fail(f"{target}: the child interpreter died (exit {child.returncode}) in case "
                    f"{case}: {cases[case] if case is not None else ''}\n{child.stderr[-2000:]}")
    return results


def bad_lengths(with_lengths):
    """The bad-``lengths`` mutations every op with a ``lengths [B]`` argument shares: name ->
    (mutation, the argument its error must name). ``with_lengths(make)`` turns ``make(B, L) ->
    lengths`` into the op's mutation of a case."""
    return {
        "lengths float": (with_lengths(lambda batch, _: torch.ones(batch)), "lengths"),
        "lengths negative": (with_lengths(lambda batch, _: torch.full((batch,), -1)), "lengths"),
        "lengths past L": (with_lengths(lambda batch, seq_len: torch.full((batch,), seq_len + 1)),
                           "lengths"),
        "lengths one more row": (with_lengths(
            lambda batch, _: torch.zeros(batch + 1, dtype=torch.long)), "lengths"),
        "lengths rank 2": (with_lengths(lambda batch, _: torch.zeros(batch, 1, dtype=torch.long)),
                           "lengths"),
        "lengths meta": (with_lengths(lambda batch, _: torch.zeros(batch, dtype=torch.long,
                                                                   device="meta")), "lengths"),
    }
