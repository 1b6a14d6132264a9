"""Store: pragmas, pool, busy handling, migrations, several processes on one file."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from proxy.store import SCHEMA_VERSION, ModelStore, Store, StoreBusy
from proxy.store import db as store_db

REPO = Path(__file__).resolve().parents[2]

V1_MODELS = """CREATE TABLE models (
    id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    litellm_params TEXT NOT NULL,
    model_info TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)"""


def make_v1_file(path: Path, rows: int = 2) -> None:
    """A file as the first release left it: the models table only, user_version 1."""
    conn = sqlite3.connect(path)
    conn.execute(V1_MODELS)
    for i in range(rows):
        params = {"model": f"azure/gpt-{i}", "api_key": "os.environ/AZURE_API_KEY"}
        conn.execute(
            "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)",
            (f"m{i}", f"gpt-{i}", json.dumps(params), json.dumps({"note": i}), 100.0 + i, 100.0 + i),
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def tables(store: Store) -> set[str]:
    return {row["name"] for row in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


def columns(store: Store, table: str) -> set[str]:
    return {row["name"] for row in store.query(f"PRAGMA table_info({table})")}


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A second connection that holds the write lock until it commits."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


# -- opening ---------------------------------------------------------------------------------


def test_new_file_gets_wal_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "relay.db"  # parent directories are created
    with Store(path, timeout=1.5) as store:
        assert path.exists()
        assert store.journal_mode == "wal"
        assert store.schema_version == SCHEMA_VERSION
        assert store.query_value("PRAGMA synchronous") == 1  # NORMAL
        assert store.query_value("PRAGMA busy_timeout") == 1500
        assert {"models", "store_meta", "spend_logs"} <= tables(store)
        assert {"version", "deleted"} <= columns(store, "models")


def test_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store(tmp_path / "a.db", pool_limit=0)
    with pytest.raises(ValueError):
        Store(tmp_path / "a.db", timeout=-1)


def test_migrates_v1_file_and_keeps_its_rows(db_path: Path) -> None:
    make_v1_file(db_path)
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert {"version", "deleted"} <= columns(store, "models")
        assert "request_id" in columns(store, "spend_logs")
        models = ModelStore(store)
        rows = models.list()
        assert [r["id"] for r in rows] == ["m0", "m1"]
        assert rows[0]["litellm_params"] == {"model": "azure/gpt-0", "api_key": "os.environ/AZURE_API_KEY"}
        assert rows[0]["model_info"] == {"note": 0}
        assert (rows[0]["version"], rows[0]["deleted"]) == (1, False)
        assert models.models_version() == 2  # starts above zero when rows exist
        models.update("m0", litellm_params={"rpm": 10})
        assert models.get("m0")["version"] == 2  # type: ignore[index]


def test_failed_migration_leaves_the_file_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_path).close()
    bad = store_db.Migration("bad", ("CREATE TABLE half_done (x)", "THIS IS NOT SQL"))
    monkeypatch.setattr(store_db, "MIGRATIONS", (*store_db.MIGRATIONS, bad))
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError):
        Store(db_path)
    monkeypatch.undo()
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert "half_done" not in tables(store)


def test_file_from_a_newer_release_is_used_as_is(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="proxy.store.db"), Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION + 5
        assert ModelStore(store).add("m", {"model": "openai/m"})["version"] == 1
    assert "newer than this release" in caplog.text


# -- locking ---------------------------------------------------------------------------------


def test_busy_timeout_is_honoured(db_path: Path) -> None:
    store = Store(db_path, timeout=0.3)
    holder = hold_write_lock(db_path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="locked"):
            ModelStore(store).add("m", {"model": "openai/m"})
        waited = time.monotonic() - started
        assert 0.25 <= waited < 1.5
    finally:
        holder.execute("COMMIT")
        holder.close()
    # A lock released within the timeout is simply waited for.
    holder = hold_write_lock(db_path)
    threading.Timer(0.1, holder.execute, ("COMMIT",)).start()
    assert ModelStore(store).add("m", {"model": "openai/m"})["model_name"] == "m"
    holder.close()
    store.close()


def test_reads_do_not_wait_for_the_writer(store: Store, db_path: Path) -> None:
    ModelStore(store).add("m", {"model": "openai/m"})
    holder = hold_write_lock(db_path)
    holder.execute("DELETE FROM models")  # uncommitted: readers still see the row
    try:
        started = time.monotonic()
        assert len(ModelStore(store).list()) == 1
        assert time.monotonic() - started < 0.2
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_write_retries_a_locked_error(store: Store) -> None:
    calls = []

    def flaky(db: Any) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        db.execute("INSERT INTO store_meta (key, value) VALUES ('x', 1)")
        return "done"

    assert store.write(flaky) == "done"
    assert len(calls) == 3
    assert store.query_value("SELECT value FROM store_meta WHERE key = 'x'") == 1


def test_write_rolls_back_on_error(store: Store) -> None:
    def broken(db: Any) -> None:
        db.execute("INSERT INTO store_meta (key, value) VALUES ('y', 1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write(broken)
    assert store.query_value("SELECT value FROM store_meta WHERE key = 'y'") is None


def test_pool_limit_bounds_connections(db_path: Path) -> None:
    store = Store(db_path, pool_limit=2, timeout=0.2)
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
    store.close()


def test_pool_waits_for_a_returned_connection(db_path: Path) -> None:
    store = Store(db_path, pool_limit=2, timeout=5.0)
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
    assert store._opened <= 2
    assert len(models.list()) == 24
    store.close()
    assert store._opened == 0


def test_offloaded_write_interrupted_keeps_its_connection_until_done(db_path: Path) -> None:
    store = Store(db_path, pool_limit=1, timeout=2.0, offload=True)
    models = ModelStore(store)
    holder = hold_write_lock(db_path)
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.1):
        models.add("late", {"model": "openai/late"})
    assert not store._idle  # the thread still waits on the lock with the only connection
    holder.execute("COMMIT")
    holder.close()
    deadline = time.monotonic() + 3
    while not store._idle and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert store._idle
    # The interrupted write still happened: a timeout does not cancel a write in flight.
    assert [m["model_name"] for m in models.list()] == ["late"]
    store.close()


def test_under_gevent_a_lock_wait_does_not_stall_the_hub(db_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.store.gevent_probe", str(db_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["offload"] is True
    assert result["waited_ms"] >= 250  # the write really waited for the other connection
    assert result["max_hub_gap_ms"] < 100
    assert result["spend_rows"] == 300


# -- several processes -----------------------------------------------------------------------


def _add_models(path: str, worker: int, count: int, start: Any, errors: Any) -> None:
    try:
        store = Store(path, offload=False)  # the file may not exist yet: creation races too
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


def _open_only(path: str, start: Any, errors: Any) -> None:
    try:
        start.wait(10)
        Store(path, offload=False).close()
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
        p.join(30)
    found = []
    while not errors.empty():
        found.append(errors.get())
    found += [f"exit code {p.exitcode}" for p in procs if p.exitcode != 0]
    return found


def test_concurrent_writers_in_several_processes(db_path: Path) -> None:
    workers, per_worker = 4, 40
    errors = _run_processes(_add_models, [(str(db_path), w, per_worker) for w in range(workers)])
    assert errors == []
    with Store(db_path) as store:
        models = ModelStore(store)
        rows = models.list()
        assert len(rows) == workers * per_worker
        assert len({r["id"] for r in rows}) == workers * per_worker
        updates = workers * len(range(0, per_worker, 10))
        assert models.models_version() == workers * per_worker + updates
        assert sum(r["model_info"] == {"touched": True} for r in rows) == updates


def test_concurrent_opens_migrate_an_old_file_once(db_path: Path) -> None:
    make_v1_file(db_path, rows=3)
    errors = _run_processes(_open_only, [(str(db_path),)] * 4)
    assert errors == []
    with Store(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [r["id"] for r in ModelStore(store).list()] == ["m0", "m1", "m2"]
