"""The OpenAPI document tells the truth (docs/RELIABILITY.md): schemathesis, against a live
``serve``, with a worker's token and the shared key, every check, a fixed seed and a bounded number
of examples per operation. Any server error, undocumented status code, schema-valid request refused
or schema-invalid request accepted fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Server, as_json

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

SEED = "20261201"
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "60")


@pytest.mark.slow
def test_schemathesis_finds_nothing_the_document_does_not_say(
    server: Server, tmp_path: Path
) -> None:
    server.submit()  # something in the queue, so that pulls and jobs calls go past the 404s
    document = as_json(requests.get(f"{server.url}/openapi.json", timeout=10))
    assert document["paths"]["/jobs/{job_id}/status"]["put"]["responses"].keys() >= {
        "204",
        "401",
        "404",
        "409",
        "422",
    }
    st = Path(sys.executable).with_name("st")
    done = subprocess.run(
        [
            str(st),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES,
            "--header",
            f"Authorization: Bearer {server.token('conformance')}",
            "--header",
            f"x-api-key: {server.api_key}",
            "--request-timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its cache of examples goes there, not into the checkout
        timeout=600,
        check=False,
    )
    summary = done.stdout[-4000:]
    print(summary)
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert "Traceback" not in server.log_path.read_text()
