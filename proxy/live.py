"""Live updates: runtime model changes, key changes and config reloads reach every worker.

One background greenlet per worker polls the store: ``models_version`` (runtime models) and the
instance's newest config generation (proxy/generations.py). A change is picked up within
``interval`` (0.25 s) and swapped in without a restart; requests in flight keep what they
started with. A reload applies the validated snapshot, never the file. The same tick reloads
the key cache when ``keys_version`` moved and re-reads the spend totals written since the last
tick (``proxy.keys.cache``).
On PostgreSQL the store is shared by every instance, so runtime models and keys reach every
host this way too.

Across hosts on SQLite, Redis carries the runtime models: every change is also written to a
Redis hash (the fleet's copy) and announced on a channel. Each instance mirrors what it hears
into its own store (so it keeps the models across restarts), which its workers then pick up as
above. A full re-read of the hash every ``resync`` seconds repairs anything missed during an
outage. (With a shared PostgreSQL database the mirroring is redundant and harmless: applying a
row already held changes nothing.)
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import gevent
import orjson

from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.generations import Generations

log = logging.getLogger(__name__)

FLEET_HASH = "models"
FLEET_CHANNEL = "models"
KEYS_CHANNEL = "keys"


def reload_deadline() -> float:
    """Seconds a reload waits for every worker before it answers 503 (``LLMRELAY_RELOAD_TIMEOUT``)."""
    return float(os.environ.get("LLMRELAY_RELOAD_TIMEOUT") or 10.0)


class LiveUpdates:
    """Keeps one worker's gateway current; also the write path for runtime model changes."""

    def __init__(self, gateway: Gateway, generations: Generations | None = None, generation: int = 0,
                 interval: float = 0.25, resync: float = 10.0) -> None:
        self.gateway = gateway
        self.generations = generations
        self.generation = generation  # the config generation this worker serves
        self.failed_generation = 0  # a snapshot that would not apply here is not retried every tick
        self.interval = interval
        self.resync = resync
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

    def request_reload(self) -> tuple[int, list[int]]:
        """Validate the config file, publish it as the next generation, apply it here and wait
        until every worker of the instance serves it. Returns the generation and the workers
        still behind at ``reload_deadline()`` (empty when all are done). ConfigError if the file is bad:
        then nothing is published and every worker keeps its config."""
        from proxy.gateway import check_config

        gw = self.gateway
        if gw.config.path is None:
            raise ConfigError(["this proxy was started from an in-memory config; there is no file to re-read"])
        config, text = check_config(gw.config.path)
        if self.generations is None:  # no store: this process is all there is
            gw.apply(config)
            self.generation += 1
            return self.generation, []
        generation = self.generations.publish(config.path, text)
        self.apply_generation()
        return generation, self.generations.wait(generation, reload_deadline())

    def apply_generation(self) -> None:
        """Apply the instance's newest snapshot if it is newer than what this worker serves."""
        if self.generations is None:
            return
        newest = self.generations.current()
        if newest <= self.generation or newest == self.failed_generation:
            return
        snapshot = self.generations.latest()
        if snapshot is None:
            return
        try:
            self.gateway.apply(snapshot.load(self.gateway.secrets))
        except ConfigError as exc:
            # It was validated where it was published; what differs here is this process's
            # environment. Keep serving the current config and let the reload report us behind.
            self.failed_generation = snapshot.generation
            log.error("config generation %d does not apply in this worker; it keeps generation %d:\n  %s",
                      snapshot.generation, self.generation, "\n  ".join(exc.errors))
            return
        self.generation = snapshot.generation
        self.generations.report(self.generation)
        log.info("serving config generation %d (%s)", self.generation, snapshot.path)

    def keys_changed(self) -> None:
        """After a key or team change here: this worker reloads now, the others hear of it on Redis
        (every worker of this host would also see the store's counter move within one tick)."""
        self.gateway.key_cache.refresh()
        if self.gateway.state.shared:
            self.gateway.state.publish(KEYS_CHANNEL, {"changed": True})

    def on_keys_message(self, message: dict[str, Any]) -> None:
        self.gateway.key_cache.refresh()

    def tick(self) -> None:
        """One poll: pick up model changes and reloads made elsewhere."""
        if self.gateway.store is None:
            return
        self.apply_generation()
        self.gateway.refresh_models()
        self.gateway.key_cache.refresh()
        self.gateway.key_cache.refresh_spend()

    def start(self) -> None:
        if self._greenlet is not None:
            return
        if self.generations is not None:
            self.generations.report(self.generation)
        if self.gateway.key_cache.enabled:
            self.gateway.state.subscribe(KEYS_CHANNEL, self.on_keys_message)
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
        if self.generations is not None:
            try:
                self.generations.forget()
            except Exception:
                log.debug("could not remove this worker from the config generations", exc_info=True)
