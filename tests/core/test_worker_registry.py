"""The handler registry: registration forms, lookups, mistakes, and cron schedules."""

from __future__ import annotations

from typing import Any

import pytest
from bananas import ConfigError, Job, Registry, ScheduleError
from bananas.worker import JobContext


def test_register_get_count_len_contains() -> None:
    registry = Registry()

    def resize(ctx: JobContext, job: Job) -> None:
        return None

    assert registry.get("resize") is None
    assert "resize" not in registry
    registry.register("resize", resize)
    assert registry.get("resize") is resize
    assert "resize" in registry
    assert registry.count() == len(registry) == 1
    assert registry.names() == list(registry) == ["resize"]


def test_decorator_with_and_without_a_name() -> None:
    registry = Registry()

    @registry.handler("send_email")
    async def send(ctx: JobContext, job: Job) -> str:
        return "sent"

    @registry.handler
    def resize_image(ctx: JobContext, job: Job) -> None:
        return None

    @registry.handler()
    async def cleanup(ctx: JobContext, job: Job) -> None:
        return None

    assert registry.get("send_email") is send
    assert registry.get("resize_image") is resize_image
    assert registry.get("cleanup") is cleanup
    assert registry.names() == ["cleanup", "resize_image", "send_email"]


def test_registering_the_same_handler_twice_is_harmless_but_a_different_one_is_an_error() -> None:
    registry = Registry()

    def first(ctx: JobContext, job: Job) -> None:
        return None

    def second(ctx: JobContext, job: Job) -> None:
        return None

    registry.register("job", first)
    registry.register("job", first)
    with pytest.raises(ConfigError, match=r"'job' already has a handler .*first"):
        registry.register("job", second)
    assert registry.get("job") is first


@pytest.mark.parametrize("name", ["", "   ", None])
def test_empty_names_are_rejected(name: Any) -> None:
    with pytest.raises(ConfigError, match="non-empty job name"):
        Registry().register(name, lambda ctx, job: None)


def test_handler_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="must be callable"):
        Registry().register("x", "not a function")  # type: ignore[arg-type]


def test_schedules_are_validated_and_kept() -> None:
    registry = Registry()
    schedule = registry.schedule("nightly", "0 3 * * *", "report", {"kind": "daily"}, timezone="Europe/Berlin")
    assert registry.schedules == [schedule]
    assert schedule.job == "report"
    with pytest.raises(ConfigError, match="nightly"):
        registry.schedule("nightly", "0 4 * * *", "report")
    with pytest.raises(ScheduleError):
        registry.schedule("broken", "61 * * * *", "report")
    assert [s.id for s in registry.schedules] == ["nightly"]
