"""Anthropic adapter, fed with recorded Messages API payloads, then run against the mock upstream."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import (
    AuthenticationError,
    BadRequest,
    ContextWindowExceeded,
    NotFound,
    PermissionDenied,
    ProxyError,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from proxy.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicAdapter
from proxy.providers.base import UpstreamCall
from tests.mock_upstream.anthropic import MockAnthropic

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# Recorded from the Messages API: a text answer (as the streaming docs show it, ping included).
TEXT_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01PPTB1VfAYm5zB6hT3hLW8y","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! How can I help?"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"""

# Recorded: text, then a tool_use block whose input arrives as input_json_delta fragments.
TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""

TOOL_RESPONSE = b'{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"I need to use get_weather."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"San Francisco, CA","unit":"celsius"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":384,"output_tokens":92}}'
TEXT_RESPONSE = b'{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":503}}'

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def deployment(api_base: str | None = None, api_key: str | None = "sk-ant-k", **params: Any) -> Deployment:
    return Deployment(id="d", model_name="claude", params={"model": "anthropic/claude-3-5-sonnet-20241022", **params},
                      model_info={}, provider="anthropic", upstream_model="claude-3-5-sonnet-20241022",
                      adapter=AnthropicAdapter(), api_base=api_base, api_key=api_key, defaults=dict(params))


def chat(**body: Any) -> RequestContext:
    return RequestContext("chat", {"model": "claude", "messages": [{"role": "user", "content": "Hello"}], **body})


def built(ctx: RequestContext, dep: Deployment | None = None) -> tuple[UpstreamCall, dict[str, Any]]:
    dep = dep or deployment()
    call = dep.adapter.build_request(ctx, dep)
    return call, orjson.loads(call.body)


def lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def test_url_headers_and_minimal_body(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_BASE", raising=False)
    call, body = built(chat(extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"}))
    assert call.method == "POST" and call.url == "https://api.anthropic.com/v1/messages"
    assert call.headers["x-api-key"] == "sk-ant-k" and call.headers["anthropic-version"] == "2023-06-01"
    assert call.headers["Content-Type"] == "application/json" and "Authorization" not in call.headers
    assert call.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert body == {"model": "claude-3-5-sonnet-20241022", "max_tokens": DEFAULT_MAX_TOKENS,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]}


@pytest.mark.parametrize(("base", "url"), [
    ("http://h:9", "http://h:9/v1/messages"),
    ("http://h:9/v1/", "http://h:9/v1/messages"),
    ("http://h:9/v1/messages", "http://h:9/v1/messages"),
])
def test_api_base_forms(base, url) -> None:
    assert built(chat(), deployment(api_base=base))[0].url == url


def test_key_from_environment_and_stream_flag(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    call, body = built(chat(stream=True, stream_options={"include_usage": True}), deployment(api_key=None))
    assert call.headers["x-api-key"] == "sk-ant-env" and call.stream
    assert call.headers["Accept"] == "text/event-stream"
    assert body["stream"] is True and "stream_options" not in body


def test_conversation_translation() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "What is in this image?"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
        ]},
        {"role": "assistant", "content": "Let me look up the weather.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome "},
    ]
    _, body = built(chat(messages=messages))
    assert body["system"] == "You are terse.\nAnswer in English."
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look up the weather."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"type": "text", "text": "Thanks"},
        ]},
        # a prefilled answer may not end in whitespace
        {"role": "assistant", "content": [{"type": "text", "text": "You are welcome"}]},
    ]


def test_assistant_tool_calls_without_text_and_cached_system() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    ]
    _, body = built(chat(messages=messages))
    assert body["system"] == [{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}]
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_1"}]


def test_sampling_params_tools_and_defaults() -> None:
    dep = deployment(temperature=0.1, top_k=5)  # litellm_params become request defaults
    ctx = chat(max_completion_tokens=300, max_tokens=100, temperature=0.7, top_p=0.9, stop="END",
               user="user-42", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, n=1)
    _, body = built(ctx, dep)
    assert body["max_tokens"] == 300 and body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["top_k"] == 5 and body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["tools"] == [{"name": "get_weather", "description": "Weather in a city", "input_schema": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert "n" not in body and "user" not in body and "parallel_tool_calls" not in body


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    (None, None),
])
def test_tool_choice(choice, expected) -> None:
    _, body = built(chat(tools=[WEATHER], tool_choice=choice, stop=["a", "b"]))
    assert body.get("tool_choice") == expected and body["stop_sequences"] == ["a", "b"]


def test_tool_choice_without_tools_is_not_sent() -> None:
    _, body = built(chat(tool_choice="auto", tools=[]))
    assert "tool_choice" not in body and "tools" not in body


@pytest.mark.parametrize("body", [
    {"response_format": {"type": "json_object"}},
    {"n": 2},
    {"logprobs": True},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
])
def test_requests_anthropic_cannot_serve_are_refused(body) -> None:
    with pytest.raises(BadRequest):
        built(chat(**body))


def test_neutral_openai_params_are_not_refused() -> None:
    _, body = built(chat(n=1, logprobs=False, seed=None))
    assert "n" not in body and "logprobs" not in body and "seed" not in body


def test_parse_text_response() -> None:
    dep = deployment()
    data = dep.adapter.parse_response(chat(), dep, 200, TEXT_RESPONSE)
    assert data["object"] == "chat.completion" and data["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert data["model"] == "claude-3-5-sonnet-20241022"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hi! My name is Claude."}
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}


def test_parse_tool_use_response() -> None:
    dep = deployment()
    data = dep.adapter.parse_response(chat(), dep, 200, TOOL_RESPONSE)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I need to use get_weather."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert data["usage"]["total_tokens"] == 476


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter"), ("pause_turn", "stop"),
])
def test_stop_reasons(stop_reason, finish) -> None:
    dep = deployment()
    raw = TEXT_RESPONSE.replace(b'"end_turn"', b'"%s"' % stop_reason.encode())
    assert dep.adapter.parse_response(chat(), dep, 200, raw)["choices"][0]["finish_reason"] == finish


def test_text_stream_translation_without_usage_chunk() -> None:
    dep = deployment()
    ctx = chat(stream=True)
    chunks = list(dep.adapter.parse_stream(ctx, dep, lines(TEXT_STREAM)))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"msg_01PPTB1VfAYm5zB6hT3hLW8y"}
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": "! How can I help?"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    # no usage chunk was asked for, but accounting still gets the exact counts
    assert ctx.usage == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_tool_stream_translation_with_usage_chunk() -> None:
    dep = deployment()
    ctx = chat(stream=True, stream_options={"include_usage": True})
    chunks = list(dep.adapter.parse_stream(ctx, dep, lines(TOOL_STREAM)))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["delta"] == {"content": "Okay, let's check the weather."}
    opening = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert opening == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                       "function": {"name": "get_weather", "arguments": ""}}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[3:5]]
    assert {f["index"] for f in fragments} == {0} and all("id" not in f for f in fragments)
    assert orjson.loads("".join(f["function"]["arguments"] for f in fragments)) == {"location": "San Francisco, CA"}
    assert chunks[5]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    last = chunks[6]
    assert len(chunks) == 7 and last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 572, "completion_tokens": 89, "total_tokens": 661,
                             "prompt_tokens_details": {"cached_tokens": 100},
                             "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}
    assert ctx.usage is None  # the usage chunk carries it; the dispatcher reads it from there


def test_stream_error_event_is_mapped() -> None:
    dep = deployment()
    raw = TEXT_STREAM.split(b"event: content_block_stop")[0] + (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n')
    stream = dep.adapter.parse_stream(chat(stream=True), dep, lines(raw))
    assert next(stream)["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(ServiceUnavailable, match="Overloaded") as info:
        list(stream)
    assert info.value.retryable


def test_cut_stream_is_an_error() -> None:
    dep = deployment()
    raw = TEXT_STREAM.split(b"event: message_delta")[0]
    with pytest.raises(UpstreamError, match="ended before"):
        list(dep.adapter.parse_stream(chat(stream=True), dep, lines(raw)))


def error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message},
                         "request_id": "req_011CVQe1dLrGNMJyE1ghG1av"})


@pytest.mark.parametrize(("status", "headers", "body", "kind", "out_status"), [
    (400, {}, error("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
     ContextWindowExceeded, 400),
    (400, {}, error("invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000, decrease input length or `max_tokens` and try again"),
     ContextWindowExceeded, 400),
    (400, {}, error("invalid_request_error", "messages: text content blocks must be non-empty"), BadRequest, 400),
    (401, {}, error("authentication_error", "invalid x-api-key"), AuthenticationError, 401),
    (403, {}, error("permission_error", "Your API key does not have permission to use the specified resource."),
     PermissionDenied, 403),
    (404, {}, error("not_found_error", "model: claude-9"), NotFound, 404),
    (413, {}, error("request_too_large", "Request exceeds the maximum allowed number of bytes."), BadRequest, 400),
    (429, {"retry-after": "20"}, error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     RateLimited, 429),
    (500, {}, error("api_error", "Internal server error"), UpstreamError, 500),
    (529, {}, error("overloaded_error", "Overloaded"), ServiceUnavailable, 503),
])
def test_map_error(status, headers, body, kind, out_status) -> None:
    err = deployment().adapter.map_error(status, headers, body)
    assert type(err) is kind and err.status == out_status
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    assert err.retryable == (out_status in (429, 500, 503))
    if status == 429:
        assert err.retry_after == 20


# --- against the mock upstream: what the adapter builds, a real server accepts ------------------

@pytest.fixture(scope="module")
def mock_anthropic() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key="sk-ant-mock") as server:
        yield server


def send(call: UpstreamCall) -> tuple[int, dict[str, str], http.client.HTTPResponse]:
    parts = urlsplit(call.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(call.method, parts.path, body=call.body, headers=call.headers)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp


def roundtrip(server: MockAnthropic, ctx: RequestContext) -> Any:
    dep = deployment(api_base=server.url, api_key="sk-ant-mock")
    status, headers, resp = send(dep.adapter.build_request(ctx, dep))
    if status >= 400:
        raise dep.adapter.map_error(status, headers, resp.read())
    if ctx.stream:
        return list(dep.adapter.parse_stream(ctx, dep, iter(resp.readline, b"")))
    return dep.adapter.parse_response(ctx, dep, status, resp.read())


def test_mock_roundtrip_text(mock_anthropic) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    data = roundtrip(mock_anthropic, chat(messages=messages))
    assert data["choices"][0]["message"]["content"] == "echo: hello there"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    sent = mock_anthropic.requests()[-1]
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-mock"
    assert sent["body"]["system"] == "be brief"


def test_mock_roundtrip_tool_loop_streamed(mock_anthropic) -> None:
    first = roundtrip(mock_anthropic, chat(tools=[WEATHER], stream=True, stream_options={"include_usage": True}))
    opening = first[1]["choices"][0]["delta"]["tool_calls"][0]
    arguments = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                        for c in first[1:] if c["choices"] and "tool_calls" in c["choices"][0]["delta"])
    assert orjson.loads(arguments) == {"location": "mock"}
    assert first[-2]["choices"][0]["finish_reason"] == "tool_calls" and first[-1]["usage"]["completion_tokens"] >= 1
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": opening["id"], "type": "function",
                 "function": {"name": "get_weather", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": opening["id"], "content": "sunny"}]
    second = roundtrip(mock_anthropic, chat(messages=messages, tools=[WEATHER], stream=True))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in second if c["choices"])
    assert text == "echo: sunny" and second[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("controls", "kind"), [
    ({"status": 529}, ServiceUnavailable),
    ({"error": "prompt_too_long"}, ContextWindowExceeded),
    ({"status": 429, "retry_after": "7"}, RateLimited),
])
def test_mock_failures_are_mapped(mock_anthropic, controls, kind) -> None:
    with pytest.raises(ProxyError) as info:
        roundtrip(mock_anthropic, chat(extra_headers={f"x-mock-{k.replace('_', '-')}": str(v) for k, v in controls.items()}))
    assert type(info.value) is kind
    if kind is RateLimited:
        assert info.value.retry_after == 7


def test_mock_stream_error_mid_way(mock_anthropic) -> None:
    with pytest.raises(ServiceUnavailable):
        roundtrip(mock_anthropic, chat(stream=True, mock_controls={"stream_error_after": 3}))
