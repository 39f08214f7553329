"""The local token issuer of the embedded default: HS256 tokens that look like Cognito's.

The key is a random file in ``LOCAL_STATE_DIR``, created on first use, so that
``workerfacing-api token`` and ``workerfacing-api serve`` run from the same directory agree.
Tokens carry ``username`` and ``cognito:groups`` like a Cognito access token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from workerfacing_api.adapters.identity.claims import identity_from_claims
from workerfacing_api.core.errors import Unauthenticated
from workerfacing_api.core.model import Identity

ISSUER = "workerfacing-api-local"


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """A random secret kept in ``path`` (mode 0600), created on first use.

    Several processes may start at once: the secret is written to a private temporary file and
    linked into place, which either succeeds whole or fails because another process won, so
    nobody ever reads a half-written file.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it with mode 0600
            handle.write(secrets.token_hex(nbytes) + "\n")
        with contextlib.suppress(FileExistsError):  # another process won the race: use theirs
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty; delete it and a new secret will be made")
    return value


class LocalIssuer:
    """Mints and verifies tokens with a key from ``key_file``. Implements ``IdentityVerifier``."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._key = read_or_create_secret(key_file)

    def mint(self, username: str, groups: list[str], ttl: timedelta, now: datetime) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": username,
            "username": username,
            "cognito:groups": groups,
            "token_use": "access",
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    async def verify(self, token: str) -> Identity:
        return self.verify_sync(token)

    def verify_sync(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired; get a new one") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError) as exc:
            raise Unauthenticated(f"invalid token ({exc})") from None
        return identity_from_claims(claims)
