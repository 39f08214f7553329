from __future__ import annotations
import functools
from pathlib import Path
from typing import Any
import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test
import itertools
from tests.integration import test_queue_stateful as m
from workerfacing_api.adapters.sql import sqlite as sq, postgres as pgm

FAST = settings(max_examples=40, stateful_step_count=30, deadline=None, phases=[Phase.generate], database=None)

def run(kind: str, tmp_path: Path, url: str | None) -> None:
    examples = itertools.count()
    class L(m.QueueLockstep):
        def __init__(self) -> None:
            w = tmp_path / f"e{next(examples)}"; w.mkdir()
            super().__init__(kind, w, url)
    run_state_machine_as_test(L, settings=FAST)

def mutate(mp: pytest.MonkeyPatch, name: str) -> str:
    if name == "sqlite_always_lease":
        mp.setattr(sq, "ADD_EVENT", sq.text(sq.ADD_EVENT.text.replace("CASE WHEN EXISTS (SELECT 1 FROM status_events WHERE job_id = :job_id) THEN NULL ELSE :lease_until END", ":lease_until")))
        return "sqlite"
    if name == "sqlite_order":
        orig = sq._pick.__wrapped__
        @functools.cache
        def pick(*, groups: bool, exclude_attempted: bool) -> Any:
            t = orig(groups=groups, exclude_attempted=exclude_attempted)
            return sq._expanding(t.text.replace("priority DESC, created_at, id", "priority DESC, id"), "groups") if groups else sq.text(t.text.replace("priority DESC, created_at, id", "priority DESC, id"))
        mp.setattr(sq, "_pick", pick)
        return "sqlite"
    if name == "sqlite_silent_le":
        mp.setattr(sq, "_STILL_SILENT", " AND last_heartbeat_at <= :heartbeat_before")
        return "sqlite"
    if name == "sqlite_no_coalesce":
        mp.setattr(sq, "_UPDATE_SET", sq._UPDATE_SET.replace("COALESCE(:details, runtime_details)", ":details"))
        return "sqlite"
    if name == "pg_ignore_done":
        async def fd(self: Any, stmt: Any, params: dict[str, Any]) -> Any:
            return await self._fetch(stmt, params | {"done": []})
        mp.setattr(pgm.PostgresQueue, "_fetch_done", fd)
        return "postgres"
    if name == "pg_expired_order":
        mp.setattr(pgm, "FIND_EXPIRED", pgm.Statement(pgm.FIND_EXPIRED.sql.replace("ORDER BY last_heartbeat_at, id", "ORDER BY id").replace("$1", ":before").replace("$2", ":limit")))
        return "postgres"
    if name == "pg_supersede_keeps_events":
        mp.setattr(pgm, "SUPERSEDE", pgm.Statement(
            "WITH old AS (UPDATE jobs SET status = 'cancelled', updated_at = :now "
            "WHERE upstream_id = :upstream_id AND status <> 'cancelled' RETURNING id) "
            "SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids FROM old"))
        return "postgres"
    if name == "pg_no_retry_different":
        orig = pgm._claim.__wrapped__
        @functools.cache
        def claim(*, groups: bool, exclude_attempted: bool, memory_class: int) -> Any:
            return orig(groups=groups, exclude_attempted=False, memory_class=memory_class)
        mp.setattr(pgm, "_claim", claim)
        return "postgres"
    if name == "pg_postpone_keeps_lease":
        mp.setattr(pgm, "POSTPONE_EVENTS", pgm.Statement("UPDATE status_events SET due_at = :until, attempts = attempts + 1, last_error = :error WHERE id = ANY(:ids::bigint[])"))
        return "postgres"
    raise AssertionError(name)

@pytest.mark.parametrize("name", ["sqlite_always_lease", "sqlite_order", "sqlite_silent_le", "sqlite_no_coalesce", "pg_ignore_done", "pg_expired_order", "pg_supersede_keeps_events", "pg_no_retry_different", "pg_postpone_keeps_lease"])
def test_mutant(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    kind = mutate(monkeypatch, name)
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    with pytest.raises(BaseException) as info:
        run(kind, tmp_path, url)
    print("KILLED", name, type(info.value).__name__, str(info.value).splitlines()[0][:150])
