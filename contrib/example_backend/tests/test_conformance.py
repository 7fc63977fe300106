"""The Bananas conformance suite on example://, run as any backend author would run it."""

from typing import Any

import pytest
from bananas import Backend
from bananas.testing.plugin import RecordOverwriter
from bananas.testing.suite import BackendConformance


class TestExampleBackend(BackendConformance):
    bananas_url = "example://"

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        """Replace a row's JSON, as a foreign or buggy writer would."""

        async def overwrite(backend: Backend, job_id: str, text: str) -> None:
            queue: Any = backend.queue
            queue.s.rows[job_id].job = text

        return overwrite
