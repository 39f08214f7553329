"""How the service writes its logs: one handler on the root logger that every logger (ours,
uvicorn's, alembic's) writes through, as readable lines (``LOG_FORMAT=plain``) or one JSON object
a line (``LOG_FORMAT=json``); the facts of the request being served (request id, route, job,
worker), which every line written while serving it carries; and a last check that masks
anything shaped like a secret (a link signature, a token, a key) before a line leaves.

The request facts live in a context variable: each request runs in a task of its own, so lines
written by the core or an adapter deep inside a request (a worker set aside, an upstream warning)
get the facts without anyone passing them down.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from textwrap import indent

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.msgspec import MsgspecFormatter

# The attribute that marks the handler ``configure_logging`` installed; its value is the
# handler's ``Redactor``.
_HANDLER_MARK = "_workerfacing_handler"

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_FORMAT_IN_REQUEST = "%(asctime)s %(levelname)s %(name)s [%(request)s]: %(message)s"
PLAIN_DATE = "%Y-%m-%dT%H:%M:%S"

# The fields a line may carry besides time, level, logger and message, each only when known.
REQUEST_FIELDS = ("request_id", "route", "method", "job_id", "worker")


@dataclass(slots=True)
class RequestFacts:
    """What is known of the request being served, filled in as it becomes known: the route
    once routed, the worker once authenticated."""

    request_id: str
    method: str
    route: str | None = None
    job_id: int | str | None = None
    worker: str | None = None
    _token: Token[RequestFacts | None] | None = field(default=None, repr=False)


_request: ContextVar[RequestFacts | None] = ContextVar("workerfacing_request", default=None)


def bind_request(request_id: str, method: str) -> RequestFacts:
    """Start the facts of a request in the current context; end them with ``unbind_request``.

    The setters below change this one object rather than setting context variables of their
    own: a dependency run in a thread works on a copy of the context, and what it sets there
    would never reach the access line."""
    facts = RequestFacts(request_id, method)
    facts._token = _request.set(facts)
    return facts


def unbind_request(facts: RequestFacts) -> None:
    """Forget the request: needed when requests share a task (an app called in-process)."""
    if facts._token is not None:
        _request.reset(facts._token)
        facts._token = None


def current_request() -> RequestFacts | None:
    return _request.get()


def set_route(route: str) -> None:
    facts = _request.get()
    if facts is not None:
        facts.route = route


def set_job_id(job_id: int | str) -> None:
    facts = _request.get()
    if facts is not None:
        facts.job_id = job_id


def set_worker(worker: str) -> None:
    facts = _request.get()
    if facts is not None:
        facts.worker = worker


class RequestContext(logging.Filter):
    """Adds the facts of the request being served to every record, whoever wrote it. A field
    the record already has (the access line sets its own route) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        facts = _request.get()
        if facts is not None:
            attributes = record.__dict__
            for name in REQUEST_FIELDS:
                value = getattr(facts, name)
                if value is not None and name not in attributes:
                    attributes[name] = value
        return True


_MASK = "[redacted]"
# Characters a URL carries as they are; any other character of a known secret may also arrive
# percent-encoded (``/`` as ``%2F`` or ``%2f``), a space also as ``+``.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# A value after its name: up to the end of a query parameter, a header or a dict's repr
# (NUL: see RedactSecrets).
_VALUE = r"([^&\s'\",;)\]}\x00]+)"
# Names whose value is a secret, in any case, as a header (``Authorization: Bearer …``, also
# in a dict's repr: ``'x-api-key': '…'``) or a query parameter (``X-Amz-Signature=…``).
_HEADERS = ("authorization", "x-api-key", "cookie")
# This service's links (signature=), S3's presigned ones (X-Amz-Signature=, X-Amz-Credential=,
# X-Amz-Security-Token=), and the usual others (sig=, access_token=, api_key=, …secret=).
_PARAMETERS = (
    *_HEADERS,
    *("signature", "sig", "token", "credential", "secret", "password"),
    *("api_key", "api-key", "apikey"),
)


def _hex(byte: int) -> str:
    """``%XX`` of ``byte``, its hex letters in either case."""
    return "%" + "".join(d if d.isdigit() else f"[{d}{d.lower()}]" for d in f"{byte:02X}")


def _spellings(char: str) -> list[str]:
    if char in _UNRESERVED:
        return [re.escape(char)]
    spellings = [re.escape(char), "".join(_hex(byte) for byte in char.encode())]
    return [*spellings, r"\+"] if char == " " else spellings


def _known(secret: str) -> list[str]:
    """Branches matching ``secret`` as written, or with any of its characters percent-encoded
    (as a client sends it in a path): one branch for each spelling of its first character."""
    rest = "".join(
        spelled[0] if len(spelled) == 1 else f"(?:{'|'.join(spelled)})"
        for spelled in map(_spellings, secret[1:])
    )
    return [first + rest for first in _spellings(secret[0])]


def _named(separator: str, names: tuple[str, ...]) -> str:
    """After ``separator``: it followed one of ``names`` (in any case, maybe in quotes)."""
    behind = [
        f"(?<={re.escape(name + quote)}{separator})" for name in names for quote in ("", "'", '"')
    ]
    return f"(?i:{'|'.join(behind)})"


def _secret_pattern(known: Iterable[str]) -> re.Pattern[str]:
    """One pattern for every secret: the values ``known`` to this process, and the shapes.

    What makes it cheap: every branch starts with a plain character (the secret's first, "e",
    "A", "=", ":", "%", "b", "B"), so the matcher skips in C every position that starts none of
    them, and tries a branch only where one could start. A name and its value are therefore
    found from the separator, which is rare in a line, looking back at the name: a line without
    a secret costs several times less than the same pattern written with ``re.IGNORECASE``
    around the names. A branch that masks a value after its name keeps the name and captures
    the value in its one group; the others have no group and are masked whole."""
    branches = [
        branch
        for secret in sorted(set(known), key=len, reverse=True)
        if secret
        for branch in _known(secret)
    ]
    shown = r"""\s*['"]?(?:(?:[Bb]earer|[Bb]asic)\s+)?"""  # kept: "Authorization: Bearer "
    branches += [
        # A JWT (the workers' bearer tokens, the local issuer's too): base64url parts joined by
        # dots, the first a JSON object, so "eyJ". Also when cut short (no second dot yet).
        r"eyJ[\w-]{8,}(?:\.[\w-]*)*",
        # An AWS access key id, long-term (AKIA) or temporary (ASIA).
        r"AKIA[A-Z0-9]{16}(?![A-Z0-9])",
        r"ASIA[A-Z0-9]{16}(?![A-Z0-9])",
        ":" + _named(":", _HEADERS) + shown + _VALUE,
        "=" + _named("=", _PARAMETERS) + shown + _VALUE,
        # "=" percent-encoded: a query string sent inside a path.
        "%3[Dd]" + _named("%3[Dd]", _PARAMETERS) + _VALUE,
        # "Bearer …" on its own.
        r"b(?i:earer)\s+([\w.~+/=-]+)",
        r"B(?i:earer)\s+([\w.~+/=-]+)",
    ]
    return re.compile("|".join(branches))


def _mask(match: re.Match[str]) -> str:
    value = match.lastindex  # the group of a named value; None: the whole match is secret
    if value is None:
        return _MASK
    return match.string[match.start() : match.start(value)] + _MASK


class Redactor:
    """Replaces every secret in a text by ``[redacted]``: the values this process knows (the
    internal key, given to ``configure_logging``) and anything shaped like one."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._pattern = _secret_pattern(known)

    def holds_secret(self, text: str) -> bool:
        return self._pattern.search(text) is not None

    def redact(self, text: str) -> str:
        return self._pattern.sub(_mask, text)


_SHAPES_ONLY = Redactor()
# What every record has: the rest are the ``extra`` fields and the request's facts.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    # uvicorn's copy of its message with terminal colours: no formatter writes it.
    "color_message",
}


def _current_redactor() -> Redactor:
    """The redactor of the handler ``configure_logging`` installed, else one that knows only
    the shapes of secrets."""
    for handler in logging.getLogger().handlers:
        redactor = getattr(handler, _HANDLER_MARK, None)
        if isinstance(redactor, Redactor):
            return redactor
    return _SHAPES_ONLY


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``[redacted]``, by the redactor of the
    handler ``configure_logging`` installed (shapes only before that)."""
    return _current_redactor().redact(text)


class RedactSecrets(logging.Filter):
    """Masks secrets wherever a formatter would write them: the message, every ``extra`` field
    and request fact that is text (the access line's ``route``, a chosen request id), the
    traceback and the stack.

    A record without a secret, nearly every one, costs one search over its texts joined."""

    _tracebacks = logging.Formatter()

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or _SHAPES_ONLY

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        fields = [
            (name, value)
            for name, value in record.__dict__.items()
            if isinstance(value, str) and name not in _RECORD_ATTRIBUTES
        ]
        # NUL between the texts: no part of a secret's pattern matches it, so the joined texts
        # hold a secret exactly when one of them does (the pass below then masks each text).
        texts = "\0".join([message, *(value for _, value in fields)]) if fields else message
        if self.redactor.holds_secret(texts):
            clean = self.redactor.redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            for name, value in fields:
                record.__dict__[name] = self.redactor.redact(value)
        if record.exc_info:
            # Both formatters print ``exc_text`` when ``exc_info`` is gone: formatted here once,
            # so the masked text is what they print.
            record.exc_text = self.redactor.redact(
                self._tracebacks.formatException(record.exc_info)
            )
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


class PlainFormatter(logging.Formatter):
    """Today's readable line, with the request's facts in brackets when there is a request:
    ``2025-01-02T10:00:00 INFO workerfacing_api.access [3f2a… job=7 worker=gpu-1]: …``.

    One line per record: line breaks in a message (alembic's revision notes, text a client
    chose) are written as ``\\n``, so no text can start a line that looks like a record of its
    own; a traceback follows on lines indented by two spaces."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT, PLAIN_DATE)
        self._in_request = logging.PercentStyle(PLAIN_FORMAT_IN_REQUEST)

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            line = super().formatMessage(record)
        else:
            facts = [str(request_id)]
            for name, label in (("job_id", "job"), ("worker", "worker")):
                value = getattr(record, name, None)
                if value is not None:
                    facts.append(f"{label}={value}")
            record.request = " ".join(facts)
            line = self._in_request.format(record)
        return line.replace("\r", "\\r").replace("\n", "\\n")

    def format(self, record: logging.LogRecord) -> str:
        line, more, details = super().format(record).partition("\n")
        return line + more + indent(details, "  ") if more else line


class JsonFormatter(MsgspecFormatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, then the request's
    facts and any ``extra`` fields (status, duration_ms), and ``exc_info`` as one string."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn adds a copy of its message with terminal colours: not a fact.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return (
            datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )


def configure_logging(level: str, fmt: str, *, known_secrets: Iterable[str] = ()) -> None:
    """Send every logger's records through one handler on stderr in format ``fmt`` (``plain``
    or ``json``), at ``level`` and above, with ``known_secrets`` (the internal key) and anything
    shaped like a secret masked. Calling it again replaces the handler it installed."""
    redactor = Redactor(known_secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    # Context first: the request's facts are masked too, and a masked line keeps its id.
    handler.addFilter(RequestContext())
    handler.addFilter(RedactSecrets(redactor))
    setattr(handler, _HANDLER_MARK, redactor)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's and alembic's records reach this handler through the root (``serve`` gives
    # uvicorn no logging configuration of its own); alembic's plugin set-up says at INFO what
    # nobody needs to read.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
