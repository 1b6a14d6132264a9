"""Virtual keys, teams and running spend totals in the store.

Rows come back as dicts with JSON columns decoded; ``proxy.keys.records`` turns them into
records. Every change to a key or a team raises the ``keys_version`` counter in the same
transaction, so each worker's key cache (``proxy.keys.cache``) can tell with one cheap SELECT
whether it must reload.

``spend_totals`` holds spend per entity (``key:<token>``, ``team:<id>``, ``user:<id>``) and
budget period; ``add_spend_totals`` runs inside the spend writer's batch transaction, so a spend
log row and the totals it adds to are committed together.

SQL here is portable (``?`` placeholders, ``ON CONFLICT ... DO UPDATE``, JSON as TEXT, times as
REAL epoch seconds, booleans as 0/1) and goes only through ``Store.write/read/query``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxy.store.db import Store, StoreError

KEY_COLUMNS = (
    "token", "key_name", "key_alias", "team_id", "user_id", "models", "max_budget", "budget_duration",
    "budget_anchor", "expires", "rpm_limit", "tpm_limit", "max_parallel_requests", "metadata",
    "allowed_routes", "blocked", "created_at", "updated_at",
)
TEAM_COLUMNS = (
    "team_id", "team_alias", "models", "max_budget", "budget_duration", "budget_anchor", "rpm_limit",
    "tpm_limit", "max_parallel_requests", "members_with_roles", "metadata", "blocked", "created_at",
    "updated_at",
)
_JSON = {"models": list, "metadata": dict, "allowed_routes": list, "members_with_roles": list}
_BUMP = ("INSERT INTO store_meta (key, value) VALUES ('keys_version', 1) "
         "ON CONFLICT (key) DO UPDATE SET value = store_meta.value + 1")
_VERSION = "SELECT value FROM store_meta WHERE key = 'keys_version'"

#: One spend total to add: (entity, period, amount).
Total = tuple[str, int, float]


class KeyNotFound(StoreError, LookupError):
    """No key has this token."""


class TeamNotFound(StoreError, LookupError):
    """No team has this id."""


class TeamExists(StoreError, ValueError):
    """A team already has this id."""


def _encode(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    out = []
    for name in columns:
        value = row.get(name)
        if name in _JSON:
            value = json.dumps(value if value is not None else _JSON[name]())
        elif name == "blocked":
            value = 1 if value else 0
        out.append(value)
    return tuple(out)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, kind in _JSON.items():
        if name in row:
            row[name] = json.loads(row[name]) if row[name] else kind()
    if "blocked" in row:
        row["blocked"] = bool(row["blocked"])
    return row


def _upsert(table: str, columns: Sequence[str], key: str) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


_KEY_UPSERT = _upsert("keys", KEY_COLUMNS, "token")
_TEAM_UPSERT = _upsert("teams", TEAM_COLUMNS, "team_id")
_TOTALS_UPSERT = ("INSERT INTO spend_totals (entity, period, spend, updated_at) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (entity, period) DO UPDATE SET spend = spend_totals.spend + excluded.spend, "
                  "updated_at = excluded.updated_at")


def add_spend_totals(db: Any, totals: Iterable[Total]) -> None:
    """Add spend to running totals, inside the caller's transaction (summed per entity first)."""
    summed: dict[tuple[str, int], float] = {}
    for entity, period, amount in totals:
        summed[(entity, period)] = summed.get((entity, period), 0.0) + amount
    if summed:
        now = time.time()
        rows = [(e, p, s, now) for (e, p), s in summed.items()]
        many = getattr(db, "executemany", None)  # sqlite-utils' Database has only execute
        if many is not None:
            many(_TOTALS_UPSERT, rows)
        else:
            for row in rows:
                db.execute(_TOTALS_UPSERT, row)


class KeyStore:
    """Keys and teams on a ``Store``; every write is one short transaction that bumps ``keys_version``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def keys_version(self) -> int:
        return int(self.store.query_value(_VERSION) or 0)

    # -- keys --------------------------------------------------------------------------------

    def all_keys(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.store.query(f"SELECT {', '.join(KEY_COLUMNS)} FROM keys")]

    def get_key(self, token: str) -> dict[str, Any] | None:
        rows = self.store.query(f"SELECT {', '.join(KEY_COLUMNS)} FROM keys WHERE token = ?", (token,))
        return _decode(rows[0]) if rows else None

    def tokens_by_alias(self, aliases: Iterable[str]) -> list[str]:
        aliases = list(aliases)
        if not aliases:
            return []
        marks = ", ".join("?" * len(aliases))
        return [r["token"] for r in self.store.query(f"SELECT token FROM keys WHERE key_alias IN ({marks})",
                                                     tuple(aliases))]

    def put_key(self, row: Mapping[str, Any]) -> None:
        """Insert or replace a whole key row."""

        def put(db: Any) -> None:
            db.execute(_KEY_UPSERT, _encode(row, KEY_COLUMNS))
            db.execute(_BUMP, ())

        self.store.write(put)

    def update_key(self, token: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` to a key; raises KeyNotFound. Returns the row as stored."""

        def update(db: Any) -> dict[str, Any]:
            current = _fetch_one(db, "keys", KEY_COLUMNS, "token", token)
            if current is None:
                raise KeyNotFound(token)
            new = {**current, **changes, "token": token, "updated_at": time.time()}
            db.execute(_KEY_UPSERT, _encode(new, KEY_COLUMNS))
            db.execute(_BUMP, ())
            return new

        return self.store.write(update)

    def replace_token(self, old: str, new: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """A regenerated key: the same record under a new token; its spend totals move with it."""

        def replace(db: Any) -> dict[str, Any]:
            current = _fetch_one(db, "keys", KEY_COLUMNS, "token", old)
            if current is None:
                raise KeyNotFound(old)
            row = {**current, **changes, "token": new, "updated_at": time.time()}
            db.execute("DELETE FROM keys WHERE token = ?", (old,))
            db.execute(_KEY_UPSERT, _encode(row, KEY_COLUMNS))
            db.execute("UPDATE spend_totals SET entity = ? WHERE entity = ?", (f"key:{new}", f"key:{old}"))
            db.execute(_BUMP, ())
            return row

        return self.store.write(replace)

    def delete_keys(self, tokens: Sequence[str]) -> list[str]:
        """Delete the keys that exist among ``tokens``; returns those deleted."""

        def delete(db: Any) -> list[str]:
            gone = [t for t in tokens if db.execute("DELETE FROM keys WHERE token = ?", (t,)).rowcount]
            if gone:
                db.execute(_BUMP, ())
            return gone

        return self.store.write(delete)

    def list_keys(self, *, user_id: str | None = None, team_id: str | None = None, key_alias: str | None = None,
                  page: int = 1, size: int = 10) -> tuple[list[dict[str, Any]], int]:
        """One page of keys (newest first) and how many match in all."""
        where, params = _where({"user_id": user_id, "team_id": team_id, "key_alias": key_alias})
        total = int(self.store.query_value(f"SELECT COUNT(*) FROM keys{where}", params) or 0)
        rows = self.store.query(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM keys{where} ORDER BY created_at DESC, token LIMIT ? OFFSET ?",
            (*params, size, (page - 1) * size))
        return [_decode(r) for r in rows], total

    # -- teams -------------------------------------------------------------------------------

    def all_teams(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.store.query(
            f"SELECT {', '.join(TEAM_COLUMNS)} FROM teams ORDER BY created_at")]

    def get_team(self, team_id: str) -> dict[str, Any] | None:
        rows = self.store.query(f"SELECT {', '.join(TEAM_COLUMNS)} FROM teams WHERE team_id = ?", (team_id,))
        return _decode(rows[0]) if rows else None

    def add_team(self, row: Mapping[str, Any]) -> None:
        def add(db: Any) -> None:
            if db.execute("SELECT 1 FROM teams WHERE team_id = ?", (row["team_id"],)).fetchone():
                raise TeamExists(row["team_id"])
            db.execute(_TEAM_UPSERT, _encode(row, TEAM_COLUMNS))
            db.execute(_BUMP, ())

        self.store.write(add)

    def update_team(self, team_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        def update(db: Any) -> dict[str, Any]:
            current = _fetch_one(db, "teams", TEAM_COLUMNS, "team_id", team_id)
            if current is None:
                raise TeamNotFound(team_id)
            new = {**current, **changes, "team_id": team_id, "updated_at": time.time()}
            db.execute(_TEAM_UPSERT, _encode(new, TEAM_COLUMNS))
            db.execute(_BUMP, ())
            return new

        return self.store.write(update)

    def delete_teams(self, team_ids: Sequence[str]) -> list[str]:
        """Delete teams and every key in them (LiteLLM does the same); returns the teams deleted."""

        def delete(db: Any) -> list[str]:
            gone = [t for t in team_ids if db.execute("DELETE FROM teams WHERE team_id = ?", (t,)).rowcount]
            for team_id in gone:
                db.execute("DELETE FROM keys WHERE team_id = ?", (team_id,))
            if gone:
                db.execute(_BUMP, ())
            return gone

        return self.store.write(delete)

    # -- spend totals ------------------------------------------------------------------------

    def spend_totals_since(self, since: float) -> list[dict[str, Any]]:
        """Totals changed at or after ``since`` (epoch seconds): what a cache poll re-reads."""
        return self.store.query("SELECT entity, period, spend, updated_at FROM spend_totals WHERE updated_at >= ?",
                                (since,))

    def spend_total(self, entity: str, period: int) -> float:
        value = self.store.query_value("SELECT spend FROM spend_totals WHERE entity = ? AND period = ?",
                                       (entity, period))
        return float(value or 0.0)


def _fetch_one(db: Any, table: str, columns: Sequence[str], key: str, value: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ?", (value,)).fetchone()
    return None if row is None else _decode(dict(zip(columns, row, strict=True)))


def _where(filters: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    given = {k: v for k, v in filters.items() if v is not None}
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), tuple(given.values())
