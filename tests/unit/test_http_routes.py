"""The worker protocol of ARCHITECTURE §4 through the HTTP routes, in process and in milliseconds.

The app is built the way ``serve`` builds it, from the container, with three providers
overridden: the in-memory queue, a fake clock and a recording upstream that can answer that a
job was deleted. Litestar's test client drives it over ASGI: no server process, no socket, and
no database file (the test checks that none is ever created).
"""

from __future__ import annotations

from pathlib import Path

from tests.inprocess import API_KEY, BIG_WORKER, Api
from workerfacing_api.core.model import Delivery

TIMEOUT_FAILURE = 300  # the assembled service's


async def test_submission_needs_the_shared_key_and_is_echoed(api: Api) -> None:
    body = api.job_body(7, group="lab", priority=None)
    for headers in ({}, {"x-api-key": "wrong"}):
        refused = await api.client.post("/_jobs", json=body, headers=headers)
        assert refused.status_code == 401, refused.text
    invalid = {key: value for key, value in body.items() if key != "paths_upload"}
    rejected = await api.client.post("/_jobs", json=invalid, headers={"x-api-key": API_KEY})
    assert rejected.status_code == 422, rejected.text
    assert "paths_upload" in rejected.json()["detail"]

    accepted = await api.client.post("/_jobs", json=body, headers={"x-api-key": API_KEY})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json() == body  # null priority stays null
    # Only the accepted submission was queued.
    assert list((await api.pull()).values()) == [body["job"]]
    assert await api.pull() == {}


async def test_pull_hands_out_only_what_fits_the_worker(api: Api) -> None:
    submitted = await api.submit(1, hardware={"memory": 32_000, "gpu_model": "A100"})
    assert await api.pull(memory=16_000, gpu_model="A100") == {}
    assert await api.pull(memory=64_000, gpu_model="T4") == {}
    jobs = await api.pull(memory=64_000, gpu_model="A100")
    assert list(jobs.values()) == [submitted["job"]]  # exactly as submitted
    assert await api.pull(memory=64_000, gpu_model="A100") == {}  # handed out once

    anonymous = await api.client.get("/jobs", params=BIG_WORKER)
    assert anonymous.status_code == 401
    outsider = await api.client.get("/jobs", params=BIG_WORKER, headers=api.auth("u", ("users",)))
    assert outsider.status_code == 403


async def test_status_reports_follow_the_lifecycle(api: Api) -> None:
    await api.submit(1)
    (queue_id,) = await api.pull("w1")
    assert (await api.get_status(queue_id)).json() == "pulled"

    assert (await api.put_status(queue_id, "running")).status_code == 204
    assert (await api.get_status(queue_id)).json() == "running"
    assert (await api.put_status(queue_id, "preprocessing")).status_code == 204  # late: a ping
    assert (await api.get_status(queue_id)).json() == "running"

    assert (await api.put_status(queue_id, "running", worker="w2")).status_code == 404
    assert (await api.put_status("999", "running")).status_code == 404
    assert (await api.get_status("999")).status_code == 404
    for not_for_workers in ("queued", "pulled"):
        assert (await api.put_status(queue_id, not_for_workers)).status_code == 422

    assert (await api.put_status(queue_id, "finished")).status_code == 204
    assert (await api.put_status(queue_id, "finished")).status_code == 204  # repeated: fine
    assert (await api.put_status(queue_id, "error")).status_code == 409
    assert (await api.get_status(queue_id)).json() == "finished"


async def test_inputs_download_and_results_upload_through_signed_links(api: Api) -> None:
    submitted = await api.submit(1)
    (queue_id,) = await api.pull("w1")
    await api.put_status(queue_id, "preprocessing")

    for file_id in submitted["job"]["handler"]["files_down"].values():
        link = await api.client.get(f"/files/{file_id}/url", headers=api.auth("w1"))
        assert link.status_code == 200, link.text
        request = link.json()
        assert request["method"] == "get"
        # The link works as it is, without the worker's token.
        download = await api.client.get(request["url"])
        assert download.status_code == 200, download.text
        assert download.content == Path(file_id).read_bytes()

    link = await api.client.post(
        f"/jobs/{queue_id}/files/url",
        params={"type": "output", "base_path": "fits"},
        headers=api.auth("w1"),
    )
    assert link.status_code == 201, link.text
    request = link.json()
    assert request["method"] == "post"
    content = b"\x89HDF\r\n" + bytes(range(256))
    upload = await api.client.post(request["url"], files={"file": ("emitters.h5", content)})
    assert upload.status_code == 201, upload.text
    stored = Path(submitted["paths_upload"]["output"]) / "fits" / "emitters.h5"
    assert stored.read_bytes() == content

    # The link is bound to what it was signed for: changing a parameter voids it.
    forged = request["url"].replace("type=output", "type=log")
    refused = await api.client.post(forged, files={"file": ("emitters.h5", content)})
    assert refused.status_code == 401, refused.text


async def test_status_changes_are_forwarded_upstream(api: Api) -> None:
    await api.submit(41)
    (queue_id,) = await api.pull("w1")
    assert (await api.put_status(queue_id, "running")).status_code == 204
    done = await api.put_status(queue_id, "finished", runtime_details="12 epochs")
    assert done.status_code == 204
    statuses = [status for status, _ in api.upstream.delivered(41)]
    assert statuses == ["pulled", "running", "finished"]
    assert api.upstream.delivered(41)[-1] == ("finished", "12 epochs")


async def test_a_job_deleted_upstream_stops_its_worker_at_the_next_ping(api: Api) -> None:
    await api.submit(42)
    (queue_id,) = await api.pull("w1")
    assert (await api.put_status(queue_id, "running")).status_code == 204

    api.upstream.answers[42] = Delivery.GONE  # the user deleted the job
    # The report whose forwarding learns of it (the answer came in time) tells the worker to
    # stop, and so does every later call.
    assert (await api.put_status(queue_id, "postprocessing")).status_code == 404
    assert (await api.put_status(queue_id, "postprocessing")).status_code == 404
    assert (await api.get_status(queue_id)).status_code == 404
    link = await api.client.post(
        f"/jobs/{queue_id}/files/url", params={"type": "log"}, headers=api.auth("w1")
    )
    assert link.status_code == 404, link.text
    assert await api.pull("w2") == {}  # and it is never handed out again


async def test_a_silent_job_is_requeued_by_the_sweep_once_its_time_is_up(api: Api) -> None:
    await api.submit(43)
    (queue_id,) = await api.pull("w1")
    assert (await api.put_status(queue_id, "running")).status_code == 204
    sweep = api.container.jobs().sweep  # what the sweeper duty and `sweep` run

    api.clock.advance(TIMEOUT_FAILURE - 1)
    assert (await sweep()).requeued == ()
    assert (await api.put_status(queue_id, "running")).status_code == 204  # still its job

    api.clock.advance(TIMEOUT_FAILURE + 1)
    assert (await sweep()).requeued == (int(queue_id),)
    assert (await api.get_status(queue_id, worker="w2")).json() == "queued"
    assert (await api.put_status(queue_id, "running")).status_code == 404  # no longer w1's
    assert [status for status, _ in api.upstream.delivered(43)][-1] == "queued"
    assert await api.pull("w1") == {}  # RETRY_DIFFERENT: another worker's turn
    assert list(await api.pull("w2")) == [queue_id]
