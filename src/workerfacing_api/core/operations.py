"""What operators do (ARCHITECTURE §7), from the CLI or the dashboard alike: retry failed jobs,
release a node or an account from its cool-off, fail a job with a reason; and the audit log that
keeps who did which, when, to which jobs.

The actions are the core's use cases (``JobService``, ``Fleet``); this service adds the actor and
the record. An action is recorded once it is done, with what became of each job it named, so the
log says what happened, not what was asked.
"""

from __future__ import annotations

import logging

from workerfacing_api.core.errors import InvalidRequest
from workerfacing_api.core.fleet import Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.model import AuditEntry
from workerfacing_api.core.ports import AuditLog, Clock

log = logging.getLogger("workerfacing_api.operations")

# Jobs one action may name: a page of the jobs view, and more than a shell line holds.
MAX_JOBS_PER_ACTION = 500


def _words(results: dict[int, str]) -> str:
    return "; ".join(f"job {job_id}: {result}" for job_id, result in results.items())


class Operations:
    """The operators' actions, each written to the audit log."""

    def __init__(self, jobs: JobService, fleet: Fleet, audit: AuditLog, clock: Clock) -> None:
        self._jobs = jobs
        self._fleet = fleet
        self._audit = audit
        self._clock = clock

    async def retry(self, actor: str, job_ids: list[int]) -> dict[int, str]:
        """Failed jobs back in the queue, each starting over (``JobService.retry``)."""
        ids = _named(job_ids)
        results = await self._jobs.retry(ids)
        await self._record(actor, "retry", ids, _words(results))
        return results

    async def fail(self, actor: str, job_ids: list[int], reason: str) -> dict[int, str]:
        """Queued or active jobs failed with ``reason``, forwarded upstream; their workers get
        404 at their next call (``JobService.fail_on_operators_word``)."""
        ids = _named(job_ids)
        results = await self._jobs.fail_on_operators_word(ids, reason)
        await self._record(actor, "fail", ids, f"reason: {reason.strip()}; {_words(results)}")
        return results

    async def release(self, actor: str, name: str) -> dict[str, bool] | None:
        """The cool-off of a node, or of every node of an account, ended now; None when no
        such node or account was ever seen (nothing recorded)."""
        released = await self._fleet.release(name, self._clock.now())
        if released is None:
            return None
        detail = "; ".join(
            f"node {node}: {'released' if done else 'was not set aside'}"
            for node, done in released.items()
        )
        await self._record(actor, "release", [], detail, target=name)
        return released

    async def actions(self, before_id: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """The audit log, the latest first."""
        return await self._audit.actions(before_id, limit)

    async def _record(
        self, actor: str, action: str, jobs: list[int], detail: str, *, target: str | None = None
    ) -> None:
        entry = AuditEntry(
            at=self._clock.now(),
            actor=actor,
            action=action,
            target=target if target is not None else ", ".join(str(j) for j in jobs),
            jobs=tuple(jobs),
            detail=detail,
        )
        kept = await self._audit.record_action(entry)
        log.info("audit %s: %s %s %s (%s)", kept.id, actor, action, kept.target, detail)


def _named(job_ids: list[int]) -> list[int]:
    """The ids an action names, each once, in the order given."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        raise InvalidRequest("name at least one job")
    if len(ids) > MAX_JOBS_PER_ACTION:
        raise InvalidRequest(
            f"{len(ids)} jobs named; one action takes at most {MAX_JOBS_PER_ACTION}"
        )
    return ids
