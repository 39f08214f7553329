"""Who a verified token names: the claims Cognito puts in its ID and access tokens (the local
issuer mints the same), read the same way whichever verifier checked the signature.

The user name becomes the worker's name in the queue (its jobs, attempts and standing), so it is
held to the bounds of every other name the service stores (``core.model.Name``); Cognito's own
user names (at most 128 characters) always fit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workerfacing_api.core.errors import Unauthenticated
from workerfacing_api.core.model import NAME_MAX, Identity, Name


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """``cognito:username`` (ID tokens) or ``username`` (access tokens), and the groups."""
    username = claims.get("cognito:username") or claims.get("username")
    if not isinstance(username, str) or not username:
        raise Unauthenticated("token names no user (cognito:username or username claim)")
    if not _is_name(username):
        raise Unauthenticated(
            f"the token's user name is not acceptable here (at most {NAME_MAX} characters, no "
            "control characters); sign in as a user with a plain name"
        )
    groups = claims.get("cognito:groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Unauthenticated("token has a malformed cognito:groups claim")
    if not all(_is_name(g) for g in groups):
        raise Unauthenticated(
            f"the token names a group that is not acceptable here (at most {NAME_MAX} "
            "characters, no control characters); ask the pool's administrator to rename it"
        )
    return Identity(username=username, groups=frozenset(groups))


def _is_name(text: str) -> bool:
    try:
        msgspec.convert(text, Name)
    except msgspec.ValidationError:
        return False
    return True
