"""Redis going away and coming back: callers never see an error, the log says so once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis

from proxy.state import RedisState
from tests.redis_server import RedisServer
from tests.state.helpers import sync, wait_for

MakeRedis = Callable[..., RedisState]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("proxy.state") and r.levelno >= logging.WARNING]


def infos(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("proxy.state") and r.levelno == logging.INFO and text in r.getMessage()]


def test_outage_serves_locally_and_resumes(
    private_redis: RedisServer, make_redis: MakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.state")
    a = make_redis(url=private_redis.url)
    got: list[dict] = []
    a.subscribe("registry", got.append)
    assert a.reserve("d", 5) and a.reserve("d", 5)
    a.add_tokens("d", 10)
    sync(a)
    assert a.shared and a.usage(["d"]) == {"d": (2, 10)}

    private_redis.kill()
    started = time.monotonic()
    allowed = []
    for i in range(20):
        allowed.append(a.reserve("d", 5))
        assert a.reserve("u", None)
        a.add_tokens("u", 1)
        a.inflight_incr("u")
        a.record_latency("u", 0.5)
        a.hset("h", "k", str(i))
        a.usage(["d", "u"])
        a.inflight(["u"])
        a.latencies(["u"])
        a.cooldowns()
        a.get_version("v")
        a.flush()
        a.refresh()
        a.publish("registry", {"i": i})
    assert time.monotonic() - started < 1.0  # no call waits on the dead server
    gevent_wait = wait_for(lambda: False, timeout=0.1)  # let the probe fail a few times
    assert gevent_wait is False
    assert not a.shared
    # The limit keeps holding on local state, on top of the 2 counted before the outage.
    assert allowed.count(True) == 3
    assert a.usage(["d", "u"]) == {"d": (5, 10), "u": (20, 20)}
    assert a.inflight(["u"]) == {"u": 20}
    assert a.latencies(["u"]) == {"u": pytest.approx(0.5)}
    assert a.record_failure("f", 0, 30.0) is True
    assert "f" in a.cooldowns()
    assert a.hget("h", "k") == "19"
    assert got == [{"i": i} for i in range(20)]  # local publishes still reach local subscribers
    assert len(warnings(caplog)) == 1, warnings(caplog)

    private_redis.start()
    assert wait_for(lambda: a.shared, timeout=5.0)
    assert len(infos(caplog, "back")) == 1
    assert len(warnings(caplog)) == 1
    # What was counted during the outage reaches Redis (the restarted server kept nothing else).
    a.flush()
    b = make_redis(url=private_redis.url)
    assert b.usage(["d", "u"]) == {"d": (3, 0), "u": (20, 20)}
    assert b.inflight(["u"]) == {"u": 20}
    assert a.cooldowns()["f"] > 0  # a local cooldown runs its course
    # Pub/sub resubscribed.
    got.clear()
    b.publish("registry", {"after": True})
    assert wait_for(lambda: got == [{"after": True}])


def test_starts_while_redis_is_down(
    private_redis: RedisServer, make_redis: MakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.state")
    private_redis.kill()
    a = make_redis(url=private_redis.url)
    assert not a.shared
    assert a.reserve("d", 1) and not a.reserve("d", 1)
    a.subscribe("c", lambda m: None)
    assert len(warnings(caplog)) == 1
    private_redis.start()
    assert wait_for(lambda: a.shared, timeout=5.0)
    b = make_redis(url=private_redis.url)
    assert wait_for(lambda: b.usage(["d"]) == {"d": (1, 0)})
    assert len(warnings(caplog)) == 1


def test_an_unreachable_host_does_not_stall_callers(make_redis: MakeRedis) -> None:
    # 192.0.2.0/24 is reserved for documentation: connects there time out instead of failing fast.
    started = time.monotonic()
    a = make_redis(url="redis://192.0.2.1:6379/0", socket_timeout=0.05)
    for _ in range(100):
        a.reserve("d", 10)
        a.record_failure("d", 100, 1.0)
    assert time.monotonic() - started < 1.0
    assert not a.shared


def test_a_command_error_is_logged_not_raised(
    make_redis: MakeRedis, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_redis()
    bucket = a.bucket()
    client = redis.Redis.from_url(redis_url)
    client.set(f"{key_prefix}rpm:{bucket}", "not a hash")  # WRONGTYPE for every rpm command
    client.close()
    assert [a.reserve("d", 2) for _ in range(3)] == [True, True, False]  # answered locally
    assert a.shared  # the server is fine: no outage
    assert len(warnings(caplog)) == 1  # one error line, not one per call
