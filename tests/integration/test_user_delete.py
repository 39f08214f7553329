"""A user's delete reaches the worker, and leaves nothing behind (ARCHITECTURE §3, §4).

The user-facing API never says that a user deleted a job: it answers 404 to anything forwarded
about it. These tests play that API, drive the service like the DECODE worker does, and check
that the worker is told to stop (404) at its next ping, counted in pings and keep-alive
intervals of the fake clock, in this process (tests/inprocess.py); that what it uploaded after
the delete is gone again; and, against a real server and a real slow upstream
(``tests/fakes/upstream.py``, marked e2e), that a slow upstream never slows the worker."""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.inprocess import Api, assemble, serving
from tests.integration.conftest import Server, Upstream, upstream_env
from tests.integration.test_file_security import pull_one
from workerfacing_api.core.model import Delivery, KeepAlive


async def pings_until_404(api: Api, queue_id: str, every: float, pings: int) -> int:
    """Ping ``running`` every ``every`` seconds of the fake clock, as the DECODE worker does;
    how many pings it takes until a 404 (the worker stops there)."""
    for ping in range(1, pings + 1):
        api.clock.advance(every)
        answer = await api.put_status(queue_id, "running")
        if answer.status_code == 404:
            return ping
        assert answer.status_code == 204, answer.text
    raise AssertionError(f"the worker was not told to stop within {pings} pings")


def keepalives(api: Api, meta_id: int) -> int:
    """The keep-alives of a job the upstream heard (forwarded plain pings, never stored)."""
    return sum(
        1 for m, _ in api.upstream.calls if isinstance(m, KeepAlive) and m.upstream_id == meta_id
    )


async def test_a_delete_stops_the_worker_at_its_first_ping_one_interval_later(
    tmp_path: Path,
) -> None:
    async with serving(assemble(tmp_path, upstream_keepalive_interval=1.0)) as api:
        await api.submit(1)
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "running")).status_code == 204
        for _ in range(3):  # training: a keep-alive every interval, each forwarded
            api.clock.advance(1)
            assert (await api.put_status(queue_id, "running")).status_code == 204
        assert keepalives(api, 1) == 3

        api.upstream.answers[1] = Delivery.GONE  # the user deletes the job
        assert await pings_until_404(api, queue_id, every=1.0, pings=5) == 1
        # From then on every call about the job says stop.
        assert (await api.put_status(queue_id, "running")).status_code == 404
        assert (await api.put_status(queue_id, "error")).status_code == 404


async def test_pings_faster_than_the_interval_learn_of_a_delete_within_one_interval(
    tmp_path: Path,
) -> None:
    """UPSTREAM_KEEPALIVE_INTERVAL 5 s (the default), pings every second: one keep-alive in
    five goes upstream, so the delete is seen within five pings; and the DECODE worker, which
    pings every 10 s, is told at its very next ping."""
    async with serving(assemble(tmp_path)) as api:
        await api.submit(1)
        await api.submit(2)
        (first,) = await api.pull()
        (second,) = await api.pull()
        for queue_id in (first, second):
            assert (await api.put_status(queue_id, "running")).status_code == 204
        api.upstream.answers[1] = Delivery.GONE
        api.upstream.answers[2] = Delivery.GONE
        assert await pings_until_404(api, first, every=1.0, pings=10) <= 5
        assert await pings_until_404(api, second, every=10.0, pings=1) == 1


async def test_uploads_after_a_delete_are_removed_and_refused_and_earlier_ones_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workerfacing_api")
    async with serving(assemble(tmp_path, upstream_keepalive_interval=1.0)) as api:
        body = await api.submit(1)
        log_folder = Path(body["paths_upload"]["log"])
        artifact_folder = Path(body["paths_upload"]["artifact"])
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "running")).status_code == 204
        early = await api.upload(queue_id, "log", "train.log", b"epoch 1")
        assert early.status_code == 201, early.text
        api.clock.advance(1.1)
        # A keep-alive after that upload is answered by the upstream: the job existed then.
        assert (await api.put_status(queue_id, "running")).status_code == 204
        assert keepalives(api, 1) == 1

        api.upstream.answers[1] = Delivery.GONE  # the user deletes the job (and its files)
        # The worker does not know yet: it goes on uploading, and the service cannot tell.
        api.clock.advance(0.1)
        late_link = await api.upload_link(queue_id, "artifact", "checkpoints/epoch2")
        assert late_link.status_code == 201, late_link.text
        late = await api.upload_to(late_link.json()["url"], "model.pt", b"after the delete")
        assert late.status_code == 201, late.text
        late_log = await api.upload(queue_id, "log", "train-2.log", b"epoch 2")
        assert late_log.status_code == 201, late_log.text

        api.clock.advance(1.1)
        assert (await api.put_status(queue_id, "running")).status_code == 404  # stop
        # What was stored after the delete is gone, and so are the folders it recreated.
        assert not artifact_folder.exists(), list(artifact_folder.rglob("*"))
        assert sorted(p.name for p in log_folder.iterdir()) == ["train.log"]  # before: kept
        assert (log_folder / "train.log").read_bytes() == b"epoch 1"
        assert "removed 2 file(s)" in caplog.text

        # Every upload call about the job is a 404 now, the old links included.
        assert (await api.upload_link(queue_id, "log")).status_code == 404
        again = await api.upload_to(late_link.json()["url"], "again.pt", b"x")
        assert again.status_code == 404
        assert not artifact_folder.exists()


async def test_a_download_of_a_deleted_job_answers_404(tmp_path: Path) -> None:
    async with serving(assemble(tmp_path, upstream_keepalive_interval=0.0)) as api:
        body = await api.submit(1)
        (queue_id,) = await api.pull()
        file_id = body["job"]["handler"]["files_down"]["data/calib.mat"]
        url = f"/files/{file_id}/url"
        assert (await api.client.get(url, headers=api.auth())).status_code == 200
        api.upstream.answers[1] = Delivery.GONE
        assert (await api.put_status(queue_id, "preprocessing")).status_code == 404
        answer = await api.client.get(url, headers=api.auth())
        assert answer.status_code == 404, answer.text  # the real worker stops (403 crashed it)


async def test_a_download_after_the_sweeper_took_the_job_back_answers_404(
    tmp_path: Path,
) -> None:
    async with serving(assemble(tmp_path, timeout_failure=1)) as api:
        body = await api.submit(1)
        (queue_id,) = await api.pull()
        file_id = body["job"]["handler"]["files_down"]["config/param_run_in.yaml"]
        url = f"/files/{file_id}/url"
        # Downloading, no keep-alive: while the job is within its time, its inputs are open.
        assert (await api.client.get(url, headers=api.auth())).status_code == 200
        api.clock.advance(1.5)
        report = await api.container.jobs().sweep()
        assert report.requeued == (int(queue_id),)
        answer = await api.client.get(url, headers=api.auth())
        assert answer.status_code == 404, answer.text


@pytest.mark.e2e
def test_a_slow_upstream_never_slows_the_worker_and_nothing_is_sent_twice(
    server_factory: Callable[..., Server], upstream: Upstream
) -> None:
    server = server_factory(upstream_env(upstream))
    upstream.set(delay=2.0)
    cycles = 40
    ids = [server.submit()["job"]["meta"]["job_id"] for _ in range(cycles)]
    pulls: list[float] = []
    updates: list[float] = []

    def worker(name: str, jobs: int) -> None:
        for _ in range(jobs):
            started = time.monotonic()
            queue_id, _ = pull_one(server, name)
            pulls.append(time.monotonic() - started)
            for status in ("running", "finished"):
                started = time.monotonic()
                assert server.put_status(queue_id, status, name).status_code == 204
                updates.append(time.monotonic() - started)

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(worker, f"w{i}", cycles // 4) for i in range(4)]:
            done.result()

    # Not a timing measurement (benchmarks/load.py --upstream-delay 5 gives the figures): with
    # the worker waiting for a 2 s answer, calls would take seconds; a bounded wait keeps every
    # one far below a second on any machine.
    pull_p99 = statistics.quantiles(pulls, n=100)[98]
    update_p99 = statistics.quantiles(updates, n=100)[98]
    print(f"slow upstream: pull p99 {pull_p99 * 1e3:.0f} ms, update p99 {update_p99 * 1e3:.0f} ms")
    assert max(pulls) < 1.0, sorted(pulls)[-5:]
    assert max(updates) < 1.0, sorted(updates)[-5:]

    # Every change arrives, each exactly once: nothing was sent again because we stopped
    # waiting for a slow answer.
    expected = Counter({(i, s): 1 for i in ids for s in ("pulled", "running", "finished")})

    def received() -> Counter[tuple[int, str]]:
        return Counter((e["job_id"], e["status"]) for e in upstream.events())

    upstream.wait_for(lambda: set(received()) >= set(expected), seconds=150)
    time.sleep(1)
    assert received() == expected
