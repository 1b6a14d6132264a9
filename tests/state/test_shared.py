"""Several RedisStates on one Redis behave as one: two instances of the proxy, or two workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from proxy.state import RedisState
from tests.state.helpers import START, sync, wait_for

MakeRedis = Callable[..., RedisState]


@pytest.fixture
def pair(make_redis: MakeRedis) -> tuple[RedisState, RedisState]:
    return make_redis(), make_redis()


def test_rpm_limit_holds_across_instances(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    allowed = [s.reserve("d", 10) for _ in range(15) for s in (a, b)]
    assert allowed.count(True) == 10
    assert allowed[:10] == [True] * 10
    sync(a, b)
    assert a.usage(["d"]) == b.usage(["d"]) == {"d": (10, 0)}


def test_counts_reach_the_other_instance_after_a_flush(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    for _ in range(3):
        a.reserve("d", None)
    a.add_tokens("d", 70)
    assert b.usage(["d"]) == {"d": (0, 0)}  # buffered in a
    b.reserve("d", None)
    sync(a, b)
    assert a.usage(["d"]) == b.usage(["d"]) == {"d": (4, 70)}


def test_unlimited_traffic_elsewhere_counts_against_a_limit(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    for _ in range(5):
        a.reserve("d", None)
    a.flush()
    assert b.reserve("d", 6) is True
    assert b.reserve("d", 6) is False


def test_background_greenlets_share_without_explicit_calls(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    assert b.usage(["d"]) == {"d": (0, 0)}  # b now watches "d"
    a.reserve("d", None)
    a.add_tokens("d", 5)
    a.inflight_incr("d")
    assert a.record_failure("d", 0, 30.0)
    assert wait_for(lambda: b.usage(["d"]) == {"d": (1, 5)} and b.inflight(["d"]) == {"d": 1}
                    and "d" in b.cooldowns())


def test_inflight_is_summed_across_instances(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    a.inflight_incr("d")
    a.inflight_incr("d")
    b.inflight_incr("d")
    sync(a, b)
    assert a.inflight(["d"]) == b.inflight(["d"]) == {"d": 3}
    a.inflight_decr("d")
    a.inflight_decr("d")
    sync(a, b)
    assert a.inflight(["d"]) == b.inflight(["d"]) == {"d": 1}


def test_a_crashed_process_stops_counting_in_flight(make_redis: MakeRedis) -> None:
    reader = make_redis()
    crashed = make_redis(background=False, inflight_ttl=0.2)
    crashed.inflight_incr("d")
    crashed.flush()
    reader.refresh()
    assert reader.inflight(["d"]) == {"d": 1}
    time.sleep(0.3)  # no heartbeat: the process is gone
    reader.refresh()
    assert reader.inflight(["d"]) == {"d": 0}


def test_close_takes_this_process_out_of_the_in_flight_counts(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    a.inflight_incr("d")
    sync(a, b)
    assert b.inflight(["d"]) == {"d": 1}
    a.close()
    b.refresh()
    assert b.inflight(["d"]) == {"d": 0}


def test_close_flushes_what_is_buffered(make_redis: MakeRedis) -> None:
    a, b = make_redis(background=False), make_redis()
    a.reserve("d", None)
    a.add_tokens("d", 9)
    a.record_latency("d", 0.25)
    a.close()
    b.refresh()
    assert b.usage(["d"]) == {"d": (1, 9)}
    assert b.latencies(["d"]) == {"d": pytest.approx(0.25)}


def test_latency_average_is_shared(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    a.record_latency("d", 1.0)
    a.record_latency("d", 2.0)
    b.record_latency("d", 3.0)
    sync(a, b)
    assert a.latencies(["d"]) == b.latencies(["d"]) == {"d": pytest.approx(2.0)}


def test_cooldowns_are_shared(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    assert [a.record_failure("d", 3, 10.0), a.record_failure("d", 3, 10.0)] == [False, False]
    assert [b.record_failure("d", 3, 10.0), b.record_failure("d", 3, 10.0)] == [False, True]
    assert a.record_failure("d", 3, 10.0) is False  # already cooling, started by b
    b.refresh()
    a.refresh()
    assert a.cooldowns() == b.cooldowns() == {"d": pytest.approx(START + 10.0)}
    a.clear_cooldown("d")
    b.refresh()
    assert b.cooldowns() == {}


def test_pubsub_between_instances(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    got_a: list[dict] = []
    got_b: list[dict] = []
    a.subscribe("registry", got_a.append)
    b.subscribe("registry", got_b.append)
    a.publish("registry", {"event": "model_added", "id": "x"})
    assert wait_for(lambda: got_a and got_b)
    assert got_a == got_b == [{"event": "model_added", "id": "x"}]


def test_hashes_and_versions_are_shared(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    a.hset("keys", "k1", "v1")
    assert b.hget("keys", "k1") == "v1"
    assert b.hgetall("keys") == {"k1": "v1"}
    assert a.incr_version("registry") == 1
    assert b.incr_version("registry") == 2
    assert a.get_version("registry") == 2


def test_key_prefixes_keep_proxies_apart(make_redis: MakeRedis, key_prefix: str) -> None:
    a = make_redis()
    other = make_redis(key_prefix=key_prefix + "other:")
    assert a.reserve("d", 1)
    assert other.reserve("d", 1)
    a.hset("h", "k", "v")
    assert other.hget("h", "k") is None


def test_parallel_slots_hold_exactly_across_instances(pair: tuple[RedisState, RedisState]) -> None:
    a, b = pair
    assert a.take_slot("key:k", 2) and b.take_slot("key:k", 2)  # no flush needed: one Lua call each
    assert not a.take_slot("key:k", 2) and not b.take_slot("key:k", 2)
    b.release_slot("key:k")
    assert a.take_slot("key:k", 2)
    assert not b.take_slot("key:k", 2)
