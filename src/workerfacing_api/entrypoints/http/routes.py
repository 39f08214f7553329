"""The HTTP endpoints (DESIGN §4): thin handlers that decode input, call one core service and
encode its answer. Paths, parameter names and shapes are those the DECODE clients use."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Response, get, post, put
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import ClientException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Dependency, Parameter
from litestar.response import File

from workerfacing_api.adapters.signing import UrlSigner
from workerfacing_api.config import Settings
from workerfacing_api.core.errors import (
    InvalidRequest,
    JobNotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from workerfacing_api.core.files import FileService
from workerfacing_api.core.jobs import MAX_PULL_LIMIT, JobService
from workerfacing_api.core.model import (
    Identity,
    JobSpecs,
    JobStatus,
    PresignedRequest,
    Submission,
    SubmittedJob,
    WorkerProfile,
)
from workerfacing_api.core.ports import IdentityVerifier
from workerfacing_api.entrypoints.http.auth import (
    authenticate_worker,
    bearer_token,
    require_api_key,
)
from workerfacing_api.entrypoints.http.errors import invalid_submission, nested_submission
from workerfacing_api.entrypoints.http.multipart import MultipartFile
from workerfacing_api.entrypoints.http.routing import FILE_ID_KEY, ORIGINAL_PATH_KEY

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


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers use, injected as one dependency (``api``). One dependency, and the
    ``worker`` one built on it, keep Litestar resolving them in sequence: dependencies on the
    same level are resolved concurrently in a task group, which costs more than the handler."""

    jobs: JobService
    files: FileService
    signer: UrlSigner
    identity: IdentityVerifier
    settings: Settings


# Injected values are trusted: Litestar need not check their types on every request.
Api = Annotated[Services, Dependency(skip_validation=True)]
Worker = Annotated[Identity, Dependency(skip_validation=True)]


async def provide_worker(request: AnyRequest, api: Api) -> Identity:
    return await authenticate_worker(request, api.identity)


WORKER = {"worker": Provide(provide_worker)}


NonNegativeInt = Annotated[int, Parameter(ge=0, le=2**63 - 1)]


@get("/", operation_id="welcome", summary="Welcome message")
async def welcome() -> Welcome:
    return Welcome(message="Welcome to the DECODE OpenCloud worker-facing API")


@get("/access_info", operation_id="access_info", summary="How workers authenticate")
async def access_info(api: Api) -> AccessInfo:
    settings = api.settings
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
    dependencies=WORKER,
    responses={
        200: ResponseSpec(
            data_container=dict[str, JobSpecs],
            description="Queue id → job, as submitted; empty when nothing fits",
        )
    },
)
async def pull_jobs(
    worker: Worker,
    api: Api,
    memory: NonNegativeInt,
    cpu_cores: NonNegativeInt = 1,
    gpu_mem: NonNegativeInt = 0,
    gpu_memory: Annotated[
        int | None, Parameter(ge=0, le=2**63 - 1, description="alias of gpu_mem")
    ] = None,
    gpu_model: str | None = None,
    gpu_archi: str | None = None,
    groups: list[str] | None = None,
    limit: Annotated[
        int,
        Parameter(
            ge=1,
            le=2**63 - 1,
            description=f"jobs wanted; at most {MAX_PULL_LIMIT} are handed out per call",
        ),
    ] = 1,
    older_than: Annotated[float, Parameter(ge=0, le=10**9)] = 0.0,
) -> Response[bytes]:
    profile = WorkerProfile(
        worker=worker.username,
        environment=worker.environment,
        cpu_cores=cpu_cores,
        memory=memory,
        gpu_mem=gpu_memory if gpu_memory is not None else gpu_mem,
        gpu_model=gpu_model,
        gpu_archi=gpu_archi,
        groups=tuple(groups or ()),
        older_than=older_than,
    )
    handed = await api.jobs.pull(profile, min(limit, MAX_PULL_LIMIT))
    body = msgspec.json.encode({str(job.id): msgspec.Raw(job.spec) for job in handed})
    return Response(body, media_type=JSON)


@get(
    "/jobs/{job_id:int}/status",
    operation_id="get_job_status",
    summary="A job's status",
    dependencies=WORKER,
    responses={200: ResponseSpec(data_container=JobStatus, description="The status")},
)
async def get_job_status(worker: Worker, api: Api, job_id: int) -> Response[bytes]:
    status = await api.jobs.status_of(job_id)
    return Response(msgspec.json.encode(status.value), media_type=JSON)


@put(
    "/jobs/{job_id:int}/status",
    operation_id="put_job_status",
    summary="Report status or keep-alive",
    dependencies=WORKER,
    status_code=204,
)
async def put_job_status(
    worker: Worker,
    api: Api,
    job_id: int,
    status: str,
    runtime_details: str | None = None,
) -> None:
    await api.jobs.update_status(job_id, worker.username, status, runtime_details)


@post(
    "/jobs/{job_id:int}/files/url",
    operation_id="get_upload_url",
    summary="A request that uploads one result file",
    dependencies=WORKER,
    status_code=201,
)
async def get_upload_url(
    request: AnyRequest,
    worker: Worker,
    api: Api,
    job_id: int,
    file_type: Annotated[str, Parameter(query="type", description="output, log or artifact")],
    base_path: str = "",
) -> PresignedRequest:
    grant = await api.files.grant_upload(job_id, worker.username, file_type, base_path)
    if grant.presigned is not None:
        return grant.presigned
    params = {
        "type": grant.file_type.value,
        "base_path": grant.base_path,
        "worker": grant.worker,
        "attempt": str(grant.attempt),
    }
    path = f"/jobs/{grant.job_id}/files/upload"
    url = api.signer.sign("POST", str(request.base_url), path, params, time.time())
    return PresignedRequest(method="post", url=url)


@post(
    "/jobs/{job_id:int}/files/upload",
    operation_id="upload_file",
    summary="Upload one result file (local storage): multipart field 'file'",
    status_code=201,
    request_max_body_size=None,
)
async def upload_file(
    request: AnyRequest,
    api: Api,
    job_id: int,
    file_type: Annotated[str, Parameter(query="type", description="output, log or artifact")],
    base_path: str = "",
) -> Stored:
    params = dict(request.query_params)
    if bearer_token(request) is None and "signature" in params:
        if not api.signer.verify("POST", request.url.path, params, time.time()):
            raise Unauthenticated("upload link is invalid or expired; ask for a new one")
        grant = await api.files.grant_upload(job_id, params.get("worker", ""), file_type, base_path)
        if str(grant.attempt) != params.get("attempt"):
            # The job was re-queued and handed on since: no longer this worker's (the DECODE
            # worker stops on a 404).
            raise JobNotFound(f"job {job_id} is no longer yours in the attempt of this link")
    else:
        worker = await authenticate_worker(request, api.identity)
        grant = await api.files.grant_upload(job_id, worker.username, file_type, base_path)
    announced = request.headers.get("content-length")
    # Refuse at once what cannot fit; the 1 MiB allows for the multipart framing.
    if announced and announced.isdigit() and int(announced) > api.files.max_upload_bytes + 2**20:
        raise PayloadTooLarge(
            f"upload exceeds the limit of {api.files.max_upload_bytes} bytes (MAX_UPLOAD_BYTES)"
        )
    upload = MultipartFile(request.headers.get("content-type", ""), request.stream())
    filename = await upload.open()
    size = await api.files.store_upload(grant, filename, upload.chunks())
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
    dependencies=WORKER,
)
async def get_download_url(request: AnyRequest, worker: Worker, api: Api) -> PresignedRequest:
    grant = await api.files.grant_download(worker.username, _file_id(request))
    if grant.presigned is not None:
        return grant.presigned
    path = f"/files/{grant.file_id}/download"
    url = api.signer.sign(
        "GET", str(request.base_url), path, {"worker": worker.username}, time.time()
    )
    return PresignedRequest(method="get", url=url)


@get(
    "/files/{file_id:str}/download",
    operation_id="download_file",
    summary="Download one input file (local storage)",
    response_headers=[ResponseHeader(name="content-disposition", documentation_only=True)],
)
async def download_file(request: AnyRequest, api: Api) -> File:
    file_id = _file_id(request)
    params = dict(request.query_params)
    if bearer_token(request) is None and "signature" in params:
        path = cast("dict[str, Any]", request.scope).get(ORIGINAL_PATH_KEY, request.url.path)
        if not api.signer.verify("GET", path, params, time.time()):
            raise Unauthenticated("download link is invalid or expired; ask for a new one")
        # Like the bearer path: only while one of the signer's jobs still names the file.
        grant = await api.files.grant_download(params.get("worker", ""), file_id)
        local = api.files.local_file(grant.file_id)
    else:
        worker = await authenticate_worker(request, api.identity)
        grant = await api.files.grant_download(worker.username, file_id)
        local = api.files.local_file(grant.file_id)
    return File(path=local, filename=local.name)


@post(
    "/_jobs",
    operation_id="submit_job",
    summary="Queue a job (user-facing API only; header x-api-key)",
    status_code=201,
    guards=[require_api_key],
    # The user-facing API reads 422 as "invalid job", also for a body that is not JSON at all.
    exception_handlers={ClientException: invalid_submission, RecursionError: nested_submission},
    responses={201: ResponseSpec(data_container=SubmittedJob, description="The queued job")},
)
async def submit_job(request: AnyRequest, api: Api, data: SubmittedJob) -> Response[bytes]:
    # Litestar's conversion of ``data`` is lenient ("7" would pass as 7) and drops what the
    # worker must receive byte for byte; the submission is decoded strictly from the body.
    try:
        submission = Submission.from_json(await request.body())
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid job submission: {exc}") from None
    job = await api.jobs.submit(submission)
    echo = {
        "job": msgspec.Raw(job.spec),
        "environment": data.environment,
        "group": data.group,
        "priority": data.priority,  # as sent: null stays null (it means the default)
        "paths_upload": data.paths_upload,
    }
    return Response(msgspec.json.encode(echo), media_type=JSON, status_code=201)


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: AnyRequest) -> Response[bytes]:
    """The OpenAPI document also where FastAPI services keep it (it is at /docs/openapi.json)."""
    schema = request.app.openapi_schema.to_schema()
    return Response(msgspec.json.encode(schema), media_type=JSON)


ROUTES = [
    welcome,
    openapi_json,
    access_info,
    pull_jobs,
    get_job_status,
    put_job_status,
    get_upload_url,
    upload_file,
    get_download_url,
    download_file,
    submit_job,
]
