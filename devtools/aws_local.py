"""A local stand-in for the AWS side of DECODE OpenCloud: a moto server on a free loopback port
(Cognito, S3, Secrets Manager), set up the way the production deployment has it.

Run it to get a whole AWS-like deployment of the service on one machine, in one command:

    uv run python -m devtools.aws_local

It first checks that the ports it needs are free (the service's, ``--port``, and moto's,
``--moto-port``), so that a taken one stops it before anything is started. It then starts moto,
creates a user pool with an app client (USER_PASSWORD_AUTH) and the groups ``workers``, ``cloud``
and ``operators``, a worker user and an operator user, a bucket and the shared key as a Secrets
Manager secret, runs ``workerfacing-api serve`` with ``FILESYSTEM=s3`` and Cognito, and prints
how a worker signs in, how to get the operator's token and the shared key. The tests and the
benchmarks use the same helpers; nothing here reaches the internet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests

REGION = "eu-central-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port``. SO_REUSEADDR as uvicorn and moto set
    it: a connection lingering in TIME_WAIT does not count as the port being taken, a listener
    (on this address or on all of them) does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


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


def start_moto(log_path: Path, port: int = 0) -> MotoServer:
    """A moto server on ``port`` of 127.0.0.1 (0: a free one), answering when this returns."""
    port = port or free_port()
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
MOTO_HOST = "127.0.0.1"


@dataclass
class UserPool:
    """A Cognito user pool with an app client allowing USER_PASSWORD_AUTH, as DECODE has it."""

    moto: MotoServer
    pool_id: str
    client_id: str
    region: str = REGION

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


def token_command(pool: UserPool, username: str) -> str:
    """A shell command that prints a fresh Cognito ID token of ``username`` (valid one hour),
    signing in as the DECODE worker does."""
    code = (
        "import boto3; "
        f"idp = boto3.client('cognito-idp', region_name={REGION!r}, "
        f"endpoint_url={pool.moto.url!r}, aws_access_key_id='testing', "
        "aws_secret_access_key='testing'); "
        "print(idp.initiate_auth(AuthFlow='USER_PASSWORD_AUTH', "
        f"AuthParameters={{'USERNAME': {username!r}, 'PASSWORD': {PASSWORD!r}}}, "
        f"ClientId={pool.client_id!r})['AuthenticationResult']['IdToken'])"
    )
    return f'uv run python -c "{code}"'


def taken_port(ports: dict[str, tuple[str, int]]) -> str | None:
    """The one line that stops the script when a port it needs is not free, naming the port and
    the option that changes it; None when all are free. ``ports``: option → (host, port)."""
    seen: dict[int, str] = {}
    for option, (_, port) in ports.items():
        if port and port in seen:
            return f"{seen[port]} and {option} are both {port}: give them different ports"
        seen[port] = option
    for option, (host, port) in ports.items():
        if port and port_in_use(host, port):
            return f"port {port} on {host} is in use; choose another with {option}"
    return None


def main() -> None:
    """Moto, a pool, a bucket, a secret, and ``serve`` on them; Ctrl-C stops everything."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001, help="port of the service (8001)")
    parser.add_argument(
        "--moto-port",
        type=int,
        default=0,
        help="port of the moto server (0, the default: any free)",
    )
    parser.add_argument("--worker", default="gpu-box-1", help="user name of the worker (gpu-box-1)")
    parser.add_argument(
        "--operator", default="operator-1", help="user name of the operator (operator-1)"
    )
    args = parser.parse_args()

    # Before anything is started or printed: a taken port found once moto runs and everything
    # is printed leaves the user reading a set-up that is about to go away.
    host = os.environ.get("HOST", "127.0.0.1")
    problem = taken_port({"--port": (host, args.port), "--moto-port": (MOTO_HOST, args.moto_port)})
    if problem is not None:
        sys.exit(f"aws_local: {problem}")

    # A SIGTERM ends the stack like Ctrl-C does: serve and moto are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state = Path(tempfile.mkdtemp(prefix="wf-aws-local-"))
    moto = start_moto(state / "moto.log", args.moto_port)
    try:
        pool = create_user_pool(moto, groups=("workers", "cloud", "operators"))
        pool.add_user(args.worker, ("workers",))
        pool.add_user(args.operator, ("operators",))
        bucket = "decode-user-data"
        moto.client("s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        internal_key = uuid.uuid4().hex
        key_arn = moto.client("secretsmanager").create_secret(
            Name="workerfacing-api/internal-api-key", SecretString=internal_key
        )["ARN"]
        env = {
            **os.environ,
            **moto.env(),
            "FILESYSTEM": "s3",
            "S3_BUCKET": bucket,
            "S3_REGION": REGION,
            "COGNITO_USER_POOL_ID": pool.pool_id,
            "COGNITO_CLIENT_ID": pool.client_id,
            "COGNITO_REGION": REGION,
            "INTERNAL_API_KEY_SECRET": key_arn,
            "QUEUE_DB_URL": f"sqlite:///{state / 'queue.db'}",
            "LOCAL_STATE_DIR": str(state),
            "PORT": str(args.port),
        }
        print(
            f"moto (AWS stand-in) at {moto.url}; state in {state}\n"
            f"user pool {pool.pool_id}, app client {pool.client_id}, bucket {bucket}\n"
            f"worker {args.worker!r}, password {PASSWORD!r}: sign in with boto3 "
            f"initiate_auth(USER_PASSWORD_AUTH) at endpoint {moto.url}\n"
            f"operator {args.operator!r}, password {PASSWORD!r}: its ID token (for /ui and "
            f"/metrics, valid one hour) is printed by\n  {token_command(pool, args.operator)}\n"
            f"shared key (x-api-key): {internal_key}, in Secrets Manager as {key_arn}\n"
            f"environment of the service: "
            + " ".join(f"{k}={env[k]}" for k in sorted(set(env) - set(os.environ)))
            + "\n",
            flush=True,
        )
        serve = subprocess.Popen(
            [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "serve"], env=env
        )
        try:
            serve.wait()
        finally:
            if serve.poll() is None:
                serve.terminate()
                serve.wait()
    finally:
        moto.process.terminate()
        moto.process.wait()


if __name__ == "__main__":
    main()
