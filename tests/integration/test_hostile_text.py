"""Hostile text through every text the HTTP API takes (docs/RELIABILITY.md), on a real SQLite file
and a real PostgreSQL database: NUL, 10 000 characters, other control characters, characters outside
the Basic Multilingual Plane, quotes.

Each backend must give the answer written in the tables below, so both give the same one: never
a 5xx; a refusal is a 4xx whose JSON ``detail`` names the parameter, and changes nothing stored
and tells the upstream nothing; what is accepted is stored and handed back as it was sent. The
limits are the wire schema's (``core.model.Name``), and a worker's ``runtime_details`` is never
refused: it lands, trimmed to ``MAX_RUNTIME_DETAILS`` with its end kept, and with what a database
cannot hold replaced (``core.text``).

The app is built as ``serve`` builds it, from the container, over the real database, with a fake
clock and a recording upstream; Litestar's test client drives it in process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from tests.bodies import job_document
from tests.unit.helpers import RecordingUpstream
from workerfacing_api.config import Settings
from workerfacing_api.container import Container, build_container, migrate
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.model import NAME_MAX
from workerfacing_api.core.text import MAX_RUNTIME_DETAILS, storable, trim_details
from workerfacing_api.entrypoints.http import create_app
from workerfacing_api.entrypoints.http.access import RequestLog

API_KEY = "shared-secret"
WORKER = {"limit": 1, "cpu_cores": 8, "memory": 64_000}

NUL = "before\x00after"
LONG = "x" * 10_000
CONTROL = "tab\tbell\x07escape\x1b[31m"
DELETE = "del\x7f"
C1 = "next line\x85"
TRAILING_LINE_FEED = "name\n"
ASTRAL = "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522 \U0001f600"
QUOTES = "it's \"quoted\", `ticked` and \\escaped'); DROP TABLE jobs; --"
LONGEST_NAME = "\U0001d518" * NAME_MAX  # 4 bytes each in UTF-8: the bound is in characters
TOO_LONG_NAME = "\U0001d518" * (NAME_MAX + 1)

# A name (a group, a GPU model or architecture, a worker's user name): accepted or not.
NAMES = {
    "nul": (NUL, False),
    "10000-characters": (LONG, False),
    "control": (CONTROL, False),
    "delete": (DELETE, False),
    "c1-control": (C1, False),
    "trailing-line-feed": (TRAILING_LINE_FEED, False),
    "one-too-many": (TOO_LONG_NAME, False),
    "astral": (ASTRAL, True),
    "quotes": (QUOTES, True),
    "longest": (LONGEST_NAME, True),
}
# A path (an upload folder, an input file and its place in the job folder): no control characters,
# but no bound of the service's own.
PATHS = {
    "nul": ("/data/" + NUL, False),
    "control": ("/data/" + CONTROL, False),
    "trailing-line-feed": ("/data/" + TRAILING_LINE_FEED, False),
    "10000-characters": ("/data/" + LONG, True),
    "astral": ("/data/" + ASTRAL, True),
    "quotes": ("/data/" + QUOTES, True),
}
# Free text of the job document: the service keeps the document byte for byte and reads none of
# these, so every value is accepted and handed to the worker as sent.
FREE_TEXT = {
    "nul": NUL,
    "10000-characters": LONG,
    "control": CONTROL + DELETE + C1 + TRAILING_LINE_FEED,
    "astral": ASTRAL,
    "quotes": QUOTES,
}
# What a worker reports: never refused.
DETAILS = {
    "10000-characters": LONG,
    "control": CONTROL + DELETE + C1 + TRAILING_LINE_FEED,
    "astral": ASTRAL,
    "quotes": QUOTES,
    "beyond-the-limit": "log line\n" * 3_000 + "RuntimeError: CUDA out of memory",
}

# What is stored, column by column, except what PostgreSQL's queue writes a little later on its
# own (delivered events, the upstream's answers): the upstream's record covers those.
STORED = {
    "jobs": "id, upstream_id, status, environment, job_group, priority, req_gpu_model, "
    "req_gpu_archi, spec, paths_upload, worker, attempt, num_retries, event_seq, runtime_details, "
    "updated_at, last_heartbeat_at, forwarded_at",
    "job_attempts": "job_id, attempt, worker, pulled_at, outcome, ended_at",
    "nodes": "account, environment, gpu_model, gpu_archi, groups, last_seen_at, strikes",
    "job_uploads": "job_id, attempt, file_id",
}


class Database:
    """Reads the queue's tables behind the service's back."""

    def __init__(self, kind: str, sqlite_path: Path, pg: asyncpg.Connection | None) -> None:
        self.kind = kind
        self._sqlite_path = sqlite_path
        self._pg = pg

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(sql)]
        with closing(sqlite3.connect(self._sqlite_path)) as conn:
            return list(conn.execute(sql))

    async def value(self, sql: str) -> Any:
        (row,) = await self.rows(sql)
        return row[0]

    async def everything(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: await self.rows(f"SELECT {columns} FROM {table} ORDER BY 1, 2")
            for table, columns in STORED.items()
        }


@dataclass
class Api:
    """The app over one real database, and the fakes standing in for the outside world."""

    kind: str
    client: AsyncTestClient[RequestLog]
    container: Container
    upstream: RecordingUpstream
    db: Database
    root: Path  # alice's folder under USER_DATA_ROOT_PATH

    def auth(self, worker: str = "w1", groups: tuple[str, ...] = ("workers",)) -> dict[str, str]:
        issuer = self.container.local_issuer()
        token = issuer.mint(worker, list(groups), timedelta(hours=1), datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}

    def job_body(self, job_id: int, **fields: Any) -> dict[str, Any]:
        return job_document(job_id, root=str(self.root), **fields)

    async def post_job(self, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/_jobs", json=body, headers={"x-api-key": API_KEY})

    async def submit(self, job_id: int, **fields: Any) -> dict[str, Any]:
        body = self.job_body(job_id, **fields)
        response = await self.post_job(body)
        assert response.status_code == 201, response.text
        return body

    async def get_jobs(self, worker: str = "w1", **params: Any) -> httpx.Response:
        return await self.client.get(
            "/jobs", params={**WORKER, **params}, headers=self.auth(worker)
        )

    async def pull(self, worker: str = "w1", **params: Any) -> dict[str, Any]:
        response = await self.get_jobs(worker, **params)
        assert response.status_code == 200, response.text
        jobs: dict[str, Any] = response.json()
        return jobs

    async def put_status(
        self, queue_id: str, status: str, runtime_details: str | None = None
    ) -> httpx.Response:
        params = {"status": status}
        if runtime_details is not None:
            params["runtime_details"] = runtime_details
        return await self.client.put(
            f"/jobs/{queue_id}/status", params=params, headers=self.auth("w1")
        )

    async def refused(
        self, send: Callable[[], Awaitable[httpx.Response]], status: int, names: str
    ) -> None:
        """``send`` is answered ``status`` with a detail naming ``names``, and changes nothing
        the service stores or tells the upstream."""
        stored, heard = await self.db.everything(), len(self.upstream.calls)
        response = await send()
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"detail"}, body
        assert isinstance(body["detail"], str)
        assert names in body["detail"], body["detail"]
        assert await self.db.everything() == stored, "a refused request changed what is stored"
        assert len(self.upstream.calls) == heard, "a refused request was told upstream"


@pytest.fixture(params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    kind: str = request.param
    sqlite_path = tmp_path / "state" / "queue.db"
    pg = None
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")  # migrated once per session
        pg = await asyncpg.connect(url)
        await pg.execute(
            "TRUNCATE jobs, job_attempts, status_events, job_uploads, nodes "
            "RESTART IDENTITY CASCADE"
        )
    else:
        url = f"sqlite:///{sqlite_path}"
    settings = Settings(
        user_data_root_path=str(tmp_path / "user_data"),
        local_state_dir=str(tmp_path / "state"),
        queue_db_url=url,
        userfacing_api_url="http://userfacing.invalid",
        internal_api_key_secret=API_KEY,
    )
    container = build_container(settings)
    try:
        if kind == "sqlite":
            await migrate(container)
        upstream = RecordingUpstream()
        container.clock.override(providers.Object(FakeClock(datetime.now(UTC))))
        container.upstream.override(providers.Object(upstream))
        # Each request waits for its delivery (the recording upstream answers at once) and
        # acknowledges it at once: what it stored and told is there when it returns, however
        # loaded the machine.
        container.sync.add_kwargs(ack_delay=0.0, inline_wait=30.0, delivery_timeout=25.0)
        app = create_app(container, run_duties=False)
        root = tmp_path / "user_data" / "alice"
        async with AsyncTestClient(app=app) as client:
            yield Api(kind, client, container, upstream, Database(kind, sqlite_path, pg), root)
    finally:
        if pg is not None:
            await pg.close()


# --- POST /_jobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "column"),
    [
        ("group", "job_group"),
        ("gpu_model", "req_gpu_model"),
        ("gpu_archi", "req_gpu_archi"),
    ],
)
async def test_a_submitted_name_is_refused_or_stored_and_matched_as_sent(
    api: Api, field: str, column: str
) -> None:
    for job_id, (case, (value, accepted)) in enumerate(NAMES.items(), start=1):
        body = api.job_body(job_id)
        if field == "group":
            body["group"] = value
            where = "group"
        else:
            body["job"]["hardware"][field] = value
            where = f"job.hardware.{field}"
        if not accepted:
            await api.refused(partial(api.post_job, body), 422, where)
            continue
        response = await api.post_job(body)
        assert response.status_code == 201, (case, response.text)
        assert response.json() == body, case
        stored = await api.db.value(f"SELECT {column} FROM jobs WHERE upstream_id = {job_id}")
        assert stored == value, case
        # A worker offering that very name gets the job, exactly as it was submitted.
        offer = {"groups": [value]} if field == "group" else {field: value}
        jobs = await api.pull(**offer)
        assert list(jobs.values()) == [body["job"]], case


async def test_a_submitted_path_holds_no_control_character(api: Api) -> None:
    places: dict[str, Callable[[dict[str, Any], str], None]] = {
        "paths_upload.output": lambda body, v: body["paths_upload"].update(output=v),
        "paths_upload.artifact": lambda body, v: body["paths_upload"].update(artifact=v),
        "job.handler.files_down": lambda body, v: body["job"]["handler"]["files_down"].update(
            {"data/extra.mat": v}
        ),
        "job.handler.files_down (a key)": lambda body, v: body["job"]["handler"][
            "files_down"
        ].update({v.removeprefix("/data/"): "/data/user_data/alice/data/extra.mat"}),
        "job.handler.files_up": lambda body, v: body["job"]["handler"]["files_up"].update(
            log=v.removeprefix("/data/")
        ),
    }
    job_id = 0
    for place, put in places.items():
        for case, (value, accepted) in PATHS.items():
            job_id += 1
            body = api.job_body(job_id)
            put(body, value)
            if not accepted:
                where = place.split(" ")[0]
                await api.refused(partial(api.post_job, body), 422, where)
                continue
            response = await api.post_job(body)
            assert response.status_code == 201, (place, case, response.text)
            assert response.json() == body, (place, case)


async def test_free_text_of_the_job_document_reaches_the_worker_as_sent(api: Api) -> None:
    places: dict[str, Callable[[dict[str, Any], str], None]] = {
        "meta": lambda body, v: body["job"]["meta"].update(note=v, **{v: "as a key"}),
        "cmd": lambda body, v: body["job"]["app"].update(cmd=["/docker/entrypoint.sh", v]),
        "env": lambda body, v: body["job"]["app"].update(env={"NOTE": v, v: "as a name"}),
        "image": lambda body, v: body["job"]["handler"].update(image_version=v, entrypoint=v),
    }
    job_id = 0
    for place, put in places.items():
        for case, value in FREE_TEXT.items():
            job_id += 1
            body = api.job_body(job_id)
            put(body, value)
            response = await api.post_job(body)
            assert response.status_code == 201, (place, case, response.text)
            assert response.json() == body, (place, case)
            # A worker each: one node holds at most MAX_JOBS_PER_NODE jobs.
            pulled = await api.pull(f"w-{job_id}")
            assert list(pulled.values()) == [body["job"]], (place, case)


async def test_json_naming_half_a_character_is_refused(api: Api) -> None:
    """A lone surrogate escape (``\\ud800``) names no character: no database could store it."""
    body = msgspec.json.encode(api.job_body(1)).replace(
        b'"job_id":1,', b'"job_id":1,"note":"\\ud800",'
    )
    assert b"\\ud800" in body

    async def send() -> httpx.Response:
        return await api.client.post(
            "/_jobs",
            content=body,
            headers={"x-api-key": API_KEY, "content-type": "application/json"},
        )

    await api.refused(send, 422, "invalid job submission")


# --- GET /jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["gpu_model", "gpu_archi", "groups"])
async def test_a_pulls_name_is_refused_or_stored_as_sent(api: Api, param: str) -> None:
    await api.submit(1)  # fits every worker below: a pull let through by mistake claims it
    column = "groups" if param == "groups" else param
    for case, (value, accepted) in NAMES.items():
        # Among plain groups too: each value of the repeated parameter is held to the bounds.
        offer = {param: ["lab", value]} if param == "groups" else {param: value}
        if not accepted:
            await api.refused(partial(api.get_jobs, "w2", **offer), 422, repr(param))
            continue
        response = await api.get_jobs(f"w-{case}", **offer)
        assert response.status_code == 200, (case, response.text)
        stored = await api.db.value(f"SELECT {column} FROM nodes WHERE account = 'w-{case}'")
        if param == "groups":
            assert msgspec.json.decode(stored) == ["lab", value], case
        else:
            assert stored == value, case


async def test_a_token_naming_an_odd_user_or_group_is_refused(api: Api) -> None:
    await api.submit(1)  # fits every worker: a pull let through by mistake claims it
    for value, accepted in NAMES.values():
        if accepted:
            continue
        await api.refused(partial(api.get_jobs, value), 401, "user name")
        in_group = api.auth("w2", ("workers", value))
        await api.refused(
            partial(api.client.get, "/jobs", params=WORKER, headers=in_group), 401, "group"
        )
    # Any other name is the worker's, as it is: its job, its attempt and its standing.
    for job_id, (case, (value, accepted)) in enumerate(NAMES.items(), start=2):
        if not accepted:
            continue
        await api.submit(job_id)
        jobs = await api.pull(value)
        assert len(jobs) == 1, case
        (queue_id,) = jobs
        assert await api.db.value(f"SELECT worker FROM jobs WHERE id = {queue_id}") == value
        attempt = f"SELECT worker FROM job_attempts WHERE job_id = {queue_id}"
        assert await api.db.value(attempt) == value, case
        response = await api.client.put(
            f"/jobs/{queue_id}/status", params={"status": "finished"}, headers=api.auth(value)
        )
        assert response.status_code == 204, (case, response.text)
        assert (value,) in await api.db.rows("SELECT account FROM nodes"), case


# --- PUT /jobs/{id}/status --------------------------------------------------------------------


async def test_a_workers_report_lands_trimmed_to_its_end(api: Api) -> None:
    for job_id, (case, details) in enumerate(DETAILS.items(), start=1):
        await api.submit(job_id)
        (queue_id,) = await api.pull()
        for status in ("running", "error"):
            response = await api.put_status(queue_id, status, details)
            assert response.status_code == 204, (case, status, response.text)
            kept = trim_details(details)
            assert api.upstream.delivered(job_id)[-1] == (status, kept), (case, status)
            stored = await api.db.value(f"SELECT runtime_details FROM jobs WHERE id = {queue_id}")
            assert stored == kept, (case, status)
        assert len(kept) <= MAX_RUNTIME_DETAILS
        assert kept.endswith(details[-20:]), case


async def test_an_error_report_with_a_nul_lands_with_the_nul_replaced(api: Api) -> None:
    await api.submit(1)
    (queue_id,) = await api.pull()
    for details in (
        "x" * 10_000 + "\x00" + "Traceback: loss is nan\x00",
        "\x00" + "y" * (2 * MAX_RUNTIME_DETAILS) + "\x00RuntimeError: step 3",
    ):
        response = await api.put_status(queue_id, "error", details)
        assert response.status_code == 204, response.text
        landed = storable(trim_details(details))
        assert "\x00" not in landed
        assert api.upstream.delivered(1)[-1] == ("error", landed)
        stored = await api.db.value(f"SELECT runtime_details FROM jobs WHERE id = {queue_id}")
        assert stored == landed
    assert (await api.client.get(f"/jobs/{queue_id}/status", headers=api.auth())).json() == "error"


# --- POST /jobs/{id}/files/url and /files/upload ----------------------------------------------

# base_path: NUL is refused by the storage (no file system takes it); a name too long for the
# file system only once a folder is made of it; everything else makes a folder.
BASE_PATHS = {
    "nul": (NUL, 422, 422),
    "10000-characters": (LONG, 201, 422),
    "control": (CONTROL + DELETE + C1, 201, 201),
    "line-feed": ("a\nb", 201, 201),
    "astral": (ASTRAL, 201, 201),
    "quotes": ('it\'s "quoted" `ticked`; DROP TABLE jobs', 201, 201),
}


async def test_an_upload_folder_is_refused_or_stored_as_sent(api: Api) -> None:
    body = await api.submit(1)
    (queue_id,) = await api.pull()
    folder = Path(body["paths_upload"]["output"])
    for case, (base_path, link_status, upload_status) in BASE_PATHS.items():
        query = {"type": "output", "base_path": base_path}

        async def ask_link(query: dict[str, str] = query) -> httpx.Response:
            return await api.client.post(
                f"/jobs/{queue_id}/files/url", params=query, headers=api.auth()
            )

        async def upload(
            query: dict[str, str] = query, content: bytes = case.encode()
        ) -> httpx.Response:
            return await api.client.post(
                f"/jobs/{queue_id}/files/upload",
                params=query,
                headers=api.auth(),
                files={"file": ("result.txt", content)},
            )

        if link_status != 201:
            await api.refused(ask_link, link_status, "base_path")
        else:
            link = await ask_link()
            assert link.status_code == 201, (case, link.text)
        if upload_status != 201:
            await api.refused(upload, upload_status, "base_path")
            continue
        stored = await upload()
        assert stored.status_code == 201, (case, stored.text)
        target = folder / base_path / "result.txt"
        assert target.read_bytes() == case.encode()
        ledger = await api.db.rows("SELECT file_id FROM job_uploads")
        assert (str(target),) in ledger, case
