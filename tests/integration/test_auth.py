"""Who may call what (ARCHITECTURE §4): workers need a valid bearer token in group ``workers`` and
are known by the token's user name; the user-facing API needs the shared ``x-api-key``; the welcome,
``/access_info`` and the docs are open.

The app is built as ``serve`` builds it, from the container, and driven in this process
(tests/inprocess.py): over a real SQLite file and a real PostgreSQL database (``db_api``) where
a test reads what is stored, over the in-memory queue (``api``) otherwise. Tokens are the
container's local issuer's, or forged with its own key. That the ``token`` command and a running
``serve`` agree on that key is tests/integration/test_auth_cli.py's, end to end.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.inprocess import API_KEY, Api
from workerfacing_api.adapters.identity import LocalIssuer
from workerfacing_api.adapters.identity.local import ISSUER


@dataclass(frozen=True)
class Site:
    api: Api
    held: str  # queue id of a job pulled by "alice"
    held_file: str  # one of its files_down


@pytest.fixture
async def site(db_api: Api) -> Site:
    """alice holds a job, and another one is queued that fits the pulls below: a pull wrongly
    let through claims it, and the comparison of the tables notices."""
    await db_api.submit(1)
    ((held, job),) = (await db_api.pull("alice")).items()
    await db_api.submit(2)
    held_file = job["handler"]["files_down"]["data/calib.mat"]
    assert len((await tables(db_api))["jobs"]) == 2  # what a wrong pass would change is there
    return Site(api=db_api, held=held, held_file=held_file)


async def tables(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the queue, to show that a request changed nothing."""
    assert api.stored is not None
    return await api.stored.everything()


def row_count(snapshot: dict[str, list[tuple[Any, ...]]]) -> int:
    return sum(len(rows) for rows in snapshot.values())


def key_of(api: Api) -> str:
    """The service's own signing key: the local issuer's file in the in-process state dir."""
    key_file = api.container.local_issuer().key_file
    assert key_file.is_file(), key_file
    return key_file.read_text().strip()


def signed(api: Api, claims: dict[str, Any]) -> str:
    """A token with exactly ``claims``, signed with the service's own key."""
    return jwt.encode(claims, key_of(api), algorithm="HS256")


def access_claims(username: str, groups: list[str], **extra: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": username,
        "username": username,
        "cognito:groups": groups,
        "token_use": "access",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(extra)
    return claims


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bad_credentials(kind: str, api: Api, tmp: Path) -> dict[str, str]:
    """Authorization headers that must be refused with 401."""
    valid = api.auth("alice")["Authorization"].removeprefix("Bearer ")
    if kind == "none":
        return {}
    if kind == "other-key":
        other = LocalIssuer(tmp / "other-identity.key")
        token = other.mint("alice", ["workers"], timedelta(hours=1), datetime.now(UTC))
    elif kind == "expired":
        issuer = api.container.local_issuer()
        then = datetime.now(UTC) - timedelta(hours=2)
        token = issuer.mint("alice", ["workers"], timedelta(hours=1), then)
    elif kind == "tampered":  # alice's real signature over a payload that adds a group
        header, _, signature = valid.split(".")
        token = f"{header}.{b64(access_claims('alice', ['workers', 'admins']))}.{signature}"
    elif kind == "alg-none":
        token = jwt.encode(access_claims("alice", ["workers"]), "", algorithm="none")
    elif kind == "other-issuer":
        token = signed(api, access_claims("alice", ["workers"], iss="someone-else"))
    elif kind == "no-expiry":
        claims = access_claims("alice", ["workers"])
        del claims["exp"]
        token = signed(api, claims)
    elif kind == "no-user":
        claims = access_claims("alice", ["workers"])
        del claims["username"]
        token = signed(api, claims)
    elif kind == "garbage":
        token = "not-a-token"
    else:
        return {
            "wrong-scheme": {"Authorization": f"Token {valid}"},
            "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
            "bearer-alone": {"Authorization": "Bearer"},
            "token-alone": {"Authorization": valid},
        }[kind]
    return bearer(token)


BAD_CREDENTIALS = [
    "none",
    "wrong-scheme",
    "basic",
    "bearer-alone",
    "token-alone",
    "garbage",
    "other-key",
    "expired",
    "tampered",
    "alg-none",
    "other-issuer",
    "no-expiry",
    "no-user",
]

ENDPOINTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "pull": ("GET", "/jobs", {"memory": "64000", "cpu_cores": "8"}),
    "get-status": ("GET", "/jobs/{held}/status", {}),
    "put-status": ("PUT", "/jobs/{held}/status", {"status": "running"}),
    "upload-url": ("POST", "/jobs/{held}/files/url", {"type": "output"}),
    "upload": ("POST", "/jobs/{held}/files/upload", {"type": "output"}),
    "download-url": ("GET", "/files/{file}/url", {}),
    "download": ("GET", "/files/{file}/download", {}),
}


async def call(site: Site, endpoint: str, headers: dict[str, str]) -> httpx.Response:
    method, path, params = ENDPOINTS[endpoint]
    files = {"file": ("auth.txt", b"written")} if endpoint == "upload" else None
    return await site.api.client.request(
        method,
        path.format(held=site.held, file=site.held_file),
        params=params,
        headers=headers,
        files=files,
    )


def data_root(api: Api) -> Path:
    return api.user_root.parent  # USER_DATA_ROOT_PATH


def uploaded(site: Site) -> list[Path]:
    return list(data_root(site.api).rglob("auth.txt"))


def as_json(response: httpx.Response) -> Any:
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    return json.loads(response.content)


async def test_worker_endpoints_refuse_missing_or_invalid_tokens(
    site: Site, subtests: pytest.Subtests, tmp_path: Path
) -> None:
    """Each kind of bad credentials on each endpoint, a subtest each, against one app."""
    for kind in BAD_CREDENTIALS:
        for endpoint in ENDPOINTS:
            with subtests.test(kind=kind, endpoint=endpoint):
                headers = bad_credentials(kind, site.api, tmp_path)
                before = await tables(site.api)
                response = await call(site, endpoint, headers)
                assert response.status_code == 401, response.text
                assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")
                assert as_json(response)["detail"]
                assert await tables(site.api) == before
                assert uploaded(site) == []


GROUPS = {
    "no-groups": (),
    "cloud-only": ("cloud",),
    "capitalised": ("Workers",),
    "near-miss": ("worker", "admins"),
}


async def test_worker_endpoints_need_group_workers(site: Site, subtests: pytest.Subtests) -> None:
    """Each set of groups without ``workers`` on each endpoint, a subtest each, against one app."""
    for name, groups in GROUPS.items():
        for endpoint in ENDPOINTS:
            with subtests.test(groups=name, endpoint=endpoint):
                before = await tables(site.api)
                response = await call(site, endpoint, site.api.auth("alice", groups))
                assert response.status_code == 403, response.text
                assert "workers" in as_json(response)["detail"]
                assert await tables(site.api) == before
                assert uploaded(site) == []


async def test_the_holder_passes_where_others_are_refused(site: Site) -> None:
    """The control of the refusals above: with alice's own token every endpoint answers."""
    expected = {
        "pull": 200,
        "get-status": 200,
        "put-status": 204,
        "upload-url": 201,
        "upload": 201,
        "download-url": 200,
        "download": 200,
    }
    for endpoint, status in expected.items():
        response = await call(site, endpoint, site.api.auth("alice"))
        assert response.status_code == status, (endpoint, response.text)
    assert [p.read_bytes() for p in uploaded(site)] == [b"written"]


async def test_identity_is_the_tokens_user_name(site: Site) -> None:
    api = site.api
    client = api.client
    url = f"/jobs/{site.held}"

    async def put(headers: dict[str, str]) -> int:
        r = await client.put(f"{url}/status", params={"status": "running"}, headers=headers)
        return r.status_code

    bob = api.auth("bob")
    before = await tables(api)
    assert await put(bob) == 404
    upload_url = await client.post(f"{url}/files/url", params={"type": "log"}, headers=bob)
    assert upload_url.status_code == 404, upload_url.text
    upload = await client.post(
        f"{url}/files/upload",
        params={"type": "log"},
        headers=bob,
        files={"file": ("bob.txt", b"bob")},
    )
    assert upload.status_code == 404, upload.text
    for action in ("url", "download"):
        r = await client.get(f"/files/{site.held_file}/{action}", headers=bob)
        assert r.status_code == 404, r.text  # not his: the worker is told to stop
    # The user name, not the subject: a token about alice issued to bob is bob's.
    bob_about_alice = signed(api, access_claims("bob", ["workers"], sub="alice"))
    assert await put(bearer(bob_about_alice)) == 404
    assert await tables(api) == before
    assert list(data_root(api).rglob("bob.txt")) == []

    # An ID token names its user in cognito:username; it is alice as much as her access token.
    id_claims = access_claims("ignored", ["workers"], token_use="id")
    del id_claims["username"]
    id_claims["cognito:username"] = "alice"
    assert await put(bearer(signed(api, id_claims))) == 204
    assert await put(api.auth("alice")) == 204


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "wrong", "other-case", "bearer-token-instead", "as-query"]
)
async def test_submission_needs_the_api_key(db_api: Api, kind: str) -> None:
    headers = {
        "missing": {},
        "empty": {"x-api-key": ""},
        "wrong": {"x-api-key": "not-the-key"},
        "other-case": {"x-api-key": API_KEY.upper()},
        "bearer-token-instead": db_api.auth("alice"),
        "as-query": {},
    }[kind]
    body = db_api.job_body(1)
    params = {"x-api-key": API_KEY} if kind == "as-query" else None
    before = await tables(db_api)
    response = await db_api.client.post("/_jobs", json=body, headers=headers, params=params)
    assert response.status_code == 401, response.text
    assert "x-api-key" in as_json(response)["detail"]
    assert await tables(db_api) == before


async def test_submission_with_the_api_key_is_stored(db_api: Api) -> None:
    """The control of the refusals above."""
    before = row_count(await tables(db_api))
    body = db_api.job_body(1)
    response = await db_api.client.post("/_jobs", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 201, response.text
    assert row_count(await tables(db_api)) == before + 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer garbage"}, {"x-api-key": "wrong"}],
    ids=["anonymous", "bad-token", "bad-key"],
)
async def test_welcome_and_access_info_need_no_credentials(
    api: Api, headers: dict[str, str]
) -> None:
    welcome = await api.client.get("/", headers=headers)
    assert welcome.status_code == 200, welcome.text
    assert as_json(welcome)["message"]
    info = await api.client.get("/access_info", headers=headers)
    assert info.status_code == 200, info.text
    assert as_json(info)["cognito"] == {"user_pool_id": None, "client_id": None, "region": None}


async def test_docs_are_served_and_list_every_endpoint(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    spec = await api.client.get("/docs/openapi.json")
    assert spec.status_code == 200, spec.text
    assert "json" in spec.headers["content-type"]
    paths = spec.json()["paths"]
    methods = {path: sorted(m for m in ops if m != "parameters") for path, ops in paths.items()}
    assert methods == {
        "/": ["get"],
        "/access_info": ["get"],
        "/jobs": ["get"],
        "/jobs/{job_id}/status": ["get", "put"],
        "/jobs/{job_id}/files/url": ["post"],
        "/jobs/{job_id}/files/upload": ["post"],
        "/files/{file_id}/url": ["get"],
        "/files/{file_id}/download": ["get"],
        "/_jobs": ["post"],
        "/_jobs/{job_id}/explain": ["get"],
        "/health/live": ["get"],
        "/health/ready": ["get"],
        "/metrics": ["get"],
        "/_demand": ["get"],
        "/ui/api/overview": ["get"],
        "/ui/api/jobs/{job_id}": ["get"],
        "/ui/api/jobs": ["get"],
        "/ui/api/audit": ["get"],
        "/ui/api/actions/retry": ["post"],
        "/ui/api/actions/fail": ["post"],
        "/ui/api/actions/release": ["post"],
    }
    pull_parameters = {p["name"] for p in paths["/jobs"]["get"]["parameters"]}
    assert {"memory", "cpu_cores", "gpu_mem", "gpu_memory", "limit", "older_than"} <= (
        pull_parameters
    )


# --- a token's groups choose the jobs ----------------------------------------------------------


async def pull_with(api: Api, headers: dict[str, str], **params: Any) -> httpx.Response:
    query = {"limit": 10, "cpu_cores": 8, "memory": 64000, **params}
    return await api.client.get("/jobs", params=query, headers=headers)


async def test_a_token_in_group_cloud_pulls_cloud_jobs(db_api: Api) -> None:
    """What a cloud worker's token gets (the CLI's token for it: test_auth_cli.py)."""
    local = await db_api.submit(1, environment="local")
    cloud = await db_api.submit(2, environment="cloud")
    anywhere = await db_api.submit(3, environment=None)
    cloud_token = db_api.auth("cloud-worker", ("workers", "cloud"))

    first = await pull_with(db_api, cloud_token, older_than=3600)
    assert first.status_code == 200, first.text
    assert list(as_json(first).values()) == [cloud["job"]]  # the new "any" job is too young
    second = await pull_with(db_api, cloud_token, older_than=0)
    assert list(as_json(second).values()) == [anywhere["job"]]
    assert as_json(await pull_with(db_api, cloud_token, older_than=0)) == {}  # never local

    local_token = db_api.auth("local-worker", ("workers",))
    assert list(as_json(await pull_with(db_api, local_token)).values()) == [local["job"]]
