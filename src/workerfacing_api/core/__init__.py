"""The pure domain core of the worker-facing API: job lifecycle, matching, retry and timeout
rules, file-transfer permissions, and the ports adapters implement.

Imports only the standard library and msgspec, so other Python services can embed it with any
adapters and no web framework.
"""

from workerfacing_api.core.errors import (
    AccessDenied,
    DomainError,
    FileNotFound,
    InvalidRequest,
    InvalidStatus,
    JobNotFound,
    NotSupported,
    PayloadTooLarge,
    StatusConflict,
    Unauthenticated,
    Unavailable,
)
from workerfacing_api.core.files import DownloadGrant, FileService, UploadGrant
from workerfacing_api.core.fleet import AsidePolicy, Fleet
from workerfacing_api.core.jobs import JobService
from workerfacing_api.core.lifecycle import RetryPolicy
from workerfacing_api.core.memory import InMemoryQueue
from workerfacing_api.core.model import (
    Environment,
    FileType,
    Identity,
    Job,
    JobSpecs,
    JobStatus,
    PresignedRequest,
    Submission,
    SubmittedJob,
    WorkerProfile,
)
from workerfacing_api.core.sync import Backoff, StatusSync
from workerfacing_api.core.waiting import Explanation, WaitExplainer

__all__ = [
    "AccessDenied",
    "AsidePolicy",
    "Backoff",
    "DomainError",
    "DownloadGrant",
    "Environment",
    "Explanation",
    "FileNotFound",
    "FileService",
    "FileType",
    "Fleet",
    "Identity",
    "InMemoryQueue",
    "InvalidRequest",
    "InvalidStatus",
    "Job",
    "JobNotFound",
    "JobService",
    "JobSpecs",
    "JobStatus",
    "NotSupported",
    "PayloadTooLarge",
    "PresignedRequest",
    "RetryPolicy",
    "StatusConflict",
    "StatusSync",
    "Submission",
    "SubmittedJob",
    "Unauthenticated",
    "Unavailable",
    "UploadGrant",
    "WaitExplainer",
    "WorkerProfile",
]
