"""Live updates: runtime model changes and config reloads reach every worker of every instance.

One background greenlet per worker watches two counters in the store (each change bumps one):
``models_version`` (runtime models) and ``config_generation`` (reloads). A change is picked up
within ``interval`` (0.25 s) and swapped in without a restart; requests in flight keep what they
started with. On PostgreSQL the store is shared by every instance, so this alone carries changes
across hosts.

Across hosts on SQLite, Redis carries the runtime models: every change is also written to a
Redis hash (the fleet's copy) and announced on a channel. Each instance mirrors what it hears
into its own store (so it keeps the models across restarts), which its workers then pick up as
above. A full re-read of the hash every ``resync`` seconds repairs anything missed during an
outage. (With a shared PostgreSQL database the mirroring is redundant and harmless: applying a
row already held changes nothing.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent
import orjson

from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.store import StoreAPI
    from proxy.store.api import Transaction

log = logging.getLogger(__name__)

FLEET_HASH = "models"
FLEET_CHANNEL = "models"
CONFIG_GENERATION = "config_generation"
RELOAD_ATTEMPTS = 8  # ticks (2 s) a worker keeps trying a reload before it keeps the old config


def read_counter(store: StoreAPI, name: str) -> int:
    return int(store.query_value("SELECT value FROM store_meta WHERE key = ?", (name,)) or 0)


def bump_counter(store: StoreAPI, name: str) -> int:
    def bump(db: Transaction) -> int:
        db.execute("INSERT INTO store_meta (key, value) VALUES (?, 1) "
                   "ON CONFLICT (key) DO UPDATE SET value = store_meta.value + 1", (name,))
        return int(db.execute("SELECT value FROM store_meta WHERE key = ?", (name,)).fetchone()[0])

    return store.write(bump)


class LiveUpdates:
    """Keeps one worker's gateway current; also the write path for runtime model changes."""

    def __init__(self, gateway: Gateway, interval: float = 0.25, resync: float = 10.0) -> None:
        self.gateway = gateway
        self.interval = interval
        self.resync = resync
        # Unknown until the first tick: a worker that booted while another handled a reload may
        # have read the file before it changed and the counter after. The first tick reloads
        # once if any reload was ever requested, which is cheap and always right.
        self.config_generation: int | None = None
        self.reload_failures = 0
        self._greenlet: gevent.Greenlet | None = None

    # -- fleet (Redis) ------------------------------------------------------------------------

    @property
    def fleet(self) -> bool:
        return bool(self.gateway.state.shared) and self.gateway.model_store is not None

    def pull_fleet(self) -> int:
        """Mirror the fleet's runtime models into the local store; returns rows changed."""
        if not self.fleet:
            return 0
        rows = [orjson.loads(v) for v in self.gateway.state.hgetall(FLEET_HASH).values()]
        return self.gateway.model_store.upsert_many(rows) if rows else 0

    def push_fleet(self, row: dict[str, Any]) -> None:
        """Tell every instance sharing Redis about a local change (tombstones included)."""
        if not self.fleet:
            return
        blob = orjson.dumps(row).decode()
        self.gateway.state.hset(FLEET_HASH, row["id"], blob)
        self.gateway.state.publish(FLEET_CHANNEL, {"row": row})

    def on_fleet_message(self, message: dict[str, Any]) -> None:
        row = message.get("row")
        if isinstance(row, dict) and self.gateway.model_store is not None:
            self.gateway.model_store.upsert(row)

    # -- local --------------------------------------------------------------------------------

    def changed(self, row: dict[str, Any]) -> None:
        """After a local add/update/delete: this worker swaps now, the fleet hears of it."""
        self.gateway.refresh_models()
        self.push_fleet(row)

    def request_reload(self) -> None:
        """Reload here (raises ConfigError if the file is bad), then have every other worker follow."""
        self.gateway.reload_config()
        if self.gateway.store is not None:
            self.config_generation = bump_counter(self.gateway.store, CONFIG_GENERATION)

    def tick(self) -> None:
        """One poll: pick up model changes and reload requests made elsewhere."""
        gw = self.gateway
        if gw.store is None:
            return
        generation = read_counter(gw.store, CONFIG_GENERATION)
        if generation != self.config_generation and (self.config_generation is not None or generation):
            try:
                gw.reload_config()
            except ConfigError as exc:
                # The file may be caught mid-write by an editor; try a few more ticks before giving up.
                self.reload_failures += 1
                if self.reload_failures < RELOAD_ATTEMPTS:
                    return
                log.error("config reload refused, the running config stays:\n  %s", "\n  ".join(exc.errors))
            self.reload_failures = 0
            self.config_generation = generation
        gw.refresh_models()

    def start(self) -> None:
        if self._greenlet is not None:
            return
        if self.fleet:
            self.gateway.state.subscribe(FLEET_CHANNEL, self.on_fleet_message)
            try:
                self.pull_fleet()
            except Exception:
                log.exception("could not read runtime models from Redis at start")
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        since_resync = 0.0
        while True:
            gevent.sleep(self.interval)
            try:
                since_resync += self.interval
                if since_resync >= self.resync:
                    since_resync = 0.0
                    self.pull_fleet()
                self.tick()
            except Exception:
                log.exception("live update failed; retrying")

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
