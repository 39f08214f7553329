"""Rules the test suite keeps, read off its own sources (docs/TESTING.md).

Time in a test is the fake clock's: no test waits on the wall clock to make something happen,
except those that start real processes and are marked so (``e2e``, or ``slow``: fault and load
tests). A sleep elsewhere is how a flaky test is born on a loaded machine, and how a suite grows
to half an hour.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# Marks that allow a real wait: the test starts processes, or is a fault or load test.
WAITING_MARKS = {"e2e", "slow"}
# A fake service's own behaviour (an upstream that answers late), not a test's wait.
FAKES = TESTS / "fakes"
# A line that says why its sleep is not a wait for the service (a fake server's pause).
NOT_A_WAIT = "# not a wait:"


def _marks(decorators: list[ast.expr]) -> set[str]:
    """The names of ``pytest.mark.<name>`` among decorators (or a ``pytestmark`` value)."""
    found = set()
    for node in decorators:
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr == "mark"
            ):
                found.add(sub.attr)
    return found


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return _marks([node.value])
    return set()


def _is_sleep(node: ast.Call) -> bool:
    func = node.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "sleep"
        and isinstance(func.value, ast.Name)
        and func.value.id in {"time", "asyncio"}
    )


def _waits(path: Path, root: Path = TESTS.parent) -> Iterator[str]:
    """Sleeps of ``path`` outside a test (or module) marked to wait: ``file:line function``."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    if _module_marks(tree) & WAITING_MARKS:
        return
    for top in tree.body:
        if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if _marks(top.decorator_list) & WAITING_MARKS:
            continue
        for node in ast.walk(top):
            if isinstance(node, ast.Call) and _is_sleep(node):
                # A zero-second sleep only yields to the event loop: no wait.
                if node.args and isinstance(node.args[0], ast.Constant) and not node.args[0].value:
                    continue
                if NOT_A_WAIT in lines[node.lineno - 1]:
                    continue
                yield f"{path.relative_to(root)}:{node.lineno} {top.name}"


def test_no_test_waits_on_the_wall_clock_unless_marked_to() -> None:
    modules = [p for p in TESTS.rglob("*.py") if FAKES not in p.parents]
    assert len(modules) > 30  # the whole suite was read
    waits = [w for path in modules for w in _waits(path)]
    assert waits == [], "use the fake clock, or mark the test e2e or slow (docs/TESTING.md)"


def test_the_rule_sees_a_wait(tmp_path: Path) -> None:
    """The check itself can fail: a test that sleeps is found, a marked one is not."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import time\nimport pytest\n\n"
        "def test_waits():\n    time.sleep(1)\n\n"
        "@pytest.mark.e2e\ndef test_marked():\n    time.sleep(1)\n\n"
        "async def test_yields():\n    import asyncio\n    await asyncio.sleep(0)\n"
    )
    assert list(_waits(sample, tmp_path)) == ["test_sample.py:5 test_waits"]
