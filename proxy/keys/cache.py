"""Every virtual key and team in this worker's memory, so checking a key never reads the store.

The store raises ``keys_version`` with every key or team change. ``refresh()`` compares it (one
primary-key SELECT) and reloads everything when it moved; the live-updates greenlet calls it
every 0.25 s, and with Redis a change is also announced on the ``keys`` channel so every worker
reloads at once. Until then a worker may still accept a key deleted elsewhere for up to one poll.

A token not in the cache is looked up in the store once (a key generated a moment ago on another
worker must work at once) and, when absent, remembered as absent until the next reload: a client
hammering with a wrong key costs one SELECT per distinct key per change, not one per request.

Durable spend: ``refresh_spend()`` re-reads the ``spend_totals`` rows changed since its last
look (a few seconds of overlap covers transactions that committed late). Budgets are checked
against the larger of this and the shared-state counter (``proxy.keys.limits``), so spend made by
other workers (memory state) or before a restart (any state) counts as soon as it is written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.keys.records import KeyRecord, TeamRecord

if TYPE_CHECKING:
    from proxy.store.keys import KeyStore

log = logging.getLogger(__name__)

#: Remembered-absent tokens kept at most; past it the set starts over (it is only a shortcut).
MAX_MISSES = 10_000
#: Seconds of overlap when re-reading spend totals: a batch timestamped before our last read may commit after it.
SPEND_OVERLAP = 5.0


def key_from_row(row: dict) -> KeyRecord:
    return KeyRecord(**row)


def team_from_row(row: dict) -> TeamRecord:
    return TeamRecord(**row)


class KeyCache:
    """Keys by token and teams by id, as of ``version``; durable spend by budget name."""

    def __init__(self, store: KeyStore | None) -> None:
        self.store = store
        self.keys: dict[str, KeyRecord] = {}
        self.teams: dict[str, TeamRecord] = {}
        self.version = -1
        self.misses: set[str] = set()
        #: "<entity>@<period>" -> spend written to the store, as of the last ``refresh_spend``
        self.durable: dict[str, float] = {}
        self._spend_seen = 0.0

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def key(self, token: str) -> KeyRecord | None:
        record = self.keys.get(token)
        if record is not None or self.store is None or token in self.misses:
            return record
        row = self.store.get_key(token)
        if row is None:
            if len(self.misses) >= MAX_MISSES:
                self.misses.clear()
            self.misses.add(token)
            return None
        record = self.keys[token] = key_from_row(row)
        return record

    def team(self, team_id: str | None) -> TeamRecord | None:
        if team_id is None:
            return None
        team = self.teams.get(team_id)
        if team is None and self.store is not None and team_id not in self.misses:
            row = self.store.get_team(team_id)
            if row is None:
                self.misses.add(team_id)
                return None
            team = self.teams[team_id] = team_from_row(row)
        return team

    def refresh(self, force: bool = False) -> bool:
        """Reload keys and teams when the store's ``keys_version`` moved; True when it did."""
        if self.store is None:
            return False
        version = self.store.keys_version()
        if version == self.version and not force:
            return False
        keys = {row["token"]: key_from_row(row) for row in self.store.all_keys()}
        teams = {row["team_id"]: team_from_row(row) for row in self.store.all_teams()}
        self.keys, self.teams, self.misses, self.version = keys, teams, set(), version
        log.debug("key cache: %d keys, %d teams (version %d)", len(keys), len(teams), version)
        return True

    def refresh_spend(self) -> None:
        """Fold in spend totals written since the last call (by any worker)."""
        if self.store is None:
            return
        rows = self.store.spend_totals_since(self._spend_seen - SPEND_OVERLAP if self._spend_seen else 0.0)
        for row in rows:
            self.durable[f"{row['entity']}@{row['period']}"] = float(row["spend"])
            self._spend_seen = max(self._spend_seen, float(row["updated_at"]))

    def durable_spend(self, name: str) -> float:
        return self.durable.get(name, 0.0)
