"""The ``workerfacing-api`` command: serve the API, mint local tokens, migrate the database,
sweep timed-out jobs, and look at the queue.

Configuration comes from the environment and ``.env`` (see the README). Errors an operator can
fix are printed as one line naming the variable or argument, with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import getpass
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import msgspec

from workerfacing_api.config import ConfigError, Settings, load_settings, trusted_proxies
from workerfacing_api.core.fleet import duration
from workerfacing_api.core.model import MAX_DB_INT

# Each command imports what it uses, inside its function: the container brings the web
# framework, SQLAlchemy and the drivers, which `--help` and a misspelt command never need
# (docs/PERFORMANCE.md, "CLI start-up"). tests/unit/test_cli_imports.py keeps it so.
if TYPE_CHECKING:
    from workerfacing_api.container import Container
    from workerfacing_api.core.demand import MachineOffer
    from workerfacing_api.core.model import AttemptOutcome, WorkerRecord

log = logging.getLogger("workerfacing_api")
T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    print(f"workerfacing-api: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _configure_logging(
    settings: Settings, level: str | None = None, *, known_secrets: Sequence[str] = ()
) -> None:
    """Logs in LOG_FORMAT, at ``level`` (a command that prints its own answer) or LOG_LEVEL,
    with ``known_secrets`` masked in every line."""
    from workerfacing_api.entrypoints.logs import configure_logging

    configure_logging(level or settings.log_level, settings.log_format, known_secrets=known_secrets)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


def _container(settings: Settings) -> Container:
    """The one container of this command: every part the command uses comes from it."""
    from workerfacing_api.container import build_container

    try:
        return build_container(settings)
    except ConfigError as exc:
        _fail(str(exc))


def _reading_container(settings: Settings) -> Container:
    """The container of a command that looks at an existing queue (``jobs``, ``workers``,
    ``db current``): only the database's URL is resolved up front. The local issuer's key and
    the generated shared key are not made: run in another folder, such a command would leave
    keys there that no ``serve`` uses, and a later ``token`` there would mint with them."""
    from workerfacing_api.container import Container

    container = Container(settings=settings)
    try:
        container.db_url()
    except ConfigError as exc:
        _fail(str(exc))
    return container


def _sqlite_file(container: Container) -> Path | None:
    """The queue's SQLite file, or None on PostgreSQL (or an in-memory SQLite)."""
    url = container.db_url()
    if url.get_backend_name() != "sqlite" or url.database in {None, "", ":memory:"}:
        return None
    return Path(url.database)


def _refuse_missing_database(container: Container, *, missing_file_ok: bool = False) -> None:
    """Stop with one line naming QUEUE_DB_URL when its SQLite file is not there: opening it
    would create it (and its folder), empty, and a misspelt path would then read as a database
    without tables. Only ``serve``, ``sweep`` and ``db upgrade`` create the database."""
    database = _sqlite_file(container)
    if database is None or database.exists():
        return
    if not database.parent.is_dir():
        _fail(
            f"QUEUE_DB_URL: no database at {database}: the folder {database.parent} does not "
            "exist (a misspelt path? `serve` or `workerfacing-api db upgrade` creates it)"
        )
    if not missing_file_ok:
        _fail(
            f"QUEUE_DB_URL: no database at {database} yet (check the path; "
            "`serve` or `workerfacing-api db upgrade` creates it)"
        )


def _database_name(container: Container) -> str:
    return container.db_url().render_as_string()  # the password hidden


async def _migrate(container: Container) -> None:
    """Bring the schema up to date; an unusable database stops the command with one line.

    Alembic says at INFO which context it runs in before every migration: noise in front of
    a command's answer (``sweep --once``), kept for LOG_LEVEL=DEBUG. The migrations it applies
    are still logged, at WARNING by nobody: ``db upgrade`` prints its own answer."""
    from workerfacing_api.container import migrate

    alembic = logging.getLogger("alembic")
    if not alembic.isEnabledFor(logging.DEBUG):
        alembic.setLevel(logging.WARNING)
    try:
        await migrate(container)
    except ConfigError as exc:
        _fail(str(exc))


def _run(container: Container, work: Callable[[], Awaitable[T]]) -> T:
    """``work`` in a loop of its own, with the container's adapters open meanwhile."""
    from workerfacing_api.container import running

    async def main() -> T:
        async with running(container):
            return await work()

    try:
        return asyncio.run(main())
    except ConfigError as exc:  # a value resolved on first use (the shared key, say)
        _fail(str(exc))


def _reading(container: Container, work: Callable[[], Awaitable[T]]) -> T:
    """``_run`` for a command that reads the queue: when the database fails it, one line
    saying what is wrong and a hint that is true for it (``_diagnosis``)."""

    async def guarded() -> T:
        try:
            return await work()
        except Exception:  # the driver's own error: diagnosed below, or raised again
            problem = await _diagnosis(container)
            if problem is None:
                raise
            _fail(problem)

    return _run(container, guarded)


async def _diagnosis(container: Container) -> str | None:
    """Why the queue's database cannot serve a command, asked of the database itself (not
    read from a driver's message): it does not answer, or its schema is missing or behind.
    None when neither: the command's failure is then not the database's."""
    from workerfacing_api.core.errors import DomainError

    name = _database_name(container)
    try:
        revision = await container.database().schema_revision()
    except Exception as exc:  # unreachable, refused, no such database, unreadable file
        detail = (
            exc.detail if isinstance(exc, DomainError) else str(exc) or repr(exc)
        ).splitlines()[0]
        where = (
            "the path and that the file is readable"
            if _sqlite_file(container) is not None
            else "the host, port, database and user, and that the server runs"
        )
        return f"QUEUE_DB_URL: cannot use the database {name} ({detail}); check {where}"
    if revision is None:
        return (
            f"QUEUE_DB_URL: the database {name} has no tables yet; run: workerfacing-api db upgrade"
        )
    problem = await container.health().not_ready()  # a schema behind the code's (says so)
    return None if problem is None else f"QUEUE_DB_URL: {name}: {problem}"


def _check_listen(host: str, port: int, *, host_flag: bool, port_flag: bool) -> None:
    """Stop with one line naming HOST or PORT when the service could not listen there.

    (uvicorn would say only "[Errno 98] address already in use", naming neither.)"""
    import socket

    host_name = "--host" if host_flag else "HOST"
    port_name = "--port" if port_flag else "PORT"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        _fail(f"{host_name}={host!r} is not an address this machine can listen on ({exc})")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(f"{port_name}={port}: address {host}:{port} is already in use")
            _fail(f"{host_name}={host!r}, {port_name}={port}: cannot listen there ({exc})")


def cmd_serve(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _container(settings)
    # The key may reach a line however it travels (a path, a library's message): masked.
    _configure_logging(settings, known_secrets=[container.internal_api_key()])

    import uvicorn

    from workerfacing_api.container import internal_key_file
    from workerfacing_api.entrypoints.http import create_app
    from workerfacing_api.entrypoints.http.server import BoundedHttpTools

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    _check_listen(host, port, host_flag=bool(args.host), port_flag=args.port is not None)
    # The migration runs in a loop of its own and its engine is disposed there; the queue's
    # pool is made later, on the first request, in the server's loop.
    asyncio.run(_migrate(container))
    if settings.embedded_default:
        key_file = None if settings.internal_api_key_secret else internal_key_file(settings)
        log.warning(
            "development setup: tokens come from the local issuer (workerfacing-api token "
            "--username NAME --groups workers), not Cognito; queue %s; files under %s%s",
            _database_name(container),
            settings.user_data_root_path,
            f"; generated INTERNAL_API_KEY_SECRET kept in {key_file}" if key_file else "",
        )
    if settings.userfacing_api_url is None:
        log.info("USERFACING_API_URL is not set: status changes are not forwarded")
    workers = args.workers if args.workers is not None else settings.web_concurrency
    server = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # the app writes its own access line, without the query string
        "log_config": None,
        # X-Forwarded-For and -Proto only from TRUSTED_PROXIES (uvicorn rewrites the client's
        # address and scheme then): the address is a part of a worker's node (ARCHITECTURE §3), and
        # anyone could claim another's otherwise.
        "proxy_headers": bool(trusted_proxies(settings)),
        "forwarded_allow_ips": trusted_proxies(settings),
        "server_header": False,
        # uvicorn's httptools protocol (native parsing), with a limit on a request's head: a
        # request line and headers beyond 64 KiB are refused with 431 before more is read.
        "http": BoundedHttpTools,
        # SIGTERM: stop accepting, give requests in flight this long, then the app's shutdown
        # (duties stop, deliveries finish or are handed back, the pool closes), exit 0.
        "timeout_graceful_shutdown": settings.shutdown_grace,
    }
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again to whatever
    # handled it before: this one, so that a completed shutdown exits 0, as a deploy expects.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if workers == 1:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the same shutdown, no traceback
            uvicorn.run(create_app(container, tune_gc=True), **server)  # type: ignore[arg-type]
        return
    # N processes on one port: uvicorn's supervisor starts each with the factory, restarts one
    # that dies, and passes SIGTERM on to all of them.
    log.info("serving with %d processes on %s:%d", workers, host, port)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "workerfacing_api.entrypoints.http.process:app",
            factory=True,
            workers=workers,
            **server,  # type: ignore[arg-type]
        )


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    if settings.cognito_configured:
        _fail("COGNITO_USER_POOL_ID is set: workers get their tokens from Cognito, not here")
    if not args.username.strip():
        _fail("--username must not be empty")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    from workerfacing_api.container import identity_key_file

    key_file = identity_key_file(settings)
    if not args.init and not key_file.exists():
        # A new key here would sign tokens that no running service accepts ("Signature
        # verification failed"): the key is `serve`'s, made when it first starts.
        _fail(
            f"no identity key in {key_file.parent} (LOCAL_STATE_DIR), so no `serve` uses this "
            "folder: run token where serve runs, set LOCAL_STATE_DIR to serve's, or create "
            "the key with: workerfacing-api token --init"
        )
    container = _container(settings)
    issuer = container.local_issuer()
    ttl = timedelta(seconds=args.ttl)
    print(issuer.mint(args.username, groups, ttl, container.clock().now()))


def cmd_db(args: argparse.Namespace) -> None:
    settings = _settings()
    _configure_logging(settings, "WARNING")
    if args.action == "upgrade":
        container = _container(settings)
        asyncio.run(_migrate(container))
        print(f"database {_database_name(container)} is up to date")
        return
    container = _reading_container(settings)
    _refuse_missing_database(container, missing_file_ok=True)
    if (database := _sqlite_file(container)) is not None and not database.exists():
        revision = None  # opening it would create it
    else:
        revision = _run(container, lambda: _current(container))
    print(revision or "no schema yet (run: workerfacing-api db upgrade)")


async def _current(container: Container) -> str | None:
    try:
        return await container.database().schema_revision()
    except Exception:  # why, in one line (the schema's absence is not an error here)
        problem = await _diagnosis(container)
        if problem is None:
            raise
        _fail(problem)


def cmd_sweep(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _container(settings)  # validated before anything is logged
    _configure_logging(settings, known_secrets=[container.internal_api_key()])
    interval = args.interval if args.interval is not None else settings.sweep_interval
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_migrate(container))
        _run(container, lambda: _sweep(container, once=args.once, interval=interval))


async def _sweep(container: Container, *, once: bool, interval: float) -> None:
    jobs = container.jobs()
    sync = container.sync()
    notices = container.notices()
    try:
        while True:
            report = await jobs.sweep()
            told = await notices.run()
            while await sync.dispatch_due() > 0:
                pass
            print(
                f"re-queued {len(report.requeued)} job(s), failed {len(report.failed)} job(s)"
                + (
                    f"; told {len(told.told)} user(s) why their job waits, "
                    f"{len(told.cleared)} that a worker can run it now; failed "
                    f"{len(told.failed)} job(s) queued past QUEUED_LIMIT"
                    if told.told or told.cleared or told.failed
                    else ""
                ),
                flush=True,
            )
            if once:
                return
            await asyncio.sleep(interval)
    finally:
        await sync.wait_idle(10)


def cmd_jobs(args: argparse.Namespace) -> None:
    settings = _settings()
    # `retry` and `fail` change jobs and tell the upstream (with the shared key): the whole
    # container.
    changes = args.action in ("retry", "fail")
    container = _container(settings) if changes else _reading_container(settings)
    _configure_logging(settings, "WARNING")
    _refuse_missing_database(container)
    _reading(container, lambda: _jobs(container, args))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _jobs(container: Container, args: argparse.Namespace) -> None:
    now = container.clock().now()
    if args.action == "stats":
        stats = await container.queue().stats(now)
        seen = await _seen_workers(container)
        if args.json:
            document = msgspec.to_builtins(stats)
            document["workers"] = {
                "seen": len(seen),
                "window_seconds": container.settings().worker_seen_window,
                "set_aside": {
                    w.name: w.aside_until.isoformat()
                    for w in seen
                    if w.aside_until is not None and w.aside(now)
                },
            }
            print(msgspec.json.encode(document).decode())
            return
        aside = [w for w in seen if w.aside(now)]
        print(
            f"worker nodes seen in the last "
            f"{duration(container.settings().worker_seen_window)}: "
            f"{len(seen)}, busy {sum(1 for w in seen if w.active_jobs)}, set aside "
            + (
                ", ".join(
                    f"node {w.name} of {w.account} (until {_time(w.aside_until)})" for w in aside
                )
                if aside
                else "none"
            )
        )
        print("jobs by state: " + ", ".join(f"{s} {n}" for s, n in stats.by_status.items()))
        print(
            f"oldest queued job: {_age(stats.oldest_queued_age)}"
            + (f" (id {stats.oldest_queued_id})" if stats.oldest_queued_id else "")
        )
        print(
            f"undelivered status events: {stats.outbox_backlog}, "
            f"oldest {_age(stats.oldest_event_age)}"
        )
        return
    if args.action == "retry":
        await _retry(container, args.ids)
        return
    if args.action == "fail":
        await _fail_jobs(container, args.ids, args.reason)
        return
    if args.action == "why":
        await _why(container, args.id, meta=args.meta, as_json=args.json)
        return
    job = await container.queue().get(args.id)
    if job is None:
        _fail(f"job {args.id} does not exist")
    attempts = await container.dashboard_reads().attempts_of(job.id)
    events = await container.dashboard_reads().pending_events_of(job.id)
    view = {
        "id": job.id,
        "meta.job_id": job.upstream_id,
        "status": job.status.value,
        "worker": job.worker,
        "attempt": job.attempt,
        "num_retries": job.num_retries,
        "environment": job.environment.value if job.environment else None,
        "group": job.group,
        "priority": job.priority,
        "created_at": job.created_at.isoformat(),
        "last_heartbeat_at": job.last_heartbeat_at.isoformat() if job.last_heartbeat_at else None,
        "runtime_details": job.runtime_details,
        "attempts": [
            {
                "attempt": a.attempt,
                "worker": a.worker,
                "pulled_at": a.pulled_at.isoformat(),
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                "outcome": a.outcome.value if a.outcome else None,
            }
            for a in attempts
        ],
        "undelivered_events": [
            {
                "status": e.status.value,
                "created_at": e.created_at.isoformat(),
                "tries": e.attempts,
            }
            for e in events
        ],
        "paths_upload": msgspec.to_builtins(job.paths_upload),
        "job": msgspec.json.decode(job.spec),
    }
    print(msgspec.json.format(msgspec.json.encode(view), indent=2).decode())


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


async def _seen_workers(container: Container) -> list[WorkerRecord]:
    """The workers seen within WORKER_SEEN_WINDOW."""
    now = container.clock().now()
    window = timedelta(seconds=container.settings().worker_seen_window)
    return await container.fleet().workers(now - window)


def _actor() -> str:
    """Who acts from this shell, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name to be had (a container without one): still recorded
        return "cli"


async def _retry(container: Container, ids: list[int]) -> None:
    from workerfacing_api.core.jobs import action_done

    sync = container.sync()
    results = await container.operations().retry(_actor(), ids)
    while await sync.dispatch_due() > 0:  # the upstream hears "queued" now, if it answers
        pass
    await sync.wait_idle(10)
    for job_id, result in results.items():
        print(f"job {job_id}: {result}")
    if not all(action_done(result) for result in results.values()):
        raise SystemExit(1)


async def _fail_jobs(container: Container, ids: list[int], reason: str) -> None:
    from workerfacing_api.core.errors import InvalidRequest
    from workerfacing_api.core.jobs import action_done

    sync = container.sync()
    try:
        results = await container.operations().fail(_actor(), ids, reason)
    except InvalidRequest as exc:
        _fail(exc.detail)
    while await sync.dispatch_due() > 0:  # the upstream hears "error" now, if it answers
        pass
    await sync.wait_idle(10)
    for job_id, result in results.items():
        print(f"job {job_id}: {result}")
    if not all(action_done(result) for result in results.values()):
        raise SystemExit(1)


def cmd_audit(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _reading_container(settings)
    _configure_logging(settings, "WARNING")
    _refuse_missing_database(container)
    _reading(container, lambda: _audit(container, args))


async def _audit(container: Container, args: argparse.Namespace) -> None:
    entries = await container.audit().actions(args.before, args.limit)
    if args.json:
        print(msgspec.json.encode(entries).decode())
        return
    if not entries:
        print("no operator has acted yet")
        return
    for e in entries:
        jobs = f" jobs {', '.join(str(j) for j in e.jobs)}" if e.jobs else ""
        print(f"#{e.id} {_time(e.at)} {e.actor} {e.action} {e.target}{jobs}: {e.detail}")


async def _why(container: Container, job_id: int, *, meta: bool, as_json: bool) -> None:
    from workerfacing_api.core.errors import JobNotFound

    explainer = container.explainer()
    try:
        if meta:
            explanation = await explainer.explain_upstream(job_id)
        else:
            explanation = await explainer.explain_queue_id(job_id)
    except JobNotFound as exc:
        _fail(exc.detail)
    if as_json:
        print(msgspec.json.encode(explanation).decode())
        return
    e = explanation
    print(f"job {e.queue_id} (meta.job_id {e.job_id}): {e.status}")
    if e.status == "queued":
        print(
            f"queued for {_age(e.waiting_seconds)}; workers seen {e.workers_seen}, fitting "
            f"{e.workers_fitting} (busy {e.fitting_busy}, set aside {e.fitting_set_aside}, "
            f"idle {e.fitting_idle})" + (f"; {e.ahead} job(s) ahead" if e.ahead is not None else "")
        )
    print(e.reason)
    if e.estimate is not None:
        print(e.estimate)


def cmd_demand(args: argparse.Namespace) -> None:
    from workerfacing_api.core.demand import machine_offer
    from workerfacing_api.core.model import Environment

    if args.every is not None and args.cloudwatch is None:
        _fail("--every: only with --cloudwatch NAMESPACE (it publishes in a loop)")
    parts = ("cpu_cores", "gpu_mem", "gpu_model", "gpu_archi", "environment")
    if args.memory is None and (given := [p for p in parts if getattr(args, p) is not None]):
        # Said here, not ignored: the whole demand instead would scale the wrong machines.
        options = ", ".join("--" + p.replace("_", "-") for p in given)
        _fail(f"--memory: give the machine's memory in MiB too ({options} alone filter nothing)")
    offer = machine_offer(
        memory=args.memory,
        cpu_cores=args.cpu_cores,
        gpu_mem=args.gpu_mem,
        gpu_model=args.gpu_model,
        gpu_archi=args.gpu_archi,
        environment=None if args.environment is None else Environment(args.environment),
    )
    settings = _settings()
    container = _reading_container(settings)
    _configure_logging(settings, "WARNING")
    _refuse_missing_database(container)
    try:
        _reading(container, lambda: _demand(container, offer, args.cloudwatch, args.every))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _demand(
    container: Container, offer: MachineOffer | None, namespace: str | None, every: float | None
) -> None:
    demand = container.demand()
    if namespace is None:
        print(msgspec.json.encode(await demand.report(offer)).decode())
        return
    from workerfacing_api.core.errors import Unavailable

    cloudwatch = container.cloudwatch_demand()
    while True:
        report = await demand.report(offer)
        try:
            count = await cloudwatch.publish(namespace, report)
        except Unavailable as exc:  # one line, the sidecar's supervisor restarts it
            _fail(exc.detail)
        print(
            f"published {count} metrics ({len(report.classes)} classes, {report.queued} queued "
            f"jobs) to CloudWatch namespace {namespace!r} at {cloudwatch.where}",
            flush=True,
        )
        if every is None:
            return
        await asyncio.sleep(every)


def cmd_workers(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _reading_container(settings)
    _configure_logging(settings, "WARNING")
    _refuse_missing_database(container)
    try:
        _reading(container, lambda: _workers(container, args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _workers(container: Container, args: argparse.Namespace) -> None:
    now = container.clock().now()
    fleet = container.fleet()
    if args.action == "release":
        released = await container.operations().release(_actor(), args.name)
        if released is None:
            _fail(
                f"no node or account named {args.name!r} has ever pulled here "
                "(`workerfacing-api workers --all` lists them)"
            )
        for node, done in released.items():
            print(
                f"node {node}: released; it gets jobs again"
                if done
                else f"node {node} is not set aside; nothing to do"
            )
        return
    window = timedelta(seconds=container.settings().worker_seen_window)
    records = await fleet.workers(None if args.all else now - window)
    outcomes = {w.name: await fleet.recent_outcomes(w.name, now, 10) for w in records}
    if args.json:
        print(
            msgspec.json.encode([_worker_view(w, outcomes[w.name], now) for w in records]).decode()
        )
        return
    if not records:
        scope = "ever" if args.all else f"in the last {duration(window.total_seconds())}"
        print(f"no worker has pulled {scope}")
        return
    account = None
    for w in records:  # by account, then node
        if w.account != account:
            account = w.account
            nodes = sum(1 for r in records if r.account == account)
            print(f"account {account}: {nodes} node(s)")
        view = _worker_view(w, outcomes[w.name], now)
        p = w.profile
        gpu = f"{p.gpu_model or 'no GPU'}" + (
            f" ({p.gpu_archi}, {_mib(p.gpu_mem)})" if p.gpu_model or p.gpu_mem else ""
        )
        standing = (
            f"SET ASIDE until {_time(w.aside_until)} ({w.aside_reason})" if w.aside(now) else "ok"
        )
        where = p.address or "address unknown"
        instance = f"instance {p.instance}" if p.instance is not None else "no instance id"
        print(
            f"  node {w.name}  {where}, {instance}  {p.environment.value}  last seen "
            f"{_age(view['last_seen_seconds_ago'])} ago  {p.cpu_cores} cores, "
            f"{_mib(p.memory)}, {gpu}"
        )
        print(
            f"    jobs now: {', '.join(map(str, w.active_jobs)) or 'none'}; recent: "
            f"{view['recent'] or 'none'}; strikes {w.strikes}; {standing}"
        )


def _mib(value: int) -> str:
    """``64 000 MiB``: digits grouped in threes by thin spaces, as the dashboard shows them."""
    return f"{value:,} MiB".replace(",", "\u2009")


def _worker_view(w: WorkerRecord, recent: list[AttemptOutcome], now: datetime) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for o in recent:
        counts[o.outcome.value] = counts.get(o.outcome.value, 0) + 1
    return {
        "node": w.node,
        "account": w.account,
        "address": w.profile.address,
        "instance": w.profile.instance,
        "environment": w.profile.environment.value,
        "cpu_cores": w.profile.cpu_cores,
        "memory": w.profile.memory,
        "gpu_model": w.profile.gpu_model,
        "gpu_archi": w.profile.gpu_archi,
        "gpu_mem": w.profile.gpu_mem,
        "first_seen_at": _time(w.first_seen_at),
        "last_seen_at": _time(w.last_seen_at),
        "last_seen_seconds_ago": (now - w.last_seen_at).total_seconds(),
        "active_jobs": list(w.active_jobs),
        "recent": ", ".join(f"{k} {n}" for k, n in sorted(counts.items())),
        "recent_outcomes": [
            {"job": o.job_id, "attempt": o.attempt, "outcome": o.outcome.value} for o in recent
        ],
        "strikes": w.strikes,
        "set_aside": w.aside(now),
        "aside_until": _time(w.aside_until) if w.aside_until else None,
        "aside_reason": w.aside_reason,
    }


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 < number <= MAX_DB_INT:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number above 0")
    return number


def _offered_count(value: str) -> int:
    """A number a machine offers, within the bounds a pull accepts (``core.model.NonNegative``)."""
    from workerfacing_api.core.model import NonNegative

    try:
        return msgspec.convert(int(value), NonNegative)
    except (ValueError, msgspec.ValidationError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number, 0 or more") from None


def _offered_name(value: str) -> str:
    """A GPU model or architecture, as a pull accepts it (``core.model.Name``)."""
    from workerfacing_api.core.model import NAME_MAX, Name

    try:
        return msgspec.convert(value, Name)
    except msgspec.ValidationError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a name: at most {NAME_MAX} characters, no control characters"
        ) from None


def _namespace(value: str) -> str:
    # CloudWatch's own rules for a namespace it accepts from us; the rest it says itself.
    if not 1 <= len(value) <= 255 or value.startswith("AWS/") or not value.strip():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a CloudWatch namespace of your own (1-255 characters, not AWS/...)"
        )
    return value


def _processes(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of processes (1-256)")
    return int(value)


def _queue_id(value: str) -> int:
    """A queue id, as a number or as the path a Location header names (``/jobs/5/status``,
    also as a whole URL): what POST /_jobs answers can be pasted as it is."""
    path = value.strip().split("?", 1)[0].rstrip("/")
    if "/jobs/" in path:
        path = path.rsplit("/jobs/", 1)[1].removesuffix("/status")
    if not path.isdigit() or not path.isascii():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a queue id (a number, or /jobs/ID/status as in a Location header)"
        )
    return int(path)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="workerfacing-api",
        description="Worker-facing API of DECODE OpenCloud. Configuration: environment and .env.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API (and its sweeper)")
    serve.add_argument("--host", help="interface to listen on (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: PORT or 8001)")
    serve.add_argument(
        "--workers",
        type=_processes,
        help="processes on that port, each with its own sweeper and dispatcher "
        "(default: WEB_CONCURRENCY or 1)",
    )
    serve.set_defaults(run=cmd_serve)

    token = commands.add_parser("token", help="print a bearer token from the local issuer")
    token.add_argument(
        "--username", required=True, help="user name of the worker or operator the token is for"
    )
    token.add_argument(
        "--groups", default="workers", help="comma-separated groups (default: workers)"
    )
    token.add_argument(
        "--ttl", type=_positive, default=30 * 24 * 3600, help="lifetime in seconds (30 days)"
    )
    token.add_argument(
        "--init",
        action="store_true",
        help="create the identity key in LOCAL_STATE_DIR if there is none yet (else `serve` "
        "does, when it first starts)",
    )
    token.set_defaults(run=cmd_token)

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"], help="migrate, or show revision")
    db.set_defaults(run=cmd_db)

    sweep = commands.add_parser("sweep", help="re-queue or fail jobs whose keep-alive stopped")
    sweep.add_argument("--once", action="store_true", help="one round, then exit")
    sweep.add_argument("--interval", type=_positive, help="seconds between rounds")
    sweep.set_defaults(run=cmd_sweep)

    jobs = commands.add_parser("jobs", help="look at the queue")
    views = jobs.add_subparsers(dest="action", required=True, metavar="VIEW")
    stats = views.add_parser("stats", help="jobs per state, oldest queued job, outbox backlog")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    show = views.add_parser("show", help="one job in full")
    show.add_argument(
        "id",
        type=_queue_id,
        help="queue id: a number, or the path of POST /_jobs's Location header (/jobs/ID/status)",
    )
    retry = views.add_parser("retry", help="put failed jobs back in the queue (start over)")
    retry.add_argument("ids", type=int, nargs="+", metavar="ID", help="queue ids")
    fail = views.add_parser(
        "fail",
        help="fail queued or running jobs with a reason: the user-facing API hears `error` with "
        "it, and the worker's next call answers 404 (it stops)",
    )
    fail.add_argument("ids", type=int, nargs="+", metavar="ID", help="queue ids")
    fail.add_argument("--reason", required=True, help="why, in words the job's user reads")
    why = views.add_parser("why", help="why a job waits")
    why.add_argument("id", type=int, help="queue id (meta.job_id with --meta)")
    why.add_argument("--meta", action="store_true", help="ID is meta.job_id (user-facing id)")
    why.add_argument("--json", action="store_true", help="print one JSON object")
    jobs.set_defaults(run=cmd_jobs)

    demand = commands.add_parser(
        "demand",
        help="queued jobs by hardware class, and whether any node seen can run them (JSON)",
        description="The demand as JSON; with --memory (and the rest of a machine's offer) only "
        "the classes a machine of that kind would run; with --cloudwatch published there "
        "instead (once, or every --every seconds).",
    )
    offer = demand.add_argument_group(
        "one kind of machine", "what its worker would send to GET /jobs (--memory turns it on)"
    )
    offer.add_argument("--memory", type=_offered_count, help="memory in MiB")
    offer.add_argument("--cpu-cores", type=_offered_count, help="CPU cores (default 1)")
    offer.add_argument("--gpu-mem", type=_offered_count, help="GPU memory in MiB (default 0)")
    offer.add_argument("--gpu-model", type=_offered_name, help="GPU model, as the worker sends it")
    offer.add_argument("--gpu-archi", type=_offered_name, help="GPU architecture")
    offer.add_argument(
        "--environment",
        choices=["cloud", "local"],
        help="environment of its worker token (default cloud)",
    )
    demand.add_argument(
        "--cloudwatch",
        metavar="NAMESPACE",
        type=_namespace,
        help="publish the demand to this CloudWatch namespace (one metric per class, and the "
        "totals) instead of printing it",
    )
    demand.add_argument(
        "--every",
        metavar="SECONDS",
        type=_positive,
        help="with --cloudwatch: publish again every SECONDS, until stopped (a sidecar)",
    )
    demand.set_defaults(run=cmd_demand)

    audit = commands.add_parser(
        "audit", help="what operators did (retry, release, fail), the latest first"
    )
    audit.add_argument("--limit", type=_positive_int, default=50, help="entries at most (50)")
    audit.add_argument("--before", type=_positive_int, help="entries older than this id")
    audit.add_argument("--json", action="store_true", help="print a JSON list")
    audit.set_defaults(run=cmd_audit)

    workers = commands.add_parser(
        "workers",
        help="the worker nodes seen, by account, and setting them aside",
        # argparse would show the optional ACTION as required.
        usage="%(prog)s [-h] [--all] [--json] [ACTION ...]",
    )
    workers.add_argument("--all", action="store_true", help="every node ever seen")
    workers.add_argument("--json", action="store_true", help="print a JSON list")
    worker_actions = workers.add_subparsers(
        dest="action", metavar="ACTION", help="optional; without one, list the nodes"
    )
    release = worker_actions.add_parser(
        "release", help="end the cool-off of a node, or of every node of an account, now"
    )
    release.add_argument("name", help="a node's id (n-…, as `workers` lists it) or an account")
    workers.set_defaults(run=cmd_workers, action=None)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
