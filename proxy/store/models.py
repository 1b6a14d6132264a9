"""Models added at runtime (``/model/new``, ``/model/update``, ``/model/delete``), kept in the store.

``litellm_params`` and ``model_info`` are stored as given: an ``"os.environ/AZURE_API_KEY"``
value stays that string here and is resolved when the router loads the row, so a rotated
secret needs no database edit.

Versions. Every row carries ``version``, raised by one on each add, update and delete, and the
file carries one change counter, ``models_version()``, raised in the same transaction as any
change. A worker polls the counter (one indexed SELECT, ~6 µs) and reloads only when it moved.

Deletes leave a tombstone: the row stays with ``deleted = 1``, a higher version and its params
and info emptied (they may hold raw keys). Tombstones are what lets hosts mirror each other:

- ``upsert(row)`` applies a row received from another host only if it is newer, by the order
  ``(version, deleted, updated_at, content digest)``. Every host orders any two versions of a
  row the same way, so hosts converge whatever order the messages arrive in; a late upsert of
  version 3 cannot bring back a model whose tombstone is version 4; at an equal version a
  delete beats an edit; re-applying a row already held changes nothing.
- ``add()`` with the id of a tombstone is a deliberate re-add: the new row's version is one
  above the tombstone's, so it wins everywhere.
- ``purge_tombstones(older_than)`` removes tombstones once every host must have seen them; a
  row older than a purged tombstone that still arrives afterwards would be applied, so pick
  ``older_than`` well above the slowest sync lag.

``replace_all(rows)`` is the exception to the version rule: it makes the table exactly the given
snapshot (bootstrapping a host, restoring a backup). To fold a snapshot into local rows instead,
use ``upsert_many(rows)``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.store.api import StoreAPI, Transaction, rows
from proxy.store.db import StoreError

_COLUMNS = (
    "id", "model_name", "litellm_params", "model_info", "created_at", "updated_at", "version", "deleted",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM models"
_UPSERT = (
    f"INSERT INTO models ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS[1:])}"
)
_BUMP = "UPDATE store_meta SET value = value + 1 WHERE key = 'models_version'"
_VERSION = "SELECT value FROM store_meta WHERE key = 'models_version'"


class ModelNotFound(StoreError, LookupError):
    """No live model has this id."""


class ModelExists(StoreError, ValueError):
    """A live model already has this id."""


class ModelStore:
    """Runtime models on a ``Store``; every method is one short transaction."""

    def __init__(self, store: StoreAPI) -> None:
        self.store = store

    # -- local edits -------------------------------------------------------------------------

    def add(
        self,
        model_name: str,
        litellm_params: Mapping[str, Any],
        model_info: Mapping[str, Any] | None = None,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a new model; the id is ``model_id``, else ``model_info["id"]``, else a uuid4 hex."""
        info = dict(model_info or {})
        model_id = str(model_id or info.get("id") or uuid.uuid4().hex)
        if "id" in info and str(info["id"]) != model_id:
            raise ValueError(f"model_info.id {info['id']!r} differs from model_id {model_id!r}")
        model_name = _check_name(model_name)
        params = _check_dict("litellm_params", litellm_params)
        info = _check_dict("model_info", info)

        def add(db: Transaction) -> dict[str, Any]:
            current = _fetch(db, model_id)
            if current is not None and not current["deleted"]:
                raise ModelExists(f"a model with id {model_id!r} already exists")
            now = time.time()
            new = {
                "id": model_id,
                "model_name": model_name,
                "litellm_params": params,
                "model_info": info,
                "created_at": now,
                "updated_at": now,
                "version": 1 if current is None else current["version"] + 1,
                "deleted": False,
            }
            _write(db, new)
            return new

        return self.store.write(add)

    def update(
        self,
        model_id: str,
        *,
        model_name: str | None = None,
        litellm_params: Mapping[str, Any] | None = None,
        model_info: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Change a model; raises ModelNotFound. Returns the row as stored afterwards.

        Like LiteLLM's ``/model/update``, ``litellm_params`` and ``model_info`` merge into what is
        stored: keys given replace theirs, keys not given are kept, keys given as None are
        ignored (a client sends None for "unchanged"). The merge is one level deep: a nested
        dict is replaced whole. ``replace=True`` stores the given dicts as they are instead.
        An update that changes nothing keeps the version, so pollers do not reload for it.
        """
        if model_name is not None:
            _check_name(model_name)
        if litellm_params is not None:
            _check_dict("litellm_params", litellm_params)
        if model_info is not None:
            _check_dict("model_info", model_info)
            if "id" in model_info and str(model_info["id"]) != model_id:
                raise ValueError(f"model_info.id {model_info['id']!r} differs from model_id {model_id!r}")

        def update(db: Transaction) -> dict[str, Any]:
            current = _fetch(db, model_id)
            if current is None or current["deleted"]:
                raise ModelNotFound(f"no model with id {model_id!r}")
            new = {
                **current,
                "model_name": current["model_name"] if model_name is None else model_name,
                "litellm_params": _merged(current["litellm_params"], litellm_params, replace),
                "model_info": _merged(current["model_info"], model_info, replace),
            }
            if new == current:
                return current
            new["version"] = current["version"] + 1
            new["updated_at"] = time.time()
            _write(db, new)
            return new

        return self.store.write(update)

    def delete(self, model_id: str) -> bool:
        """Replace a live model by its tombstone; False when there was no live model to delete."""

        def delete(db: Transaction) -> bool:
            current = _fetch(db, model_id)
            if current is None or current["deleted"]:
                return False
            _write(db, _tombstone(current, current["version"] + 1, time.time()))
            return True

        return self.store.write(delete)

    # -- reads -------------------------------------------------------------------------------

    def get(self, model_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        rows = self.store.query(f"{_SELECT} WHERE id = ?", (model_id,))
        if not rows or (rows[0]["deleted"] and not include_deleted):
            return None
        return _decode(rows[0])

    def models_version(self) -> int:
        """The change counter: equal between two calls means nothing changed in between.

        One primary-key SELECT (SQLite: on a WITHOUT ROWID table, inline, ~6 µs). ``PRAGMA
        data_version`` as a "did anything change" pre-check measured ~9 µs on its own, so a
        pre-check would only add cost.
        """
        return int(self.store.query_value(_VERSION) or 0)

    # -- mirroring rows from other hosts -----------------------------------------------------

    def upsert(self, row: Mapping[str, Any]) -> bool:
        """Apply a row from another host if it is newer than ours (see module doc); True if applied."""
        return self.upsert_many([row]) == 1

    def upsert_many(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """``upsert`` of each row, in one transaction; returns how many were applied."""
        incoming = [_normalize(row) for row in rows]

        def upsert_many(db: Transaction) -> int:
            applied = 0
            for new in incoming:
                current = _fetch(db, new["id"])
                if current is not None and _order(current) >= _order(new):
                    continue
                _write(db, new, bump=False)
                applied += 1
            if applied:
                db.execute(_BUMP)
            return applied

        return self.store.write(upsert_many)

    def replace_all(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Make the table exactly ``rows`` (tombstones included), versions as given.

        Returns how many rows were written or removed; the change counter moves once if any.
        """
        incoming: dict[str, dict[str, Any]] = {}
        for row in rows:
            new = _normalize(row)
            if new["id"] in incoming:
                raise ValueError(f"duplicate model id {new['id']!r} in replace_all")
            incoming[new["id"]] = new

        def replace_all(db: Transaction) -> int:
            current = {row["id"]: _decode(row) for row in _rows(db, _SELECT)}
            changed = 0
            for model_id in current.keys() - incoming.keys():
                db.execute("DELETE FROM models WHERE id = ?", (model_id,))
                changed += 1
            for model_id, new in incoming.items():
                if current.get(model_id) != new:
                    _write(db, new, bump=False)
                    changed += 1
            if changed:
                db.execute(_BUMP)
            return changed

        return self.store.write(replace_all)

    def purge_tombstones(self, older_than: float) -> int:
        """Drop tombstones older than ``older_than`` seconds; returns how many went."""
        cutoff = time.time() - older_than

        def purge(db: Transaction) -> int:
            return db.execute("DELETE FROM models WHERE deleted = 1 AND updated_at < ?", (cutoff,)).rowcount

        return self.store.write(purge)

    # Last, so the annotations above still mean the builtin ``list``.
    def list(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Live models (and tombstones, for a sync snapshot, if asked), oldest first."""
        where = "" if include_deleted else " WHERE deleted = 0"
        return [_decode(row) for row in self.store.query(f"{_SELECT}{where} ORDER BY created_at, id")]


def _rows(db: Transaction, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return rows(db.execute(sql, params))


def _fetch(db: Transaction, model_id: str) -> dict[str, Any] | None:
    rows = _rows(db, f"{_SELECT} WHERE id = ?", (model_id,))
    return _decode(rows[0]) if rows else None


def _write(db: Transaction, row: dict[str, Any], *, bump: bool = True) -> None:
    """Store one full row; with ``bump`` also move the change counter (same transaction)."""
    db.execute(
        _UPSERT,
        (
            row["id"],
            row["model_name"],
            json.dumps(row["litellm_params"]),
            json.dumps(row["model_info"]),
            row["created_at"],
            row["updated_at"],
            row["version"],
            int(row["deleted"]),
        ),
    )
    if bump:
        db.execute(_BUMP)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "litellm_params": json.loads(row["litellm_params"]),
        "model_info": json.loads(row["model_info"]),
        "deleted": bool(row["deleted"]),
    }


def _tombstone(row: dict[str, Any], version: int, now: float) -> dict[str, Any]:
    """What is kept of a deleted model: no params or info, which may hold raw keys."""
    return {
        **row, "litellm_params": {}, "model_info": {}, "updated_at": now, "version": version, "deleted": True,
    }


def _order(row: dict[str, Any]) -> tuple[int, bool, float, str]:
    """Total order of two versions of one row; the same on every host (see module doc)."""
    content = json.dumps([row["model_name"], row["litellm_params"], row["model_info"]], sort_keys=True)
    return (row["version"], row["deleted"], row["updated_at"], hashlib.sha256(content.encode()).hexdigest())


def _normalize(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row received from elsewhere, checked and in the shape ``list()`` returns."""
    try:
        model_id = str(row["id"])
        version = int(row["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a mirrored model row needs an id and an integer version: {exc}") from exc
    if not model_id or version < 1:
        raise ValueError(f"bad model row id={model_id!r} version={version}")
    deleted = bool(row.get("deleted", False))
    now = time.time()
    new = {
        "id": model_id,
        "model_name": str(row.get("model_name") or ""),
        "litellm_params": _check_dict("litellm_params", row.get("litellm_params") or {}),
        "model_info": _check_dict("model_info", row.get("model_info") or {}),
        "created_at": float(row.get("created_at") or now),
        "updated_at": float(row.get("updated_at") or now),
        "version": version,
        "deleted": deleted,
    }
    if not deleted:
        _check_name(new["model_name"])
    return new


def _merged(
    current: dict[str, Any], given: Mapping[str, Any] | None, replace: bool
) -> dict[str, Any]:
    if given is None:
        return current
    if replace:
        return dict(given)
    return {**current, **{k: v for k, v in given.items() if v is not None}}


def _check_name(model_name: Any) -> str:
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    return model_name


def _check_dict(what: str, value: Any) -> dict[str, Any]:
    """A dict that will survive the trip through JSON."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(value).__name__}")
    value = dict(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc
    return value
