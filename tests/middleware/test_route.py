"""route stage and simple-shuffle: group lookup, aliases, wildcards, weighted picks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from middleware.route import Route
from proxy.errors import BadRequest, ServiceUnavailable
from proxy.router.strategies import SimpleShuffle
from tests.helpers import chat_ctx, gateway


def entry(name: str, model: str, **params) -> dict:
    return {"model_name": name, "litellm_params": {"model": model, "api_base": "http://u/v1", **params}}


def picks(config: dict, model: str, n: int = 4000) -> Counter:
    gw = gateway(config)
    gw.services.router.strategy = SimpleShuffle(gw.services.state, random.Random(7))
    stage = Route({}, gw.services)
    seen: Counter = Counter()
    for _ in range(n):
        ctx = chat_ctx(model)
        stage(ctx, lambda c: seen.update([c.deployment.params["api_base"]]))
    return seen


def test_rpm_weights_the_shuffle() -> None:
    seen = picks({"model_list": [entry("g", "openai/a", rpm=100_000, api_base="a"),
                                 entry("g", "openai/b", rpm=900_000, api_base="b")]}, "g")
    share = seen["b"] / 4000
    assert 0.87 < share < 0.93  # 0.9 expected; 4000 draws put 3 sigma at about 0.014


def test_weight_wins_over_rpm() -> None:
    seen = picks({"model_list": [entry("g", "openai/a", rpm=900_000, weight=1, api_base="a"),
                                 entry("g", "openai/b", rpm=100_000, weight=3, api_base="b")]}, "g")
    assert 0.72 < seen["b"] / 4000 < 0.78


def test_uniform_without_weights() -> None:
    seen = picks({"model_list": [entry("g", "openai/a", api_base="a"), entry("g", "openai/b", api_base="b"),
                                 entry("g", "openai/c", api_base="c")]}, "g", 3000)
    assert all(900 < seen[k] < 1100 for k in "abc")


def test_unknown_model_names_the_available_ones() -> None:
    gw = gateway({"model_list": [entry("g1", "openai/a"), entry("g2", "openai/b")]})
    with pytest.raises(BadRequest) as info:
        Route({}, gw.services)(chat_ctx("nope"), lambda c: None)
    assert "Available models: g1, g2" in info.value.message and info.value.code == "model_not_found"


def test_alias_and_wildcards() -> None:
    gw = gateway({
        "model_list": [entry("gpt-3.5-turbo", "openai/gpt-3.5-turbo"), entry("openai/*", "openai/*"),
                       {"model_name": "*", "litellm_params": {"model": "*"}}],
        "router_settings": {"model_group_alias": {"gpt-4": "gpt-3.5-turbo"}},
    })
    stage = Route({}, gw.services)
    chosen = []
    for model in ("gpt-4", "openai/gpt-4o", "gpt-4o-mini"):
        stage(chat_ctx(model), lambda c: chosen.append((c.deployment.model_name, c.deployment.provider,
                                                        c.deployment.upstream_model)))
    assert chosen == [("gpt-3.5-turbo", "openai", "gpt-3.5-turbo"), ("openai/gpt-4o", "openai", "gpt-4o"),
                      ("gpt-4o-mini", "openai", "gpt-4o-mini")]
    with pytest.raises(BadRequest):
        stage(chat_ctx("replicate/x"), lambda c: None)


def test_excluded_deployments_are_not_picked() -> None:
    gw = gateway({"model_list": [entry("g", "openai/a", api_base="a"), entry("g", "openai/b", api_base="b")]})
    stage = Route({}, gw.services)
    first, second = gw.services.models.group("g")
    for _ in range(50):
        ctx = chat_ctx("g")
        ctx.excluded[first.id] = "failed"
        stage(ctx, lambda c: None)
        assert ctx.deployment is second
    ctx = chat_ctx("g")
    ctx.excluded.update({first.id: "failed with 500", second.id: "failed with 503"})
    with pytest.raises(ServiceUnavailable) as info:
        stage(ctx, lambda c: None)
    assert "failed with 500" in info.value.message


def test_access_groups_limit_who_may_call() -> None:
    from proxy.errors import PermissionDenied

    gw = gateway({"model_list": [
        {"model_name": "beta", "litellm_params": {"model": "openai/b", "mock_response": "x"},
         "model_info": {"access_groups": ["beta-models"]}},
        {"model_name": "open", "litellm_params": {"model": "openai/o", "mock_response": "x"}}]})
    stage = Route({}, gw.services)

    def call(model: str, caller: dict) -> None:
        ctx = chat_ctx(model)
        ctx.caller = caller
        stage(ctx, lambda c: None)

    call("beta", {"role": "admin"})
    call("beta", {"role": "key", "models": ["beta-models"]})
    call("beta", {"role": "key", "models": ["beta"]})
    call("open", {"role": "key"})
    with pytest.raises(PermissionDenied) as info:
        call("beta", {"role": "key"})
    assert info.value.status == 403
    with pytest.raises(PermissionDenied):
        call("open", {"role": "key", "models": ["beta-models"]})
