"""docs/RELIABILITY.md, finding 4: a secret sent in a path reached the log verbatim (``GET
/nope/<internal key>`` wrote the key into the access line, plain and JSON; a JWT in a path its first
200 characters). Every line the service writes now has the internal key, anything shaped like a JWT,
a link signature and an AWS credential replaced by ``[redacted]``: here through the app in this
process with the handler ``serve`` installs, and once through a real ``serve``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.inprocess import API_KEY, assemble, serving
from tests.integration.conftest import Server
from workerfacing_api.entrypoints.logs import configure_logging

FORMATS = ["plain", "json"]
MASK = "[redacted]"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def service_log() -> Iterator[Callable[[str, list[str]], None]]:
    """``configure(fmt, known)`` installs the handler ``serve`` installs (on this test's
    captured stderr); the root logger is given back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def configure(fmt: str, known: list[str]) -> None:
        configure_logging("INFO", fmt, known_secrets=known)

    yield configure
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    for handler in handlers:  # one configure_logging replaced
        root.addHandler(handler)
    root.setLevel(level)


def partials(secret: str) -> list[str]:
    """The secret and the pieces of it that must not be shown either: its first 8 characters
    (a path cut short inside it) and, for a JWT, its claims and signature."""
    pieces = [secret, secret[:8]]
    if secret.count(".") == 2:
        pieces += secret.split(".")[1:]
    return pieces


@pytest.mark.parametrize("fmt", FORMATS)
async def test_no_secret_sent_in_a_path_reaches_a_line(
    fmt: str,
    tmp_path: Path,
    service_log: Callable[[str, list[str]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assembled = assemble(tmp_path, access_log=True)
    service_log(fmt, [assembled.container.internal_api_key()])
    issuer = assembled.container.local_issuer()
    # Claims make it long: the path is cut after 200 characters, inside the token.
    token = issuer.mint("w" * 150, ["workers"], timedelta(hours=1), datetime.now(UTC))
    assert len(token) > 250
    # A JWT whose second part is not a JSON object, and a JWE-like one cut short.
    odd_jwt = "eyJhbGciOiJIUzI1NiJ9.c29tZXRoaW5nLWVsc2U.Zm9vYmFyYmF6cXV4"
    requests_sent = {
        "key": f"/nope/{API_KEY}",
        "key-in-a-segment": f"/nope/prefix{API_KEY}suffix",
        # The key across the 200th character: cut there, its first part would show.
        "key-at-the-cut": "/nope/" + "x" * (200 - 6 - 10) + API_KEY,
        "jwt": f"/nope/{token}",
        "jwt-late": "/nope/" + "y" * 150 + "/" + token,
        "odd-jwt": f"/nope/{odd_jwt}",
        "signature-in-path": f"/nope/signature={SIGNATURE}",
        "signature-encoded": f"/nope/x%3Fsignature%3D{SIGNATURE}",
        "aws-key-id": f"/nope/{AWS_KEY_ID}",
    }
    secrets = [API_KEY, token, odd_jwt, SIGNATURE, AWS_KEY_ID]
    async with serving(assembled) as api:
        for request_id, path in requests_sent.items():
            answer = await api.client.get(path, headers={"X-Request-ID": request_id})
            assert answer.status_code == 404
        answer = await api.client.get(
            "/x", params={"signature": SIGNATURE}, headers={"X-Request-ID": "query"}
        )
        assert answer.status_code == 404
        # A caller may choose any sane request id, even one shaped like a token.
        await api.client.get("/", headers={"X-Request-ID": odd_jwt})

    lines = capsys.readouterr().err.splitlines()
    access = [line for line in lines if "workerfacing_api.access" in line]
    assert len(access) == len(requests_sent) + 2, lines
    for secret in secrets:
        for piece in partials(secret):
            assert not [line for line in lines if piece in line], piece
    if fmt == "json":
        records = {r["request_id"]: r for r in map(json.loads, lines) if "request_id" in r}
        assert records["key"]["route"] == f"/nope/{MASK}"
        assert records["key"]["message"].startswith(f"GET /nope/{MASK} 404 ")
        assert records["jwt"]["route"] == f"/nope/{MASK}"
        assert records["aws-key-id"]["route"] == f"/nope/{MASK}"
        assert records["query"]["route"] == "/x"
        assert MASK in records  # the request id shaped like a JWT, masked too
    else:
        (key_line,) = [line for line in lines if "[key]" in line]
        assert f": GET /nope/{MASK} 404 " in key_line
        (jwt_line,) = [line for line in lines if "[jwt]" in line]
        assert f": GET /nope/{MASK} 404 " in jwt_line


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_secret_in_a_message_or_a_traceback_is_masked(
    fmt: str,
    tmp_path: Path,
    service_log: Callable[[str, list[str]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a library or an adapter might write: the key in an argument, a presigned S3 link in
    an exception."""
    service_log(fmt, [API_KEY])
    log = logging.getLogger("workerfacing_api.test_log_redaction")
    log.warning("upstream refused key %s", API_KEY)
    presigned = (
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_KEY_ID}%2F20250101%2Feu-central-1%2Fs3%2Faws4_request"
        "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLETOKEN&X-Amz-Signature=" + SIGNATURE
    )
    try:
        raise RuntimeError(f"upload to {presigned} failed")
    except RuntimeError:
        log.exception("storing failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    text = "\n".join(lines)
    for secret in (API_KEY, AWS_KEY_ID, SIGNATURE, "IQoJb3JpZ2luX2VjEXAMPLETOKEN"):
        assert secret not in text, secret
    assert "RuntimeError: upload to https://b.s3.amazonaws.com/k?" in text
    assert f"upstream refused key {MASK}" in text


# --- a real serve -------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", FORMATS)
def test_serve_writes_no_secret_sent_in_a_path(
    fmt: str, server_factory: Callable[..., Server]
) -> None:
    """The probe's requests against ``serve`` with its generated internal key (plain) or one
    set in INTERNAL_API_KEY_SECRET with characters a path keeps as they are (json)."""
    env = {"LOG_FORMAT": fmt, "ACCESS_LOG": "1"}
    if fmt == "json":
        env["INTERNAL_API_KEY_SECRET"] = "Not+a/Shape=of.any-Kind_2f9c"
    server = server_factory(env)
    token = server.token("w" * 150)
    assert len(token) > 250  # the path is cut inside it
    sent = {
        "e2e-key": f"/nope/{server.api_key}",
        "e2e-jwt": f"/nope/{token}",
        "e2e-signature": f"/x?signature={SIGNATURE}",
    }
    for request_id, path in sent.items():
        answer = requests.get(server.url + path, headers={"X-Request-ID": request_id}, timeout=10)
        assert answer.status_code == 404, path

    deadline = time.monotonic() + 10
    while not all(request_id in server.log_path.read_text() for request_id in sent):
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.02)
    lines = server.log_path.read_text().splitlines()
    for secret in (server.api_key, token, SIGNATURE):
        for piece in partials(secret):
            assert not [line for line in lines if piece in line], f"{piece[:12]}… is in the log"
    (key_line,) = [line for line in lines if "e2e-key" in line]
    assert f"GET /nope/{MASK} 404 " in key_line
    (jwt_line,) = [line for line in lines if "e2e-jwt" in line]
    assert f"GET /nope/{MASK} 404 " in jwt_line
    if fmt == "json":
        assert json.loads(key_line)["route"] == f"/nope/{MASK}"
