"""The PostgreSQL backend of ``proxy/store``: the same API and schema as the SQLite ``Store``.

Used when ``DATABASE_URL`` (or ``general_settings.database_url``) is set: several hosts then share
one database as their source of truth. Written for many processes at once, as the SQLite side is:

- A pool per worker (``psycopg_pool.ConnectionPool``): ``pool_limit`` connections at most, one
  kept open; a connection is checked (one round trip) as it is taken, so a server restart costs
  no failed call. Waiting for a free connection is bounded by ``timeout``, then ``StoreBusy``.
- ``write(fn)`` is one SERIALIZABLE transaction: a read-then-write (``ModelStore.add`` looks for
  the id, then inserts) behaves as under SQLite's single writer. A serialization failure or a
  deadlock rolls back and runs ``fn`` again, with jittered backoff, until ``timeout``. A lock
  held elsewhere is waited for up to ``timeout`` (``lock_timeout``), then ``StoreBusy``.
- ``read(fn)`` is one REPEATABLE READ READ ONLY transaction (one snapshot); ``query`` and
  ``query_value`` are single autocommit statements.
- SQL is written once with ``?`` placeholders (see ``proxy/store/__init__``); it is translated
  to psycopg's ``%s`` once per distinct statement.
- Migrations: ``migrations.MIGRATIONS`` (each step's ``postgresql`` statements), the applied count in the
  one-row table ``llmrelay_schema``. Each step is one transaction holding a transaction-level
  advisory lock, re-reading the version after taking it: workers and instances opening an old
  database together apply each step once. PostgreSQL's DDL is transactional, so a failing step
  leaves nothing behind.

gevent: psycopg 3 never blocks inside libpq; it waits for its socket in ``psycopg.waiting.wait``
(and ``wait_conn`` while connecting). At import it picks the C ``wait_c`` unless it sees that
gevent has patched ``select``, in which case it picks ``wait_poll`` on the (patched) ``select``
module, and its ``DefaultSelector`` for connecting is gevent's. Both yield to the hub. A process
that imported psycopg *before* patching keeps ``wait_c`` and the epoll selector, which freeze
every greenlet for the length of each query; ``green_psycopg()`` detects that and switches
psycopg to the cooperative functions, with a warning. psycopg_pool's threads and conditions are
patched into greenlets like any ``threading`` use.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import selectors
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.waiting
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from proxy.store import migrations as schema
from proxy.store.db import StoreBusy, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Key of the advisory lock migrations take (any constant; "llmrelay" in ASCII, as a bigint).
MIGRATION_LOCK = 0x6C6C6D72656C6179
MIGRATION_WAIT = 120.0  # seconds an opener waits for another's migration step
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS llmrelay_schema ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
)
_PLACEHOLDER = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\?|%""", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """``?`` placeholders to ``%s``; a literal ``%`` doubled. A ``?`` in a quoted string or a
    comment stays as it is (psycopg reads ``%`` everywhere, so that one is doubled everywhere)."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        return token.replace("%", "%%")

    return _PLACEHOLDER.sub(swap, sql)


def redact(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def green_psycopg() -> bool:
    """Make psycopg wait cooperatively in a gevent-patched process; True if it had to be switched.

    psycopg chooses its wait function when it is first imported; imported before gevent patched
    ``select``, it would keep the C one, which blocks the hub (see the module doc).
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    if not monkey.is_module_patched("select"):
        return False
    waiting = psycopg.waiting
    switched = False
    if waiting.wait is getattr(waiting, "wait_c", None):
        waiting.wait = waiting.wait_poll
        switched = True
    if waiting.DefaultSelector is not selectors.DefaultSelector:
        waiting.DefaultSelector = selectors.DefaultSelector  # type: ignore[misc]
        switched = True
    if switched:
        log.warning("psycopg was imported before gevent patched the process; switched it to gevent-aware waits")
    return switched


class PostgresTransaction:
    """What ``write``/``read`` hand to their function: the common ``execute``/``executemany``."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        # Never None: psycopg reads %% as % only when it is given parameters, even empty ones.
        return self.conn.execute(to_psycopg(sql), params or ())

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.conn.cursor()
        cursor.executemany(to_psycopg(sql), seq_of_params)  # each params tuple: see execute
        return cursor


class PostgresStore:
    """One PostgreSQL database: a connection pool, short transactions, schema kept current.

    ``pool_limit`` is LiteLLM's ``database_connection_pool_limit`` (the pool's most connections);
    ``timeout`` (seconds) its ``database_connection_timeout``: it bounds connecting, waiting for
    a pooled connection, waiting for a lock and retrying a serialization failure.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_limit: int = 10, timeout: float = 5.0, offload: bool | None = None) -> None:
        if pool_limit < 1:
            raise ValueError(f"pool_limit must be at least 1, got {pool_limit}")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout}")
        del offload  # accepted for the common signature: waits here already yield to the hub
        green_psycopg()
        self.url = url
        self.pool_limit = pool_limit
        self.timeout = float(timeout)
        self._closed = False
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_limit,
            timeout=self.timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self.timeout))},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name="llmrelay-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=max(self.timeout, 1.0))
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {redact(url)} within {self.timeout}s") from exc
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r}, pool_limit={self.pool_limit}, timeout={self.timeout})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public operations -------------------------------------------------------------------

    def write(self, fn: Callable[[PostgresTransaction], T], *, offload: bool | None = None) -> T:
        """Run ``fn(tx)`` in one SERIALIZABLE transaction; run again whole on a serialization failure.

        ``fn`` may therefore run more than once: it must only touch the database.
        """
        return self._transaction(fn, "BEGIN ISOLATION LEVEL SERIALIZABLE")

    def read(self, fn: Callable[[PostgresTransaction], T], *, offload: bool = False) -> T:
        """Run ``fn(tx)`` in one read-only transaction, so several SELECTs see one snapshot."""
        return self._transaction(fn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """All rows of one read statement, as dicts; autocommit, no explicit transaction."""
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            try:
                return cursor.execute(to_psycopg(sql), params or ()).fetchall()
            except pg_errors.LockNotAvailable as exc:
                raise self._locked(exc) from exc

    def query_value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """First column of the first row of one statement, or None."""
        with self._connection() as conn:
            try:
                row = conn.execute(to_psycopg(sql), params or ()).fetchone()
            except pg_errors.LockNotAvailable as exc:
                raise self._locked(exc) from exc
        return None if row is None else row[0]

    @property
    def schema_version(self) -> int:
        return int(self.query_value("SELECT version FROM llmrelay_schema WHERE id = 1") or 0)

    @property
    def connections_open(self) -> int:
        """Connections the pool holds now, in use or idle."""
        if self._pool.closed:
            return 0
        return int(self._pool.get_stats().get("pool_size", 0))

    def close(self) -> None:
        """Close the pool; a connection in use is closed when handed back."""
        if not self._closed:
            self._closed = True
            self._pool.close(timeout=self.timeout)

    # -- internals ---------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Per new connection: a lock is waited for at most ``timeout``, as with SQLite."""
        conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")

    def _connection(self) -> Any:
        """A pooled connection as a context manager; ``StoreBusy`` when none comes free in time."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        return _PooledConnection(self)

    def _locked(self, exc: BaseException) -> StoreBusy:
        return StoreBusy(f"{redact(self.url)}: database stayed locked for {self.timeout}s ({exc})")

    def _transaction(self, fn: Callable[[PostgresTransaction], T], begin: str) -> T:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            with self._connection() as conn:
                conn.execute(begin)
                try:
                    result = fn(PostgresTransaction(conn))
                    conn.execute("COMMIT")
                    return result
                except _RETRYABLE as exc:
                    _rollback(conn)
                    if time.monotonic() + delay > deadline:
                        raise StoreBusy(
                            f"{redact(self.url)}: {type(exc).__name__} (gave up after {self.timeout}s)"
                        ) from exc
                except pg_errors.LockNotAvailable as exc:
                    _rollback(conn)
                    raise self._locked(exc) from exc
                except BaseException:
                    _rollback(conn)
                    raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.1)

    # -- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the database to ``SCHEMA_VERSION``, one step per transaction, under the lock."""
        current = -1
        while True:
            version, applied = self._migrate_one()
            if applied is None:
                if version > schema.SCHEMA_VERSION and version != current:
                    log.warning(
                        "%s has schema version %d, newer than this release's %d; using it as is",
                        redact(self.url), version, schema.SCHEMA_VERSION,
                    )
                return
            current = version
            log.info("%s: applied schema migration %d (%s)", redact(self.url), version, applied)

    def _migrate_one(self) -> tuple[int, str | None]:
        """Apply the next step, if one is still due once the advisory lock is held."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                # A transaction-level lock: released by COMMIT or ROLLBACK, even if this
                # process dies, so a crashed migration never leaves others waiting.
                # Another opener may hold it for a long step: wait longer than a normal lock.
                conn.execute(f"SET LOCAL lock_timeout = {int(max(self.timeout, MIGRATION_WAIT) * 1000)}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(_VERSION_TABLE)
                conn.execute("INSERT INTO llmrelay_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
                row = conn.execute("SELECT version FROM llmrelay_schema WHERE id = 1").fetchone()
                version = int(row[0]) if row else 0
                if version >= schema.SCHEMA_VERSION:
                    conn.execute("COMMIT")
                    return version, None
                step = schema.MIGRATIONS[version]
                for statement in step.statements_for(self.dialect):
                    conn.execute(to_psycopg(statement))
                conn.execute("UPDATE llmrelay_schema SET version = %s WHERE id = 1", (version + 1,))
                conn.execute("COMMIT")
                return version + 1, step.name
            except BaseException:
                _rollback(conn)
                raise


class _PooledConnection:
    """``with`` block around one pooled connection, mapping a pool timeout to ``StoreBusy``."""

    __slots__ = ("_conn", "_store")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.Connection[Any]:
        store = self._store
        try:
            self._conn = store._pool.getconn(timeout=store.timeout)
        except PoolTimeout as exc:
            raise StoreBusy(f"no free connection to {redact(store.url)} within {store.timeout}s") from exc
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            # The pool rolls back a connection left in a transaction and drops one that is
            # broken or still busy (a greenlet killed mid-query).
            self._store._pool.putconn(self._conn)
            self._conn = None


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back if a transaction is open; a connection that cannot is left for the pool to drop."""
    status = conn.info.transaction_status
    if status not in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
        return  # idle, or still busy with a query (interrupted): the pool drops a busy one
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        log.warning("could not roll back a pooled connection; the pool will replace it")
