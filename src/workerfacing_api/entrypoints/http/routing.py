"""File ids travel in the URL path unencoded, as the DECODE worker builds them:
``/files//abs/root/alice/data/calib.mat/url`` or ``/files/s3://bucket/key/url``. Routers squash
the ``//`` and split on ``/``, so this outer ASGI layer takes the id out of the path before routing,
keeps it intact in the scope, and routes the request to ``/files/{file_id}/url|download``.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

FILE_ID_KEY = "workerfacing.file_id"
ORIGINAL_PATH_KEY = "workerfacing.path"
PLACEHOLDER = "_"
_PREFIX = "/files/"
_ACTIONS = ("/url", "/download")


class FileIdPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            path: str = scope["path"]
            if path.startswith(_PREFIX):
                for action in _ACTIONS:
                    if path.endswith(action) and len(path) > len(_PREFIX) + len(action):
                        extra: dict[str, Any] = dict(scope)
                        extra[FILE_ID_KEY] = path[len(_PREFIX) : -len(action)]
                        extra[ORIGINAL_PATH_KEY] = path
                        rewritten = f"{_PREFIX}{PLACEHOLDER}{action}"
                        extra["path"] = rewritten
                        extra["raw_path"] = rewritten.encode()
                        await self.app(extra, receive, send)  # type: ignore[arg-type]
                        return
        await self.app(scope, receive, send)
