"""On S3, a deleted job's folders do not fill up again (docs/RELIABILITY.md, finding 8; ARCHITECTURE
§3).

The worker uploads straight to the bucket with pre-signed POSTs, so the service never sees the
files. When the job is cancelled (the user-facing API answered 404: the user deleted it), the
service lists the job's upload prefixes and removes every object written since the upstream's
last answer that was not a 404, and logs the keys; what was uploaded before stays. A worker
that only uploads learns of the delete too: its requests for upload URLs count as keep-alives.

The service runs in this process (tests/inprocess.py: the recording upstream answers 404 when
told), against a real moto server; the test plays the DECODE worker, which posts the pre-signed
requests as they are. S3 keeps an object's time in whole seconds, so the test lets real seconds
pass between the uploads before and after the delete (marked e2e).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from devtools.aws_local import REGION, MotoServer

from tests.bodies import job_document
from tests.inprocess import API_KEY, Api, assemble, serving
from tests.integration.test_user_delete import keepalives
from workerfacing_api.core.model import Delivery

pytestmark = pytest.mark.e2e  # a real moto server, and S3's whole seconds

INTERVAL = 2.0  # UPSTREAM_KEEPALIVE_INTERVAL
# Between the last upload before the delete and the upstream's last answer before it: more
# than the two seconds S3's whole seconds and a clock's difference leave in doubt.
BEFORE_THE_ANSWER = 3.0


@pytest.fixture(scope="module")
def bucket(moto: MotoServer) -> str:
    name = f"decode-{uuid.uuid4().hex[:10]}"
    moto.client("s3").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return name


def objects(moto: MotoServer, bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = moto.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def post(presigned: dict[str, Any], name: str, data: bytes) -> None:
    """The DECODE worker's upload: the pre-signed request as handed out, one file field."""
    answer = requests.request(**presigned, files={"file": (name, data)}, timeout=10)
    assert answer.status_code in (200, 201, 204), answer.text


async def link(api: Api, queue_id: str, file_type: str, base_path: str = "") -> dict[str, Any]:
    answer = await api.upload_link(queue_id, file_type, base_path)
    assert answer.status_code == 201, answer.text
    granted: dict[str, Any] = answer.json()
    return granted


@pytest.mark.parametrize("seen_by", ["status ping", "upload URL request"])
async def test_what_a_worker_uploads_during_and_after_a_delete_is_removed_from_s3(
    tmp_path: Path,
    moto: MotoServer,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    seen_by: str,
) -> None:
    caplog.set_level(logging.INFO, logger="workerfacing_api")
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    meta_id = 501 if seen_by == "status ping" else 502
    assembled = assemble(
        tmp_path,
        filesystem="s3",
        s3_bucket=bucket,
        s3_region=REGION,
        upstream_keepalive_interval=INTERVAL,
    )
    # The service's clock is the wall's here: S3 dates the objects by it.
    assembled.clock.set(datetime.now(UTC))
    body = job_document(meta_id, root=f"s3://{bucket}/alice")
    prefixes = {
        kind: folder.removeprefix(f"s3://{bucket}/") + "/"
        for kind, folder in body["paths_upload"].items()
    }
    async with serving(assembled) as api:
        submitted = await api.client.post("/_jobs", json=body, headers={"x-api-key": API_KEY})
        assert submitted.status_code == 201, submitted.text
        (queue_id,) = await api.pull()
        assert (await api.put_status(queue_id, "running")).status_code == 204

        # Before the delete: a log and a checkpoint.
        post(await link(api, queue_id, "log"), "train.log", b"epoch 1")
        post(await link(api, queue_id, "artifact", "checkpoints/epoch1"), "model.pt", b"one")
        before = {p: objects(moto, bucket, p) for p in prefixes.values()}
        assert sum(len(o) for o in before.values()) == 2

        time.sleep(BEFORE_THE_ANSWER)
        assembled.clock.set(datetime.now(UTC))
        # A keep-alive answered by the user-facing API: the job existed then.
        assert (await api.put_status(queue_id, "running")).status_code == 204
        assert keepalives(api, meta_id) == 1
        during = await link(api, queue_id, "artifact", "checkpoints/epoch2")

        api.upstream.answers[meta_id] = Delivery.GONE  # the user deletes the job
        # The worker does not know yet, nor does the service: the uploads land in the bucket.
        post(during, "model.pt", b"two, sent as the user deleted the job")
        post(await link(api, queue_id, "output"), "emitters.h5", b"after the delete")
        post(await link(api, queue_id, "log"), "train-2.log", b"epoch 2")
        # Another job's folder that starts with this one's name is not this job's.
        neighbour = prefixes["artifact"].rstrip("/") + "0/model.pt"
        moto.client("s3").put_object(Bucket=bucket, Key=neighbour, Body=b"job 5010")

        assembled.clock.advance(INTERVAL)  # the next call is due to go upstream
        if seen_by == "status ping":
            answer = await api.put_status(queue_id, "running")
        else:  # the worker only uploads: its request for a URL goes upstream as a keep-alive
            answer = await api.upload_link(queue_id, "artifact", "checkpoints/epoch3")
        assert answer.status_code == 404, answer.text  # stop

        # Of the uploads during and after the delete nothing remains; those before are intact.
        assert {p: objects(moto, bucket, p) for p in prefixes.values()} == before
        assert objects(moto, bucket, neighbour) == {neighbour: b"job 5010"}
        removed = [
            f"s3://{bucket}/{prefixes['artifact']}checkpoints/epoch2/model.pt",
            f"s3://{bucket}/{prefixes['output']}emitters.h5",
            f"s3://{bucket}/{prefixes['log']}train-2.log",
        ]
        line = next(r.getMessage() for r in caplog.records if "was deleted upstream" in r.msg)
        assert "removed 3 file(s)" in line, line
        assert all(key in line for key in removed), line
        # And every later call about the job says stop.
        assert (await api.upload_link(queue_id, "log")).status_code == 404
