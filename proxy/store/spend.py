"""The spend log: one row per LLM call, written off the request path in batches.

``SpendWriter.record()`` only appends to an in-memory queue. A background worker (a greenlet in
a gevent-patched process, a daemon thread otherwise: it is a ``threading.Thread`` either way)
wakes every ``flush_interval`` seconds, or as soon as ``max_batch`` rows wait, and writes up to
``max_batch`` rows per transaction (one ``executemany``). ``close()`` stops it and
writes whatever is left; it is also registered with ``atexit``, so a worker leaving on SIGTERM
through ``sys.exit`` writes its queue even if nothing called ``close()``.

When the queue holds ``max_queue`` rows (the database has been failing or slow for a while),
``record()`` does not push out the oldest rows. It flushes synchronously once, on the calling
request, and keeps the row if that made room. If the flush fails, it stops trying
synchronously (until a background flush succeeds again) and refuses new rows: each refused
row is counted in ``dropped`` and logged (the first, then every 1000th).

A ``request_id`` already in the table is ignored (``ON CONFLICT DO NOTHING``): re-sending a batch
whose commit outcome was unknown cannot double-count spend. A row may carry the running totals it
adds to (key, team and user spend per budget period, see ``proxy/store/keys.py``); they are added
in the same transaction as the rows, and only for rows not already there.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from proxy.store.api import StoreAPI, Transaction
from proxy.store.db import StoreError
from proxy.store.keys import Total, add_spend_totals

log = logging.getLogger(__name__)

SPEND_COLUMNS = (
    "request_id",
    "created_at",
    "model",
    "deployment_id",
    "provider",
    "api_key_hash",
    "user",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "spend",
    "status",
    "latency_ms",
    "metadata",
    "team_id",
    "key_alias",
)
_KNOWN = frozenset(SPEND_COLUMNS)
# Every column quoted: ``user`` is a reserved word in PostgreSQL.
_QUOTED = ", ".join(f'"{c}"' for c in SPEND_COLUMNS)
_INSERT = (
    f"INSERT INTO spend_logs ({_QUOTED})"
    f" VALUES ({', '.join('?' * len(SPEND_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)
_DROP_LOG_EVERY = 1000
_CLOSE_ATTEMPTS = 3


class SpendWriter:
    """Batches spend rows into ``spend_logs``; create it in the worker process, not before fork."""

    def __init__(
        self,
        store: StoreAPI,
        flush_interval: float = 0.5,
        max_batch: int = 500,
        max_queue: int = 100_000,
    ) -> None:
        if flush_interval <= 0 or max_batch < 1 or max_queue < 1:
            raise ValueError("flush_interval must be > 0, max_batch and max_queue >= 1")
        self.store = store
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        #: rows refused because the queue was full and could not be flushed
        self.dropped = 0
        #: rows committed by this writer
        self.written = 0
        self._queue: deque[tuple[tuple[Any, ...], tuple[Total, ...]]] = deque()
        self._lock = threading.Lock()  # one flusher at a time: flush() waits for a batch in flight
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._sync_flush_failed = False
        self._worker = threading.Thread(target=self._run, name="spend-writer", daemon=True)
        self._worker.start()
        atexit.register(self.close)

    def __len__(self) -> int:
        """Rows waiting to be written."""
        return len(self._queue)

    def record(self, row: Mapping[str, Any], totals: tuple[Total, ...] | list[Total] = ()) -> None:
        """Queue one spend row (and the totals it adds to); no I/O unless the queue is full (see module doc)."""
        item = (_prepare(row), tuple(totals))
        if self._closed:
            self._insert([item])  # shutting down: nothing left to batch with
            return
        if len(self._queue) >= self.max_queue and not self._make_room():
            self._drop(item)
            return
        self._queue.append(item)
        if len(self._queue) >= self.max_batch and not self._wake.is_set():
            self._wake.set()

    def flush(self, *, offload: bool | None = None) -> int:
        """Write the rows queued when called, in ``max_batch`` transactions; returns how many.

        On failure the unwritten rows go back to the front of the queue and the error is raised.
        """
        with self._lock:
            pending = len(self._queue)
            written = 0
            while written < pending and self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                try:
                    self._insert(batch, offload=offload)
                except BaseException:
                    self._queue.extendleft(reversed(batch))
                    raise
                written += len(batch)
            return written

    def close(self) -> None:
        """Stop the background worker and write everything still queued. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=self.store.timeout * 2 + self.flush_interval)
        self._closed = True  # from here on record() writes directly
        atexit.unregister(self.close)
        for attempt in range(1, _CLOSE_ATTEMPTS + 1):
            try:
                # Inline: at shutdown blocking the hub is fine, and the threadpool may be gone.
                while self._queue:
                    self.flush(offload=False)
                return
            except Exception:
                log.exception("spend log: final flush failed (attempt %d of %d)", attempt, _CLOSE_ATTEMPTS)
        log.error("spend log: %d rows could not be written at shutdown", len(self._queue))

    # -- queries -----------------------------------------------------------------------------

    def spend_logs(self, limit: int = 100, request_id: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        return spend_logs(self.store, limit=limit, request_id=request_id, **filters)

    def total_spend(self, model: str | None = None) -> float:
        return total_spend(self.store, model=model)

    # -- internals ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if not self._queue:
                continue
            try:
                self.flush()
            except StoreError as exc:  # locked, read-only, full: a known outage, one line a try
                log.warning("spend log: flush failed (%s); %d rows wait for the next try", exc, len(self._queue))
                self._stop.wait(self.flush_interval)  # do not spin while the database is failing
            except Exception:
                log.exception("spend log: flush failed; %d rows wait for the next try", len(self._queue))
                self._stop.wait(self.flush_interval)
            else:
                self._sync_flush_failed = False

    def _insert(self, batch: list[tuple[tuple[Any, ...], tuple[Total, ...]]], *, offload: bool | None = None) -> None:
        rows = [row for row, _ in batch]
        with_totals = [(row[0], totals) for row, totals in batch if totals]

        def insert(db: Transaction) -> None:
            known: set[str] = set()
            if with_totals:  # a re-sent row is ignored below; its totals must not count twice
                ids = [request_id for request_id, _ in with_totals]
                for i in range(0, len(ids), 500):
                    part = ids[i:i + 500]
                    cursor = db.execute(
                        f"SELECT request_id FROM spend_logs WHERE request_id IN ({', '.join('?' * len(part))})", part)
                    known.update(r[0] for r in cursor.fetchall())
            db.executemany(_INSERT, rows)
            add_spend_totals(db, [t for request_id, totals in with_totals if request_id not in known for t in totals])

        self.store.write(insert, offload=offload)
        self.written += len(batch)

    def _make_room(self) -> bool:
        """The queue is full: flush it on this caller once; True if there is room now."""
        if not self._sync_flush_failed:
            try:
                self.flush()
            except Exception:
                self._sync_flush_failed = True
                log.exception("spend log: queue full (%d rows); a synchronous flush failed", self.max_queue)
        return len(self._queue) < self.max_queue

    def _drop(self, item: tuple[tuple[Any, ...], tuple[Total, ...]]) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % _DROP_LOG_EVERY == 0:
            log.error(
                "spend log: queue full (%d rows), database not accepting writes; dropped %d rows so far"
                " (latest request_id=%s)",
                self.max_queue, self.dropped, item[0][0],
            )


def spend_logs(
    store: StoreAPI,
    limit: int = 100,
    request_id: str | None = None,
    *,
    api_key: str | None = None,
    user_id: str | None = None,
    team_id: str | None = None,
    model: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> list[dict[str, Any]]:
    """Newest rows first (only what has been flushed), ``metadata`` decoded, filtered on any of
    the key's hash, user, team, model group and a time range (``start`` <= created_at < ``end``).

    Each row also carries LiteLLM's names for its fields (``api_key``, ``startTime``, ``endTime``,
    ``model_group``, ``model_id``, ``end_user``), so LiteLLM's spend scripts read it unchanged.
    """
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (("request_id", request_id), ("api_key_hash", api_key), ('"user"', user_id),
                          ("team_id", team_id), ("model", model)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        conditions.append("created_at >= ?")
        params.append(start)
    if end is not None:
        conditions.append("created_at < ?")
        params.append(end)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = store.query(f"SELECT * FROM spend_logs{where} ORDER BY created_at DESC LIMIT ?", (*params, int(limit)))
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
        started = datetime.fromtimestamp(row["created_at"], UTC)
        row.update(
            api_key=row["api_key_hash"],
            startTime=started.isoformat(),
            endTime=(started + timedelta(milliseconds=row["latency_ms"] or 0)).isoformat(),
            model_group=row["model"],
            model_id=row["deployment_id"],
            end_user=row["user"],
            # kept beside the caller's metadata in the same column; shown as LiteLLM's own field
            requester_ip_address=row["metadata"].pop("requester_ip_address", None),
        )
    return rows


def total_spend(store: StoreAPI, model: str | None = None) -> float:
    """Sum of ``spend`` in USD, for one model group or all."""
    if model is None:
        value = store.query_value("SELECT COALESCE(SUM(spend), 0) FROM spend_logs")
    else:
        value = store.query_value("SELECT COALESCE(SUM(spend), 0) FROM spend_logs WHERE model = ?", (model,))
    return float(value or 0.0)


def _prepare(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Check a row on the caller (a bad row fails its call, not a whole batch) and flatten it."""
    unknown = row.keys() - _KNOWN
    if unknown:
        raise ValueError(f"unknown spend log columns: {sorted(unknown)}")
    request_id = row.get("request_id")
    if not request_id:
        raise ValueError("a spend log row needs a request_id")
    prompt = int(row.get("prompt_tokens") or 0)
    completion = int(row.get("completion_tokens") or 0)
    total = row.get("total_tokens")
    metadata = row.get("metadata")
    if not metadata:
        metadata = "{}"
    elif not isinstance(metadata, str):
        metadata = metadata_json(metadata)
    status = row.get("status")
    latency = row.get("latency_ms")
    return (
        str(request_id),
        float(row.get("created_at") or time.time()),
        str(row.get("model") or ""),
        row.get("deployment_id"),
        row.get("provider"),
        row.get("api_key_hash"),
        row.get("user"),
        prompt,
        completion,
        prompt + completion if total is None else int(total),
        float(row.get("spend") or 0.0),
        None if status is None else int(status),
        None if latency is None else float(latency),
        metadata,
        row.get("team_id"),
        row.get("key_alias"),
    )


def metadata_json(metadata: Any) -> str:
    """A row's metadata as JSON text: orjson on the hot path, the standard library for what
    orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(metadata, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(metadata, default=str)
