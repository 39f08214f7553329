"""The OpenAPI document, exact: what the service accepts and answers, so that clients generated
from it, and schemathesis, agree with the service; and the page that shows it (``/docs``).

Litestar writes the document from the handlers. Its schemas of msgspec Structs lose bounds (a
``ge=0`` of an optional field, for one), so the schemas of the bodies are replaced with those
msgspec itself writes from the same Structs (every bound the decoder enforces), the keys of
``files_up`` get their enum (the decoder accepts only output, log and artifact there), the
direct upload's multipart body is described, and the 400 Litestar adds to every route with
parameters shows the service's own error shape (``{"detail": ...}``), not Litestar's. It also
owns what the document shows a newcomer: the ways to authenticate (security schemes) and real
examples of what the DECODE clients send and receive.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Reference, SecurityScheme

from workerfacing_api.core.model import FileType, PresignedRequest, SubmittedJob

# The security schemes' names, as routes and routers name them in their ``security``.
BEARER = "bearerToken"
INTERNAL_KEY = "internalKey"
DASHBOARD_SESSION = "dashboardSession"


def security_schemes(session_cookie: str) -> dict[str, SecurityScheme | Reference]:
    """The ways to authenticate, as the guards check them (``auth``); the dashboard's session
    is the cookie named ``session_cookie``."""
    return {
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="A Cognito ID or access token, or one minted by `workerfacing-api token "
            "--username NAME --groups workers` beside the server (see GET /access_info). "
            "Workers' routes want group `workers`; operators' routes, group `operators`.",
        ),
        INTERNAL_KEY: SecurityScheme(
            type="apiKey",
            name="x-api-key",
            security_scheme_in="header",
            description="The key shared with the user-facing API (INTERNAL_API_KEY_SECRET).",
        ),
        DASHBOARD_SESSION: SecurityScheme(
            type="apiKey",
            name=session_cookie,
            security_scheme_in="cookie",
            description="The dashboard's session, set by signing in at /ui/login with an "
            "operator's token (same site only).",
        ),
    }


# What the user-facing API submits for a DECODE training job (local storage; on S3 the paths
# are s3://bucket/key), as ARCHITECTURE §4 and tests/bodies.py have it. `date_created` is naive,
# kept.
_ROOT = "/data/user_data/alice"
_RUN = "2026-11-28_08-20-32_my-training"
SUBMISSION_EXAMPLE: dict[str, Any] = {
    "job": {
        "app": {"cmd": ["/docker/entrypoint.sh", "--train"], "env": {}},
        "handler": {
            "image_url": "public.ecr.aws/decode/decode:v0_10_1",
            "image_name": "decode",
            "image_version": "v0_10_1",
            "entrypoint": "train",
            "files_down": {
                "config/param_run_in.yaml": f"{_ROOT}/config/{_RUN}/param_run_in.yaml",
                "data/calib.mat": f"{_ROOT}/data/{_RUN}/calib.mat",
            },
            "files_up": {"log": "log", "artifact": "model"},
        },
        "meta": {"job_id": 1, "date_created": "2026-11-28T08:20:32.883437"},
        "hardware": {
            "cpu_cores": None,
            "memory": None,
            "gpu_model": None,
            "gpu_archi": None,
            "gpu_mem": None,
        },
    },
    "environment": "local",
    "group": None,
    "priority": 0,
    "paths_upload": {kind: f"{_ROOT}/{kind}/{_RUN}" for kind in ("output", "log", "artifact")},
}
# What a worker's pull answers: queue id -> the job exactly as submitted.
PULLED_EXAMPLE: dict[str, Any] = {"17": SUBMISSION_EXAMPLE["job"]}


@functools.cache
def _body_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [SubmittedJob, PresignedRequest], ref_template="#/components/schemas/{name}"
    )
    files_up = components["HandlerSpecs"]["properties"]["files_up"]["anyOf"][0]
    files_up["propertyNames"] = {"enum": [t.value for t in FileType]}
    return components


# The direct upload reads its multipart body as a stream (a model file may be gigabytes), so
# the handler declares no body for Litestar to parse; the document says what it takes.
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


# The examples of the DECODE clients' bodies, set here: Litestar writes an example's nulls out of
# the document, and a job's nulls (hardware, group) are part of what the clients send.
_SUBMISSION = {
    "summary": "A DECODE training job, as the user-facing API submits it",
    "value": SUBMISSION_EXAMPLE,
}
_EXAMPLES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/_jobs", "post", "body"): {"decode-training": _SUBMISSION},
    ("/_jobs", "post", "201"): {
        "decode-training": {"summary": "The echo of the submission", "value": SUBMISSION_EXAMPLE}
    },
    ("/jobs", "get", "200"): {
        "decode-training": {"summary": "A DECODE training job handed out", "value": PULLED_EXAMPLE},
        "nothing-fits": {"summary": "Nothing fits this worker", "value": {}},
    },
}
PROBLEM_REF = "#/components/schemas/Problem"
_BAD_REQUEST_EXAMPLE = {
    "detail": "the request cannot be read (e.g. a body that is not valid UTF-8); send it as "
    "the operation says"
}


def _is_litestars_error(response: dict[str, Any]) -> bool:
    """The response is Litestar's own error shape (``{status_code, detail, extra}``)."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return "status_code" in schema.get("properties", {})


def _answers_as_the_service(operation: dict[str, Any]) -> None:
    """The errors Litestar documents by itself (a 400 on every route with parameters), in the
    shape every error of the service has: the exception handlers (``errors``) answer
    ``{"detail": "..."}``."""
    for response in operation.get("responses", {}).values():
        if isinstance(response, dict) and _is_litestars_error(response):
            response["content"] = {
                "application/json": {
                    "schema": {"$ref": PROBLEM_REF},
                    "examples": {"bad-request": {"value": dict(_BAD_REQUEST_EXAMPLE)}},
                }
            }


_SUBMIT_LOCATION = {
    "location": {
        "description": "The queued job by its queue id, `/jobs/{queue id}/status` (the id the "
        "workers and every operator tool use; meta.job_id is the user-facing API's)",
        "required": True,
        "schema": {"type": "string", "examples": ["/jobs/17/status"]},
    }
}
# Examples of the errors that the dashboard's data routes (ui.py) describe in their own words.
_DASHBOARD_ERRORS = {
    "401": "not signed in: sign in at /ui/login, or send 'Authorization: Bearer <token>' of an "
    "identity in group 'operators'",
    "403": "user 'gpu-box-1' is not in group 'operators'",
    "404": "job 17 does not exist",
}
# Path parameters that the handlers outside routes.py (the dashboard's) leave undescribed.
_PATH_PARAMETERS = {
    ("/ui/api/jobs/{job_id}", "job_id"): "the job's queue id (an integer; not meta.job_id)",
}


def _show_dashboard_errors(operation: dict[str, Any]) -> None:
    for code, detail in _DASHBOARD_ERRORS.items():
        response = operation.get("responses", {}).get(code)
        media = (response or {}).get("content", {}).get("application/json")
        if media is not None and not media.get("examples"):
            media["examples"] = {f"{code}-answer": {"value": {"detail": detail}}}


def _describe_path_parameters(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if isinstance(parameter, dict) and not parameter.get("description"):
            described = _PATH_PARAMETERS.get((path, parameter.get("name", "")))
            if described is not None:
                parameter["description"] = described


def exact(document: dict[str, Any]) -> dict[str, Any]:
    """Litestar's ``document`` with the bodies' schemas as msgspec enforces them, the upload's
    multipart body, the submission's Location header, the clients' examples, and every error in
    the service's shape."""
    refined = copy.deepcopy(document)
    schemas = refined.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(copy.deepcopy(_body_schemas()))
    paths = refined.get("paths", {})
    upload = paths.get("/jobs/{job_id}/files/upload", {}).get("post")
    if upload is not None:
        upload["requestBody"] = copy.deepcopy(_UPLOAD_BODY)
    submit = paths.get("/_jobs", {}).get("post")
    if submit is not None:
        # Litestar leaves a route's response headers out when its responses name the success
        # status itself (the echo's schema), so the header is said here.
        created = submit.get("responses", {}).get("201")
        if created is not None:
            created["headers"] = copy.deepcopy(_SUBMIT_LOCATION)
    for (path, method, where), examples in _EXAMPLES.items():
        operation = paths.get(path, {}).get(method, {})
        part = (
            operation.get("requestBody")
            if where == "body"
            else operation.get("responses", {}).get(where)
        )
        media = (part or {}).get("content", {}).get("application/json")
        if media is not None:
            media["examples"] = copy.deepcopy(examples)
    for path, path_item in paths.items():
        for operation in path_item.values():
            if isinstance(operation, dict):
                _answers_as_the_service(operation)
                _describe_path_parameters(path, operation)
                if path.startswith("/ui/api/"):
                    _show_dashboard_errors(operation)
    return refined


class ExactJsonRenderPlugin(JsonRenderPlugin):
    """Serves ``exact(document)`` where Litestar serves its JSON document."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, exact(openapi_schema))


class ExactSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Litestar's Swagger UI page (its options say where the UI's files come from), showing
    ``exact(document)``, the document the service serves as JSON, not Litestar's draft."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, exact(openapi_schema))
