"""Job files in one S3 bucket (``FILESYSTEM=s3``): ids and upload folders are ``s3://bucket/key``.

Files never pass through this service: workers get pre-signed requests and talk to S3 directly.
A download is a pre-signed GET of one object; an upload is a pre-signed POST whose policy S3
itself enforces: the key must start with the job's upload folder (the worker's file name is
filled in for ``${filename}``) and the body may not exceed ``MAX_UPLOAD_BYTES``. Only the one
bucket ``S3_BUCKET`` is ever signed for.

boto3 is synchronous: calls that go over the network (the existence check of an input, the
listing and removal of what a worker uploaded after its user deleted the job) run in a thread;
signing is local computation and runs inline.

As the uploads never pass through this service, what a worker uploaded after its user deleted
the job is found by listing the job's upload folders (``written_since``: ``s3:ListBucket``) and
removed with ``s3:DeleteObject``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from workerfacing_api.core.errors import (
    AccessDenied,
    FileNotFound,
    InvalidRequest,
    NotSupported,
    Unavailable,
)
from workerfacing_api.core.model import PresignedRequest

SCHEME = "s3://"
# S3 fills in the name of the uploaded file for this, in the key of a POST upload.
FILENAME = "${filename}"
# Keys S3 deletes in one request at most.
_DELETE_BATCH = 1000
# S3 dates an object (LastModified) in whole seconds, by its own clock: an object dated within
# this much before a time may have been written after it, and counts as written after it. Erring
# that way takes away only files of a job whose user deleted it.
_DATES_IN_DOUBT = timedelta(seconds=2)


class S3Storage:
    """Implements ``FileStorage`` with pre-signed requests (no direct transfer)."""

    def __init__(
        self,
        bucket: str,
        region: str | None,
        *,
        url_expiry: int,
        max_upload_bytes: int,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self._expiry = url_expiry
        self._max_upload_bytes = max_upload_bytes
        # botocore reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself (a moto server in tests);
        # pre-signed URLs then point there too. SigV4 everywhere: regions opened since 2014
        # accept nothing else.
        self._client = client or boto3.client(
            "s3", region_name=region, config=Config(signature_version="s3v4")
        )

    @property
    def direct_transfer(self) -> bool:
        return False

    def _split(self, file_id: str, what: str) -> tuple[str, str]:
        """``s3://bucket/key`` → (bucket, key); only the service's own bucket is allowed."""
        if not file_id.startswith(SCHEME):
            raise InvalidRequest(
                f"{what} {file_id!r} is not an S3 id (s3://bucket/key); this service stores "
                "files on S3"
            )
        bucket, _, key = file_id[len(SCHEME) :].partition("/")
        if bucket != self.bucket:
            raise AccessDenied(f"{what} {file_id!r} is outside the bucket {self.bucket!r}")
        if "\x00" in key:
            raise InvalidRequest(f"{what} {file_id!r} contains a NUL byte")
        return bucket, key

    def canonical_id(self, file_id: str) -> str:
        bucket, key = self._split(file_id, "file")
        if not key or key.endswith("/"):
            raise InvalidRequest(f"file {file_id!r} names no object")
        return f"{SCHEME}{bucket}/{key}"

    def upload_folder(self, folder: str, base_path: str) -> str:
        bucket, prefix = self._split(folder, "upload folder")
        base = PurePosixPath(base_path.replace("\\", "/"))
        if base.is_absolute() or ".." in base.parts or "\x00" in base_path:
            raise InvalidRequest(
                f"base_path {base_path!r} must be a relative path without '..' segments"
            )
        parts = [p for p in (*prefix.split("/"), *base.parts) if p not in ("", ".")]
        if not parts:
            raise InvalidRequest(f"upload folder {folder!r} names no prefix in the bucket")
        return f"{SCHEME}{bucket}/{'/'.join(parts)}"

    def presign_upload(self, folder: str) -> PresignedRequest:
        _, prefix = self._split(folder, "upload folder")
        # With a key ending in ${filename}, boto3 writes a "starts-with $key <prefix>/" condition
        # into the policy, so S3 accepts any file name, but only inside this folder.
        post = self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=f"{prefix}/{FILENAME}",
            Conditions=[["content-length-range", 0, self._max_upload_bytes]],
            ExpiresIn=self._expiry,
        )
        fields = {str(k): str(v) for k, v in post["fields"].items()}
        return PresignedRequest(method="post", url=post["url"], data=fields)

    def presign_download(self, file_id: str) -> PresignedRequest:
        _, key = self._split(file_id, "file")
        url = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self._expiry
        )
        return PresignedRequest(method="get", url=url)

    async def ensure_exists(self, file_id: str) -> None:
        _, key = self._split(file_id, "file")
        try:
            await asyncio.to_thread(self._client.head_object, Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFound(f"file {file_id!r} does not exist") from None
            # 403 for a missing object means the service lacks s3:ListBucket: an operator's fix.
            raise Unavailable(f"S3 refused to look up {file_id!r} ({code}); retry later") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise Unavailable(f"S3 is unreachable ({exc}); retry later") from None

    async def remove(self, file_ids: Sequence[str], *, within: Sequence[str]) -> list[str]:
        # S3 has no folders to leave empty: removing the objects is all there is.
        keys = [self._split(file_id, "file")[1] for file_id in file_ids]
        try:
            await asyncio.to_thread(self._delete, keys)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise Unavailable(f"S3 refused to delete objects ({exc}); retry") from None
        return list(file_ids)

    def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            answer = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            refused = answer.get("Errors") or []
            if refused:  # S3 answers 200 and lists the objects it could not delete
                first = refused[0]
                raise Unavailable(
                    f"S3 refused to delete {len(refused)} object(s), e.g. "
                    f"{SCHEME}{self.bucket}/{first.get('Key')} ({first.get('Code')}: "
                    f"{first.get('Message')}); the service needs s3:DeleteObject on them"
                )

    async def written_since(self, folders: Sequence[str], since: datetime | None) -> list[str]:
        prefixes: list[str] = []
        for folder in folders:
            try:
                _, prefix = self._split(self.upload_folder(folder, ""), "upload folder")
            except (InvalidRequest, AccessDenied):
                continue  # not a folder of this bucket: nothing was ever signed for it
            prefixes.append(f"{prefix}/")  # the slash: folder job-1 is not folder job-10
        cutoff = None if since is None else since - _DATES_IN_DOUBT
        try:
            # The folders side by side (the client is thread-safe): the clean-up is part of the
            # answer the worker's call waits for.
            listed = await asyncio.gather(
                *(asyncio.to_thread(self._written_after, p, cutoff) for p in sorted(set(prefixes)))
            )
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            fix = (
                f"the service needs s3:ListBucket on the bucket {self.bucket!r}"
                if code in {"AccessDenied", "403"}
                else "retry later"
            )
            detail = f"S3 refused to list the job's upload folders ({code}); {fix}"
            raise Unavailable(detail) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise Unavailable(f"S3 is unreachable ({exc}); retry later") from None
        # Once each: one job's folder may hold another of its folders.
        return list(dict.fromkeys(key for keys in listed for key in keys))

    def _written_after(self, prefix: str, cutoff: datetime | None) -> list[str]:
        found: list[str] = []
        pages = self._client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if cutoff is None or item["LastModified"] > cutoff:
                    found.append(f"{SCHEME}{self.bucket}/{item['Key']}")
        return found

    async def write(
        self, folder: str, filename: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> int:
        raise NotSupported(
            "direct upload is only available with local storage; upload to the URL from "
            "POST /jobs/{id}/files/url instead"
        )

    def local_path(self, file_id: str) -> Path:
        raise NotSupported(
            "direct download is only available with local storage; use the URL from "
            "GET /files/{file_id}/url instead"
        )
