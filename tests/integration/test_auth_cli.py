"""Tokens printed by ``workerfacing-api token`` work against a running ``workerfacing-api serve``
started from the same directory: two processes agreeing on the local issuer's key (kept in
``LOCAL_STATE_DIR``), the token naming the ``--username`` and carrying the ``--groups``.

What the app does with a token (refusals, groups, identity, the matching of a cloud worker's
pulls) is tests/integration/test_auth.py's, in this process; here the processes are the subject.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import Server, as_json

# Real processes on 127.0.0.1 (serve, the CLI): docs/TESTING.md.
pytestmark = pytest.mark.e2e

STATE_DIR = ".workerfacing-api"


def cli_token(
    server: Server, username: str, groups: str, state: Path | None = None, *, init: bool = False
) -> str:
    """Run ``workerfacing-api token`` beside the server, as its hint tells an operator to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))}
    env["LOCAL_STATE_DIR"] = str(state or server.root / STATE_DIR)
    env["USER_DATA_ROOT_PATH"] = str(server.data_root)
    command = [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "token"]
    result = subprocess.run(
        [*command, "--username", username, "--groups", groups, *(["--init"] if init else [])],
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


def test_cli_tokens_are_accepted_by_the_running_server(server: Server, tmp_path: Path) -> None:
    """One server, three tokens from the command line: the ``--groups`` and the ``--username``
    reach the server, and the key is the one in the state directory the two share."""
    local = server.submit(server.job_body(environment="local"))
    cloud = server.submit(server.job_body(environment="cloud"))

    # workers,cloud: the cloud job, never the local one queued beside it.
    cloud_token = cli_token(server, "cloud-worker", "workers,cloud")
    from_cloud = pull_with(server, cloud_token)
    assert from_cloud.status_code == 200, from_cloud.text
    assert list(as_json(from_cloud).values()) == [cloud["job"]]

    # workers: the local job.
    token = cli_token(server, "cli-worker", "workers")
    pulled = pull_with(server, token)
    assert pulled.status_code == 200, pulled.text
    ((job_id, job),) = as_json(pulled).items()
    assert job == local["job"]
    # The identity is the CLI's --username: the job is now cli-worker's, and only theirs.
    assert server.put_status(job_id, "running", "cli-worker").status_code == 204
    assert server.put_status(job_id, "running", "someone-else").status_code == 404

    # A token minted with another state directory is signed with another key.
    stranger = cli_token(server, "cli-worker", "workers", state=tmp_path / "elsewhere", init=True)
    refused = pull_with(server, stranger)
    assert refused.status_code == 401, refused.text
