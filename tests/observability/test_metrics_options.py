"""The worker's metrics options: each from its option or its environment variable, and a bad
value is one readable line naming it and what is allowed."""

from __future__ import annotations

import pytest
from bananas.errors import ConfigError
from bananas.metrics.worker import DEFAULT_INTERVAL, MetricsOptions, metrics_options


def test_defaults_serve_nothing_and_log_every_30_seconds() -> None:
    assert metrics_options(env={}) == MetricsOptions(port=None, host="127.0.0.1", interval=DEFAULT_INTERVAL)
    assert DEFAULT_INTERVAL == 30.0


def test_the_environment_is_read_and_options_win() -> None:
    env = {"BANANAS_METRICS_PORT": "9101", "BANANAS_METRICS_HOST": "0.0.0.0", "BANANAS_METRICS_INTERVAL": "1m"}
    assert metrics_options(env=env) == MetricsOptions(port=9101, host="0.0.0.0", interval=60.0)
    assert metrics_options("9200", "127.0.0.2", "0", env=env) == MetricsOptions(9200, "127.0.0.2", 0.0)
    assert metrics_options(interval="500ms", env={}).interval == 0.5


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"port": "http"}, {}, "--metrics-port='http' is not a port: use a whole number from 0 to 65535"),
        ({"port": "70000"}, {}, "--metrics-port='70000' is not a port"),
        ({}, {"BANANAS_METRICS_PORT": "-1"}, "BANANAS_METRICS_PORT='-1' is not a port"),
        ({"interval": "soon"}, {}, "--metrics-interval='soon' is not a duration"),
        ({}, {"BANANAS_METRICS_INTERVAL": "-5"}, "BANANAS_METRICS_INTERVAL='-5' is out of range: use 0 (off) to 24h"),
    ],
)
def test_bad_values_are_one_line_naming_the_setting(kwargs: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        metrics_options(**kwargs, env=env)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
