"""The operators' dashboard over HTTP (DESIGN §7): its sign-in, its page and assets, and the two
JSON reads the page refreshes itself from (``core.overview``).

Sign-in fits a browser: the sign-in page posts a token once (a form body, never a URL), and the
service answers with its own session cookie, an HMAC-SHA256 over the user name and an expiry,
keyed by a key derived from the internal API key (``Access.derived_key``), so every API
process accepts every other's sessions and nothing is stored. The cookie is HttpOnly,
SameSite=Strict and limited to ``/ui``: scripts cannot read it, other sites cannot send it.
The data endpoints also take what ``/metrics`` takes (an operator's bearer token, or the internal
key), for scripts and tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar import Response, get, post
from litestar.datastructures import Cookie
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, SkipValidation
from litestar.response import Redirect

from workerfacing_api.core.access import OPERATORS_GROUP, Access, in_group
from workerfacing_api.core.errors import (
    AccessDenied,
    DomainError,
    FileNotFound,
    JobNotFound,
    Unauthenticated,
)
from workerfacing_api.core.fleet import shared_node_hint
from workerfacing_api.core.model import Environment, HardwareSpecs
from workerfacing_api.core.overview import JobPage, Overview, QueueOverview
from workerfacing_api.core.waiting import Explanation
from workerfacing_api.entrypoints.http.auth import api_key, bearer_token
from workerfacing_api.entrypoints.http.routes import JSON, AnyRequest, Gate, Problem, errors

ASSETS = Path(__file__).with_name("ui")
COOKIE = "wf_session"
COOKIE_PATH = "/ui"
SESSION_HOURS = 12
_KEY_LABEL = b"workerfacing-api/ui-session-v1"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_NO_CACHE = {"Cache-Control": "no-cache"}


# -- the session ------------------------------------------------------------------------------


class _Session(msgspec.Struct):
    user: str
    exp: int  # seconds since the epoch


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(user: str, expires: int, access: Access) -> str:
    """The cookie's value: the session, then its MAC."""
    body = _b64(msgspec.json.encode(_Session(user=user, exp=expires)))
    mac = hmac.new(access.derived_key(_KEY_LABEL), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def unseal(value: str, access: Access, now: float) -> str | None:
    """The user a cookie value proves, or None (forged, altered, expired or garbled)."""
    body, _, mac = value.rpartition(".")
    key = access.derived_key(_KEY_LABEL)
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        session = msgspec.json.decode(_unb64(body), type=_Session)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return session.user if session.exp > now else None


def _token_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT the verifier accepted (its signature is checked already)."""
    try:
        claims = msgspec.json.decode(_unb64(token.split(".")[1]))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return int(exp) if isinstance(exp, int | float) else None


def _session_user(request: AnyRequest, access: Access) -> str | None:
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    return unseal(value, access, time.time())


async def _require_operator(request: AnyRequest, access: Access) -> None:
    """The data endpoints' check: a session, an operator's bearer token or the internal key
    (as ``/metrics``). 401 without any, 403 for an identity outside ``operators``."""
    if _session_user(request, access) is not None:
        return
    if not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        raise Unauthenticated(
            "not signed in: sign in at /ui/login, or send 'Authorization: Bearer <token>' of "
            f"an identity in group {OPERATORS_GROUP!r}"
        )
    await access.operator(bearer_token(request), api_key(request))


def _secure(request: AnyRequest) -> bool:
    """Whether the browser reached us over https (directly, or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" or request.url.scheme == "https"


def _cookie(request: AnyRequest, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        path=COOKIE_PATH,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


# -- pages and assets ---------------------------------------------------------------------------


def _asset(name: str) -> Response[bytes]:
    # Only a file that is in the directory, by its bare name: no path of the request's making
    # is ever opened (no "..", no "/", no dot-file).
    found = {p.name: p for p in ASSETS.iterdir() if p.is_file() and not p.name.startswith(".")}
    path = found.get(name)
    if path is None or path.suffix not in _CONTENT_TYPES:
        raise FileNotFound(f"no dashboard asset {name!r}")
    return Response(path.read_bytes(), media_type=_CONTENT_TYPES[path.suffix], headers=_NO_CACHE)


@get("/ui", include_in_schema=False, sync_to_thread=False)
def dashboard(request: AnyRequest, access: Gate) -> Response[bytes] | Redirect:
    if _session_user(request, access) is None:
        return Redirect(path="/ui/login", status_code=303)
    return _asset("index.html")


@get("/ui/login", include_in_schema=False, sync_to_thread=False)
def login_page() -> Response[bytes]:
    return _asset("login.html")


@get("/ui/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def static_asset(name: FromPath[str]) -> Response[bytes]:
    return _asset(name)


def _refusal(request: AnyRequest, error: DomainError) -> Response[Any]:
    """A failed sign-in: a short page for a browser's form, ``{"detail"}`` for a script."""
    status = 403 if isinstance(error, AccessDenied) else 401
    if "text/html" not in request.headers.get("accept", ""):
        raise error
    page = (
        "<!doctype html><meta charset='utf-8'><title>Not signed in</title>"
        f"<p>{html.escape(error.detail)}</p><p><a href='/ui/login'>Sign in again</a></p>"
    )
    return Response(page.encode(), media_type="text/html; charset=utf-8", status_code=status)


@post("/ui/session", include_in_schema=False, status_code=303)
async def sign_in(request: AnyRequest, access: Gate) -> Response[Any]:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    try:
        if not token:
            raise Unauthenticated("paste a token into the form to sign in")
        identity = in_group(await access.identity(token), OPERATORS_GROUP)
    except (Unauthenticated, AccessDenied) as exc:
        return _refusal(request, exc)
    now = int(time.time())
    expires = now + SESSION_HOURS * 3600
    token_expires = _token_expiry(token)
    if token_expires is not None:
        expires = min(expires, token_expires)
    value = seal(identity.username, expires, access)
    return Redirect(
        path="/ui", status_code=303, cookies=[_cookie(request, value, max(expires - now, 0))]
    )


@post("/ui/logout", include_in_schema=False, status_code=303)
async def sign_out(request: AnyRequest) -> Redirect:
    return Redirect(path="/ui/login", status_code=303, cookies=[_cookie(request, "", 0)])


# -- the data endpoints -------------------------------------------------------------------------


class ThroughputEntry(msgspec.Struct):
    minute: str  # its start, ISO 8601 UTC
    pulled: int
    finished: int


class WaitingEntry(msgspec.Struct):
    environment: str  # cloud, local or any
    cpu_cores: int  # requirements: 0 (numbers) or null (names) is "anything"
    memory: int
    gpu_mem: int
    gpu_model: str | None
    gpu_archi: str | None
    jobs: int
    oldest_age_seconds: float
    reason: str


class WorkerEntry(msgspec.Struct):
    name: str  # the node's id
    account: str
    address: str  # "" when unknown
    instance: str | None
    # Without an instance id: that every identical fetcher is this node, and the remedy.
    shared: str | None
    environment: str
    cpu_cores: int
    memory: int
    gpu_model: str | None
    gpu_archi: str | None
    gpu_mem: int
    last_seen_seconds_ago: float
    active_jobs: list[int]
    set_aside: bool
    aside_until: str | None  # while set aside
    aside_reason: str | None
    strikes: int


class FailureEntry(msgspec.Struct):
    job_id: int  # queue id
    meta_job_id: int
    kind: Literal["failed", "requeued"]
    worker: str | None
    at: str
    runtime_details: str | None


class UpstreamEntry(msgspec.Struct):
    configured: bool
    healthy: bool
    outbox_backlog: int
    oldest_event_age_seconds: float | None


class OverviewBody(msgspec.Struct):
    now: str
    jobs_by_state: dict[str, int]
    oldest_queued_age_seconds: float | None
    throughput: list[ThroughputEntry]  # 60 minutes, oldest first
    waiting_without_worker: list[WaitingEntry]
    workers: list[WorkerEntry]
    recent_failures: list[FailureEntry]
    upstream: UpstreamEntry


class JobEntry(msgspec.Struct):
    id: int  # queue id
    meta_job_id: int
    status: str
    worker: str | None
    attempt: int
    num_retries: int
    environment: str  # cloud, local or any
    group: str | None
    priority: int
    created_at: str
    updated_at: str | None
    last_heartbeat_at: str | None
    runtime_details: str | None
    hardware: HardwareSpecs


class AttemptEntry(msgspec.Struct):
    attempt: int
    worker: str
    pulled_at: str
    ended_at: str | None
    outcome: str | None  # finished, error, timeout; null while it runs


class EventEntry(msgspec.Struct):
    status: str
    created_at: str
    tries: int


class JobPageBody(msgspec.Struct):
    job: JobEntry
    attempts: list[AttemptEntry]
    pending_events: list[EventEntry]
    why: Explanation | None  # for a queued job: why it waits (as GET /_jobs/{id}/explain)


def _env(environment: Environment | None) -> str:
    return "any" if environment is None else environment.value


def _overview_body(view: QueueOverview) -> OverviewBody:
    now = view.now
    return OverviewBody(
        now=now.isoformat(),
        jobs_by_state=view.stats.by_status,
        oldest_queued_age_seconds=view.stats.oldest_queued_age,
        throughput=[
            ThroughputEntry(minute=t.minute.isoformat(), pulled=t.pulled, finished=t.finished)
            for t in view.throughput
        ],
        waiting_without_worker=[
            WaitingEntry(
                environment=_env(u.waiting.environment),
                cpu_cores=u.waiting.cpu_cores,
                memory=u.waiting.memory,
                gpu_mem=u.waiting.gpu_mem,
                gpu_model=u.waiting.gpu_model,
                gpu_archi=u.waiting.gpu_archi,
                jobs=u.waiting.jobs,
                oldest_age_seconds=(now - u.waiting.oldest_created_at).total_seconds(),
                reason=u.reason,
            )
            for u in view.waiting_without_worker
        ],
        workers=[
            WorkerEntry(
                name=w.name,
                account=w.account,
                address=w.profile.address,
                instance=w.profile.instance,
                shared=shared_node_hint(w),
                environment=w.profile.environment.value,
                cpu_cores=w.profile.cpu_cores,
                memory=w.profile.memory,
                gpu_model=w.profile.gpu_model,
                gpu_archi=w.profile.gpu_archi,
                gpu_mem=w.profile.gpu_mem,
                last_seen_seconds_ago=max((now - w.last_seen_at).total_seconds(), 0.0),
                active_jobs=list(w.active_jobs),
                set_aside=w.aside(now),
                aside_until=w.aside_until.isoformat() if w.aside(now) and w.aside_until else None,
                aside_reason=w.aside_reason if w.aside(now) else None,
                strikes=w.strikes,
            )
            for w in view.workers
        ],
        recent_failures=[
            FailureEntry(
                job_id=f.job_id,
                meta_job_id=f.upstream_id,
                kind=f.kind.value,
                worker=f.worker,
                at=f.at.isoformat(),
                runtime_details=f.runtime_details,
            )
            for f in view.recent_failures
        ],
        upstream=UpstreamEntry(
            configured=view.upstream.configured,
            healthy=view.upstream.healthy,
            outbox_backlog=view.upstream.outbox_backlog,
            oldest_event_age_seconds=view.upstream.oldest_event_age,
        ),
    )


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _job_page_body(page: JobPage) -> JobPageBody:
    job = page.job
    return JobPageBody(
        job=JobEntry(
            id=job.id,
            meta_job_id=job.upstream_id,
            status=job.status.value,
            worker=job.worker,
            attempt=job.attempt,
            num_retries=job.num_retries,
            environment=_env(job.environment),
            group=job.group,
            priority=job.priority,
            created_at=job.created_at.isoformat(),
            updated_at=_iso(job.updated_at),
            last_heartbeat_at=_iso(job.last_heartbeat_at),
            runtime_details=job.runtime_details,
            hardware=job.hardware,
        ),
        attempts=[
            AttemptEntry(
                attempt=a.attempt,
                worker=a.worker,
                pulled_at=a.pulled_at.isoformat(),
                ended_at=_iso(a.ended_at),
                outcome=None if a.outcome is None else a.outcome.value,
            )
            for a in page.attempts
        ],
        pending_events=[
            EventEntry(status=e.status.value, created_at=e.created_at.isoformat(), tries=e.attempts)
            for e in page.pending_events
        ],
        why=page.why,
    )


_DATA_ERRORS = {
    401: "Not signed in: no session cookie, operator's bearer token or internal key",
    403: "The token's identity is not in group 'operators'",
    404: "No job with this queue id",
}


def _data_errors(*codes: int) -> dict[int, ResponseSpec]:
    """As ``routes.errors``, in the dashboard's words where they differ."""
    return {
        code: ResponseSpec(data_container=Problem, description=_DATA_ERRORS[code])
        if code in _DATA_ERRORS
        else spec
        for code, spec in errors(*codes).items()
    }


@get(
    "/ui/api/overview",
    operation_id="dashboard_overview",
    summary="The dashboard's queue at a glance (session cookie, an operator's bearer token, "
    "or header x-api-key)",
    responses={
        200: ResponseSpec(data_container=OverviewBody, description="The queue now"),
        **_data_errors(401, 403, 503),
    },
)
async def overview(
    request: AnyRequest, access: Gate, overview: SkipValidation[Overview]
) -> Response[bytes]:
    await _require_operator(request, access)
    body = _overview_body(await overview.overview())
    return Response(msgspec.json.encode(body), media_type=JSON, headers=_NO_CACHE)


@get(
    "/ui/api/jobs/{job_id:int}",
    operation_id="dashboard_job",
    summary="One job in full for the dashboard: attempts, pending events, why it waits "
    "(job_id is the queue id)",
    responses={
        200: ResponseSpec(data_container=JobPageBody, description="The job"),
        **_data_errors(401, 403, 404, 503),
    },
)
async def job_page(
    request: AnyRequest, access: Gate, overview: SkipValidation[Overview], job_id: FromPath[int]
) -> Response[bytes]:
    await _require_operator(request, access)
    page = await overview.job_page(job_id)
    if page is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return Response(msgspec.json.encode(_job_page_body(page)), media_type=JSON, headers=_NO_CACHE)


UI_ROUTES = [dashboard, login_page, static_asset, sign_in, sign_out, overview, job_page]
