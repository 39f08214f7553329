"""Settings: defaults of the embedded setup, one clear line per bad variable, and the README's
table of variables in step with what the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from workerfacing_api.config import VARIABLES, ConfigError, Settings, load_settings, settings_from

README = Path(__file__).resolve().parents[2] / "README.md"


def test_no_configuration_gives_the_embedded_default() -> None:
    settings = settings_from({})
    assert settings.embedded_default
    assert (settings.host, settings.port) == ("127.0.0.1", 8001)
    assert settings.queue_db_url.startswith("sqlite:///")
    assert settings.filesystem == "local"
    assert settings.userfacing_api_url is None
    assert settings.sweep_interval == 60


def test_values_are_parsed() -> None:
    settings = settings_from(
        {
            "PORT": "9000",
            "MAX_RETRIES": "0",
            "TIMEOUT_FAILURE": "30",
            "RETRY_DIFFERENT": "false",
            "SWEEP_INTERVAL": "0.5",
            "USERFACING_API_URL": "http://userapi:8000",
            "INTERNAL_API_KEY_SECRET": "k",
            "LOG_LEVEL": "debug",
            "FILESYSTEM": "LOCAL",
        }
    )
    assert settings.port == 9000
    assert settings.max_retries == 0
    assert settings.timeout_failure == 30
    assert settings.retry_different is False
    assert settings.sweep_interval == 0.5
    assert settings.log_level == "DEBUG"
    assert settings.filesystem == "local"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_RETRIES": "-1"}, "MAX_RETRIES"),
        ({"TIMEOUT_FAILURE": "0"}, "TIMEOUT_FAILURE"),
        ({"TIMEOUT_FAILURE": "5m"}, "TIMEOUT_FAILURE"),
        ({"RETRY_DIFFERENT": "maybe"}, "RETRY_DIFFERENT"),
        ({"SWEEP_INTERVAL": "nan"}, "SWEEP_INTERVAL"),
        ({"SWEEP_INTERVAL": "0"}, "SWEEP_INTERVAL"),
        ({"MAX_UPLOAD_BYTES": "lots"}, "MAX_UPLOAD_BYTES"),
        ({"FILESYSTEM": "ftp"}, "FILESYSTEM"),
        ({"FILESYSTEM": "s3"}, "S3_BUCKET"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        (
            {"USERFACING_API_URL": "userapi:8000", "INTERNAL_API_KEY_SECRET": "k"},
            "USERFACING_API_URL",
        ),
        ({"USERFACING_API_URL": "http://userapi:8000"}, "INTERNAL_API_KEY_SECRET"),
        ({"COGNITO_USER_POOL_ID": "eu-west-1_x"}, "COGNITO_CLIENT_ID"),
    ],
)
def test_a_bad_variable_is_named_in_one_line(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(env)
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9100\nMAX_RETRIES=7\n")
    settings = load_settings({"PORT": "9200"}, dotenv)
    assert (settings.port, settings.max_retries) == (9200, 7)


def test_readme_documents_every_variable_the_code_reads() -> None:
    text = README.read_text()
    table = set(re.findall(r"^\| `([A-Z_0-9]+)` \|", text, flags=re.MULTILINE))
    fields = {f.name.upper() for f in msgspec.structs.fields(Settings)}
    assert table == set(VARIABLES) == fields
