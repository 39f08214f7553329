"""A stand-in for the user-facing API's ``PUT /_job_status``, run as its own process on loopback.

Every accepted call is appended to a JSON-lines file, so the record survives a restart of this
process. ``POST /_control`` switches behaviour: ``{"mode": "up" | "down"}`` (down answers 503),
``{"gone": [meta job ids]}`` (answered 404, as for jobs the user deleted), ``{"delay": seconds}``
(every answer takes that long: a slow upstream).

    python -m tests.fakes.upstream --port 8123 --api-key KEY --record events.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web


def make_app(api_key: str, record: Path) -> web.Application:
    state: dict[str, Any] = {"mode": "up", "gone": set(), "delay": 0.0}
    sink = record.open("a", buffering=1)

    async def job_status(request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != api_key:
            return web.json_response({"detail": "bad key"}, status=401)
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        if state["mode"] == "down":
            return web.json_response({"detail": "down"}, status=503)
        body = await request.json()
        if body.get("job_id") in state["gone"]:
            return web.json_response({"detail": "Job not found"}, status=404)
        if set(body) != {"job_id", "status", "runtime_details"}:
            return web.json_response({"detail": f"bad body {body}"}, status=422)
        sink.write(json.dumps({**body, "at": time.time()}) + "\n")
        return web.json_response(body["status"])

    async def control(request: web.Request) -> web.Response:
        change = await request.json()
        if "mode" in change:
            state["mode"] = change["mode"]
        if "gone" in change:
            state["gone"] = set(change["gone"])
        if "delay" in change:
            state["delay"] = float(change["delay"])
        return web.json_response({"mode": state["mode"], "gone": sorted(state["gone"])})

    app = web.Application()
    app.router.add_put("/_job_status", job_status)
    app.router.add_post("/_control", control)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.api_key, args.record),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
