"""Dependencies point inward only (ARCHITECTURE §2): the import-linter contracts in
pyproject.toml hold for the project, and they really catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import workerfacing_api

PROJECT = Path(__file__).resolve().parents[2]
PACKAGE = Path(workerfacing_api.__file__).parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path, src: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with ``project``'s pyproject.toml over the package found in ``src``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=120,
        check=False,
    )


def test_the_project_keeps_its_architecture_contracts() -> None:
    done = lint_imports(PROJECT, PROJECT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The core must not import a framework, even lazily inside a function.
        ("core/jobs.py", "def _late() -> None:\n    import sqlalchemy\n", "core is a pure domain"),
        # Nor the settings, nor an adapter, even indirectly through another core module.
        ("core/clock.py", "from workerfacing_api import config\n", "core is a pure domain"),
        ("core/matching.py", "import workerfacing_api.adapters.sql\n", "core is a pure domain"),
        # Adapters never reach into entry points.
        (
            "adapters/signing.py",
            "import workerfacing_api.entrypoints.cli\n",
            "adapters never reach into entry points",
        ),
        # Entry points take adapters from the container, never directly.
        (
            "entrypoints/http/routes.py",
            "from workerfacing_api.adapters.signing import UrlSigner\n",
            "entry points reach adapters only through the container",
        ),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    copy = tmp_path / "src" / "workerfacing_api"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + "\n" + line)
    done = lint_imports(PROJECT, tmp_path / "src")
    assert done.returncode != 0
    assert f"{contract}" in done.stdout
    assert "BROKEN" in done.stdout
