"""Errors a caller can cause, each with a sentence that says what went wrong and what to do.

Entry points map these to their own vocabulary (HTTP status codes, CLI exit codes) in one place;
the core never knows about either.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class JobNotFound(DomainError):
    """Unknown job, a job assigned to someone else, or a cancelled job (the worker must stop)."""


class FileNotFound(DomainError):
    """A file id that names no file."""


class InvalidStatus(DomainError):
    """A status a worker may not set (``queued``, ``pulled`` or an unknown value)."""


class StatusConflict(DomainError):
    """The job already ended in the other final state."""


class InvalidRequest(DomainError):
    """Input that is well-formed but not acceptable (bad path, bad file name, bad limit)."""


class AccessDenied(DomainError):
    """The caller is known but may not touch this resource (file not in its active jobs)."""


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not verify."""


class PayloadTooLarge(DomainError):
    """An upload beyond ``MAX_UPLOAD_BYTES``."""


class Unavailable(DomainError):
    """A backing service (the database) cannot be reached right now; retrying later helps."""


class NotSupported(DomainError):
    """An operation the configured adapter does not offer (direct upload on S3)."""
