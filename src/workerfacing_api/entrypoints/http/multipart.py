"""Streaming the ``file`` field out of a multipart upload without holding it in memory.

The DECODE worker uploads model files of hundreds of megabytes with
``requests.request(..., files={"file": (name, handle)})``; the body is parsed as it arrives and the
file's bytes are handed on chunk by chunk to the storage, which writes them to disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.exceptions import InternalServerException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from workerfacing_api.core.errors import InvalidRequest

FIELD = "file"


class MultipartFile:
    """The first ``file`` part of a multipart body: its file name and its bytes."""

    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        media, options = parse_options_header(content_type.encode("latin-1"))
        boundary = options.get(b"boundary")
        if media != b"multipart/form-data" or not boundary:
            raise InvalidRequest("send the file as multipart/form-data with a field named 'file'")
        self._body = body
        self._pending: list[bytes] = []
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._in_file = False
        self._file_done = False
        self.filename: str | None = None
        try:
            self._parser = self._make_parser(boundary)
        except FormParserError as exc:  # a boundary longer than the parser takes, say
            raise InvalidRequest(f"malformed multipart body ({exc})") from None

    def _make_parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # Parser callbacks: they run synchronously inside ``write``.
    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if self.filename is None and options.get(b"name") == FIELD.encode():
            raw = options.get(b"filename")
            if raw is None:
                raise InvalidRequest("the 'file' field must be a file (give it a file name)")
            self.filename = raw.decode("utf-8", "replace")
            self._in_file = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True

    def _feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidRequest(f"malformed multipart body ({exc})") from None

    async def open(self) -> str:
        """Read until the file part starts; return its file name."""
        async for chunk in self._body:
            self._feed(chunk)
            if self.filename is not None:
                return self.filename
        raise InvalidRequest("multipart body has no field named 'file'")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, as they arrive."""
        while True:
            if self._pending:
                data, self._pending = b"".join(self._pending), []
                if data:
                    yield data
            if self._file_done:
                return
            chunk = await anext(self._body, None)
            if chunk is None:
                raise InvalidRequest("multipart body ended inside the 'file' field")
            self._feed(chunk)


class ClientHungUp(Exception):
    """The client went away before its upload was complete: nothing to answer, nothing kept."""


async def until_hang_up(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The request body, with a client that hangs up mid-way turned into ``ClientHungUp``
    (Litestar reports it as a server error, which it is not)."""
    try:
        async for chunk in stream:
            yield chunk
    except InternalServerException:  # what Litestar's stream raises on http.disconnect
        raise ClientHungUp from None
