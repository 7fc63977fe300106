"""The conformance suite on Redis, run exactly as a third-party backend would run it."""

import pytest
from bananas.testing.suite import BackendConformance


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def bananas_url(self, redis_url: str) -> str:
        """The session's throwaway redis-server; the suite gives each test its own namespace."""
        return redis_url
