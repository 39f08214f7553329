"""The composition root: settings → adapters → core services, built in one place.

``build_container(settings)`` is the one way every front-end (``serve``, the CLI commands, an
embedding service) gets its parts. Providers choose the adapters from the settings (``Selector``):
the queue's database by its URL, the identity verifier by whether Cognito is configured, the file
storage by ``FILESYSTEM``, the upstream by ``USERFACING_API_URL``, the metrics by ``METRICS``.
Tests override a provider (``container.clock.override(...)``, ``use_in_memory_queue``) instead
of wiring parts by hand.

Nothing runs at import time, and nothing connects while the container is built. ``running``
(``start`` and ``stop``) opens and closes what the adapters hold, in the event loop that uses
them: the database's connections and the upstream's HTTP client (the ``Resource`` providers).
Only the values read from the configuration (the database URL with its secret, the shared key,
the local issuer's key) are resolved by ``build_container``, so a bad configuration stops
start-up with one line naming the variable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dependency_injector import containers, providers
from sqlalchemy.engine import URL

from workerfacing_api.adapters.identity import CachingVerifier, CognitoVerifier, LocalIssuer
from workerfacing_api.adapters.identity.cognito import jwks_url_of
from workerfacing_api.adapters.identity.local import read_or_create_secret
from workerfacing_api.adapters.metrics import PrometheusMetrics
from workerfacing_api.adapters.secrets import SecretError, SecretResolver
from workerfacing_api.adapters.signing import UrlSigner
from workerfacing_api.adapters.sql import (
    Database,
    DatabaseUrlError,
    PostgresDatabase,
    SqlAuditLog,
    SqlDashboardReads,
    SqlHealth,
    SqliteDatabase,
    SqlJobQueue,
    SqlOutbox,
    SqlUploadLedger,
    SqlWorkerRegistry,
    database_url,
    postgres_dsn,
    sqlite_path,
)
from workerfacing_api.adapters.storage import LocalStorage
from workerfacing_api.config import ConfigError, Settings, state_dir
from workerfacing_api.core.access import Access
from workerfacing_api.core.clock import SystemClock
from workerfacing_api.core.demand import Demand
from workerfacing_api.core.files import FileService, LateUploads
from workerfacing_api.core.fleet import AsidePolicy, Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.notices import WaitNotices
from workerfacing_api.core.operations import Operations
from workerfacing_api.core.overview import Overview
from workerfacing_api.core.ports import (
    FileStorage,
    InProcessStore,
    NoMetrics,
    UpstreamNotifier,
)
from workerfacing_api.core.probes import Probes
from workerfacing_api.core.sync import Backoff, StatusSync
from workerfacing_api.core.waiting import WaitExplainer

if TYPE_CHECKING:
    from litestar.stores.base import Store

    from workerfacing_api.adapters.cloudwatch import CloudWatchDemand
    from workerfacing_api.adapters.upstream import HttpUpstream

# Connections the queue keeps per process (PostgreSQL; SQLite has one writer and uses one).
QUEUE_POOL_SIZE = 10
# Seconds a delivered event's acknowledgement waits for others to be written with
# (core.sync.Acknowledgements; docs/PERFORMANCE.md has what one statement each costs).
ACK_DELAY = 0.05


# -- values read from the configuration: each error names its variable ------------------------


def internal_key_file(settings: Settings) -> Path:
    """Where the shared key is kept when ``INTERNAL_API_KEY_SECRET`` is unset."""
    return state_dir(settings) / "internal-api-key"


def identity_key_file(settings: Settings) -> Path:
    """The local issuer's signing key: ``token`` and ``serve`` run from one directory share it."""
    return state_dir(settings) / "identity.key"


def _state_secret(path: Path) -> str:
    try:
        return read_or_create_secret(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LOCAL_STATE_DIR: cannot keep a secret in {path} ({exc})") from None


def _secret(secrets: SecretResolver, value: str, name: str) -> str:
    try:
        return secrets.resolve(value, name=name)
    except SecretError as exc:
        raise ConfigError(str(exc)) from None


def _queue_database_url(settings: Settings, secrets: SecretResolver) -> URL:
    secret = None
    if settings.queue_db_secret:
        secret = _secret(secrets, settings.queue_db_secret, "QUEUE_DB_SECRET")
    try:
        return database_url(settings.queue_db_url, secret)
    except DatabaseUrlError as exc:
        raise ConfigError(f"QUEUE_DB_URL {exc}") from None


def _internal_api_key(settings: Settings, secrets: SecretResolver) -> str:
    """The key shared with the user-facing API; generated and kept in a file when unset, so
    that every process started from the same directory agrees on it."""
    if not settings.internal_api_key_secret:
        return _state_secret(internal_key_file(settings))
    key = _secret(secrets, settings.internal_api_key_secret, "INTERNAL_API_KEY_SECRET")
    # It travels in the x-api-key header both ways: a control character would break the header.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ConfigError(
            "INTERNAL_API_KEY_SECRET holds a control character; it cannot be a header"
        )
    return key


def _s3_storage(settings: Settings) -> FileStorage:
    # boto3 takes a while to import: only deployments on S3 load it.
    from workerfacing_api.adapters.storage.s3 import S3Storage

    assert settings.s3_bucket is not None  # checked with the configuration
    return S3Storage(
        settings.s3_bucket,
        settings.s3_region,
        url_expiry=settings.url_expiry,
        max_upload_bytes=settings.max_upload_bytes,
    )


def _cognito_secret(settings: Settings, secrets: SecretResolver) -> str | None:
    """The app client's secret, if it has one: read (from Secrets Manager, maybe) at start-up,
    so that an unreadable one stops start-up rather than a sign-in later."""
    if not settings.cognito_secret:
        return None
    return _secret(secrets, settings.cognito_secret, "COGNITO_SECRET")


def _cognito_jwks_url(settings: Settings) -> str:
    """The pool's key set, at the endpoint botocore resolves for Cognito: AWS itself, or
    ``AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER`` / ``AWS_ENDPOINT_URL`` when set."""
    import boto3

    assert settings.cognito_region is not None  # checked with the configuration
    assert settings.cognito_user_pool_id is not None
    client = boto3.client("cognito-idp", region_name=settings.cognito_region)
    return jwks_url_of(settings.cognito_user_pool_id, client.meta.endpoint_url)


def _cloudwatch_demand(settings: Settings) -> CloudWatchDemand:
    """Where ``demand --cloudwatch`` writes. Imported here: only that command loads boto3 for
    it. The region of the deployment's other AWS parts, else boto3's own (AWS_REGION)."""
    from workerfacing_api.adapters.cloudwatch import CloudWatchDemand

    return CloudWatchDemand(settings.s3_region or settings.cognito_region)


def _local_issuer(settings: Settings) -> LocalIssuer:
    key_file = identity_key_file(settings)
    _state_secret(key_file)  # made (or found unusable) here, as a configuration error
    return LocalIssuer(key_file)


# -- what the selectors choose by --------------------------------------------------------------


def _database_kind(url: URL) -> str:
    """``sqlite`` or ``postgresql``: ``database_url`` admits no other backend."""
    return url.get_backend_name()


def _identity_kind(settings: Settings) -> Literal["local", "cognito"]:
    return "cognito" if settings.cognito_configured else "local"


def _upstream_kind(settings: Settings) -> Literal["http", "none"]:
    return "http" if settings.userfacing_api_url is not None else "none"


def _has_upstream(upstream: UpstreamNotifier | None) -> bool:
    # Outbox events are written only when something will deliver them; without an upstream
    # they would pile up forever.
    return upstream is not None


def _metrics_kind(on: bool) -> Literal["prometheus", "none"]:
    return "prometheus" if on else "none"


# -- what the container opens and closes (Resource providers, see ``running``) ------------------


async def _database_open(database: Database) -> AsyncIterator[Database]:
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def _upstream_open(upstream: HttpUpstream | None) -> AsyncIterator[HttpUpstream | None]:
    try:
        yield upstream
    finally:
        if upstream is not None:
            await upstream.aclose()


def _http_upstream(url: str, key: str) -> HttpUpstream:
    """The user-facing API over aiohttp. Imported here: a command that forwards nothing (``token``,
    ``jobs``) does not pay for importing aiohttp."""
    from workerfacing_api.adapters.upstream import HttpUpstream

    return HttpUpstream(url, key)


def _sql_session_store(database: Any, clock: Any) -> Store:
    """The dashboard's session store over the queue database. Imported here: Litestar's stores
    cost a command that never serves the dashboard (``token``, ``jobs``) a tenth of a second."""
    from workerfacing_api.adapters.sql.sessions import SqlSessionStore

    return SqlSessionStore(database, clock)


class Container(containers.DeclarativeContainer):
    """Providers in dependency order. Each ``Selector`` picks one adapter by a setting; another
    adapter (Cognito, S3) is one more keyword there."""

    settings = providers.Dependency(instance_of=Settings)

    secrets = providers.Singleton(SecretResolver)
    db_url = providers.Singleton(_queue_database_url, settings, secrets)
    internal_api_key = providers.Singleton(_internal_api_key, settings, secrets)

    clock = providers.Singleton(SystemClock)

    upstream: providers.Selector[HttpUpstream | None] = providers.Selector(
        providers.Callable(_upstream_kind, settings),
        http=providers.Singleton(
            _http_upstream, settings.provided.userfacing_api_url, internal_api_key
        ),
        none=providers.Object(None),
    )
    forwarding = providers.Callable(_has_upstream, upstream)
    upstream_open = providers.Resource(_upstream_open, upstream)

    # The queue's database, shared by the five adapters of its ports (each written once over
    # either dialect). Connects on first use, in the event loop that uses it.
    database: providers.Selector[SqliteDatabase | PostgresDatabase] = providers.Selector(
        providers.Callable(_database_kind, db_url),
        sqlite=providers.Singleton(SqliteDatabase, providers.Callable(sqlite_path, db_url)),
        postgresql=providers.Singleton(
            PostgresDatabase,
            providers.Callable(postgres_dsn, db_url),
            pool_size=QUEUE_POOL_SIZE,
        ),
    )
    queue = providers.Singleton(SqlJobQueue, database, record_events=forwarding)
    outbox = providers.Singleton(SqlOutbox, database)
    uploads = providers.Singleton(SqlUploadLedger, database)
    registry = providers.Singleton(SqlWorkerRegistry, database)
    dashboard_reads = providers.Singleton(SqlDashboardReads, database)
    audit = providers.Singleton(SqlAuditLog, database)
    health = providers.Singleton(SqlHealth, database)
    database_open = providers.Resource(_database_open, database)
    # The dashboard's sessions (Litestar's server-side sessions): in the queue's database, so
    # that every process reads the same ones and a sign-out ends a session everywhere.
    ui_sessions: providers.Provider[Store] = providers.Singleton(
        _sql_session_store, database, clock
    )

    local_issuer = providers.Singleton(_local_issuer, settings)
    cognito_secret = providers.Singleton(_cognito_secret, settings, secrets)
    verifier = providers.Selector(
        providers.Callable(_identity_kind, settings),
        local=local_issuer,
        cognito=providers.Singleton(
            CognitoVerifier,
            region=settings.provided.cognito_region,
            user_pool_id=settings.provided.cognito_user_pool_id,
            client_id=settings.provided.cognito_client_id,
            jwks_url=providers.Callable(_cognito_jwks_url, settings),
        ),
    )
    identity = providers.Singleton(CachingVerifier, verifier, clock)
    access = providers.Singleton(Access, identity, internal_api_key)

    storage = providers.Selector(
        settings.provided.filesystem,
        local=providers.Singleton(LocalStorage, settings.provided.user_data_root_path),
        s3=providers.Singleton(_s3_storage, settings),
    )

    policy = providers.Singleton(
        RetryPolicy,
        max_retries=settings.provided.max_retries,
        timeout_failure=settings.provided.timeout_failure,
        retry_different=settings.provided.retry_different,
    )
    backoff = providers.Singleton(Backoff, base=0.5, cap=settings.provided.upstream_backoff_max)
    # Taken away when a job is cancelled: what its worker stored after its user deleted it.
    late_uploads = providers.Singleton(LateUploads, storage, uploads)
    metrics_kind = providers.Callable(_metrics_kind, settings.provided.metrics)
    prometheus = providers.Singleton(PrometheusMetrics)
    metrics: providers.Selector[PrometheusMetrics | NoMetrics] = providers.Selector(
        metrics_kind, prometheus=prometheus, none=providers.Singleton(NoMetrics)
    )
    # The scrape's text (GET /metrics), and what the HTTP layer reports of each request.
    metrics_report: providers.Selector[PrometheusMetrics | None] = providers.Selector(
        metrics_kind, prometheus=prometheus, none=providers.Object(None)
    )
    request_observer: providers.Selector[Callable[[str, str, int, float], None] | None] = (
        providers.Selector(
            metrics_kind,
            prometheus=prometheus.provided.observe_request,
            none=providers.Object(None),
        )
    )
    sync = providers.Singleton(
        StatusSync,
        queue,
        outbox,
        upstream,
        clock,
        backoff=backoff,
        keepalive_interval=settings.provided.upstream_keepalive_interval,
        ack_delay=ACK_DELAY,
        on_cancelled=late_uploads.provided.remove_after_delete,
        metrics=metrics,
    )
    # A request for an upload URL goes upstream as a keep-alive (sync): a delete stops a worker
    # that only uploads.
    files = providers.Singleton(
        FileService,
        queue,
        storage,
        uploads,
        clock,
        settings.provided.max_upload_bytes,
        sync=sync,
    )
    aside = providers.Singleton(
        AsidePolicy,
        after_failures=settings.provided.aside_after_failures,
        cool_off=settings.provided.aside_cool_off,
        cool_off_max=settings.provided.aside_cool_off_max,
        window=settings.provided.aside_window,
    )
    # The claims consult the registry in their own statement (a worker set aside gets no job).
    fleet = providers.Singleton(Fleet, registry, aside, metrics=metrics)
    jobs = providers.Singleton(
        JobService,
        queue,
        clock,
        policy,
        sync,
        fleet,
        max_jobs_per_node=settings.provided.max_jobs_per_node,
        metrics=metrics,
    )
    explainer = providers.Singleton(
        WaitExplainer,
        queue,
        registry,
        clock,
        seen_window=settings.provided.worker_seen_window,
        exclude_attempted=settings.provided.retry_different,
    )
    # What operators do, from the CLI or the dashboard, with its audit log.
    operations = providers.Singleton(Operations, jobs, fleet, audit, clock)
    notices = providers.Singleton(
        WaitNotices,
        queue,
        dashboard_reads,
        registry,
        sync,
        clock,
        seen_window=settings.provided.worker_seen_window,
        notice_after=settings.provided.wait_notice_after,
        queued_limit=settings.provided.queued_limit,
    )
    signer = providers.Singleton(UrlSigner, internal_api_key, lifetime=settings.provided.url_expiry)
    # The operators' dashboard.
    demand = providers.Singleton(
        Demand,
        dashboard_reads,
        registry,
        clock,
        seen_window=settings.provided.worker_seen_window,
    )
    # The demand in CloudWatch, for AWS's autoscalers (``workerfacing-api demand --cloudwatch``).
    cloudwatch_demand = providers.Singleton(_cloudwatch_demand, settings)
    overview = providers.Singleton(
        Overview,
        queue,
        dashboard_reads,
        registry,
        sync,
        explainer,
        demand,
        clock,
        seen_window=settings.provided.worker_seen_window,
    )
    probes = providers.Singleton(
        Probes,
        queue,
        health,
        fleet,
        metrics_report,
        clock,
        seen_window=settings.provided.worker_seen_window,
        demand=demand,
    )


def build_container(settings: Settings) -> Container:
    """A wired container; raises ``ConfigError`` naming the variable on bad configuration."""
    container = Container(settings=settings)
    container.db_url()
    container.internal_api_key()
    container.cognito_secret()
    if _identity_kind(settings) == "local":
        container.local_issuer()
    return container


async def start(container: Container) -> None:
    """Open what the adapters hold: the database's connections, the upstream's HTTP client
    (each a ``Resource``), in the running event loop."""
    pending = container.init_resources()
    if pending is not None:  # None when every resource is overridden (tests)
        await pending


async def warm_up(container: Container) -> None:
    """What a server does before it takes requests: fetch Cognito's key set (when workers sign
    in there) before the first worker needs it; a failure is logged, and the first request
    tries again."""
    verifier = container.verifier()
    if isinstance(verifier, CognitoVerifier):
        await verifier.warm_up()


async def stop(container: Container) -> None:
    """Close what ``start`` opened (what another adapter took over is closed as well: the
    container closes what it runs with)."""
    pending = container.shutdown_resources()
    if pending is not None:
        await pending


@asynccontextmanager
async def running(container: Container) -> AsyncIterator[Container]:
    """``start``, then ``stop`` however the block ends: every front-end's way to use the
    container's adapters for a while (a request loop, a CLI command)."""
    await start(container)
    try:
        yield container
    finally:
        await stop(container)


def use_in_memory_queue(container: Container, queue: InMemoryQueue) -> None:
    """Serve every port of the queue from ``queue``, kept in this process: for tests, and for
    an embedding service that needs no database. The container's database is then never
    opened, and the dashboard's sessions are kept in this process too (Litestar's
    ``MemoryStore``)."""
    for port in (
        container.queue,
        container.outbox,
        container.uploads,
        container.registry,
        container.dashboard_reads,
        container.audit,
    ):
        port.override(providers.Object(queue))
    container.health.override(providers.Object(InProcessStore()))
    from litestar.stores.memory import MemoryStore

    container.ui_sessions.override(providers.Singleton(MemoryStore))
    container.database_open.override(providers.Object(None))


async def migrate(container: Container) -> None:
    """Bring the queue's schema up to date; ``ConfigError`` naming ``QUEUE_DB_URL`` when the
    database cannot be used (unreachable, refused, or at a newer release's schema)."""
    from workerfacing_api.adapters.sql.migrate import MigrationFailed, upgrade_database

    url = container.db_url()
    try:
        await upgrade_database(url)
    except MigrationFailed as exc:
        name = url.render_as_string()  # the password hidden
        raise ConfigError(f"QUEUE_DB_URL: cannot use the database {name} ({exc})") from None
