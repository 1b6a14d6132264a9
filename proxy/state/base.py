"""The State interface: live, fast-changing router state, whatever backend holds it.

Everything is keyed by deployment id. The router asks on every request (usage, in-flight counts,
latencies, cooldowns), so reads must be cheap; writes that do not decide a request are batched.
Two backends implement it: :class:`~proxy.state.memory.MemoryState` (one process, exact) and
:class:`~proxy.state.redis_backend.RedisState` (shared by every worker and instance on one Redis).
No method raises because of the backend: a backend that loses its store keeps answering from
local state.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

#: A message on a pub/sub channel: a JSON object.
Message = dict[str, Any]
Callback = Callable[[Message], None]
Clock = Callable[[], float]

#: Length of a usage window: rpm/tpm are "per minute".
WINDOW_SECONDS = 60.0
#: Recent calls averaged by ``latencies()``.
LATENCY_SAMPLES = 10


class State(ABC):
    """Counters, cooldowns and notifications the router shares between requests (and processes).

    ``window`` and ``clock`` exist so tests can use short windows and a fake clock; production
    uses the defaults (UTC minute buckets on the wall clock, ``time.time``).
    """

    #: backend name, for logs and health output
    name = ""

    def __init__(self, *, window: float = WINDOW_SECONDS, clock: Clock = time.time) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        self.clock = clock

    # -- usage per window -------------------------------------------------------------------

    def bucket(self, now: float | None = None) -> int:
        """Index of the window ``now`` falls in; the same number on every host with a sane clock."""
        return int((self.clock() if now is None else now) // self.window)

    def seconds_to_next_window(self) -> float:
        """Time until the current window's counters reset: the Retry-After of a 429."""
        return self.window - (self.clock() % self.window)

    @abstractmethod
    def reserve(self, dep_id: str, rpm_limit: int | None) -> bool:
        """Count one request against this window; False (nothing counted) if ``rpm_limit`` is reached.

        ``rpm_limit=None`` means no limit: the request is always counted and allowed. Any number,
        0 included, is a limit.
        """

    @abstractmethod
    def add_tokens(self, dep_id: str, tokens: int) -> None:
        """Add tokens used by a finished call to this window's count."""

    @abstractmethod
    def usage(self, dep_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(requests, tokens) counted in the current window, for every id asked (0 when unknown)."""

    # -- in-flight requests -----------------------------------------------------------------

    @abstractmethod
    def inflight_incr(self, dep_id: str) -> None:
        """A call to this deployment started."""

    @abstractmethod
    def inflight_decr(self, dep_id: str) -> None:
        """A call to this deployment ended (success or not); never goes below zero."""

    @abstractmethod
    def inflight(self, dep_ids: Iterable[str]) -> dict[str, int]:
        """Calls in flight per deployment, for every id asked."""

    def take_slot(self, name: str, limit: int) -> bool:
        """Take one of ``limit`` parallel slots of ``name`` (a key's or team's
        ``max_parallel_requests``); False when all are taken. Exact across workers and
        instances on a shared backend; give it back with ``release_slot``."""
        if self.inflight((name,))[name] >= limit:
            return False
        self.inflight_incr(name)
        return True

    def release_slot(self, name: str) -> None:
        """Give back a slot taken with ``take_slot``."""
        self.inflight_decr(name)

    # -- latency ----------------------------------------------------------------------------

    @abstractmethod
    def record_latency(self, dep_id: str, seconds: float, ttft: float | None = None) -> None:
        """Record a finished call: total ``seconds``, and time to first token for streams.

        The sample kept is ``ttft`` when given, else ``seconds``: for a stream the wait before the
        first token is what a caller feels, and it does not grow with the answer's length.
        """

    @abstractmethod
    def latencies(self, dep_ids: Iterable[str]) -> dict[str, float]:
        """Mean of the last ``LATENCY_SAMPLES`` samples per deployment; ids with no sample are absent."""

    # -- cooldowns --------------------------------------------------------------------------

    @abstractmethod
    def record_failure(self, dep_id: str, allowed_fails: int, cooldown_time: float) -> bool:
        """Count a failed call in this window; cool the deployment down once failures exceed
        ``allowed_fails``. True only for the call that started a cooldown.

        ``cooldown_time <= 0`` disables cooldowns: nothing is counted, False is returned.
        """

    def record_success(self, dep_id: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """A call succeeded. Failures are counted per window, as LiteLLM does, and a success does
        not forgive them, so this is a no-op; it exists so callers need not know that."""

    @abstractmethod
    def cooldowns(self, dep_ids: Iterable[str] | None = None) -> dict[str, float]:
        """Deployment id -> UNIX time its cooldown ends, for those cooling down now (all, or those asked)."""

    @abstractmethod
    def clear_cooldown(self, dep_id: str) -> None:
        """End a cooldown now and forget this window's failures (an operator said it is healthy)."""

    # -- spend (budgets) --------------------------------------------------------------------

    @abstractmethod
    def add_spend(self, name: str, amount: float) -> None:
        """Add ``amount`` (USD) to the named running spend (a key's, team's or user's budget period)."""

    @abstractmethod
    def spend(self, names: Iterable[str]) -> dict[str, float]:
        """Running spend for every name asked (0.0 when unknown)."""

    # -- notifications and fleet-wide data --------------------------------------------------

    @abstractmethod
    def publish(self, channel: str, message: Message) -> None:
        """Send ``message`` (JSON-serialisable) to every subscriber of ``channel``, this process included.

        Memory delivers before returning; Redis delivers from a listener greenlet a moment later.
        """

    @abstractmethod
    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(message)`` for each message on ``channel``. Callbacks must be quick."""

    @abstractmethod
    def hset(self, name: str, key: str, value: str) -> None:
        """Set a field of the named hash."""

    @abstractmethod
    def hget(self, name: str, key: str) -> str | None:
        """One field of the named hash, or None."""

    @abstractmethod
    def hgetall(self, name: str) -> dict[str, str]:
        """The whole named hash."""

    @abstractmethod
    def hdel(self, name: str, *keys: str) -> None:
        """Remove fields of the named hash."""

    @abstractmethod
    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take the named lease for ``ttl`` seconds unless someone else holds it; True when
        ``owner`` holds it now (taking it again extends nothing). Used so that one process of
        the fleet does a periodic job (background health checks) per period."""

    @abstractmethod
    def incr_version(self, name: str) -> int:
        """Bump the named version counter (e.g. "the model registry changed") and return it."""

    @abstractmethod
    def get_version(self, name: str) -> int:
        """The named version counter; 0 before the first bump."""

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True while this state is shared with other processes (Redis configured and reachable)."""
        return False

    def flush(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Send batched writes now (backends that batch do it in the background anyway)."""

    def refresh(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Re-read cached shared values now (backends that cache do it in the background anyway)."""

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Flush what is buffered and stop background work; call once at worker shutdown."""
