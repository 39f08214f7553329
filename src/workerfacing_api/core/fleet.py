"""The fleet's health: which worker nodes were seen, and setting aside a node that breaks jobs.

The unit is a **node** (``WorkerProfile.node``), not an account: DECODE labs run one fetcher per
GPU under one account, and the cloud workers share one. A node whose GPU or driver is broken fails
every job it pulls, and a worker's ``error`` is final: pulling without pause, one such node would
turn the queue into failed jobs. So a node whose recent attempts all failed (errors or time-outs),
while the other nodes finish their jobs, is set aside: its pulls get nothing for a cool-off that
doubles on each repeat; the other nodes of its account keep working. The other nodes are counted
one vote each, those set aside left out: one node's mass failure neither outweighs nor silences
the rest. When the others fail too, the failures point at the jobs (a bad batch), not at the
node, and nobody is set aside.

``decide_aside`` is the rule, pure; ``Fleet`` applies it through the ``WorkerRegistry`` port and
keeps the registry current at little cost (a pull writes only when the worker's offer changed or
its row is a few seconds old).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.model import (
    AttemptOutcome,
    FleetBaseline,
    Outcome,
    WorkerProfile,
    WorkerRecord,
)
from workerfacing_api.core.ports import Metrics, NoMetrics, WorkerRegistry

log = logging.getLogger("workerfacing_api.fleet")

# A worker's row is rewritten at most this often while its offer stays the same: "last seen" is
# then at most this stale, and a busy worker's pulls cost no write.
SEEN_REFRESH_SECONDS = 10.0
_REMEMBERED_WORKERS = 10_000


class AsidePolicy(msgspec.Struct, frozen=True, kw_only=True):
    after_failures: int = 3  # failed attempts in a row that set a worker aside (0: never)
    cool_off: float = 600.0  # seconds of the first cool-off; each repeat doubles it
    cool_off_max: float = 86_400.0
    window: float = 3_600.0  # seconds back that outcomes count as evidence

    def cool_off_for(self, strikes: int) -> float:
        return float(min(self.cool_off * 2 ** min(strikes, 32), self.cool_off_max))


class SetAside(msgspec.Struct, frozen=True, kw_only=True):
    until: datetime
    seconds: float
    reason: str


def duration(seconds: float) -> str:
    """A span of time as people say it: "45 s", "15 minutes", "2 hours"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        minutes = seconds / 60
        return f"{minutes:.0f} minutes"
    hours = seconds / 3600
    return f"{hours:.0f} hours" if hours == int(hours) or hours >= 10 else f"{hours:.1f} hours"


def _evidence(outcome: AttemptOutcome) -> str:
    took = duration((outcome.ended_at - outcome.pulled_at).total_seconds())
    if outcome.outcome is Outcome.TIMEOUT:
        return f"job {outcome.job_id} timed out, pulled {took} before"
    return f"job {outcome.job_id} error after {took}"


def shared_node_hint(node: WorkerRecord) -> str | None:
    """For a node without an instance id: every fetcher of its account at its address offering
    the same hardware is this node and shares its standing; the remedy, in words."""
    if node.profile.instance is not None:
        return None
    return (
        f"every fetcher of account {node.account} at {node.profile.address or 'an unknown address'}"
        " offering this hardware is this one node and shares its standing; give each fetcher "
        "its own instance id (header X-Worker-Instance or query worker_instance) to have them "
        "judged apart"
    )


def decide_aside(
    worker: WorkerRecord,
    recent: Sequence[AttemptOutcome],
    others: FleetBaseline,
    now: datetime,
    policy: AsidePolicy,
) -> SetAside | None:
    """Whether to set the node ``worker`` aside now.

    ``recent``: the node's attempts that ended within the window and after its last cool-off,
    the latest first. ``others``: how the other nodes not set aside fared within the window, one
    vote each. The node is set aside when its last ``after_failures`` attempts all failed and,
    meanwhile, more of the other nodes finished more than they failed than not: a node that
    fails the kind of work the others do. A batch of jobs that fail on every node sets nobody
    aside."""
    n = policy.after_failures
    if n <= 0 or worker.aside(now):
        return None
    streak = list(recent[:n])
    if len(streak) < n or any(o.outcome is Outcome.FINISHED for o in streak):
        return None
    if others.healthy == 0 or others.failing >= others.healthy:
        return None  # the others fail as much: the jobs are the problem, or the whole fleet
    seconds = policy.cool_off_for(worker.strikes)
    evidence = "; ".join(_evidence(o) for o in reversed(streak))
    reason = (
        f"its last {n} attempts failed ({evidence}) while {others.healthy} other node(s) "
        f"finished more jobs than they failed and {others.failing} did not, in the last "
        f"{duration(policy.window)}"
    )
    if worker.strikes:
        reason += f"; set aside {worker.strikes} time(s) before since it last finished a job"
    shared = shared_node_hint(worker)
    if shared is not None:
        reason += f"; {shared}"
    return SetAside(until=now + timedelta(seconds=seconds), seconds=seconds, reason=reason)


def node_label(node: WorkerRecord) -> str:
    """A node as operators read it: ``n-…`` (account at address, instance id)."""
    where = node.profile.address or "unknown address"
    instance = f", instance {node.profile.instance}" if node.profile.instance is not None else ""
    return f"{node.node} ({node.account} at {where}{instance})"


class Fleet:
    """The worker registry's use cases: note pulls, judge ended attempts, release workers."""

    def __init__(
        self, registry: WorkerRegistry, policy: AsidePolicy, *, metrics: Metrics | None = None
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._metrics = metrics or NoMetrics()
        self._written: dict[str, tuple[WorkerProfile, datetime]] = {}

    @property
    def policy(self) -> AsidePolicy:
        return self._policy

    async def seen(self, worker: WorkerProfile, now: datetime) -> None:
        """Note a pull. Writes only when the offer changed or the row is getting stale."""
        node = worker.node
        last = self._written.get(node)
        if (
            last is not None
            and last[0] == worker
            and now - last[1] < timedelta(seconds=SEEN_REFRESH_SECONDS)
        ):
            return
        await self._registry.record_seen(worker, now)
        if len(self._written) >= _REMEMBERED_WORKERS:
            self._written.clear()
        self._written[node] = (worker, now)

    async def judge(self, name: str, now: datetime) -> SetAside | None:
        """After one of the node's attempts failed (its outcome noted with the change that
        ended it): set the node ``name`` aside if its failures point at itself.

        Health bookkeeping never fails the worker's request: with the database gone, the
        change itself failed already."""
        try:
            return await self._judge(name, now)
        except Unavailable as exc:
            log.warning("could not judge node %s after a failure (%s)", name, exc.detail)
            return None

    async def _judge(self, name: str, now: datetime) -> SetAside | None:
        record = await self._registry.worker(name)
        if record is None:
            return None
        since = now - timedelta(seconds=self._policy.window)
        if record.aside_until is not None and record.aside_until > since:
            since = record.aside_until  # only what happened after its last cool-off counts
        recent = await self._registry.outcomes_of(name, since, max(self._policy.after_failures, 1))
        others = await self._registry.baseline(
            now - timedelta(seconds=self._policy.window), now, excluding=name
        )
        decision = decide_aside(record, recent, others, now, self._policy)
        if decision is None:
            return None
        if not await self._registry.set_aside(
            name, decision.until, decision.reason, now, strikes=record.strikes
        ):
            return None  # another process judged it at the same moment, and won
        self._metrics.set_aside()
        log.warning(
            "node %s set aside for %s, until %s: %s",
            node_label(record),
            duration(decision.seconds),
            decision.until.isoformat(timespec="seconds"),
            decision.reason,
        )
        return decision

    async def release(self, name: str, now: datetime) -> dict[str, bool] | None:
        """An operator ends a cool-off early: of the node with this id, or of every node of
        the account of this name. Which nodes were set aside (True: released now) or not; None
        if no such node or account was ever seen."""
        record = await self._registry.worker(name)
        nodes = (
            [record]
            if record is not None
            else [n for n in await self._registry.workers(None) if n.account == name]
        )
        if not nodes:
            return None
        results: dict[str, bool] = {}
        for node in nodes:
            released = bool(await self._registry.release(node.node, now))
            results[node.node] = released
            if released:
                log.warning("node %s released by an operator: it gets jobs again", node_label(node))
        return results

    async def note_cool_off_ends(self, now: datetime) -> list[WorkerRecord]:
        """Log each cool-off that ended (once, whichever process sees it first)."""
        ended = await self._registry.note_cool_off_ends(now)
        for record in ended:
            log.warning(
                "node %s: cool-off over (set aside at %s because %s); it gets jobs again",
                node_label(record),
                record.aside_at.isoformat(timespec="seconds") if record.aside_at else "?",
                record.aside_reason,
            )
        return ended

    async def workers(self, seen_since: datetime | None) -> list[WorkerRecord]:
        return await self._registry.workers(seen_since)

    async def recent_outcomes(self, name: str, now: datetime, limit: int) -> list[AttemptOutcome]:
        """How the node's latest attempts within the evidence window ended, latest first."""
        since = now - timedelta(seconds=self._policy.window)
        return await self._registry.outcomes_of(name, since, limit)
