"""The common store API, as typing protocols: what every module on top of the store may use.

Both backends (``db.Store`` for SQLite, ``postgres.PostgresStore``) implement ``StoreAPI``; code
above them (models, spend, live counters, keys, teams) is written against this and nothing
else, so it runs unchanged on either. The contract is spelled out in ``proxy/store/__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol):
    """What ``Transaction.execute`` returns (a DB-API cursor: sqlite3's or psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    """The handle ``write``/``read`` pass to their function: one open transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> Cursor: ...


class StoreAPI(Protocol):
    """A durable store: SQLite file or PostgreSQL database."""

    dialect: str
    timeout: float

    def write(self, fn: Callable[[Any], T], *, offload: bool | None = ...) -> T: ...

    def read(self, fn: Callable[[Any], T], *, offload: bool = ...) -> T: ...

    def query(self, sql: str, params: Sequence[Any] = ...) -> list[dict[str, Any]]: ...

    def query_value(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...


def rows(cursor: Cursor) -> list[dict[str, Any]]:
    """A cursor's remaining rows as dicts keyed by column name (the same on both backends)."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
