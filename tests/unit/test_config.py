"""Settings and secrets: defaults of the embedded setup, one clear line per bad variable, the
bounds, `.env` against the environment, secrets as operators write them (and never echoed), and
the README's table of variables in step with what the code reads."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import msgspec
import pytest

from workerfacing_api.adapters.secrets import SecretError, SecretResolver
from workerfacing_api.config import VARIABLES, ConfigError, Settings, load_settings, settings_from

README = Path(__file__).resolve().parents[2] / "README.md"


def test_no_configuration_gives_the_embedded_default() -> None:
    settings = settings_from({})
    assert settings.embedded_default
    assert msgspec.structs.asdict(settings) == {
        "filesystem": "local",
        "s3_bucket": None,
        "s3_region": None,
        "user_data_root_path": "./user_data",
        "queue_db_url": "sqlite:///./.workerfacing-api/queue.db",
        "queue_db_secret": None,
        "max_retries": 3,
        "timeout_failure": 300,
        "retry_different": True,
        "userfacing_api_url": None,
        "internal_api_key_secret": None,
        "cognito_client_id": None,
        "cognito_secret": None,
        "cognito_user_pool_id": None,
        "cognito_region": None,
        "host": "127.0.0.1",
        "port": 8001,
        "sweep_interval": 60.0,
        "upstream_backoff_max": 60.0,
        "upstream_keepalive_interval": 5.0,
        "worker_seen_window": 900.0,
        "aside_after_failures": 3,
        "aside_cool_off": 600.0,
        "aside_cool_off_max": 86400.0,
        "aside_window": 3600.0,
        "max_jobs_per_node": 8,
        "trusted_proxies": "",
        "wait_notice_after": 600.0,
        "queued_limit": None,
        "max_upload_bytes": 10 * 1024**3,
        "local_state_dir": "./.workerfacing-api",
        "url_expiry": 600,
        "web_concurrency": 1,
        "shutdown_grace": 20.0,
        "metrics": True,
        "log_level": "INFO",
        "log_format": "plain",
        "access_log": True,
    }


def test_values_are_decoded_to_their_types() -> None:
    settings = settings_from(
        {
            "PORT": "9000",
            "MAX_RETRIES": "0",
            "TIMEOUT_FAILURE": "30",
            "RETRY_DIFFERENT": "false",
            "SWEEP_INTERVAL": "0.5",
            "UPSTREAM_KEEPALIVE_INTERVAL": "0",
            "WORKER_SEEN_WINDOW": "120.5",
            "MAX_UPLOAD_BYTES": "1048576",
            "USERFACING_API_URL": "http://userapi:8000",
            "INTERNAL_API_KEY_SECRET": "k",
            "HOST": "api.internal",
        }
    )
    assert settings.port == 9000
    assert settings.max_retries == 0
    assert settings.timeout_failure == 30
    assert settings.retry_different is False
    assert settings.sweep_interval == 0.5
    assert settings.upstream_keepalive_interval == 0
    assert settings.worker_seen_window == 120.5
    assert settings.max_upload_bytes == 1048576
    assert settings.userfacing_api_url == "http://userapi:8000"
    assert settings.host == "api.internal"


@pytest.mark.parametrize(
    ("variable", "given", "expected"),
    [
        ("FILESYSTEM", "LOCAL", "local"),
        ("LOG_LEVEL", "debug", "DEBUG"),
        ("LOG_LEVEL", "Warning", "WARNING"),
        ("LOG_FORMAT", "JSON", "json"),
        ("LOG_FORMAT", "Plain", "plain"),
    ],
)
def test_words_are_accepted_in_any_case(variable: str, given: str, expected: str) -> None:
    settings = settings_from({variable: given})
    assert getattr(settings, variable.lower()) == expected


@pytest.mark.parametrize("variable", ["RETRY_DIFFERENT", "ACCESS_LOG"])
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_booleans(variable: str, given: str, expected: bool) -> None:
    assert getattr(settings_from({variable: given}), variable.lower()) is expected


def test_empty_or_blank_means_unset_and_surrounding_whitespace_is_dropped() -> None:
    settings = settings_from(
        {"PORT": "", "LOG_LEVEL": "  ", "MAX_RETRIES": " 5\n", "HOST": "\tapi.internal "}
    )
    assert (settings.port, settings.log_level) == (8001, "INFO")
    assert (settings.max_retries, settings.host) == (5, "api.internal")


# Every variable with a typed value, and values of each kind it must refuse.
_BAD_VALUES = [
    ("FILESYSTEM", "ftp"),
    ("MAX_RETRIES", "abc"),
    ("MAX_RETRIES", "-1"),
    ("MAX_RETRIES", "2.5"),
    ("TIMEOUT_FAILURE", "5m"),
    ("TIMEOUT_FAILURE", "0"),
    ("TIMEOUT_FAILURE", "99999999999999"),
    ("RETRY_DIFFERENT", "maybe"),
    ("RETRY_DIFFERENT", "2"),
    ("PORT", "http"),
    ("PORT", "70000"),
    ("PORT", "-1"),
    ("SWEEP_INTERVAL", "nan"),
    ("SWEEP_INTERVAL", "0"),
    ("SWEEP_INTERVAL", "inf"),
    ("UPSTREAM_BACKOFF_MAX", "soon"),
    ("UPSTREAM_BACKOFF_MAX", "0.05"),
    ("UPSTREAM_KEEPALIVE_INTERVAL", "-1"),
    ("UPSTREAM_KEEPALIVE_INTERVAL", "5s"),
    ("WORKER_SEEN_WINDOW", "0"),
    ("WORKER_SEEN_WINDOW", "nan"),
    ("MAX_UPLOAD_BYTES", "lots"),
    ("MAX_UPLOAD_BYTES", "0"),
    ("URL_EXPIRY", "0"),
    ("URL_EXPIRY", "604801"),
    ("LOG_LEVEL", "LOUD"),
    ("LOG_FORMAT", "xml"),
    ("ACCESS_LOG", "sometimes"),
]


@pytest.mark.parametrize(("variable", "value"), _BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r}: expected ")
    assert "\n" not in message


def test_the_error_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match=r"^MAX_RETRIES='abc': expected int$"):
        settings_from({"MAX_RETRIES": "abc"})
    with pytest.raises(ConfigError, match=r"^PORT='70000': expected int <= 65535$"):
        settings_from({"PORT": "70000"})
    with pytest.raises(ConfigError, match=r"expected one of DEBUG, INFO, WARNING, ERROR$"):
        settings_from({"LOG_LEVEL": "LOUD"})
    with pytest.raises(ConfigError, match=r"^ACCESS_LOG='2': expected 1 or 0"):
        settings_from({"ACCESS_LOG": "2"})


@pytest.mark.parametrize(
    ("variable", "lowest", "highest"),
    [
        ("MAX_RETRIES", "0", None),
        ("TIMEOUT_FAILURE", "1", "31536000"),
        ("PORT", "0", "65535"),
        ("SWEEP_INTERVAL", "0.01", "31536000"),
        ("UPSTREAM_BACKOFF_MAX", "0.1", "31536000"),
        ("UPSTREAM_KEEPALIVE_INTERVAL", "0", "31536000"),
        ("WORKER_SEEN_WINDOW", "0.001", "31536000"),
        ("MAX_UPLOAD_BYTES", "1", None),
        ("URL_EXPIRY", "1", "604800"),
    ],
)
def test_bounds_are_inclusive(variable: str, lowest: str, highest: str | None) -> None:
    for value in (lowest, highest) if highest is not None else (lowest,):
        assert getattr(settings_from({variable: value}), variable.lower()) == float(value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FILESYSTEM": "s3"}, "S3_BUCKET"),
        (
            {"USERFACING_API_URL": "userapi:8000", "INTERNAL_API_KEY_SECRET": "k"},
            "USERFACING_API_URL",
        ),
        ({"USERFACING_API_URL": "http://userapi:8000"}, "INTERNAL_API_KEY_SECRET"),
        ({"COGNITO_USER_POOL_ID": "eu-west-1_x"}, "COGNITO_CLIENT_ID"),
        ({"FILESYSTEM": "s3", "S3_BUCKET": "s3://decode-data"}, "S3_BUCKET"),
        ({"FILESYSTEM": "s3", "S3_BUCKET": "Decode_Data"}, "S3_BUCKET"),
        (
            {
                "COGNITO_USER_POOL_ID": "eu-west-1_x",
                "COGNITO_CLIENT_ID": "c",
                "COGNITO_REGION": "europe",
            },
            "COGNITO_REGION",
        ),
        (
            {
                "COGNITO_USER_POOL_ID": "us-east-1_x",
                "COGNITO_CLIENT_ID": "c",
                "COGNITO_REGION": "eu-west-1",
            },
            "COGNITO_USER_POOL_ID",
        ),
    ],
)
def test_an_inconsistent_configuration_names_the_variable_in_one_line(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(env)
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


def test_s3_and_cognito_are_configured_together() -> None:
    settings = settings_from(
        {
            "FILESYSTEM": "S3",
            "S3_BUCKET": "decode-user-data",
            "S3_REGION": "eu-central-1",
            "COGNITO_USER_POOL_ID": "eu-central-1_AbC123",
            "COGNITO_CLIENT_ID": "5s7q",
            "COGNITO_REGION": "eu-central-1",
        }
    )
    assert (settings.filesystem, settings.s3_bucket) == ("s3", "decode-user-data")
    assert settings.cognito_configured
    assert not settings.embedded_default


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9100\nMAX_RETRIES=7\nLOG_LEVEL=debug\n")
    settings = load_settings({"PORT": "9200", "LOG_LEVEL": ""}, dotenv)
    # An empty variable in the environment is unset, so the .env value stays in force.
    assert (settings.port, settings.max_retries, settings.log_level) == (9200, 7, "DEBUG")


def test_a_missing_dotenv_file_is_no_error(tmp_path: Path) -> None:
    settings = load_settings({"PORT": "9300"}, tmp_path / "absent.env")
    assert settings.port == 9300


def test_a_bad_value_in_dotenv_is_named(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("WORKER_SEEN_WINDOW=forever\n")
    with pytest.raises(ConfigError, match=r"^WORKER_SEEN_WINDOW='forever': expected float"):
        load_settings({}, dotenv)


def test_readme_documents_every_variable_the_code_reads() -> None:
    text = README.read_text()
    table = set(re.findall(r"^\| `([A-Z_0-9]+)` \|", text, flags=re.MULTILINE))
    fields = {f.name.upper() for f in msgspec.structs.fields(Settings)}
    assert table == set(VARIABLES) == fields


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("s3cret", "s3cret"),
        ("s3cret\n", "s3cret"),
        ("  two words \r\n", "two words"),
        ('{"username": "api", "password": "pw"}', "pw"),
        ('\n{"password": "pw"}\n', "pw"),
        ('{"password": " spaced "}', " spaced "),  # JSON quotes it: kept as written
    ],
)
def test_a_secret_is_the_plain_value_or_the_password_of_a_json_document(
    value: str, secret: str
) -> None:
    assert SecretResolver().resolve(value, name="QUEUE_DB_SECRET") == secret


_SECRET = "hunter2-do-not-log"


@pytest.mark.parametrize(
    "value",
    [
        f'{{"password": "{_SECRET}"',  # cut short
        f'{{"pass": "{_SECRET}"}}',
        f'{{"password": ["{_SECRET}"]}}',
        '{"password": ""}',
        f'{{"password": "{_SECRET}"}} trailing',
        '{"a": ' * 100_000 + f'"{_SECRET}"' + "}" * 100_000,
    ],
)
def test_a_bad_secret_is_named_but_never_shown(value: str) -> None:
    with pytest.raises(SecretError) as caught:
        SecretResolver().resolve(value, name="INTERNAL_API_KEY_SECRET")
    message = str(caught.value)
    assert message.startswith("INTERNAL_API_KEY_SECRET ")
    assert _SECRET not in message
    assert "\n" not in message
    # Nor in a logged traceback, which would show a chained decoder error too.
    assert _SECRET not in "".join(traceback.format_exception(caught.value))
