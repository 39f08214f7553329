"""Prometheus metrics (``prometheus-client``): the counters the core increments through the
``Metrics`` port, request latency per route, and the gauges read from the queue at each scrape.

Names and labels follow Prometheus' conventions (``workerfacing_…_total`` for counters,
``…_seconds`` for times); every label takes a bounded set of values — route templates, methods,
status codes, outcomes — never a job id or a worker name. Each process keeps its own registry
and serves its own figures: with several processes, scrape each one (docs/OPERATIONS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from workerfacing_api.core.demand import ClassDemand
from workerfacing_api.core.model import Delivery, QueueStats, WorkerRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latency buckets, in seconds: the pulls and updates of a healthy service take a few
# milliseconds, an upload or a slow database takes seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics:
    """Implements the core's ``Metrics`` and ``MetricsReport`` ports, and observes the HTTP
    layer's requests (``observe_request``)."""

    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._pulls = Counter(
            "workerfacing_pulls", "Pulls (GET /jobs) by outcome", ["outcome"], registry=r
        )
        self._pulls_with_job = self._pulls.labels("job")
        self._pulls_empty = self._pulls.labels("empty")
        self._jobs_pulled = Counter(
            "workerfacing_jobs_pulled", "Jobs handed out to workers", registry=r
        )
        self._updates = Counter(
            "workerfacing_status_updates",
            "Workers' status reports and keep-alives by outcome",
            ["outcome"],
            registry=r,
        )
        self._update_outcomes = {
            o: self._updates.labels(o) for o in ("accepted", "not_found", "conflict", "invalid")
        }
        self._deliveries = Counter(
            "workerfacing_upstream_deliveries",
            "Messages to the user-facing API by its answer",
            ["outcome"],
            registry=r,
        )
        self._delivery_outcomes = {d: self._deliveries.labels(d.value) for d in Delivery}
        self._sweeps = Counter("workerfacing_sweeps", "Sweeps for silent jobs", registry=r)
        taken_back = Counter(
            "workerfacing_jobs_taken_back",
            "Jobs the sweep took back from silent workers, by what became of them",
            ["reason"],
            registry=r,
        )
        self._requeued = taken_back.labels("requeued")
        self._failed = taken_back.labels("failed")
        self._set_aside = Counter(
            "workerfacing_workers_set_aside", "Decisions to set a worker aside", registry=r
        )
        self._latency = Histogram(
            "workerfacing_http_request_duration_seconds",
            "HTTP request duration by route template",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._requests = Counter(
            "workerfacing_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        # Children by label values, so that a request costs two dictionary lookups, not the
        # client library's label validation.
        self._latency_children: dict[tuple[str, str], Histogram] = {}
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        # Read from the queue at each scrape.
        self._jobs = Gauge("workerfacing_jobs", "Jobs by state", ["state"], registry=r)
        self._oldest_queued = Gauge(
            "workerfacing_oldest_queued_job_age_seconds",
            "Age of the oldest queued job (0 when none waits)",
            registry=r,
        )
        self._outbox = Gauge(
            "workerfacing_outbox_events", "Status events not yet delivered upstream", registry=r
        )
        self._outbox_age = Gauge(
            "workerfacing_outbox_oldest_event_age_seconds",
            "Age of the oldest undelivered status event (0 when none)",
            registry=r,
        )
        self._workers_seen = Gauge(
            "workerfacing_workers_seen",
            "Worker nodes (account, address, hardware, instance id) that pulled within "
            "WORKER_SEEN_WINDOW",
            registry=r,
        )
        self._workers_aside = Gauge(
            "workerfacing_workers_set_aside_now",
            "Worker nodes seen within WORKER_SEEN_WINDOW that are set aside now",
            registry=r,
        )
        # Demand by hardware class (core.demand), for an autoscaler: one series per class that has
        # queued jobs, labelled by its requirement ("" or 0: anything).
        labels = ("environment", "cpu_cores", "memory_mib", "gpu_mem_mib", "gpu_model", "gpu_archi")
        self._demand_queued = Gauge(
            "workerfacing_demand_queued_jobs",
            "Queued jobs of a hardware class",
            labels,
            registry=r,
        )
        self._demand_unrunnable = Gauge(
            "workerfacing_demand_unrunnable_jobs",
            "Queued jobs of a hardware class that no node seen within WORKER_SEEN_WINDOW can run",
            labels,
            registry=r,
        )
        self._demand_wait = Gauge(
            "workerfacing_demand_oldest_wait_seconds",
            "How long the oldest queued job of a hardware class has waited",
            labels,
            registry=r,
        )
        self._demand_fitting = Gauge(
            "workerfacing_demand_fitting_nodes",
            "Nodes seen within WORKER_SEEN_WINDOW that could run a hardware class's jobs",
            labels,
            registry=r,
        )
        self._pool = Gauge(
            "workerfacing_db_pool_connections",
            "Connections of this process's database pool",
            ["state"],
            registry=r,
        )

    # -- the core's Metrics port ----------------------------------------------------------------

    def pulled(self, jobs: int) -> None:
        if jobs:
            self._pulls_with_job.inc()
            self._jobs_pulled.inc(jobs)
        else:
            self._pulls_empty.inc()

    def status_update(self, outcome: str) -> None:
        self._update_outcomes[outcome].inc()

    def delivered(self, outcome: Delivery) -> None:
        self._delivery_outcomes[outcome].inc()

    def swept(self, requeued: int, failed: int) -> None:
        self._sweeps.inc()
        if requeued:
            self._requeued.inc(requeued)
        if failed:
            self._failed.inc(failed)

    def set_aside(self) -> None:
        self._set_aside.inc()

    # -- the HTTP layer ---------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is its template (bounded), never the raw path."""
        latency = self._latency_children.get((route, method))
        if latency is None:
            latency = self._latency_children[(route, method)] = self._latency.labels(route, method)
        latency.observe(seconds)
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(
                route, method, str(status)
            )
        counter.inc()

    # -- a scrape ---------------------------------------------------------------------------------

    def render(
        self,
        stats: QueueStats,
        workers: Sequence[WorkerRecord],
        connections: tuple[int, int] | None,
        now: datetime,
        demand: Sequence[ClassDemand] = (),
    ) -> bytes:
        """The text exposition, with the gauges set from what was just read."""
        gauges = (
            self._demand_queued,
            self._demand_unrunnable,
            self._demand_wait,
            self._demand_fitting,
        )
        for gauge in gauges:
            gauge.clear()  # classes no longer queued leave no stale series
        for c in demand:
            key = (
                c.environment,
                str(c.cpu_cores),
                str(c.memory),
                str(c.gpu_mem),
                c.gpu_model or "",
                c.gpu_archi or "",
            )
            self._demand_queued.labels(*key).set(c.queued)
            self._demand_unrunnable.labels(*key).set(c.no_node_can_run)
            self._demand_wait.labels(*key).set(c.oldest_wait_seconds)
            self._demand_fitting.labels(*key).set(c.fitting_nodes_seen)
        for state, count in stats.by_status.items():
            self._jobs.labels(state).set(count)
        self._oldest_queued.set(stats.oldest_queued_age or 0.0)
        self._outbox.set(stats.outbox_backlog)
        self._outbox_age.set(stats.oldest_event_age or 0.0)
        self._workers_seen.set(len(workers))
        self._workers_aside.set(sum(1 for w in workers if w.aside(now)))
        if connections is not None:
            self._pool.labels("in_use").set(connections[0])
            self._pool.labels("idle").set(connections[1])
        return generate_latest(self.registry)
