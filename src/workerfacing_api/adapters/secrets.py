"""Secret values as operators write them: the plain value, or a JSON document with a
``password`` field (the shape AWS Secrets Manager and RDS store database credentials in).

An error names the variable and says what is wrong with its shape, never what it holds: the
message ends up in logs that more people read than may know the secret.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from workerfacing_api.config import ConfigError


class _Credentials(msgspec.Struct):
    """The one field we take from a credentials document; any others (username, host) are
    ignored."""

    password: Annotated[str, msgspec.Meta(min_length=1)]


class PlainSecretResolver:
    """Turns a secret variable's value into the secret itself, without any cloud service."""

    def resolve(self, value: str, *, name: str) -> str:
        # A secret mounted from a file usually ends with a newline, and a stray space is never
        # part of a key: either would go into a header or a database URL and fail there, far
        # from its cause.
        text = value.strip()
        if text.startswith("arn:aws:secretsmanager:"):
            raise ConfigError(
                f"{name} is a Secrets Manager ARN, which this version of workerfacing-api "
                "cannot fetch; give the value itself or a JSON document with a password field"
            )
        if not text.startswith("{"):
            return text
        try:
            # Whatever the password holds is kept as written: JSON quotes it explicitly.
            return msgspec.json.decode(text, type=_Credentials).password
        except msgspec.ValidationError:
            raise ConfigError(
                f"{name} is a JSON document without a non-empty 'password' string"
            ) from None
        except (msgspec.DecodeError, RecursionError):
            # RecursionError: msgspec's answer to a document nested too deeply.
            raise ConfigError(f"{name} starts with '{{' but is not valid JSON") from None
