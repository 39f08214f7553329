"""``HEAD`` on every ``GET`` route (docs/RELIABILITY.md, finding 5: it answered 405 on all of them,
health included), in this process over the app the container builds: the ``GET``'s status and
headers, no body; ``HEAD /jobs`` is refused, as it would be a pull."""

from __future__ import annotations

from tests.inprocess import API_KEY, BIG_WORKER, Api


async def test_head_answers_like_get_without_a_body(api: Api) -> None:
    await api.submit(1)
    (queue_id,) = await api.pull()
    auth = api.auth()
    for path, headers in [
        ("/health/live", {}),
        ("/health/ready", {}),
        ("/", {}),
        ("/access_info", {}),
        ("/docs/openapi.json", {}),
        (f"/jobs/{queue_id}/status", auth),
        ("/ui/login", {}),
    ]:
        get = await api.client.get(path, headers=headers)
        head = await api.client.head(path, headers=headers)
        assert get.status_code == 200, (path, get.text)
        assert head.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.headers["content-length"] == get.headers["content-length"], path


async def test_head_of_a_refused_get_is_refused_alike(api: Api) -> None:
    assert (await api.client.head("/jobs/1/status")).status_code == 401
    assert (await api.client.head("/nope")).status_code == 404


async def test_every_get_route_of_the_document_answers_head_but_the_pull(api: Api) -> None:
    document = (await api.client.get("/docs/openapi.json")).json()
    get_paths = {p for p, ops in document["paths"].items() if "get" in ops and "{" not in p}
    assert {"/health/live", "/jobs", "/metrics"} <= get_paths
    for path in sorted(get_paths - {"/jobs"}):
        answer = await api.client.head(path, headers={"x-api-key": API_KEY})
        assert answer.status_code != 405, path
        assert answer.content == b"", path


async def test_head_of_the_pull_is_refused_and_hands_nothing_out(api: Api) -> None:
    await api.submit(1)
    answer = await api.client.head("/jobs", params=BIG_WORKER, headers=api.auth())
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert len(await api.pull()) == 1  # the job is still there for a real pull
