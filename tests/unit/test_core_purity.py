"""The core stays a pure domain library (DESIGN §2, STYLE 1): importing it pulls in no web
framework, database, cloud or HTTP client, so other services can embed it without them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import workerfacing_api.core

FORBIDDEN = frozenset(
    {
        "litestar",
        "sqlalchemy",
        "alembic",
        "boto3",
        "botocore",
        "httpx",
        "jwt",
        "aiohttp",
        "asyncpg",
        "aiosqlite",
    }
)
CORE_DIR = Path(workerfacing_api.core.__file__).parent
CORE_FILES = sorted(CORE_DIR.rglob("*.py"))

# Imports every module of the core in a fresh interpreter (plus any extra module named on the
# command line), then reports what ended up in sys.modules.
IMPORT_ALL = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import workerfacing_api.core as core
    names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + ".")]
    for name in names + sys.argv[1:]:
        importlib.import_module(name)
    print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
    """
)


def load_in_fresh_interpreter(tmp_path: Path, *extra: str) -> tuple[list[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # nothing importable by accident from the working directory
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    return report["imported"], report["loaded"]


def forbidden_loaded(loaded: list[str]) -> list[str]:
    return sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN)


def test_importing_every_core_module_loads_no_infrastructure_package(tmp_path: Path) -> None:
    imported, loaded = load_in_fresh_interpreter(tmp_path)
    assert "workerfacing_api.core.jobs" in imported  # the walk really found the modules
    assert len(imported) == len(CORE_FILES) - 1  # every file but the package's __init__
    assert forbidden_loaded(loaded) == []
    outward = [n for n in loaded if n.startswith("workerfacing_api.") and ".core" not in n]
    assert outward == [], "the core imports adapters or entry points"


def test_the_fresh_interpreter_check_notices_a_forbidden_package(tmp_path: Path) -> None:
    # The same check, with a forbidden package imported on purpose, must report it.
    _, loaded = load_in_fresh_interpreter(tmp_path, "jwt")
    assert "jwt" in forbidden_loaded(loaded)


def imported_roots(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, wherever it appears (module
    level, inside functions, under ``TYPE_CHECKING``), including ``importlib.import_module``
    and ``__import__`` calls with a literal name."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                roots.add(first.value.split(".")[0])
    return roots


def absolute_imports(source: str) -> set[str]:
    """Full dotted names of the absolute ``from … import`` and ``import`` statements."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_no_core_module_mentions_an_infrastructure_import(path: Path) -> None:
    assert imported_roots(path.read_text(encoding="utf-8")) & FORBIDDEN == set()


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_modules_import_only_the_standard_library_msgspec_and_the_core(path: Path) -> None:
    outside = {
        name
        for name in absolute_imports(path.read_text(encoding="utf-8"))
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in {"msgspec", "__future__"}
        and name != "workerfacing_api.core"
        and not name.startswith("workerfacing_api.core.")
    }
    assert outside == set()


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import litestar", {"litestar"}),
        ("from sqlalchemy.ext.asyncio import AsyncEngine", {"sqlalchemy"}),
        ("if TYPE_CHECKING:\n    import httpx", {"httpx"}),
        ("def f():\n    import boto3.session", {"boto3"}),
        ("import importlib\nimportlib.import_module('jwt')", {"jwt", "importlib"}),
        ("__import__('aiohttp')", {"aiohttp"}),
        ("from . import model\nfrom .jobs import JobService", set()),
        ("import json, msgspec", {"json", "msgspec"}),
    ],
)
def test_the_static_check_finds_imports_wherever_they_hide(source: str, found: set[str]) -> None:
    assert imported_roots(source) == found
