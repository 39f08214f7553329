"""The scripts under ``benchmarks/`` answer ``--help`` like any command: usage, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_report_help_prints_its_usage_and_exits_0() -> None:
    answer = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (answer.returncode, answer.stderr) == (0, "")
    assert answer.stdout.startswith("usage: report.py")


def test_report_names_a_file_it_cannot_read_in_one_line() -> None:
    answer = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), str(ROOT / "no-such.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 2
    assert answer.stderr.splitlines()[-1].endswith("no-such.jsonl: No such file or directory")
    assert "Traceback" not in answer.stderr
