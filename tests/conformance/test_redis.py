"""The conformance suite on Redis, run exactly as a third-party backend would run it."""

from typing import Any

import pytest
from bananas.backend import Backend
from bananas.testing.plugin import RecordOverwriter
from bananas.testing.suite import BackendConformance


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def bananas_url(self, redis_url: str) -> str:
        """The session's throwaway redis-server; the suite gives each test its own namespace."""
        return redis_url

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        """Write a job key raw, as a foreign producer would (wire format: ``{ns}:job:{id}``)."""

        async def overwrite(backend: Backend, job_id: str, text: str) -> None:
            queue: Any = backend.queue
            assert await queue.conn.client.set(queue.k.job(job_id), text, xx=True), f"no job {job_id!r}"

        return overwrite
