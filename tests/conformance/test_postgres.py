"""The conformance suite on PostgreSQL, run as a third party would (schema created per namespace)."""

from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.testing.plugin import BackendFactory, RecordOverwriter
from bananas.testing.suite import BackendConformance
from sql_setup import connect_upgraded, overwrite_record


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    def bananas_backend_factory(self, postgres_url: str) -> BackendFactory:
        def factory(clock: Clock, /, **options: Any) -> Backend:
            return connect_upgraded(postgres_url, clock, options)

        return factory

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        return overwrite_record
