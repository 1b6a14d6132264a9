"""Key records, the per-worker cache and the budget/limit guard, on a real store and memory state."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequest, BudgetExceeded, RateLimited
from proxy.keys import KeyCache, effective_models
from proxy.keys.limits import Guard
from proxy.keys.records import (
    KeyBody,
    KeyRecord,
    TeamRecord,
    budget_period,
    hash_key,
    load_body,
    parse_duration,
    token_of,
)
from proxy.state import MemoryState


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1h", 3600), ("7d", 604800), ("30d", 2592000),
                                               ("2w", 1209600), ("1mo", 2592000)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "budget_duration") == seconds


@pytest.mark.parametrize("text", ["30", "1y", "-1d", "0s", "soon", 5])
def test_bad_durations_name_the_field(text) -> None:
    with pytest.raises(BadRequest) as info:
        parse_duration(text, "budget_duration")
    assert info.value.param == "budget_duration"


def test_bodies_are_checked_field_by_field() -> None:
    assert load_body(KeyBody, {"max_budget": 1, "aliases": {}, "soft_budget": 2}) == {"max_budget": 1.0}
    for body, field in [({"max_budget": -1}, "max_budget"), ({"rpm_limit": "x"}, "rpm_limit"),
                        ({"duration": "forever"}, "duration"), ({"key_type": "root"}, "key_type")]:
        with pytest.raises(BadRequest) as info:
            load_body(KeyBody, body)
        assert info.value.param == field


def test_budget_periods_run_back_to_back_from_the_anchor() -> None:
    assert budget_period(None, 100.0, 1e9) == 0
    assert budget_period(30.0, 100.0, 129.9) == 100
    assert budget_period(30.0, 100.0, 130.0) == 130
    key = KeyRecord(token="t", budget_duration="30s", budget_anchor=100.0)
    assert key.reset_at(135.0) == 160.0


def test_token_accepts_a_key_or_its_hash() -> None:
    digest = hash_key("sk-abc")
    assert len(digest) == 64 and token_of("sk-abc") == digest and token_of(digest) == digest


def test_team_models_apply_when_the_key_has_none() -> None:
    team = TeamRecord(team_id="t", models=["a", "b"])
    assert effective_models(KeyRecord(token="k", team_id="t"), team) == ["a", "b"]
    assert effective_models(KeyRecord(token="k", models=["a"]), team) == ["a"]
    assert effective_models(KeyRecord(token="k", models=["all-team-models"]), team) == ["a", "b"]





def test_guard_refuses_over_budget_and_counts_spend_per_period() -> None:
    clock = Clock(1000.0)
    state = MemoryState(clock=clock)
    guard = Guard(KeyCache(None), state, clock=clock)
    key = KeyRecord(token="k", max_budget=1.0, budget_duration="30s", budget_anchor=1000.0)
    adm = guard.admit(key, None)
    totals = guard.finish(adm, 0.6, 10)
    assert totals == [("key:k", 1000, 0.6)]
    guard.finish(guard.admit(key, None), 0.6, 10)
    with pytest.raises(BudgetExceeded) as info:
        guard.admit(key, None)
    assert info.value.status == 400 and info.value.body()["error"]["type"] == "budget_exceeded"
    assert "Budget has been exceeded! Current cost: 1.2" in info.value.message
    clock.now = 1030.0  # the next period: spend starts again
    assert guard.admit(key, None).key_spend == 0.0


def test_guard_team_budget_and_durable_spend_count() -> None:
    cache = KeyCache(None)
    guard = Guard(cache, MemoryState())
    team = TeamRecord(team_id="blue", max_budget=0.5)
    key = KeyRecord(token="k", team_id="blue")
    cache.durable["team:blue@0"] = 0.5  # spent by another worker, read back from the store
    with pytest.raises(BudgetExceeded) as info:
        guard.admit(key, team)
    assert "Team=blue" in info.value.message


def test_guard_rpm_tpm_and_parallel_limits_answer_429_with_retry_after() -> None:
    clock = Clock(120.0)
    guard = Guard(KeyCache(None), MemoryState(clock=clock), clock=clock)
    key = KeyRecord(token="r", rpm_limit=2)
    guard.admit(key, None)
    guard.admit(key, None)
    with pytest.raises(RateLimited) as info:
        guard.admit(key, None)
    assert info.value.status == 429 and info.value.response_headers()["Retry-After"] == "60"
    tpm = KeyRecord(token="t", tpm_limit=100)
    guard.finish(guard.admit(tpm, None), 0.0, 100)
    with pytest.raises(RateLimited):
        guard.admit(tpm, None)
    par = KeyRecord(token="p", max_parallel_requests=1)
    first = guard.admit(par, None)
    with pytest.raises(RateLimited):
        guard.admit(par, None)
    guard.finish(first, 0.0, 0)
    guard.admit(par, None)
