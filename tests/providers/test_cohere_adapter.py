"""Cohere v2 chat and embed, fed recorded request and response payloads (streams included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import AuthenticationError, BadRequest, ContextWindowExceeded, RateLimited, UpstreamError
from proxy.providers.cohere import CohereAdapter
from proxy.providers.registry import ProviderRegistry

# ruff: noqa: E501 - recorded payloads keep their lines whole

ADAPTER = CohereAdapter()


def deployment(model: str = "command-r-plus-08-2024", **params: Any) -> Deployment:
    return Deployment(id=f"co-{model}", model_name="co", params={"model": f"cohere/{model}", **params}, model_info={},
                      provider="cohere", upstream_model=model, adapter=ADAPTER, api_base=params.get("api_base"),
                      api_key=params.get("api_key", "co-key"))


def chat(**body: Any) -> RequestContext:
    return RequestContext("chat", {"model": "co", **body})


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_chat_request_translation() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    call = ADAPTER.build_request(chat(messages=messages, max_completion_tokens=100, top_p=0.9, stop="END", seed=7,
                                      temperature=0.3, tools=TOOLS, tool_choice="required", k=5,
                                      response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}),
                                 deployment())
    assert call.url == "https://api.cohere.com/v2/chat" and call.headers["Authorization"] == "Bearer co-key"
    assert orjson.loads(call.body) == {
        "model": "command-r-plus-08-2024",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"},
                     {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                           "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "max_tokens": 100, "p": 0.9, "stop_sequences": ["END"], "seed": 7, "temperature": 0.3, "tools": TOOLS,
        "k": 5, "tool_choice": "REQUIRED", "response_format": {"type": "json_object", "json_schema": {"type": "object"}}}


def test_refusals_and_urls() -> None:
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(chat(messages=[], logprobs=True), deployment())
    assert info.value.param == "logprobs"
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(chat(messages=[], tool_choice={"type": "function", "function": {"name": "x"}}), deployment())
    assert info.value.param == "tool_choice"
    assert ADAPTER.url(deployment(api_base="http://h:1/v2/chat"), "embedding") == "http://h:1/v2/embed"
    assert ADAPTER.url(deployment(api_base="http://h:1/v2"), "chat") == "http://h:1/v2/chat"
    with pytest.raises(AuthenticationError):
        ADAPTER.build_request(chat(messages=[]), deployment(api_key=None))


TEXT = b'{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"Hello! How can I help?"}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":6},"tokens":{"input_tokens":71,"output_tokens":6}}}'
TOOL = b'{"id":"t1","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will look up the weather.","tool_calls":[{"id":"get_weather_abc","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}}]},"usage":{"billed_units":{"input_tokens":20,"output_tokens":10},"tokens":{"input_tokens":900,"output_tokens":40}}}'


def test_parse_responses() -> None:
    out = ADAPTER.parse_response(chat(), deployment(), 200, TEXT)
    assert out["object"] == "chat.completion" and out["model"] == "command-r-plus-08-2024"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello! How can I help?"}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 71, "completion_tokens": 6, "total_tokens": 77}
    out = ADAPTER.parse_response(chat(), deployment(), 200, TOOL)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "get_weather_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    with pytest.raises(UpstreamError):
        ADAPTER.parse_response(chat(), deployment(), 200, b'{"text": "v1 shape"}')


TEXT_STREAM = b"""event: message-start
data: {"id":"29f14a5a-11de-4cae-9800-25e4747408ea","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}

event: content-start
data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}

event: content-delta
data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}

event: content-delta
data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":" there"}}}}

event: content-end
data: {"type":"content-end","index":0}

event: message-end
data: {"type":"message-end","delta":{"finish_reason":"MAX_TOKENS","usage":{"billed_units":{"input_tokens":3,"output_tokens":2},"tokens":{"input_tokens":69,"output_tokens":2}}}}

"""
TOOL_STREAM = b"""event: message-start
data: {"id":"x","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}

event: tool-plan-delta
data: {"type":"tool-plan-delta","delta":{"message":{"tool_plan":"I will"}}}

event: tool-call-start
data: {"type":"tool-call-start","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_nsz5zm3w56q3","type":"function","function":{"name":"get_weather","arguments":""}}}}}

event: tool-call-delta
data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{\\"city\\": "}}}}}

event: tool-call-delta
data: {"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"\\"Paris\\"}"}}}}}

event: tool-call-end
data: {"type":"tool-call-end","index":0}

event: message-end
data: {"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":{"tokens":{"input_tokens":40,"output_tokens":12}}}}

"""


def lines(data: bytes) -> Iterator[bytes]:
    yield from data.splitlines(keepends=True)


def test_text_stream() -> None:
    ctx = chat(stream=True, stream_options={"include_usage": True})
    chunks = list(ADAPTER.parse_stream(ctx, deployment(), lines(TEXT_STREAM)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hello", " there"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {"prompt_tokens": 69, "completion_tokens": 2, "total_tokens": 71}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"
    quiet = chat(stream=True)
    assert len(list(ADAPTER.parse_stream(quiet, deployment(), lines(TEXT_STREAM)))) == 4
    assert quiet.usage == {"prompt_tokens": 69, "completion_tokens": 2, "total_tokens": 71}


def test_tool_stream() -> None:
    chunks = list(ADAPTER.parse_stream(chat(stream=True), deployment(), lines(TOOL_STREAM)))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0] == {"index": 0, "id": "get_weather_nsz5zm3w56q3", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_cut_or_failing_stream_is_an_error() -> None:
    with pytest.raises(UpstreamError, match="before message-end"):
        list(ADAPTER.parse_stream(chat(stream=True), deployment(), lines(TEXT_STREAM.split(b"event: message-end")[0])))
    with pytest.raises(UpstreamError, match="stream error"):
        list(ADAPTER.parse_stream(chat(stream=True), deployment(), lines(
            b'event: error\ndata: {"type":"error","error":"internal server error"}\n\n')))


EMBED = b'{"id":"da6e531f-54c6-4a73-bf92-f60566d8d753","embeddings":{"float":[[0.016296387,-0.008354187],[0.05,0.06]]},"texts":["hello","goodbye"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":2}},"response_type":"embeddings_by_type"}'


def test_embed_request_and_response() -> None:
    ctx = RequestContext("embedding", {"model": "co", "input": ["hello", "goodbye"], "dimensions": 256})
    call = ADAPTER.build_request(ctx, deployment("embed-v4.0"))
    assert call.url == "https://api.cohere.com/v2/embed" and not call.stream
    assert orjson.loads(call.body) == {"model": "embed-v4.0", "texts": ["hello", "goodbye"], "input_type": "search_document",
                                       "embedding_types": ["float"], "output_dimension": 256}
    out = ADAPTER.parse_response(ctx, deployment("embed-v4.0"), 200, EMBED)
    assert [d["embedding"] for d in out["data"]] == [[0.016296387, -0.008354187], [0.05, 0.06]]
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_errors_and_registry() -> None:
    assert isinstance(ADAPTER.map_error(400, {}, b'{"id":"e","message":"too many tokens: total number of tokens in the prompt cannot exceed 4081"}'), ContextWindowExceeded)
    assert isinstance(ADAPTER.map_error(429, {}, b'{"message":"You are using a Trial key, which is limited to 10 API calls / minute."}'), RateLimited)
    registry = ProviderRegistry()
    assert registry.resolve("cohere/command-r")[0].provider == "cohere"
    assert registry.resolve("command-r-plus")[0].provider == "cohere"  # bare Cohere names, as LiteLLM
    assert registry.resolve("sagemaker/my-endpoint")[0].provider == "sagemaker"
    registry.close()


def test_xinference_default_base(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ProviderRegistry()
    adapter, model = registry.resolve("xinference/bge-base-en")
    dep = Deployment(id="x", model_name="x", params={"model": "xinference/bge-base-en"}, model_info={},
                     provider="xinference", upstream_model=model, adapter=adapter)
    monkeypatch.delenv("XINFERENCE_API_BASE", raising=False)
    call = adapter.build_request(RequestContext("embedding", {"model": "x", "input": "hi"}), dep)
    assert call.url == "http://127.0.0.1:9997/v1/embeddings" and orjson.loads(call.body)["model"] == "bge-base-en"
    monkeypatch.setenv("XINFERENCE_API_BASE", "http://xinf:9997/v1")
    assert adapter.build_request(RequestContext("embedding", {"model": "x", "input": "hi"}), dep).url == \
        "http://xinf:9997/v1/embeddings"
    registry.close()
