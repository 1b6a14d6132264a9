"""RedisState's connection to Redis and whether Redis is reachable.

Every Redis error goes through ``RedisLink.failed``: a connection error or timeout marks Redis
down, with one warning, and the state serves from local data; any other error is logged at most
once a minute. While down, ``probe()`` PINGs (the state's background loop calls it every
``probe_interval``); when Redis answers, the link comes back up with one info line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not there": switch to local state until the probe succeeds.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"//([^/@]*?):[^/@]*@", r"//\1:***@", url)


def _nothing() -> None:
    pass


class RedisLink:
    """One Redis client, and whether Redis answers (``up``).

    ``pipeline_scripts`` are loaded on connect and after an outage (a restarted server has lost
    them): scripts run inside a pipeline cannot be loaded there. ``on_down`` runs when an outage
    starts, ``on_up`` when Redis is back (before the info line is logged).
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float,
        probe_interval: float,
        pipeline_scripts: Sequence[str] = (),
        on_down: Callable[[], None] = _nothing,
        on_up: Callable[[], None] = _nothing,
    ) -> None:
        self.url = safe_url(url)
        self.client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True,
            protocol=2,  # RESP2: no HELLO or push-notification handshake on each new connection
        )
        self.up = False
        #: monotonic time of the next probe while down
        self.next_probe = 0.0
        self._probe_interval = probe_interval
        self._pipeline_scripts = tuple(pipeline_scripts)
        self._on_down, self._on_up = on_down, on_up
        self._last_error_log = 0.0

    def load_scripts(self) -> None:
        for script in self._pipeline_scripts:
            self.client.script_load(script)

    def connect(self) -> bool:
        """First contact: PING and load the scripts. False, with one warning, if Redis does not answer."""
        try:
            self.client.ping()
            self.load_scripts()
        except Exception as exc:
            log.warning("state: Redis at %s unreachable (%s); rate limits, cooldowns and counters are "
                        "kept per process until it answers", self.url, exc)
            return False
        self.up = True
        return True

    def failed(self, exc: Exception) -> None:
        """Every Redis error lands here: an outage switches to local state, anything else is logged."""
        if isinstance(exc, OUTAGE_ERRORS):
            if self.up:
                self.up = False
                self._on_down()
                self.next_probe = time.monotonic() + self._probe_interval
                log.warning("state: lost Redis at %s (%s); serving from local state until it is back",
                            self.url, exc)
            return
        now = time.monotonic()
        if now - self._last_error_log > 60:  # at most one per minute: this may repeat per request
            self._last_error_log = now
            log.error("state: Redis call failed, answered from local state: %r", exc)

    def call(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """Run one Redis call; ``default`` when Redis is down or the call fails."""
        if not self.up:
            return default
        try:
            return fn()
        except Exception as exc:
            self.failed(exc)
            return default

    def probe(self) -> bool:
        """PING Redis if it is down; on success come back up. True when Redis is up."""
        if self.up:
            return True
        self.next_probe = time.monotonic() + self._probe_interval
        try:
            self.client.ping()
            self.load_scripts()
        except Exception as exc:
            log.debug("state: Redis at %s still unreachable: %s", self.url, exc)
            return False
        # Idle connections from before the outage are dead; one still in use fails on its own.
        self.client.connection_pool.disconnect(inuse_connections=False)
        self.up = True
        self._on_up()
        log.info("state: Redis at %s is back; shared state resumes", self.url)
        return True

    def close(self) -> None:
        self.client.close()
