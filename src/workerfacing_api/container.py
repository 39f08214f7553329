"""The composition root: settings → adapters → core services, built in one place.

Nothing here runs at import time; ``build_container(settings)`` wires a container whose providers
create engines, clients and services lazily, on first use, in the event loop that uses them.
"""

from __future__ import annotations

from pathlib import Path

from dependency_injector import containers, providers
from sqlalchemy.engine import URL

from workerfacing_api.adapters.identity import CachingVerifier, LocalIssuer
from workerfacing_api.adapters.identity.local import read_or_create_secret
from workerfacing_api.adapters.secrets import SecretResolver
from workerfacing_api.adapters.signing import UrlSigner
from workerfacing_api.adapters.sql import DatabaseUrlError, database_url, open_queue
from workerfacing_api.adapters.storage import LocalStorage
from workerfacing_api.adapters.upstream import HttpUpstream
from workerfacing_api.config import ConfigError, Settings, state_dir
from workerfacing_api.core.clock import SystemClock
from workerfacing_api.core.files import FileService
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.sync import Backoff, StatusSync


def _forwarding(settings: Settings) -> bool:
    return settings.userfacing_api_url is not None


def _upstream(settings: Settings, api_key: str) -> HttpUpstream | None:
    """The user-facing API, or None: then no events are recorded and no dispatcher runs."""
    if settings.userfacing_api_url is None:
        return None
    return HttpUpstream(settings.userfacing_api_url, api_key)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    db_url: providers.Dependency[URL] = providers.Dependency(instance_of=URL)
    internal_api_key = providers.Dependency(instance_of=str)
    identity_key_file = providers.Dependency(instance_of=Path)

    clock = providers.Singleton(SystemClock)
    # Outbox events are written only when there is an upstream to deliver them to.
    forwarding = providers.Callable(_forwarding, settings)
    queue = providers.Singleton(open_queue, db_url, record_events=forwarding)
    storage = providers.Singleton(LocalStorage, settings.provided.user_data_root_path)
    local_issuer = providers.Singleton(LocalIssuer, identity_key_file)
    identity = providers.Singleton(CachingVerifier, local_issuer, clock)
    upstream = providers.Singleton(_upstream, settings, internal_api_key)
    policy = providers.Singleton(
        RetryPolicy,
        max_retries=settings.provided.max_retries,
        timeout_failure=settings.provided.timeout_failure,
        retry_different=settings.provided.retry_different,
    )
    backoff = providers.Singleton(Backoff, base=0.5, cap=settings.provided.upstream_backoff_max)
    sync = providers.Singleton(StatusSync, queue, queue, upstream, clock, backoff=backoff)
    jobs = providers.Singleton(JobService, queue, clock, policy, sync)
    files = providers.Singleton(FileService, queue, storage, settings.provided.max_upload_bytes)
    signer = providers.Singleton(UrlSigner, internal_api_key, lifetime=settings.provided.url_expiry)


def internal_key_file(settings: Settings) -> Path:
    return state_dir(settings) / "internal-api-key"


def resolve_internal_key(settings: Settings) -> tuple[str, Path | None]:
    """The shared key with the user-facing API; generated (and its file returned) when unset."""
    resolver = SecretResolver()
    if settings.internal_api_key_secret:
        return resolver.resolve(
            settings.internal_api_key_secret, name="INTERNAL_API_KEY_SECRET"
        ), None
    path = internal_key_file(settings)
    return _state_secret(path), path


def _state_secret(path: Path) -> str:
    try:
        return read_or_create_secret(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LOCAL_STATE_DIR: cannot keep a secret in {path} ({exc})") from None


def build_container(settings: Settings) -> Container:
    """A wired container; raises ``ConfigError`` naming the variable on bad configuration."""
    secret = None
    if settings.queue_db_secret:
        secret = SecretResolver().resolve(settings.queue_db_secret, name="QUEUE_DB_SECRET")
    try:
        url = database_url(settings.queue_db_url, secret)
    except DatabaseUrlError as exc:
        raise ConfigError(f"QUEUE_DB_URL {exc}") from None
    key, _ = resolve_internal_key(settings)
    if not settings.cognito_configured:
        _state_secret(state_dir(settings) / "identity.key")  # the local issuer's key, made now
    return Container(
        settings=settings,
        db_url=url,
        internal_api_key=key,
        identity_key_file=state_dir(settings) / "identity.key",
    )
