"""Bananas: a distributed task queue with pluggable storage.

Submit named jobs with a JSON payload, run them on any number of workers with retries,
leases, a dead letter queue, results and cron schedules. Storage comes from plugins:
``bananas.connect("redis://...")``, ``"postgresql://..."``, ``"sqlite:///jobs.db"``,
``"memory://"``.
"""

from bananas.backend import Backend, BackendOptions
from bananas.cancel import CancelOutcome
from bananas.capabilities import Capability
from bananas.client import AsyncClient, Client
from bananas.clock import Clock, ManualClock
from bananas.config import WorkerConfig, WorkerMode, load_worker_config
from bananas.errors import (
    BackendUnavailable,
    BananasError,
    CapabilityNotSupported,
    ConfigError,
    DuplicateJob,
    HandlerNotFound,
    InvalidGroup,
    InvalidJob,
    InvalidRoutingKey,
    JobDecodeError,
    JobNotFound,
    LeaseLost,
    PayloadError,
    PluginError,
    ResultNotReady,
    ScheduleError,
    SchemaError,
    Timeout,
    UnknownBackendScheme,
)
from bananas.groups import GroupLimit, Rate
from bananas.job import Job, JobPriority, JobResult, JobStatus, validate_routing_key
from bananas.plugins import BackendSpec, backend_specs, connect, hookimpl
from bananas.protocols import (
    Queue,
    QueueDepths,
    ResultBackend,
    Scheduler,
    ScheduleState,
    WorkerInfo,
    WorkerRegistry,
)
from bananas.unique import JobId
from bananas.worker import Executor, JobContext, Pool, Registry
from bananas.workflows import WorkflowInfo, chain, chord, group, task

__version__ = "0.2.0"

__all__ = [
    "AsyncClient",
    "Backend",
    "BackendOptions",
    "BackendSpec",
    "BackendUnavailable",
    "BananasError",
    "CancelOutcome",
    "Capability",
    "CapabilityNotSupported",
    "Client",
    "Clock",
    "ConfigError",
    "DuplicateJob",
    "Executor",
    "GroupLimit",
    "HandlerNotFound",
    "InvalidGroup",
    "InvalidJob",
    "InvalidRoutingKey",
    "Job",
    "JobContext",
    "JobDecodeError",
    "JobId",
    "JobNotFound",
    "LeaseLost",
    "JobPriority",
    "JobResult",
    "JobStatus",
    "ManualClock",
    "PayloadError",
    "PluginError",
    "Pool",
    "Queue",
    "QueueDepths",
    "Rate",
    "Registry",
    "ResultBackend",
    "ResultNotReady",
    "ScheduleError",
    "ScheduleState",
    "Scheduler",
    "SchemaError",
    "Timeout",
    "UnknownBackendScheme",
    "WorkerConfig",
    "WorkerInfo",
    "WorkerMode",
    "WorkerRegistry",
    "WorkflowInfo",
    "__version__",
    "backend_specs",
    "chain",
    "chord",
    "connect",
    "group",
    "hookimpl",
    "load_worker_config",
    "task",
    "validate_routing_key",
]
