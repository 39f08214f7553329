"""Settings: read once from the environment and ``.env``, validated, with documented defaults.

With nothing configured the service runs the *embedded default*: SQLite and local files under the
working directory, a local token issuer instead of Cognito, no upstream, 127.0.0.1:8001. Each
value is decoded by ``msgspec.convert`` into the typed ``Settings`` below, whose annotations carry
every bound; a bad or incomplete configuration raises ``ConfigError`` whose one-line message names
the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

import msgspec
from dotenv import dotenv_values

DEFAULT_STATE_DIR = ".workerfacing-api"

# Durations are capped at a year so that none of them overflows a ``timedelta`` (an ``inf`` or a
# 20-digit value would otherwise pass decoding and crash the sweeper long after start-up).
_YEAR = 365 * 24 * 3600
_WEEK = 7 * 24 * 3600  # the longest lifetime S3 allows a pre-signed URL


class ConfigError(ValueError):
    """A configuration variable is missing or wrong; ``str(error)`` names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting, named after its environment variable (lower case)."""

    filesystem: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_region: str | None = None
    user_data_root_path: str = "./user_data"
    queue_db_url: str = f"sqlite:///./{DEFAULT_STATE_DIR}/queue.db"
    queue_db_secret: str | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 3
    timeout_failure: Annotated[int, msgspec.Meta(ge=1, le=_YEAR)] = 300
    retry_different: bool = True
    userfacing_api_url: str | None = None
    internal_api_key_secret: str | None = None
    cognito_client_id: str | None = None
    cognito_secret: str | None = None
    cognito_user_pool_id: str | None = None
    cognito_region: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8001
    sweep_interval: Annotated[float, msgspec.Meta(ge=0.01, le=_YEAR)] = 60.0
    upstream_backoff_max: Annotated[float, msgspec.Meta(ge=0.1, le=_YEAR)] = 60.0
    # 0 forwards every keep-alive upstream, as the original service did.
    upstream_keepalive_interval: Annotated[float, msgspec.Meta(ge=0, le=_YEAR)] = 5.0
    worker_seen_window: Annotated[float, msgspec.Meta(gt=0, le=_YEAR)] = 900.0
    # Setting a broken worker aside (ARCHITECTURE §3): after this many failed attempts in a row
    # (0: never), for a cool-off that doubles on each repeat up to the maximum; outcomes older
    # than the window are not evidence.
    aside_after_failures: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 3
    aside_cool_off: Annotated[float, msgspec.Meta(gt=0, le=_YEAR)] = 600.0
    aside_cool_off_max: Annotated[float, msgspec.Meta(gt=0, le=_YEAR)] = 86_400.0
    aside_window: Annotated[float, msgspec.Meta(gt=0, le=_YEAR)] = 3_600.0
    # Active jobs one worker node may hold at once: a pull answers only what fits under it.
    max_jobs_per_node: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8
    # Addresses or networks of proxies in front of the service, comma-separated: only from these
    # are X-Forwarded-For (the client's address, a part of its node) and X-Forwarded-Proto
    # believed. None by default.
    trusted_proxies: str = ""
    # Telling users why their job waits (ARCHITECTURE §3): a job queued this long that no worker
    # seen can run is forwarded as `queued` with the reason (0: never); with a queued limit such
    # a job fails after that long (None: never).
    wait_notice_after: Annotated[float, msgspec.Meta(ge=0, le=_YEAR)] = 600.0
    queued_limit: Annotated[float, msgspec.Meta(gt=0, le=_YEAR)] | None = None
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1)] = 10 * 1024**3
    local_state_dir: str = f"./{DEFAULT_STATE_DIR}"
    url_expiry: Annotated[int, msgspec.Meta(ge=1, le=_WEEK)] = 600
    # Processes of `serve` on one port (uvicorn's workers); `serve --workers N` overrides it.
    web_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    # Seconds requests in flight get to finish after SIGTERM before the process stops.
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 20.0
    metrics: bool = True  # /metrics, and the counting behind it
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    access_log: bool = True

    @property
    def cognito_configured(self) -> bool:
        return self.cognito_user_pool_id is not None

    @property
    def embedded_default(self) -> bool:
        """Local token issuer, i.e. no Cognito: a development setup."""
        return not self.cognito_configured


def state_dir(settings: Settings) -> Path:
    """Folder of the local issuer's key and of generated secrets."""
    return Path(settings.local_state_dir).expanduser().resolve()


# Variables and a one-line description each (the README's table is checked against it).
VARIABLES: dict[str, str] = {
    "FILESYSTEM": "where job files live: `local` (default) or `s3`",
    "S3_BUCKET": "bucket of job files when `FILESYSTEM=s3`",
    "S3_REGION": "region of that bucket",
    "USER_DATA_ROOT_PATH": "root folder of job files with `FILESYSTEM=local` (`./user_data`)",
    "QUEUE_DB_URL": "queue database: `sqlite:///path.db` or `postgresql://user:{}@host:5432/db`",
    "QUEUE_DB_SECRET": 'fills the `{}` in `QUEUE_DB_URL`: a password, JSON `{"password": …}`',
    "MAX_RETRIES": "re-queues after a timeout before a job fails (default 3)",
    "TIMEOUT_FAILURE": "seconds without keep-alive before a job is taken back (default 300)",
    "RETRY_DIFFERENT": "`1` (default): never give a worker a job it already attempted",
    "USERFACING_API_URL": "base URL of the user-facing API; unset: status changes go nowhere",
    "INTERNAL_API_KEY_SECRET": "shared key (`x-api-key`) with the user-facing API; signs file URLs",
    "COGNITO_CLIENT_ID": "Cognito app client id (shown by `/access_info`)",
    "COGNITO_SECRET": "Cognito app client secret, if the client has one",
    "COGNITO_USER_POOL_ID": "Cognito user pool; unset: the local token issuer is used",
    "COGNITO_REGION": "region of the user pool",
    "HOST": "interface `serve` listens on (default `127.0.0.1`)",
    "PORT": "port `serve` listens on (default `8001`)",
    "SWEEP_INTERVAL": "seconds between sweeps for timed-out jobs (default 60)",
    "UPSTREAM_BACKOFF_MAX": "longest wait in seconds between retries of an undelivered status",
    "UPSTREAM_KEEPALIVE_INTERVAL": "seconds between keep-alives sent upstream per job (default 5)",
    "WORKER_SEEN_WINDOW": "seconds a worker counts as present after its last pull (default 900)",
    "ASIDE_AFTER_FAILURES": "failed attempts in a row that set a worker aside (default 3)",
    "ASIDE_COOL_OFF": "seconds of a worker's first cool-off (default 600; doubles on repeat)",
    "ASIDE_COOL_OFF_MAX": "longest cool-off in seconds (default 86400)",
    "ASIDE_WINDOW": "seconds back that attempts' outcomes count as evidence (default 3600)",
    "MAX_JOBS_PER_NODE": "active jobs one worker node may hold at once (default 8)",
    "TRUSTED_PROXIES": "proxies whose `X-Forwarded-For`/`-Proto` are believed: addresses or "
    "networks, comma-separated (default none)",
    "WAIT_NOTICE_AFTER": "seconds a job waits, with no worker seen that can run it, before its "
    "user is told why (default 600; 0: never)",
    "QUEUED_LIMIT": "seconds after which such a job fails, with the reason (default: never)",
    "MAX_UPLOAD_BYTES": "largest accepted upload in bytes (default 10 GiB)",
    "LOCAL_STATE_DIR": "folder of the local issuer's key and generated secrets",
    "URL_EXPIRY": "seconds a signed or pre-signed file URL stays valid (default 600)",
    "WEB_CONCURRENCY": "processes `serve` runs on its port (default 1; `serve --workers N`)",
    "SHUTDOWN_GRACE": "seconds requests in flight get after SIGTERM (default 20)",
    "METRICS": "`1` (default): count and serve `/metrics`; `0`: neither",
    "LOG_LEVEL": "DEBUG, INFO (default), WARNING or ERROR",
    "LOG_FORMAT": "`plain` (default): one readable line per record; `json`: a JSON object each",
    "ACCESS_LOG": "`1` (default): log one line per HTTP request",
}

_FIELDS = {field.name: field.type for field in msgspec.structs.fields(Settings)}

# msgspec takes 1/0 and true/false (any case) for a bool; these words were accepted before it
# decoded the settings, so configurations written with them keep working.
_BOOL_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}

# Every error msgspec raises for a flat mapping ends with the path of the field it concerns.
_ERROR_AT = re.compile(r"^(?P<problem>.*) - at `\$\.(?P<field>\w+)`$")


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> Settings:
    """Settings from ``.env`` (if present) overridden by the environment.

    An empty variable counts as unset in either place, so ``PORT=`` in the environment (as a
    compose file writes for an undefined ``${PORT}``) leaves the ``.env`` value in force.
    """
    values: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv).items() if v})
    values.update({k: v for k, v in (os.environ if environ is None else environ).items() if v})
    return settings_from(values)


def settings_from(env: Mapping[str, str]) -> Settings:
    """Decode the variables in ``env``; an empty or blank value means unset (the default)."""
    values: dict[str, str] = {}
    for field in _FIELDS:
        # Surrounding whitespace is never meant: a value read from a file ends with a newline.
        text = env.get(field.upper(), "").strip()
        if text:
            values[field] = _normalise(field, text)
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, env) from None
    _check_consistency(settings)
    return settings


def _normalise(field: str, text: str) -> str:
    """Values are case-insensitive where a fixed set of words is accepted."""
    kind = _FIELDS[field]
    if get_origin(kind) is Literal:
        return next((c for c in get_args(kind) if c.lower() == text.lower()), text)
    if kind is bool:
        return _BOOL_WORDS.get(text.lower(), text)
    return text


def _config_error(exc: msgspec.ValidationError, env: Mapping[str, str]) -> ConfigError:
    """One line naming the variable and its value as given, e.g. ``PORT='http': expected int``."""
    match = _ERROR_AT.match(str(exc))
    assert match is not None, f"a settings error without a field path: {exc}"
    field = match["field"]
    kind = _FIELDS[field]
    if get_origin(kind) is Literal:
        expected = "expected one of " + ", ".join(get_args(kind))
    elif kind is bool:
        expected = "expected 1 or 0 (true/false, yes/no, on/off)"
    else:  # msgspec's own words, e.g. "Expected `int` >= 0"; every value given here is a str
        problem = match["problem"].replace("`", "").replace(", got str", "")
        expected = problem[:1].lower() + problem[1:]
    name = field.upper()
    return ConfigError(f"{name}={env[name]!r}: {expected}")


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


def trusted_proxies(s: Settings) -> list[str]:
    """TRUSTED_PROXIES as a list of addresses and networks (empty: none)."""
    return [p.strip() for p in s.trusted_proxies.split(",") if p.strip()]


def _check_consistency(s: Settings) -> None:
    for proxy in trusted_proxies(s):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"TRUSTED_PROXIES={s.trusted_proxies!r}: {proxy!r} is not an IP address or "
                "network (e.g. 10.0.0.5 or 10.0.0.0/16)"
            ) from None
    if s.aside_cool_off_max < s.aside_cool_off:
        raise ConfigError(
            f"ASIDE_COOL_OFF_MAX={s.aside_cool_off_max:g} must not be less than "
            f"ASIDE_COOL_OFF={s.aside_cool_off:g}"
        )
    if s.filesystem == "s3":
        if not s.s3_bucket:
            raise ConfigError("S3_BUCKET must be set when FILESYSTEM=s3")
        if not _BUCKET.fullmatch(s.s3_bucket):
            raise ConfigError(
                f"S3_BUCKET={s.s3_bucket!r} is not a bucket name (3-63 lower-case letters, "
                "digits, dots and hyphens; no s3:// prefix)"
            )
    cognito = {
        "COGNITO_USER_POOL_ID": s.cognito_user_pool_id,
        "COGNITO_CLIENT_ID": s.cognito_client_id,
        "COGNITO_REGION": s.cognito_region,
    }
    given = [k for k, v in cognito.items() if v]
    if given and len(given) < len(cognito):
        missing = next(k for k, v in cognito.items() if not v)
        raise ConfigError(f"{missing} must be set too when {given[0]} is set (Cognito)")
    if s.cognito_region and not _REGION.fullmatch(s.cognito_region):
        raise ConfigError(f"COGNITO_REGION={s.cognito_region!r} is not an AWS region name")
    if s.cognito_user_pool_id and not s.cognito_user_pool_id.startswith(f"{s.cognito_region}_"):
        raise ConfigError(
            f"COGNITO_USER_POOL_ID={s.cognito_user_pool_id!r} is not a pool of "
            f"COGNITO_REGION={s.cognito_region!r} (pool ids look like {s.cognito_region}_AbC123)"
        )
    if s.userfacing_api_url is not None:
        if not s.userfacing_api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"USERFACING_API_URL={s.userfacing_api_url!r} must start with http:// or https://"
            )
        if not s.internal_api_key_secret:
            raise ConfigError("INTERNAL_API_KEY_SECRET must be set when USERFACING_API_URL is set")
