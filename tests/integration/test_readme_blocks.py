"""The shell examples of README.md and docs/OPERATIONS.md, run as written, as a reader pastes
them: every fenced ``sh`` block right after an HTML comment ``<!-- runnable … -->`` (invisible on
GitHub). ``<!-- runnable: try-it … -->`` is the README's "Try it by hand": its output is checked
step by step. In every other marked block every command must succeed. Leave unmarked what needs
AWS, production or minutes of work; a block that names a port takes it from ``${PORT:-8001}``,
so that a free one can be given.

Each block runs in bash, in a fresh empty folder (``uv run`` finds the project through
``UV_PROJECT``; no ``.env`` is read), with the service's variables cleared, ``TMPDIR`` inside the
test's folder, and in a session of its own: what a block leaves running is found, and killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port
from workerfacing_api.config import VARIABLES

# Real processes on 127.0.0.1 (serve, the CLI, curl): docs/TESTING.md.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "OPERATIONS.md")
MARKER = re.compile(r"^<!-- runnable(?::\s*(?P<name>[\w-]+))?(?:\s[^>]*)?-->\n", re.MULTILINE)
SHELL_BLOCK = re.compile(r"```(?:sh|bash)\n(?P<code>.*?)^```$", re.DOTALL | re.MULTILINE)
TIMEOUT = 180  # seconds; the try-it block takes about 5 on a warm machine


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    name: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def marked_blocks() -> tuple[list[Block], list[str]]:
    """The marked blocks, and where a marker stands before something else than a shell block."""
    blocks: list[Block] = []
    misplaced: list[str] = []
    for document in DOCUMENTS:
        text = document.read_text()
        for marker in MARKER.finditer(text):
            line = text.count("\n", 0, marker.start()) + 1
            fence = SHELL_BLOCK.match(text, marker.end())
            if fence is None:
                misplaced.append(f"{document.name}:{line}")
                continue
            blocks.append(Block(document.name, line + 1, marker["name"], fence["code"]))
    return blocks, misplaced


BLOCKS, MISPLACED = marked_blocks()
OTHER_BLOCKS = [block for block in BLOCKS if block.name != "try-it"]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    left_running: bool  # a process of the block's session outlived it

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_block(
    code: str, tmp_path: Path, env: dict[str, str] | None = None, *, strict: bool = False
) -> Ran:
    """``code`` in bash as pasted, in a fresh folder ``tmp_path/cwd``, ``TMPDIR`` ``tmp_path/tmp``;
    ``strict``: stop at the first command that fails (``set -eo pipefail``)."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    # Output goes to files, not pipes: a process the block leaves behind would hold a pipe open.
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", "-c", f"set -eo pipefail\n{code}" if strict else code],
            cwd=tmp_path / "cwd",
            env={**base, "UV_PROJECT": str(ROOT), "TMPDIR": str(tmp_path / "tmp"), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, to find and kill what it leaves
        )
    try:
        returncode = process.wait(timeout=TIMEOUT)
        try:
            os.killpg(process.pid, 0)  # bash is gone: anyone answering is left over
            left_running = True
        except ProcessLookupError:
            left_running = False
        return Ran(returncode, out.read_text(), err.read_text(), left_running)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_every_runnable_marker_stands_before_a_shell_block() -> None:
    assert not MISPLACED, f"a runnable marker is not followed by a ```sh block: {MISPLACED}"
    assert [block.name for block in BLOCKS].count("try-it") == 1, "README: no try-it block"
    assert OTHER_BLOCKS, "no other block is marked runnable"


def test_try_it_by_hand_queues_pulls_and_finishes_a_job_as_written(tmp_path: Path) -> None:
    (block,) = [block for block in BLOCKS if block.name == "try-it"]
    port = free_port()
    ran = run_block(block.code, tmp_path, {"PORT": str(port)})
    assert ran.returncode == 0, ran
    assert not ran.left_running, f"the block left a process running\n{ran}"
    assert not listening(port), "the block left the service listening"

    # Its steps in order: ready, submitted, the pulled job, two reports, then `jobs show`.
    steps = iter(ran.stdout.splitlines(keepends=True))
    assert json.loads(next(steps)) == {"status": "ready"}, ran
    assert next(steps) == "submitted: 201\n", ran
    pulled: dict[str, Any] = json.loads(next(steps))
    ((queue_id, job),) = pulled.items()
    assert job["meta"]["job_id"] == 1
    assert job["handler"]["entrypoint"] == "train"
    for path in job["handler"]["files_down"].values():
        assert Path(path).is_file(), f"{path}: the block did not create the job's input"
        assert Path(path).is_relative_to(tmp_path / "tmp"), "the block wrote outside TMPDIR"
    assert next(steps) == "running: 204\n", ran
    assert next(steps) == "finished: 204\n", ran
    shown = json.loads("".join(steps))
    assert shown["id"] == int(queue_id)
    assert shown["status"] == "finished"
    assert shown["worker"] == "gpu-box-1"
    assert [a["outcome"] for a in shown["attempts"]] == ["finished"]

    # Everything went to the temporary folder, nothing to the folder it was pasted in.
    assert not any((tmp_path / "cwd").iterdir())
    assert list((tmp_path / "tmp").glob("*/queue.db")), "no queue under the temporary folder"


@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=[block.where for block in OTHER_BLOCKS])
def test_runnable_block_exits_0(block: Block, tmp_path: Path) -> None:
    ran = run_block(block.code, tmp_path, {"PORT": str(free_port())}, strict=True)
    assert ran.returncode == 0, f"{block.where}: {ran}"
    assert not ran.left_running, f"{block.where} left a process running\n{ran}"
