"""Who may call what (ARCHITECTURE §4): workers with a token of group ``workers``, the user-facing
API with the shared internal key, operators with a token of group ``operators`` or the internal key.

The rules, once, for every front-end: the HTTP layer only reads the credentials off a request
(``Authorization: Bearer``, ``x-api-key``) and hands them here. A missing or wrong credential is
``Unauthenticated`` (401); a valid identity outside the group is ``AccessDenied`` (403).
"""

from __future__ import annotations

import hashlib
import hmac

from workerfacing_api.core.errors import AccessDenied, Unauthenticated
from workerfacing_api.core.model import Identity
from workerfacing_api.core.ports import IdentityVerifier

WORKERS_GROUP = "workers"
OPERATORS_GROUP = "operators"


class Access:
    def __init__(self, verifier: IdentityVerifier, internal_api_key: str) -> None:
        self._verifier = verifier
        self._key = internal_api_key.encode()

    async def identity(self, token: str) -> Identity:
        """Whoever ``token`` proves, in any group (a sign-in decides on the group itself)."""
        return await self._verifier.verify(token)

    async def worker(self, token: str | None) -> Identity:
        """The calling worker."""
        if token is None:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        return in_group(await self._verifier.verify(token), WORKERS_GROUP)

    def internal(self, key: str | None) -> None:
        """The user-facing API, by the key it shares with this service."""
        if not key:
            raise Unauthenticated("missing x-api-key header")
        if not hmac.compare_digest(key.encode(), self._key):
            raise Unauthenticated("wrong x-api-key")

    async def operator(self, token: str | None, key: str | None) -> str:
        """An operator's read (metrics, the dashboard's data): the internal key, or a token of
        group ``operators``. Returns who: the user name, or ``"internal key"``."""
        if key:
            self.internal(key)
            return "internal key"
        if token is None:
            raise Unauthenticated(
                "send the internal key in x-api-key, or 'Authorization: Bearer <token>' of an "
                f"identity in group {OPERATORS_GROUP!r}"
            )
        return in_group(await self._verifier.verify(token), OPERATORS_GROUP).username

    def derived_key(self, label: bytes) -> bytes:
        """A key for ``label``'s own use (signing a session, say), derived from the internal key
        so that every process of the service agrees on it and none is stored."""
        return hmac.new(self._key, label, hashlib.sha256).digest()


def in_group(identity: Identity, group: str) -> Identity:
    if group not in identity.groups:
        raise AccessDenied(f"user {identity.username!r} is not in group {group!r}")
    return identity
