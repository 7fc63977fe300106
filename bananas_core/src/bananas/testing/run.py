"""Run the whole conformance suite against a URL with no code of your own::

pytest --pyargs bananas.testing.run --bananas-url mine://localhost/0
"""

from __future__ import annotations

from bananas.testing.suite import BackendConformance


class TestBackendConformance(BackendConformance):
    """The suite on ``--bananas-url``."""
