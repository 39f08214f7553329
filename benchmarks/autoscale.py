"""A fleet simulator: two autoscaling policies replayed over one arrival trace, on the real core.

The trace holds jobs of two hardware classes, as DECODE submits them: many fits that need a GPU
of 16 000 MiB and run for minutes, and fewer trainings that need 80 000 MiB and run for tens of
minutes (log-normal durations; fits come in batches, a training alone). It is generated from
``--seed``, or read from ``--trace`` (JSON: a list of objects; CSV: a header line; both with
``arrival_s``, ``gpu_mem`` in MiB and ``duration_s``). Two node kinds can be started: small
(24 000 MiB of GPU) and large (80 000 MiB, the more expensive). A node becomes ready
``--startup`` seconds after it is requested, runs one job at a time, and stops once it has been
idle ``--idle-stop`` seconds. Every minute a policy decides how many nodes of each kind to
request; it never stops a node (nodes stop themselves when idle). The small pool holds at most
``--max-nodes`` nodes, the large one ``--max-large`` (the scarce, dear GPUs: trainings queue).

Both policies size a pool the same way, to its busy nodes plus a demand, at most its cap: they
request ``demand - (starting + idle ready nodes of the pool)`` more. They differ only in the
demand:

(a) queue length: the demand of *each* pool is the number of queued jobs. This is the usual setup
    for one work queue: the scaler (KEDA's queue-length scaler, a CloudWatch alarm on
    ``ApproximateNumberOfMessagesVisible``, an AWS Batch compute environment fed by one job
    queue) sees one number with no hardware in it, so every node group that serves the queue is
    scaled on that same number; it cannot know that a queued training will never run on a small
    node.
(b) demand by class: each pool is sized to the queued jobs a machine of its kind would run, as
    this service reports them to the scalers of docs/OPERATIONS.md (``GET /_demand`` with the
    kind's offer, ``core.demand.Demand.report(MachineOffer)``: the classes whose requirement the
    offer meets, by the pull's own rule). A training counts for the large pool only; a fit for
    both, as a large node would take it.

The core is driven as the service drives it: jobs are submitted to the in-memory queue
(``core.memory.InMemoryQueue``) at their arrival, time is a ``FakeClock``, and a ready idle node
pulls through the queue port (``record_seen``, then ``claim_jobs`` with one job at most), so the
service's own matching and hand-out order (oldest first) decide which node runs which job: a
large node may well take a fit. A node pulls when it becomes free and again after each new
arrival (nothing else can make a job fit it: nothing is re-queued here), instead of every few
seconds as the real worker does. Heartbeats, the sweeper and the upstream are not modelled.

Figures per policy: the backlog-clear time (first arrival until the last job finished), the
mean and p95 wait (arrival to pull), busy node-minutes (running a job), idle node-minutes (the
rest of a node's life, start-up and the idle grace included), their ratio, and node-minutes and
nodes started by kind. Simulated time only: no sleeping; the defaults run in under a second.

    uv run python benchmarks/autoscale.py [--seed 1] [--jobs 150] [--startup 240]
        [--idle-stop 300] [--max-nodes 20] [--max-large 4] [--trace FILE] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import enum
import heapq
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from workerfacing_api.core.clock import FakeClock  # noqa: E402
from workerfacing_api.core.demand import Demand, MachineOffer  # noqa: E402
from workerfacing_api.core.memory import InMemoryQueue  # noqa: E402
from workerfacing_api.core.model import (  # noqa: E402
    Environment,
    Job,
    JobStatus,
    Outcome,
    Submission,
    WorkerProfile,
)

MINUTE = 60.0
SCALE_INTERVAL = MINUTE  # the policies are evaluated every minute
FLEET_ACCOUNT = "cloud-fleet"  # cloud workers share one account; nodes differ by instance id


@dataclass(frozen=True)
class NodeKind:
    name: str
    cpu_cores: int
    memory: int  # MiB
    gpu_mem: int  # MiB
    gpu_model: str

    def profile(self, instance: str) -> WorkerProfile:
        """What a node of this kind offers at a pull (``instance`` tells nodes apart)."""
        return WorkerProfile(
            worker=FLEET_ACCOUNT,
            environment=Environment.CLOUD,
            cpu_cores=self.cpu_cores,
            memory=self.memory,
            gpu_mem=self.gpu_mem,
            gpu_model=self.gpu_model,
            instance=instance,
        )


SMALL = NodeKind("small", cpu_cores=8, memory=32_000, gpu_mem=24_000, gpu_model="A10G")
LARGE = NodeKind("large", cpu_cores=12, memory=128_000, gpu_mem=80_000, gpu_model="A100")
KINDS = (SMALL, LARGE)

FIT_GPU_MEM = 16_000
TRAIN_GPU_MEM = 80_000


class Policy(enum.StrEnum):
    QUEUE_LENGTH = "queue_length"
    CLASS_DEMAND = "class_demand"


@dataclass(frozen=True)
class TraceJob:
    arrival_s: float  # seconds from the trace's start
    gpu_mem: int  # MiB the job needs
    duration_s: float  # how long it runs once pulled


@dataclass(frozen=True)
class Config:
    startup_s: float = 240.0
    idle_stop_s: float = 300.0
    max_nodes: int = 20  # small nodes at most
    max_large: int = 4  # large nodes at most: the scarce, expensive GPUs


@dataclass(frozen=True)
class Run:
    """One job's run: which node took it, when."""

    job: int  # index in the trace
    node: str
    kind: str
    arrival_s: float
    start_s: float
    end_s: float


@dataclass
class Node:
    name: str
    kind: NodeKind
    requested_s: float
    profile: WorkerProfile
    ready: bool = False
    job: Job | None = None
    job_started_s: float = 0.0
    idle_since_s: float | None = None
    stopped_s: float | None = None
    busy_s: float = 0.0
    pulled_after: int = -1  # arrivals seen at its last pull that found nothing


@dataclass
class Result:
    policy: Policy
    trace: list[TraceJob] = field(repr=False)
    runs: list[Run]  # one per job, in trace order
    nodes: list[Node] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        first = min(r.arrival_s for r in self.runs)
        waits = sorted((r.start_s - r.arrival_s) / MINUTE for r in self.runs)
        lifetimes = {k.name: 0.0 for k in KINDS}
        started = {k.name: 0 for k in KINDS}
        for n in self.nodes:
            assert n.stopped_s is not None
            lifetimes[n.kind.name] += n.stopped_s - n.requested_s
            started[n.kind.name] += 1
        busy = sum(n.busy_s for n in self.nodes) / MINUTE
        idle = sum(lifetimes.values()) / MINUTE - busy
        by_class = {
            name: [
                (r.start_s - r.arrival_s) / MINUTE
                for r in self.runs
                if (self.trace[r.job].gpu_mem <= SMALL.gpu_mem) == small
            ]
            for name, small in (("fit", True), ("train", False))
        }
        return {
            # First arrival until the last job finished: nothing queued, nothing running.
            "clear_min": round((max(r.end_s for r in self.runs) - first) / MINUTE, 1),
            # First arrival until the last job was pulled: the queue empty after the last arrival.
            "queue_empty_min": round((max(r.start_s for r in self.runs) - first) / MINUTE, 1),
            "mean_wait_min": round(statistics.fmean(waits), 1),
            "p95_wait_min": round(waits[math.ceil(0.95 * len(waits)) - 1], 1),
            "mean_wait_min_by_class": {
                name: round(statistics.fmean(w), 1) if w else None for name, w in by_class.items()
            },
            "busy_node_min": round(busy),
            "idle_node_min": round(idle),
            "idle_per_busy": round(idle / busy, 2),
            "node_min": {k: round(v / MINUTE) for k, v in lifetimes.items()},
            "nodes_started": started,
            # Jobs a small node could have run that took a large one (oldest first, any fit).
            "small_jobs_on_large": sum(
                1
                for r in self.runs
                if r.kind == LARGE.name and self.trace[r.job].gpu_mem <= SMALL.gpu_mem
            ),
        }


# -- the trace ------------------------------------------------------------------------------------


def generate_trace(seed: int, jobs: int) -> list[TraceJob]:
    """DECODE-like arrivals: a submission every 2.5 min on average (exponential gaps); 40 % are a
    training (80 000 MiB, median 40 min), the rest a batch of 1-6 fits (16 000 MiB, median 6 min)
    submitted a few seconds apart."""
    rng = random.Random(seed)
    trace: list[TraceJob] = []
    at = 0.0
    while len(trace) < jobs:
        if trace:
            at += rng.expovariate(1 / 150)
        if rng.random() < 0.4:
            duration = min(
                max(rng.lognormvariate(math.log(40 * MINUTE), 0.35), 10 * MINUTE), 3 * 3600
            )
            trace.append(TraceJob(round(at, 1), TRAIN_GPU_MEM, round(duration, 1)))
            continue
        for _ in range(min(rng.randint(1, 6), jobs - len(trace))):
            duration = min(max(rng.lognormvariate(math.log(6 * MINUTE), 0.5), MINUTE), 3600)
            trace.append(TraceJob(round(at, 1), FIT_GPU_MEM, round(duration, 1)))
            at += rng.uniform(1, 10)
    return trace


def read_trace(path: Path) -> list[TraceJob]:
    """A trace from a JSON list of objects or a CSV file with a header line; raises ValueError
    or OSError with a message that names what is wrong."""
    text = path.read_text()
    rows: list[dict[str, Any]]
    if path.suffix.lower() == ".json":
        loaded = json.loads(text)
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            raise ValueError("a JSON trace is a list of objects")
        rows = loaded
    else:
        rows = list(csv.DictReader(text.splitlines()))
    trace = []
    for number, row in enumerate(rows, 1):
        try:
            job = TraceJob(
                float(row["arrival_s"]), int(float(row["gpu_mem"])), float(row["duration_s"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"job {number} needs numbers arrival_s, gpu_mem and duration_s ({exc!r})"
            ) from None
        if job.arrival_s < 0 or job.duration_s <= 0 or job.gpu_mem < 0:
            raise ValueError(f"job {number}: negative arrival or gpu_mem, or no duration")
        trace.append(job)
    return sorted(trace, key=lambda j: j.arrival_s)


def check_trace(trace: list[TraceJob]) -> None:
    """Raise ValueError when the trace is empty or holds a job no node kind can run (the
    simulation would never end)."""
    if not trace:
        raise ValueError("the trace holds no job")
    largest = max(k.gpu_mem for k in KINDS)
    too_big = [i for i, j in enumerate(trace, 1) if j.gpu_mem > largest]
    if too_big:
        raise ValueError(
            f"job {too_big[0]} needs more GPU memory than the largest node kind ({largest} MiB)"
        )


def _submission(index: int, job: TraceJob) -> Submission:
    """The job as the user-facing API submits it (cloud, only its GPU memory stated)."""
    entrypoint = "train" if job.gpu_mem > SMALL.gpu_mem else "fit"
    root = "s3://decode-user-data/alice"
    body = {
        "job": {
            "app": {"cmd": ["/docker/entrypoint.sh", f"--{entrypoint}"], "env": {}},
            "handler": {
                "image_url": "public.ecr.aws/decode/decode:v0_10_1",
                "image_name": "decode",
                "image_version": "v0_10_1",
                "entrypoint": entrypoint,
                "files_down": None,
                "files_up": {"log": "log", "artifact": "model"},
            },
            "meta": {"job_id": index + 1, "date_created": "2026-11-28T08:20:32.883437"},
            "hardware": {"gpu_mem": job.gpu_mem},
        },
        "environment": "cloud",
        "group": None,
        "priority": 0,
        "paths_upload": {k: f"{root}/{k}/job-{index + 1}" for k in ("output", "log", "artifact")},
    }
    return Submission.from_json(msgspec.json.encode(body))


# -- the simulation -------------------------------------------------------------------------------

# Events at one instant are handled in this order: finished jobs, nodes becoming ready and
# arrivals first, then the free nodes pull, then nodes idle for the grace period stop (a job that
# arrives at that very instant is taken first), and last the scaler looks at what is still queued.
_FINISH, _READY, _ARRIVE, _IDLE_CHECK, _SCALE = range(5)


class _Fleet:
    def __init__(self, trace: list[TraceJob], policy: Policy, config: Config) -> None:
        self.trace = trace
        self.policy = policy
        self.config = config
        self.clock = FakeClock()
        self.start = self.clock.now()
        self.queue = InMemoryQueue()
        # The kinds the scaler can start, recorded as nodes "seen" (an in-memory worker registry
        # of their own): ``class_demand`` judges each class against their offers, so a class is
        # placed before any node of its kind exists. The fleet's real nodes are in ``queue``.
        # No node is "seen" by the demand: the scaler asks what a machine of each kind would run.
        self.demand = Demand(self.queue, InMemoryQueue(), self.clock, seen_window=3600.0)
        self.events: list[tuple[float, int, int, Any]] = []
        self.order = 0
        self.nodes: list[Node] = []
        self.runs: list[Run] = []
        self.trace_index: dict[int, int] = {}  # queue id -> trace index
        self.arrived = 0
        self.finished = 0

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def schedule(self, seconds: float, kind: int, payload: Any = None) -> None:
        self.order += 1
        heapq.heappush(self.events, (seconds, kind, self.order, payload))

    async def run(self) -> Result:
        for index, arrival in enumerate(self.trace):
            self.schedule(arrival.arrival_s, _ARRIVE, index)
        first = self.trace[0].arrival_s
        self.schedule(math.ceil(first / SCALE_INTERVAL) * SCALE_INTERVAL, _SCALE)
        while self.events:
            now_s = self.events[0][0]
            self.clock.set(self.at(now_s))
            batch = []
            while self.events and self.events[0][0] == now_s:
                batch.append(heapq.heappop(self.events))
            for _, kind, _, payload in batch:
                if kind == _FINISH:
                    await self.finish(payload, now_s)
                elif kind == _READY:
                    payload.ready = True
                    self.free(payload, now_s)
                elif kind == _ARRIVE:
                    queued, _ = await self.queue.add(
                        _submission(payload, self.trace[payload]), self.clock.now()
                    )
                    self.trace_index[queued.id] = payload
                    self.arrived += 1
            await self.pulls(now_s)
            for _, kind, _, payload in batch:
                if kind == _IDLE_CHECK:
                    node, since = payload
                    if node.job is None and node.idle_since_s == since:
                        node.stopped_s = now_s
            if any(kind == _SCALE for _, kind, _, _ in batch):
                await self.scale(now_s)
                if self.finished < len(self.trace):
                    self.schedule(now_s + SCALE_INTERVAL, _SCALE)
        return Result(self.policy, self.trace, sorted(self.runs, key=lambda r: r.job), self.nodes)

    def free(self, node: Node, now_s: float) -> None:
        node.idle_since_s = now_s
        node.pulled_after = -1
        self.schedule(now_s + self.config.idle_stop_s, _IDLE_CHECK, (node, now_s))

    async def finish(self, node: Node, now_s: float) -> None:
        assert node.job is not None
        await self.queue.record_update(
            node.job,
            JobStatus.FINISHED,
            None,
            self.clock.now(),
            forward=False,
            ended=Outcome.FINISHED,
        )
        index = self.trace_index[node.job.id]
        self.runs.append(
            Run(
                job=index,
                node=node.name,
                kind=node.kind.name,
                arrival_s=self.trace[index].arrival_s,
                start_s=node.job_started_s,
                end_s=now_s,
            )
        )
        node.busy_s += now_s - node.job_started_s
        node.job = None
        self.finished += 1
        self.free(node, now_s)

    async def pulls(self, now_s: float) -> None:
        """Every ready idle node that has not looked since the last arrival pulls, as the
        service's ``JobService.pull`` does: note the node seen, claim at most one job."""
        now = self.clock.now()
        for node in self.nodes:
            if not node.ready or node.stopped_s is not None or node.job is not None:
                continue
            if node.pulled_after == self.arrived:
                continue
            await self.queue.record_seen(node.profile, now)
            claimed = await self.queue.claim_jobs(
                node.profile, 1, now, exclude_attempted=False, max_held=1, lease=False
            )
            if not claimed:
                node.pulled_after = self.arrived
                continue
            committed = await self.queue.record_update(
                claimed[0].job, JobStatus.RUNNING, None, now, forward=False
            )
            assert committed is not None
            node.job = committed.job
            node.job_started_s = now_s
            node.idle_since_s = None
            duration = self.trace[self.trace_index[node.job.id]].duration_s
            self.schedule(now_s + duration, _FINISH, node)

    async def pool_demand(self) -> dict[str, int]:
        """Queued jobs each pool is asked to serve, under the policy."""
        if self.policy is Policy.QUEUE_LENGTH:
            queued = (await self.queue.stats(self.clock.now())).by_status[JobStatus.QUEUED]
            return {k.name: queued for k in KINDS}
        wanted = {}
        for kind in KINDS:
            # GET /_demand?environment=cloud&memory=…&gpu_mem=…: what the recipes' scalers read.
            report = await self.demand.report(_machine_offer(kind))
            wanted[kind.name] = report.queued
        return wanted

    async def scale(self, now_s: float) -> None:
        wanted = await self.pool_demand()
        for kind in KINDS:
            alive = [n for n in self.nodes if n.kind is kind and n.stopped_s is None]
            busy = sum(1 for n in alive if n.job is not None)
            cap = self.config.max_large if kind is LARGE else self.config.max_nodes
            target = min(busy + wanted[kind.name], cap)
            for _ in range(target - len(alive)):
                name = f"{kind.name}-{sum(1 for n in self.nodes if n.kind is kind) + 1:03d}"
                node = Node(name, kind, now_s, kind.profile(name))
                self.nodes.append(node)
                self.schedule(now_s + self.config.startup_s, _READY, node)


def _machine_offer(kind: NodeKind) -> MachineOffer:
    return MachineOffer(
        environment=Environment.CLOUD,
        cpu_cores=kind.cpu_cores,
        memory=kind.memory,
        gpu_mem=kind.gpu_mem,
        gpu_model=kind.gpu_model,
    )


def simulate(trace: list[TraceJob], policy: Policy, config: Config | None = None) -> Result:
    """Replay ``trace`` under ``policy``; every job runs once and every node stops at the end."""
    check_trace(trace)
    return asyncio.run(_Fleet(trace, policy, config or Config()).run())


# -- the command ----------------------------------------------------------------------------------

_ROWS = (
    ("backlog clear: last job done (min)", "clear_min"),
    ("queue empty after last arrival (min)", "queue_empty_min"),
    ("mean wait (min)", "mean_wait_min"),
    ("p95 wait (min)", "p95_wait_min"),
    ("busy node-min", "busy_node_min"),
    ("idle node-min (with start-up)", "idle_node_min"),
    ("idle per busy node-min", "idle_per_busy"),
)
_LABELS = {Policy.QUEUE_LENGTH: "(a) queue length", Policy.CLASS_DEMAND: "(b) demand by class"}


def compare(trace: list[TraceJob], config: Config) -> dict[str, Any]:
    """Both policies over ``trace``, with the issue's acceptance test: (b) clears no slower than
    (a) with at most half its idle node-minutes."""
    figures = {p.value: simulate(trace, p, config).summary() for p in Policy}
    a, b = figures[Policy.QUEUE_LENGTH], figures[Policy.CLASS_DEMAND]
    return {
        "policies": figures,
        "acceptance": {
            "clears_no_slower": b["clear_min"] <= a["clear_min"],
            "idle_at_most_half": b["idle_node_min"] <= a["idle_node_min"] / 2,
        },
    }


def table(figures: dict[str, Any]) -> str:
    policies = figures["policies"]
    rows = [(label, *(str(policies[p.value][key]) for p in Policy)) for label, key in _ROWS]
    for what, key in (
        ("mean wait (min) of a", "mean_wait_min_by_class"),
        ("node-min", "node_min"),
        ("nodes started", "nodes_started"),
    ):
        keys = list(policies[Policy.QUEUE_LENGTH.value][key])
        rows += [(f"{what} {k}", *(str(policies[p.value][key][k]) for p in Policy)) for k in keys]
    rows.append(
        (
            "fits run on large nodes",
            *(str(policies[p.value]["small_jobs_on_large"]) for p in Policy),
        )
    )
    head = ("", *(_LABELS[p] for p in Policy))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in (head, *rows)
    ]
    verdict = figures["acceptance"]
    lines.append(
        f"(b) clears no slower than (a): {'yes' if verdict['clears_no_slower'] else 'no'}; "
        f"(b) idles at most half of (a): {'yes' if verdict['idle_at_most_half'] else 'no'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="autoscale.py",
        description="Replay a job arrival trace on a simulated GPU fleet under two autoscaling "
        "policies, (a) by total queue length and (b) by demand per hardware class, and print "
        "the backlog-clear time, waits and node-minutes of each.",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated trace (1)")
    parser.add_argument("--jobs", type=int, default=150, help="jobs in the generated trace (150)")
    parser.add_argument("--trace", type=Path, help="read the trace from this JSON or CSV file")
    parser.add_argument(
        "--startup", type=float, default=240.0, help="seconds from request to ready (240)"
    )
    parser.add_argument(
        "--idle-stop", type=float, default=300.0, help="seconds idle before a node stops (300)"
    )
    parser.add_argument("--max-nodes", type=int, default=20, help="small nodes at most (20)")
    parser.add_argument("--max-large", type=int, default=4, help="large nodes at most (4)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="replay the traces of this many seeds from --seed on, and judge their totals (1)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.jobs, args.max_nodes, args.max_large, args.seeds) < 1:
        parser.error("--jobs, --max-nodes, --max-large and --seeds must be at least 1")
    if min(args.startup, args.idle_stop) < 0:
        parser.error("--startup and --idle-stop must be at least 0")
    if args.seeds > 1 and args.trace is not None:
        parser.error("--seeds replays generated traces; it cannot go with --trace")
    if args.trace is not None:
        try:
            trace = read_trace(args.trace)
        except (OSError, ValueError) as exc:
            parser.error(f"{args.trace}: {exc.strerror if isinstance(exc, OSError) else exc}")
    else:
        trace = generate_trace(args.seed, args.jobs)
    try:
        check_trace(trace)
    except ValueError as exc:
        parser.error(str(exc))
    config = Config(
        startup_s=args.startup,
        idle_stop_s=args.idle_stop,
        max_nodes=args.max_nodes,
        max_large=args.max_large,
    )
    if args.seeds > 1:
        return _several(range(args.seed, args.seed + args.seeds), args.jobs, config, args.json)
    figures = {
        "parameters": {
            "seed": None if args.trace else args.seed,
            "trace": str(args.trace) if args.trace else None,
            "jobs": len(trace),
            "large_jobs": sum(1 for j in trace if j.gpu_mem > SMALL.gpu_mem),
            "startup_s": config.startup_s,
            "idle_stop_s": config.idle_stop_s,
            "max_small_nodes": config.max_nodes,
            "max_large_nodes": config.max_large,
            "arrivals_span_min": round((trace[-1].arrival_s - trace[0].arrival_s) / MINUTE, 1),
            "longest_job_min": round(max(j.duration_s for j in trace) / MINUTE, 1),
        },
        **compare(trace, config),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        p = figures["parameters"]
        print(
            f"{p['jobs']} jobs ({p['large_jobs']} large) arriving over {p['arrivals_span_min']} "
            f"min, longest {p['longest_job_min']} min; start-up {config.startup_s:g} s, idle stop "
            f"{config.idle_stop_s:g} s, at most {config.max_nodes} small and "
            f"{config.max_large} large nodes"
        )
        print(table(figures))
    return 0


def _several(seeds: range, jobs: int, config: Config, as_json: bool) -> int:
    """Each seed's trace under both policies, and the acceptance test on their totals: one
    trace's clear time also depends on which node happens to free first for its last jobs."""
    runs = {seed: compare(generate_trace(seed, jobs), config) for seed in seeds}
    totals = {
        p.value: {
            key: round(sum(r["policies"][p.value][key] for r in runs.values()), 1)
            for key in ("clear_min", "idle_node_min", "busy_node_min")
        }
        for p in Policy
    }
    a, b = totals[Policy.QUEUE_LENGTH.value], totals[Policy.CLASS_DEMAND.value]
    verdict = {
        "clears_no_slower": b["clear_min"] <= a["clear_min"],
        "idle_at_most_half": b["idle_node_min"] <= a["idle_node_min"] / 2,
    }
    if as_json:
        print(json.dumps({"runs": runs, "totals": totals, "acceptance": verdict}))
        return 0
    for seed, r in runs.items():
        fa, fb = (r["policies"][p.value] for p in Policy)
        print(
            f"seed {seed}: clear (a) {fa['clear_min']} / (b) {fb['clear_min']} min; idle (a) "
            f"{fa['idle_node_min']} / (b) {fb['idle_node_min']} node-min"
        )
    print(
        f"totals over {len(runs)} traces: clear (a) {a['clear_min']} / (b) {b['clear_min']} min; "
        f"idle (a) {a['idle_node_min']} / (b) {b['idle_node_min']} node-min "
        f"({b['idle_node_min'] / a['idle_node_min']:.0%})"
    )
    print(
        f"(b) clears no slower than (a): {'yes' if verdict['clears_no_slower'] else 'no'}; "
        f"(b) idles at most half of (a): {'yes' if verdict['idle_at_most_half'] else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
