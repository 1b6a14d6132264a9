"""Both backends: schema and migrations, pool, lock waits and retries, gevent, several processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from proxy.store import SCHEMA_VERSION, ModelStore, Store, StoreAPI, StoreBusy, connect, migrations
from tests.store.conftest import Backend

REPO = Path(__file__).resolve().parents[2]


def make_v1_database(backend: Backend, rows: int = 2) -> None:
    """A database as the first release left it: the models table only, schema version 1."""
    conn = backend.raw()
    if backend.sqlite:
        conn.execute(migrations.MIGRATIONS[0].statements_for("sqlite")[0])
        insert = "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)"
    else:
        conn.execute(migrations.MIGRATIONS[0].statements_for("postgresql")[0])
        conn.execute("CREATE TABLE llmrelay_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
        conn.execute("INSERT INTO llmrelay_schema VALUES (1, 0)")
        insert = "INSERT INTO models VALUES (%s, %s, %s, %s, %s, %s)"
    for i in range(rows):
        params = {"model": f"azure/gpt-{i}", "api_key": "os.environ/AZURE_API_KEY"}
        conn.execute(insert, (f"m{i}", f"gpt-{i}", json.dumps(params), json.dumps({"note": i}), 100.0 + i, 100.0 + i))
    conn.close()
    backend.set_schema_version(1)


# -- opening ---------------------------------------------------------------------------------


def test_new_database_gets_schema_and_settings(backend: Backend, tmp_path: Path) -> None:
    # SQLite: the file's parent directories are created.
    target = str(tmp_path / "nested" / "dir" / "relay.db") if backend.sqlite else backend.target
    store = backend.open(target, timeout=1.5)
    assert store.schema_version == SCHEMA_VERSION
    assert {"models", "store_meta", "spend_logs"} <= backend.tables(store)
    assert {"version", "deleted"} <= backend.columns(store, "models")
    assert "user" in backend.columns(store, "spend_logs")
    if backend.sqlite:
        assert Path(target).exists()
        assert store.journal_mode == "wal"
        assert store.query_value("PRAGMA synchronous") == 1  # NORMAL
        assert store.query_value("PRAGMA busy_timeout") == 1500
    else:
        assert store.query_value("SHOW lock_timeout") == "1500ms"
        assert "llmrelay_schema" in backend.tables(store)
        # 8-byte floats: epoch seconds keep their sub-millisecond part.
        assert store.query_value(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'models' AND column_name = 'created_at'"
        ) == "double precision"


def test_rejects_bad_options(backend: Backend) -> None:
    with pytest.raises(ValueError):
        backend.open(pool_limit=0)
    with pytest.raises(ValueError):
        backend.open(timeout=-1)


def test_migrates_v1_database_and_keeps_its_rows(backend: Backend) -> None:
    make_v1_database(backend)
    store = backend.open()
    assert store.schema_version == SCHEMA_VERSION
    assert {"version", "deleted"} <= backend.columns(store, "models")
    assert "request_id" in backend.columns(store, "spend_logs")
    models = ModelStore(store)
    rows = models.list()
    assert [r["id"] for r in rows] == ["m0", "m1"]
    assert rows[0]["litellm_params"] == {"model": "azure/gpt-0", "api_key": "os.environ/AZURE_API_KEY"}
    assert rows[0]["model_info"] == {"note": 0}
    assert (rows[0]["version"], rows[0]["deleted"]) == (1, False)
    assert models.models_version() == 2  # starts above zero when rows exist
    models.update("m0", litellm_params={"rpm": 10})
    assert models.get("m0")["version"] == 2  # type: ignore[index]


def test_failed_migration_leaves_the_database_as_it_was(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.open().close()
    bad = migrations.Migration("bad", ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, bad))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(backend.error):
        backend.open()
    monkeypatch.undo()
    store = backend.open()
    assert store.schema_version == SCHEMA_VERSION
    assert "half_done" not in backend.tables(store)


def test_migration_step_uses_its_dialect_statements(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.open().close()
    step = migrations.Migration(
        "dialects",
        ("CREATE TABLE only_sqlite (x REAL)",),
        {"postgresql": ("CREATE TABLE only_postgresql (x DOUBLE PRECISION)",)},
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, step))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    store = backend.open()
    assert store.schema_version == SCHEMA_VERSION + 1
    tables = backend.tables(store)
    assert ("only_sqlite" in tables) == backend.sqlite
    assert ("only_postgresql" in tables) == (not backend.sqlite)


def test_database_from_a_newer_release_is_used_as_is(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    backend.open().close()
    backend.set_schema_version(SCHEMA_VERSION + 5)
    with caplog.at_level(logging.WARNING, logger="proxy.store"):
        store = backend.open()
    assert store.schema_version == SCHEMA_VERSION + 5
    assert ModelStore(store).add("m", {"model": "openai/m"})["version"] == 1
    assert "newer than this release" in caplog.text


# -- locking ---------------------------------------------------------------------------------


def test_lock_timeout_is_honoured(backend: Backend) -> None:
    store = backend.open(timeout=0.3)
    holder = backend.hold_write_lock()
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="locked"):
            ModelStore(store).add("m", {"model": "openai/m"})
        waited = time.monotonic() - started
        assert 0.25 <= waited < 1.5
    finally:
        holder.execute("COMMIT")
    # A lock released within the timeout is simply waited for.
    holder = backend.hold_write_lock()
    threading.Timer(0.1, holder.execute, ("COMMIT",)).start()
    assert ModelStore(store).add("m", {"model": "openai/m"})["model_name"] == "m"


def test_reads_do_not_wait_for_the_writer(store: StoreAPI, backend: Backend) -> None:
    ModelStore(store).add("m", {"model": "openai/m"})
    holder = backend.hold_write_lock()
    holder.execute("DELETE FROM models")  # uncommitted: readers still see the row
    try:
        started = time.monotonic()
        assert len(ModelStore(store).list()) == 1
        assert time.monotonic() - started < 0.2
    finally:
        holder.execute("ROLLBACK")


def test_write_retries_a_contention_error(store: StoreAPI, backend: Backend) -> None:
    calls = []

    def flaky(db: Any) -> str:
        calls.append(1)
        db.execute("INSERT INTO store_meta (key, value) VALUES (?, ?)", (f"attempt-{len(calls)}", 1))
        if len(calls) < 3:
            raise backend.retryable_error()
        db.execute("INSERT INTO store_meta (key, value) VALUES ('x', 1)")
        return "done"

    assert store.write(flaky) == "done"
    assert len(calls) == 3
    assert store.query_value("SELECT value FROM store_meta WHERE key = 'x'") == 1
    # Each failed attempt was rolled back whole.
    assert [r["key"] for r in store.query("SELECT key FROM store_meta WHERE key LIKE 'attempt-%'")] == ["attempt-3"]


def test_write_rolls_back_on_error(store: StoreAPI) -> None:
    def broken(db: Any) -> None:
        db.execute("INSERT INTO store_meta (key, value) VALUES ('y', 1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write(broken)
    assert store.query_value("SELECT value FROM store_meta WHERE key = 'y'") is None


def test_transaction_api(store: StoreAPI) -> None:
    """What every module on top of the store relies on (see proxy/store/__init__)."""

    def fill(db: Any) -> tuple[int, Any, list[Any], int]:
        many = db.executemany("INSERT INTO store_meta (key, value) VALUES (?, ?)", [(f"k{i}", i) for i in range(5)])
        cursor = db.execute("SELECT key, value FROM store_meta WHERE key LIKE ? ORDER BY key", ("k_",))
        first = cursor.fetchone()
        rest = cursor.fetchall()
        updated = db.execute("UPDATE store_meta SET value = value + 10 WHERE key IN (?, ?)", ("k1", "k2")).rowcount
        return many.rowcount, first, rest, updated

    rowcount, first, rest, updated = store.write(fill)
    assert rowcount == 5
    assert tuple(first) == ("k0", 0)
    assert [tuple(r) for r in rest] == [("k1", 1), ("k2", 2), ("k3", 3), ("k4", 4)]
    assert updated == 2
    # Upsert, portable form; a "?" and a "%" inside a literal are left alone.
    bump = ("INSERT INTO store_meta (key, value) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = store_meta.value + excluded.value")
    store.write(lambda db: db.execute(bump, ("k4",)))
    store.write(lambda db: db.execute(bump, ("new",)))
    assert store.query_value("SELECT value FROM store_meta WHERE key = ?", ("k4",)) == 5
    assert store.query_value("SELECT value FROM store_meta WHERE key = ?", ("new",)) == 1
    assert store.query("SELECT '?' AS q, '100%' AS p, key FROM store_meta WHERE key = ?", ("new",)) == [
        {"q": "?", "p": "100%", "key": "new"}
    ]
    assert store.query_value("SELECT value FROM store_meta WHERE key = ?", ("absent",)) is None
    assert store.query_value("SELECT '100%'") == "100%"  # no params at all
    assert store.write(lambda db: db.execute("SELECT '5%', '?'").fetchone()) == ("5%", "?")

    def snapshot(db: Any) -> tuple[int, int]:
        return (db.execute("SELECT COUNT(*) FROM store_meta").fetchone()[0],
                db.execute("SELECT COALESCE(SUM(value), 0) FROM store_meta WHERE key LIKE 'k_'").fetchone()[0])

    assert store.read(snapshot) == (len(store.query("SELECT key FROM store_meta")), 0 + 11 + 12 + 3 + 5)


def test_pool_limit_bounds_connections(backend: Backend) -> None:
    store = backend.open(pool_limit=2, timeout=0.5)
    inside = threading.Barrier(3)
    release = threading.Event()

    def hold(db: Any) -> None:
        inside.wait()
        release.wait(5)

    threads = [threading.Thread(target=store.read, args=(hold,)) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    try:
        with pytest.raises(StoreBusy, match="no free connection"):
            store.query_value("SELECT 1")
    finally:
        release.set()
        for t in threads:
            t.join()
    assert store.query_value("SELECT 1") == 1


def test_pool_waits_for_a_returned_connection(backend: Backend) -> None:
    store = backend.open(pool_limit=2, timeout=5.0)
    models = ModelStore(store)
    failures: list[BaseException] = []

    def hammer(worker: int) -> None:
        try:
            for i in range(100):
                if i % 25 == 0:
                    models.add(f"t{worker}", {"model": "openai/t"})
                assert store.query_value("SELECT 1") == 1
                models.list()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    assert 1 <= store.connections_open <= 2
    assert len(models.list()) == 24
    assert models.models_version() == 24  # every write counted once, retries included
    store.close()
    assert store.connections_open == 0


def test_interrupted_write_gives_its_connection_back(backend: Backend) -> None:
    if not backend.sqlite:
        # psycopg waits cooperatively only in a patched process: run it in one.
        result = run_probe(backend.target, "--interrupt")
        assert result["timed_out"] is True
        # The connection busy with the killed statement was dropped, not reused; the server
        # rolled its transaction back, so (unlike SQLite) the late write did not happen.
        assert result["models"] == ["after"]
        assert result["connections_open"] <= 1
        return
    store = Store(backend.target, pool_limit=1, timeout=2.0, offload=True)
    models = ModelStore(store)
    holder = backend.hold_write_lock()
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.1):
        models.add("late", {"model": "openai/late"})
    assert not store._idle  # the thread still waits on the lock with the only connection
    holder.execute("COMMIT")
    deadline = time.monotonic() + 3
    while not store._idle and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert store._idle
    # The interrupted write still happened: a timeout does not cancel a write in flight.
    assert [m["model_name"] for m in models.list()] == ["late"]
    store.close()


def run_probe(target: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.store.gevent_probe", target, *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_under_gevent_a_database_wait_does_not_stall_the_hub(backend: Backend) -> None:
    if backend.sqlite:
        result = run_probe(backend.target)
        assert result["offload"] is True
        assert result["waited_ms"] >= 250  # the write really waited for the other connection
        assert result["max_hub_gap_ms"] < 100
        assert result["spend_rows"] == 300
        return
    # psycopg picks its wait function when first imported: patched first (as gunicorn's worker
    # and the llmrelay command do) and imported first (the store switches it) must both yield.
    for order in ([], ["--early-import"]):
        result = run_probe(backend.target, *order)
        assert result["wait_func"] != "wait_c", order  # psycopg's C wait does not yield to gevent
        assert result["waited_ms"] >= 250, order
        assert result["sleep_ms"] >= 490, order  # pg_sleep(0.5) really ran...
        # ...while the ticker kept its 10 ms beat (a blocking wait stalls it ~500 ms; the margin
        # is for a loaded machine descheduling the probe)
        assert result["max_hub_gap_ms"] < 200, order
        assert result["two_sleeps_ms"] < 450, order  # two pg_sleep(0.3) in two greenlets overlap
        assert result["spend_rows"] == 300, order
        backend.open().write(lambda db: (db.execute("DELETE FROM models"), db.execute("DELETE FROM spend_logs")))


# -- several processes -----------------------------------------------------------------------


def _add_models(target: str, worker: int, count: int, start: Any, errors: Any) -> None:
    try:
        store = connect(target, offload=False)  # the database may be new: creation races too
        models = ModelStore(store)
        start.wait(10)
        for i in range(count):
            models.add(f"w{worker}", {"model": f"openai/m{i}"}, model_id=f"w{worker}-{i}")
            if i % 10 == 0:
                models.update(f"w{worker}-{i}", model_info={"touched": True})
        store.close()
    except BaseException as exc:
        errors.put(f"worker {worker}: {exc!r}")
        raise


def _open_only(target: str, start: Any, errors: Any) -> None:
    try:
        start.wait(10)
        connect(target, offload=False).close()
    except BaseException as exc:
        errors.put(repr(exc))
        raise


def _run_processes(target: Any, args_for: list[tuple[Any, ...]]) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, errors)) for args in args_for]
    for p in procs:
        p.start()
    time.sleep(0.05)
    start.set()
    for p in procs:
        p.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    found += [f"exit code {p.exitcode}" for p in procs if p.exitcode != 0]
    return found


def test_concurrent_writers_in_several_processes(backend: Backend) -> None:
    workers, per_worker = 4, 40
    errors = _run_processes(_add_models, [(backend.target, w, per_worker) for w in range(workers)])
    assert errors == []
    models = ModelStore(backend.open())
    rows = models.list()
    assert len(rows) == workers * per_worker
    assert len({r["id"] for r in rows}) == workers * per_worker
    updates = workers * len(range(0, per_worker, 10))
    assert models.models_version() == workers * per_worker + updates
    assert sum(r["model_info"] == {"touched": True} for r in rows) == updates


def test_concurrent_opens_migrate_an_old_database_once(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    make_v1_database(backend, rows=3)
    errors = _run_processes(_open_only, [(backend.target,)] * 4)
    assert errors == []
    store = backend.open()
    assert store.schema_version == SCHEMA_VERSION
    assert [r["id"] for r in ModelStore(store).list()] == ["m0", "m1", "m2"]
    assert ModelStore(store).models_version() == 3  # step 2 ran once: its INSERT would fail twice


def test_a_database_that_refuses_writes_is_store_unavailable(tmp_path: Path) -> None:
    """SQLite's read-only / full / I/O result codes become StoreUnavailable (the app's 503);
    other errors stay as the driver raised them."""
    import sqlite3

    from proxy.store import StoreUnavailable

    with Store(tmp_path / "ro.db", pool_limit=1, offload=False) as store:
        def refused(tx: Any) -> None:
            tx.execute("PRAGMA query_only = ON")  # the connection now answers SQLITE_READONLY to writes
            tx.execute("CREATE TABLE scratch (x)")

        with pytest.raises(StoreUnavailable, match="readonly") as caught:
            store.write(refused)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with Store(tmp_path / "rw.db", pool_limit=1, offload=False) as store, \
            pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.write(lambda tx: tx.execute("INSERT INTO nowhere VALUES (1)"))
