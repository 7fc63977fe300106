"""The conformance suite on PostgreSQL, run as a third party would: a URL, nothing more (the
suite creates each namespace's schema through the backend's migration)."""

import pytest
from bananas.testing.plugin import RecordOverwriter
from bananas.testing.suite import BackendConformance
from sql_setup import overwrite_record


class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    def bananas_url(self, postgres_url: str) -> str:
        """The session's throwaway PostgreSQL cluster; the suite gives each test its own namespace."""
        return postgres_url

    @pytest.fixture
    def bananas_overwrite_record(self) -> RecordOverwriter:
        return overwrite_record
