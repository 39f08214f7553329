"""Identity adapters: who a bearer token belongs to, and in which groups."""

from workerfacing_api.adapters.identity.cache import CachingVerifier
from workerfacing_api.adapters.identity.cognito import CognitoVerifier
from workerfacing_api.adapters.identity.local import LocalIssuer

__all__ = ["CachingVerifier", "CognitoVerifier", "LocalIssuer"]
