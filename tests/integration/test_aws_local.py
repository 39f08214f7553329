"""``devtools/aws_local.py`` as a user runs it: a port it needs that is taken stops it at once,
with one line naming the port and the option that changes it, before moto or ``serve`` is
started or anything is printed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port of 127.0.0.1 that another program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def run_aws_local(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The script's state folder is made under TMPDIR: an empty TMPDIR afterwards means it never
    # got as far as making one (nor moto's log in it).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HOST"} | {"TMPDIR": str(scratch)}
    return subprocess.run(
        [sys.executable, "-m", "devtools.aws_local", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("option", ["--port", "--moto-port"])
def test_a_taken_port_stops_it_before_anything_starts(
    tmp_path: Path, taken: int, option: str
) -> None:
    answer = run_aws_local(tmp_path, option, str(taken))
    assert answer.returncode == 1
    assert answer.stderr.splitlines() == [
        f"aws_local: port {taken} on 127.0.0.1 is in use; choose another with {option}"
    ]
    assert answer.stdout == ""
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_same_port_for_both_is_refused(tmp_path: Path) -> None:
    answer = run_aws_local(tmp_path, "--port", "18999", "--moto-port", "18999")
    assert answer.returncode == 1
    assert answer.stderr.splitlines() == [
        "aws_local: --port and --moto-port are both 18999: give them different ports"
    ]
    assert list((tmp_path / "tmp").iterdir()) == []
