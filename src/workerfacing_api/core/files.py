"""Use cases of file transfer: where a worker may upload results and which inputs it may read.

Rules (ARCHITECTURE §3, §4, §6): uploads only by the worker holding the job, while the job is active
or final and still on the same attempt; downloads only of files named in the ``files_down`` of
one of the caller's active jobs (404 otherwise, which the DECODE worker reads as "stop"; 403 only
for a path outside the data root or bucket). Paths are the storage adapter's to keep inside
their root. Each stored upload is noted, so that what a worker stored after its user deleted the
job can be taken away again (``LateUploads``; on S3, where uploads go straight to the bucket, the
storage finds them by their time). A request for an upload URL is forwarded as a keep-alive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from workerfacing_api.core.errors import (
    AccessDenied,
    FileNotFound,
    InvalidRequest,
    JobNotFound,
    NotSupported,
    Unavailable,
)
from workerfacing_api.core.lifecycle import ensure_assigned
from workerfacing_api.core.model import MAX_DB_INT, FileType, Job, PresignedRequest
from workerfacing_api.core.ports import Clock, FileStorage, JobQueue, UploadLedger
from workerfacing_api.core.sync import StatusSync

log = logging.getLogger("workerfacing_api.files")


class UploadGrant(msgspec.Struct, frozen=True, kw_only=True):
    """Permission to upload into ``folder`` for one attempt of a job. ``presigned`` is set when
    the storage takes the upload itself; otherwise the entry point signs a link to itself."""

    job_id: int
    attempt: int
    worker: str
    file_type: FileType
    base_path: str
    folder: str
    presigned: PresignedRequest | None


class DownloadGrant(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str  # canonical
    presigned: PresignedRequest | None


def parse_file_type(value: str) -> FileType:
    try:
        return FileType(value)
    except ValueError:
        allowed = ", ".join(t.value for t in FileType)
        raise InvalidRequest(f"type {value!r} is not a file type; use one of: {allowed}") from None


def check_file_name(name: str) -> str:
    """A plain file name: uploads name a file, never a path, and no control character (a line
    break in a name breaks every listing and log line that shows it)."""
    if (
        not name
        or name in {".", ".."}
        or "/" in name
        or "\\" in name
        or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
        or len(name.encode()) > 255
    ):
        raise InvalidRequest(
            f"file name {name!r} is not acceptable: send a plain name (no path, no control "
            "characters), at most 255 bytes"
        )
    return name


class FileService:
    def __init__(
        self,
        queue: JobQueue,
        storage: FileStorage,
        ledger: UploadLedger,
        clock: Clock,
        max_upload_bytes: int,
        *,
        sync: StatusSync | None = None,
    ) -> None:
        self._queue = queue
        self._storage = storage
        self._ledger = ledger
        self._clock = clock
        self._sync = sync
        self.max_upload_bytes = max_upload_bytes

    async def grant_upload(
        self, job_id: int, worker: str, file_type: str, base_path: str
    ) -> UploadGrant:
        """Permission to upload into the job's folder of ``file_type``. The request is also the
        worker's sign of life: it goes upstream as a keep-alive (``StatusSync.keep_alive``),
        so that a worker that only uploads is told of its user's delete within one interval,
        and uploads no more into the deleted job's folders."""
        kind = parse_file_type(file_type)
        job = await self._assigned(job_id, worker)
        folder = self._storage.upload_folder(job.paths_upload.folder(kind), base_path)
        if self._sync is not None and await self._sync.keep_alive(job):
            raise JobNotFound(f"job {job_id} was deleted by its user; stop working on it")
        presigned = None if self._storage.direct_transfer else self._storage.presign_upload(folder)
        return UploadGrant(
            job_id=job.id,
            attempt=job.attempt,
            worker=worker,
            file_type=kind,
            base_path=base_path,
            folder=folder,
            presigned=presigned,
        )

    async def store_upload(
        self,
        grant: UploadGrant,
        filename: str,
        chunks: AsyncIterator[bytes],
    ) -> int:
        """Write one uploaded file, re-checking at write time that the grant still holds."""
        if not self._storage.direct_transfer:
            raise NotSupported(
                "direct upload is only available with local storage; upload to the URL from "
                "POST /jobs/{id}/files/url instead"
            )
        check_file_name(filename)
        await self._current_attempt(grant)
        size = await self._storage.write(grant.folder, filename, chunks, self.max_upload_bytes)
        stored = self._storage.canonical_id(f"{grant.folder}/{filename}")
        await self._ledger.record_upload(grant.job_id, grant.attempt, stored, self._clock.now())
        # The job may have been cancelled while the file was on its way (its user deleted it).
        # Noted in the ledger first, so either this check or the cancellation's clean-up sees
        # the file, and it does not stay behind.
        try:
            await self._current_attempt(grant)
        except JobNotFound:
            job = await self._queue.get(grant.job_id)
            folders = [] if job is None else _upload_folders(job)
            await self._storage.remove([stored], within=folders or [grant.folder])
            raise
        return size

    async def _current_attempt(self, grant: UploadGrant) -> Job:
        """The job, still held by the grant's worker in the grant's attempt; else the 404 the
        worker reads as "stop" (the job was re-queued, handed on, or cancelled)."""
        job = await self._assigned(grant.job_id, grant.worker)
        if job.attempt != grant.attempt:
            raise JobNotFound(
                f"job {grant.job_id} is no longer yours in the attempt this upload belongs to"
            )
        return job

    async def grant_download(self, worker: str, file_id: str) -> DownloadGrant:
        """Allow ``worker`` to read ``file_id`` if one of its active jobs names it."""
        wanted = self._storage.canonical_id(file_id)
        for job in await self._queue.active_jobs_of(worker):
            for named in job.files_down().values():
                try:
                    listed = self._storage.canonical_id(named) == wanted
                except (InvalidRequest, AccessDenied):
                    continue
                if listed:
                    # A listed input that is missing is a 404 here, as the original service
                    # answered, not a link that fails later.
                    await self._storage.ensure_exists(wanted)
                    presigned = (
                        None
                        if self._storage.direct_transfer
                        else self._storage.presign_download(wanted)
                    )
                    return DownloadGrant(file_id=wanted, presigned=presigned)
        # 404, not 403: the DECODE worker stops on a 404, and this is what it sees when its job
        # was just re-queued, superseded or cancelled while it downloads.
        raise FileNotFound(f"file {file_id!r} is not an input of any job assigned to you now")

    def local_file(self, file_id: str) -> Path:
        if not self._storage.direct_transfer:
            raise NotSupported(
                "direct download is only available with local storage; use the URL from "
                "GET /files/{file_id}/url instead"
            )
        return self._storage.local_path(file_id)

    async def _assigned(self, job_id: int, worker: str) -> Job:
        job = await self._queue.get(job_id) if 0 < job_id <= MAX_DB_INT else None
        return ensure_assigned(job, worker, job_id)


class LateUploads:
    """What a worker stored for a job after its user deleted it, taken away again when the job
    is cancelled (``StatusSync``'s cancel hook): the files noted in the ledger (uploads through
    this service), and those the storage finds uploaded straight into it (pre-signed, on S3)."""

    def __init__(self, storage: FileStorage, ledger: UploadLedger) -> None:
        self._storage = storage
        self._ledger = ledger

    async def remove_after_delete(self, job: Job) -> list[str]:
        """Remove what was stored for a cancelled job since the upstream last answered about it
        with anything but a 404: the user's delete came after that answer, and what the worker
        uploaded after the delete must not reappear in the user's folders. What was stored
        before is the user-facing API's to remove, and is left alone."""
        since = job.upstream_ok_at
        folders = _upload_folders(job)
        try:
            stored = await self._ledger.uploads_since(job.id, since)
            stored += await self._storage.written_since(folders, since)
            stored = list(dict.fromkeys(stored))
            if not stored:
                return []
            removed = await self._storage.remove(stored, within=folders)
        except Unavailable as exc:  # the job stays cancelled; its folders need an operator
            log.warning(
                "job %s (meta.job_id %s) was deleted upstream, but the files stored after the "
                "delete could have happened (since %s) could not be removed: %s; remove them "
                "from %s",
                job.id,
                job.upstream_id,
                since.isoformat() if since else "the start",
                exc.detail,
                ", ".join(folders),
            )
            return []
        log.info(
            "job %s (meta.job_id %s) was deleted upstream: removed %d file(s) stored after the "
            "delete could have happened (since %s): %s",
            job.id,
            job.upstream_id,
            len(removed),
            since.isoformat() if since else "the start",
            ", ".join(removed),
        )
        return removed


def _upload_folders(job: Job) -> list[str]:
    paths = job.paths_upload
    return [paths.output, paths.log, paths.artifact]
