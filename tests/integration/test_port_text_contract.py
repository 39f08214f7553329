"""Hostile text through every port of the queue, on every backend (the in-memory model, SQLite,
PostgreSQL): the same answer from all three, never an error.

What no database can hold (NUL, a lone surrogate) is stored as U+FFFD, on every backend alike
(``core.text.storable``); everything else (control characters, characters outside the BMP,
quotes, 10 000 characters of free text) is stored and read back as given. Names (groups, GPU
models, workers) are fed up to the length the wire schema admits (``NAME_MAX``): longer ones
never reach a port. Every assertion below compares with what the text should read back as, so
that the three parametrised runs of each test agree with each other.
"""

from __future__ import annotations

import msgspec
import pytest

from tests.bodies import job_document
from tests.queues import Queue, at, submission, worker
from workerfacing_api.core.model import (
    NAME_MAX,
    AuditEntry,
    ClassKey,
    JobQuery,
    JobStatus,
    Outcome,
    Submission,
)
from workerfacing_api.core.text import storable

# Free text (runtime_details, a sweep's or an operator's detail, a cool-off's reason, a
# delivery's error, a file id): any of these, of any length.
FREE_TEXT = {
    "nul": "Traceback\x00 (most recent call last):\x00",
    "long": "".join(chr(0x20 + i % 0x5E) for i in range(10_000)),
    "control": "bell \x07, escape \x1b[31m, delete \x7f, C1 \x85\x9f, tab\tand\nnewlines\r\n",
    "astral": "\U0001d518\U0001d52b\U0001d526 \U0001f9ea\U0001f52c " * 40,
    "quotes": "it's \"quoted\" \\ back'slash'; DROP TABLE jobs; --",
    "surrogate": "lone \ud800 and \udfff surrogates",
}
# Names as the wire admits them (no control characters, at most NAME_MAX), and what else could
# reach a port through another door: NUL and a lone surrogate.
NAMES = {
    "longest": "\U0001d518" * NAME_MAX,
    "quotes": "w'\"ü \\ %_*",
    "nul": "gpu\x00box",
    "surrogate": "gpu\udc80box",
}


def _as_stored(text: str) -> str:
    return storable(text)


@pytest.mark.parametrize("text", FREE_TEXT.values(), ids=FREE_TEXT.keys())
async def test_a_workers_report_lands_and_reads_back(queue: Queue, text: str) -> None:
    job, _ = await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker("w1"), 1, at(1), exclude_attempted=True, max_held=100
    )
    running = await queue.record_update(claimed.job, JobStatus.RUNNING, text, at(2), forward=True)
    assert running is not None
    assert running.job.runtime_details == _as_stored(text)
    failed = await queue.record_update(
        running.job, JobStatus.ERROR, text, at(3), forward=True, ended=Outcome.ERROR
    )
    assert failed is not None
    stored = await queue.get(job.id)
    assert stored is not None
    assert (stored.status, stored.runtime_details) == (JobStatus.ERROR, _as_stored(text))
    # The outbox holds the report as stored: the upstream hears it so, whoever delivers it.
    pending = await queue.pending_events_of(job.id)
    assert [(e.status, e.runtime_details) for e in pending] == [
        (JobStatus.PULLED, None),
        (JobStatus.RUNNING, _as_stored(text)),
        (JobStatus.ERROR, _as_stored(text)),
    ]
    leased = await queue.lease_events(at(40), 30, 10)  # the claim's lease ran out
    assert [(e.status, e.runtime_details) for e in leased] == [(JobStatus.PULLED, None)]
    await queue.postpone_events([leased[0].id], at(45), text)  # the delivery's error, stored
    (failure,) = await queue.recent_failures(10)
    assert failure.runtime_details == _as_stored(text)


@pytest.mark.parametrize("text", FREE_TEXT.values(), ids=FREE_TEXT.keys())
async def test_the_sweeps_and_the_operators_details_read_back(queue: Queue, text: str) -> None:
    job, _ = await queue.add(submission(1), at(0))
    (claimed,) = await queue.claim_jobs(
        worker("w1"), 1, at(1), exclude_attempted=True, max_held=100
    )
    requeued = await queue.requeue(claimed.job, text, at(400), heartbeat_before=at(300))
    assert requeued is not None
    assert requeued.job.runtime_details == _as_stored(text)
    (again,) = await queue.claim_jobs(
        worker("w2"), 1, at(401), exclude_attempted=True, max_held=100
    )
    failed = await queue.fail(again.job, text, at(800), heartbeat_before=at(700))
    assert failed is not None
    retried = await queue.retry_failed(failed.job, text, at(801))
    assert retried is not None
    stored = await queue.get(job.id)
    assert stored is not None
    assert (stored.status, stored.runtime_details) == (JobStatus.QUEUED, _as_stored(text))
    details = [e.runtime_details for e in await queue.pending_events_of(job.id)]
    assert details == [None, _as_stored(text), None, _as_stored(text), _as_stored(text)]


@pytest.mark.parametrize("text", FREE_TEXT.values(), ids=FREE_TEXT.keys())
async def test_wait_notices_operators_reasons_and_the_audit_log_read_back(
    queue: Queue, text: str
) -> None:
    job, _ = await queue.add(submission(1, hardware={"gpu_mem": 80000}), at(0))
    told = await queue.tell_why_waiting(job, text, text, at(1))
    assert told is not None
    assert told.job.wait_notice == _as_stored(text)
    stored = await queue.get(job.id)
    assert stored is not None
    assert stored.wait_notice == _as_stored(text)
    assert await queue.tell_why_waiting(stored, text, text, at(2)) is None  # told already
    (waiting,) = await queue.waiting_classes(10)
    assert await queue.waiting_in_class(waiting, at(9), not_told=text, after=0, limit=9) == []
    others = await queue.waiting_in_class(waiting, at(9), not_told="other", after=0, limit=9)
    assert [j.id for j in others] == [job.id]
    assert [j.id for j in await queue.told_why_waiting(0, 9)] == [job.id]
    failed = await queue.fail_on_operators_word(stored, text, at(3))
    assert failed is not None
    assert (failed.job.status, failed.job.runtime_details) == (JobStatus.ERROR, _as_stored(text))
    other, _ = await queue.add(submission(2), at(4))
    given_up = await queue.fail_waiting(other, text, at(5))
    assert given_up is not None
    assert given_up.job.runtime_details == _as_stored(text)
    details = [e.runtime_details for e in await queue.pending_events_of(job.id)]
    assert details == [_as_stored(text), _as_stored(text)]
    kept = await queue.record_action(
        AuditEntry(at=at(6), actor=text, action="fail", target=text, jobs=(1, 2), detail=text)
    )
    assert (kept.actor, kept.target, kept.detail) == (_as_stored(text),) * 3
    assert await queue.actions(None, 10) == [kept]


@pytest.mark.parametrize("text", FREE_TEXT.values(), ids=FREE_TEXT.keys())
async def test_file_ids_of_the_upload_ledger_read_back(queue: Queue, text: str) -> None:
    job, _ = await queue.add(submission(1), at(0))
    file_id = f"/data/alice/output/{text}"
    await queue.record_upload(job.id, 1, file_id, at(1))
    await queue.record_upload(job.id, 1, "/data/alice/output/plain.txt", at(2))
    assert await queue.uploads_since(job.id, None) == [
        _as_stored(file_id),
        "/data/alice/output/plain.txt",
    ]
    assert await queue.uploads_since(job.id, at(1)) == ["/data/alice/output/plain.txt"]


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
async def test_names_of_workers_groups_and_hardware_read_back(queue: Queue, name: str) -> None:
    profile = worker(name, gpu_model=name, gpu_archi=name, groups=(name, "lab"))
    # A job whose group and hardware are this name: the submission as the worker would see it.
    body = job_document(1, group=name, hardware={"gpu_model": name, "gpu_archi": name})
    job, _ = await queue.add(_submission_with(body, name), at(0))
    await queue.record_seen(profile, at(1))
    (claimed,) = await queue.claim_jobs(profile, 1, at(1), exclude_attempted=True, max_held=100)
    assert claimed.job.id == job.id
    assert claimed.job.worker == _as_stored(name)
    assert claimed.job.group == _as_stored(name)
    assert [j.id for j in await queue.active_jobs_of(name)] == [job.id]
    node = profile.node
    seen = await queue.worker(node)
    assert seen is not None
    assert (seen.name, seen.account) == (node, _as_stored(name))
    assert (seen.profile.gpu_model, seen.profile.gpu_archi) == (_as_stored(name),) * 2
    assert seen.profile.groups == (_as_stored(name), "lab")
    assert seen.active_jobs == (job.id,)
    ended = await queue.record_update(
        claimed.job, JobStatus.ERROR, None, at(2), forward=True, ended=Outcome.ERROR
    )
    assert ended is not None
    (outcome,) = await queue.outcomes_of(node, at(0), 10)
    assert (outcome.worker, outcome.node, outcome.outcome) == (
        _as_stored(name),
        node,
        Outcome.ERROR,
    )
    assert (await queue.baseline(at(0), at(2), excluding=node)).failing == 0
    assert await queue.set_aside(node, at(600), name, at(3), strikes=0)
    aside = await queue.worker(node)
    assert aside is not None
    assert (aside.aside_reason, aside.aside(at(4))) == (_as_stored(name), True)
    assert await queue.release(node, at(5)) is True
    (attempt,) = await queue.attempts_of(job.id)
    assert attempt.worker == _as_stored(name)
    classes = await queue.waiting_classes(10)
    assert classes == []  # the one job was pulled
    assert await queue.count_ahead(job, profile, at(6), exclude_attempted=False) == 0
    # The jobs view finds it by this worker, node and hardware class.
    by_worker = await queue.list_jobs(JobQuery(worker=name), 10)
    by_node = await queue.list_jobs(JobQuery(node=node), 10)
    hardware = ClassKey(environment="local", gpu_model=name, gpu_archi=name)
    by_class = await queue.list_jobs(JobQuery(hardware=hardware), 10)
    assert [j.id for j in by_worker + by_node + by_class] == [job.id] * 3


def _submission_with(body: dict[str, object], name: str) -> Submission:
    """A submission whose group and GPU names are ``name``: through the wire schema when it
    admits them, else (NUL, a lone surrogate: another door than HTTP) built as it would be."""
    try:
        return Submission.from_json(msgspec.json.encode(body))
    except (msgspec.ValidationError, UnicodeEncodeError):
        valid = Submission.from_json(msgspec.json.encode(job_document(1)))
        hardware = msgspec.structs.replace(valid.job.job.hardware, gpu_model=name, gpu_archi=name)
        spec = msgspec.structs.replace(valid.job.job, hardware=hardware)
        job = msgspec.structs.replace(valid.job, job=spec, group=name)
        return Submission(job=job, spec=valid.spec)


async def test_a_worker_sets_nothing_aside_by_its_text_alone(queue: Queue) -> None:
    """Names that differ only in what no database holds are one name once stored (on every
    backend alike): a worker cannot tell two of them apart, nor slip past a cool-off so."""
    first, second = "gpu\x00box", "gpu\ud800box"
    assert worker(first).node == worker(second).node
    await queue.record_seen(worker(first), at(0))
    assert await queue.set_aside(worker(first).node, at(600), "broken", at(1), strikes=0)
    await queue.add(submission(1), at(2))
    assert (
        await queue.claim_jobs(worker(second), 1, at(3), exclude_attempted=True, max_held=100) == []
    )
    assert await queue.release(worker(second).node, at(4)) is True
    claimed = await queue.claim_jobs(worker(second), 1, at(5), exclude_attempted=True, max_held=100)
    assert [c.job.upstream_id for c in claimed] == [1]
