"""A pull names its node (ARCHITECTURE §3): the account, the client address and the hardware,
refined by an instance id sent as header ``X-Worker-Instance`` or query ``worker_instance``; in this
process, over the app the container builds."""

from __future__ import annotations

from tests.inprocess import BIG_WORKER, Api


async def nodes_of(api: Api) -> list[tuple[str, str | None]]:
    return [(n.account, n.profile.instance) for n in await api.container.fleet().workers(None)]


async def test_the_instance_id_comes_by_header_or_query_and_makes_a_node_each(api: Api) -> None:
    for n in range(1, 4):
        await api.submit(n)
    by_header = await api.client.get(
        "/jobs", params=BIG_WORKER, headers={**api.auth("lab"), "X-Worker-Instance": "gpu0"}
    )
    by_query = await api.client.get(
        "/jobs", params={**BIG_WORKER, "worker_instance": "gpu1"}, headers=api.auth("lab")
    )
    without = await api.client.get("/jobs", params=BIG_WORKER, headers=api.auth("lab"))
    for response in (by_header, by_query, without):
        assert response.status_code == 200, response.text
        assert len(response.json()) == 1
    assert sorted(await nodes_of(api), key=str) == sorted(
        [("lab", "gpu0"), ("lab", "gpu1"), ("lab", None)], key=str
    )


async def test_the_header_wins_over_the_query_and_an_empty_id_is_none(api: Api) -> None:
    for n in range(1, 3):
        await api.submit(n)
    both = await api.client.get(
        "/jobs",
        params={**BIG_WORKER, "worker_instance": "gpu1"},
        headers={**api.auth("lab"), "X-Worker-Instance": "gpu0"},
    )
    empty = await api.client.get(
        "/jobs",
        params={**BIG_WORKER, "worker_instance": ""},
        headers={**api.auth("lab"), "X-Worker-Instance": ""},
    )
    for response in (both, empty):
        assert response.status_code == 200, response.text
        assert len(response.json()) == 1
    assert sorted(await nodes_of(api), key=str) == sorted([("lab", "gpu0"), ("lab", None)], key=str)


async def test_an_instance_id_with_a_control_character_or_too_long_is_refused(api: Api) -> None:
    await api.submit(1)
    for bad in ("gpu\x01", "x" * 256):
        response = await api.client.get(
            "/jobs", params={**BIG_WORKER, "worker_instance": bad}, headers=api.auth("lab")
        )
        assert response.status_code == 422, response.text
        assert "worker_instance" in response.json()["detail"]
    assert await nodes_of(api) == []
