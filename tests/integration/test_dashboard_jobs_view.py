"""The dashboard's jobs view (``GET /ui/api/jobs``, ARCHITECTURE §7), in this process over both
databases (``db_api``): each filter finds the jobs it names and no other, keyset pages stay whole
while jobs are added (none repeated, none skipped), refused parameters are named and change
nothing, and only operators read it. The page that shows it is driven in real Chromium in
``test_dashboard_browser.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inprocess import API_KEY, Api

OPERATOR = {"x-api-key": API_KEY}


async def submit(api: Api, meta_job_id: int, **fields: Any) -> int:
    """Queue a job as the user-facing API does; its queue id (from the answer's Location)."""
    answer = await api.client.post(
        "/_jobs", json=api.job_body(meta_job_id, **fields), headers=OPERATOR
    )
    assert answer.status_code == 201, answer.text
    return int(answer.headers["location"].split("/")[2])


async def pulled(api: Api, worker: str, **params: Any) -> int:
    (queue_id,) = await api.pull(worker, **params)
    return int(queue_id)


async def jobs(api: Api, **params: Any) -> dict[str, Any]:
    answer = await api.client.get("/ui/api/jobs", params=params, headers=OPERATOR)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def ids(api: Api, **params: Any) -> list[int]:
    return [row["id"] for row in (await jobs(api, **params))["jobs"]]


async def test_each_filter_finds_the_jobs_it_names(db_api: Api) -> None:
    api = db_api
    # An hour ago: one job finished and one failed on worker w1.
    finished = await submit(api, 101)
    assert await pulled(api, "w1") == finished
    for status in ("running", "finished"):
        assert (await api.put_status(str(finished), status)).status_code == 204
    failed = await submit(api, 102)
    assert await pulled(api, "w1") == failed
    answer = await api.put_status(str(failed), "error", runtime_details="CUDA error: boom")
    assert answer.status_code == 204
    api.clock.advance(3600)
    # Now: a cloud job asking for a big GPU, one for any environment (running on w2, its own
    # instance), and a local one asking for 4 cores, both waiting.
    cloud = await submit(api, 103, environment="cloud", hardware={"gpu_mem": 40_000})
    anywhere = await submit(api, 104, environment=None)
    cores = await submit(api, 105, hardware={"cpu_cores": 4})
    assert await pulled(api, "w2", cpu_cores=1, worker_instance="gpu0") == anywhere
    assert (await api.put_status(str(anywhere), "running", "w2")).status_code == 204

    assert await ids(api) == [cores, anywhere, cloud, failed, finished]
    assert await ids(api, state="error") == [failed]
    assert await ids(api, state="finished,error") == [failed, finished]
    assert await ids(api, state=["queued", "running"]) == [cores, anywhere, cloud]
    assert await ids(api, environment="cloud") == [cloud]
    assert await ids(api, environment="any") == [anywhere]
    assert await ids(api, environment="local") == [cores, failed, finished]
    assert await ids(api, worker="w1") == [failed, finished]
    assert await ids(api, worker="w2") == [anywhere]
    assert await ids(api, worker="nobody") == []
    (running,) = (await jobs(api, id=anywhere))["jobs"]
    assert running["node"].startswith("n-")
    assert await ids(api, node=running["node"]) == [anywhere]
    assert await ids(api, node="n-000000000000") == []
    # Hardware classes as the demand report names them (and links them).
    assert await ids(api, **{"class": "cloud:0:0:40000::"}) == [cloud]
    assert await ids(api, **{"class": "local:4:0:0::"}) == [cores]
    assert await ids(api, **{"class": "local:0:0:0::"}) == [failed, finished]
    assert await ids(api, **{"class": "local:::::"}) == [failed, finished]
    assert await ids(api, **{"class": "any:0:0:0::"}) == [anywhere]
    assert await ids(api, **{"class": "cloud:0:0:40000:A100:"}) == []
    # Ages, in seconds.
    assert await ids(api, min_age=1800) == [failed, finished]
    assert await ids(api, max_age=1800) == [cores, anywhere, cloud]
    assert await ids(api, min_age=1800, max_age=1200) == []
    assert await ids(api, max_age=10**10) == [cores, anywhere, cloud, failed, finished]
    assert await ids(api, min_age=10**10) == []  # some 300 years: the longest age taken
    # Search by the user-facing API's id, and by queue id.
    assert await ids(api, job_id=103) == [cloud]
    assert await ids(api, job_id=999) == []
    assert await ids(api, id=cores) == [cores]
    # Filters together: each must hold.
    assert await ids(api, state="queued", environment="local") == [cores]
    assert await ids(api, environment="cloud", **{"class": "local:0:0:0::"}) == []

    # A row says what the table shows, the class as the filter takes it.
    (row,) = (await jobs(api, state="error"))["jobs"]
    assert row["meta_job_id"] == 102
    assert (row["status"], row["environment"], row["class"]) == ("error", "local", "local:0:0:0::")
    assert (row["worker"], row["attempt"]) == ("w1", 1)
    assert row["runtime_details"] == "CUDA error: boom"
    assert row["age_seconds"] == pytest.approx(3600)
    (big,) = (await jobs(api, job_id=103))["jobs"]
    assert (big["class"], big["hardware"]["gpu_mem"], big["worker"]) == (
        "cloud:0:0:40000::",
        40_000,
        None,
    )


async def test_a_row_shows_the_end_of_long_runtime_details(db_api: Api) -> None:
    queue_id = await submit(db_api, 7)
    await db_api.pull()
    log = "x" * 1000 + "\nTraceback …\nRuntimeError: the end that matters"
    answer = await db_api.put_status(str(queue_id), "error", runtime_details=log)
    assert answer.status_code == 204
    (row,) = (await jobs(db_api))["jobs"]
    assert row["runtime_details"].endswith("RuntimeError: the end that matters")
    assert row["runtime_details"].startswith("…")
    assert len(row["runtime_details"]) == 201
    # The job's page has them whole.
    page = await db_api.client.get(f"/ui/api/jobs/{queue_id}", headers=OPERATOR)
    assert page.json()["job"]["runtime_details"] == log


async def test_keyset_pages_neither_repeat_nor_skip_a_job_while_jobs_are_added(
    db_api: Api,
) -> None:
    api = db_api
    first = [await submit(api, meta) for meta in range(1, 8)]  # queue ids 1..7
    seen: list[int] = []
    page = await jobs(api, limit=3)
    pages = 1
    while True:
        seen += [row["id"] for row in page["jobs"]]
        # New jobs arrive between pages (they are newer than any page still to come).
        await submit(api, 100 + pages)
        if page["next"] is None:
            break
        assert page["next"] == seen[-1]
        page = await jobs(api, limit=3, before=page["next"])
        pages += 1
    assert seen == sorted(first, reverse=True)
    assert pages == 3
    # A last page that is exactly full says so: no empty page after it.
    (newest, *_) = await ids(api)
    exact = await jobs(api, limit=3, before=4)
    assert ([r["id"] for r in exact["jobs"]], exact["next"]) == ([3, 2, 1], None)
    assert newest == 10

    # The same, filtered: failing one job between pages moves it out of the filter, and the
    # pages of queued jobs still hold every other one once.
    queued = await jobs(api, state="queued", limit=4)
    ahead = [r["id"] for r in queued["jobs"]]
    failing = await api.client.post(
        "/ui/api/actions/fail", json={"job_ids": [2], "reason": "bad input"}, headers=OPERATOR
    )
    assert failing.status_code == 200, failing.text
    rest: list[int] = []
    cursor = queued["next"]
    while cursor is not None:
        page = await jobs(api, state="queued", limit=4, before=cursor)
        rest += [r["id"] for r in page["jobs"]]
        cursor = page["next"]
    assert ahead + rest == [10, 9, 8, 7, 6, 5, 4, 3, 1]


# Each refused value, and the parameter the answer must name.
BAD_PARAMETERS = [
    ({"state": "done"}, "state"),
    ({"state": "queued,"}, "state"),
    ({"state": ["error", "QUEUED"]}, "state"),
    ({"environment": "mars"}, "environment"),
    ({"worker": "a\x01b"}, "worker"),
    ({"node": "n" * 256}, "node"),
    ({"class": "gpu:0:0:0::"}, "class"),
    ({"class": "local:0:0"}, "class"),
    ({"class": "local:-1:0:0::"}, "class"),
    ({"class": "local:0:0:0:a:b:c"}, "class"),
    ({"min_age": "-1"}, "min_age"),
    ({"max_age": "soon"}, "max_age"),
    ({"max_age": str(10**10 + 1)}, "max_age"),
    ({"job_id": "-1"}, "job_id"),
    ({"job_id": "1.5"}, "job_id"),
    ({"id": "0"}, "id"),
    ({"id": "abc"}, "id"),
    ({"before": "0"}, "before"),
    ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"),
]


@pytest.mark.parametrize(("params", "name"), BAD_PARAMETERS)
async def test_a_refused_parameter_is_named_and_changes_nothing(
    db_api: Api, params: dict[str, Any], name: str
) -> None:
    await submit(db_api, 1)
    assert db_api.stored is not None
    before = await db_api.stored.everything()
    answer = await db_api.client.get("/ui/api/jobs", params=params, headers=OPERATOR)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert f"query parameter {name!r}" in detail, detail
    assert "regex" not in detail  # said in words
    assert await db_api.stored.everything() == before


async def test_the_class_pattern_is_said_in_words(db_api: Api) -> None:
    answer = await db_api.client.get("/ui/api/jobs", params={"class": "local:0"}, headers=OPERATOR)
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "query parameter 'class': Expected a hardware class "
        "environment:cpu_cores:memory:gpu_mem:gpu_model:gpu_archi (environment cloud, local or "
        "any; 0 or empty for anything; e.g. local:0:0:40000::)"
    )


async def test_only_operators_read_it(db_api: Api) -> None:
    await submit(db_api, 1)
    nobody = await db_api.client.get("/ui/api/jobs")
    assert nobody.status_code == 401
    assert "sign in" in nobody.json()["detail"]
    worker = await db_api.client.get("/ui/api/jobs", headers=db_api.auth("w1"))
    assert worker.status_code == 403
    assert worker.json()["detail"] == "user 'w1' is not in group 'operators'"
    wrong_key = await db_api.client.get("/ui/api/jobs", headers={"x-api-key": "guess"})
    assert wrong_key.status_code == 401
    for headers in (OPERATOR, db_api.auth("olga", ("operators",))):
        answer = await db_api.client.get("/ui/api/jobs", headers=headers)
        assert answer.status_code == 200
        assert [r["meta_job_id"] for r in answer.json()["jobs"]] == [1]
    # A browser's session, signed in through the form.
    token = db_api.auth("olga", ("operators",))["Authorization"].removeprefix("Bearer ")
    signed_in = await db_api.client.post("/ui/session", data={"token": token})
    assert signed_in.status_code in {200, 303}
    answer = await db_api.client.get("/ui/api/jobs")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-cache"
