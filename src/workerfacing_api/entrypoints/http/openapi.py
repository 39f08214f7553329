"""The OpenAPI document, exact: what the service accepts and answers, so that clients generated
from it, and schemathesis, agree with the service.

Litestar writes the document from the handlers. Its schemas of msgspec Structs lose bounds (a
``ge=0`` of an optional field, for one), so the schemas of the bodies are replaced with those
msgspec itself writes from the same Structs (every bound the decoder enforces), the keys of
``files_up`` get their enum (the decoder accepts only output, log and artifact there), and the
direct upload's multipart body is described.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from workerfacing_api.core.model import FileType, PresignedRequest, SubmittedJob


@functools.cache
def _body_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [SubmittedJob, PresignedRequest], ref_template="#/components/schemas/{name}"
    )
    files_up = components["HandlerSpecs"]["properties"]["files_up"]["anyOf"][0]
    files_up["propertyNames"] = {"enum": [t.value for t in FileType]}
    return components


# The direct upload reads its multipart body as a stream (a model file may be gigabytes), so
# the handler declares no body for Litestar to parse; the document says what it takes.
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


def exact(document: dict[str, Any]) -> dict[str, Any]:
    """Litestar's ``document`` with the bodies' schemas as msgspec enforces them, and the
    upload's multipart body."""
    refined = copy.deepcopy(document)
    schemas = refined.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(copy.deepcopy(_body_schemas()))
    upload = refined.get("paths", {}).get("/jobs/{job_id}/files/upload", {}).get("post")
    if upload is not None:
        upload["requestBody"] = copy.deepcopy(_UPLOAD_BODY)
    return refined


class ExactJsonRenderPlugin(JsonRenderPlugin):
    """Serves ``exact(document)`` where Litestar serves its JSON document."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, exact(openapi_schema))
