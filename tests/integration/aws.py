"""A real moto server on a free loopback port standing in for AWS (Cognito, S3, Secrets Manager),
and helpers that set AWS up the way the DECODE deployment has it. Never the internet, never an
in-process mock: boto3 and the service talk HTTP to this process."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.integration.conftest import free_port

REGION = "eu-central-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def env(self) -> dict[str, str]:
        """What points a process's botocore (and the service's JWKS fetch) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": REGION,
            **CREDENTIALS,
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


def start_moto(log_path: Path) -> MotoServer:
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited early:\n{log_path.read_text()}")
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return MotoServer(url=url, process=process, log_path=log_path)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                output = log_path.read_text()
                raise RuntimeError(f"moto_server silent for 30 s:\n{output}") from None
            time.sleep(0.1)


PASSWORD = "Decode-Worker-1!"


@dataclass
class UserPool:
    """A Cognito user pool with an app client allowing USER_PASSWORD_AUTH, as DECODE has it."""

    moto: MotoServer
    pool_id: str
    client_id: str

    def add_user(self, username: str, groups: tuple[str, ...] = ("workers",)) -> None:
        idp = self.moto.client("cognito-idp")
        idp.admin_create_user(
            UserPoolId=self.pool_id, Username=username, TemporaryPassword="Temporary-1!"
        )
        idp.admin_set_user_password(
            UserPoolId=self.pool_id, Username=username, Password=PASSWORD, Permanent=True
        )
        for group in groups:
            idp.admin_add_user_to_group(UserPoolId=self.pool_id, Username=username, GroupName=group)

    def sign_in(
        self, username: str, *, client_id: str | None = None, pool_region: str = REGION
    ) -> dict[str, str]:
        """``initiate_auth`` with USER_PASSWORD_AUTH, exactly as the DECODE worker signs in."""
        idp = boto3.client(
            "cognito-idp",
            region_name=pool_region,
            endpoint_url=self.moto.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        answer = idp.initiate_auth(
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
            ClientId=client_id or self.client_id,
        )
        result = answer["AuthenticationResult"]
        return {"IdToken": result["IdToken"], "AccessToken": result["AccessToken"]}


def create_user_pool(moto: MotoServer, groups: tuple[str, ...] = ("workers", "cloud")) -> UserPool:
    idp = moto.client("cognito-idp")
    pool_id = idp.create_user_pool(PoolName=f"decode-{uuid.uuid4().hex[:8]}")["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="decode-worker",
        ExplicitAuthFlows=["USER_PASSWORD_AUTH", "ALLOW_USER_PASSWORD_AUTH"],
    )["UserPoolClient"]["ClientId"]
    for group in groups:
        idp.create_group(GroupName=group, UserPoolId=pool_id)
    return UserPool(moto=moto, pool_id=pool_id, client_id=client_id)
