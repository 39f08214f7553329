"""The mask over every log line (docs/RELIABILITY.md, finding 4): the internal key, whatever its
value and however a client encoded it, anything shaped like a JWT, a link signature and an AWS
credential become ``[redacted]`` wherever a formatter would write them, in the message, an
``extra`` field, a request fact, a traceback; and an ordinary line is left as it is."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from workerfacing_api.entrypoints.logs import (
    JsonFormatter,
    PlainFormatter,
    Redactor,
    RedactSecrets,
    RequestContext,
    bind_request,
    configure_logging,
    redact,
    unbind_request,
)

MASK = "[redacted]"
KEY = "k3y+With/odd=chars & a space"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJncHUtYm94LTEiLCJjb2duaXRvOmdyb3VwcyI6WyJ3b3JrZXJzIl19"
    ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0xMjM0NTY3OA"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        # The internal key, as written and as a client percent-encodes it (any hex case).
        (f"GET /nope/{KEY} 404", KEY),
        ("GET /nope/k3y%2BWith%2Fodd%3Dchars%20%26%20a%20space 404", "k3y%2BWith"),
        ("GET /nope/k3y%2bWith/odd%3dchars+&+a+space 404", "k3y%2bWith"),
        (f"upstream said: wrong key {KEY!r}", KEY),
        # JWTs: whole, cut short (a path shown to 200 characters), a second part that is no
        # JSON object, five parts (JWE), in a header, as a request id.
        (f"GET /nope/{JWT} 404", JWT.split(".")[1]),
        (f"GET /nope/{JWT[:60]}…", JWT[:60]),
        ("x eyJhbGciOiJIUzI1NiJ9.c29tZXRoaW5nLWVsc2U.Zm9vYmFy y", "c29tZXRoaW5nLWVsc2U"),
        (f"{JWT}.ZW5j.dGFn", JWT.split(".")[2]),
        (f"Authorization: Bearer {JWT}", JWT.split(".")[2]),
        # This service's link signature, in a query string and sent inside a path.
        (f"GET /files/a/download?worker=w&expires=1&signature={SIGNATURE}", SIGNATURE),
        (f"GET /x%3Fexpires%3D1%26signature%3D{SIGNATURE} 404", SIGNATURE),
        (f"GET /x%3fsignature%3d{SIGNATURE} 404", SIGNATURE),
        # AWS: access key ids (long-term, temporary) and a presigned link's parameters.
        ("found AKIAIOSFODNN7EXAMPLE in the environment", "AKIAIOSFODNN7EXAMPLE"),
        ("role session ASIAY34FZKBOKMUTVV7A expired", "ASIAY34FZKBOKMUTVV7A"),
        ("k?X-Amz-Signature=abc123def&X-Amz-Date=1", "abc123def"),
        ("k?X-Amz-Credential=AKIDEXAMPLE%2F20250101%2Fus-east-1%2Fs3&x=1", "AKIDEXAMPLE"),
        ("k?X-Amz-Security-Token=FwoGZXIv%2Fabc&x=1", "FwoGZXIv"),
        # What the net under every line already caught keeps being caught.
        ("headers {'x-api-key': 'shared-k3y', 'accept': '*/*'}", "shared-k3y"),
        ('{"authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("X-Api-Key: shared-k3y", "shared-k3y"),
        ("sent bearer abcdef123", "abcdef123"),
        ("callback?access_token=t0k3n&x=1", "t0k3n"),
        ("POST /u?sig=s1g2n3", "s1g2n3"),
        ("db password=hunter2 rejected", "hunter2"),
    ],
)
def test_a_secret_is_masked_wherever_it_stands(text: str, secret: str) -> None:
    clean = Redactor([KEY]).redact(text)
    assert secret not in clean
    assert MASK in clean


def test_a_masked_value_keeps_its_name() -> None:
    redactor = Redactor([KEY])
    assert redactor.redact(f"?expires=1&signature={SIGNATURE}&x=2") == (
        f"?expires=1&signature={MASK}&x=2"
    )
    assert redactor.redact(f"Authorization: Bearer {JWT}") == f"Authorization: Bearer {MASK}"
    assert redactor.redact(f"GET /nope/{KEY}/more 404") == f"GET /nope/{MASK}/more 404"


@pytest.mark.parametrize(
    "text",
    [
        "GET /jobs/{job_id}/status 204 3.1 ms",
        "worker gpu-1 set aside for 10 min: 3 failed attempts in a row",
        "design=ok; key=alice/data/calib.mat",
        # A token's problem is told, not masked: only a header's value follows a colon.
        "invalid token: Signature has expired",
        "request 3f2a9c0d1e2b4a5f8c7d6e5f4a3b2c1d: job 7 claimed by gpu-box-1",
        "Uvicorn running on http://127.0.0.1:8001 (Press CTRL+C to quit)",
        "Running upgrade 0005 -> 0006, nodes: hardware and instance id",
        "the key (k3y+With) is not the whole key",
        "eyJ alone, or eyJshort, is not a token",
    ],
)
def test_an_ordinary_line_is_left_as_it_is(text: str) -> None:
    assert Redactor([KEY]).redact(text) == text


def test_any_key_is_matched_as_it_is_not_as_a_pattern() -> None:
    redactor = Redactor(["a.b*c(d)"])
    assert redactor.redact("x a.b*c(d) y") == f"x {MASK} y"
    assert redactor.redact("x aXbbbc(d) y") == "x aXbbbc(d) y"


def written(fmt: str, redactor: Redactor, emit: Callable[[logging.Logger], None]) -> str:
    """What the service's handler (its formatter, the request's facts, then the mask) writes
    for the records ``emit`` makes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(RequestContext())
    handler.addFilter(RedactSecrets(redactor))
    log = logging.getLogger("test_log_redaction.unit")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)
    return stream.getvalue()


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_the_filter_masks_message_fields_facts_and_traceback(fmt: str) -> None:
    def emit(log: logging.Logger) -> None:
        # A caller may choose a request id shaped like a token: it is a fact of every line.
        facts = bind_request(JWT[:100], "GET")
        try:
            log.info(
                "%s %s %d",
                "GET",
                f"/nope/{KEY}",
                404,
                extra={"route": f"/nope/{KEY}", "status": 404, "link": f"?signature={SIGNATURE}"},
            )
            try:
                raise RuntimeError("refused https://b/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE")
            except RuntimeError:
                log.exception("storing failed", stack_info=True, extra={"key": KEY})
        finally:
            unbind_request(facts)

    text = written(fmt, Redactor([KEY]), emit)
    for secret in (KEY, JWT[:100], JWT[:16], SIGNATURE, "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in text, secret
    if fmt == "json":
        access, failure = map(json.loads, text.splitlines())
        assert access["message"] == f"GET /nope/{MASK} 404"
        assert access["route"] == f"/nope/{MASK}"
        assert access["link"] == f"?signature={MASK}"
        assert (access["status"], access["request_id"]) == (404, MASK)
        assert failure["key"] == MASK
        assert (
            "RuntimeError: refused https://b/k?X-Amz-Credential=[redacted]" in (failure["exc_info"])
        )
    else:
        access, *_ = text.splitlines()
        assert access.endswith(f" [{MASK}]: GET /nope/{MASK} 404")


def test_a_line_without_a_secret_is_not_rewritten() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s took %d ms", ("pull", 3), None)
    record.__dict__["route"] = "/jobs"
    assert RedactSecrets(Redactor([KEY])).filter(record)
    assert (record.msg, record.args) == ("%s took %d ms", ("pull", 3))
    assert record.__dict__["route"] == "/jobs"


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    for handler in handlers:  # one configure_logging replaced
        root.addHandler(handler)
    root.setLevel(level)


def test_the_configured_key_is_masked_in_every_line_and_by_redact(
    restored_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert redact(f"/nope/{KEY}") == f"/nope/{KEY}"  # a key has no shape: unknown until given
    configure_logging("INFO", "plain", known_secrets=[KEY])
    logging.getLogger("workerfacing_api.test_log_redaction").warning("the key is %s", KEY)
    assert capsys.readouterr().err.rstrip().endswith(f": the key is {MASK}")
    # What the access line masks a path with before it cuts it.
    assert redact(f"/nope/{KEY}") == f"/nope/{MASK}"
