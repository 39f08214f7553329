"""A user-facing API for load runs: answers every ``PUT /_job_status`` with 200 and counts them;
``GET /_count`` returns the count. An aiohttp server: its CPU is measured apart from the
service's (the ``stub`` column), so it may cost what a real server costs.

    python benchmarks/upstream_stub.py PORT [--delay SECONDS]

``--delay`` makes every status answer wait that long (a slow upstream).
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web


def make_app(delay: float) -> web.Application:
    count = 0

    async def job_status(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        count += 1
        return web.Response(body=b"{}", content_type="application/json")

    async def counted(_: web.Request) -> web.Response:
        return web.Response(text=str(count))

    app = web.Application()
    app.router.add_put("/_job_status", job_status)
    app.router.add_get("/_count", counted)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        make_app(args.delay),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        backlog=1024,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
