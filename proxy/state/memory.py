"""In-process state: exact and instant, for one worker (and the fallback while Redis is away).

Nothing here does I/O or yields, so under gevent every method is atomic with respect to other
greenlets and needs no lock. Per-deployment entries hold only the current window, so memory stays
bounded by the number of deployments.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable

import orjson

from proxy.state.base import LATENCY_SAMPLES, WINDOW_SECONDS, Callback, Clock, Message, State

log = logging.getLogger(__name__)


class MemoryState(State):
    """State kept in this process only."""

    name = "memory"

    def __init__(
        self,
        *,
        window: float = WINDOW_SECONDS,
        clock: Clock = time.time,
        latency_samples: int = LATENCY_SAMPLES,
    ) -> None:
        super().__init__(window=window, clock=clock)
        self._usage: dict[str, list[int]] = {}  # dep -> [bucket, requests, tokens]
        self._inflight: dict[str, int] = {}
        self._latency: dict[str, deque[float]] = {}
        self._latency_samples = latency_samples
        self._failures: dict[str, list[int]] = {}  # dep -> [bucket, failures]
        self._cooldowns: dict[str, float] = {}  # dep -> UNIX time it ends
        self._callbacks: dict[str, list[Callback]] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self._versions: dict[str, int] = {}
        self._spend: dict[str, float] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (owner, UNIX time it ends)

    # -- usage ------------------------------------------------------------------------------

    def _slot(self, dep_id: str) -> list[int]:
        bucket = self.bucket()
        slot = self._usage.get(dep_id)
        if slot is None or slot[0] != bucket:
            slot = self._usage[dep_id] = [bucket, 0, 0]
        return slot

    def reserve(self, dep_id: str, rpm_limit: int | None) -> bool:
        slot = self._slot(dep_id)
        if rpm_limit is not None and slot[1] >= rpm_limit:
            return False
        slot[1] += 1
        return True

    def add_tokens(self, dep_id: str, tokens: int) -> None:
        self._slot(dep_id)[2] += tokens

    def usage(self, dep_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        bucket = self.bucket()
        result = {}
        for dep in dep_ids:
            slot = self._usage.get(dep)
            result[dep] = (slot[1], slot[2]) if slot is not None and slot[0] == bucket else (0, 0)
        return result

    # -- in flight --------------------------------------------------------------------------

    def inflight_incr(self, dep_id: str) -> None:
        self._inflight[dep_id] = self._inflight.get(dep_id, 0) + 1

    def inflight_decr(self, dep_id: str) -> None:
        n = self._inflight.get(dep_id, 0) - 1
        if n > 0:
            self._inflight[dep_id] = n
        else:
            self._inflight.pop(dep_id, None)

    def inflight(self, dep_ids: Iterable[str]) -> dict[str, int]:
        return {dep: self._inflight.get(dep, 0) for dep in dep_ids}

    # -- latency ----------------------------------------------------------------------------

    def record_latency(self, dep_id: str, seconds: float, ttft: float | None = None) -> None:
        samples = self._latency.get(dep_id)
        if samples is None:
            samples = self._latency[dep_id] = deque(maxlen=self._latency_samples)
        samples.append(float(seconds if ttft is None else ttft))

    def latencies(self, dep_ids: Iterable[str]) -> dict[str, float]:
        result = {}
        for dep in dep_ids:
            samples = self._latency.get(dep)
            if samples:
                result[dep] = sum(samples) / len(samples)
        return result

    # -- cooldowns --------------------------------------------------------------------------

    def record_failure(self, dep_id: str, allowed_fails: int, cooldown_time: float) -> bool:
        if cooldown_time <= 0:
            return False
        now = self.clock()
        bucket = self.bucket(now)
        slot = self._failures.get(dep_id)
        if slot is None or slot[0] != bucket:
            slot = self._failures[dep_id] = [bucket, 0]
        slot[1] += 1
        if slot[1] <= allowed_fails or self._cooldowns.get(dep_id, 0.0) > now:
            return False
        self._cooldowns[dep_id] = now + cooldown_time
        return True

    def cooldowns(self, dep_ids: Iterable[str] | None = None) -> dict[str, float]:
        now = self.clock()
        for dep in [d for d, until in self._cooldowns.items() if until <= now]:
            del self._cooldowns[dep]
        if dep_ids is None:
            return dict(self._cooldowns)
        return {dep: self._cooldowns[dep] for dep in dep_ids if dep in self._cooldowns}

    def clear_cooldown(self, dep_id: str) -> None:
        self._cooldowns.pop(dep_id, None)
        self._failures.pop(dep_id, None)

    # -- spend ------------------------------------------------------------------------------

    def add_spend(self, name: str, amount: float) -> None:
        self._spend[name] = self._spend.get(name, 0.0) + amount

    def spend(self, names: Iterable[str]) -> dict[str, float]:
        return {name: self._spend.get(name, 0.0) for name in names}

    # -- notifications and fleet-wide data --------------------------------------------------

    def publish(self, channel: str, message: Message) -> None:
        # Through JSON, as with Redis: a message that works here works there, and no subscriber
        # shares (or mutates) the publisher's dict.
        self.deliver(channel, orjson.loads(orjson.dumps(message)))

    def deliver(self, channel: str, message: Message) -> None:
        """Call this process's callbacks for ``channel``; one failing callback does not stop the rest."""
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(message)
            except Exception:
                log.exception("state: callback for channel %r failed", channel)

    def subscribe(self, channel: str, callback: Callback) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    @property
    def channels(self) -> list[str]:
        """Channels with at least one callback."""
        return list(self._callbacks)

    def hset(self, name: str, key: str, value: str) -> None:
        self._hashes.setdefault(name, {})[key] = value

    def hget(self, name: str, key: str) -> str | None:
        return self._hashes.get(name, {}).get(key)

    def hgetall(self, name: str) -> dict[str, str]:
        return dict(self._hashes.get(name, {}))

    def hdel(self, name: str, *keys: str) -> None:
        fields = self._hashes.get(name, {})
        for key in keys:
            fields.pop(key, None)

    def set_hash(self, name: str, fields: dict[str, str]) -> None:
        """Replace a whole hash: RedisState keeps the last values read here for outages."""
        self._hashes[name] = dict(fields)

    def set_version(self, name: str, value: int) -> None:
        """Set a version counter: RedisState keeps the last value read here for outages."""
        self._versions[name] = value

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        now = self.clock()
        held = self._leases.get(name)
        if held is not None and held[1] > now:
            return held[0] == owner
        self._leases[name] = (owner, now + ttl)
        return True

    def incr_version(self, name: str) -> int:
        self._versions[name] = self._versions.get(name, 0) + 1
        return self._versions[name]

    def get_version(self, name: str) -> int:
        return self._versions.get(name, 0)
