"""Signed links to this service's own ``/download`` and ``/upload`` endpoints.

Local storage has no S3 to pre-sign requests, so the service signs them itself: an HMAC-SHA256
over the method, the path, every query parameter and an expiry, keyed by a key derived from
``INTERNAL_API_KEY_SECRET`` so that every API process accepts every other's links. The DECODE
worker sends such links as they are, without its token; the caller's token is never echoed.

What is signed is an unambiguous encoding: the path and each parameter's name and value are
percent-encoded (every byte outside letters, digits and ``-._~``), sorted, and joined with
separators that the encoding never produces. So no value a worker chooses (a ``base_path``
holding a newline and ``expires=…``) can stand in for another parameter.

The signature binds the whole query: one value per name. A query that names a parameter twice
(``…&base_path=a…&base_path=b``) verifies as no link at all, whichever occurrence a reader would
take; one that adds or lacks a parameter changes the signed text and fails as well.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlencode

SIGNATURE = "signature"
EXPIRES = "expires"


class UrlSigner:
    def __init__(self, secret: str, *, lifetime: int = 600) -> None:
        self._key = hmac.new(
            secret.encode(), b"workerfacing-api/signed-links/v2", hashlib.sha256
        ).digest()
        self.lifetime = lifetime

    def _mac(self, method: str, path: str, params: Mapping[str, str]) -> str:
        encoded = sorted(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
        canonical = "\n".join([method.upper(), quote(path, safe=""), "&".join(encoded)])
        return hmac.new(self._key, canonical.encode(), hashlib.sha256).hexdigest()

    def sign(
        self, method: str, base_url: str, path: str, params: Mapping[str, str], now: float
    ) -> str:
        """An absolute URL to ``path`` (unquoted) carrying ``params``, an expiry and a MAC."""
        signed = {**params, EXPIRES: str(int(now) + self.lifetime)}
        signed[SIGNATURE] = self._mac(method, path, signed)
        return f"{base_url.rstrip('/')}{quote(path, safe='/:')}?{urlencode(signed)}"

    def verify(self, method: str, path: str, params: Mapping[str, str], now: float) -> bool:
        """True when ``params`` carry an unexpired signature of this exact request.

        ``params`` may be the request's multi-valued query as it came (a ``MultiDict``), whose
        ``items()`` yield every occurrence: a name given twice fails, since a reader of the
        first and a reader of the last would act on different requests."""
        pairs = list(params.items())
        single = dict(pairs)
        if len(single) != len(pairs):
            return False
        given = single.get(SIGNATURE)
        expires = single.get(EXPIRES)
        if not given or not expires:
            return False
        unsigned = {k: v for k, v in single.items() if k != SIGNATURE}
        # As bytes: compare_digest refuses a str with a non-ASCII character (a forged "é").
        if not hmac.compare_digest(given.encode(), self._mac(method, path, unsigned).encode()):
            return False
        # Read only once signed, so written by us: ASCII digits. A forged "²" passes isdigit()
        # and 5 000 digits pass it too; int() raises on both.
        return expires.isascii() and expires.isdigit() and int(expires) >= now
