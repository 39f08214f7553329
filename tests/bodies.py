"""The job document the user-facing API submits (``POST /_jobs``), built once for every test."""

from __future__ import annotations

from typing import Any

HARDWARE_KEYS = ("cpu_cores", "memory", "gpu_model", "gpu_archi", "gpu_mem")


def job_document(
    job_id: int,
    *,
    root: str = "/data/user_data/alice",
    environment: str | None = "local",
    group: str | None = None,
    priority: int | None = 0,
    hardware: dict[str, Any] | None = None,
    files_down: dict[str, str] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A submission shaped like the user-facing API's with local storage under ``root``: input
    files under ``root/config|data/<id>/``, results under ``root/<kind>/job-<id>``."""
    need: dict[str, Any] = dict.fromkeys(HARDWARE_KEYS)
    need.update(hardware or {})
    if files_down is None:
        files_down = {
            "config/param_run_in.yaml": f"{root}/config/{job_id}/param_run_in.yaml",
            "data/calib.mat": f"{root}/data/{job_id}/calib.mat",
        }
    return {
        "job": {
            "app": {"cmd": ["/docker/entrypoint.sh", "--train"], "env": {}},
            "handler": {
                "image_url": "public.ecr.aws/decode/decode:v0_10_1",
                "image_name": "decode",
                "image_version": "v0_10_1",
                "entrypoint": "train",
                "files_down": files_down,
                "files_up": {"log": "log", "artifact": "model"},
            },
            "meta": {
                "job_id": job_id,
                "date_created": "2026-11-28T08:20:32.883437",
                **(extra_meta or {}),
            },
            "hardware": need,
        },
        "environment": environment,
        "group": group,
        "priority": priority,
        "paths_upload": {
            kind: f"{root}/{kind}/job-{job_id}" for kind in ("output", "log", "artifact")
        },
    }
