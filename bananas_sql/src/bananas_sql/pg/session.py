"""psycopg results and connections as the shared code reads them (SQLAlchemy's way)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bananas_sql.queries import pyformat

if TYPE_CHECKING:
    import psycopg


class Rows:
    """The rows one statement returned (named tuples) and its row count, as SQLAlchemy's
    results are read by the shared code (``first``, ``all``, ``scalar``, iteration)."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def all(self) -> list[Any]:
        return self.rows

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class Session:
    """One psycopg connection seen by the shared code: ``execute(statement, params)``, where a
    list of parameter mappings runs the statement once for each."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Rows:
        from psycopg.rows import namedtuple_row

        sql = statement if isinstance(statement, str) else pyformat(str(statement))
        cur = self.conn.cursor(row_factory=namedtuple_row)
        if isinstance(parameters, list):
            await cur.executemany(sql, parameters)
        else:
            await cur.execute(sql, parameters)
        return Rows(await cur.fetchall() if cur.description else [], cur.rowcount)
