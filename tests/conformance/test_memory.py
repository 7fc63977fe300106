"""The conformance suite on memory://, run exactly as a third-party backend would run it."""

from bananas.testing.suite import BackendConformance


class TestMemoryBackend(BackendConformance):
    bananas_url = "memory://"
