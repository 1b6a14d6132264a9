"""Durable data — runtime models, config generations, spend logs, keys — in SQLite or PostgreSQL.

Two backends, one API, one schema history (``migrations.MIGRATIONS``):

- ``Store`` (``db.py``): one SQLite file through sqlite-utils, the embedded default: one host,
  every worker on it opening the same file.
- ``PostgresStore`` (``postgres.py``): a PostgreSQL database through psycopg 3 and psycopg_pool,
  used when ``general_settings.database_url`` or the ``DATABASE_URL`` env var is set: a fleet
  of instances sharing one source of truth.

``open_store(general_settings, environ, default_path)`` picks one; ``connect(target)`` opens a
path or a ``postgresql://`` URL directly. One store per worker process, opened after the fork.

The contract (all that code above the store may rely on; ``api.StoreAPI`` types it):

``store.write(fn, *, offload=None) -> fn's result``
    Runs ``fn(tx)`` in one transaction and commits; any exception rolls it back and propagates.
    Write transactions behave as if run one at a time (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
    SERIALIZABLE), so a read-then-write inside ``fn`` is safe. On contention ``fn`` may be run
    again from the start, so it must only touch the database (no side effects, no I/O).
    ``offload`` only matters to SQLite under gevent (run in the threadpool; ``False`` inline).
``store.read(fn, *, offload=False) -> fn's result``
    Runs ``fn(tx)`` in one read transaction: every SELECT in it sees the same snapshot.
``tx.execute(sql, params=()) -> cursor``
    One statement; the cursor has ``fetchone()`` (a tuple or None), ``fetchall()`` (tuples),
    ``rowcount`` and ``description`` (``description[i][0]`` is the column name;
    ``api.rows(cursor)`` turns the rest into dicts).
``tx.executemany(sql, seq_of_params) -> cursor``
    One statement for each parameter tuple (batched on PostgreSQL).
``store.query(sql, params=()) -> list[dict]``
    The rows of one statement, outside any explicit transaction, as ``{column: value}`` dicts.
``store.query_value(sql, params=())``
    First column of the first row, or None: the cheapest read (pollers use it).
``store.schema_version -> int``; ``store.dialect`` (``"sqlite"`` or ``"postgresql"``);
``store.timeout`` (seconds); ``store.close()``.

Errors: ``StoreBusy`` when a lock or a pooled connection is not had within ``timeout`` (or
contention outlasts it); ``StoreUnavailable`` (SQLite) when the database refuses work: its file
went read-only, the disk is full, an I/O error; ``StoreError`` is their base, and the app answers
it as a 503. Others (constraint violations, bad SQL) come from the driver as they are.

SQL is written once, for both:

- ``?`` placeholders, positional params as a tuple. (PostgreSQL: translated to ``%s``; a ``?``
  inside a quoted literal is left alone.)
- Portable statements only: ``INSERT ... ON CONFLICT (col) DO UPDATE SET x = excluded.x`` or
  ``DO NOTHING`` (not ``INSERT OR REPLACE/IGNORE``); in ``DO UPDATE`` name the old row's
  columns with the table (``SET n = counters.n + 1``: a bare ``n`` is ambiguous to
  PostgreSQL); ``COALESCE(SUM(x), 0)`` (not ``TOTAL``); no ``PRAGMA``, no SQLite date
  functions, no ``LIKE`` that relies on case (SQLite's is case-insensitive). ``RETURNING``
  works on both. Quote the reserved column name ``"user"``.
- Types: TEXT for strings and JSON (``json.dumps``), INTEGER for ints and flags (pass ``int``,
  never ``bool``: PostgreSQL will not store a boolean in an INTEGER column), floats for
  REAL/DOUBLE PRECISION columns (epoch seconds for times). Values read back have the same
  Python types on both backends, except aggregates: PostgreSQL's ``SUM`` of a BIGINT column
  is a ``Decimal``, so wrap sums and counts in ``int()``/``float()``.
- DDL goes in a new ``migrations.Migration`` step appended to ``MIGRATIONS``, with the PostgreSQL
  variant in ``dialects={"postgresql": (...)}`` where types differ (REAL -> DOUBLE PRECISION,
  INTEGER -> BIGINT for counters and sums, no ``WITHOUT ROWID``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.errors import ConfigError
from proxy.store.api import StoreAPI
from proxy.store.db import Store, StoreBusy, StoreError, StoreUnavailable
from proxy.store.migrations import SCHEMA_VERSION, Migration
from proxy.store.models import ModelExists, ModelNotFound, ModelStore
from proxy.store.spend import SpendWriter, spend_logs, total_spend

if TYPE_CHECKING:
    from proxy.store.postgres import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "Migration",
    "ModelExists",
    "ModelNotFound",
    "ModelStore",
    "SpendWriter",
    "Store",
    "StoreAPI",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "connect",
    "is_database_url",
    "open_store",
    "spend_logs",
    "total_spend",
]

DEFAULT_POOL_LIMIT = 10
DEFAULT_TIMEOUT = 5.0


def is_database_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def connect(
    target: str | Path, *, pool_limit: int = DEFAULT_POOL_LIMIT, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any
) -> Store | PostgresStore:
    """A ``postgresql://`` URL opens a ``PostgresStore``; anything else is a SQLite file path."""
    if is_database_url(target):
        # Imported only when used: a SQLite-only process never loads psycopg.
        from proxy.store.postgres import PostgresStore

        return PostgresStore(str(target), pool_limit=pool_limit, timeout=timeout, **kwargs)
    return Store(target, pool_limit=pool_limit, timeout=timeout, **kwargs)


def database_url(general_settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str | None:
    """``general_settings.database_url``, else ``DATABASE_URL``, as LiteLLM reads them."""
    environ = os.environ if environ is None else environ
    return general_settings.get("database_url") or environ.get("DATABASE_URL") or None


def open_store(
    general_settings: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    default_path: str | Path | None = None,
) -> Store | PostgresStore | None:
    """The store a config asks for: PostgreSQL when a database URL is set, else the SQLite file
    at ``default_path``; None when there is neither (no store at all).

    ``database_connection_pool_limit`` and ``database_connection_timeout`` (LiteLLM's names)
    size the pool and bound the waits on either backend.
    """
    pool_limit = int(general_settings.get("database_connection_pool_limit") or DEFAULT_POOL_LIMIT)
    timeout = float(general_settings.get("database_connection_timeout") or DEFAULT_TIMEOUT)
    url = database_url(general_settings, environ)
    if url:
        if not is_database_url(url):
            source = "general_settings.database_url" if general_settings.get("database_url") else "DATABASE_URL"
            raise ConfigError([f"{source}: must be a postgresql:// or postgres:// URL"])
        return connect(url, pool_limit=pool_limit, timeout=timeout)
    if default_path is None:
        return None
    return connect(Path(default_path), pool_limit=pool_limit, timeout=timeout)
