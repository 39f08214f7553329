"""The operators' dashboard over HTTP (ARCHITECTURE §7): its sign-in and session, its pages and
assets, and the two JSON reads the page refreshes itself from (``core.overview``, and the demand
by hardware class of ``core.demand``, as ``GET /_demand`` has it).

Sign-in fits a browser: the sign-in page posts a token once (a form body, never a URL), and the
service keeps a session for it through Litestar's server-side session middleware, in the store
the container provides (the queue's database, or this process with the in-memory queue): the
cookie holds only a random session id, every API process reads the same sessions, and signing
out deletes the session, so the cookie reads nothing anywhere afterwards. A session lasts
``SESSION_HOURS`` at most, and never beyond the expiry of the token it was made from. The cookie
is HttpOnly, SameSite=Strict, Secure over https, and limited to ``/ui``.

A request that changes something (signing in or out) is refused when it comes from another site
(``refuse_other_sites``): a form on another page could otherwise sign a browser in as the
attacker's operator, or out. The data endpoints also take what ``/metrics`` takes (an operator's
bearer token, or the internal key), for scripts and tests. The pages and assets are files of
``ui/``, the assets served by Litestar's static files router; none has an inline script or style
(every answer's Content-Security-Policy forbids them, see ``app.py``).
"""

from __future__ import annotations

import base64
import binascii
import html
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import msgspec
from litestar import MediaType, Response, Router, get, post
from litestar.datastructures import CacheControlHeader
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, SkipValidation
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from workerfacing_api.core.access import OPERATORS_GROUP, in_group
from workerfacing_api.core.demand import DemandReport
from workerfacing_api.core.errors import (
    AccessDenied,
    DomainError,
    JobNotFound,
    Unauthenticated,
)
from workerfacing_api.core.fleet import shared_node_hint
from workerfacing_api.core.model import Environment, HardwareSpecs
from workerfacing_api.core.overview import JobPage, Overview, QueueOverview
from workerfacing_api.core.ports import Clock
from workerfacing_api.core.waiting import Explanation
from workerfacing_api.entrypoints.http.auth import api_key, bearer_token
from workerfacing_api.entrypoints.http.routes import JSON, AnyRequest, Gate, Problem, errors

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
                    f"dashboard's own pages sign in and out; open {COOKIE_PATH}/login and sign "
                    "in there"
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


async def _require_operator(request: AnyRequest, access: Gate, clock: Clock) -> None:
    """The data endpoints' check: a session, an operator's bearer token or the internal key
    (as ``/metrics``). 401 without any, 403 for an identity outside ``operators``."""
    if _operator_of_session(request, clock.now()) is not None:
        return
    if not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        raise Unauthenticated(
            "not signed in: sign in at /ui/login, or send 'Authorization: Bearer <token>' of "
            f"an identity in group {OPERATORS_GROUP!r}"
        )
    await access.operator(bearer_token(request), api_key(request))


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


def dashboard_routes() -> list[Router]:
    """The dashboard's routes: those that read or change a session, behind the cross-site check
    and the sessions (in that order: a refused request never reaches its session), and the
    sign-in page and assets, which need neither."""
    return [
        Router(
            "/",
            route_handlers=[dashboard, sign_in, sign_out, overview, job_page],
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
