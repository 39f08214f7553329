"""Settings: read once from the environment and ``.env``, validated, with documented defaults.

With nothing configured the service runs the *embedded default*: SQLite and local files under the
working directory, a local token issuer instead of Cognito, no upstream, 127.0.0.1:8001. A bad or
incomplete configuration raises ``ConfigError`` whose one-line message names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
from dotenv import dotenv_values

DEFAULT_STATE_DIR = ".workerfacing-api"


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
    max_retries: int = 3
    timeout_failure: int = 300
    retry_different: bool = True
    userfacing_api_url: str | None = None
    internal_api_key_secret: str | None = None
    cognito_client_id: str | None = None
    cognito_secret: str | None = None
    cognito_user_pool_id: str | None = None
    cognito_region: str | None = None
    host: str = "127.0.0.1"
    port: int = 8001
    sweep_interval: float = 60.0
    upstream_backoff_max: float = 60.0
    max_upload_bytes: int = 10 * 1024**3
    local_state_dir: str = f"./{DEFAULT_STATE_DIR}"
    url_expiry: int = 600
    log_level: str = "INFO"
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


# Variables, their type, and a one-line description (the README's table is checked against it).
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
    "MAX_UPLOAD_BYTES": "largest accepted upload in bytes (default 10 GiB)",
    "LOCAL_STATE_DIR": "folder of the local issuer's key and generated secrets",
    "URL_EXPIRY": "seconds a signed or pre-signed file URL stays valid (default 600)",
    "LOG_LEVEL": "DEBUG, INFO (default), WARNING or ERROR",
    "ACCESS_LOG": "`1` (default): log one line per HTTP request",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _int(name: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name}={raw!r} must be {bound}")
    return value


def _float(name: str, raw: str, *, minimum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= minimum:  # also rejects nan
        raise ConfigError(f"{name}={raw!r} must be >= {minimum:g}")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be 1 or 0 (true/false)")


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
) -> Settings:
    """Settings from ``.env`` (if present) overridden by the environment."""
    values: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return settings_from(values)


def settings_from(env: Mapping[str, str]) -> Settings:
    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    kw: dict[str, object] = {}
    fs = get("FILESYSTEM")
    if fs is not None:
        if fs.lower() not in ("local", "s3"):
            raise ConfigError(f"FILESYSTEM={fs!r} must be 'local' or 's3'")
        kw["filesystem"] = fs.lower()
    for name in (
        "S3_BUCKET",
        "S3_REGION",
        "USER_DATA_ROOT_PATH",
        "QUEUE_DB_URL",
        "QUEUE_DB_SECRET",
        "USERFACING_API_URL",
        "INTERNAL_API_KEY_SECRET",
        "COGNITO_CLIENT_ID",
        "COGNITO_SECRET",
        "COGNITO_USER_POOL_ID",
        "COGNITO_REGION",
        "HOST",
        "LOCAL_STATE_DIR",
    ):
        value = get(name)
        if value is not None:
            kw[name.lower()] = value
    ints = {
        "MAX_RETRIES": (0, None),
        "TIMEOUT_FAILURE": (1, None),
        "PORT": (0, 65535),
        "MAX_UPLOAD_BYTES": (1, None),
        "URL_EXPIRY": (1, 7 * 24 * 3600),
    }
    for name, (lo, hi) in ints.items():
        value = get(name)
        if value is not None:
            kw[name.lower()] = _int(name, value, minimum=lo, maximum=hi)
    for name in ("RETRY_DIFFERENT", "ACCESS_LOG"):
        value = get(name)
        if value is not None:
            kw[name.lower()] = _bool(name, value)
    value = get("SWEEP_INTERVAL")
    if value is not None:
        kw["sweep_interval"] = _float("SWEEP_INTERVAL", value, minimum=0.01)
    value = get("UPSTREAM_BACKOFF_MAX")
    if value is not None:
        kw["upstream_backoff_max"] = _float("UPSTREAM_BACKOFF_MAX", value, minimum=0.1)
    value = get("LOG_LEVEL")
    if value is not None:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL={value!r} must be DEBUG, INFO, WARNING or ERROR")
        kw["log_level"] = value.upper()
    settings = Settings(**kw)  # type: ignore[arg-type]
    _check_consistency(settings)
    return settings


def _check_consistency(s: Settings) -> None:
    if s.filesystem == "s3":
        if not s.s3_bucket:
            raise ConfigError("S3_BUCKET must be set when FILESYSTEM=s3")
        raise ConfigError(
            "FILESYSTEM=s3 is not available in this version of workerfacing-api; use local"
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
    if given:
        raise ConfigError(
            "COGNITO_USER_POOL_ID: Cognito is not available in this version of "
            "workerfacing-api; unset the COGNITO_* variables to use the local token issuer"
        )
    if s.userfacing_api_url is not None:
        if not s.userfacing_api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"USERFACING_API_URL={s.userfacing_api_url!r} must start with http:// or https://"
            )
        if not s.internal_api_key_secret:
            raise ConfigError("INTERNAL_API_KEY_SECRET must be set when USERFACING_API_URL is set")
