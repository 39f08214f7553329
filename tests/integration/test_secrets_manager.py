"""Secrets given as Secrets Manager ARNs (ARCHITECTURE §5), fetched from a real moto server: a plain
string or JSON with ``password``, stripped; a secret that cannot be read stops start-up with one
line naming the variable and the ARN, never a value."""

from __future__ import annotations

import json
import traceback

import pytest
from devtools.aws_local import MotoServer

from workerfacing_api.adapters.secrets import SecretError, SecretResolver

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return moto


@pytest.mark.parametrize(
    ("stored", "secret"),
    [
        ("s3cr3t-key\n", "s3cr3t-key"),
        (json.dumps({"username": "queue", "password": "db-pass word"}), "db-pass word"),
    ],
)
def test_an_arn_is_replaced_by_the_secret_it_names(
    aws: MotoServer, stored: str, secret: str
) -> None:
    client = aws.client("secretsmanager")
    arn = client.create_secret(Name=f"wf-{len(stored)}-{abs(hash(stored))}", SecretString=stored)[
        "ARN"
    ]
    assert SecretResolver().resolve(f"  {arn}\n", name="QUEUE_DB_SECRET") == secret


def test_a_missing_secret_is_named_with_its_arn_never_its_value(aws: MotoServer) -> None:
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:wf-missing-AbCdEf"
    with pytest.raises(SecretError) as caught:
        SecretResolver().resolve(arn, name="INTERNAL_API_KEY_SECRET")
    message = str(caught.value)
    assert message.startswith("INTERNAL_API_KEY_SECRET: cannot read the secret " + arn)
    assert "ResourceNotFoundException" in message
    assert "\n" not in message


def test_a_secret_whose_document_is_bad_is_named_but_not_shown(aws: MotoServer) -> None:
    client = aws.client("secretsmanager")
    value = '{"pass": "hunter2-do-not-log"}'
    arn = client.create_secret(Name="wf-bad-document", SecretString=value)["ARN"]
    with pytest.raises(SecretError) as caught:
        SecretResolver().resolve(arn, name="COGNITO_SECRET")
    assert str(caught.value).startswith("COGNITO_SECRET ")
    assert "hunter2" not in "".join(traceback.format_exception(caught.value))
