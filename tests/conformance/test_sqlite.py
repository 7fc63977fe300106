"""The conformance suite on SQLite: a fresh database file per backend, schema created first."""

import asyncio
import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.plugins import connect
from bananas.testing.suite import BackendConformance

import bananas_sql


class TestSqliteBackend(BackendConformance):
    @pytest.fixture
    def bananas_backend_factory(self, tmp_path: Path) -> Any:
        def factory(clock: Clock, /, **options: Any) -> Backend:
            url = f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db"
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # upgrade is async; the factory is not
                pool.submit(asyncio.run, bananas_sql.upgrade(url)).result()
            return connect(url, clock=clock, **options)

        return factory
