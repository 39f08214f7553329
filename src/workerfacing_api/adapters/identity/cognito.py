"""AWS Cognito user pool tokens: the identity of workers (and operators) in production.

A token is accepted when it is an RS256 JWT signed by a key of the pool's JWKS (chosen by
``kid``), issued by exactly this pool, not expired (a small leeway for clock skew), and meant for
this app client: an ID token names the client in ``aud``, an access token in ``client_id``. The
identity is ``cognito:username`` (ID token) or ``username`` (access token); groups come from
``cognito:groups``.

The key set is fetched with aiohttp once at start-up (``warm_up``) and again only when a token
names a ``kid`` not in it (the pool rotated its keys), at most once a minute, so a stream of
forged ``kid``s can neither slow requests down nor make this service hammer Cognito. Requests
wait for a fetch only while no key set was ever obtained; then an unreachable JWKS is a 503
(retry), never a 401 that the DECODE worker would take as final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt

from workerfacing_api.adapters.identity.claims import identity_from_claims
from workerfacing_api.core.errors import Unauthenticated, Unavailable
from workerfacing_api.core.model import Identity

log = logging.getLogger("workerfacing_api.identity")

# Cognito signs with RS256 only. Listing just that algorithm is what rejects "alg: none" and
# HS256 tokens "signed" with the pool's public key as an HMAC secret.
ALGORITHMS = ["RS256"]


def issuer_of(region: str, user_pool_id: str) -> str:
    """The ``iss`` of every token of the pool (also when tokens come from a stand-in like moto)."""
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def jwks_url_of(user_pool_id: str, endpoint: str) -> str:
    """Where the pool publishes its keys: under Cognito's endpoint for the region, which a
    stand-in (``AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER``, a moto server) replaces."""
    return f"{endpoint.rstrip('/')}/{user_pool_id}/.well-known/jwks.json"


class CognitoVerifier:
    """Implements ``IdentityVerifier`` for one user pool and one app client."""

    def __init__(
        self,
        *,
        region: str,
        user_pool_id: str,
        client_id: str,
        jwks_url: str,
        leeway: float = 30.0,
        refetch_interval: float = 60.0,
        fetch_timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer_of(region, user_pool_id)
        self._client_id = client_id
        self.jwks_url = jwks_url
        self._leeway = leeway
        self._refetch_interval = refetch_interval
        self._fetch_timeout = fetch_timeout
        self._monotonic = monotonic
        self._keys: dict[str, Any] | None = None  # kid → public key; None: never fetched
        self._last_fetch: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def warm_up(self) -> None:
        """Fetch the key set before the first request needs it; a failure is logged, and the
        first request tries again."""
        try:
            await self._refresh()
        except Unavailable as exc:
            log.warning("%s", exc.detail)

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token ({exc})") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("invalid token: Cognito tokens are signed with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthenticated("invalid token: no key id (kid) in its header")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "token_use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired; sign in again") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token ({exc})") from None
        self._check_client(claims)
        return identity_from_claims(claims)

    def _check_client(self, claims: dict[str, Any]) -> None:
        """The token was issued to this service's app client, not to another app of the pool."""
        use = claims.get("token_use")
        if use == "id":
            audience = claims.get("aud")
            ok = audience == self._client_id or (
                isinstance(audience, list) and self._client_id in audience
            )
        elif use == "access":
            ok = claims.get("client_id") == self._client_id
        else:
            raise Unauthenticated(f"invalid token: token_use {use!r} is neither 'id' nor 'access'")
        if not ok:
            raise Unauthenticated("invalid token: it was issued to another app client")

    async def _key(self, kid: str) -> Any:
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        # An unknown kid: the pool may have rotated its keys. Look again, but not more than once
        # per refetch interval, whatever the tokens say; without any key set yet, always try.
        due = (
            self._keys is None
            or self._last_fetch is None
            or self._monotonic() - self._last_fetch >= self._refetch_interval
        )
        if due:
            try:
                await self._refresh()
            except Unavailable as exc:
                if self._keys is None:
                    raise  # no key at all: a 503, the worker retries
                log.warning("%s; keeping the key set fetched before", exc.detail)
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        raise Unauthenticated("invalid token: signed by a key this user pool does not have")

    async def _refresh(self) -> None:
        """Fetch the key set; concurrent callers share one fetch."""
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch())
        # shield: a caller that gives up (a client hanging up) does not cancel the others' fetch.
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        import aiohttp  # here: a command that verifies no token never pays for importing it

        self._last_fetch = self._monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=self._fetch_timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
                session.get(self.jwks_url) as response,
            ):
                response.raise_for_status()
                document = await response.json(content_type=None)
            keys = {
                k.key_id: k.key
                for k in jwt.PyJWKSet.from_dict(document).keys
                if k.key_id is not None and k.algorithm_name in ALGORITHMS
            }
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
            raise Unavailable(
                f"cannot read the Cognito key set at {self.jwks_url} ({exc or type(exc).__name__})"
            ) from None
        if self._keys is not None and keys.keys() != self._keys.keys():
            log.info("Cognito key set changed: key ids %s", sorted(keys))
        self._keys = keys
