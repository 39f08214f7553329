"""Who may call what (DESIGN §4): workers need a valid bearer token in group ``workers`` and are
known by the token's user name; the user-facing API needs the shared ``x-api-key``; the welcome,
``/access_info`` and the docs are open. Tokens printed by ``workerfacing-api token`` work."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.integration.conftest import Server, as_json, start_server, stop_server
from workerfacing_api.adapters.identity import LocalIssuer

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

STATE_DIR = ".workerfacing-api"
ISSUER = "workerfacing-api-local"


@dataclass(frozen=True)
class Site:
    server: Server
    held: str  # queue id of a job pulled by "alice"
    held_file: str  # one of its files_down


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = start_server(tmp_path_factory.mktemp("auth"))
    try:
        server.submit()
        ((held, job),) = server.pull("alice").items()
        # A queued job that fits the pulls below: a pull wrongly let through claims it, and the
        # database comparison notices.
        server.submit()
        held_file = job["handler"]["files_down"]["data/calib.mat"]
        yield Site(server=server, held=held, held_file=held_file)
    finally:
        stop_server(server)


def key_of(server: Server) -> str:
    return (server.root / STATE_DIR / "identity.key").read_text().strip()


def signed(server: Server, claims: dict[str, Any]) -> str:
    """A token with exactly ``claims``, signed with the service's own key."""
    return jwt.encode(claims, key_of(server), algorithm="HS256")


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


def bad_credentials(kind: str, server: Server, tmp: Path) -> dict[str, str]:
    """Authorization headers that must be refused with 401."""
    valid = server.token("alice")
    if kind == "none":
        return {}
    if kind == "other-key":
        other = LocalIssuer(tmp / "other-identity.key")
        token = other.mint("alice", ["workers"], timedelta(hours=1), datetime.now(UTC))
    elif kind == "expired":
        issuer = LocalIssuer(server.root / STATE_DIR / "identity.key")
        then = datetime.now(UTC) - timedelta(hours=2)
        token = issuer.mint("alice", ["workers"], timedelta(hours=1), then)
    elif kind == "tampered":  # alice's real signature over a payload that adds a group
        header, _, signature = valid.split(".")
        token = f"{header}.{b64(access_claims('alice', ['workers', 'admins']))}.{signature}"
    elif kind == "alg-none":
        token = jwt.encode(access_claims("alice", ["workers"]), "", algorithm="none")
    elif kind == "other-issuer":
        token = signed(server, access_claims("alice", ["workers"], iss="someone-else"))
    elif kind == "no-expiry":
        claims = access_claims("alice", ["workers"])
        del claims["exp"]
        token = signed(server, claims)
    elif kind == "no-user":
        claims = access_claims("alice", ["workers"])
        del claims["username"]
        token = signed(server, claims)
    elif kind == "garbage":
        token = "not-a-token"
    else:
        return {
            "wrong-scheme": {"Authorization": f"Token {valid}"},
            "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
            "bearer-alone": {"Authorization": "Bearer"},
            "token-alone": {"Authorization": valid},
        }[kind]
    return {"Authorization": f"Bearer {token}"}


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


def call(site: Site, endpoint: str, headers: dict[str, str]) -> requests.Response:
    method, path, params = ENDPOINTS[endpoint]
    files = {"file": ("auth.txt", b"written")} if endpoint == "upload" else None
    return requests.request(
        method,
        site.server.url + path.format(held=site.held, file=site.held_file),
        params=params,
        headers=headers,
        files=files,
        timeout=10,
    )


def uploaded(site: Site) -> list[Path]:
    return list(site.server.data_root.rglob("auth.txt"))


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("kind", BAD_CREDENTIALS)
def test_worker_endpoints_refuse_missing_or_invalid_tokens(
    site: Site, endpoint: str, kind: str, tmp_path: Path
) -> None:
    headers = bad_credentials(kind, site.server, tmp_path)
    before = site.server.db_snapshot()
    response = call(site, endpoint, headers)
    assert response.status_code == 401, response.text
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")
    assert as_json(response)["detail"]
    assert site.server.db_snapshot() == before
    assert uploaded(site) == []


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(
    "groups",
    [(), ("cloud",), ("Workers",), ("worker", "admins")],
    ids=["no-groups", "cloud-only", "capitalised", "near-miss"],
)
def test_worker_endpoints_need_group_workers(
    site: Site, endpoint: str, groups: tuple[str, ...]
) -> None:
    before = site.server.db_snapshot()
    response = call(site, endpoint, site.server.auth("alice", groups))
    assert response.status_code == 403, response.text
    assert "workers" in as_json(response)["detail"]
    assert site.server.db_snapshot() == before
    assert uploaded(site) == []


def test_the_holder_passes_where_others_are_refused(site: Site) -> None:
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
        response = call(site, endpoint, site.server.auth("alice"))
        assert response.status_code == status, (endpoint, response.text)
    assert [p.read_bytes() for p in uploaded(site)] == [b"written"]
    for path in uploaded(site):
        path.unlink()
    site.server.submit()  # the pull took the queued job: queue another for the refusals


def test_identity_is_the_tokens_user_name(site: Site) -> None:
    server = site.server
    url = f"{server.url}/jobs/{site.held}"

    def put(headers: dict[str, str]) -> int:
        r = requests.put(f"{url}/status", params={"status": "running"}, headers=headers, timeout=10)
        return r.status_code

    bob = server.auth("bob")
    before = server.db_snapshot()
    assert put(bob) == 404
    upload_url = requests.post(f"{url}/files/url", params={"type": "log"}, headers=bob, timeout=10)
    assert upload_url.status_code == 404, upload_url.text
    upload = requests.post(
        f"{url}/files/upload",
        params={"type": "log"},
        headers=bob,
        files={"file": ("bob.txt", b"bob")},
        timeout=10,
    )
    assert upload.status_code == 404, upload.text
    for action in ("url", "download"):
        r = requests.get(f"{server.url}/files/{site.held_file}/{action}", headers=bob, timeout=10)
        assert r.status_code == 404, r.text  # not his: the worker is told to stop
    # The user name, not the subject: a token about alice issued to bob is bob's.
    bob_about_alice = signed(server, access_claims("bob", ["workers"], sub="alice"))
    assert put({"Authorization": f"Bearer {bob_about_alice}"}) == 404
    assert server.db_snapshot() == before
    assert list(server.data_root.rglob("bob.txt")) == []

    # An ID token names its user in cognito:username; it is alice as much as her access token.
    id_claims = access_claims("ignored", ["workers"], token_use="id")
    del id_claims["username"]
    id_claims["cognito:username"] = "alice"
    assert put({"Authorization": f"Bearer {signed(server, id_claims)}"}) == 204
    assert put(server.auth("alice")) == 204


def post_job(server: Server, headers: dict[str, str]) -> requests.Response:
    body = server.job_body()
    return requests.post(f"{server.url}/_jobs", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "wrong", "other-case", "bearer-token-instead", "as-query"]
)
def test_submission_needs_the_api_key(site: Site, kind: str) -> None:
    server = site.server
    headers = {
        "missing": {},
        "empty": {"x-api-key": ""},
        "wrong": {"x-api-key": "not-the-key"},
        "other-case": {"x-api-key": server.api_key.upper()},
        "bearer-token-instead": server.auth("alice"),
        "as-query": {},
    }[kind]
    body = server.job_body()
    params = {"x-api-key": server.api_key} if kind == "as-query" else None
    before = server.db_snapshot()
    response = requests.post(
        f"{server.url}/_jobs", json=body, headers=headers, params=params, timeout=10
    )
    assert response.status_code == 401, response.text
    assert "x-api-key" in as_json(response)["detail"]
    assert server.db_snapshot() == before


def test_submission_with_the_api_key_is_stored(site: Site) -> None:
    """The control of the refusals above."""
    before = len(site.server.db_snapshot())
    response = post_job(site.server, {"x-api-key": site.server.api_key})
    assert response.status_code == 201, response.text
    assert len(site.server.db_snapshot()) == before + 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer garbage"}, {"x-api-key": "wrong"}],
    ids=["anonymous", "bad-token", "bad-key"],
)
def test_welcome_and_access_info_need_no_credentials(site: Site, headers: dict[str, str]) -> None:
    server = site.server
    welcome = requests.get(f"{server.url}/", headers=headers, timeout=10)
    assert welcome.status_code == 200, welcome.text
    assert as_json(welcome)["message"]
    info = requests.get(f"{server.url}/access_info", headers=headers, timeout=10)
    assert info.status_code == 200, info.text
    assert as_json(info)["cognito"] == {"user_pool_id": None, "client_id": None, "region": None}


def test_docs_are_served_and_list_every_endpoint(site: Site) -> None:
    server = site.server
    page = requests.get(f"{server.url}/docs", timeout=10)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    spec = requests.get(f"{server.url}/docs/openapi.json", timeout=10)
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
        "/ui/api/overview": ["get"],
        "/ui/api/jobs/{job_id}": ["get"],
    }
    pull_parameters = {p["name"] for p in paths["/jobs"]["get"]["parameters"]}
    assert {"memory", "cpu_cores", "gpu_mem", "gpu_memory", "limit", "older_than"} <= (
        pull_parameters
    )


# --- tokens from the command line --------------------------------------------------------------


def cli_token(server: Server, username: str, groups: str, state: Path | None = None) -> str:
    """Run ``workerfacing-api token`` beside the server, as its hint tells an operator to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))}
    env["LOCAL_STATE_DIR"] = str(state or server.root / STATE_DIR)
    env["USER_DATA_ROOT_PATH"] = str(server.data_root)
    command = [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "token"]
    result = subprocess.run(
        [*command, "--username", username, "--groups", groups],
        cwd=server.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (token,) = result.stdout.split()
    return token


def pull_with(server: Server, token: str, **params: Any) -> requests.Response:
    query = {"limit": 10, "cpu_cores": 8, "memory": 64000, **params}
    return requests.get(
        f"{server.url}/jobs",
        params=query,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_cli_token_is_accepted_by_the_running_server(server: Server, tmp_path: Path) -> None:
    submitted = server.submit()
    token = cli_token(server, "cli-worker", "workers")
    pulled = pull_with(server, token)
    assert pulled.status_code == 200, pulled.text
    ((job_id, job),) = as_json(pulled).items()
    assert job == submitted["job"]
    # The identity is the CLI's --username: the job is now cli-worker's, and only theirs.
    assert server.put_status(job_id, "running", "cli-worker").status_code == 204
    assert server.put_status(job_id, "running", "someone-else").status_code == 404
    # A token minted with another state directory is signed with another key.
    stranger = cli_token(server, "cli-worker", "workers", state=tmp_path / "elsewhere")
    refused = pull_with(server, stranger)
    assert refused.status_code == 401, refused.text


def test_cli_token_in_group_cloud_pulls_cloud_jobs(server: Server) -> None:
    local = server.submit(server.job_body(environment="local"))
    cloud = server.submit(server.job_body(environment="cloud"))
    anywhere = server.submit(server.job_body(environment=None))
    cloud_token = cli_token(server, "cloud-worker", "workers,cloud")

    first = pull_with(server, cloud_token, older_than=3600)
    assert first.status_code == 200, first.text
    assert list(as_json(first).values()) == [cloud["job"]]  # the new "any" job is too young
    second = pull_with(server, cloud_token, older_than=0)
    assert list(as_json(second).values()) == [anywhere["job"]]
    assert as_json(pull_with(server, cloud_token, older_than=0)) == {}  # never the local job

    local_token = cli_token(server, "local-worker", "workers")
    assert list(as_json(pull_with(server, local_token)).values()) == [local["job"]]
