"""Fixtures for the store tests: every test runs on both backends, each on a fresh database.

``backend`` is parametrized: ``sqlite`` (a file in the test's temp dir) and ``postgresql`` (a
schema of its own in the session's test database, selected through the URL's search_path).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from proxy.store import ModelStore, StoreAPI, connect

BACKENDS = ("sqlite", "postgresql")


class Backend:
    """One backend for one test: where its database is, and backend-specific test helpers."""

    def __init__(self, name: str, tmp_path: Path, pg_database: str | None) -> None:
        self.name = name
        self._tmp = tmp_path
        self._pg_database = pg_database
        self._schemas: list[str] = []
        self._stores: list[StoreAPI] = []
        self._conns: list[Any] = []
        self.target = self.another()

    def __repr__(self) -> str:
        return self.name

    @property
    def sqlite(self) -> bool:
        return self.name == "sqlite"

    @property
    def error(self) -> type[Exception]:
        """The driver's base error."""
        return sqlite3.Error if self.sqlite else psycopg.Error

    def another(self) -> str:
        """A new, empty, independent database: a file, or a schema of its own."""
        if self.sqlite:
            return str(self._tmp / f"store-{len(self._schemas)}-{uuid.uuid4().hex[:6]}.db")
        assert self._pg_database is not None
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._pg_database, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        return f"{self._pg_database}?options={quote(f'-csearch_path={schema}')}"

    def open(self, target: str | None = None, **kwargs: Any) -> StoreAPI:
        """A store on this test's database (or ``target``), closed when the test ends."""
        store = connect(target or self.target, **kwargs)
        self._stores.append(store)
        return store

    def raw(self, target: str | None = None) -> Any:
        """A plain driver connection to the database, in autocommit mode."""
        target = target or self.target
        if self.sqlite:
            conn: Any = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        else:
            conn = psycopg.connect(target, autocommit=True)
        self._conns.append(conn)
        return conn

    def hold_write_lock(self) -> Any:
        """A second connection holding the write lock (SQLite) or table locks that block writers
        but not readers (PostgreSQL) until it runs COMMIT or ROLLBACK."""
        conn = self.raw()
        if self.sqlite:
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE models, store_meta, spend_logs IN EXCLUSIVE MODE")
        return conn

    def retryable_error(self) -> Exception:
        """An error the backend's ``write`` retries the whole transaction on."""
        if self.sqlite:
            return sqlite3.OperationalError("database is locked")
        return psycopg.errors.SerializationFailure("could not serialize access")

    def tables(self, store: StoreAPI) -> set[str]:
        if self.sqlite:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
        return {row["name"] for row in store.query(sql)}

    def columns(self, store: StoreAPI, table: str) -> set[str]:
        if self.sqlite:
            return {row["name"] for row in store.query(f"PRAGMA table_info({table})")}
        sql = ("SELECT column_name AS name FROM information_schema.columns"
               " WHERE table_schema = current_schema() AND table_name = ?")
        return {row["name"] for row in store.query(sql, (table,))}

    def set_schema_version(self, version: int) -> None:
        conn = self.raw()
        if self.sqlite:
            conn.execute(f"PRAGMA user_version = {version}")
        else:
            conn.execute("UPDATE llmrelay_schema SET version = %s WHERE id = 1", (version,))
        conn.close()

    def cleanup(self) -> None:
        for store in self._stores:
            store.close()
        for conn in self._conns:
            conn.close()
        if self._schemas:
            assert self._pg_database is not None
            with psycopg.connect(self._pg_database, autocommit=True) as conn:
                for schema in self._schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    pg_database = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    b = Backend(request.param, tmp_path, pg_database)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def store(backend: Backend) -> StoreAPI:
    return backend.open(timeout=2.0)


@pytest.fixture
def models(store: StoreAPI) -> ModelStore:
    return ModelStore(store)
