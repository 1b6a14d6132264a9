"""Fixtures for the state tests: both backends, and several RedisStates sharing one Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from proxy.state import MemoryState, RedisState, State
from tests.redis_server import private_redis, redis_url  # noqa: F401 - fixtures
from tests.state.helpers import FAST, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:  # noqa: F811
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"llmrelay-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_redis(redis_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Callable[..., RedisState]]:  # noqa: F811
    """Build RedisStates on the shared test Redis and prefix (one per process or instance)."""
    made: list[RedisState] = []

    def make(**options: Any) -> RedisState:
        options = {"key_prefix": key_prefix, "clock": clock, **FAST, **options}
        url = options.pop("url", redis_url)
        state = RedisState(url, **options)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest, clock: FakeClock) -> State:
    """Each behavioural test runs on both backends."""
    if request.param == "memory":
        return MemoryState(clock=clock)
    return request.getfixturevalue("make_redis")()
