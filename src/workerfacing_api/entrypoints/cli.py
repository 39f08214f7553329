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
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import msgspec

from workerfacing_api.config import ConfigError, Settings, load_settings, trusted_proxies
from workerfacing_api.core.fleet import duration
from workerfacing_api.core.model import AttemptOutcome, WorkerRecord

if TYPE_CHECKING:
    from workerfacing_api.container import Container

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


def _database_name(container: Container) -> str:
    return container.db_url().render_as_string()  # the password hidden


async def _migrate(container: Container) -> None:
    """Bring the schema up to date; an unusable database stops the command with one line."""
    from workerfacing_api.container import migrate

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

    return asyncio.run(main())


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
        # address and scheme then): the address is a part of a worker's node (DESIGN §3), and
        # anyone could claim another's otherwise.
        "proxy_headers": bool(trusted_proxies(settings)),
        "forwarded_allow_ips": trusted_proxies(settings),
        "server_header": False,
        # uvicorn's h11 protocol, for its limit on a request's head: a request line and headers
        # beyond 64 KiB are refused with 400 before more is read (httptools has no limit: a
        # 32 MiB header was read whole, and stalled the process).
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD,
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


MAX_REQUEST_HEAD = 64 * 1024  # bytes of a request line and headers, together


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    if settings.cognito_configured:
        _fail("COGNITO_USER_POOL_ID is set: workers get their tokens from Cognito, not here")
    if not args.username.strip():
        _fail("--username must not be empty")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    container = _container(settings)
    issuer = container.local_issuer()
    ttl = timedelta(seconds=args.ttl)
    print(issuer.mint(args.username, groups, ttl, container.clock().now()))


def cmd_db(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _container(settings)
    _configure_logging(settings, "WARNING")
    if args.action == "upgrade":
        asyncio.run(_migrate(container))
        print(f"database {_database_name(container)} is up to date")
    else:
        revision = _run(container, lambda: _current(container))
        print(revision or "no schema yet (run: workerfacing-api db upgrade)")


async def _current(container: Container) -> str | None:
    from workerfacing_api.core.errors import Unavailable

    try:
        return await container.database().schema_revision()
    except Unavailable as exc:
        _fail(f"QUEUE_DB_URL: cannot use the database {_database_name(container)} ({exc.detail})")


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
    try:
        while True:
            report = await jobs.sweep()
            while await sync.dispatch_due() > 0:
                pass
            print(
                f"re-queued {len(report.requeued)} job(s), failed {len(report.failed)} job(s)",
                flush=True,
            )
            if once:
                return
            await asyncio.sleep(interval)
    finally:
        await sync.wait_idle(10)


def cmd_jobs(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _container(settings)
    _configure_logging(settings, "WARNING")
    _run(container, lambda: _jobs(container, args))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _jobs(container: Container, args: argparse.Namespace) -> None:
    from workerfacing_api.core.errors import Unavailable

    now = container.clock().now()
    try:
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
                        f"node {w.name} of {w.account} (until {_time(w.aside_until)})"
                        for w in aside
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
            "last_heartbeat_at": job.last_heartbeat_at.isoformat()
            if job.last_heartbeat_at
            else None,
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
    except Unavailable as exc:
        _fail(
            f"QUEUE_DB_URL: cannot read the queue ({exc.detail.splitlines()[0]}); "
            "run: workerfacing-api db upgrade"
        )


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


async def _seen_workers(container: Container) -> list[WorkerRecord]:
    """The workers seen within WORKER_SEEN_WINDOW."""
    now = container.clock().now()
    window = timedelta(seconds=container.settings().worker_seen_window)
    return await container.fleet().workers(now - window)


async def _retry(container: Container, ids: list[int]) -> None:
    jobs = container.jobs()
    sync = container.sync()
    results = await jobs.retry(ids)
    while await sync.dispatch_due() > 0:  # the upstream hears "queued" now, if it answers
        pass
    await sync.wait_idle(10)
    for job_id, result in results.items():
        print(f"job {job_id}: {result}")
    if any(result != "queued again" for result in results.values()):
        raise SystemExit(1)


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


def cmd_workers(args: argparse.Namespace) -> None:
    settings = _settings()
    container = _container(settings)
    _configure_logging(settings, "WARNING")
    try:
        _run(container, lambda: _workers(container, args))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _workers(container: Container, args: argparse.Namespace) -> None:
    from workerfacing_api.core.errors import Unavailable

    now = container.clock().now()
    fleet = container.fleet()
    try:
        if args.action == "release":
            released = await fleet.release(args.name, now)
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
    except Unavailable as exc:
        _fail(f"QUEUE_DB_URL: cannot read the queue ({exc.detail.splitlines()[0]})")
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
            f" ({p.gpu_archi}, {p.gpu_mem} MiB)" if p.gpu_model or p.gpu_mem else ""
        )
        standing = (
            f"SET ASIDE until {_time(w.aside_until)} ({w.aside_reason})" if w.aside(now) else "ok"
        )
        where = p.address or "address unknown"
        instance = f"instance {p.instance}" if p.instance is not None else "no instance id"
        print(
            f"  node {w.name}  {where}, {instance}  {p.environment.value}  last seen "
            f"{_age(view['last_seen_seconds_ago'])} ago  {p.cpu_cores} cores, {p.memory} MiB, {gpu}"
        )
        print(
            f"    jobs now: {', '.join(map(str, w.active_jobs)) or 'none'}; recent: "
            f"{view['recent'] or 'none'}; strikes {w.strikes}; {standing}"
        )


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


def _processes(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of processes (1-256)")
    return int(value)


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
    token.add_argument("--username", required=True, help="the worker's name")
    token.add_argument(
        "--groups", default="workers", help="comma-separated groups (default: workers)"
    )
    token.add_argument(
        "--ttl", type=_positive, default=30 * 24 * 3600, help="lifetime in seconds (30 days)"
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
    show.add_argument("id", type=int, help="queue id")
    retry = views.add_parser("retry", help="put failed jobs back in the queue (start over)")
    retry.add_argument("ids", type=int, nargs="+", metavar="ID", help="queue ids")
    why = views.add_parser("why", help="why a job waits")
    why.add_argument("id", type=int, help="queue id (meta.job_id with --meta)")
    why.add_argument("--meta", action="store_true", help="ID is meta.job_id (user-facing id)")
    why.add_argument("--json", action="store_true", help="print one JSON object")
    jobs.set_defaults(run=cmd_jobs)

    workers = commands.add_parser(
        "workers", help="the worker nodes seen, by account, and setting them aside"
    )
    workers.add_argument("--all", action="store_true", help="every node ever seen")
    workers.add_argument("--json", action="store_true", help="print a JSON list")
    worker_actions = workers.add_subparsers(dest="action", metavar="ACTION")
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
