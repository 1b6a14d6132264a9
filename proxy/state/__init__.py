"""Live router state (usage windows, in-flight counts, latencies, cooldowns, notifications).

``make_state(router_settings)`` picks the backend: in-process memory when no Redis is configured,
Redis (shared by every worker and instance) when one is. Build it per worker, after the fork: the
Redis backend runs background greenlets. Call ``close()`` at worker shutdown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from proxy.state.base import State
from proxy.state.memory import MemoryState
from proxy.state.redis_backend import RedisState

__all__ = ["MemoryState", "RedisState", "State", "make_state", "redis_url_from"]

#: RedisState options that MemoryState understands too.
_COMMON_OPTIONS = ("window", "clock", "latency_samples")


def redis_url_from(
    settings: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The Redis URL configured by LiteLLM-style ``router_settings``, else by the environment.

    ``redis_url`` wins; else ``redis_host`` with ``redis_port`` (default 6379) and
    ``redis_password``. When the settings name no Redis, ``REDIS_URL`` or ``REDIS_HOST`` /
    ``REDIS_PORT`` / ``REDIS_PASSWORD`` are used. A port or password missing from the settings is
    taken from the environment, so a secret can stay out of the config file.
    """
    settings = settings or {}
    env = os.environ if environ is None else environ
    if settings.get("redis_url"):
        return str(settings["redis_url"])
    host = settings.get("redis_host")
    if not host:
        if env.get("REDIS_URL"):
            return env["REDIS_URL"]
        host = env.get("REDIS_HOST")
        if not host:
            return None
    port = settings.get("redis_port") or env.get("REDIS_PORT") or 6379
    password = settings.get("redis_password") or env.get("REDIS_PASSWORD")
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return f"redis://{auth}{host}:{int(port)}/0"


def make_state(
    settings: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> State:
    """MemoryState when no Redis is configured, else RedisState (with a MemoryState fallback).

    ``options`` go to the backend's constructor (``key_prefix``, intervals, ``window``, ...);
    those only Redis understands are ignored for memory. ``settings["redis_key_prefix"]``, when
    present, sets the key prefix.
    """
    url = redis_url_from(settings, environ)
    if url is None:
        return MemoryState(**{k: v for k, v in options.items() if k in _COMMON_OPTIONS})
    if settings and settings.get("redis_key_prefix"):
        options.setdefault("key_prefix", str(settings["redis_key_prefix"]))
    return RedisState(url, **options)
