"""The operators' actions from the dashboard (``POST /ui/api/actions/*``, ARCHITECTURE §7), in this
process over both databases (``db_api``): retrying failed jobs, failing a running job with a
reason, releasing a node that was set aside, each as the CLI does it (the same ``Operations``) and
each in the audit log (``GET /ui/api/audit``) with who did it. Nobody else acts: a worker's token,
a request without credentials and a form posted from another site are refused for every action
and change nothing, nor does a body the service cannot take. The page's buttons are driven in
real Chromium in ``test_dashboard_browser.py``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.inprocess import API_KEY, Api

KEY = {"x-api-key": API_KEY}


def operator(api: Api, name: str = "olga") -> dict[str, str]:
    return api.auth(name, ("operators",))


async def submit(api: Api, meta_job_id: int) -> int:
    answer = await api.client.post("/_jobs", json=api.job_body(meta_job_id), headers=KEY)
    assert answer.status_code == 201, answer.text
    return int(answer.headers["location"].split("/")[2])


async def failed_job(api: Api, meta_job_id: int, worker: str = "w1") -> int:
    queue_id = await submit(api, meta_job_id)
    assert list(await api.pull(worker)) == [str(queue_id)]
    answer = await api.put_status(str(queue_id), "error", worker, runtime_details="CUDA: boom")
    assert answer.status_code == 204
    return queue_id


async def act(api: Api, action: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await api.client.post(f"/ui/api/actions/{action}", json=body, headers=headers)


async def audit(api: Api, **params: Any) -> dict[str, Any]:
    answer = await api.client.get("/ui/api/audit", params=params, headers=KEY)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def everything(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the queue's tables and of the audit log: what a refusal leaves as it was."""
    assert api.stored is not None
    tables = await api.stored.everything()
    tables["audit_log"] = await api.stored.rows("SELECT * FROM audit_log ORDER BY id")
    return tables


async def test_retrying_two_failed_jobs_queues_both_and_tells_the_upstream(db_api: Api) -> None:
    first, second = await failed_job(db_api, 11), await failed_job(db_api, 12)
    answer = await act(db_api, "retry", {"job_ids": [first, second]}, operator(db_api))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["action"], body["actor"], body["summary"]) == (
        "retry",
        "olga",
        "2 of 2 job(s) retried",
    )
    assert body["jobs"] == [
        {"job_id": first, "result": "queued again"},
        {"job_id": second, "result": "queued again"},
    ]
    for meta in (11, 12):
        assert db_api.upstream.delivered(meta)[-1][0] == "queued"
    for queue_id in (first, second):
        status = await db_api.client.get(f"/ui/api/jobs/{queue_id}", headers=KEY)
        assert status.json()["job"]["status"] == "queued"

    # Retrying again changes nothing: each says why.
    again = await act(db_api, "retry", {"job_ids": [first, 999]}, operator(db_api))
    assert again.json()["jobs"] == [
        {"job_id": first, "result": "not retried: it is queued, not error"},
        {"job_id": 999, "result": "does not exist"},
    ]
    assert again.json()["summary"] == "0 of 2 job(s) retried"

    (latest, entry) = (await audit(db_api))["entries"]
    assert (entry["actor"], entry["action"], entry["jobs"]) == ("olga", "retry", [first, second])
    assert entry["detail"] == f"job {first}: queued again; job {second}: queued again"
    assert (latest["action"], latest["jobs"]) == ("retry", [first, 999])


async def test_failing_a_running_job_stops_its_worker_and_tells_the_upstream_why(
    db_api: Api,
) -> None:
    queue_id = await submit(db_api, 21)
    await db_api.pull("w1")
    assert (await db_api.put_status(str(queue_id), "running")).status_code == 204
    reason = "the calibration file is the wrong one; resubmit with the new one"
    answer = await act(
        db_api, "fail", {"job_ids": [queue_id], "reason": f"  {reason}\n"}, operator(db_api)
    )
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["jobs"]
    assert result == {"job_id": queue_id, "result": "failed (it was running on worker w1)"}
    assert db_api.upstream.delivered(21)[-1] == ("error", reason)
    # Its worker's next ping is answered 404: the DECODE worker stops.
    ping = await db_api.put_status(str(queue_id), "running")
    assert ping.status_code == 404, ping.text
    page = await db_api.client.get(f"/ui/api/jobs/{queue_id}", headers=KEY)
    assert page.json()["job"]["status"] == "error"
    assert page.json()["job"]["runtime_details"] == reason

    (entry,) = (await audit(db_api))["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("olga", "fail", str(queue_id))
    assert entry["detail"].startswith(f"reason: {reason}; job {queue_id}: failed")


async def nodes(api: Api) -> dict[str, dict[str, Any]]:
    """The overview's worker nodes, by account."""
    answer = await api.client.get("/ui/api/overview", headers=KEY)
    return {w["account"]: w for w in answer.json()["workers"]}


async def a_node_set_aside(api: Api) -> str:
    """The fleet's own rule at work: node w1 fails three jobs in a row while w2 finishes its
    own, so w1 is set aside. Its id."""
    done = await submit(api, 901)
    await api.pull("w2")
    for status in ("running", "finished"):
        assert (await api.put_status(str(done), status, "w2")).status_code == 204
    for meta in (902, 903, 904):
        await failed_job(api, meta, "w1")
    assert await api.pull("w1") == {}  # nothing for it now, however much is queued
    w1 = (await nodes(api))["w1"]
    assert w1["set_aside"], w1
    return str(w1["name"])


async def test_releasing_a_node_set_aside_ends_its_cool_off(db_api: Api) -> None:
    node = await a_node_set_aside(db_api)
    answer = await act(db_api, "release", {"name": node}, operator(db_api))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["nodes"] == [{"node": node, "released": True, "result": "released"}]
    assert body["summary"] == f"1 of 1 node(s) of {node} released"
    assert not (await nodes(db_api))["w1"]["set_aside"]
    await submit(db_api, 905)
    assert len(await db_api.pull("w1")) == 1  # it gets jobs again
    # By account: every node of it; one no longer set aside says so.
    by_account = await act(db_api, "release", {"name": "w1"}, KEY)
    assert by_account.json()["nodes"] == [
        {"node": node, "released": False, "result": "was not set aside"}
    ]
    # A name never seen is a 404, and no action to record.
    unknown = await act(db_api, "release", {"name": "n-000000000000"}, KEY)
    assert unknown.status_code == 404
    assert "was ever seen" in unknown.json()["detail"]

    entries = (await audit(db_api))["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("internal key", "release", "w1"),
        ("olga", "release", node),
    ]
    assert entries[1]["detail"] == f"node {node}: released"


async def test_the_audit_log_names_a_signed_in_operator_and_pages(db_api: Api) -> None:
    token = operator(db_api, "omar")["Authorization"].removeprefix("Bearer ")
    signed_in = await db_api.client.post("/ui/session", data={"token": token})
    assert signed_in.status_code in {200, 303}
    ids = [await failed_job(db_api, meta) for meta in (41, 42, 43)]
    for queue_id in ids:  # the browser's own request: same origin, the session's cookie
        answer = await db_api.client.post(
            "/ui/api/actions/retry",
            json={"job_ids": [queue_id]},
            headers={"Origin": "http://testserver.local", "Sec-Fetch-Site": "same-origin"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["actor"] == "omar"
    first = await audit(db_api, limit=2)
    assert [e["jobs"] for e in first["entries"]] == [[ids[2]], [ids[1]]]
    assert first["next"] == first["entries"][-1]["id"]
    rest = await audit(db_api, limit=2, before=first["next"])
    assert ([e["jobs"] for e in rest["entries"]], rest["next"]) == ([[ids[0]]], None)
    assert {e["actor"] for e in first["entries"] + rest["entries"]} == {"omar"}


def every_action(failed: int, queued: int, node: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("retry", {"job_ids": [failed]}),
        ("fail", {"job_ids": [queued], "reason": "because"}),
        ("release", {"name": node}),
    ]


async def something_to_act_on(api: Api) -> list[tuple[str, dict[str, Any]]]:
    """Every action, each on something it would change: a failed job to retry, a queued one to
    fail, a node set aside to release."""
    node = await a_node_set_aside(api)
    errors = await api.client.get("/ui/api/jobs", params={"state": "error"}, headers=KEY)
    failed = errors.json()["jobs"][0]["id"]
    queued = await submit(api, 52)
    return every_action(failed, queued, node)


async def test_a_workers_token_or_no_credentials_change_nothing(db_api: Api) -> None:
    actions = await something_to_act_on(db_api)
    before = await everything(db_api)
    for action, body in actions:
        worker = await act(db_api, action, body, db_api.auth("w1"))
        assert worker.status_code == 403, (action, worker.text)
        assert worker.json()["detail"] == "user 'w1' is not in group 'operators'"
        nobody = await act(db_api, action, body, {})
        assert nobody.status_code == 401, (action, nobody.text)
        # What it lacks is said first, whatever the body.
        bare = await db_api.client.post(f"/ui/api/actions/{action}", content=b"?")
        assert bare.status_code == 401, (action, bare.text)
        assert "sign in" in bare.json()["detail"]
        wrong_key = await act(db_api, action, body, {"x-api-key": "guess"})
        assert wrong_key.status_code == 401, (action, wrong_key.text)
    for headers in (db_api.auth("w1"), {}):
        answer = await db_api.client.get("/ui/api/audit", headers=headers)
        assert answer.status_code in {401, 403}
    assert await everything(db_api) == before


# What a page of another site makes the browser send: a plain HTML form (form-encoded, or
# text/plain shaped like JSON) or a fetch, with the operator's cookie going along.
CROSS_SITE = {
    "fetch metadata": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    "origin only": {"Origin": "https://evil.example"},
    "same site, another origin": {
        "Sec-Fetch-Site": "same-site",
        "Origin": "http://a.testserver.local",
    },
    "sandboxed frame": {"Origin": "null"},
}


@pytest.mark.parametrize("case", CROSS_SITE)
async def test_a_form_posted_from_another_site_changes_nothing(db_api: Api, case: str) -> None:
    actions = await something_to_act_on(db_api)
    token = operator(db_api)["Authorization"].removeprefix("Bearer ")
    signed_in = await db_api.client.post("/ui/session", data={"token": token})
    assert signed_in.status_code in {200, 303}  # the victim's browser holds a session
    before = await everything(db_api)
    for action, body in actions:
        path = f"/ui/api/actions/{action}"
        flat = {k: str(v[0]) if isinstance(v, list) else v for k, v in body.items()}
        as_json = httpx.Response(200, json=body).text
        sent: list[tuple[dict[str, str], dict[str, Any]]] = [
            ({}, {"data": flat}),  # <form method=post>
            (  # <form enctype=text/plain> with a field named so that the body reads as JSON
                {"Content-Type": "text/plain"},
                {"content": f'{as_json[:-1]}, "x": "="}}'},
            ),
            ({}, {"json": body}),  # a script's fetch (no-cors or not)
        ]
        for headers, payload in sent:
            answer = await db_api.client.post(
                path, headers={**headers, **CROSS_SITE[case]}, **payload
            )
            assert answer.status_code == 403, (action, payload, answer.text)
            assert "another site" in answer.json()["detail"]
    assert await everything(db_api) == before


# Bodies the service cannot take, and what the answer names.
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("retry", b"not json", "JSON"),
    ("retry", {}, "job_ids"),
    ("retry", {"job_ids": []}, "job_ids"),
    ("retry", {"job_ids": ["one"]}, "job_ids"),
    ("retry", {"job_ids": [0]}, "job_ids"),
    ("retry", {"job_ids": list(range(1, 502))}, "job_ids"),
    ("fail", {"job_ids": [1]}, "reason"),
    ("fail", {"job_ids": [1], "reason": ""}, "reason"),
    ("fail", {"job_ids": [1], "reason": " \n\t "}, "reason"),
    ("fail", {"job_ids": [1], "reason": "x" * 1001}, "reason"),
    ("fail", {"job_ids": [1], "reason": "bell\x07"}, "reason"),
    ("fail", {"reason": "why"}, "job_ids"),
    ("release", {}, "name"),
    ("release", {"name": ""}, "name"),
    ("release", {"name": "a\nb"}, "name"),
    ("release", {"name": "n" * 256}, "name"),
    ("release", [], "body"),
    ("release", None, "request body: a JSON object is required"),
]


@pytest.mark.parametrize(("action", "body", "named"), BAD_BODIES)
async def test_a_bad_body_is_refused_and_changes_nothing(
    db_api: Api, action: str, body: Any, named: str
) -> None:
    await something_to_act_on(db_api)
    before = await everything(db_api)
    sent: dict[str, Any] = {}
    if isinstance(body, bytes):
        sent = {"content": body}
    elif body is not None:
        sent = {"json": body}
    answer = await db_api.client.post(f"/ui/api/actions/{action}", headers=KEY, **sent)
    assert answer.status_code in {400, 422}, answer.text
    detail = answer.json()["detail"]
    assert named in detail, detail
    assert "regex" not in detail
    assert await everything(db_api) == before
