"""stseq.info() and the stseq command line."""

import json
import subprocess
import sys

import torch

import stseq
from stseq import cli


def test_info_reports_the_build():
    report = stseq.info()
    assert report["torch"] == torch.__version__
    assert report["native"]["cpu"] is True, report["native"]["error"]
    assert report["ops"]["cpu"]["time_gap_embedding"] == ["native", "reference"]
    for op in ("item_logsumexp", "item_cross_entropy"):  # auto: C++ on the CPU, never Triton
        assert report["ops"]["cpu"][op] == ["native", "reference"]


def test_info_command_prints_text_and_json(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native C++   built" in out
    assert "cpu  item_cross_entropy       native > reference" in out
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["native"]["cpu"] is True


def test_console_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stseq.cli", "info"], capture_output=True,
                            text=True, check=True, cwd=tmp_path)
    assert "time_gap_embedding" in result.stdout and "native C++   built" in result.stdout
    assert "NativeUnavailableWarning" not in result.stderr
