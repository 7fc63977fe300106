"""SQL: namespace -> table prefix is injective, keeps lower-case identifiers as they were,
and the conformance tests of namespaces pass on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from bananas.backend import Backend, BackendOptions
from bananas.cli import main
from bananas.clock import Clock
from bananas.errors import ConfigError, SchemaError
from bananas.plugins import connect, resolve
from bananas.testing.suite.namespaces import INVALID_NAMESPACES, NamespaceTests
from bananas_sql.database import upgrade_command
from bananas_sql.tables import Names, namespace_prefix
from hypothesis import given
from hypothesis import strategies as st

import bananas_sql

IDENT = re.compile(r"[a-z_][a-z0-9_]*")
namespaces = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.{}", min_size=1, max_size=64)


def _upgrading(url: str) -> Any:
    """A factory that creates the tables of the namespace it is given (as `bananas db upgrade` would)."""

    def factory(clock: Clock, /, **options: Any) -> Backend:
        options.setdefault("namespace", "t" + uuid.uuid4().hex)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # upgrade is async; the factory is not
            pool.submit(asyncio.run, bananas_sql.upgrade(url, namespace=options["namespace"])).result()
        return connect(url, clock=clock, **options)

    return factory


@pytest.mark.anyio
class TestPostgresNamespaces(NamespaceTests):
    @pytest.fixture
    def bananas_backend_factory(self, postgres_url: str) -> Any:
        return _upgrading(postgres_url)


@pytest.mark.anyio
class TestSqliteNamespaces(NamespaceTests):
    @pytest.fixture
    def bananas_backend_factory(self, tmp_path: Path) -> Any:
        return _upgrading(f"sqlite:///{tmp_path}/shared.db")  # every namespace of a test in one file


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [
        ("bananas", "bananas_"),
        ("team_a", "team_a_"),
        ("billing", "billing_"),
        ("_x9", "_x9_"),
        ("t" * 39, "t" * 39 + "_"),
    ],
)
def test_lower_case_identifiers_keep_their_prefix(namespace: str, prefix: str) -> None:
    assert Names.from_extra({"namespace": namespace}).prefix == prefix


def test_other_namespaces_get_a_stable_hashed_prefix() -> None:
    assert namespace_prefix("team-a") == "team_a_96c2886c_"  # stable across releases: tables are found again
    assert namespace_prefix("Team.A") == "team_a_e52fa1d7_"
    assert namespace_prefix("9lives").startswith("ns_9lives_")


@given(st.lists(namespaces, min_size=2, max_size=6, unique=True))
def test_distinct_namespaces_get_distinct_usable_prefixes(names: list[str]) -> None:
    prefixes = [Names.from_extra({"namespace": n}).prefix for n in names]
    assert len(set(prefixes)) == len(names), dict(zip(names, prefixes, strict=True))
    for prefix in prefixes:
        assert IDENT.fullmatch(prefix) and len(prefix) <= 40, prefix
        assert len(prefix + "schema_version") <= 63


def test_look_alikes_differ() -> None:
    names = ["team-a", "team_a", "Team.A", "team.a", "TEAM_A", "team--a", "{team_a}"]
    prefixes = {namespace_prefix(n) for n in names}
    assert len(prefixes) == len(names)
    assert all(a != b for a, b in itertools.combinations(prefixes, 2))


def test_table_prefix_option_still_wins() -> None:
    assert Names.from_extra({"namespace": "Team.A", "table_prefix": "jobs_"}).prefix == "jobs_"


@pytest.mark.parametrize("name", INVALID_NAMESPACES, ids=repr)
def test_invalid_namespaces_are_refused_by_the_sql_backend_itself(name: str) -> None:
    with pytest.raises(ConfigError):
        Names.from_extra({"namespace": name})
    with pytest.raises(ConfigError):
        Names.from_extra({"namespace": name, "table_prefix": "p_"})


@pytest.mark.anyio
async def test_upgrade_command_of_a_hashed_namespace_works(db_url: str) -> None:
    """The command a SchemaError names creates the tables that namespace uses (braces, dots, case)."""
    namespace = "{Team.A-" + uuid.uuid4().hex[:8] + "}"
    backend = connect(db_url, namespace=namespace)
    try:
        with pytest.raises(SchemaError) as info:
            await backend.queue.ping()
        command = upgrade_command(db_url, {"namespace": namespace})
        assert command in str(info.value)
        url = command.split("--url ", 1)[1].strip("'")
        assert await asyncio.to_thread(main, ["db", "upgrade", "--url", url]) == 0
        await backend.queue.ping()
        assert (await backend.queue.depths()).total_ready == 0
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_migrator_creates_the_hashed_prefix(db_url: str) -> None:
    namespace = "Team.B" + uuid.uuid4().hex[:8]
    spec = resolve(db_url)
    assert spec.migrate is not None
    await spec.migrate(db_url, BackendOptions(extra={"namespace": namespace}))
    async with connect(db_url, namespace=namespace) as backend:
        await backend.queue.ping()
