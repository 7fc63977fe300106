"""pytest plugin for scripts/test-lowest: the conformance state machine with fewer examples.

At the lowest versions the point is that every call we make works on the oldest releases we
claim; the state machine's full 40 runs repeat the same calls for minutes, and run in the
main suite at the newest versions. Four runs of 25 steps still drive every rule of the machine.
"""

from __future__ import annotations

import pytest
from bananas.testing.suite import BackendConformance
from hypothesis import settings


def pytest_configure(config: pytest.Config) -> None:
    """Lower the suite's documented ``stateful_settings`` for this run only."""
    BackendConformance.stateful_settings = settings(BackendConformance.stateful_settings, max_examples=4)
