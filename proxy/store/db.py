"""The SQLite backend of ``proxy/store`` (its schema history is ``migrations.py``).

Every gunicorn worker on a host opens the same file, so everything here is written for several
processes at once:

- WAL journal: readers never wait for the writer and the writer never waits for readers.
  ``synchronous=NORMAL`` makes a commit cost no fsync: a commit survives a process crash; a
  power loss can undo the commits made since the last checkpoint.
- A write is one short ``BEGIN IMMEDIATE`` transaction. Taking the write lock up front means a
  transaction never fails half-way with SQLITE_BUSY_SNAPSHOT because another process wrote
  between its read and its write. Waiting for the lock is SQLite's ``busy_timeout``; a
  ``database is locked`` that still escapes (WAL recovery, journal-mode change) is retried with
  backoff until ``timeout`` has passed, then raised as ``StoreBusy``.
- Migrations run at open, one transaction each under the write lock, re-reading
  ``PRAGMA user_version`` after taking it: when several workers open an old file at once, one
  applies each step and the others see it done. (sqlite-utils' ``Migrations`` reads what is
  pending before its transaction starts, so two workers could both apply a step.)

gevent: SQLite calls are C calls that do not yield, and a write may sit in SQLite's busy
handler for up to ``timeout`` seconds while another worker holds the lock; inline, that freezes
every greenlet of the worker. So when ``threading`` is monkey-patched, writes run in the hub's
threadpool and the calling greenlet waits cooperatively; reads run inline, because a WAL reader
does not wait for locks and a read costs less than the hand-off. Measured on the 2-core dev
machine in a patched process (``python -m tests.store.bench_store``):

    threadpool hand-off                       ~50 µs
    add() / update(), inline | offloaded      ~110 µs | ~250 µs
    add() while another process holds the     hub stalled 300 ms | longest stall ~5 ms
      write lock for 300 ms, inline | offl.
    500-row spend flush, inline | offloaded   ~8 ms, hub stalled as long | ~13 ms, stall ~3-6 ms
    models_version() poll (one SELECT)        ~6 µs; get() ~20 µs

Writes are admin calls and batched spend flushes, so ~150 µs more per write buys a hub that
never waits on another process. ``offload=False`` (or a process without gevent) runs all inline.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from proxy.store import migrations

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(Exception):
    """Base of the errors this package raises on purpose."""


class StoreBusy(StoreError):
    """The database stayed locked, or no pooled connection came free, for ``timeout`` seconds."""


class StoreUnavailable(StoreError):
    """The database refuses the operation for a reason outside the proxy: its file went
    read-only, the disk is full, an I/O error. Nothing to retry at once; it may pass."""


#: SQLite's primary result codes (``sqlite_errorcode & 0xFF``) of a database that refuses work.
_UNAVAILABLE_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
                                sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})


def is_unavailable(exc: sqlite3.OperationalError) -> bool:
    """A read-only, full or failing database file (``StoreUnavailable``), by SQLite's result code."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNAVAILABLE_CODES


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED surface as OperationalError with these messages."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def gevent_patched() -> bool:
    """True inside a gevent-patched process (gunicorn's gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("threading"))


def _native_sleep() -> Callable[[float], None]:
    """``time.sleep`` as it was before monkey-patching: the threadpool's threads have no hub."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return time.sleep
    return monkey.get_original("time", "sleep")  # type: ignore[no-any-return]


def _captured(fn: Callable[..., T], *args: Any) -> tuple[T | None, BaseException | None]:
    """``fn(*args)`` as ``(result, None)``, or ``(None, error)`` if it raised."""
    try:
        return fn(*args), None
    except Exception as exc:
        return None, exc


class SqliteTransaction:
    """What ``write``/``read`` hand to their function: the common ``execute``/``executemany``."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, seq_of_params)


class Store:
    """One SQLite file: a small connection pool, short transactions, schema kept current.

    ``pool_limit`` is LiteLLM's ``database_connection_pool_limit``; ``timeout`` (seconds) is its
    ``database_connection_timeout`` and bounds both the wait for a lock and for a free pooled
    connection. ``offload`` runs writes in gevent's threadpool; ``None`` decides by whether the
    process is monkey-patched.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        pool_limit: int = 10,
        timeout: float = 5.0,
        offload: bool | None = None,
    ) -> None:
        if pool_limit < 1:
            raise ValueError(f"pool_limit must be at least 1, got {pool_limit}")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout}")
        self.path = Path(path)
        self.pool_limit = pool_limit
        self.timeout = float(timeout)
        self.offload = gevent_patched() if offload is None else offload
        # Pool: idle connections (LIFO, so the warmest is reused) plus a count of all opened.
        # Taking an idle one is a lock-free deque pop; the condition is only for opening a new
        # one and for waiting when all ``pool_limit`` are in use.
        self._idle: deque[Database] = deque()
        self._opened = 0
        self._waiting = 0
        self._returned = threading.Condition(threading.Lock())
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, pool_limit={self.pool_limit}, timeout={self.timeout})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public operations -------------------------------------------------------------------

    def write(self, fn: Callable[[SqliteTransaction], T], *, offload: bool | None = None) -> T:
        """Run ``fn(db)`` in one ``BEGIN IMMEDIATE`` transaction; retried whole on a busy lock.

        ``fn`` may therefore run more than once: it must only touch the database.
        """
        return self._run(lambda db, sleep: self._transaction(db, fn, "BEGIN IMMEDIATE", sleep), offload)

    def read(self, fn: Callable[[SqliteTransaction], T], *, offload: bool = False) -> T:
        """Run ``fn(db)`` in one read transaction, so several SELECTs see one snapshot."""
        return self._run(lambda db, sleep: self._transaction(db, fn, "BEGIN", sleep), offload)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """All rows of one read statement, as dicts; inline, no explicit transaction."""

        def rows(db: Database, sleep: Callable[[float], None]) -> list[dict[str, Any]]:
            def attempt() -> list[dict[str, Any]]:
                cursor = db.conn.execute(sql, params)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

            return self._retrying(attempt, sleep)

        return self._run(rows, False)

    def query_value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """First column of the first row of one statement, or None: the cheapest read there is.

        Written out flat (no closures) because ``models_version()`` polls through it.
        """
        db = self._checkout()
        try:
            try:
                row = db.conn.execute(sql, params).fetchone()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    if is_unavailable(exc):
                        raise StoreUnavailable(f"{self.path}: {exc}") from exc
                    raise
                row = self._retrying(lambda: db.conn.execute(sql, params).fetchone(), time.sleep)
            return None if row is None else row[0]
        finally:
            self._checkin(db)

    @property
    def schema_version(self) -> int:
        return int(self.query_value("PRAGMA user_version"))

    @property
    def connections_open(self) -> int:
        """Connections the pool holds now, in use or idle."""
        return self._opened

    @property
    def journal_mode(self) -> str:
        return str(self.query_value("PRAGMA journal_mode"))

    def close(self) -> None:
        """Close idle connections now; a connection still in use is closed when handed back."""
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())

    # -- pool --------------------------------------------------------------------------------

    def _run(self, fn: Callable[[Database, Callable[[float], None]], T], offload: bool | None) -> T:
        """Check a connection out, run ``fn(db, sleep)`` inline or in the threadpool, hand it back.

        ``sleep`` is the one that suits where ``fn`` runs: gevent's inline, the OS's in a thread.
        """
        if offload is None:
            offload = self.offload
        db = self._checkout()
        if not offload:
            try:
                return fn(db, time.sleep)
            finally:
                self._checkin(db)
        import gevent

        # The thread hands an error back as a value: raised in the thread, gevent would also
        # print its traceback to stderr, for an error the caller handles (a full disk, a lock).
        task = gevent.get_hub().threadpool.spawn(_captured, fn, db, _native_sleep())
        try:
            result, error = task.get()
            if error is not None:
                raise error
        except BaseException:
            if task.ready():
                self._checkin(db)
            else:
                # The greenlet was killed or timed out while the thread still uses the
                # connection: hand it back only when the thread is done with it.
                task.rawlink(lambda _task: self._checkin(db))
            raise
        self._checkin(db)
        return result  # type: ignore[return-value]  # None only together with an error

    def _checkout(self) -> Database:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        try:
            return self._idle.pop()
        except IndexError:
            return self._checkout_slow()

    def _checkout_slow(self) -> Database:
        """No idle connection: open one if under ``pool_limit``, else wait for one to come back."""
        deadline = time.monotonic() + self.timeout
        with self._returned:
            # Count ourselves as waiting before looking, so a _checkin that appends after our
            # look is certain to see us and notify.
            self._waiting += 1
            try:
                while True:
                    try:
                        return self._idle.pop()
                    except IndexError:
                        pass
                    if self._opened < self.pool_limit:
                        self._opened += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StoreBusy(f"no free connection to {self.path} within {self.timeout}s")
                    self._returned.wait(remaining)
            finally:
                self._waiting -= 1
        try:
            return self._connect()  # outside the lock: opening may wait on a busy file
        except BaseException:
            self._forget()
            raise

    def _checkin(self, db: Database) -> None:
        try:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("dropping a pooled connection to %s that could not roll back", self.path)
            self._discard(db)
            return
        if self._closed:
            self._discard(db)
            return
        self._idle.append(db)
        if self._waiting:
            with self._returned:
                self._returned.notify()

    def _discard(self, db: Database) -> None:
        with contextlib.suppress(sqlite3.Error):
            db.close()
        self._forget()

    def _forget(self) -> None:
        """One opened connection fewer: a waiter may open a new one."""
        with self._returned:
            self._opened -= 1
            self._returned.notify()

    def _connect(self) -> Database:
        """A new connection with the pragmas every connection needs (journal mode is per file)."""
        conn = sqlite3.connect(
            str(self.path),
            timeout=self.timeout,  # sqlite3_busy_timeout: PRAGMA busy_timeout reads it back
            isolation_level=None,  # autocommit; transactions are explicit BEGIN ... COMMIT
            check_same_thread=False,  # used from the hub and from threadpool threads
        )
        try:
            mode = self._retrying(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0], time.sleep)
            if str(mode).lower() != "wal":
                log.warning("SQLite file %s stays in journal_mode=%s, not WAL", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            return Database(conn, execute_plugins=False)
        except BaseException:
            conn.close()
            raise

    # -- transactions ------------------------------------------------------------------------

    def _transaction(
        self, db: Database, fn: Callable[[SqliteTransaction], T], begin: str, sleep: Callable[[float], None]
    ) -> T:
        def attempt() -> T:
            conn = db.conn
            conn.execute(begin)
            try:
                result = fn(SqliteTransaction(conn))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retrying(attempt, sleep)

    def _retrying(self, attempt: Callable[[], T], sleep: Callable[[float], None]) -> T:
        """Repeat ``attempt`` on a busy error, with jittered backoff, until ``timeout`` is spent."""
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    if is_unavailable(exc):
                        raise StoreUnavailable(f"{self.path}: {exc}") from exc
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusy(f"{self.path}: {exc} (gave up after {self.timeout}s)") from exc
            sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.1)

    # -- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one migration per transaction."""
        current = self.schema_version
        if current > migrations.SCHEMA_VERSION:
            log.warning(
                "%s has schema version %d, newer than this release's %d; using it as is",
                self.path, current, migrations.SCHEMA_VERSION,
            )
            return
        while current < migrations.SCHEMA_VERSION:
            current, applied = self.write(self._migrate_one, offload=False)
            if applied:
                log.info("%s: applied schema migration %d (%s)", self.path, current, applied)

    @staticmethod
    def _migrate_one(tx: SqliteTransaction) -> tuple[int, str | None]:
        """Apply the next migration, if any is still due once the write lock is held."""
        # Re-read under the lock: another worker may have migrated since we looked.
        version = int(tx.execute("PRAGMA user_version").fetchone()[0])
        if version >= migrations.SCHEMA_VERSION:
            return version, None
        step = migrations.MIGRATIONS[version]
        for statement in step.statements_for(Store.dialect):
            tx.execute(statement)
        tx.execute(f"PRAGMA user_version = {version + 1}")
        return version + 1, step.name
