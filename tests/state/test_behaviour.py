"""The State contract, run against both backends (``state`` is parametrized: memory and redis)."""

from __future__ import annotations

import time

import pytest

from proxy.state import State
from tests.state.helpers import START, FakeClock, sync, wait_for


def test_reserve_counts_until_the_limit(state: State) -> None:
    assert [state.reserve("d", 3) for _ in range(5)] == [True, True, True, False, False]
    assert state.usage(["d"]) == {"d": (3, 0)}
    sync(state)
    assert state.usage(["d"]) == {"d": (3, 0)}


def test_zero_is_a_limit(state: State) -> None:
    assert state.reserve("d", 0) is False
    assert state.usage(["d"])["d"] == (0, 0)


def test_unlimited_requests_are_counted_at_once_and_once(state: State) -> None:
    for _ in range(5):
        assert state.reserve("d", None)
    assert state.usage(["d"])["d"] == (5, 0)  # not flushed yet: still counted
    sync(state)
    assert state.usage(["d"])["d"] == (5, 0)  # flushed: not counted twice


def test_unlimited_traffic_counts_against_a_limit(state: State) -> None:
    for _ in range(4):
        state.reserve("d", None)
    sync(state)
    assert state.reserve("d", 5) is True
    assert state.reserve("d", 5) is False


def test_tokens(state: State) -> None:
    state.add_tokens("d", 100)
    state.add_tokens("d", 50)
    assert state.usage(["d", "other"]) == {"d": (0, 150), "other": (0, 0)}
    sync(state)
    assert state.usage(["d"]) == {"d": (0, 150)}


def test_window_rolls_over(state: State, clock: FakeClock) -> None:
    assert state.seconds_to_next_window() == pytest.approx(50.0)
    assert state.reserve("d", 1) and not state.reserve("d", 1)
    state.add_tokens("d", 10)
    sync(state)
    clock.advance(50.0)
    assert state.seconds_to_next_window() == pytest.approx(60.0)
    assert state.usage(["d"]) == {"d": (0, 0)}
    assert state.reserve("d", 1)
    sync(state)
    assert state.usage(["d"]) == {"d": (1, 0)}


def test_inflight(state: State) -> None:
    state.inflight_incr("a")
    state.inflight_incr("a")
    state.inflight_incr("b")
    state.inflight_decr("a")
    assert state.inflight(["a", "b", "c"]) == {"a": 1, "b": 1, "c": 0}
    state.inflight_decr("b")
    state.inflight_decr("b")  # an unmatched decrement never goes below zero
    sync(state)
    assert state.inflight(["a", "b"]) == {"a": 1, "b": 0}


def test_latency_prefers_time_to_first_token(state: State) -> None:
    state.record_latency("d", 1.0)
    state.record_latency("d", 3.0, ttft=0.5)
    assert state.latencies(["d", "unknown"]) == {"d": pytest.approx(0.75)}
    sync(state)
    assert state.latencies(["d"]) == {"d": pytest.approx(0.75)}


def test_latency_is_a_moving_average(state: State) -> None:
    for _ in range(10):
        state.record_latency("d", 9.0)
    sync(state)
    for _ in range(10):
        state.record_latency("d", 1.0)
    assert state.latencies(["d"])["d"] == pytest.approx(1.0)
    sync(state)
    assert state.latencies(["d"])["d"] == pytest.approx(1.0)


def test_failures_past_the_allowance_start_one_cooldown(state: State, clock: FakeClock) -> None:
    assert [state.record_failure("d", 2, 5.0) for _ in range(4)] == [False, False, True, False]
    assert state.cooldowns() == {"d": pytest.approx(START + 5.0)}
    assert state.cooldowns(["d", "other"]) == {"d": pytest.approx(START + 5.0)}
    assert state.cooldowns(["other"]) == {}
    sync(state)
    assert state.cooldowns() == {"d": pytest.approx(START + 5.0)}
    clock.advance(5.01)
    sync(state)
    assert state.cooldowns() == {}


def test_failures_are_counted_per_window(state: State, clock: FakeClock) -> None:
    assert not state.record_failure("d", 1, 5.0)
    clock.advance(60.0)
    assert not state.record_failure("d", 1, 5.0)
    assert state.record_failure("d", 1, 5.0)


def test_zero_cooldown_time_disables_cooldowns(state: State) -> None:
    assert not any(state.record_failure("d", 0, 0) for _ in range(3))
    assert state.cooldowns() == {}


def test_clear_cooldown_forgets_the_failures(state: State) -> None:
    assert state.record_failure("d", 0, 30.0)
    state.clear_cooldown("d")
    assert state.cooldowns() == {}
    sync(state)
    assert state.cooldowns() == {}
    assert not state.record_failure("d", 1, 30.0)  # this window's earlier failure was forgotten


def test_success_does_not_forgive_failures(state: State) -> None:
    state.record_failure("d", 1, 30.0)
    state.record_success("d")
    assert state.record_failure("d", 1, 30.0)


def test_publish_reaches_subscribers(state: State) -> None:
    got: list[dict] = []
    state.subscribe("models", got.append)
    state.subscribe("models", lambda m: got.append({"second": m["n"]}))
    state.subscribe("other", lambda m: got.append({"wrong": True}))
    state.publish("models", {"n": 1})
    assert wait_for(lambda: len(got) >= 2)
    assert got == [{"n": 1}, {"second": 1}]


def test_a_failing_callback_does_not_stop_the_others(state: State) -> None:
    got: list[dict] = []

    def broken(message: dict) -> None:
        raise RuntimeError("boom")

    state.subscribe("c", broken)
    state.subscribe("c", got.append)
    state.publish("c", {"ok": True})
    assert wait_for(lambda: got == [{"ok": True}])


def test_a_message_must_be_json(state: State) -> None:
    with pytest.raises(TypeError):
        state.publish("c", {"x": object()})


def test_hashes_and_versions(state: State) -> None:
    assert state.hgetall("models") == {}
    assert state.hget("models", "a") is None
    state.hset("models", "a", "1")
    state.hset("models", "b", "2")
    assert state.hget("models", "a") == "1"
    state.hdel("models", "a", "missing")
    assert state.hgetall("models") == {"b": "2"}
    assert state.get_version("registry") == 0
    assert state.incr_version("registry") == 1
    assert state.incr_version("registry") == 2
    assert state.get_version("registry") == 2


def test_close_twice_is_harmless(state: State) -> None:
    state.reserve("d", None)
    state.close()
    state.close()


def test_spend_adds_up_per_name(state: State) -> None:
    assert state.spend(["key:a@0"]) == {"key:a@0": 0.0}
    state.add_spend("key:a@0", 0.25)
    state.add_spend("key:a@0", 0.5)
    state.add_spend("team:t@0", 1.0)
    assert state.spend(["key:a@0", "team:t@0", "user:u@0"]) == {"key:a@0": 0.75, "team:t@0": 1.0, "user:u@0": 0.0}


def test_a_lease_has_one_holder_until_it_ends(state: State, clock: FakeClock) -> None:
    assert state.acquire("health:1", "worker-a", 0.2)
    assert state.acquire("health:1", "worker-a", 0.2)  # the holder keeps it
    assert not state.acquire("health:1", "worker-b", 0.2)
    assert state.acquire("health:2", "worker-b", 0.2)  # another lease is another lock
    clock.advance(0.3)  # memory: its clock; Redis: expiry on the server's clock
    time.sleep(0.3)
    assert state.acquire("health:1", "worker-b", 0.2)


def test_parallel_slots_are_taken_and_given_back(state: State) -> None:
    assert [state.take_slot("key:k", 2) for _ in range(3)] == [True, True, False]
    state.release_slot("key:k")
    assert state.take_slot("key:k", 2) is True
    assert state.take_slot("key:other", 1) is True  # each name counts for itself
