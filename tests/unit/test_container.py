"""The composition root: which adapter each setting selects, and the configuration errors it
stops on. Building a container opens nothing; the adapters are made here but never connect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workerfacing_api.adapters.sql import PostgresDatabase, SqliteDatabase
from workerfacing_api.adapters.upstream import HttpUpstream
from workerfacing_api.config import ConfigError, Settings
from workerfacing_api.container import build_container, running
from workerfacing_api.core.errors import Unauthenticated


def settings_in(tmp_path: Path, **fields: object) -> Settings:
    base: dict[str, object] = {
        "user_data_root_path": str(tmp_path / "user_data"),
        "local_state_dir": str(tmp_path / "state"),
        "queue_db_url": f"sqlite:///{tmp_path / 'queue.db'}",
    }
    return Settings(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "adapter"),
    [
        ("sqlite:///{tmp}/queue.db", SqliteDatabase),
        ("postgresql://nobody@127.0.0.1:1/nowhere", PostgresDatabase),  # never connected to
        ("postgres://nobody:{}@127.0.0.1:1/nowhere", PostgresDatabase),
    ],
)
async def test_the_database_url_selects_the_queue(
    tmp_path: Path, url: str, adapter: type[object]
) -> None:
    settings = settings_in(
        tmp_path, queue_db_url=url.replace("{tmp}", str(tmp_path)), queue_db_secret="pw"
    )
    container = build_container(settings)
    assert isinstance(container.database(), adapter)
    # Every port of the queue is on that one database.
    for port in (container.queue, container.outbox, container.uploads, container.registry):
        assert port()._db is container.database()


async def test_the_upstream_is_used_only_when_configured(tmp_path: Path) -> None:
    alone = build_container(settings_in(tmp_path))
    assert alone.upstream() is None
    assert alone.sync().enabled is False  # no outbox to fill, no dispatcher to run

    forwarding = build_container(
        settings_in(
            tmp_path, userfacing_api_url="http://127.0.0.1:1", internal_api_key_secret="key"
        )
    )
    async with running(forwarding):
        assert isinstance(forwarding.upstream(), HttpUpstream)
        assert forwarding.sync().enabled is True


def test_local_storage_is_rooted_at_the_data_root(tmp_path: Path) -> None:
    container = build_container(settings_in(tmp_path))
    inside = tmp_path / "user_data" / "alice" / "data" / "calib.mat"
    assert container.storage().canonical_id(str(inside)) == str(inside.resolve())


async def test_tokens_of_the_local_issuer_hold_for_every_process_of_one_state_dir(
    tmp_path: Path,
) -> None:
    minting = build_container(settings_in(tmp_path))  # as `workerfacing-api token`
    serving = build_container(settings_in(tmp_path))  # as `workerfacing-api serve`
    elsewhere = build_container(settings_in(tmp_path, local_state_dir=str(tmp_path / "other")))
    token = minting.local_issuer().mint(
        "gpu-box", ["workers"], timedelta(minutes=5), datetime.now(UTC)
    )
    identity = await serving.identity().verify(token)
    assert (identity.username, identity.groups) == ("gpu-box", frozenset({"workers"}))
    with pytest.raises(Unauthenticated):
        await elsewhere.identity().verify(token)


@pytest.mark.parametrize(
    ("fields", "variable"),
    [
        ({"queue_db_url": "mysql://db/x"}, "QUEUE_DB_URL"),
        ({"queue_db_url": "postgresql://u:{}@127.0.0.1/db"}, "QUEUE_DB_SECRET"),
        (
            {"queue_db_url": "postgresql://u:{}@h/d", "queue_db_secret": '{"user": "x"}'},
            "QUEUE_DB_SECRET",
        ),
        ({"internal_api_key_secret": '{"password": ""}'}, "INTERNAL_API_KEY_SECRET"),
        ({"local_state_dir": "{tmp}/a-file"}, "LOCAL_STATE_DIR"),
        ({"internal_api_key_secret": "key\r\nx-injected: 1"}, "INTERNAL_API_KEY_SECRET"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_variable(
    tmp_path: Path, fields: dict[str, str], variable: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    settings = settings_in(
        tmp_path, **{k: v.replace("{tmp}", str(tmp_path)) for k, v in fields.items()}
    )
    with pytest.raises(ConfigError, match=variable):
        build_container(settings)


COGNITO = {
    "cognito_user_pool_id": "eu-central-1_AbC123",
    "cognito_client_id": "decode-worker",
    "cognito_region": "eu-central-1",
}


@pytest.mark.parametrize(
    ("variables", "jwks"),
    [
        ({}, "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_AbC123"),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
            "http://127.0.0.1:5000/eu-central-1_AbC123",
        ),
        (
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
                "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": "http://127.0.0.1:6000/",
            },
            "http://127.0.0.1:6000/eu-central-1_AbC123",
        ),
    ],
)
def test_cognito_reads_the_key_set_where_botocore_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], jwks: str
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    container = build_container(settings_in(tmp_path, **COGNITO))
    verifier = container.verifier()
    assert verifier.jwks_url == f"{jwks}/.well-known/jwks.json"
    assert not (tmp_path / "state" / "identity.key").exists()  # no local issuer beside Cognito


def test_s3_storage_is_selected_by_filesystem(tmp_path: Path) -> None:
    container = build_container(
        settings_in(tmp_path, filesystem="s3", s3_bucket="decode-data", s3_region="eu-central-1")
    )
    storage = container.storage()
    assert storage.direct_transfer is False
    assert storage.canonical_id("s3://decode-data/alice/x.mat") == "s3://decode-data/alice/x.mat"
