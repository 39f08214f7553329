"""Secret values as operators write them: the plain value, a JSON document with a ``password``
field (the shape AWS Secrets Manager and RDS store database credentials in), or the ARN of an AWS
Secrets Manager secret holding either, fetched once at start-up with boto3 (which honours
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL``).

An error names the variable and says what is wrong with its shape, never what it holds: the
message ends up in logs that more people read than may know the secret.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec


class SecretError(ValueError):
    """A secret variable cannot be used; the message names it and says why, never its value."""


class _Credentials(msgspec.Struct):
    """The one field we take from a credentials document; any others (username, host) are
    ignored."""

    password: Annotated[str, msgspec.Meta(min_length=1)]


ARN_PREFIX = "arn:aws:secretsmanager:"


class SecretResolver:
    """Turns a secret variable's value into the secret itself."""

    def resolve(self, value: str, *, name: str) -> str:
        # A secret mounted from a file usually ends with a newline, and a stray space is never
        # part of a key: either would go into a header or a database URL and fail there, far
        # from its cause.
        text = value.strip()
        if text.startswith(ARN_PREFIX):
            text = self._fetch(text, name).strip()
        return self._password(text, name)

    def _fetch(self, arn: str, name: str) -> str:
        """The secret string stored under ``arn``; the error names the ARN, never a value."""
        import boto3  # only deployments that use ARNs pay for loading it
        import botocore.exceptions

        parts = arn.split(":")
        region = parts[3] if len(parts) > 6 and parts[3] else None
        try:
            client: Any = boto3.client("secretsmanager", region_name=region)
            answer = client.get_secret_value(SecretId=arn)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SecretError(f"{name}: cannot read the secret {arn} ({code})") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise SecretError(
                f"{name}: cannot read the secret {arn} ({type(exc).__name__}: {exc})"
            ) from None
        secret = answer.get("SecretString")
        if not isinstance(secret, str) or not secret.strip():
            raise SecretError(f"{name}: the secret {arn} holds no text (SecretString)")
        return secret

    @staticmethod
    def _password(text: str, name: str) -> str:
        if not text.startswith("{"):
            return text
        try:
            # Whatever the password holds is kept as written: JSON quotes it explicitly.
            return msgspec.json.decode(text, type=_Credentials).password
        except msgspec.ValidationError:
            raise SecretError(
                f"{name} is a JSON document without a non-empty 'password' string"
            ) from None
        except (msgspec.DecodeError, RecursionError):
            # RecursionError: msgspec's answer to a document nested too deeply.
            raise SecretError(f"{name} starts with '{{' but is not valid JSON") from None
