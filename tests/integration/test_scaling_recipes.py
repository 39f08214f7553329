"""The scaling recipes of docs/OPERATIONS.md ("Scaling the fleet on demand"), each run here: the
KEDA block as KEDA's ``metrics-api`` scaler would use it, against the app in this process; the
CloudWatch publisher as the real command against a real moto server. And the machine-kind filter
of the demand they rest on, over the in-memory model, SQLite and PostgreSQL, judged by a reading
of the design written out here (not by ``core.matching``)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from devtools.aws_local import CREDENTIALS, REGION, MotoServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.inprocess import API_KEY, Api
from tests.integration.conftest import Server, free_port
from tests.queues import Queue, at, submission, worker
from workerfacing_api.adapters.cloudwatch import BATCH, CloudWatchDemand
from workerfacing_api.core.clock import FakeClock
from workerfacing_api.core.demand import ClassDemand, Demand, DemandReport, MachineOffer
from workerfacing_api.core.model import Environment

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"
SECTION = "## Scaling the fleet on demand"


# -- a reading of the design: which jobs a machine kind runs ------------------------------------


def runs_on(environment: str | None, need: dict[str, Any], offer: dict[str, Any]) -> bool:
    """ARCHITECTURE §3 read out: the job's environment is the machine's or any; every number it
    asks for at most the machine's; every name it asks for the machine's exactly."""
    if environment is not None and environment != offer["environment"]:
        return False
    for key in ("cpu_cores", "memory", "gpu_mem"):
        if need.get(key) is not None and need[key] > offer[key]:
            return False
    return all(
        need.get(key) is None or need[key] == offer.get(key) for key in ("gpu_model", "gpu_archi")
    )


def class_of(c: ClassDemand) -> tuple[str | None, dict[str, Any]]:
    """A class of the report as the requirement its jobs state."""
    need = {
        "cpu_cores": c.cpu_cores or None,
        "memory": c.memory or None,
        "gpu_mem": c.gpu_mem or None,
        "gpu_model": c.gpu_model,
        "gpu_archi": c.gpu_archi,
    }
    return (None if c.environment == "any" else c.environment), need


# -- KEDA: the block of OPERATIONS.md, asked as the metrics-api scaler asks ---------------------


def keda_documents() -> list[dict[str, Any]]:
    text = OPERATIONS.read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    (block,) = [b for b in blocks if "kind: ScaledObject" in b]
    return [d for d in yaml.safe_load_all(block) if d]


async def keda_request(api: Api, secrets: dict[str, dict[str, str]]) -> tuple[httpx.Response, str]:
    """The scaler's request: the trigger's URL, with the key from the TriggerAuthentication's
    secret in the header it names; and the trigger's ``valueLocation``."""
    documents = keda_documents()
    (scaled,) = [d for d in documents if d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    meta = trigger["metadata"]
    assert (meta["authMode"], meta.get("method", "header")) == ("apiKey", "header")
    auth_name = trigger["authenticationRef"]["name"]
    (auth,) = [
        d
        for d in documents
        if d["kind"] == "TriggerAuthentication" and d["metadata"]["name"] == auth_name
    ]
    (ref,) = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "apiKey"]
    key = secrets[ref["name"]][ref["key"]]
    url = urlsplit(meta["url"])
    answer = await api.client.get(
        f"{url.path}?{url.query}", headers={meta.get("keyParamName", "X-API-KEY"): key}
    )
    return answer, meta["valueLocation"]


async def keda_reading(api: Api, secrets: dict[str, dict[str, str]]) -> float:
    """What the scaler reads: the number at ``valueLocation`` (a dotted path) of the answer."""
    answer, location = await keda_request(api, secrets)
    assert answer.status_code == 200, answer.text
    value: Any = answer.json()
    for step in location.split("."):
        value = value[step]
    assert isinstance(value, int | float), value
    return float(value)


def keda_offer() -> dict[str, Any]:
    """The machine kind the documented trigger asks about, with a pull's defaults."""
    (scaled,) = [d for d in keda_documents() if d["kind"] == "ScaledObject"]
    query = {
        k: v[0]
        for k, v in parse_qs(
            urlsplit(scaled["spec"]["triggers"][0]["metadata"]["url"]).query
        ).items()
    }
    return {
        "environment": query.get("environment", "cloud"),
        "cpu_cores": int(query.get("cpu_cores", 1)),
        "memory": int(query["memory"]),
        "gpu_mem": int(query.get("gpu_mem", query.get("gpu_memory", 0))),
        "gpu_model": query.get("gpu_model"),
        "gpu_archi": query.get("gpu_archi"),
    }


# Jobs of several classes: (environment, hardware asked for).
QUEUE: list[tuple[str | None, dict[str, Any]]] = [
    ("cloud", {"gpu_mem": 16000}),
    ("cloud", {"gpu_mem": 16000}),
    (None, {}),
    ("cloud", {"memory": 64000, "cpu_cores": 8, "gpu_mem": 24000}),
    ("cloud", {"gpu_mem": 80000}),
    ("local", {}),
    ("cloud", {"cpu_cores": 16}),
    ("cloud", {"gpu_model": "NVIDIA A100-SXM4-80GB"}),
    ("cloud", {"memory": 256000}),
]


async def test_the_keda_recipe_reads_the_queued_jobs_its_machine_kind_can_run(api: Api) -> None:
    secrets = {"workerfacing-api-key": {"key": API_KEY}}
    # An empty queue reads 0 (KEDA scales to zero on it), not a missing value.
    assert await keda_reading(api, secrets) == 0
    for n, (environment, need) in enumerate(QUEUE, start=1):
        await api.submit(n, environment=environment, hardware=need)
    offer = keda_offer()
    expected = sum(runs_on(environment, need, offer) for environment, need in QUEUE)
    assert expected == 4  # the documented machine runs some of the queue, not all, not none
    assert await keda_reading(api, secrets) == expected
    # A job such a machine runs, pulled by one: one fewer waits.
    cloud = api.auth("gpu24-1", ("workers", "cloud"))
    pulled = await api.client.get(
        "/jobs",
        params={"memory": 64000, "cpu_cores": 8, "gpu_mem": 24000, "limit": 1},
        headers=cloud,
    )
    assert len(pulled.json()) == 1, pulled.text
    assert await keda_reading(api, secrets) == expected - 1
    # A wrong key is refused, not read as 0.
    refused, _ = await keda_request(api, {"workerfacing-api-key": {"key": "not-the-key"}})
    assert refused.status_code == 401


# -- the filter itself, over every backend --------------------------------------------------------

NEEDS = st.fixed_dictionaries(
    {},
    optional={
        "gpu_mem": st.sampled_from([8000, 24000, 80000]),
        "memory": st.sampled_from([16000, 64000]),
        "gpu_model": st.sampled_from(["RTX", "A100"]),
        "gpu_archi": st.sampled_from(["sm_80", "sm_86"]),
        "cpu_cores": st.sampled_from([4, 16]),
    },
)
OFFERS = st.fixed_dictionaries(
    {
        "environment": st.sampled_from(["cloud", "local"]),
        "cpu_cores": st.sampled_from([1, 4, 16]),
        "memory": st.sampled_from([0, 16000, 64000]),
        "gpu_mem": st.sampled_from([0, 8000, 24000, 80000]),
        "gpu_model": st.sampled_from([None, "RTX", "A100"]),
        "gpu_archi": st.sampled_from([None, "sm_80"]),
    }
)
Example = tuple[list[tuple[dict[str, Any], str | None]], dict[str, Any]]


def drawn(count: int) -> list[Example]:
    examples: list[Example] = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        jobs=st.lists(
            st.tuples(NEEDS, st.sampled_from([None, "local", "cloud"])), min_size=0, max_size=10
        ),
        offer=OFFERS,
    )
    def draw(jobs: list[tuple[dict[str, Any], str | None]], offer: dict[str, Any]) -> None:
        examples.append((jobs, offer))

    draw()
    return examples


async def test_with_an_offer_the_report_holds_exactly_the_classes_that_machine_runs(
    queue: Queue,
) -> None:
    upstream_id = 0
    for n, (jobs, offer) in enumerate(drawn(20)):
        base = 10_000 * n
        added = []
        for need, environment in jobs:
            upstream_id += 1
            job, _ = await queue.add(
                submission(upstream_id, hardware=need, environment=environment), at(base)
            )
            added.append((job.id, environment, need))
        # A node seen that fits nothing in particular: the filter is on the offer, not on it.
        await queue.record_seen(worker(f"n{n}", cpu_cores=1, memory=1, gpu_mem=0), at(base + 1))
        demand = Demand(queue, queue, FakeClock(at(base + 100)), seen_window=900)
        whole = await demand.report()
        report = await demand.report(
            MachineOffer(**{**offer, "environment": Environment(offer["environment"])})
        )
        assert report.offer is not None
        assert report.offer.memory == offer["memory"]
        expected = [c for c in whole.classes if runs_on(*class_of(c), offer)]
        assert sorted(msgspec_key(c) for c in report.classes) == sorted(
            msgspec_key(c) for c in expected
        ), (jobs, offer)
        runnable = sum(runs_on(environment, need, offer) for _, environment, need in added)
        assert report.queued == runnable  # 0 when it runs none: always a number
        assert report.no_node_can_run == sum(c.no_node_can_run for c in expected)
        assert (whole.queued, whole.offer) == (len(added), None)
        for job_id, _, _ in added:
            await queue.cancel(job_id, at(base + 200))


def msgspec_key(c: ClassDemand) -> tuple[Any, ...]:
    """A class, sortable (no name is None)."""
    return (
        c.environment,
        c.cpu_cores,
        c.memory,
        c.gpu_mem,
        c.gpu_model or "",
        c.gpu_archi or "",
        c.queued,
    )


# -- the filter over HTTP, on SQLite and PostgreSQL ---------------------------------------------

BAD_QUERIES: list[tuple[dict[str, Any], str]] = [
    ({"memory": -1}, "memory"),
    ({"memory": "lots"}, "memory"),
    ({"memory": 64000, "cpu_cores": -1}, "cpu_cores"),
    ({"memory": 64000, "gpu_mem": 2**60}, "gpu_mem"),
    ({"memory": 64000, "gpu_memory": -5}, "gpu_memory"),
    ({"memory": 64000, "environment": "moon"}, "environment"),
    ({"memory": 64000, "gpu_model": "A100\x01"}, "gpu_model"),
    ({"memory": 64000, "gpu_archi": "x" * 300}, "gpu_archi"),
]


async def test_the_offer_filter_over_http_and_bad_values_change_nothing(db_api: Api) -> None:
    key = {"x-api-key": API_KEY}
    await db_api.submit(1, environment="cloud", hardware={"gpu_mem": 16000})
    await db_api.submit(2, environment="cloud", hardware={"gpu_mem": 80000})
    await db_api.submit(3, environment="local")
    await db_api.submit(4, environment=None, hardware={"gpu_model": "A100"})
    big = await db_api.client.get(
        "/_demand",
        params={"memory": 64000, "gpu_memory": 81920, "gpu_model": "A100", "environment": "cloud"},
        headers=key,
    )
    assert big.status_code == 200, big.text
    body = big.json()
    assert body["offer"] == {
        "environment": "cloud",
        "cpu_cores": 1,
        "memory": 64000,
        "gpu_mem": 81920,
        "gpu_model": "A100",
        "gpu_archi": None,
    }
    assert sorted((c["environment"], c["gpu_mem"]) for c in body["classes"]) == [
        ("any", 0),
        ("cloud", 16000),
        ("cloud", 80000),
    ]
    assert (body["queued"], body["no_node_can_run"]) == (3, 3)
    small = await db_api.client.get(
        "/_demand", params={"memory": 8000, "environment": "local", "gpu_mem": 0}, headers=key
    )
    assert small.status_code == 200, small.text
    assert [c["environment"] for c in small.json()["classes"]] == ["local"]
    assert small.json()["queued"] == 1
    nothing = await db_api.client.get("/_demand", params={"memory": 1, "cpu_cores": 0}, headers=key)
    assert (nothing.json()["queued"], nothing.json()["classes"]) == (0, [])
    assert (await db_api.client.get("/_demand", headers=key)).json()["queued"] == 4
    # Without memory there is no filter, and the answer says so.
    unfiltered = await db_api.client.get("/_demand", params={"gpu_mem": 24000}, headers=key)
    assert (unfiltered.json()["queued"], unfiltered.json()["offer"]) == (4, None)

    assert db_api.stored is not None
    before = await db_api.stored.everything()
    for params, name in BAD_QUERIES:
        refused = await db_api.client.get("/_demand", params=params, headers=key)
        assert refused.status_code == 422, (params, refused.text)
        assert name in refused.json()["detail"], (params, refused.text)
    assert await db_api.stored.everything() == before


# -- CloudWatch: what is written, in batches ------------------------------------------------------


class RecordingCloudWatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **call: Any) -> None:
        self.calls.append(call)


def a_class(n: int) -> ClassDemand:
    return ClassDemand(
        environment="cloud",
        cpu_cores=0,
        memory=0,
        gpu_mem=1000 + n,
        gpu_model=None,
        gpu_archi=None,
        queued=1,
        oldest_wait_seconds=float(n),
        fitting_nodes_seen=0,
        smallest_fitting_offer=None,
        no_node_can_run=1,
        reason="none fits",
    )


async def test_the_metrics_go_out_in_batches_within_cloudwatchs_limit() -> None:
    classes = [a_class(n) for n in range(400)]
    report = DemandReport(
        at=datetime.now(UTC),
        seen_window_seconds=900,
        nodes_seen=0,
        queued=400,
        no_node_can_run=400,
        classes=classes,
        complete=True,
    )
    client = RecordingCloudWatch()
    written = await CloudWatchDemand("eu-central-1", client=client).publish("NS", report)
    assert written == 3 + 4 * 400
    assert all(len(c["MetricData"]) <= BATCH <= 1000 for c in client.calls)
    data = [d for c in client.calls for d in c["MetricData"]]
    assert len(data) == written
    assert {c["Namespace"] for c in client.calls} == {"NS"}
    totals = {d["MetricName"]: d["Value"] for d in data if not d["Dimensions"]}
    assert totals == {"QueuedJobs": 400, "NoNodeCanRunJobs": 400, "OldestWaitSeconds": 399}
    for d in data:
        assert all(dim["Value"] for dim in d["Dimensions"])  # CloudWatch refuses empty values


# -- CloudWatch: the real command against moto ----------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUEUE_", "COGNITO_", "AWS_", "S3_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "workerfacing_api.entrypoints.cli", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def queue_env(server: Server, cloudwatch_url: str) -> dict[str, str]:
    return {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
        # botocore's name for CloudWatch's endpoint alone (no AWS_ENDPOINT_URL): the one
        # OPERATIONS.md names.
        "AWS_ENDPOINT_URL_CLOUDWATCH": cloudwatch_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        **CREDENTIALS,
    }


def submit(server: Server, environment: str | None, need: dict[str, Any]) -> None:
    body = server.job_body(environment=environment)
    body["job"]["hardware"].update(need)
    server.submit(body)


def read_back(
    moto: MotoServer, namespace: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every metric of ``namespace`` with its largest value of the last minutes, keyed by name
    and dimensions. Read with GetMetricStatistics: moto's GetMetricData (5.2) mixes in data of
    other namespaces with the same name and dimensions, and the moto server is the session's."""
    cloudwatch = moto.client("cloudwatch")
    now = datetime.now(UTC)
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for metric in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]:
        points = cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric["MetricName"],
            Dimensions=metric.get("Dimensions", []),
            StartTime=now - timedelta(minutes=10),
            EndTime=now + timedelta(minutes=10),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        dimensions = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
        found[(metric["MetricName"], dimensions)] = max(p["Maximum"] for p in points)
    return found


def dims(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


GPU16 = dims(
    Environment="cloud",
    CpuCores="any",
    MemoryMiB="any",
    GpuMemMiB="16000",
    GpuModel="any",
    GpuArchi="any",
)
LOCAL4 = dims(
    Environment="local",
    CpuCores="4",
    MemoryMiB="any",
    GpuMemMiB="any",
    GpuModel="any",
    GpuArchi="any",
)


@pytest.mark.e2e
def test_demand_cloudwatch_writes_one_metric_per_class_and_the_totals(
    server: Server, moto: MotoServer
) -> None:
    submit(server, "cloud", {"gpu_mem": 16000})
    submit(server, "cloud", {"gpu_mem": 16000})
    submit(server, "local", {"cpu_cores": 4})
    env = queue_env(server, moto.url)

    namespace = f"DECODE/Test-{uuid.uuid4().hex[:8]}"
    done = run_cli("demand", "--cloudwatch", namespace, cwd=server.root, env=env)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert "published 11 metrics (2 classes, 3 queued jobs)" in line
    assert namespace in line
    assert moto.url in line
    found = read_back(moto, namespace)
    assert found == {
        ("QueuedJobs", frozenset()): 3,
        ("NoNodeCanRunJobs", frozenset()): 3,
        ("OldestWaitSeconds", frozenset()): found[("OldestWaitSeconds", frozenset())],
        ("QueuedJobs", GPU16): 2,
        ("NoNodeCanRunJobs", GPU16): 2,
        ("FittingNodesSeen", GPU16): 0,
        ("OldestWaitSeconds", GPU16): found[("OldestWaitSeconds", GPU16)],
        ("QueuedJobs", LOCAL4): 1,
        ("NoNodeCanRunJobs", LOCAL4): 1,
        ("FittingNodesSeen", LOCAL4): 0,
        ("OldestWaitSeconds", LOCAL4): found[("OldestWaitSeconds", LOCAL4)],
    }
    assert 0 <= found[("OldestWaitSeconds", GPU16)] < 600

    # One machine kind: its classes only, the totals named by the offer.
    kind = f"DECODE/Kind-{uuid.uuid4().hex[:8]}"
    done = run_cli(
        "demand", "--cloudwatch", kind, "--memory", "64000", "--gpu-mem", "24000",
        cwd=server.root, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    offer = dims(Offer="cloud/1/64000/24000/any/any")
    found = read_back(moto, kind)
    assert found[("QueuedJobs", offer)] == 2
    assert found[("NoNodeCanRunJobs", offer)] == 2
    assert {d for _, d in found} == {offer, GPU16}


@pytest.mark.e2e
def test_demand_cloudwatch_of_an_empty_queue_writes_zero_totals(
    server: Server, moto: MotoServer
) -> None:
    namespace = f"DECODE/Empty-{uuid.uuid4().hex[:8]}"
    done = run_cli(
        "demand", "--cloudwatch", namespace, cwd=server.root, env=queue_env(server, moto.url)
    )
    assert done.returncode == 0, done.stderr
    assert read_back(moto, namespace) == {
        ("QueuedJobs", frozenset()): 0,
        ("NoNodeCanRunJobs", frozenset()): 0,
        ("OldestWaitSeconds", frozenset()): 0,
    }


@pytest.mark.e2e
def test_demand_cloudwatch_unreachable_is_one_line_and_a_failure(server: Server) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = run_cli(
        "demand", "--cloudwatch", "DECODE/X", cwd=server.root, env=queue_env(server, nowhere)
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "CloudWatch" in line, line
    assert nowhere in line, line
    assert done.stdout == ""


@pytest.mark.e2e
def test_demand_cloudwatch_every_publishes_until_stopped(server: Server, moto: MotoServer) -> None:
    submit(server, "cloud", {"gpu_mem": 16000})
    namespace = f"DECODE/Every-{uuid.uuid4().hex[:8]}"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUEUE_", "COGNITO_", "AWS_", "S3_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "workerfacing_api.entrypoints.cli", "demand",
         "--cloudwatch", namespace, "--every", "0.2"],
        cwd=server.root,
        env={**base, **queue_env(server, moto.url)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = []
        for _ in range(3):
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "no publish within 60 s"
            lines.append(process.stdout.readline())
        assert all("published 7 metrics (1 classes, 1 queued jobs)" in line for line in lines)
        assert process.poll() is None  # still running: a sidecar
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert read_back(moto, namespace)[("QueuedJobs", GPU16)] == 1


def test_every_needs_cloudwatch_and_an_offer_needs_memory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from workerfacing_api.entrypoints.cli import main

    for argv, said in (
        (["demand", "--every", "60"], "--every: only with --cloudwatch"),
        (["demand", "--gpu-mem", "24000"], "--memory: give the machine's memory"),
        (["demand", "--memory", "-1"], "argument --memory"),
        (["demand", "--memory", "1", "--gpu-model", "a\x01"], "argument --gpu-model"),
        (["demand", "--cloudwatch", "AWS/EC2"], "argument --cloudwatch"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2, argv
        assert said in capsys.readouterr().err, argv
