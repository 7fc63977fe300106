"""One exception hierarchy for everything Bananas raises on purpose.

Every error derives from :class:`BananasError`; most also derive from the built-in
exception a Python programmer would expect (``ValueError``, ``KeyError``,
``TimeoutError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BananasError",
    "CapabilityNotSupported",
    "ConfigError",
    "DuplicateJob",
    "HandlerNotFound",
    "InvalidGroup",
    "InvalidJob",
    "InvalidRoutingKey",
    "JobDecodeError",
    "JobNotFound",
    "LeaseLost",
    "PayloadError",
    "PluginError",
    "ResultNotReady",
    "ScheduleError",
    "SchemaError",
    "Timeout",
    "UnknownBackendScheme",
]


class BananasError(Exception):
    """Base class of every error Bananas raises on purpose."""


class InvalidJob(BananasError, ValueError):
    """A job (or a field of it) is not acceptable; the message says which and why."""


class InvalidRoutingKey(InvalidJob):
    """A routing key breaks the rules: 1-64 characters of letters, digits, ``_`` and ``-``."""


class InvalidGroup(InvalidJob):
    """A group name, rate or group limit breaks the rules of :mod:`bananas.groups`; the message says which."""


class PayloadError(InvalidJob, TypeError):
    """A payload or result is not JSON, or does not fit the class it is structured into."""


class JobDecodeError(BananasError, ValueError):
    """Stored job or result data could not be decoded (corrupt, truncated or not ours)."""


class JobNotFound(BananasError, KeyError):
    """No job with this id exists (never submitted, or expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"job {self.job_id!r} not found (never submitted, or its record has expired)"


class DuplicateJob(InvalidJob):
    """A job with this id already exists; nothing was written."""


class LeaseLost(BananasError, RuntimeError):
    """A worker reported on a job it no longer holds: its lease ran out and the job was
    reaped, re-claimed or settled by another worker. Nothing was changed."""

    def __init__(self, job_id: str, detail: str = "") -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.detail = detail

    def __str__(self) -> str:
        why = f" ({self.detail})" if self.detail else ""
        return (
            f"job {self.job_id!r} is no longer held by this worker{why}: its lease ran out and the job was "
            "taken back, so this report was discarded"
        )


class HandlerNotFound(BananasError, LookupError):
    """No handler is registered under the job's name."""


class ResultNotReady(BananasError):
    """The job has not reached a final state yet, so it has no result."""


class Timeout(BananasError, TimeoutError):
    """Waiting (for a result, a lease, a server) took longer than allowed."""


class BackendUnavailable(BananasError, ConnectionError):
    """The storage server cannot be reached or refused the operation."""


class UnknownBackendScheme(BananasError, ValueError):
    """No installed plugin serves the URL's scheme; the message lists those that do."""


class CapabilityNotSupported(BananasError, NotImplementedError):
    """The backend does not declare the optional capability an operation needs."""


class PluginError(BananasError, RuntimeError):
    """A plugin is misconfigured (for example two plugins claim the same URL scheme)."""


class ConfigError(BananasError, ValueError):
    """A configuration value is invalid; the message names it and the allowed values."""


class ScheduleError(ConfigError):
    """A cron schedule is invalid (bad cron expression, unknown time zone, ...)."""


class SchemaError(BananasError, RuntimeError):
    """The storage schema is missing or outdated; the message says which command fixes it."""
