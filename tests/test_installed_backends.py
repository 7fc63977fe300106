"""The test environment must hold every backend: a backend whose plugin is missing would
otherwise have its end-to-end tests skipped, and a skipped backend has not passed."""

import pytest
from bananas.plugins import resolve


@pytest.mark.parametrize(
    ("scheme", "backend"),
    [
        ("memory", "memory"),
        ("redis", "redis"),
        ("rediss", "redis"),
        ("redis+sentinel", "redis"),
        ("redis+cluster", "redis"),
        ("postgresql", "postgresql"),
        ("postgres", "postgresql"),
        ("postgresql+psycopg", "postgresql"),
        ("sqlite", "sqlite"),
        ("example", "example"),
    ],
)
def test_every_backend_is_installed(scheme: str, backend: str) -> None:
    assert resolve(f"{scheme}://x").name == backend
