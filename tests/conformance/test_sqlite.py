"""The conformance suite on SQLite: one database file per test, a namespace per backend."""

from pathlib import Path
from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.testing.plugin import BackendFactory, RecordOverwriter
from bananas.testing.suite import BackendConformance
from sql_setup import connect_upgraded, overwrite_record


class TestSqliteBackend(BackendConformance):
    @pytest.fixture
    def bananas_backend_factory(self, tmp_path: Path) -> BackendFactory:
        def factory(clock: Clock, /, **options: Any) -> Backend:
            return connect_upgraded(f"sqlite:///{tmp_path}/conformance.db", clock, options)

        return factory

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        return overwrite_record
