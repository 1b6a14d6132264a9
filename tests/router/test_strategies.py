"""Routing strategies and limits, driven through the router with real (memory) state."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from proxy.errors import RateLimited
from proxy.router.strategies import CostBased, LatencyBased, LeastBusy, UsageBased, make_strategy
from tests.helpers import chat_ctx, gateway


def dep(name: str, model: str, **params) -> dict:
    info = params.pop("model_info", {})
    return {"model_name": name, "litellm_params": {"model": model, "api_base": f"http://{model}/v1", **params},
            "model_info": info}


def setup(strategy: str, *entries: dict):
    gw = gateway({"model_list": list(entries), "router_settings": {"routing_strategy": strategy}})
    router = gw.services.router
    group = router.group(entries[0]["model_name"])
    return gw, router, group


def pick(router, group, model: str = "g") -> str:
    return router.choose(chat_ctx(model), group).upstream_model


def test_strategy_names_from_the_config() -> None:
    for name, cls in [("least-busy", LeastBusy), ("usage-based-routing", UsageBased),
                      ("usage-based-routing-v2", UsageBased), ("latency-based-routing", LatencyBased),
                      ("cost-based-routing", CostBased)]:
        _, router, _ = setup(name, dep("g", "openai/a"))
        assert isinstance(router.strategy, cls)


def test_least_busy_prefers_fewest_in_flight() -> None:
    _, router, group = setup("least-busy", dep("g", "openai/a"), dep("g", "openai/b"), dep("g", "openai/c"))
    a, b, c = group
    for _ in range(3):
        router.started(a)
    router.started(b)
    assert {pick(router, group) for _ in range(20)} == {"c"}
    router.started(c)
    router.started(c)
    assert {pick(router, group) for _ in range(20)} == {"b"}
    ctx = chat_ctx("g")
    router.finished(ctx, a, None, 0.1)
    router.finished(ctx, a, None, 0.1)
    router.finished(ctx, a, None, 0.1)
    assert {pick(router, group) for _ in range(20)} == {"a"}


def test_least_busy_shares_ties_evenly() -> None:
    _, router, group = setup("least-busy", dep("g", "openai/a"), dep("g", "openai/b"))
    router.strategy.rng = random.Random(3)
    seen = Counter(pick(router, group) for _ in range(2000))
    assert 900 < seen["a"] < 1100


def test_usage_based_routes_to_the_least_used_share() -> None:
    _, router, group = setup("usage-based-routing", dep("g", "openai/a", tpm=1000), dep("g", "openai/b", tpm=10000))
    a, b = group
    router.state.add_tokens(a.id, 500)  # 50% of a's minute
    router.state.add_tokens(b.id, 2000)  # 20% of b's
    assert {pick(router, group) for _ in range(10)} == {"b"}
    router.state.add_tokens(b.id, 6000)  # b now at 80%
    assert {pick(router, group) for _ in range(10)} == {"a"}


def test_tpm_limit_excludes_and_then_429s() -> None:
    _, router, group = setup("simple-shuffle", dep("g", "openai/a", tpm=100), dep("g", "openai/b", tpm=100))
    a, b = group
    router.state.add_tokens(a.id, 100)
    assert {pick(router, group) for _ in range(10)} == {"b"}
    router.state.add_tokens(b.id, 150)
    ctx = chat_ctx("g")
    with pytest.raises(RateLimited) as info:
        router.choose(ctx, group)
    assert "tpm limit: 100/100" in info.value.message and info.value.retry_after >= 1
    assert info.value.response_headers()["Retry-After"]


def test_latency_based_tries_unmeasured_first_then_fastest() -> None:
    _, router, group = setup("latency-based-routing", dep("g", "openai/a"), dep("g", "openai/b"),
                             dep("g", "openai/c"))
    a, b, c = group
    ctx = chat_ctx("g")
    router.finished(ctx, a, None, 0.50)
    router.finished(ctx, b, None, 0.05)
    assert {pick(router, group) for _ in range(10)} == {"c"}  # never measured: explored first
    router.finished(ctx, c, None, 0.90)
    assert {pick(router, group) for _ in range(10)} == {"b"}
    for _ in range(10):  # b slows down; its moving average follows
        router.finished(ctx, b, None, 2.0)
    assert {pick(router, group) for _ in range(10)} == {"a"}


def test_latency_based_uses_time_to_first_token_for_streams() -> None:
    _, router, group = setup("latency-based-routing", dep("g", "openai/a"), dep("g", "openai/b"))
    a, b = group
    ctx = chat_ctx("g")
    router.finished(ctx, a, None, latency=9.0, ttft=0.1)  # long stream, quick first token
    router.finished(ctx, b, None, latency=0.5)
    assert {pick(router, group) for _ in range(10)} == {"a"}


def test_cost_based_picks_the_cheapest_known_price() -> None:
    _, router, group = setup(
        "cost-based-routing",
        dep("g", "openai/gpt-4o"), dep("g", "openai/gpt-4o-mini"),
        dep("g", "openai/house-model", model_info={"input_cost_per_token": 1e-9, "output_cost_per_token": 1e-9}))
    assert {pick(router, group) for _ in range(10)} == {"house-model"}
    _, router, group = setup("cost-based-routing", dep("g", "openai/gpt-4o"), dep("g", "openai/gpt-4o-mini"),
                             dep("g", "openai/unknown-price"))
    assert {pick(router, group) for _ in range(10)} == {"gpt-4o-mini"}


def test_make_strategy_rejects_nothing_the_config_allows() -> None:
    from proxy.config_schema import ROUTING_STRATEGIES

    for name in ROUTING_STRATEGIES:
        assert make_strategy(name, state=None) is not None
