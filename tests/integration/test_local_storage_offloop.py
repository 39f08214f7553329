"""A slow disk never stalls other requests (docs/RELIABILITY.md, finding 7): local storage writes,
flushes, renames and removes files in threads, so while a large upload is being written, a pull is
answered.

The disk is made slow by a fake: the upload's part file blocks its first write until the pull
has been answered (or, should the write block the event loop, until a guard runs out, and the
test fails). The order of events is what is asserted, never a duration. The app runs on the test
client's loop (its portal); the requests are sent concurrently on that same loop through an
ASGI transport, the upload's 200 MB streamed from one reused chunk.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.bodies import job_document
from tests.inprocess import BIG_WORKER, assemble, serving

MIB = 2**20
UPLOAD_MIB = 200
# How long a write blocked by the fake disk waits for the pull before it gives up: a guard
# against a hang, never reached when the event loop is free (the pull takes milliseconds).
GUARD_SECONDS = 10.0


class SlowDisk:
    """Part files of uploads whose first write blocks until ``release``: a disk that stalls."""

    def __init__(self) -> None:
        self.writing = threading.Event()  # a write is blocked in the disk now
        self.released = threading.Event()
        self.released_in_time = False  # the release came while the write was blocked
        self.written = 0

    def release(self) -> None:
        self.released.set()

    def wrap(self, handle: Any) -> Any:
        disk = self

        class SlowFile:
            def write(self, data: bytes) -> int:
                if not disk.writing.is_set():
                    disk.writing.set()
                    disk.released_in_time = disk.released.wait(GUARD_SECONDS)
                disk.written += len(data)
                return int(handle.write(data))

            def writelines(self, pieces: list[bytes]) -> None:
                for piece in pieces:
                    self.write(piece)

            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

        return SlowFile()


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> SlowDisk:
    disk = SlowDisk()
    real_open = Path.open

    def open_on_slow_disk(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        if self.name.startswith(".upload-") and self.suffix == ".part":
            return disk.wrap(handle)
        return handle

    monkeypatch.setattr(Path, "open", open_on_slow_disk)
    return disk


async def multipart(boundary: str, name: str, chunk: bytes, count: int) -> AsyncIterator[bytes]:
    """A multipart body with one file of ``count`` times ``chunk``, made as it is sent."""
    yield (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for _ in range(count):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


async def test_a_pull_is_answered_while_a_200_mb_upload_waits_for_a_slow_disk(
    tmp_path: Path, slow_disk: SlowDisk
) -> None:
    async with serving(assemble(tmp_path)) as api:
        await api.submit(1)
        await api.submit(2)
        (uploading,) = await api.pull("w1")
        assert (await api.put_status(uploading, "postprocessing", "w1")).status_code == 204
        link = await api.upload_link(uploading, "artifact", worker="w1")
        assert link.status_code == 201, link.text
        pull_headers = api.auth("w2")
        order: list[str] = []

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            """On the app's own loop: the upload and, once its first write is stuck in the
            disk, a pull of another worker."""
            transport = httpx.ASGITransport(app=api.client.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver.local", timeout=60
            ) as http:
                answers: dict[str, httpx.Response] = {}

                async def upload() -> None:
                    boundary = "slowdiskboundary"
                    answers["upload"] = await http.post(
                        link.json()["url"],
                        content=multipart(boundary, "model.pt", bytes(MIB), UPLOAD_MIB),
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                    )
                    order.append("upload answered")

                async def pull() -> None:
                    # Until the upload's write is stuck (a thread waits for it, not the loop).
                    await anyio.to_thread.run_sync(slow_disk.writing.wait, GUARD_SECONDS)
                    answers["pull"] = await http.get(
                        "/jobs", params=BIG_WORKER, headers=pull_headers
                    )
                    order.append("pull answered")
                    slow_disk.release()

                async with anyio.create_task_group() as group:
                    group.start_soon(upload)
                    group.start_soon(pull)
                return answers["upload"], answers["pull"]

        uploaded, pulled = api.client.blocking_portal.call(scenario)

    assert pulled.status_code == 200, pulled.text
    assert len(pulled.json()) == 1  # the other job, handed out while the disk was stuck
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["bytes"] == slow_disk.written == UPLOAD_MIB * MIB
    assert slow_disk.released_in_time, "the stuck write held the event loop: no pull answered"
    assert order == ["pull answered", "upload answered"]
    artifact = Path(job_document(1, root=str(api.user_root))["paths_upload"]["artifact"])
    artifact /= "model.pt"
    assert artifact.stat().st_size == UPLOAD_MIB * MIB
    assert not list(artifact.parent.glob(".upload-*"))  # the part file became the file
