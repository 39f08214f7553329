"""workerfacing-api: the worker-facing API of DECODE OpenCloud, a job queue for GPU workers."""

__version__ = "0.1.0"
