"""The Bananas conformance suite on example://, run as any backend author would run it."""

from bananas.testing.suite import BackendConformance


class TestExampleBackend(BackendConformance):
    bananas_url = "example://"
