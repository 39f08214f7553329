"""Background duties of a running service, one small loop each: the sweeper takes back jobs whose
keep-alive stopped (and tells users why a job waits, ``core.notices``); the dispatcher delivers
status events the requests could not deliver inline.

Both are safe to run in every API process at once (compare-and-set and leases keep them apart).
A failing round is logged and retried at the next tick; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from workerfacing_api.core.errors import Unavailable
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.notices import WaitNotices
from workerfacing_api.core.sync import StatusSync

log = logging.getLogger("workerfacing_api.duties")

DISPATCH_IDLE_SECONDS = 1.0


async def every(
    name: str,
    interval: float,
    step: Callable[[], Awaitable[bool]],
) -> None:
    """Run ``step`` forever; wait ``interval`` seconds after a round that found nothing to do
    (``step`` returns False), start the next round at once otherwise."""
    while True:
        busy = False
        try:
            busy = await step()
        except asyncio.CancelledError:
            raise
        except Unavailable as exc:  # the database is down or restarting: one line, no traceback
            log.warning("%s: %s; retrying in %.0f s", name, exc.detail, interval)
        except Exception:
            log.exception("%s: round failed; retrying in %.0f s", name, interval)
        if not busy:
            await asyncio.sleep(interval)


class Duties:
    """The loops of one process, over the same services its requests use."""

    def __init__(
        self, jobs: JobService, sync: StatusSync, notices: WaitNotices, *, sweep_interval: float
    ) -> None:
        self._jobs = jobs
        self._sync = sync
        self._notices = notices
        self._sweep_interval = sweep_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        jobs = self._jobs
        sync = self._sync
        notices = self._notices

        async def sweep() -> bool:
            await jobs.sweep()
            await notices.run()  # users told why their job waits, if it waits for nobody
            return False

        async def dispatch() -> bool:
            return await sync.dispatch_due() > 0

        self._tasks.append(
            asyncio.create_task(every("sweeper", self._sweep_interval, sweep), name="sweeper")
        )
        if sync.enabled:
            self._tasks.append(
                asyncio.create_task(
                    every("dispatcher", DISPATCH_IDLE_SECONDS, dispatch), name="dispatcher"
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
