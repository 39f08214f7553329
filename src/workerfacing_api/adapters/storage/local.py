"""Job files on a local (or mounted) file system under ``USER_DATA_ROOT_PATH``.

Every path is resolved (symlinks included) and must stay inside the root: ``..`` or a symlink
pointing out is refused. Uploads are written to a temporary file beside the target, flushed to
disk, then renamed over it, so a reader never sees half a file and an aborted upload leaves none.
The file system is touched in threads (writes, flushes, folder checks, renames, removals), never
on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from workerfacing_api.core.errors import (
    AccessDenied,
    FileNotFound,
    InvalidRequest,
    NotSupported,
    PayloadTooLarge,
)
from workerfacing_api.core.model import PresignedRequest

# Bytes gathered from the request before they go to the disk in one hop to a thread.
_WRITE_BATCH = 1024 * 1024


class LocalStorage:
    """Implements ``FileStorage`` with direct transfer through this service."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def direct_transfer(self) -> bool:
        return True

    def _inside_root(self, raw: str, what: str) -> Path:
        if "\x00" in raw:
            raise InvalidRequest(f"{what} {raw!r} contains a NUL byte")
        # Relative ids are relative to the working directory, as the user-facing API writes them
        # when its USER_DATA_ROOT_PATH is relative too (e.g. "user_data/alice/…").
        path = Path(os.path.abspath(raw)).resolve()
        if path != self.root and self.root not in path.parents:
            raise AccessDenied(f"{what} {raw!r} is outside the data root")
        return path

    def canonical_id(self, file_id: str) -> str:
        if file_id.startswith("s3://"):
            raise InvalidRequest(
                f"file {file_id!r} is on S3, but this service stores files locally"
            )
        return str(self._inside_root(file_id, "file"))

    def upload_folder(self, folder: str, base_path: str) -> str:
        if "\x00" in base_path:  # said of base_path, the worker's part, not the whole folder
            raise InvalidRequest(f"base_path {base_path!r} contains a NUL byte")
        base = PurePosixPath(base_path.replace("\\", "/"))
        if base.is_absolute() or ".." in base.parts:
            raise InvalidRequest(
                f"base_path {base_path!r} must be a relative path without '..' segments"
            )
        root_folder = self._inside_root(folder, "upload folder")
        target = self._inside_root(str(root_folder / base), "upload folder")
        if target != root_folder and root_folder not in target.parents:
            raise AccessDenied(f"base_path {base_path!r} leaves the job's upload folder")
        return str(target)

    def presign_upload(self, folder: str) -> PresignedRequest:
        raise NotSupported("local storage uploads go through this service; no pre-signed URL")

    def presign_download(self, file_id: str) -> PresignedRequest:
        raise NotSupported("local storage downloads go through this service; no pre-signed URL")

    async def write(
        self, folder: str, filename: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> int:
        # Every touch of the disk runs in a thread (the loop's default executor): a slow disk
        # then slows this upload only, never the requests of other workers.
        target, partial, handle = await asyncio.to_thread(self._open_part, folder, filename)
        size = 0
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"upload exceeds the limit of {max_bytes} bytes (MAX_UPLOAD_BYTES)"
                    )
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _WRITE_BATCH:  # one hop to a thread per batch, not per chunk
                    await asyncio.to_thread(handle.writelines, batch)
                    batch, batched = [], 0
            await asyncio.to_thread(_commit, handle, batch, partial, target, filename)
        except BaseException:
            # Submitted to the executor at once and shielded: even a cancelled request leaves
            # no part file behind.
            discard = asyncio.get_running_loop().run_in_executor(None, _discard, handle, partial)
            await asyncio.shield(discard)
            raise
        return size

    def _open_part(self, folder: str, filename: str) -> tuple[Path, Path, BinaryIO]:
        """The target file and an open, new part file beside it (in a thread: it touches the
        disk)."""
        directory = self._inside_root(folder, "upload folder")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, a name too long, a read-only disk
            raise InvalidRequest(
                f"upload folder cannot be created: {exc.strerror or exc}; check base_path"
            ) from None
        # mkdir may have walked through a symlink created meanwhile: check again once it exists.
        directory = self._inside_root(str(directory), "upload folder")
        target = directory / filename
        if target.is_dir():
            raise InvalidRequest(f"{filename!r} is a folder in the upload folder, not a file")
        # The temporary name does not grow with the file name, so any name that fits fits here.
        partial = directory / f".upload-{uuid.uuid4().hex}.part"
        try:
            handle = partial.open("xb")
        except OSError as exc:
            raise InvalidRequest(
                f"cannot write into the upload folder: {exc.strerror or exc}"
            ) from None
        return target, partial, handle

    async def remove(self, file_ids: Sequence[str], *, within: Sequence[str]) -> list[str]:
        return await asyncio.to_thread(self._remove, file_ids, within)

    def _remove(self, file_ids: Sequence[str], within: Sequence[str]) -> list[str]:
        folders: list[Path] = []
        for name in within:
            try:
                folders.append(self._inside_root(name, "upload folder"))
            except (AccessDenied, InvalidRequest):
                continue  # a job's folder outside the root was never written to
        removed: list[str] = []
        for file_id in file_ids:
            path = self._inside_root(file_id, "file")
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                continue  # only files are ever recorded; a folder there now is not ours
            removed.append(str(path))
            home = next((f for f in folders if f == path.parent or f in path.parents), None)
            if home is None:
                continue
            # Folders the upload made (after the user deleted the job, they recreate folders
            # the user saw go): each one left empty goes, up to the job's upload folder itself.
            for made in path.parents[: path.parents.index(home) + 1]:
                try:
                    made.rmdir()
                except OSError:  # not empty (something else is there), or gone already
                    break
        return removed

    async def written_since(self, folders: Sequence[str], since: datetime | None) -> list[str]:
        # Every upload here passes through ``write``, and the ledger notes it: none bypassed it.
        return []

    async def ensure_exists(self, file_id: str) -> None:
        await asyncio.to_thread(self.local_path, file_id)

    def local_path(self, file_id: str) -> Path:
        path = Path(self.canonical_id(file_id))
        if not path.is_file():
            raise FileNotFound(f"file {file_id!r} does not exist")
        return path


def _commit(
    handle: BinaryIO, rest: list[bytes], partial: Path, target: Path, filename: str
) -> None:
    """Write the last bytes, flush them to disk, and put the file in place (in a thread)."""
    handle.writelines(rest)
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    try:
        os.replace(partial, target)  # atomic: readers see the old or the whole new file
    except OSError as exc:
        raise InvalidRequest(f"cannot store {filename!r}: {exc.strerror or exc}") from None


def _discard(handle: BinaryIO, partial: Path) -> None:
    """An upload that did not complete leaves nothing (in a thread)."""
    handle.close()
    partial.unlink(missing_ok=True)
