"""The conformance suite on PostgreSQL, run as a third party would (schema created per namespace)."""

import asyncio
import concurrent.futures
import uuid
from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.plugins import connect
from bananas.testing.suite import BackendConformance

import bananas_sql


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    def bananas_backend_factory(self, postgres_url: str) -> Any:
        """A fresh namespace per backend, its tables created by `bananas_sql.upgrade` first."""

        def factory(clock: Clock, /, **options: Any) -> Backend:
            namespace = "t" + uuid.uuid4().hex
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # upgrade is async; the factory is not
                pool.submit(asyncio.run, bananas_sql.upgrade(postgres_url, namespace=namespace)).result()
            return connect(postgres_url, clock=clock, namespace=namespace, **options)

        return factory
