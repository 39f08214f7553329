"""The HTTP endpoints (ARCHITECTURE §4): thin handlers that decode input, call one core service and
encode its answer. Paths, parameter names and shapes are those the DECODE clients use.

The handlers take the core services they use as Litestar dependencies of those names, which
``app.create_app`` registers from the container (``jobs``, ``files``, ``signer``, ``access``,
``explainer``, ``probes``, ``settings``). The routes come in groups by who may call them, each
checked as a whole there (``auth``): workers, the user-facing API, operators, anyone.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any, cast

import msgspec
from litestar import HttpMethod, Request, Response, get, post, put, route
from litestar.datastructures import ResponseHeader
from litestar.exceptions import ClientException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import (
    HeaderParameter,
    JSONBody,
    PathParameter,
    QueryParameter,
    SkipValidation,
)
from litestar.response import File

from workerfacing_api.config import Settings
from workerfacing_api.core.access import Access
from workerfacing_api.core.demand import Demand, DemandReport, machine_offer
from workerfacing_api.core.errors import (
    InvalidRequest,
    JobNotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from workerfacing_api.core.files import FileService
from workerfacing_api.core.jobs import MAX_PULL_LIMIT, JobService
from workerfacing_api.core.model import (
    MAX_DB_INT,
    NAME_MAX,
    NO_CONTROL_CHARACTERS,
    WORKER_STATUSES,
    Environment,
    FileType,
    Identity,
    JobSpecs,
    JobStatus,
    Name,
    PresignedRequest,
    Submission,
    SubmittedJob,
    WorkerProfile,
)
from workerfacing_api.core.ports import LinkSigner
from workerfacing_api.core.probes import Probes
from workerfacing_api.core.waiting import Explanation, WaitExplainer
from workerfacing_api.entrypoints.http.auth import (
    PUBLIC,
    AnyConnection,
    Guard,
    bearer_token,
    worker_of,
)
from workerfacing_api.entrypoints.http.errors import (
    invalid_encoding_of_submission,
    invalid_submission,
    nested_submission,
)
from workerfacing_api.entrypoints.http.multipart import MultipartFile, until_hang_up
from workerfacing_api.entrypoints.http.openapi import BEARER, exact
from workerfacing_api.entrypoints.http.routing import FILE_ID_KEY, ORIGINAL_PATH_KEY
from workerfacing_api.entrypoints.logs import set_worker

JSON = "application/json"
AnyRequest = Request[Any, Any, Any]


class Welcome(msgspec.Struct):
    message: str


class CognitoInfo(msgspec.Struct):
    user_pool_id: str | None
    client_id: str | None
    region: str | None


ISSUER_HINT = "run `workerfacing-api token --username NAME --groups workers` beside the server"


class LocalIssuerInfo(msgspec.Struct):
    issuer: str
    how_to_get_a_token: str


class AccessInfo(msgspec.Struct, omit_defaults=True):
    cognito: CognitoInfo
    local: LocalIssuerInfo | None = None


class Stored(msgspec.Struct):
    file: str
    bytes: int


# Injected values are trusted: Litestar need not check their types on every request.
Jobs = SkipValidation[JobService]
Files = SkipValidation[FileService]
Signer = SkipValidation[LinkSigner]
Gate = SkipValidation[Access]


def caller(request: AnyRequest) -> Identity:
    """The worker a workers' route serves (``auth.workers_only`` put it there)."""
    return cast("Identity", request.user)


# Query numbers stop at 2**53: the OpenAPI document writes bounds as floats, and above 2**53 a
# float is not the integer it names (no machine has that many MiB or cores anyway).
QUERY_MAX = 2**53
# The queue's id of a job (the key of a pull's answer; not the user-facing API's meta.job_id).
QueueId = Annotated[
    int,
    PathParameter(
        description="the job's queue id, as the pull that handed it out names it (an integer; "
        "not meta.job_id)"
    ),
]
# A name the queue matches on and stores (a GPU model or architecture, a group): the bounds of
# ``core.model.Name``, so that a pull accepts exactly the names a submission may hold.
NAME_BOUNDS = {"maxLength": NAME_MAX, "pattern": NO_CONTROL_CHARACTERS}
INSTANCE_HELP = (
    "an id of this fetcher among the machines of its account (e.g. the host name and GPU index): "
    "fleet health judges each node apart; fetchers of one account, address and hardware without "
    "one are one node"
)
NAME_HELP = f"at most {NAME_MAX} characters, no control characters"


def offered_count(description: str, **extra: Any) -> QueryParameter:
    """A number a node offers (``GET /jobs``; a machine kind of ``GET /_demand``): its bounds
    written once, so that both accept the same values."""
    return QueryParameter(ge=0, le=QUERY_MAX, description=description, **extra)


def offered_name(description: str) -> QueryParameter:
    """A GPU model or architecture a node offers: the bounds of ``core.model.Name``."""
    return QueryParameter(
        max_length=NAME_MAX,
        pattern=NO_CONTROL_CHARACTERS,
        description=f"{description}; {NAME_HELP}",
    )


FileTypeParam = Annotated[
    str,
    QueryParameter(
        name="type",
        description="which of the job's upload folders",
        enum=[t.value for t in FileType],
    ),
]
BasePath = Annotated[
    str,
    QueryParameter(
        description="a folder (not a file name) below the job's upload folder of this type, "
        "relative, no '..'; the file keeps its own name inside it (default: the folder itself)"
    ),
]
FileIdPath = Annotated[
    str,
    PathParameter(
        description="a value of the job's `files_down`, unencoded: `s3://bucket/key` or an "
        "absolute path under the data root (so the path holds `//`)"
    ),
]
WORKER_STATUSES_DOC = sorted(s.value for s in WORKER_STATUSES)


class Problem(msgspec.Struct):
    """Every error answer: what went wrong and, where it helps, what to do."""

    detail: str


# Each error answer a route may give: what it means, and an answer of that kind as the service
# words it.
_ERRORS = {
    400: (
        "The request cannot be served this way (e.g. a direct transfer on S3 storage)",
        "direct upload is only available with local storage; upload to the URL from "
        "POST /jobs/{id}/files/url instead",
    ),
    401: (
        "No valid bearer token (or shared key, or link signature)",
        "missing bearer token: send 'Authorization: Bearer <token>'",
    ),
    403: (
        "Not in group 'workers', or a path outside the data root or bucket",
        "user 'gpu-box-1' is not in group 'workers'",
    ),
    404: (
        "Unknown, not the caller's (any more), or cancelled: the worker stops",
        "job 17 not found among the jobs assigned to you",
    ),
    409: (
        "The job already ended in the other final state",
        "job 17 already ended as 'finished'; it cannot become 'error'",
    ),
    413: (
        "The upload is larger than MAX_UPLOAD_BYTES",
        "upload exceeds the limit of 10737418240 bytes (MAX_UPLOAD_BYTES)",
    ),
    422: (
        "A parameter or the body is not acceptable; the detail names it",
        "status 'done' cannot be set by a worker; use one of: error, finished, postprocessing, "
        "preprocessing, running",
    ),
    503: (
        "The queue's database cannot be reached right now; retry (see Retry-After)",
        "lost the connection to the queue's database (connection refused); retry",
    ),
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a route gives, each ``{"detail": "..."}``."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_ERRORS[code][0],
            generate_examples=False,
            examples=[Example(summary=f"A {code} answer", value={"detail": _ERRORS[code][1]})],
        )
        for code in codes
    }


@get("/", operation_id="welcome", summary="Welcome message")
async def welcome() -> Welcome:
    return Welcome(message="Welcome to the DECODE OpenCloud worker-facing API")


@get("/access_info", operation_id="access_info", summary="How workers authenticate")
async def access_info(settings: SkipValidation[Settings]) -> AccessInfo:
    local = None
    if settings.embedded_default:
        local = LocalIssuerInfo(
            issuer="workerfacing-api-local",
            how_to_get_a_token=ISSUER_HINT,
        )
    return AccessInfo(
        cognito=CognitoInfo(
            user_pool_id=settings.cognito_user_pool_id,
            client_id=settings.cognito_client_id,
            region=settings.cognito_region,
        ),
        local=local,
    )


@get(
    "/jobs",
    operation_id="pull_jobs",
    summary="Pull jobs that fit this worker",
    responses={
        **errors(401, 403, 422, 503),
        200: ResponseSpec(
            data_container=dict[str, JobSpecs],
            description="Queue id → job, as submitted; empty when nothing fits",
            generate_examples=False,  # openapi.exact shows a real one
        ),
    },
)
async def pull_jobs(
    request: AnyRequest,
    jobs: Jobs,
    memory: Annotated[
        int,
        offered_count(
            "the worker's free memory in MiB (0 or more): a job that asks for more "
            "is not handed out"
        ),
    ],
    cpu_cores: Annotated[
        int,
        offered_count(
            "the worker's CPU cores (0 or more): a job that asks for more is not handed out"
        ),
    ] = 1,
    gpu_mem: Annotated[
        int, offered_count("the worker's GPU memory in MiB (0 or more; 0: no GPU)")
    ] = 0,
    gpu_memory: Annotated[
        int | None,
        offered_count(
            "the worker's GPU memory in MiB, alias of gpu_mem (the DECODE worker "
            "sends this one); wins over gpu_mem when both are sent",
            schema_extra={"minimum": 0},  # Litestar drops a zero bound of an optional value
        ),
    ] = None,
    gpu_model: Annotated[
        str | None,
        offered_name(
            "the worker's GPU model (e.g. 'NVIDIA A100'), matched exactly against "
            "a job's hardware.gpu_model"
        ),
    ] = None,
    gpu_archi: Annotated[
        str | None,
        offered_name(
            "the worker's GPU architecture (e.g. 'sm_80'), matched exactly against "
            "a job's hardware.gpu_archi"
        ),
    ] = None,
    groups: Annotated[
        tuple[Name, ...],
        QueryParameter(
            description=f"preferred job groups, repeatable (groups=a&groups=b); {NAME_HELP} each",
            # Litestar validates each item as a Name but leaves its bounds out of the document.
            schema_extra={"items": {"type": "string", **NAME_BOUNDS}},
        ),
    ] = (),
    limit: Annotated[
        int,
        QueryParameter(
            ge=1,
            le=QUERY_MAX,
            description=f"how many jobs the worker wants, 1 or more; at most {MAX_PULL_LIMIT} "
            "are handed out per call",
        ),
    ] = 1,
    older_than: Annotated[
        float,
        QueryParameter(
            ge=0,
            le=10**9,
            description="seconds (0 to 10^9): a job submitted for any environment is handed "
            "to this worker only once it waited this long (its preferred kind of worker gets "
            "it first)",
        ),
    ] = 0.0,
    worker_instance: Annotated[
        str | None,
        QueryParameter(
            max_length=NAME_MAX,
            pattern=NO_CONTROL_CHARACTERS,
            description=INSTANCE_HELP + " (header X-Worker-Instance, if sent, wins)",
        ),
    ] = None,
    x_worker_instance: Annotated[
        str | None,
        HeaderParameter(
            name="x-worker-instance",
            max_length=NAME_MAX,
            pattern=NO_CONTROL_CHARACTERS,
            description=INSTANCE_HELP + " (wins over query worker_instance)",
        ),
    ] = None,
) -> Response[bytes]:
    worker = caller(request)
    client = request.client
    profile = WorkerProfile(
        worker=worker.username,
        environment=worker.environment,
        cpu_cores=cpu_cores,
        memory=memory,
        gpu_mem=gpu_memory if gpu_memory is not None else gpu_mem,
        gpu_model=gpu_model,
        gpu_archi=gpu_archi,
        groups=groups,
        older_than=older_than,
        # The peer, or the address a trusted proxy forwarded (uvicorn, TRUSTED_PROXIES).
        address=client.host[:NAME_MAX] if client is not None else "",
        # The header when both are sent; an empty one is none.
        instance=x_worker_instance or worker_instance or None,
    )
    handed = await jobs.pull(profile, min(limit, MAX_PULL_LIMIT))
    body = msgspec.json.encode({str(job.id): msgspec.Raw(job.spec) for job in handed})
    return Response(body, media_type=JSON)


@get(
    "/jobs/{job_id:int}/status",
    operation_id="get_job_status",
    summary="A job's status",
    responses={
        200: ResponseSpec(data_container=JobStatus, description="The status"),
        **errors(401, 403, 404, 503),
    },
)
async def get_job_status(jobs: Jobs, job_id: QueueId) -> Response[bytes]:
    status = await jobs.status_of(job_id)
    return Response(msgspec.json.encode(status.value), media_type=JSON)


@put(
    "/jobs/{job_id:int}/status",
    operation_id="put_job_status",
    summary="Report status or keep-alive",
    status_code=204,
    responses=errors(401, 403, 404, 409, 422, 503),
)
async def put_job_status(
    request: AnyRequest,
    jobs: Jobs,
    job_id: QueueId,
    status: Annotated[
        str,
        QueryParameter(
            description="the job's state as the worker sees it (the same again: a keep-alive)",
            enum=WORKER_STATUSES_DOC,
        ),
    ],
    runtime_details: Annotated[
        str | None,
        QueryParameter(
            description="free text for the user, e.g. the last 1 000 characters of the logs "
            "with status=error; a longer text keeps its end (at most 16 384 characters)"
        ),
    ] = None,
) -> None:
    await jobs.update_status(job_id, caller(request).username, status, runtime_details)


@route(
    "/jobs/{job_id:int}/status",
    http_method=[HttpMethod.OPTIONS],
    operation_id="job_status_options",
    include_in_schema=False,
    status_code=204,
    opt={PUBLIC: True},
)
async def job_status_options() -> Response[None]:
    """Litestar's own OPTIONS answer for this path names only the first handler's method;
    both are said here."""
    return Response(None, status_code=204, headers={"allow": "GET, PUT, OPTIONS"})


@post(
    "/jobs/{job_id:int}/files/url",
    operation_id="get_upload_url",
    summary="A request that uploads one result file",
    status_code=201,
    responses=errors(401, 403, 404, 422, 503),
)
async def get_upload_url(
    request: AnyRequest,
    files: Files,
    signer: Signer,
    job_id: QueueId,
    file_type: FileTypeParam,
    base_path: BasePath = "",
) -> PresignedRequest:
    grant = await files.grant_upload(job_id, caller(request).username, file_type, base_path)
    if grant.presigned is not None:
        return grant.presigned
    params = {
        "type": grant.file_type.value,
        "base_path": grant.base_path,
        "worker": grant.worker,
        "attempt": str(grant.attempt),
    }
    path = f"/jobs/{grant.job_id}/files/upload"
    url = signer.sign("POST", str(request.base_url), path, params, time.time())
    return PresignedRequest(method="post", url=url)


# --- signed links (local storage) --------------------------------------------------------------

# The query of the links ``get_upload_url`` and ``get_download_url`` hand out, as
# ``adapters.signing`` writes it: each of these parameters once, and nothing else (ARCHITECTURE §4).
SIGNATURE, EXPIRES = "signature", "expires"
UPLOAD_LINK = frozenset({"type", "base_path", "worker", "attempt", EXPIRES, SIGNATURE})
DOWNLOAD_LINK = frozenset({"worker", EXPIRES, SIGNATURE})
# A refusal names at most this many parameters, each cut short: the names are the caller's text.
NAMED_AT_MOST, NAME_SHOWN = 5, 40
AS_HANDED_OUT = "send the link exactly as it was handed out, or ask for a new one"


def _presents_link(connection: AnyConnection) -> bool:
    """The request presents a signed link, not a bearer token."""
    return bearer_token(connection) is None and SIGNATURE in connection.query_params


def _names(names: list[str]) -> str:
    shown = [
        repr(name[:NAME_SHOWN]) + ("…" if len(name) > NAME_SHOWN else "")
        for name in names[:NAMED_AT_MOST]
    ]
    return ", ".join(shown) + (", …" if len(names) > NAMED_AT_MOST else "")


def _link_query(connection: AnyConnection, link: str, signed: frozenset[str]) -> dict[str, str]:
    """The query of a signed ``link`` ("upload", "download"): one value per parameter, the
    parameters ``signed`` exactly; else 401 naming what is wrong.

    The signature covers one value per name, while the framework, given a name twice, reads the
    last (docs/RELIABILITY.md, finding 2: ``&base_path=b&type=artifact`` appended to an upload link
    stored the file in another folder of the job). So every occurrence is looked at (the query's
    multi items), a repeated name is refused, and a handler acts on the mapping returned here, never
    on the parameters the framework parsed. An added or missing name fails the signature too; here
    it is named."""
    pairs = [(name, str(value)) for name, value in connection.query_params.multi_items()]
    counts = Counter(name for name, _ in pairs)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise Unauthenticated(f"the {link} link repeats {_names(repeated)}; {AS_HANDED_OUT}")
    missing = sorted(signed - counts.keys())
    if missing:
        raise Unauthenticated(f"the {link} link lacks {_names(missing)}; {AS_HANDED_OUT}")
    added = sorted(counts.keys() - signed)
    if added:
        raise Unauthenticated(
            f"the {link} link carries {_names(added)}, which it was not signed with; "
            f"{AS_HANDED_OUT}"
        )
    return dict(pairs)


def _link_shape(link: str, signed: frozenset[str]) -> Guard:
    """A guard that refuses a malformed signed link before the framework reads a parameter: a
    link without ``type`` is a 401 like any other tampered link, not a 422 for the parameter."""

    def guard(connection: AnyConnection, _handler: BaseRouteHandler) -> None:
        if _presents_link(connection):
            _link_query(connection, link, signed)

    return guard


@post(
    "/jobs/{job_id:int}/files/upload",
    operation_id="upload_file",
    summary="Upload one result file (local storage): multipart field 'file'",
    status_code=201,
    request_max_body_size=None,
    guards=[_link_shape("upload", UPLOAD_LINK)],
    # A worker's token, or none: the signed link's own query (from POST /jobs/{id}/files/url).
    security=[{BEARER: []}, {}],
    responses=errors(400, 401, 403, 404, 413, 422, 503),
)
async def upload_file(
    request: AnyRequest,
    files: Files,
    signer: Signer,
    access: Gate,
    job_id: QueueId,
    file_type: FileTypeParam,
    base_path: BasePath = "",
) -> Stored:
    if _presents_link(request):
        link = _link_query(request, "upload", UPLOAD_LINK)
        # Verified over the query as it came, every occurrence of every name.
        if not signer.verify("POST", request.url.path, request.query_params, time.time()):
            raise Unauthenticated("upload link is invalid or expired; ask for a new one")
        # From here on only the values signed: ``file_type`` and ``base_path`` are the
        # framework's reading of the same query, and are not used for a link.
        set_worker(link["worker"])  # the worker the verified link names
        grant = await files.grant_upload(job_id, link["worker"], link["type"], link["base_path"])
        if str(grant.attempt) != link["attempt"]:
            # The job was re-queued and handed on since: no longer this worker's (the DECODE
            # worker stops on a 404).
            raise JobNotFound(f"job {job_id} is no longer yours in the attempt of this link")
    else:
        worker = await worker_of(request, access)
        grant = await files.grant_upload(job_id, worker, file_type, base_path)
    announced = request.headers.get("content-length")
    # Refuse at once what cannot fit; the 1 MiB allows for the multipart framing.
    if announced and announced.isdigit() and int(announced) > files.max_upload_bytes + 2**20:
        raise PayloadTooLarge(
            f"upload exceeds the limit of {files.max_upload_bytes} bytes (MAX_UPLOAD_BYTES)"
        )
    upload = MultipartFile(request.headers.get("content-type", ""), until_hang_up(request.stream()))
    filename = await upload.open()
    size = await files.store_upload(grant, filename, upload.chunks())
    return Stored(file=filename, bytes=size)


def _file_id(request: AnyRequest) -> str:
    file_id = cast("dict[str, Any]", request.scope).get(FILE_ID_KEY)
    if file_id is None:  # a one-segment id that reached the router directly
        file_id = request.path_params.get("file_id", "")
    if not file_id:
        raise InvalidRequest("no file id in the path: GET /files/{file_id}/url")
    return str(file_id)


@get(
    "/files/{file_id:str}/url",
    operation_id="get_download_url",
    summary="A request that downloads one input file",
    description="`file_id` is a value of the job's `files_down`, unencoded: `s3://bucket/key` "
    "or an absolute path (so the path holds `//`).",
    responses=errors(401, 403, 404, 422, 503),
)
async def get_download_url(
    request: AnyRequest,
    files: Files,
    signer: Signer,
    file_id: FileIdPath,  # documented; read from the path as FileIdPaths kept it (``_file_id``)
) -> PresignedRequest:
    worker = caller(request)
    grant = await files.grant_download(worker.username, _file_id(request))
    if grant.presigned is not None:
        return grant.presigned
    path = f"/files/{grant.file_id}/download"
    url = signer.sign("GET", str(request.base_url), path, {"worker": worker.username}, time.time())
    return PresignedRequest(method="get", url=url)


@get(
    "/files/{file_id:str}/download",
    operation_id="download_file",
    summary="Download one input file (local storage)",
    guards=[_link_shape("download", DOWNLOAD_LINK)],
    # A worker's token, or none: the signed link's own query (from GET /files/{id}/url).
    security=[{BEARER: []}, {}],
    response_headers=[ResponseHeader(name="content-disposition", documentation_only=True)],
    responses=errors(400, 401, 403, 404, 422, 503),
)
async def download_file(
    request: AnyRequest,
    files: Files,
    signer: Signer,
    access: Gate,
    file_id: FileIdPath,  # documented; read from the path as FileIdPaths kept it (``_file_id``)
) -> File:
    file_id = _file_id(request)
    if _presents_link(request):
        link = _link_query(request, "download", DOWNLOAD_LINK)
        path = cast("dict[str, Any]", request.scope).get(ORIGINAL_PATH_KEY, request.url.path)
        # Verified over the query as it came, every occurrence of every name.
        if not signer.verify("GET", path, request.query_params, time.time()):
            raise Unauthenticated("download link is invalid or expired; ask for a new one")
        # Like the bearer path: only while one of the signer's jobs still names the file.
        set_worker(link["worker"])
        grant = await files.grant_download(link["worker"], file_id)
    else:
        grant = await files.grant_download(await worker_of(request, access), file_id)
    local = files.local_file(grant.file_id)
    return File(path=local, filename=local.name)


@post(
    "/_jobs",
    operation_id="submit_job",
    summary="Queue a job (user-facing API only; header x-api-key)",
    status_code=201,
    # The user-facing API reads 422 as "invalid job", also for a body that is not JSON at all.
    exception_handlers={
        ClientException: invalid_submission,
        RecursionError: nested_submission,
        UnicodeDecodeError: invalid_encoding_of_submission,
    },
    responses={
        201: ResponseSpec(
            data_container=SubmittedJob,
            description="The queued job, echoed as the user-facing API expects; header "
            "Location names it by its queue id",
            generate_examples=False,  # openapi.exact shows a real one
        ),
        **errors(401, 422, 503),
    },
)
async def submit_job(
    request: AnyRequest, jobs: Jobs, data: JSONBody[SubmittedJob]
) -> Response[bytes]:
    # Litestar's conversion of ``data`` is lenient ("7" would pass as 7) and drops what the
    # worker must receive byte for byte; the submission is decoded strictly from the body.
    try:
        submission = Submission.from_json(await request.body())
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid job submission: {exc}") from None
    job = await jobs.submit(submission)
    echo = {
        "job": msgspec.Raw(job.spec),
        "environment": data.environment,
        "group": data.group,
        "priority": data.priority,  # as sent: null stays null (it means the default)
        "paths_upload": data.paths_upload,
    }
    return Response(
        msgspec.json.encode(echo),
        media_type=JSON,
        status_code=201,
        headers={"location": f"/jobs/{job.id}/status"},
    )


def _meta_job_id(text: str) -> int:
    """``meta.job_id`` as the path gives it. A whole number written as a float (``7.0``) names
    job 7, as it did in the submission (see ``Submission.from_json``)."""
    try:
        number = float(text) if "." in text or "e" in text.lower() else int(text)
    except ValueError:
        number = None
    if isinstance(number, float) and number.is_integer() and abs(number) < 2**63:
        number = int(number)
    if not isinstance(number, int) or not 0 <= number <= MAX_DB_INT:
        raise JobNotFound(f"no job with meta.job_id {text!r}: it must be a non-negative integer")
    return number


@get(
    "/_jobs/{job_id:str}/explain",
    operation_id="explain_job",
    summary="Why a job waits (user-facing API; header x-api-key; job_id is meta.job_id)",
    responses={
        200: ResponseSpec(data_container=Explanation, description="Its state and why it waits"),
        **errors(401, 404, 503),
    },
)
async def explain_job(
    explainer: SkipValidation[WaitExplainer],
    job_id: Annotated[
        str, PathParameter(description="meta.job_id, as the user-facing API knows it")
    ],
) -> Response[bytes]:
    explanation = await explainer.explain_upstream(_meta_job_id(job_id))
    return Response(msgspec.json.encode(explanation), media_type=JSON)


class Health(msgspec.Struct):
    status: str


@get(
    "/health/live",
    operation_id="health_live",
    summary="The process is up (no I/O; for a liveness probe)",
    responses={200: ResponseSpec(data_container=Health, description="Up")},
)
async def health_live() -> Health:
    return Health(status="live")


@get(
    "/health/ready",
    operation_id="health_ready",
    summary="The process can serve: its database answers and the schema is at the code's "
    "revision (for a load balancer's health check)",
    responses={
        200: ResponseSpec(data_container=Health, description="Ready"),
        503: ResponseSpec(
            data_container=Problem,
            description="Not ready; the detail says why",
            generate_examples=False,
            examples=[
                Example(
                    summary="A 503 answer",
                    value={"detail": "the queue's database does not answer: connection refused"},
                )
            ],
        ),
    },
)
async def health_ready(probes: SkipValidation[Probes]) -> Response[bytes]:
    reason = await probes.not_ready()
    if reason is not None:
        return Response(
            msgspec.json.encode(Problem(detail=reason)),
            media_type=JSON,
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return Response(msgspec.json.encode(Health(status="ready")), media_type=JSON)


@get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics of this process (header x-api-key, or a bearer token of group "
    "'operators')",
    responses={
        200: ResponseSpec(
            data_container=str, media_type="text/plain", description="Prometheus text format"
        ),
        **errors(401, 403, 503),
        404: ResponseSpec(
            data_container=Problem,
            description="Metrics are off (METRICS=0)",
            generate_examples=False,
            examples=[
                Example(
                    summary="A 404 answer", value={"detail": "metrics are off here (METRICS=0)"}
                )
            ],
        ),
    },
)
async def metrics(probes: SkipValidation[Probes]) -> Response[bytes]:
    text, content_type = await probes.scrape()
    return Response(text, media_type=content_type)


@get(
    "/_demand",
    operation_id="demand",
    summary="Queued jobs by hardware class, for an autoscaler (header x-api-key, or a bearer token "
    "of group 'operators')",
    description="Each queued job counts in exactly one class (its environment and hardware "
    "requirement; 0 or null: anything). Per class: the jobs, the oldest one's wait in seconds, "
    "the nodes seen in WORKER_SEEN_WINDOW that could run it, the smallest of their offers, and "
    "the jobs no node seen can run (with the reason in figures). Read from the queue when asked. "
    "With `memory` (and optionally the rest of a pull's offer and the environment), only the "
    "classes a machine offering that would run, and the totals of those: what an autoscaler of "
    "one kind of machine scales on (0 when it would run none). Without `memory` the other offer "
    "parameters are not looked at, and `offer` in the answer is null.",
    responses={**errors(401, 403, 422, 503)},
)
async def demand(
    demand: SkipValidation[Demand],
    memory: Annotated[
        int | None,
        offered_count(
            "a machine's memory in MiB, as its worker would send it to GET /jobs; given, "
            "the report counts only the classes such a machine would run",
            schema_extra={"minimum": 0},  # Litestar drops a zero bound of an optional value
        ),
    ] = None,
    cpu_cores: Annotated[
        int | None,
        offered_count(
            "the machine's CPU cores (default 1, as for GET /jobs); only with memory",
            schema_extra={"minimum": 0},
        ),
    ] = None,
    gpu_mem: Annotated[
        int | None,
        offered_count(
            "the machine's GPU memory in MiB (default 0: no GPU); only with memory",
            schema_extra={"minimum": 0},
        ),
    ] = None,
    gpu_memory: Annotated[
        int | None,
        offered_count("alias of gpu_mem; wins when both are sent", schema_extra={"minimum": 0}),
    ] = None,
    gpu_model: Annotated[
        str | None,
        offered_name("the machine's GPU model, as its worker sends it; only with memory"),
    ] = None,
    gpu_archi: Annotated[
        str | None,
        offered_name("the machine's GPU architecture, as its worker sends it; only with memory"),
    ] = None,
    environment: Annotated[
        Environment | None,
        QueryParameter(
            description="the environment of the machine's worker token (default cloud); only "
            "with memory"
        ),
    ] = None,
) -> DemandReport:
    offer = machine_offer(
        memory=memory,
        cpu_cores=cpu_cores,
        gpu_mem=gpu_memory if gpu_memory is not None else gpu_mem,
        gpu_model=gpu_model,
        gpu_archi=gpu_archi,
        environment=environment,
    )
    return await demand.report(offer)


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: AnyRequest) -> Response[bytes]:
    """The OpenAPI document also where FastAPI services keep it (it is at /docs/openapi.json)."""
    schema = exact(request.app.openapi_schema.to_schema())
    return Response(msgspec.json.encode(schema), media_type=JSON)


# Who may call them (app.create_app checks each group as a whole).
PUBLIC_ROUTES = [
    welcome,
    openapi_json,
    access_info,
    upload_file,  # a signed link or a worker's token, checked by the handler
    download_file,
    health_live,
    health_ready,
]
WORKER_ROUTES = [
    pull_jobs,
    job_status_options,  # before the GET and PUT of its path: see its docstring
    get_job_status,
    put_job_status,
    get_upload_url,
    get_download_url,
]
INTERNAL_ROUTES = [submit_job, explain_job]
OPERATOR_ROUTES = [metrics, demand]
