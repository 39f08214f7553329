"""A job an operator failed, as its worker meets it (ARCHITECTURE §3): every call the DECODE worker
makes on it (keep-alive, upload link, upload, input link) answers 404, the one answer it takes as
"stop" (it crashes on a 403 or a 500), on SQLite and PostgreSQL alike; a link handed out before
keeps no power either."""

from __future__ import annotations

from urllib.parse import quote

from tests.inprocess import API_KEY, Api


async def test_every_call_of_the_worker_on_a_job_failed_by_an_operator_answers_404(
    db_api: Api,
) -> None:
    api = db_api
    echo = await api.submit(7)
    (queue_id,) = (await api.pull("w1")).keys()
    assert (await api.put_status(queue_id, "running")).status_code == 204
    link = await api.upload_link(queue_id)  # handed out while the job ran
    assert link.status_code == 201, link.text
    failed = await api.client.post(
        "/ui/api/actions/fail",
        json={"job_ids": [int(queue_id)], "reason": "wrong input"},
        headers={"x-api-key": API_KEY},
    )
    assert failed.status_code == 200, failed.text
    assert api.upstream.delivered(7)[-1] == ("error", "wrong input")

    assert (await api.put_status(queue_id, "running")).status_code == 404
    assert (await api.put_status(queue_id, "error", runtime_details="log")).status_code == 404
    # Its status is no secret (any worker may read a job's status, as with the original).
    assert (await api.get_status(queue_id)).json() == "error"
    assert (await api.upload_link(queue_id, "log")).status_code == 404
    assert (await api.upload_to(link.json()["url"], "late.txt", b"x")).status_code == 404
    file_id = next(iter(echo["job"]["handler"]["files_down"].values()))
    down = await api.client.get(f"/files/{quote(file_id, safe='/')}/url", headers=api.auth("w1"))
    assert down.status_code == 404
    # Nothing of it reached the user's folders, and the upstream heard no more about it.
    assert not any(p.name == "late.txt" for p in api.user_root.rglob("*"))
    assert api.upstream.delivered(7)[-1] == ("error", "wrong input")
