"""retry_fallback: retries go to other deployments first, then fallbacks by error kind."""

from __future__ import annotations

import pytest

from middleware.retry_fallback import RetryFallback
from middleware.route import Route
from proxy.errors import (
    AuthenticationError,
    BadRequest,
    ContentPolicyViolation,
    ContextWindowExceeded,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from tests.helpers import chat_ctx, gateway


def entry(name: str, base: str) -> dict:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": base}}


def build(settings: dict, entries: list[dict] | None = None):
    gw = gateway({"model_list": entries or [entry("a", "a1"), entry("a", "a2"), entry("b", "b1"),
                                            entry("c", "c1")],
                  "litellm_settings": settings})
    stage = RetryFallback({}, gw.services)
    route = Route({}, gw.services)
    return stage, route


def run(stage, route, outcomes: dict, model: str = "a"):
    """Drive the stage; ``outcomes`` maps api_base -> list of results (exception or value) in order."""
    calls: list[str] = []

    def upstream(ctx):
        base = ctx.deployment.params["api_base"]
        calls.append(base)
        result = outcomes[base].pop(0) if len(outcomes[base]) > 1 else outcomes[base][0]
        if isinstance(result, Exception):
            raise result
        return result

    ctx = chat_ctx(model)
    try:
        result = stage(ctx, lambda c: route(c, upstream))
    except Exception as exc:
        return exc, calls, ctx
    return result, calls, ctx


def test_retry_moves_to_the_other_deployment_without_waiting() -> None:
    stage, route = build({"num_retries": 1})
    out = {"a1": [UpstreamError("boom")], "a2": [UpstreamError("boom")]}
    result, calls, ctx = run(stage, route, out)
    assert isinstance(result, UpstreamError)
    assert sorted(calls) == ["a1", "a2"]
    assert ctx.retries == 1 and ctx.max_retries == 1 and ctx.fallbacks == 0


def test_success_after_a_retry(monkeypatch) -> None:
    stage, route = build({"num_retries": 2}, [entry("a", "a1")])
    slept = []
    monkeypatch.setattr("middleware.retry_fallback.gevent.sleep", slept.append)
    result, calls, ctx = run(stage, route, {"a1": [RateLimited("slow down", retry_after=3), "ok"]})
    assert result == "ok" and calls == ["a1", "a1"]
    assert ctx.retries == 1 and ctx.max_retries == 2
    assert slept == [3]  # the upstream's Retry-After is honoured


def test_backoff_is_exponential_and_capped() -> None:
    stage, _ = build({"num_retries": 5})
    assert [stage.backoff(n, None) for n in (1, 2, 3, 9)] == [0.5, 1.0, 2.0, 30.0]
    assert stage.backoff(1, 120) == 30.0


def test_client_errors_are_not_retried_nor_sent_elsewhere() -> None:
    stage, route = build({"num_retries": 3, "fallbacks": [{"a": ["b"]}]})
    result, calls, _ = run(stage, route, {"a1": [BadRequest("bad param")], "a2": [BadRequest("bad param")],
                                           "b1": ["fallback"]})
    assert isinstance(result, BadRequest) and len(calls) == 1


def test_fallbacks_after_retries() -> None:
    stage, route = build({"num_retries": 1, "fallbacks": [{"a": ["b", "c"]}]})
    result, calls, ctx = run(stage, route, {"a1": [ServiceUnavailable("down")], "a2": [ServiceUnavailable("down")],
                                             "b1": [UpstreamError("also down")], "c1": ["from c"]})
    assert result == "from c"
    assert calls[-2:] == ["b1", "c1"] and sorted(calls[:2]) == ["a1", "a2"]
    assert ctx.model == "c" and ctx.fallbacks == 2
    assert ctx.retries == 0  # c answered at once: retries are counted for the group that answered
    # each fallback group gets the same retries (b has one deployment: it is tried twice)
    assert [a["status"] for a in ctx.attempts] == [503, 503, 502, 502, 200]


def test_auth_errors_fall_back_but_are_not_retried() -> None:
    stage, route = build({"num_retries": 3, "fallbacks": [{"a": ["b"]}]})
    result, calls, _ = run(stage, route, {"a1": [AuthenticationError("bad key")],
                                           "a2": [AuthenticationError("bad key")], "b1": ["b ok"]})
    assert result == "b ok" and len(calls) == 2


@pytest.mark.parametrize(("error", "expected"), [
    (ContextWindowExceeded("too long"), "c1"),
    (ContentPolicyViolation("nope"), "b1"),
])
def test_error_kind_picks_the_fallback_list(error, expected) -> None:
    stage, route = build({"context_window_fallbacks": [{"a": ["c"]}], "content_policy_fallbacks": [{"a": ["b"]}],
                          "fallbacks": [{"a": ["b"]}]})
    _, calls, _ = run(stage, route, {"a1": [error], "a2": [error], "b1": ["b"], "c1": ["c"]})
    assert calls[-1] == expected


def test_default_fallbacks_and_router_settings_win() -> None:
    gw = gateway({"model_list": [entry("a", "a1"), entry("b", "b1")],
                  "litellm_settings": {"num_retries": 9, "default_fallbacks": ["b"]},
                  "router_settings": {"num_retries": 0}})
    stage = RetryFallback({}, gw.services)
    assert stage.num_retries == 0
    result, calls, _ = run(stage, Route({}, gw.services), {"a1": [UpstreamError("x")], "b1": ["b"]})
    assert result == "b" and calls == ["a1", "b1"]
