"""Who a verified token names: the claims Cognito puts in its ID and access tokens (the local
issuer mints the same), read the same way whichever verifier checked the signature."""

from __future__ import annotations

from typing import Any

from workerfacing_api.core.errors import Unauthenticated
from workerfacing_api.core.model import Identity


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """``cognito:username`` (ID tokens) or ``username`` (access tokens), and the groups."""
    username = claims.get("cognito:username") or claims.get("username")
    if not isinstance(username, str) or not username:
        raise Unauthenticated("token names no user (cognito:username or username claim)")
    groups = claims.get("cognito:groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Unauthenticated("token has a malformed cognito:groups claim")
    return Identity(username=username, groups=frozenset(groups))
