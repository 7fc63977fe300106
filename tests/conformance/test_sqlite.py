"""The conformance suite on SQLite, run as a third party would: a URL (one database file per
test), nothing more (the suite creates each namespace's schema through the backend's migration)."""

from pathlib import Path

import pytest
from bananas.testing.plugin import RecordOverwriter
from bananas.testing.suite import BackendConformance
from sql_setup import overwrite_record


class TestSqliteBackend(BackendConformance):
    @pytest.fixture
    def bananas_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/conformance.db"

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        return overwrite_record
