"""LiteLLM's steering request headers (proxy/request_headers.py) and the response headers' parts."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.datastructures import EnvironHeaders

from proxy import request_headers
from proxy.api.openai import build_context
from proxy.api.render import context_headers
from proxy.deployment import Deployment
from proxy.errors import BadRequest
from proxy.providers.registry import ProviderRegistry

BODY = {"model": "m", "messages": [{"role": "user", "content": "secret words"}]}


def environ(**headers: str) -> EnvironHeaders:
    return EnvironHeaders({"HTTP_" + k.upper(): v for k, v in headers.items()})


def deployment(**params: Any) -> Deployment:
    entry = {"model_name": "g", "litellm_params": params}
    return Deployment.from_entry(entry, ProviderRegistry())


def test_no_steering_headers_leave_the_context_as_it_was() -> None:
    assert request_headers.parse(environ(AUTHORIZATION="Bearer x")) is None
    ctx = build_context("chat", dict(BODY), environ())
    assert ctx.tags is None and ctx.redact_messages is False and ctx.end_user is None
    assert "timeout" not in ctx.extra and ctx.metadata == {}


def test_each_header_lands_on_the_context() -> None:
    headers = environ(X_LITELLM_TIMEOUT="12.5", X_LITELLM_STREAM_TIMEOUT="3", X_LITELLM_NUM_RETRIES="4",
                      X_LITELLM_TAGS="x, y", X_LITELLM_ENABLE_MESSAGE_REDACTION="True",
                      X_LITELLM_END_USER_ID="eu", X_LITELLM_SPEND_LOGS_METADATA='{"a": 1}')
    body = {**BODY, "timeout": 99, "num_retries": 1, "user": "body-user",
            "metadata": {"tags": ["w", "x"], "spend_logs_metadata": {"b": 2}}}
    ctx = build_context("chat", body, headers)
    assert ctx.extra["timeout"] == 12.5 and ctx.extra["stream_timeout"] == 3.0  # headers outrank the body
    assert ctx.extra["num_retries"] == 4
    assert ctx.tags == ["w", "x", "y"] and ctx.metadata["tags"] == ["w", "x", "y"]
    assert ctx.redact_messages is True
    assert ctx.end_user == "eu"
    assert ctx.metadata["spend_logs_metadata"] == {"b": 2, "a": 1}


def test_customer_id_wins_over_end_user_id_and_body_user_counts_without_either() -> None:
    ctx = build_context("chat", {**BODY, "user": "u"}, {"x-litellm-customer-id": "c", "x-litellm-end-user-id": "e"})
    assert ctx.end_user == "c"
    assert build_context("chat", {**BODY, "user": "u"}, {}).end_user == "u"


def test_redaction_can_be_turned_off_explicitly() -> None:
    assert build_context("chat", dict(BODY), {"x-litellm-enable-message-redaction": "false"}).redact_messages is False


@pytest.mark.parametrize(("name", "value"), [
    ("x-litellm-timeout", "nan"), ("x-litellm-timeout", "inf"), ("x-litellm-stream-timeout", "x"),
    ("x-litellm-num-retries", "one"), ("x-litellm-spend-logs-metadata", '"text"'),
])
def test_bad_values_name_the_header(name: str, value: str) -> None:
    with pytest.raises(BadRequest) as info:
        build_context("chat", dict(BODY), {name: value})
    assert info.value.param == name and name in info.value.message


def test_api_base_shown_without_query_or_credentials() -> None:
    dep = deployment(model="openai/gpt-4o", api_base="https://user:pw@example.test/v1?key=s3cret")
    assert dep.shown_api_base == "https://example.test/v1"
    assert deployment(model="openai/gpt-4o").shown_api_base == "https://api.openai.com/v1"
    assert deployment(model="anthropic/claude-3", api_key="k").shown_api_base == "https://api.anthropic.com"
    assert deployment(model="openai/x", mock_response="hi").shown_api_base is None  # nothing is called


def test_rate_limit_headers_normalised_per_provider() -> None:
    registry = ProviderRegistry()
    anthropic, _ = registry.resolve("anthropic/claude-3", None)
    openai, _ = registry.resolve("openai/gpt-4o", None)
    sent = {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-tokens-remaining": "7",
            "x-ratelimit-limit-requests": "9"}
    assert anthropic.rate_limits(sent) == {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-tokens": "7"}
    assert openai.rate_limits(sent) == {"x-ratelimit-limit-requests": "9"}
    assert openai.rate_limits({"content-type": "application/json"}) is None


def test_retry_headers_only_when_a_retry_stage_ran() -> None:
    ctx = build_context("chat", dict(BODY), {})
    names = {name for name, _ in context_headers(ctx)}
    assert "x-litellm-attempted-retries" not in names and "x-litellm-model-api-base" not in names
    assert {"x-litellm-call-id", "x-litellm-response-duration-ms", "x-litellm-overhead-duration-ms"} <= names
    ctx.max_retries, ctx.retries, ctx.fallbacks = 3, 2, 1
    sent = dict(context_headers(ctx))
    assert (sent["x-litellm-attempted-retries"], sent["x-litellm-max-retries"],
            sent["x-litellm-attempted-fallbacks"]) == ("2", "3", "1")
