"""The production deployment (ARCHITECTURE §4, §5): Cognito sign-in, files on S3 through pre-signed
requests, and a secret from Secrets Manager, against a real ``serve`` and a real moto server,
driven the way the DECODE worker drives them (boto3 ``initiate_auth``, then ``requests``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from devtools.aws_local import REGION, MotoServer, UserPool, create_user_pool
from moto.utilities.utils import load_resource

from tests.bodies import job_document
from tests.integration.conftest import Server, as_json, start_server, stop_server

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
URL_EXPIRY = 900


@dataclass
class Deployment:
    server: Server
    moto: MotoServer
    pool: UserPool
    bucket: str
    api_key: str

    def s3(self) -> Any:
        return self.moto.client("s3")

    def submit(self, job_id: int, **overrides: Any) -> None:
        prefix = f"s3://{self.bucket}/alice"
        body = job_document(job_id, root=prefix, **overrides)
        response = requests.post(
            f"{self.server.url}/_jobs",
            json=body,
            headers={"x-api-key": self.api_key},
            timeout=10,
        )
        assert response.status_code == 201, response.text

    def put_inputs(self, job_id: int) -> dict[str, bytes]:
        """Store the job's inputs in the bucket, as the user-facing API does on upload."""
        body = job_document(job_id, root=f"s3://{self.bucket}/alice")
        contents = {}
        for file_id in body["job"]["handler"]["files_down"].values():
            key = file_id.removeprefix(f"s3://{self.bucket}/")
            data = f"input {key}\n".encode()
            self.s3().put_object(Bucket=self.bucket, Key=key, Body=data)
            contents[file_id] = data
        return contents


@pytest.fixture(scope="module")
def deployment(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    pool = create_user_pool(moto)
    bucket = f"decode-{uuid.uuid4().hex[:10]}"
    moto.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    api_key = f"key-{uuid.uuid4().hex}"
    # The shared key comes from Secrets Manager, as in production (with a trailing newline).
    arn = moto.client("secretsmanager").create_secret(
        Name=f"wf-internal-key-{uuid.uuid4().hex[:6]}", SecretString=api_key + "\n"
    )["ARN"]
    server = start_server(
        tmp_path_factory.mktemp("aws"),
        {
            **moto.env(),
            "FILESYSTEM": "s3",
            "S3_BUCKET": bucket,
            "S3_REGION": REGION,
            "COGNITO_USER_POOL_ID": pool.pool_id,
            "COGNITO_CLIENT_ID": pool.client_id,
            "COGNITO_REGION": REGION,
            "INTERNAL_API_KEY_SECRET": arn,
            "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "URL_EXPIRY": str(URL_EXPIRY),
        },
    )
    server.api_key = api_key
    for user, groups in {
        "gpu-box-1": ("workers",),
        "gpu-box-2": ("workers",),
        "batch-1": ("workers", "cloud"),
        "alice": (),
    }.items():
        pool.add_user(user, groups)
    try:
        yield Deployment(server=server, moto=moto, pool=pool, bucket=bucket, api_key=api_key)
    finally:
        stop_server(server)


def sign_in(deployment: Deployment, username: str, kind: str = "IdToken") -> dict[str, str]:
    """Sign in as the DECODE worker does: pool and client read from ``/access_info``."""
    info = as_json(requests.get(f"{deployment.server.url}/access_info", timeout=10))["cognito"]
    tokens = deployment.pool.sign_in(
        username, client_id=info["client_id"], pool_region=info["region"]
    )
    assert info["user_pool_id"] == deployment.pool.pool_id
    return {"Authorization": f"Bearer {tokens[kind]}"}


def pull(deployment: Deployment, headers: dict[str, str]) -> dict[str, Any]:
    response = requests.get(
        f"{deployment.server.url}/jobs",
        params={"limit": 5, "cpu_cores": 8, "memory": 64000},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    jobs: dict[str, Any] = response.json()
    return jobs


def test_access_info_names_the_pool_the_worker_signs_in_to(deployment: Deployment) -> None:
    info = as_json(requests.get(f"{deployment.server.url}/access_info", timeout=10))
    assert info["cognito"] == {
        "user_pool_id": deployment.pool.pool_id,
        "client_id": deployment.pool.client_id,
        "region": REGION,
    }


@pytest.mark.parametrize("kind", ["IdToken", "AccessToken"])
def test_the_id_token_and_the_access_token_are_accepted(deployment: Deployment, kind: str) -> None:
    headers = sign_in(deployment, "gpu-box-2", kind)
    assert pull(deployment, headers) == {}  # authenticated, nothing queued for it


def test_a_cloud_worker_gets_only_cloud_jobs(deployment: Deployment) -> None:
    deployment.submit(7001, environment="local")
    deployment.submit(7002, environment="cloud")
    cloud = pull(deployment, sign_in(deployment, "batch-1"))
    assert [j["meta"]["job_id"] for j in cloud.values()] == [7002]
    local = pull(deployment, sign_in(deployment, "gpu-box-1", "AccessToken"))
    assert [j["meta"]["job_id"] for j in local.values()] == [7001]
    for queue_id, who in ((next(iter(cloud)), "batch-1"), (next(iter(local)), "gpu-box-1")):
        answer = requests.put(
            f"{deployment.server.url}/jobs/{queue_id}/status",
            params={"status": "error"},
            headers=sign_in(deployment, who),
            timeout=10,
        )
        assert answer.status_code == 204  # out of the way of the tests below


def test_a_whole_job_runs_on_s3_as_the_decode_worker_runs_it(deployment: Deployment) -> None:
    url = deployment.server.url
    inputs = deployment.put_inputs(7100)
    deployment.submit(7100)
    headers = sign_in(deployment, "gpu-box-1")
    ((queue_id, job),) = pull(deployment, headers).items()

    def status(value: str, **extra: str) -> None:
        answer = requests.put(
            f"{url}/jobs/{queue_id}/status",
            params={"status": value, **extra},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 204, answer.text

    status("preprocessing")
    for file_id in job["handler"]["files_down"].values():
        answer = requests.get(f"{url}/files/{file_id}/url", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        request = answer.json()
        assert request["method"] == "get"
        assert "Authorization" not in request["headers"]  # S3 signs it; no token of ours
        assert requests.request(**request, timeout=10).content == inputs[file_id]
    status("running")
    status("postprocessing")
    uploaded = {}
    for file_type, base_path, name in (
        ("log", "", "training.log"),
        ("artifact", "checkpoints", "model.pt"),
        ("output", "", "emitters.h5"),
    ):
        answer = requests.post(
            f"{url}/jobs/{queue_id}/files/url",
            params={"type": file_type, "base_path": base_path},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        request = answer.json()
        assert request["method"] == "post"
        data = f"{file_type} of job 7100".encode()
        done = requests.request(**request, files={"file": (name, data)}, timeout=10)
        assert done.status_code in (200, 201, 204), done.text
        uploaded[(file_type, base_path, name)] = data
    status("finished", runtime_details="")

    paths = job_document(7100, root=f"s3://{deployment.bucket}/alice")["paths_upload"]
    for (file_type, base_path, name), data in uploaded.items():
        prefix = paths[file_type].removeprefix(f"s3://{deployment.bucket}/")
        key = "/".join(p for p in (prefix, base_path, name) if p)
        stored = deployment.s3().get_object(Bucket=deployment.bucket, Key=key)["Body"].read()
        assert stored == data


def test_the_upload_policy_binds_the_bucket_the_prefix_the_size_and_the_expiry(
    deployment: Deployment,
) -> None:
    deployment.submit(7200)
    headers = sign_in(deployment, "gpu-box-1")
    ((queue_id, _),) = pull(deployment, headers).items()
    before = time.time()
    answer = requests.post(
        f"{deployment.server.url}/jobs/{queue_id}/files/url",
        params={"type": "artifact", "base_path": "run/1"},
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    request = answer.json()
    policy = json.loads(base64.b64decode(request["data"]["policy"]))
    prefix = (
        job_document(7200, root=f"s3://{deployment.bucket}/alice")["paths_upload"]["artifact"]
        .removeprefix(f"s3://{deployment.bucket}/")
        .strip("/")
        + "/run/1/"
    )
    conditions = policy["conditions"]
    assert {"bucket": deployment.bucket} in conditions
    assert ["starts-with", "$key", prefix] in conditions
    assert ["content-length-range", 0, MAX_UPLOAD_BYTES] in conditions
    assert request["data"]["key"] == prefix + "${filename}"
    expires = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + URL_EXPIRY - 5 <= expires <= time.time() + URL_EXPIRY + 5
    requests.put(
        f"{deployment.server.url}/jobs/{queue_id}/status",
        params={"status": "finished"},
        headers=headers,
        timeout=10,
    )


def test_file_answers_on_s3(deployment: Deployment) -> None:
    """Only inputs of the caller's active jobs; a missing one is a 404 at /url; another bucket
    is 403; the direct endpoints say to use the URL."""
    url = deployment.server.url
    present = next(iter(deployment.put_inputs(7300)))
    deployment.submit(7300)
    headers = sign_in(deployment, "gpu-box-1")
    ((queue_id, job),) = pull(deployment, headers).items()
    missing = job["handler"]["files_down"]["data/calib.mat"]
    deployment.s3().delete_object(
        Bucket=deployment.bucket, Key=missing.removeprefix(f"s3://{deployment.bucket}/")
    )
    assert (
        requests.get(f"{url}/files/{missing}/url", headers=headers, timeout=10).status_code == 404
    )
    other = f"s3://another-bucket/alice/data/{queue_id}/calib.mat"
    assert requests.get(f"{url}/files/{other}/url", headers=headers, timeout=10).status_code == 403
    download = requests.get(f"{url}/files/{present}/download", headers=headers, timeout=10)
    assert download.status_code == 400
    assert "url" in download.json()["detail"].lower()
    upload = requests.post(
        f"{url}/jobs/{queue_id}/files/upload",
        params={"type": "log"},
        headers=headers,
        files={"file": ("a.log", b"x")},
        timeout=10,
    )
    assert upload.status_code == 400
    assert "url" in upload.json()["detail"].lower()
    requests.put(
        f"{url}/jobs/{queue_id}/status", params={"status": "error"}, headers=headers, timeout=10
    )


# -- forgeries: 401, never 500; no group "workers": 403 ----------------------------------------


def _moto_pool_key() -> Any:
    """The private key moto signs every pool's tokens with: the pool's key, for these tests."""
    return jwt.algorithms.RSAAlgorithm.from_jwk(
        json.dumps(load_resource("cognitoidp/resources/jwks-private.json"))
    )


def _claims(deployment: Deployment, **change: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": f"https://cognito-idp.{REGION}.amazonaws.com/{deployment.pool.pool_id}",
        "sub": "x",
        "client_id": deployment.pool.client_id,
        "token_use": "access",
        "username": "gpu-box-1",
        "cognito:groups": ["workers"],
        "iat": now,
        "exp": now + 600,
    }
    return {**claims, **change}


def _signed(deployment: Deployment, kid: str = "dummy", **change: Any) -> str:
    return jwt.encode(
        _claims(deployment, **change), _moto_pool_key(), algorithm="RS256", headers={"kid": kid}
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none(d: Deployment) -> str:
    header = _b64(b'{"alg":"none","kid":"dummy"}')
    return f"{header}.{_b64(json.dumps(_claims(d)).encode())}."


def _other_pool(d: Deployment) -> str:
    other = create_user_pool(d.moto)
    other.add_user("gpu-box-1")
    return other.sign_in("gpu-box-1")["IdToken"]


def _other_client(d: Deployment) -> str:
    client = d.moto.client("cognito-idp").create_user_pool_client(
        UserPoolId=d.pool.pool_id, ClientName="other-app", ExplicitAuthFlows=["USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    return d.pool.sign_in("gpu-box-1", client_id=client)["AccessToken"]


def _edited(d: Deployment) -> str:
    header, payload, signature = d.pool.sign_in("alice")["IdToken"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["cognito:groups"] = ["workers"]
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


FORGERIES: dict[str, Callable[[Deployment], str]] = {
    "alg none": _alg_none,
    "HS256 keyed with the pool's public key": lambda d: ".".join(
        [
            _b64(b'{"alg":"HS256","typ":"JWT","kid":"dummy"}'),
            _b64(json.dumps(_claims(d)).encode()),
            _b64(b"forged-mac"),
        ]
    ),
    "a valid token of another pool": _other_pool,
    "a valid token of another app client": _other_client,
    "expired": lambda d: _signed(d, exp=int(time.time()) - 3600),
    "wrong token_use": lambda d: _signed(d, token_use="refresh"),
    "unknown kid": lambda d: _signed(d, kid="not-a-key-of-the-pool"),
    "edited claims": _edited,
    "garbage": lambda d: "Zm9v.YmFy.YmF6",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_tokens_get_401_never_500(deployment: Deployment, forgery: str) -> None:
    token = FORGERIES[forgery](deployment)
    answer = requests.get(
        f"{deployment.server.url}/jobs",
        params={"memory": 64000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 401, answer.text
    assert answer.json()["detail"]


def test_a_valid_token_outside_group_workers_gets_403(deployment: Deployment) -> None:
    answer = requests.get(
        f"{deployment.server.url}/jobs",
        params={"memory": 64000},
        headers=sign_in(deployment, "alice"),
        timeout=10,
    )
    assert answer.status_code == 403, answer.text


def test_access_info_offers_no_local_issuer_beside_cognito(deployment: Deployment) -> None:
    assert "local" not in as_json(requests.get(f"{deployment.server.url}/access_info", timeout=10))


def test_an_unreadable_secret_arn_stops_start_up_naming_it(
    moto: MotoServer, tmp_path: Path
) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:wf-absent-AbCdEf"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COGNITO_")},
        **moto.env(),
        "INTERNAL_API_KEY_SECRET": arn,
        "LOCAL_STATE_DIR": str(tmp_path / "state"),
        "QUEUE_DB_URL": f"sqlite:///{tmp_path / 'q.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "INTERNAL_API_KEY_SECRET" in lines[0]
    assert arn in lines[0]
