"""SQLite write transactions: units asked for together share one, each in its own savepoint;
under load deferred units wait out the write gap; the write lock is waited for by retrying."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bananas.errors import BackendUnavailable, ConfigError
from bananas.plugins import connect
from bananas_sql.sqlite.connection import RawSqlite, in_shared_transaction, open_connection

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    path = str(tmp_path / "raw.db")
    conn = open_connection(path)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    conn.close()
    return path


def keys(path: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")]


def insert(*ks: int) -> Callable[[sqlite3.Connection], int]:
    def unit(conn: sqlite3.Connection) -> int:
        for k in ks:
            conn.execute("INSERT INTO t VALUES (?)", (k,))
        return ks[-1]

    return unit


def test_a_failing_unit_rolls_back_only_its_own_writes(db_path: str) -> None:
    conn = open_connection(db_path)
    try:
        # The middle unit writes 2 and then fails on a duplicate of 1.
        outcomes = in_shared_transaction(conn, [insert(1), insert(2, 1), insert(3)], 1000)
    finally:
        conn.close()
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], sqlite3.IntegrityError)
    assert keys(db_path) == [1, 3]


async def test_deferred_units_wait_out_the_gap_and_share_one_transaction(db_path: str) -> None:
    raw = RawSqlite(db_path, 1000, "test", write_gap=0.5)
    try:
        started = time.monotonic()
        first = await asyncio.gather(raw.transaction(insert(1), defer=True), raw.transaction(insert(4), defer=True))
        assert list(first) == [1, 4]
        assert time.monotonic() - started < 0.4  # nothing recent: no wait
        started = time.monotonic()
        seen: list[bool] = []

        def probe(conn: sqlite3.Connection) -> None:
            seen.append(conn.in_transaction)
            conn.execute("INSERT INTO t VALUES (2)")

        results = await asyncio.gather(
            raw.transaction(insert(3), defer=True),
            raw.transaction(probe, defer=True),
            raw.transaction(insert(1), defer=True),  # a duplicate: fails alone
            return_exceptions=True,
        )
        assert time.monotonic() - started >= 0.45  # waited for the gap after the first transaction
        assert results[0] == 3 and results[1] is None
        assert isinstance(results[2], sqlite3.IntegrityError)
        assert seen == [True]
        assert keys(db_path) == [1, 2, 3, 4]
    finally:
        await raw.close()


async def test_one_caller_alone_never_waits_out_the_gap(db_path: str) -> None:
    # claim, complete, claim, ... one at a time: each transaction carries one write
    raw = RawSqlite(db_path, 1000, "test", write_gap=0.5)
    try:
        started = time.monotonic()
        for k in range(4):
            await raw.transaction(insert(k), defer=True)
        assert time.monotonic() - started < 0.5
    finally:
        await raw.close()


async def test_an_urgent_unit_ends_the_wait_for_the_gap(db_path: str) -> None:
    raw = RawSqlite(db_path, 1000, "test", write_gap=30)
    try:
        await raw.transaction(insert(1), defer=True, weight=2)
        deferred = asyncio.ensure_future(raw.transaction(insert(2), defer=True))
        await asyncio.sleep(0.1)
        assert not deferred.done()  # waiting out the 30 s gap
        started = time.monotonic()
        await raw.transaction(insert(3))
        await asyncio.wait_for(deferred, 5)
        assert time.monotonic() - started < 5
        assert keys(db_path) == [1, 2, 3]
    finally:
        await raw.close()


async def test_a_cancelled_unit_that_has_not_started_writes_nothing(db_path: str) -> None:
    raw = RawSqlite(db_path, 1000, "test", write_gap=0.3)
    try:
        await raw.transaction(insert(1), defer=True, weight=2)
        cancelled = asyncio.ensure_future(raw.transaction(insert(2), defer=True))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await raw.transaction(insert(3), defer=True)
        assert keys(db_path) == [1, 3]
    finally:
        await raw.close()


def hold_write_lock(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def test_a_locked_database_is_waited_for_then_reported(db_path: str) -> None:
    raw = RawSqlite(db_path, 3000, "test")
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(db_path, 0.3, locked))
    holder.start()
    try:
        locked.wait(5)
        started = time.monotonic()
        assert await raw.transaction(insert(1)) == 1
        assert time.monotonic() - started >= 0.2  # it did wait for the other writer
        short = RawSqlite(db_path, 100, "test")
        locked.clear()
        holder.join()
        holder = threading.Thread(target=hold_write_lock, args=(db_path, 1.0, locked))
        holder.start()
        locked.wait(5)
        with pytest.raises(BackendUnavailable, match="locked"):
            await short.transaction(insert(2))
        await short.close()
    finally:
        holder.join()
        await raw.close()
    assert keys(db_path) == [1]


@pytest.mark.parametrize("value", ["-1", "2", "soon"])
def test_write_gap_must_be_a_small_number_of_seconds(sqlite_url: str, value: str) -> None:
    with pytest.raises(ConfigError, match="write_gap"):
        connect(sqlite_url + f"?write_gap={value}")
