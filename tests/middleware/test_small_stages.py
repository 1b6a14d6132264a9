"""environment_filter, drop_params, prompt_template and callbacks, each with a made-up context."""

from __future__ import annotations

import json

import pytest

from middleware.callbacks import Callbacks
from middleware.drop_params import DropParams
from middleware.environment_filter import EnvironmentFilter
from middleware.prompt_template import PromptTemplate, render
from middleware.route import Route
from proxy.errors import BadRequest, ConfigError
from proxy.pipeline import StageNotUsed
from tests.helpers import chat_ctx, gateway

ENVS = {"model_list": [
    {"model_name": "everywhere", "litellm_params": {"model": "openai/a", "mock_response": "x"}},
    {"model_name": "prod-only", "litellm_params": {"model": "openai/b", "mock_response": "x"},
     "model_info": {"supported_environments": ["production"]}},
    {"model_name": "dev-staging", "litellm_params": {"model": "openai/c", "mock_response": "x"},
     "model_info": {"supported_environments": ["development", "staging"]}},
]}


def test_environment_filter_hides_deployments(monkeypatch) -> None:
    monkeypatch.setenv("LITELLM_ENVIRONMENT", "production")
    gw = gateway(ENVS)
    assert gw.services.visible_model_names() == ["everywhere", "prod-only"]
    assert [s.name for s in gw.pipeline.stages].count("environment_filter") == 1
    ctx = chat_ctx("dev-staging")
    with pytest.raises(BadRequest) as info:  # invisible here, as if it were not configured
        gw.pipeline(ctx)
    assert info.value.code == "model_not_found" and "dev-staging" not in info.value.message.split(":")[-1]
    explained = gw.services.router.explain(chat_ctx("dev-staging"))
    assert explained["chosen"] is None
    assert explained["excluded"][0]["reason"] == "environment: not available in production"
    assert gw.pipeline(chat_ctx("prod-only"))["choices"][0]["message"]["content"] == "x"


def test_environment_filter_off_without_environment(monkeypatch) -> None:
    monkeypatch.delenv("LITELLM_ENVIRONMENT", raising=False)
    gw = gateway(ENVS)
    with pytest.raises(StageNotUsed):
        EnvironmentFilter({"environment": None}, gw.services)
    assert len(gw.services.visible_model_names()) == 3


def test_environment_must_be_known(monkeypatch) -> None:
    monkeypatch.setenv("LITELLM_ENVIRONMENT", "qa")
    with pytest.raises(ConfigError) as info:
        gateway(ENVS)
    assert "LITELLM_ENVIRONMENT='qa'" in str(info.value)


class LimitedAdapter:
    supported_params = frozenset({"messages", "model", "temperature", "stream"})


def routed_ctx(gw, model: str, **body):
    ctx = chat_ctx(model, **body)
    Route({}, gw.services)(ctx, lambda c: None)
    return ctx


def test_drop_params_drops_only_known_unsupported_params() -> None:
    gw = gateway({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]})
    ctx = routed_ctx(gw, "m", temperature=0.1, logit_bias={"1": 2}, my_provider_flag=True)
    ctx.deployment.adapter = LimitedAdapter()
    seen = {}
    DropParams({"enabled": True}, gw.services)(ctx, lambda c: seen.update(c.body))
    assert "logit_bias" not in seen and seen["temperature"] == 0.1 and seen["my_provider_flag"] is True
    assert ctx.extra["dropped_params"] == ["logit_bias"]


def test_drop_params_off_keeps_everything_and_per_request_switch() -> None:
    gw = gateway({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]})
    stage = DropParams({"enabled": None}, gw.services)
    assert stage.enabled is False
    ctx = routed_ctx(gw, "m", logit_bias={"1": 2})
    ctx.deployment.adapter = LimitedAdapter()
    stage(ctx, lambda c: None)
    assert "logit_bias" in ctx.body
    ctx.extra["drop_params"] = True
    stage(ctx, lambda c: None)
    assert "logit_bias" not in ctx.body


def test_drop_params_on_one_deployment_only() -> None:
    gw = gateway({"model_list": [
        {"model_name": "claude-lenient", "litellm_params": {
            "model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "k", "drop_params": True,
            "additional_drop_params": ["user", "tools[*].input_examples"]}},
        {"model_name": "claude-strict", "litellm_params": {
            "model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "k"}},
    ]})
    stage = DropParams({"enabled": None}, gw.services)
    assert stage.enabled is False  # nothing global
    lenient = gw.services.router.group("claude-lenient")[0]
    assert "drop_params" not in lenient.defaults and "additional_drop_params" not in lenient.defaults
    tools = [{"type": "function", "function": {"name": "f"}, "input_examples": [{"q": 1}]}]
    ctx = routed_ctx(gw, "claude-lenient", frequency_penalty=0.5, user="u1", temperature=0.2, tools=tools)
    stage(ctx, lambda c: None)
    assert "frequency_penalty" not in ctx.body and "user" not in ctx.body and ctx.body["temperature"] == 0.2
    assert ctx.body["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert tools[0]["input_examples"] == [{"q": 1}]  # the client's objects are left alone
    assert ctx.extra["dropped_params"] == ["frequency_penalty", "user", "tools[*].input_examples"]
    strict = routed_ctx(gw, "claude-strict", frequency_penalty=0.5)
    stage(strict, lambda c: None)
    assert strict.body["frequency_penalty"] == 0.5  # the other deployment keeps its strictness
    with pytest.raises(BadRequest, match="frequency_penalty"):
        strict.deployment.adapter.build_request(strict, strict.deployment)


def test_additional_drop_params_per_request_and_paths() -> None:
    gw = gateway({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]})
    stage = DropParams({"enabled": None}, gw.services)
    ctx = routed_ctx(gw, "m", response_format={"type": "json_schema", "json_schema": {"strict": True, "name": "x"}},
                     tools=[{"a": 1, "b": 2}, {"a": 3, "b": 4}], seed=1)
    ctx.extra["additional_drop_params"] = ["seed", "response_format.json_schema.strict", "tools[0].b", "nope.x"]
    stage(ctx, lambda c: None)
    assert "seed" not in ctx.body and ctx.body["response_format"]["json_schema"] == {"name": "x"}
    assert ctx.body["tools"] == [{"a": 1}, {"a": 3, "b": 4}]
    bad = routed_ctx(gw, "m")
    bad.extra["additional_drop_params"] = "seed"
    with pytest.raises(BadRequest) as info:
        stage(bad, lambda c: None)
    assert info.value.param == "additional_drop_params"


def test_drop_params_settings_are_checked_at_boot() -> None:
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.additional_drop_params"):
        gateway({"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "additional_drop_params": "user"}}]})


def test_prompt_template_renders_litellm_roles() -> None:
    params = {"initial_prompt_value": "\n", "final_prompt_value": "\n", "bos_token": "<s>", "eos_token": "</s>",
              "roles": {"system": {"pre_message": "<|im_start|>system\n", "post_message": "<|im_end|>"},
                        "user": {"pre_message": "<|im_start|>user\n", "post_message": "<|im_end|>"}}}
    text = render([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], params)
    assert text == "<s>\n<|im_start|>system\nbe brief<|im_end|><|im_start|>user\nhi<|im_end|>\n</s>"
    gw = gateway({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", **params}}]})
    ctx = routed_ctx(gw, "m")
    PromptTemplate({}, gw.services)(ctx, lambda c: None)
    assert ctx.extra["prompt"].startswith("<s>\n<|im_start|>user\nhello")
    # deployment template params are not forwarded as request defaults
    assert "roles" not in gw.services.models.group("m")[0].defaults


class ListSink:
    enabled = True

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)


def test_callbacks_write_one_access_line_per_request() -> None:
    gw = gateway({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m",
                                                                       "mock_response": "a b"}}],
                  "pipeline": ["route"]})
    stage = Callbacks({"access_log": True, "spend_logs": True}, gw.services)
    stage.sink = ListSink()
    ctx = chat_ctx("m")
    stage(ctx, lambda c: gw.pipeline(c))
    assert not stage.sink.records  # written when the response is finished, not before
    ctx.finish()
    [record] = stage.sink.records
    assert record["model"] == "m" and record["status"] == 200 and record["completion_tokens"] == 2
    assert record["deployment"] == ctx.deployment.id and record["latency_ms"] > 0


def test_access_log_is_buffered_and_flushed_on_close(tmp_path) -> None:
    from proxy.accesslog import AccessLog

    path = tmp_path / "access.log"
    sink = AccessLog(path.open("ab"), interval=60)
    sink.write({"a": 1})
    sink.write({"b": 2})
    assert path.read_bytes() == b""  # nothing written on the request path
    sink.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"b": 2}]
    sink.write({"c": 3})  # after close: straight out
    assert path.read_text().splitlines()[-1] == '{"c":3}'
