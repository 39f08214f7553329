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
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from textwrap import indent

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.msgspec import MsgspecFormatter

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
# Values that must never reach a log line, by their shape. The access line never holds a query
# string or a header in the first place; this is the net under every other line (an exception
# quoting a URL, a library logging a request).
_SECRETS = re.compile(
    # A JWT (the workers' bearer tokens, the local issuer's too): three base64url parts, the
    # first two JSON objects, so "eyJ".
    r"(?P<jwt>\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*)"
    # "Authorization: Bearer …", "Bearer …" on its own, "x-api-key: …", also as a dict's repr.
    r"|(?P<header>\b(?:authorization|x-api-key|cookie)['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?:bearer|basic)\s+)?[^\s'\",;}]+"
    r"|(?P<scheme>\bbearer\s+)[\w.~+/=-]+"
    # Query parameters: signature=, sig=, X-Amz-Signature=, token=, access_token=,
    # X-Amz-Security-Token=, api_key=, …=secret, password=.
    r"|(?P<param>\b[\w-]*(?:signature|sig|token|credential|api[_-]?key|secret|password)=)"
    r"[^&\s'\",;)\]}]+",
    re.IGNORECASE,
)


def _mask(match: re.Match[str]) -> str:
    if match["jwt"]:
        return _MASK
    return (match["header"] or match["scheme"] or match["param"]) + _MASK


def redact(text: str) -> str:
    """``text`` with every value shaped like a secret replaced by ``[redacted]``."""
    return _SECRETS.sub(_mask, text)


class RedactSecrets(logging.Filter):
    """Masks secrets in the final message and in the traceback of a record."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            # Both formatters print ``exc_text`` when ``exc_info`` is gone: formatted here once,
            # so the masked text is what they print.
            record.exc_text = redact(self._tracebacks.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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


_HANDLER_MARK = "_workerfacing_handler"


def configure_logging(level: str, fmt: str) -> None:
    """Send every logger's records through one handler on stderr in format ``fmt`` (``plain``
    or ``json``), at ``level`` and above. Calling it again replaces the handler it installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    # Context first, so a redacted line still carries its request id.
    handler.addFilter(RequestContext())
    handler.addFilter(RedactSecrets())
    setattr(handler, _HANDLER_MARK, True)
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
