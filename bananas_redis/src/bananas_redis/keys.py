"""Key names, all derived from the namespace (``{ns}``), as the wire format documents them."""

from __future__ import annotations

import re

import attrs
from bananas.backend import validate_namespace
from bananas.job import ALL_PRIORITIES, DEFAULT_ROUTING_KEY, Job, JobPriority

__all__ = ["DEFAULT_NAMESPACE", "Keys", "glob_escape"]

DEFAULT_NAMESPACE = "bananas"


def _check_namespace(_inst: object, _attr: object, value: str) -> None:
    validate_namespace(value)


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN/KEYS ``MATCH`` pattern (``*?[]\\`` escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@attrs.frozen
class Keys:
    """Every key and channel of one namespace (checked by :func:`bananas.backend.validate_namespace`)."""

    ns: str = attrs.field(default=DEFAULT_NAMESPACE, validator=_check_namespace)

    def job(self, job_id: str) -> str:
        return f"{self.ns}:job:{job_id}"

    def ready(self, routing_key: str, priority: JobPriority | str) -> str:
        """The ready list of a routing key and priority (``default`` uses the short form)."""
        p = JobPriority.parse(priority).value
        if not routing_key or routing_key == DEFAULT_ROUTING_KEY:
            return f"{self.ns}:queue:{p}"
        return f"{self.ns}:route:{routing_key}:queue:{p}"

    def legacy_default(self, priority: JobPriority | str) -> str:
        """Where some older producers put default-route jobs; workers of ``default`` drain it too."""
        return f"{self.ns}:route:{DEFAULT_ROUTING_KEY}:queue:{JobPriority.parse(priority).value}"

    def claim_order(self, routing_keys: list[str], priorities: list[JobPriority] | None = None) -> list[str]:
        """Ready lists in the order a claim walks them: routing keys as given, priorities high to low."""
        return [ready for ready, _ in self.claim_lines(routing_keys, priorities)]

    def claim_lines(
        self, routing_keys: list[str], priorities: list[JobPriority] | None = None
    ) -> list[tuple[str, str]]:
        """:meth:`claim_order`'s lists, each with its line for claim.lua: ``turns key<TAB>group
        list prefix`` of its routing key and priority (a line's lists come together)."""
        wanted = set(priorities or ALL_PRIORITIES)
        order = [p for p in ALL_PRIORITIES if p in wanted]
        out: dict[str, str] = {}
        for key in routing_keys:
            for p in order:
                line = f"{self.group_turns(key, p)}\t{self.group_ready_prefix(key, p)}"
                out.setdefault(self.ready(key, p), line)
                if not key or key == DEFAULT_ROUTING_KEY:
                    out.setdefault(self.legacy_default(p), line)
        return list(out.items())

    @property
    def processing(self) -> str:
        return f"{self.ns}:queue:processing"

    @property
    def scheduled(self) -> str:
        return f"{self.ns}:queue:scheduled"

    @property
    def dead(self) -> str:
        return f"{self.ns}:queue:dead"

    @property
    def leases(self) -> str:
        """Our extra sorted set: claimed id -> lease deadline (clock seconds)."""
        return f"{self.ns}:queue:leases"

    @property
    def dead_errors(self) -> str:
        """Our extra hash: dead id -> why it died, for ids whose job JSON was missing or unreadable."""
        return f"{self.ns}:dead:errors"

    @property
    def wakeup(self) -> str:
        """Our extra pub/sub channel: a routing key is published on every enqueue."""
        return f"{self.ns}:wakeup"

    def waiting(self, routing_key: str) -> str:
        """Our extra sorted set: tokens of idle workers waiting for jobs of a routing key -> expiry."""
        return f"{self.ns}:waiting:{routing_key}"

    def waiter(self, token: str) -> str:
        """Our extra hash: what an idle worker claims (lists, routes, limit, lease)."""
        return f"{self.ns}:waiter:{token}"

    def inbox(self, token: str) -> str:
        """Our extra list: jobs claimed for an idle worker by the script that made them ready."""
        return f"{self.ns}:inbox:{token}"

    def result(self, job_id: str) -> str:
        return f"{self.ns}:result:{job_id}"

    def result_notify(self, job_id: str) -> str:
        return f"{self.ns}:result:notify:{job_id}"

    def schedule_lock(self, schedule_id: str) -> str:
        return f"{self.ns}:schedule_lock:{schedule_id}"

    def schedule(self, schedule_id: str) -> str:
        return f"{self.ns}:schedules:{schedule_id}"

    @property
    def schedules_pattern(self) -> str:
        """A MATCH pattern of this namespace's schedule hashes only (the namespace escaped)."""
        return f"{glob_escape(self.ns)}:schedules:*"

    @property
    def route_pattern(self) -> str:
        """A MATCH pattern of this namespace's routed ready lists only (the namespace escaped)."""
        return f"{glob_escape(self.ns)}:route:*:queue:*"

    # -- groups with limits (docs/redis-wire-format.md, "Groups and limits"): our extra keys,
    # apart from every list and set an original Go worker or scheduler pops

    @property
    def group_limits(self) -> str:
        """Our extra hash: group name (or ``*``) -> its limit as JSON (GroupLimit.to_json)."""
        return f"{self.ns}:groups:limits"

    def group_ready(self, routing_key: str, priority: JobPriority | str, group: str) -> str:
        """Our extra list: ready ids of one group in one routing key and priority (LPUSH, RPOP: FIFO)."""
        return self.group_ready_prefix(routing_key, priority) + group

    def group_ready_prefix(self, routing_key: str, priority: JobPriority | str) -> str:
        """The group ready lists of a routing key and priority are this prefix and the group's name."""
        return f"{self.ns}:groups:queue:{routing_key or DEFAULT_ROUTING_KEY}:{JobPriority.parse(priority).value}:"

    def group_turns(self, routing_key: str, priority: JobPriority | str) -> str:
        """Our extra sorted set: the groups with ready jobs of a routing key and priority (and
        ``""`` for its jobs without a group) -> their place in the turns; the claim serves the lowest."""
        return f"{self.ns}:groups:turns:{routing_key or DEFAULT_ROUTING_KEY}:{JobPriority.parse(priority).value}"

    @property
    def group_scheduled(self) -> str:
        """Our extra sorted set: grouped jobs waiting for a time (never in the shared scheduled set,
        which an original Go scheduler would move to a plain ready list)."""
        return f"{self.ns}:groups:scheduled"

    @property
    def group_queue_pattern(self) -> str:
        """A MATCH pattern of this namespace's group ready lists only (the namespace escaped)."""
        return f"{glob_escape(self.ns)}:groups:queue:*"

    def ready_for(self, job: Job) -> str:
        """The list a ready ``job`` waits in: its group's, or the plain ready list."""
        if job.group is None:
            return self.ready(job.routing_key, job.priority)
        return self.group_ready(job.routing_key, job.priority, job.group)

    def scheduled_for(self, job: Job) -> str:
        """The set a scheduled or retrying ``job`` waits in."""
        return self.scheduled if job.group is None else self.group_scheduled

    def join_spec(self, job: Job) -> str:
        """What a script needs to put ``job``'s group in the turns of its line when it makes it
        ready (grouplib.lua's ``join``): ``turns key\ngroup``; ``""`` for a job without a group."""
        if job.group is None:
            return ""
        return f"{self.group_turns(job.routing_key, job.priority)}\n{job.group}"

    @property
    def workers(self) -> str:
        """Our extra sorted set: worker id -> expiry (clock seconds)."""
        return f"{self.ns}:workers"

    @property
    def workers_info(self) -> str:
        """Our extra hash: worker id -> WorkerInfo JSON."""
        return f"{self.ns}:workers:info"
