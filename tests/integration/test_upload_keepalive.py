"""A worker that only uploads learns of its user's delete within one keep-alive interval (DESIGN
§3; docs/RELIABILITY.md, finding 8): a request for an upload URL of an active job counts as a
keep-alive for forwarding, at most one per job every ``UPSTREAM_KEEPALIVE_INTERVAL``, counted in
intervals of the fake clock, in this process (tests/inprocess.py)."""

from __future__ import annotations

from pathlib import Path

from tests.inprocess import Api, assemble, serving
from tests.integration.test_user_delete import keepalives
from workerfacing_api.core.model import Delivery


async def test_upload_url_requests_go_upstream_once_per_interval_and_learn_of_a_delete(
    tmp_path: Path,
) -> None:
    async with serving(assemble(tmp_path, upstream_keepalive_interval=1.0)) as api:
        await api.submit(1)
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "postprocessing")).status_code == 204
        # Uploading results for three intervals, a URL every 0.25 s: one keep-alive each
        # interval, none more.
        for _ in range(12):
            api.clock.advance(0.25)
            assert (await api.upload_link(queue_id, "artifact")).status_code == 201
        assert keepalives(api, 1) == 3

        api.upstream.answers[1] = Delivery.GONE  # the user deletes the job
        requests = 0
        while requests < 5:
            api.clock.advance(0.25)
            requests += 1
            answer = await api.upload_link(queue_id, "artifact")
            if answer.status_code == 404:
                break
            assert answer.status_code == 201, answer.text
        assert answer.status_code == 404, "the worker was never told to stop"
        assert requests <= 4, "the delete was not seen within one interval"
        assert (await api.put_status(queue_id, "running")).status_code == 404


async def test_an_upload_url_of_a_finished_job_sends_nothing_upstream(tmp_path: Path) -> None:
    """Uploads stay allowed after the final state (the worker sends its logs last); the job
    has nothing more to say upstream."""
    async with serving(assemble(tmp_path, upstream_keepalive_interval=0.0)) as api:
        await api.submit(1)
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "finished")).status_code == 204
        calls = len(api.upstream.calls)
        api.clock.advance(10)
        assert (await api.upload_link(queue_id, "log")).status_code == 201
        assert len(api.upstream.calls) == calls


async def test_a_just_pulled_job_learns_of_its_delete_from_an_upload_url_request(
    db_api: Api,
) -> None:
    """Over SQLite and PostgreSQL: the keep-alive is recorded on the job as it stands (here
    ``pulled``, a state a worker never reports), and the 404 stops the worker."""
    api = db_api
    await api.submit(1)
    (queue_id,) = await api.pull()
    api.clock.advance(5)  # UPSTREAM_KEEPALIVE_INTERVAL, the default
    assert (await api.upload_link(queue_id, "log")).status_code == 201
    assert keepalives(api, 1) == 1
    assert (await api.get_status(queue_id)).json() == "pulled"  # a keep-alive changes nothing
    api.upstream.answers[1] = Delivery.GONE
    api.clock.advance(5)
    assert (await api.upload_link(queue_id, "log")).status_code == 404
    assert (await api.get_status(queue_id)).status_code == 404
