"""Client CPU per upstream call: N sequential ``PUT /_job_status`` through ``HttpUpstream`` to
``benchmarks/upstream_stub.py`` (another process, so its CPU is not counted) on 127.0.0.1, on
uvloop as the service runs. Prints the client's CPU time (``time.process_time``) per call, with
the part spent in the kernel (the loopback send and receive), median and lowest of the rounds,
and the wall time per call.

With ``--also``, other clients are measured in alternating rounds in the same process, so that
load from elsewhere on the machine falls on all of them alike: ``plain`` (aiohttp used the
obvious way: ``json=``, a per-call ``ClientTimeout``, the body read), ``plain-trust-env`` (the
same with ``trust_env=True``), or a Python file defining another ``HttpUpstream``, e.g. the
hand-written client this project used before aiohttp:

    uv run python benchmarks/upstream_client.py [--calls 2000] [--rounds 15]
    git show 63701c9:src/workerfacing_api/adapters/upstream/http.py > /tmp/old_http.py
    uv run python benchmarks/upstream_client.py --also plain --also /tmp/old_http.py
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from workerfacing_api.core.model import Delivery, JobStatus, StatusEvent  # noqa: E402

EVENT = StatusEvent(
    id=1,
    job_id=1,
    upstream_id=1234,
    status=JobStatus.RUNNING,
    runtime_details=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PlainAiohttp:
    """aiohttp used the obvious way, for comparison; maps the answer like ``HttpUpstream``."""

    def __init__(self, base_url: str, api_key: str, *, trust_env: bool) -> None:
        self._url = base_url + "/_job_status"
        self._api_key = api_key
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None

    async def notify(self, event: StatusEvent, within: float) -> Delivery:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=self._trust_env)
        body = {
            "job_id": event.upstream_id,
            "status": event.status.value,
            "runtime_details": event.runtime_details or "",
        }
        try:
            async with self._session.put(
                self._url,
                json=body,
                headers={"x-api-key": self._api_key},
                timeout=aiohttp.ClientTimeout(total=within),
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return Delivery.RETRY
        if 200 <= response.status < 300:
            return Delivery.DELIVERED
        return Delivery.GONE if response.status == 404 else Delivery.RETRY

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_client(name: str, url: str) -> Any:
    if name == "adapter":
        from workerfacing_api.adapters.upstream.http import HttpUpstream

        return HttpUpstream(url, "bench-key")
    if name in ("plain", "plain-trust-env"):
        return PlainAiohttp(url, "bench-key", trust_env=name == "plain-trust-env")
    spec = importlib.util.spec_from_file_location("upstream_under_test", name)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{name}: not a client name or a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HttpUpstream(url, "bench-key")


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the upstream stub did not listen on 127.0.0.1:{port}")


@dataclass
class Round:
    cpu: float  # time.process_time per call: user + system
    system: float  # of which in the kernel (the loopback TCP send and receive)
    wall: float


async def one_round(client: Any, calls: int) -> Round:
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        if await client.notify(EVENT, 5) is not Delivery.DELIVERED:
            raise SystemExit("the stub did not answer 2xx")
    return Round(
        cpu=(time.process_time() - cpu) / calls,
        system=(resource.getrusage(resource.RUSAGE_SELF).ru_stime - system) / calls,
        wall=(time.perf_counter() - wall) / calls,
    )


async def measure(names: list[str], url: str, calls: int, rounds: int) -> dict[str, list[Round]]:
    clients = {name: make_client(name, url) for name in names}
    results: dict[str, list[Round]] = {name: [] for name in names}
    try:
        for client in clients.values():
            for _ in range(200):  # warm-up: connection opened, caches filled
                assert await client.notify(EVENT, 5) is Delivery.DELIVERED
        for _ in range(rounds):
            for name, client in clients.items():
                results[name].append(await one_round(client, calls))
    finally:
        for client in clients.values():
            await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        help="plain, plain-trust-env or a Python file defining HttpUpstream",
    )
    args = parser.parse_args()
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "upstream_stub.py"), str(port)]
    )
    try:
        wait_listening(port)
        results = uvloop.run(
            measure(["adapter", *args.also], f"http://127.0.0.1:{port}", args.calls, args.rounds)
        )
    finally:
        stub.terminate()
        stub.wait()
    print(f"{args.rounds} rounds of {args.calls} sequential PUTs each; client CPU per call:")
    for name, rounds in results.items():
        cpu = sorted(r.cpu * 1e6 for r in rounds)
        kernel = statistics.median(r.system for r in rounds) * 1e6
        wall = statistics.median(r.wall for r in rounds) * 1e6
        print(
            f"  {name}: median {statistics.median(cpu):.0f} us (kernel {kernel:.0f} us), "
            f"lowest {cpu[0]:.0f} us; wall {wall:.0f} us/call"
        )


if __name__ == "__main__":
    main()
