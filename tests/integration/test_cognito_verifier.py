"""The Cognito verifier against a real JWKS endpoint on 127.0.0.1 that this test controls: which
tokens it accepts, which forgeries it refuses, and how it fetches the pool's keys (once, again
on a rotated key, never more than once a minute whatever the tokens say)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.conftest import free_port
from workerfacing_api.adapters.identity.cognito import CognitoVerifier, issuer_of
from workerfacing_api.core.errors import Unauthenticated, Unavailable

REGION = "eu-central-1"
POOL = "eu-central-1_TestPool"
CLIENT = "decode-worker-client"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm="RS256", headers={"kid": self.kid, **header}
        )


@dataclass
class Jwks:
    """The pool's key endpoint: serves ``keys`` and counts how often it was asked."""

    url: str
    keys: list[SigningKey]
    fetches: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def jwks() -> AsyncIterator[Jwks]:
    port = free_port()
    state = Jwks(url=f"http://127.0.0.1:{port}/{POOL}/.well-known/jwks.json", keys=[])

    async def serve(_: web.Request) -> web.Response:
        state.fetches += 1
        return web.json_response({"keys": [k.jwk() for k in state.keys]})

    app = web.Application()
    app.router.add_get(f"/{POOL}/.well-known/jwks.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield state
    await runner.cleanup()


def claims(use: str = "access", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer_of(REGION, POOL),
        "sub": "5f0c-…",
        "token_use": use,
        "iat": now,
        "exp": now + 3600,
        "cognito:groups": ["workers"],
    }
    if use == "id":
        base |= {"aud": CLIENT, "cognito:username": "gpu-box-1"}
    else:
        base |= {"client_id": CLIENT, "username": "gpu-box-1"}
    return base | extra


def verifier(jwks: Jwks, clock: Clock | None = None) -> CognitoVerifier:
    return CognitoVerifier(
        region=REGION,
        user_pool_id=POOL,
        client_id=CLIENT,
        jwks_url=jwks.url,
        monotonic=clock or Clock(),
    )


@pytest.mark.parametrize("use", ["id", "access"])
async def test_id_and_access_tokens_of_the_pool_and_client_are_accepted(
    jwks: Jwks, use: str
) -> None:
    key = SigningKey("k1")
    jwks.keys = [key]
    identity = await verifier(jwks).verify(key.sign(claims(use)))
    assert identity.username == "gpu-box-1"
    assert identity.groups == frozenset({"workers"})


def _unsigned(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{part(payload)}."


FORGERIES: dict[str, Callable[[SigningKey], str]] = {
    "alg none": lambda key: _unsigned(claims()),
    "HS256 with the pool's public key as secret": lambda key: _hmac_signed(
        claims(), key.kid, key.public_pem()
    ),
    "another pool": lambda key: key.sign(claims(iss=issuer_of(REGION, "eu-central-1_Other"))),
    "another client (access token)": lambda key: key.sign(claims(client_id="other-app")),
    "another client (ID token)": lambda key: key.sign(claims("id", aud="other-app")),
    "expired": lambda key: key.sign(claims(exp=int(time.time()) - 120)),
    "token_use refresh": lambda key: key.sign(claims("refresh")),
    "no token_use": lambda key: key.sign({k: v for k, v in claims().items() if k != "token_use"}),
    "no exp": lambda key: key.sign({k: v for k, v in claims().items() if k != "exp"}),
    "unknown kid": lambda key: SigningKey("k-forged").sign(claims()),
    "edited claims": lambda key: _edited(key.sign(claims())),
    "signed by another key with the pool's kid": lambda key: SigningKey(key.kid).sign(claims()),
    "not a JWT": lambda key: "not-a-token",
}


def _hmac_signed(payload: dict[str, Any], kid: str, secret: bytes) -> str:
    """The classic key-confusion forgery (PyJWT refuses to make one, so it is made by hand)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _edited(token: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["username"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_or_foreign_tokens_are_refused(jwks: Jwks, forgery: str) -> None:
    key = SigningKey("k1")
    jwks.keys = [key]
    with pytest.raises(Unauthenticated):
        await verifier(jwks).verify(FORGERIES[forgery](key))


async def test_a_small_clock_skew_is_tolerated(jwks: Jwks) -> None:
    key = SigningKey("k1")
    jwks.keys = [key]
    token = key.sign(claims(exp=int(time.time()) - 5))
    assert (await verifier(jwks).verify(token)).username == "gpu-box-1"


async def test_keys_are_fetched_once_and_again_only_for_a_rotated_key(jwks: Jwks) -> None:
    old, new = SigningKey("k-old"), SigningKey("k-new")
    jwks.keys = [old]
    clock = Clock()
    check = verifier(jwks, clock)
    await check.warm_up()
    for _ in range(5):
        await check.verify(old.sign(claims()))
    assert jwks.fetches == 1

    # The pool rotates its keys: a token with the new kid makes the verifier look again.
    jwks.keys = [old, new]
    clock.now += 61
    assert (await check.verify(new.sign(claims()))).username == "gpu-box-1"
    assert jwks.fetches == 2


async def test_unknown_kids_make_at_most_one_fetch_a_minute(jwks: Jwks) -> None:
    key = SigningKey("k1")
    jwks.keys = [key]
    clock = Clock()
    check = verifier(jwks, clock)
    await check.warm_up()
    clock.now += 61
    for n in range(20):
        with pytest.raises(Unauthenticated):
            await check.verify(SigningKey(f"forged-{n}").sign(claims()))
    assert jwks.fetches == 2  # the warm-up, then one look for the first unknown kid
    clock.now += 61
    with pytest.raises(Unauthenticated):
        await check.verify(SigningKey("forged-late").sign(claims()))
    assert jwks.fetches == 3


async def test_an_unreachable_key_set_is_a_retry_not_a_refusal() -> None:
    check = CognitoVerifier(
        region=REGION,
        user_pool_id=POOL,
        client_id=CLIENT,
        jwks_url=f"http://127.0.0.1:{free_port()}/{POOL}/.well-known/jwks.json",
        fetch_timeout=2,
    )
    with pytest.raises(Unavailable):
        await check.verify(SigningKey("k1").sign(claims()))
