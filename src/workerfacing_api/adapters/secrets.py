"""Secret values as operators write them: the plain value, or a JSON document with a
``password`` field (the shape AWS Secrets Manager and RDS store database credentials in)."""

from __future__ import annotations

import json

from workerfacing_api.config import ConfigError


class PlainSecretResolver:
    """Implements ``SecretResolver`` without any cloud service."""

    def resolve(self, value: str, *, name: str) -> str:
        text = value.strip()
        if text.startswith("arn:aws:secretsmanager:"):
            raise ConfigError(
                f"{name} is a Secrets Manager ARN, which this version of workerfacing-api "
                "cannot fetch; give the value itself or a JSON document with a password field"
            )
        if text.startswith("{"):
            try:
                document = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"{name} starts with '{{' but is not valid JSON") from None
            password = document.get("password") if isinstance(document, dict) else None
            if not isinstance(password, str) or not password:
                raise ConfigError(f"{name} is a JSON document without a 'password' string")
            return password
        return value
