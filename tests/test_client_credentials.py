"""Client-side credentials: refused by name unless allowed; when allowed, the call uses them."""

from __future__ import annotations

import orjson
import pytest

from proxy import client_credentials
from proxy.api.openai import build_context
from proxy.app import create_app
from proxy.client_credentials import ClientAuthRules, take
from proxy.errors import BadRequest, ConfigError
from tests.helpers import gateway

BASE = "https://llm.team-a.example.com/v1"


def test_rules_follow_litellm_semantics() -> None:
    rules = ClientAuthRules.parse(["api_key", {"api_base": r"^https://.*\.team-a\.example\.com/"}])
    assert rules is not None
    assert rules.allows("api_key", "sk-anything")
    assert rules.allows("api_base", BASE) and rules.allows("base_url", BASE)
    assert not rules.allows("api_base", "https://evil.example.net/v1")
    exact = ClientAuthRules.parse([{"api_base": "http://10.0.0.1:8000/v1"}])
    assert exact is not None and exact.allows("api_base", "http://10.0.0.1:8000/v1")
    assert not exact.allows("api_key", "sk-x")  # a base pattern allows no key
    named = ClientAuthRules.parse(["base_url"])
    assert named is not None and named.allows("api_base", "http://any") and not named.allows("api_key", "k")
    assert ClientAuthRules.parse(None) is None
    for bad in ("api_key", [{"api_key": ".*"}], [{"api_base": "("}], [3]):
        with pytest.raises(ValueError):
            ClientAuthRules.parse(bad)


def test_fields_are_taken_out_of_the_body() -> None:
    body = {"model": "m", "api_key": "sk-c", "base_url": BASE, "api_base": None, "temperature": 1}
    assert take(body) == {"api_key": "sk-c", "base_url": BASE}
    assert body == {"model": "m", "temperature": 1}
    with pytest.raises(BadRequest) as info:
        take({"api_key": 123})
    assert info.value.param == "api_key"


def test_bad_rules_fail_the_boot_naming_the_path() -> None:
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.litellm_params\.configurable_clientside_auth_params"):
        gateway({"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "configurable_clientside_auth_params": [{"api_base": "(unclosed"}]}}]})


def ask(gw, model: str, **creds):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **creds}
    ctx = build_context("chat", body, {})
    return ctx, gw.pipeline(ctx)


CONFIG = {"model_list": [
    {"model_name": "closed", "litellm_params": {"model": "openai/c", "api_key": "sk-own", "mock_response": "ok"}},
    {"model_name": "open", "litellm_params": {
        "model": "openai/o", "api_key": "sk-own", "api_base": "http://own/v1", "mock_response": "ok",
        "configurable_clientside_auth_params": ["api_key", {"api_base": r"^https://.*\.team-a\.example\.com/"}]}},
]}


def test_refused_by_name_unless_the_deployment_allows_it() -> None:
    gw = gateway(CONFIG)
    for field, value in (("api_key", "sk-c"), ("api_base", BASE), ("base_url", BASE)):
        with pytest.raises(BadRequest) as info:
            ask(gw, "closed", **{field: value})
        assert info.value.param == field and "allow_client_side_credentials" in info.value.message
    with pytest.raises(BadRequest) as info:
        ask(gw, "open", api_key="sk-c", api_base="https://evil.example.net/v1")
    assert info.value.param == "api_base"
    ctx, answer = ask(gw, "open", api_key="sk-client", base_url=BASE)
    assert answer["choices"][0]["message"]["content"] == "ok"
    assert (ctx.deployment.api_key, ctx.deployment.api_base) == ("sk-client", BASE)
    original = gw.services.router.group("open")[0]
    assert (original.api_key, original.api_base) == ("sk-own", "http://own/v1")  # shared config untouched
    assert ctx.deployment.id == original.id
    ctx, _ = ask(gw, "open", api_key="sk-client")
    assert (ctx.deployment.api_key, ctx.deployment.api_base) == ("sk-client", "http://own/v1")


def test_allowed_everywhere_by_general_settings() -> None:
    gw = gateway({**CONFIG, "general_settings": {"allow_client_side_credentials": True}})
    ctx, _ = ask(gw, "closed", api_key="sk-client", api_base="http://anywhere/v1")
    assert (ctx.deployment.api_key, ctx.deployment.api_base) == ("sk-client", "http://anywhere/v1")


def test_the_request_sent_upstream_carries_the_client_key_not_the_field() -> None:
    gw = gateway({"model_list": [{"model_name": "open", "litellm_params": {
        "model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "sk-own",
        "configurable_clientside_auth_params": ["api_key", "api_base"]}}]})
    ctx = build_context("chat", {"model": "open", "messages": [{"role": "user", "content": "hi"}],
                                 "api_key": "sk-client", "api_base": "http://mine:1"}, {})
    dep = client_credentials.apply(ctx, gw.services.router.group("open")[0], allow_all=False)
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == "http://mine:1/v1/messages" and call.headers["x-api-key"] == "sk-client"
    assert not {"api_key", "api_base", "base_url"} & set(orjson.loads(call.body))


def test_group_info_says_what_callers_may_bring() -> None:
    client = create_app(CONFIG, live=False).test_client()
    groups = {g["model_group"]: g for g in client.get("/model_group/info").get_json()["data"]}
    assert groups["open"]["configurable_clientside_auth_params"] == [
        "api_key", {"api_base": r"^https://.*\.team-a\.example\.com/"}]
    assert groups["closed"]["configurable_clientside_auth_params"] is None
