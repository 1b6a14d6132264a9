"""make_state: which backend, and where the Redis settings come from."""

from __future__ import annotations

from proxy.state import MemoryState, RedisState, make_state, redis_url_from


def test_memory_when_nothing_is_configured() -> None:
    state = make_state({}, environ={})
    assert isinstance(state, MemoryState)
    assert not state.shared
    assert isinstance(make_state(None, environ={}), MemoryState)


def test_memory_ignores_redis_only_options() -> None:
    state = make_state({}, environ={}, key_prefix="x:", flush_interval=1.0, window=5.0)
    assert isinstance(state, MemoryState)
    assert state.window == 5.0


def test_redis_url_wins() -> None:
    settings = {"redis_url": "redis://u:pw@example:1/2", "redis_host": "other"}
    assert redis_url_from(settings, {"REDIS_URL": "redis://env"}) == "redis://u:pw@example:1/2"


def test_host_port_password_from_router_settings() -> None:
    settings = {"redis_host": "cache.internal", "redis_port": "6380", "redis_password": "p@ss/word"}
    assert redis_url_from(settings, {}) == "redis://:p%40ss%2Fword@cache.internal:6380/0"
    assert redis_url_from({"redis_host": "h"}, {}) == "redis://h:6379/0"


def test_environment_when_settings_name_no_redis() -> None:
    assert redis_url_from({}, {"REDIS_URL": "redis://env:1/0"}) == "redis://env:1/0"
    env = {"REDIS_HOST": "h", "REDIS_PORT": "7000", "REDIS_PASSWORD": "s"}
    assert redis_url_from({}, env) == "redis://:s@h:7000/0"
    assert redis_url_from({}, {}) is None


def test_a_secret_can_stay_in_the_environment() -> None:
    assert redis_url_from({"redis_host": "h"}, {"REDIS_PASSWORD": "s"}) == "redis://:s@h:6379/0"


def test_redis_when_configured(redis_url: str, key_prefix: str) -> None:
    state = make_state({"redis_url": redis_url, "redis_key_prefix": key_prefix}, environ={})
    try:
        assert isinstance(state, RedisState)
        assert state.shared
        assert state.reserve("d", 1)
    finally:
        state.close()


def test_password_is_not_logged() -> None:
    state = RedisState("redis://:hunter2@192.0.2.1:6379/0", socket_timeout=0.01, background=False)
    try:
        assert "hunter2" not in state.url
    finally:
        state.close()
