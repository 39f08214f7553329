"""Pull latency while a large upload is written to a slow disk (local storage).

The app as ``serve`` builds it (the container, SQLite, local storage), driven in this process
through an ASGI transport: one worker uploads a 200 MiB result through its signed link while
every write of the upload's file takes ``--write-ms`` in the disk (a fake slow disk: the file
object's ``write`` sleeps in whatever thread calls it); another worker pulls (``GET /jobs``,
nothing left for it) every 5 ms meanwhile. Prints how long its pulls waited during the upload,
counted from when each was meant to start. With file I/O on the event loop, each slow write
stalls every request; off the loop, a pull waits for no write.

    uv run python benchmarks/slow_disk.py
    /other/checkout/.venv/bin/python benchmarks/slow_disk.py   # the same, on another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from workerfacing_api.config import Settings
from workerfacing_api.container import build_container, migrate
from workerfacing_api.entrypoints.http import create_app

KEY = "benchmark-key"
MIB = 2**20


def slow_part_files(write_seconds: float) -> None:
    """Every write to an upload's part file takes ``write_seconds`` more."""
    real_open = Path.open

    class Slow:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def write(self, data: bytes) -> int:
            time.sleep(write_seconds)  # the disk, in whichever thread writes
            return int(self._handle.write(data))

        def writelines(self, pieces: list[bytes]) -> None:
            time.sleep(write_seconds)  # one write to the disk, however many pieces
            self._handle.writelines(pieces)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._handle, name)

        def __enter__(self) -> Slow:
            self._handle.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.__exit__(*exc)

    def open_slowly(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        return Slow(handle) if self.suffix == ".part" else handle

    Path.open = open_slowly  # type: ignore[method-assign]


def job(job_id: int, root: Path) -> dict[str, Any]:
    files = {"data/in.bin": str(root / f"in-{job_id}.bin")}
    for path in files.values():
        Path(path).write_bytes(b"input")
    return {
        "job": {
            "app": {"cmd": ["run"], "env": {}},
            "handler": {"image_url": "x", "files_down": files},
            "meta": {"job_id": job_id, "date_created": "2026-12-06T00:00:00"},
            "hardware": {},
        },
        "paths_upload": {
            "output": str(root / f"out-{job_id}"),
            "log": str(root / f"log-{job_id}"),
            "artifact": str(root / f"art-{job_id}"),
        },
    }


async def body(mib: int) -> AsyncIterator[bytes]:
    chunk = b"x" * MIB
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="r.bin"\r\n\r\n'
    for _ in range(mib):
        yield chunk
    yield b"\r\n--b--\r\n"


async def run(upload_mib: int, write_ms: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(
        user_data_root_path=str(tmp),
        local_state_dir=str(tmp / "state"),
        queue_db_url=f"sqlite:///{tmp / 'state' / 'queue.db'}",
        internal_api_key_secret=KEY,
        metrics=False,
        access_log=False,
    )
    container = build_container(settings)
    await migrate(container)
    app = create_app(container, run_duties=False)
    issuer = container.local_issuer()

    def auth(name: str) -> dict[str, str]:
        token = issuer.mint(name, ["workers"], timedelta(hours=1), datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}

    slow_part_files(write_ms / 1000)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    # The test client runs the app's start-up and shut-down (the database pool) on this loop;
    # the requests go through an ASGI transport, concurrently.
    async with (
        AsyncTestClient(app=app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client,
    ):
        for n in range(1, 3):
            answer = await client.post("/_jobs", json=job(n, tmp), headers={"x-api-key": KEY})
            answer.raise_for_status()
        pulled = (await client.get("/jobs", params={"memory": 1}, headers=auth("up"))).json()
        (queue_id,) = pulled
        link = await client.post(
            f"/jobs/{queue_id}/files/url", params={"type": "output"}, headers=auth("up")
        )
        url = httpx.URL(link.json()["url"]).raw_path.decode()
        done = asyncio.Event()
        latencies: list[float] = []

        async def upload() -> int:
            answer = await client.post(
                url,
                content=body(upload_mib),
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
            done.set()
            return answer.status_code

        async def pulls() -> None:
            # A worker polling every 5 ms. Its wait is counted from when it meant to ask (the
            # previous answer plus 5 ms), so a stalled event loop, which starts the request
            # late, counts too.
            headers = auth("poller")
            meant = time.perf_counter()
            while not done.is_set():
                answer = await client.get("/jobs", params={"memory": 1}, headers=headers)
                answer.raise_for_status()
                answered = time.perf_counter()
                latencies.append(answered - meant)
                meant = answered + 0.005
                await asyncio.sleep(0.005)

        started = time.perf_counter()
        status, _ = await asyncio.gather(upload(), pulls())
        seconds = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {
        "upload_mib": upload_mib,
        "write_ms": write_ms,
        "upload_status": status,
        "upload_seconds": round(seconds, 2),
        "requests_during_upload": len(ms),
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2) if ms else None,
        "max_ms": round(ms[-1], 2) if ms else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="size of the upload")
    parser.add_argument("--write-ms", type=float, default=20.0, help="the disk's time per write")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mib, args.write_ms))))


if __name__ == "__main__":
    main()
