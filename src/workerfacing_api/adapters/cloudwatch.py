"""The demand (``core.demand``) published to Amazon CloudWatch, for an EC2 Auto Scaling group or
an AWS Batch compute environment to scale on (``workerfacing-api demand --cloudwatch``).

Per hardware class, ``QueuedJobs``, ``NoNodeCanRunJobs``, ``FittingNodesSeen`` (Count) and
``OldestWaitSeconds`` (Seconds), with the class as dimensions: ``Environment``, ``CpuCores``,
``MemoryMiB``, ``GpuMemMiB``, ``GpuModel``, ``GpuArchi``, each ``any`` where the class asks for
anything (CloudWatch refuses an empty dimension value). Beside them the totals (``QueuedJobs``,
``NoNodeCanRunJobs``, ``OldestWaitSeconds``) with no dimension at all, or, when the demand was
asked for one kind of machine, with the one dimension ``Offer`` naming it: a class exists in
CloudWatch only while it has queued jobs, so an alarm on a class reads "missing" once its queue
is empty, while a total is always written and reads 0.

boto3 is synchronous: the calls run in a thread. botocore finds the endpoint itself
(``AWS_ENDPOINT_URL_CLOUDWATCH`` or ``AWS_ENDPOINT_URL``: a moto server in tests).
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import botocore.exceptions

from workerfacing_api.core.demand import ClassDemand, DemandReport, MachineOffer
from workerfacing_api.core.errors import Unavailable

# Metric data per PutMetricData call. CloudWatch takes 1 000 now (and 1 MB a request); a call
# well within both leaves room for the dimensions of long GPU names.
BATCH = 150
ANY = "any"
# CloudWatch's longest dimension value.
_VALUE_MAX = 1024


def _value(value: int | str | None) -> str:
    """A dimension value: ``any`` for anything (0 or None), else the value as written."""
    if value is None or value == 0 or (isinstance(value, str) and not value.strip()):
        return ANY
    return str(value)[:_VALUE_MAX]


def class_dimensions(c: ClassDemand) -> list[dict[str, str]]:
    return [
        {"Name": name, "Value": _value(value)}
        for name, value in (
            ("Environment", c.environment),
            ("CpuCores", c.cpu_cores),
            ("MemoryMiB", c.memory),
            ("GpuMemMiB", c.gpu_mem),
            ("GpuModel", c.gpu_model),
            ("GpuArchi", c.gpu_archi),
        )
    ]


def offer_name(offer: MachineOffer) -> str:
    """A machine kind as one dimension value: environment/cores/MiB/GPU MiB/model/architecture,
    e.g. ``cloud/8/64000/24000/any/any``."""
    parts = (offer.cpu_cores, offer.memory, offer.gpu_mem, offer.gpu_model, offer.gpu_archi)
    return "/".join([offer.environment.value, *(str(p) if p else ANY for p in parts)])[:_VALUE_MAX]


def metric_data(report: DemandReport) -> list[dict[str, Any]]:
    """What ``put_metric_data`` takes for ``report``: the totals first, then each class."""

    def datum(name: str, value: float, unit: str, dims: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "MetricName": name,
            "Dimensions": dims,
            "Timestamp": report.at,
            "Value": float(value),
            "Unit": unit,
        }

    total = [] if report.offer is None else [{"Name": "Offer", "Value": offer_name(report.offer)}]
    oldest = max((c.oldest_wait_seconds for c in report.classes), default=0.0)
    data = [
        datum("QueuedJobs", report.queued, "Count", total),
        datum("NoNodeCanRunJobs", report.no_node_can_run, "Count", total),
        datum("OldestWaitSeconds", oldest, "Seconds", total),
    ]
    for c in report.classes:
        dims = class_dimensions(c)
        data += [
            datum("QueuedJobs", c.queued, "Count", dims),
            datum("NoNodeCanRunJobs", c.no_node_can_run, "Count", dims),
            datum("FittingNodesSeen", c.fitting_nodes_seen, "Count", dims),
            datum("OldestWaitSeconds", c.oldest_wait_seconds, "Seconds", dims),
        ]
    return data


class CloudWatchDemand:
    """Writes a demand report to one CloudWatch namespace."""

    def __init__(self, region: str | None, *, client: Any = None) -> None:
        self._region = region
        self._client = client

    def _cloudwatch(self) -> Any:
        # Made at first use, where its errors are reported like a call's (no region, say).
        if self._client is None:
            self._client = boto3.client("cloudwatch", region_name=self._region)
        return self._client

    @property
    def where(self) -> str:
        """The endpoint written to, for the operator's line."""
        return str(self._cloudwatch().meta.endpoint_url)

    async def publish(self, namespace: str, report: DemandReport) -> int:
        """Write ``report``'s metrics under ``namespace``; the number written. ``Unavailable``
        with one sentence when CloudWatch (or the way to it) refuses."""
        data = metric_data(report)
        try:
            client = self._cloudwatch()
            for start in range(0, len(data), BATCH):
                batch = data[start : start + BATCH]
                await asyncio.to_thread(
                    client.put_metric_data, Namespace=namespace, MetricData=batch
                )
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "error"), error.get("Message", "")
            raise Unavailable(
                f"CloudWatch refused the metrics for namespace {namespace!r} ({code}: {message})"
            ) from None
        except botocore.exceptions.NoRegionError:
            raise Unavailable(
                "no AWS region for CloudWatch: set AWS_REGION (or S3_REGION, COGNITO_REGION)"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise Unavailable(
                f"cannot publish to CloudWatch ({type(exc).__name__}: {exc})"
            ) from None
        return len(data)
