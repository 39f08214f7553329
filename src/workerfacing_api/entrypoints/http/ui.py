"""The operators' dashboard over HTTP (ARCHITECTURE §7): its sign-in and session, its pages and
assets, the JSON reads the page refreshes itself from (``core.overview``, with the demand by
hardware class of ``core.demand`` as ``GET /_demand`` has it; the jobs view, any job found by
state, environment, worker or node, class, age or id, a keyset page at a time; the audit log),
and the operators' actions (retry, fail with a reason, release), which are the core's
``Operations``, as the CLI calls them.

Sign-in fits a browser: the sign-in page posts a token once (a form body, never a URL), and the
service keeps a session for it through Litestar's server-side session middleware, in the store
the container provides (the queue's database, or this process with the in-memory queue): the
cookie holds only a random session id, every API process reads the same sessions, and signing
out deletes the session, so the cookie reads nothing anywhere afterwards. A session lasts
``SESSION_HOURS`` at most, and never beyond the expiry of the token it was made from. The cookie
is HttpOnly, SameSite=Strict, Secure over https, and limited to ``/ui``.

A request that changes something (signing in or out, an action) is refused when it comes from
another site (``refuse_other_sites``): a form on another page could otherwise sign a browser in as
the attacker's operator, or out, or make a signed-in operator's browser retry or fail jobs. The
data endpoints and the actions also take what ``/metrics`` takes (an operator's bearer token, or
the internal key), for scripts and tests; the audit log names the operator, or "internal key". The
pages and assets are files of ``ui/``, the assets served by Litestar's static files router; none
has an inline script or style (every answer's Content-Security-Policy forbids them, see
``app.py``).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import msgspec
from litestar import MediaType, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter, SkipValidation
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, ExceptionHandlersMap, HTTPScope, Receive, Scope, Send

from workerfacing_api.core.access import OPERATORS_GROUP, in_group
from workerfacing_api.core.demand import DemandReport
from workerfacing_api.core.errors import (
    AccessDenied,
    DomainError,
    InvalidRequest,
    JobNotFound,
    Unauthenticated,
)
from workerfacing_api.core.fleet import shared_node_hint
from workerfacing_api.core.jobs import MAX_OPERATOR_REASON, action_done
from workerfacing_api.core.model import (
    MAX_DB_INT,
    NAME_MAX,
    NO_CONTROL_CHARACTERS,
    AuditEntry,
    ClassKey,
    Environment,
    HardwareSpecs,
    Job,
    JobQuery,
    JobStatus,
)
from workerfacing_api.core.operations import MAX_JOBS_PER_ACTION, Operations
from workerfacing_api.core.overview import JobPage, Overview, QueueOverview
from workerfacing_api.core.ports import Clock, DashboardReads
from workerfacing_api.core.text import storable
from workerfacing_api.core.waiting import Explanation
from workerfacing_api.entrypoints.http.auth import api_key, bearer_token
from workerfacing_api.entrypoints.http.errors import validation_error
from workerfacing_api.entrypoints.http.routes import (
    JSON,
    NAME_HELP,
    QUERY_MAX,
    AnyRequest,
    Gate,
    Problem,
    errors,
)

ASSETS = Path(__file__).with_name("ui")
COOKIE = "wf_session"
COOKIE_PATH = "/ui"
SESSION_HOURS = 12
# The name of the sessions' store among the app's stores (app.py registers the container's).
SESSION_STORE = "ui_sessions"
# A route handler's ``opt`` key: the handler starts a new session (the sign-in).
_STARTS_SESSION = "starts_session"
_NO_CACHE = {"Cache-Control": "no-cache"}
_REVALIDATE = CacheControlHeader(no_cache=True)  # a new release's page and script, at once
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Clocked = SkipValidation[Clock]
Actions = SkipValidation[Operations]
Reads = SkipValidation[DashboardReads]


# -- requests from other sites ------------------------------------------------------------------

_FETCH_HEADERS = frozenset({b"sec-fetch-site", b"origin", b"host"})


def _from_another_site(scope: HTTPScope) -> bool:
    """Whether a browser sent this request for a page of another origin. Browsers say so in
    ``Sec-Fetch-Site``; those too old to send it still send ``Origin`` with a POST, compared
    with the ``Host`` it was sent to. A request with neither is no browser's cross-site form (a
    script, curl): nothing to protect there. (The same rule as Go's CrossOriginProtection.)"""
    headers = {name: value for name, value in scope["headers"] if name in _FETCH_HEADERS}
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        # "none": the user's own navigation (typed, a bookmark); "same-site" is another origin,
        # another port or subdomain, whose cookies the browser would still send.
        return site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False
    host = headers.get(b"host", b"").decode("latin-1").lower()
    return urlsplit(origin.decode("latin-1")).netloc.lower() != host or not host


def refuse_other_sites(app: ASGIApp) -> ASGIApp:
    """Middleware: a request that changes something is refused with 403 when it comes from
    another site, before the session is read or written (so it leaves none behind)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            http = cast("HTTPScope", scope)
            if http["method"] not in _SAFE_METHODS and _from_another_site(http):
                raise AccessDenied(
                    "refused: this request came from a page of another site, and only the "
                    "dashboard's own pages sign in, sign out and act on jobs; open "
                    f"{COOKIE_PATH} and act there"
                )
        await app(scope, receive, send)

    return middleware


# -- the session --------------------------------------------------------------------------------


def _session_config(*, secure: bool) -> ServerSideSessionConfig:
    return ServerSideSessionConfig(
        key=COOKIE,
        path=COOKIE_PATH,
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=secure,
        store=SESSION_STORE,
    )


def _cookie_sent(scope: HTTPScope) -> str | None:
    """The session id the request's cookie names, if any ("null" is Litestar's cleared one)."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, sent = pair.strip().partition("=")
                if key == COOKIE and sent and sent != "null":
                    return sent
    return None


def dashboard_sessions(app: ASGIApp) -> ASGIApp:
    """Middleware: Litestar's server-side sessions (``ServerSideSessionConfig``) for the routes
    that read or change one, with three rules around them.

    - The cookie is Secure when the request came over https. The scheme is the request's own:
      uvicorn takes it from ``X-Forwarded-Proto`` of a trusted proxy only (``TRUSTED_PROXIES``).
    - A request without the cookie has no session to read and gets none written. (Litestar's
      middleware would store an empty session for it: a row for every anonymous request.)
    - A sign-in never takes over the session id its cookie names (one planted by another site
      of the same domain would become signed in): it starts a new session, and the one it
      replaces ends.

    A handler ends a session that holds no operator (``request.clear_session``): the middleware
    then deletes what the cookie named and clears the cookie, and writes nothing."""
    over_https = _session_config(secure=True).middleware(app)
    over_http = _session_config(secure=False).middleware(app)

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        http = cast("HTTPScope", scope)
        sent = _cookie_sent(http)
        if http["route_handler"].opt.get(_STARTS_SESSION):
            if sent is not None:
                await http["app"].stores.get(SESSION_STORE).delete(sent)
            # The middleware takes the id from the request's cookies, parsed from these headers
            # (no layer before this one parses them: a planted cookie's test would fail).
            headers = [(name, value) for name, value in http["headers"] if name != b"cookie"]
            scope = cast("Scope", {**http, "headers": headers})
        elif sent is None:
            http["session"] = {}
            await app(scope, receive, send)
            return
        chosen = over_https if http["scheme"] == "https" else over_http
        await chosen(scope, receive, send)

    return middleware


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT the verifier accepted (its signature is checked already)."""
    try:
        part = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def _operator_of_session(request: AnyRequest, now: datetime) -> str | None:
    """The operator the request's session is of, or None; a session that holds none (expired,
    or none at all) is cleared, see ``dashboard_sessions``."""
    session = request.session
    user, until = session.get("user"), session.get("until")
    if isinstance(user, str) and isinstance(until, int | float) and until > now.timestamp():
        return user
    request.clear_session()
    return None


def _not_signed_in() -> Unauthenticated:
    return Unauthenticated(
        "not signed in: sign in at /ui/login, or send 'Authorization: Bearer <token>' of "
        f"an identity in group {OPERATORS_GROUP!r}"
    )


async def _require_operator(request: AnyRequest, access: Gate, clock: Clock) -> str:
    """The data endpoints' and actions' check: a session, an operator's bearer token or the
    internal key (as ``/metrics``). 401 without any, 403 for an identity outside ``operators``.
    Returns who: the operator's name, or ``"internal key"`` (the audit log's actor)."""
    user = _operator_of_session(request, clock.now())
    if user is not None:
        return user
    if not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        raise _not_signed_in()
    return await access.operator(bearer_token(request), api_key(request))


def _some_credential(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: a request with no credential at all (no session cookie, token or key) is
    refused with 401 before its parameters or body are read, so that it learns first what it
    lacks; the handler checks the credential itself (``_require_operator``)."""
    if _cookie_sent(cast("HTTPScope", connection.scope)) is None and not (
        connection.headers.get("authorization") or connection.headers.get("x-api-key")
    ):
        raise _not_signed_in()


# -- pages and assets ---------------------------------------------------------------------------


def _page(name: str) -> File:
    return File(ASSETS / name, filename=name, content_disposition_type="inline")


@get(
    "/ui",
    include_in_schema=False,
    cache_control=_REVALIDATE,
    media_type=MediaType.HTML,
    sync_to_thread=False,
)
def dashboard(request: AnyRequest, clock: Clocked) -> File | Redirect:
    if _operator_of_session(request, clock.now()) is None:
        return Redirect(path="/ui/login", status_code=303)
    return _page("index.html")


@get(
    "/ui/login",
    include_in_schema=False,
    cache_control=_REVALIDATE,
    media_type=MediaType.HTML,
    sync_to_thread=False,
)
def login_page() -> File:
    return _page("login.html")


def _refusal(request: AnyRequest, error: DomainError) -> Response[Any]:
    """A failed sign-in: a short page for a browser's form, ``{"detail"}`` for a script."""
    status = 403 if isinstance(error, AccessDenied) else 401
    if "text/html" not in request.headers.get("accept", ""):
        raise error
    page = (
        "<!doctype html><meta charset='utf-8'><title>Not signed in</title>"
        f"<p>{html.escape(error.detail)}</p><p><a href='/ui/login'>Sign in again</a></p>"
    )
    return Response(page.encode(), media_type=MediaType.HTML, status_code=status)


@post("/ui/session", include_in_schema=False, status_code=303, opt={_STARTS_SESSION: True})
async def sign_in(request: AnyRequest, access: Gate, clock: Clocked) -> Response[Any]:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    try:
        if not token:
            raise Unauthenticated("paste a token into the form to sign in")
        identity = in_group(await access.identity(token), OPERATORS_GROUP)
    except (Unauthenticated, AccessDenied) as exc:
        request.clear_session()
        return _refusal(request, exc)
    until = clock.now().timestamp() + SESSION_HOURS * 3600
    token_expires = _token_expiry(token)
    if token_expires is not None:
        until = min(until, token_expires)
    request.set_session({"user": identity.username, "until": until})
    return Redirect(path="/ui", status_code=303)


@post("/ui/logout", include_in_schema=False, status_code=303)
async def sign_out(request: AnyRequest) -> Redirect:
    request.clear_session()  # deleted from the store: the cookie reads nothing, anywhere
    return Redirect(path="/ui/login", status_code=303)


# -- the data endpoints -------------------------------------------------------------------------


class ThroughputEntry(msgspec.Struct):
    minute: str  # its start, ISO 8601 UTC
    pulled: int
    finished: int


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
    # The queued jobs by hardware class, exactly as GET /_demand answers: the classes no node
    # seen can run are those with no_node_can_run > 0, each with its reason.
    demand: DemandReport
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
        demand=view.demand,
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
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    overview: SkipValidation[Overview],
) -> Response[bytes]:
    await _require_operator(request, access, clock)
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
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    overview: SkipValidation[Overview],
    job_id: FromPath[int],
) -> Response[bytes]:
    await _require_operator(request, access, clock)
    page = await overview.job_page(job_id)
    if page is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return Response(msgspec.json.encode(_job_page_body(page)), media_type=JSON, headers=_NO_CACHE)


# -- the jobs view ------------------------------------------------------------------------------

JOBS_PAGE_MAX = 200
_STATE = "|".join(s.value for s in JobStatus)
# One or more states, comma-separated: ``state=error`` or ``state=queued,running`` (the
# parameter may also be repeated). ``$(?!\n)``: Python's ``$`` alone also matches before a final
# line feed (see ``NO_CONTROL_CHARACTERS``).
STATES_PATTERN = rf"^({_STATE})(,({_STATE}))*$(?!\n)"
# A hardware class as the demand report names one, ``environment:cpu_cores:memory:gpu_mem:
# gpu_model:gpu_archi`` (numbers in MiB; 0 or empty: anything), e.g. ``local:0:0:40000::``.
# A name holding ":" cannot be written so (no real GPU model or architecture has one).
_CLASS_NAME = rf"([^:\x00-\x1f\x7f-\x9f]{{0,{NAME_MAX}}})"
_CLASS_NUMBER = r"(\d{0,15})"  # below 2**53: the document's bounds are floats
CLASS_PATTERN = (
    rf"^(cloud|local|any):{_CLASS_NUMBER}:{_CLASS_NUMBER}:{_CLASS_NUMBER}:"
    rf"{_CLASS_NAME}:{_CLASS_NAME}$(?!\n)"
)
# Ages in seconds up to some 300 years: any job's, and a date every database can hold.
AGE_MAX = 10**10
# The end of a job's runtime_details a row of the jobs view shows (a traceback's end matters).
DETAILS_SHOWN = 200

StateList = Annotated[str, msgspec.Meta(pattern=STATES_PATTERN)]


def class_of(job: Job) -> str:
    """The hardware class of ``job`` as the jobs view's ``class`` filter writes it, and as the
    demand report groups its queued jobs (names as stored, "anything" as 0 or empty)."""
    need = job.hardware
    environment = "any" if job.environment is None else job.environment.value
    model = "" if need.gpu_model is None else storable(need.gpu_model)
    archi = "" if need.gpu_archi is None else storable(need.gpu_archi)
    return (
        f"{environment}:{need.cpu_cores or 0}:{need.memory or 0}:{need.gpu_mem or 0}:"
        f"{model}:{archi}"
    )


def _class_key(text: str) -> ClassKey:
    """The ``class`` filter (already matched against ``CLASS_PATTERN``) as the queue's key."""
    match = re.fullmatch(CLASS_PATTERN.removesuffix("$(?!\n)"), text)
    if match is None:  # pragma: no cover - Litestar checked the pattern
        raise InvalidRequest(f"query parameter 'class': {text!r} is not a hardware class")
    environment, cores, memory, gpu_mem, model, archi = match.groups()
    return ClassKey(
        environment=environment,
        cpu_cores=int(cores or 0),
        memory=int(memory or 0),
        gpu_mem=int(gpu_mem or 0),
        gpu_model=model or None,
        gpu_archi=archi or None,
    )


def _states(values: tuple[str, ...]) -> tuple[JobStatus, ...]:
    named = (JobStatus(part) for value in values for part in value.split(","))
    return tuple(dict.fromkeys(named))


def _short(details: str | None) -> str | None:
    if details is None or len(details) <= DETAILS_SHOWN:
        return details
    return "…" + details[-DETAILS_SHOWN:]


class JobRow(msgspec.Struct):
    id: int  # queue id
    meta_job_id: int
    status: str
    environment: str  # cloud, local or any
    # The hardware class, as the ``class`` filter takes it.
    hardware_class: str = msgspec.field(name="class")
    hardware: HardwareSpecs = msgspec.field(default_factory=HardwareSpecs)
    worker: str | None = None  # the account that holds it, or held it last
    node: str | None = None
    attempt: int = 0
    created_at: str = ""
    updated_at: str | None = None
    age_seconds: float = 0.0
    runtime_details: str | None = None  # its last 200 characters


class JobsBody(msgspec.Struct):
    now: str
    jobs: list[JobRow]  # newest (highest queue id) first
    # The ``before`` of the next page; null on the last.
    next: int | None


def _job_row(job: Job, now: datetime) -> JobRow:
    return JobRow(
        id=job.id,
        meta_job_id=job.upstream_id,
        status=job.status.value,
        environment=_env(job.environment),
        hardware_class=class_of(job),
        hardware=job.hardware,
        worker=job.worker,
        node=job.node,
        attempt=job.attempt,
        created_at=job.created_at.isoformat(),
        updated_at=_iso(job.updated_at),
        age_seconds=max((now - job.created_at).total_seconds(), 0.0),
        runtime_details=_short(job.runtime_details),
    )


def _name_filter(description: str) -> Any:
    return QueryParameter(
        max_length=NAME_MAX,
        pattern=NO_CONTROL_CHARACTERS,
        description=f"{description}; {NAME_HELP}",
    )


# Query parameters whose names Python or Litestar keep for themselves, by their names on the wire.
_WIRE_NAMES = {"states": "state", "hardware_class": "class", "queue_id": "id"}


def _validation_in_words(request: AnyRequest, exc: Exception) -> Response[Any]:
    """A refused parameter or body of the jobs view and the actions, as ``validation_error``
    words it, with each parameter named as the caller sent it and each pattern in words."""
    assert isinstance(exc, ValidationException)
    items = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = item.get("key")
            message = str(item.get("message", ""))
            if key == "data" and message == "'data'":  # no body at all
                message = "a JSON object is required"
            for pattern, words in _PATTERNS_IN_WORDS.items():
                message = message.replace(f"`str` matching regex {pattern!r}", words)
            item = {**item, "key": _WIRE_NAMES.get(str(key), key), "message": message}
        items.append(item)
    return validation_error(request, ValidationException(detail=exc.detail, extra=items))


def _in_words() -> ExceptionHandlersMap:
    return {ValidationException: _validation_in_words}


@get(
    "/ui/api/jobs",
    operation_id="dashboard_jobs",
    guards=[_some_credential],
    exception_handlers=_in_words(),
    summary="Find jobs for the dashboard: by state, environment, worker or node, hardware "
    "class, age, meta.job_id or queue id, newest first, a page at a time",
    description="Every filter given must hold. Pages are keyset pages: pass the answer's "
    "`next` as `before` for the next one (stable while jobs are added: none is repeated or "
    "skipped). Same access as the other dashboard data.",
    responses={
        200: ResponseSpec(data_container=JobsBody, description="A page of jobs"),
        **_data_errors(401, 403, 422, 503),
    },
)
async def jobs_view(
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    dashboard_reads: Reads,
    # ``state`` is a name Litestar keeps for the app's state: the parameter is renamed.
    states: Annotated[
        tuple[StateList, ...],
        QueryParameter(
            name="state",
            description="the jobs in any of these states: repeatable (state=error&state=queued) "
            f"or comma-separated (state=queued,running); states: {', '.join(JobStatus)}",
            schema_extra={"items": {"type": "string", "pattern": STATES_PATTERN}},
        ),
    ] = (),
    environment: Annotated[
        Literal["cloud", "local", "any"] | None,
        QueryParameter(description="the jobs of this environment ('any': a job that named none)"),
    ] = None,
    worker: Annotated[
        str | None, _name_filter("the jobs a worker account holds, or held last")
    ] = None,
    node: Annotated[
        str | None, _name_filter("the jobs a node (its id, n-…) holds, or held last")
    ] = None,
    hardware_class: Annotated[
        str | None,
        QueryParameter(
            name="class",
            pattern=CLASS_PATTERN,
            description="the jobs of one hardware class, as the demand report lists them: "
            "environment:cpu_cores:memory:gpu_mem:gpu_model:gpu_archi, memory in MiB, 0 or "
            "empty for anything (e.g. local:0:0:40000:: is local jobs that ask for 40 000 MiB "
            "of GPU memory and nothing else)",
        ),
    ] = None,
    min_age: Annotated[
        float | None,
        QueryParameter(
            ge=0,
            le=AGE_MAX,
            description="the jobs submitted at least this many seconds ago",
            schema_extra={"minimum": 0},  # Litestar drops a zero bound of an optional value
        ),
    ] = None,
    max_age: Annotated[
        float | None,
        QueryParameter(
            ge=0,
            le=AGE_MAX,
            description="the jobs submitted at most this many seconds ago",
            schema_extra={"minimum": 0},
        ),
    ] = None,
    job_id: Annotated[
        int | None,
        QueryParameter(
            ge=0,
            le=QUERY_MAX,
            description="the job the user-facing API knows by this meta.job_id (an integer)",
            schema_extra={"minimum": 0},
        ),
    ] = None,
    queue_id: Annotated[
        int | None,
        QueryParameter(
            name="id", ge=1, le=QUERY_MAX, description="the job of this queue id (an integer)"
        ),
    ] = None,
    before: Annotated[
        int | None,
        QueryParameter(
            ge=1,
            le=QUERY_MAX,
            description="the page after the one whose answer gave this `next` (queue ids below it)",
        ),
    ] = None,
    limit: Annotated[
        int,
        QueryParameter(ge=1, le=JOBS_PAGE_MAX, description=f"jobs per page, 1 to {JOBS_PAGE_MAX}"),
    ] = 50,
) -> Response[bytes]:
    await _require_operator(request, access, clock)
    now = clock.now()
    query = JobQuery(
        states=_states(states),
        environment=environment,
        worker=worker,
        node=node,
        hardware=None if hardware_class is None else _class_key(hardware_class),
        created_before=None if min_age is None else now - timedelta(seconds=min_age),
        created_after=None if max_age is None else now - timedelta(seconds=max_age),
        upstream_id=job_id,
        queue_id=queue_id,
        before_id=before,
    )
    found = await dashboard_reads.list_jobs(query, limit + 1)
    page = found[:limit]
    body = JobsBody(
        now=now.isoformat(),
        jobs=[_job_row(job, now) for job in page],
        next=page[-1].id if len(found) > limit else None,
    )
    return Response(msgspec.json.encode(body), media_type=JSON, headers=_NO_CACHE)


# -- the operators' actions and their audit log -------------------------------------------------

QueueId = Annotated[int, msgspec.Meta(ge=1, le=MAX_DB_INT)]
QueueIds = Annotated[
    list[QueueId],
    msgspec.Meta(
        min_length=1,
        max_length=MAX_JOBS_PER_ACTION,
        description=f"queue ids, 1 to {MAX_JOBS_PER_ACTION} of them",
        # Litestar's document leaves out the bounds of the items (``extra`` is its key for
        # what it adds to the schema as written).
        extra_json_schema={
            "extra": {"items": {"type": "integer", "minimum": 1, "maximum": MAX_DB_INT}}
        },
    ),
]
# Said so that it is shown to the job's user: some text (not only spaces), lines allowed, no
# other control character.
REASON_PATTERN = r"^(?=[\s\S]*\S)[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$(?!\n)"


_PATTERNS_IN_WORDS = {
    STATES_PATTERN: "one or more states separated by commas, each one of " + ", ".join(JobStatus),
    CLASS_PATTERN: "a hardware class environment:cpu_cores:memory:gpu_mem:gpu_model:gpu_archi "
    "(environment cloud, local or any; 0 or empty for anything; e.g. local:0:0:40000::)",
    NO_CONTROL_CHARACTERS: "text without control characters",
    REASON_PATTERN: "some text (not only spaces), without control characters other than tabs "
    "and line breaks",
}


class RetryRequest(msgspec.Struct):
    job_ids: QueueIds


class FailRequest(msgspec.Struct):
    job_ids: QueueIds
    reason: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_OPERATOR_REASON,
            pattern=REASON_PATTERN,
            description="why, in words: forwarded upstream as the jobs' runtime_details, so "
            f"their users read it; at most {MAX_OPERATOR_REASON} characters",
        ),
    ]


class ReleaseRequest(msgspec.Struct):
    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=NAME_MAX,
            pattern=NO_CONTROL_CHARACTERS,
            description="a node's id (n-…), or a worker account: all of its nodes",
        ),
    ]


class JobResult(msgspec.Struct):
    job_id: int  # queue id
    result: str  # what became of it, in words


class NodeResult(msgspec.Struct):
    node: str
    released: bool  # False: it was not set aside
    result: str


class ActionBody(msgspec.Struct):
    action: Literal["retry", "fail", "release"]
    actor: str  # as the audit log names them
    summary: str  # in words, for the page
    jobs: list[JobResult]
    nodes: list[NodeResult]


class AuditRow(msgspec.Struct):
    id: int
    at: str
    actor: str  # an operator's name, "internal key", or "cli:<user>"
    action: str  # retry, fail or release
    target: str  # the job ids, node or account it named
    jobs: list[int]
    detail: str  # the reason given, and what became of each


class AuditBody(msgspec.Struct):
    entries: list[AuditRow]  # the latest first
    next: int | None  # the ``before`` of the next page; null on the last


_ACTION_ERRORS = {
    403: "The token's identity is not in group 'operators', or the request came from a page "
    "of another site",
}


def _action_errors(*codes: int) -> dict[int, ResponseSpec]:
    specs = _data_errors(*codes)
    for code, text in _ACTION_ERRORS.items():
        if code in specs:
            specs[code] = ResponseSpec(data_container=Problem, description=text)
    return specs


def _job_results(action: Literal["retry", "fail"], actor: str, results: dict[int, str]) -> bytes:
    done = sum(1 for r in results.values() if action_done(r))
    verb = "retried" if action == "retry" else "failed"
    body = ActionBody(
        action=action,
        actor=actor,
        summary=f"{done} of {len(results)} job(s) {verb}",
        jobs=[JobResult(job_id=j, result=r) for j, r in results.items()],
        nodes=[],
    )
    return msgspec.json.encode(body)


@post(
    "/ui/api/actions/retry",
    operation_id="dashboard_retry",
    guards=[_some_credential],
    exception_handlers=_in_words(),
    summary="Retry failed jobs (as `workerfacing-api jobs retry`): each starts over, queued, "
    "and the upstream hears `queued`; written to the audit log",
    status_code=200,
    responses={
        200: ResponseSpec(data_container=ActionBody, description="What became of each job"),
        **_action_errors(401, 403, 422, 503),
    },
)
async def retry_jobs(
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    operations: Actions,
    data: JSONBody[RetryRequest],
) -> Response[bytes]:
    actor = await _require_operator(request, access, clock)
    results = await operations.retry(actor, data.job_ids)
    return Response(_job_results("retry", actor, results), media_type=JSON, headers=_NO_CACHE)


@post(
    "/ui/api/actions/fail",
    operation_id="dashboard_fail",
    guards=[_some_credential],
    exception_handlers=_in_words(),
    summary="Fail queued or active jobs on an operator's word, with a reason: the upstream "
    "hears `error` with it, and a worker's next call on the job answers 404 (it stops); "
    "written to the audit log",
    status_code=200,
    responses={
        200: ResponseSpec(data_container=ActionBody, description="What became of each job"),
        **_action_errors(401, 403, 422, 503),
    },
)
async def fail_jobs(
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    operations: Actions,
    data: JSONBody[FailRequest],
) -> Response[bytes]:
    actor = await _require_operator(request, access, clock)
    results = await operations.fail(actor, data.job_ids, data.reason)
    return Response(_job_results("fail", actor, results), media_type=JSON, headers=_NO_CACHE)


@post(
    "/ui/api/actions/release",
    operation_id="dashboard_release",
    guards=[_some_credential],
    exception_handlers=_in_words(),
    summary="End a node's cool-off now, or that of every node of an account (as "
    "`workerfacing-api workers release`); written to the audit log",
    status_code=200,
    responses={
        200: ResponseSpec(data_container=ActionBody, description="What became of each node"),
        **_action_errors(401, 403, 422, 503),
        404: ResponseSpec(
            data_container=Problem, description="No node or account of this name was ever seen"
        ),
    },
)
async def release_node(
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    operations: Actions,
    data: JSONBody[ReleaseRequest],
) -> Response[bytes]:
    actor = await _require_operator(request, access, clock)
    released = await operations.release(actor, data.name)
    if released is None:
        problem = Problem(
            detail=f"no node or worker account named {data.name!r} was ever seen; give a node's "
            "id (n-…, as the overview's worker nodes show it) or an account"
        )
        return Response(msgspec.json.encode(problem), media_type=JSON, status_code=404)
    nodes = [
        NodeResult(node=node, released=done, result="released" if done else "was not set aside")
        for node, done in released.items()
    ]
    count = sum(1 for n in nodes if n.released)
    body = ActionBody(
        action="release",
        actor=actor,
        summary=f"{count} of {len(nodes)} node(s) of {data.name} released",
        jobs=[],
        nodes=nodes,
    )
    return Response(msgspec.json.encode(body), media_type=JSON, headers=_NO_CACHE)


def _audit_row(entry: AuditEntry) -> AuditRow:
    return AuditRow(
        id=entry.id,
        at=entry.at.isoformat(),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        jobs=list(entry.jobs),
        detail=entry.detail,
    )


@get(
    "/ui/api/audit",
    operation_id="dashboard_audit",
    guards=[_some_credential],
    exception_handlers=_in_words(),
    summary="The audit log: who did what to which jobs or nodes, and when (the latest first)",
    responses={
        200: ResponseSpec(data_container=AuditBody, description="A page of the audit log"),
        **_data_errors(401, 403, 422, 503),
    },
)
async def audit_log(
    request: AnyRequest,
    access: Gate,
    clock: Clocked,
    operations: Actions,
    before: Annotated[
        int | None,
        QueryParameter(
            ge=1,
            le=QUERY_MAX,
            description="the page after the one whose answer gave this `next` (entry ids below it)",
        ),
    ] = None,
    limit: Annotated[
        int,
        QueryParameter(
            ge=1, le=JOBS_PAGE_MAX, description=f"entries per page, 1 to {JOBS_PAGE_MAX}"
        ),
    ] = 50,
) -> Response[bytes]:
    await _require_operator(request, access, clock)
    found = await operations.actions(before, limit + 1)
    page = found[:limit]
    body = AuditBody(
        entries=[_audit_row(e) for e in page],
        next=page[-1].id if len(found) > limit else None,
    )
    return Response(msgspec.json.encode(body), media_type=JSON, headers=_NO_CACHE)


def dashboard_routes() -> list[Router]:
    """The dashboard's routes: those that read or change a session, behind the cross-site check
    and the sessions (in that order: a refused request never reaches its session), and the
    sign-in page and assets, which need neither."""
    return [
        Router(
            "/",
            route_handlers=[
                dashboard,
                sign_in,
                sign_out,
                overview,
                job_page,
                jobs_view,
                audit_log,
                retry_jobs,
                fail_jobs,
                release_node,
            ],
            middleware=[refuse_other_sites, dashboard_sessions],
        ),
        Router("/", route_handlers=[login_page]),
        create_static_files_router(
            "/ui/static",
            directories=[ASSETS],
            name="dashboard_assets",
            cache_control=_REVALIDATE,
        ),
    ]
