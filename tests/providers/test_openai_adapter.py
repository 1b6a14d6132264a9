"""OpenAI adapter, fed with recorded OpenAI payloads: requests built, streams parsed, errors mapped."""

from __future__ import annotations

import orjson
import pytest

from proxy.deployment import Deployment
from proxy.errors import (
    AuthenticationError,
    BadRequest,
    ContentPolicyViolation,
    ContextWindowExceeded,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from proxy.providers.registry import ProviderRegistry
from tests.helpers import chat_ctx

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# Recorded from OpenAI's streaming API (tool call split over chunks, usage chunk last).
TOOL_STREAM = b"""data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"finish_reason":null}],"usage":null}

: keep-alive

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}

data: [DONE]

"""

CONTEXT_ERROR = (b'{"error": {"message": "This model\'s maximum context length is 8192 tokens. However, your '
                 b'messages resulted in 9000 tokens. Please reduce the length of the messages.", '
                 b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}')

# OpenAI's answer when its safety system refuses a prompt.
POLICY_ERROR = (b'{"error": {"message": "Your request was rejected as a result of our safety system. Your prompt '
                b'may contain text that is not allowed by our safety system.", "type": "invalid_request_error", '
                b'"param": null, "code": "content_policy_violation"}}')


def deployment(**params) -> Deployment:
    entry = {"model_name": "g", "litellm_params": {"model": "openai/gpt-4o-mini", **params}}
    return Deployment.from_entry(entry, ProviderRegistry())


def test_build_request_url_headers_and_body(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    dep = deployment(api_base="http://h:9/v1/", api_key="sk-u", organization="org-1",
                     extra_headers={"X-Trace": "t"}, temperature=0.2, max_tokens=20)
    ctx = chat_ctx("g", temperature=0.9, extra_headers={"X-Req": "r"})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == "http://h:9/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-u"
    assert call.headers["OpenAI-Organization"] == "org-1"
    assert call.headers["X-Trace"] == "t" and call.headers["X-Req"] == "r"
    body = orjson.loads(call.body)
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.9 and body["max_tokens"] == 20
    assert "extra_headers" not in body


def test_key_and_base_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    dep = deployment()
    call = dep.adapter.build_request(chat_ctx("g"), dep)
    assert call.url == "https://api.openai.com/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-env"


def test_openai_compatible_providers_have_their_own_base() -> None:
    entry = {"model_name": "d", "litellm_params": {"model": "deepseek/deepseek-chat", "api_key": "k"}}
    dep = Deployment.from_entry(entry, ProviderRegistry())
    call = dep.adapter.build_request(chat_ctx("d"), dep)
    assert call.url == "https://api.deepseek.com/v1/chat/completions" and dep.upstream_model == "deepseek-chat"


def test_parse_stream_passes_chunks_through() -> None:
    dep = deployment(api_base="http://h/v1")
    ctx = chat_ctx("g", stream=True)
    chunks = list(dep.adapter.parse_stream(ctx, dep, TOOL_STREAM.splitlines(keepends=True)))
    assert len(chunks) == 5
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks[:3])
    assert orjson.loads(args) == {"city": "Paris"}
    assert chunks[-1]["usage"]["total_tokens"] == 21 and chunks[-1]["choices"] == []


def test_stream_error_event_raises() -> None:
    dep = deployment(api_base="http://h/v1")
    lines = [b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n', b"\n",
             b'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n']
    stream = dep.adapter.parse_stream(chat_ctx("g"), dep, lines)
    assert next(stream)["choices"][0]["delta"]["content"] == "a"
    with pytest.raises(UpstreamError, match="overloaded"):
        next(stream)


@pytest.mark.parametrize(("status", "headers", "body", "kind", "out_status"), [
    (429, {"retry-after": "12"}, b'{"error":{"message":"Rate limit reached","type":"requests",'
                                 b'"code":"rate_limit_exceeded"}}', RateLimited, 429),
    (400, {}, CONTEXT_ERROR, ContextWindowExceeded, 400),
    (400, {}, POLICY_ERROR, ContentPolicyViolation, 400),
    (400, {}, b'{"error":{"message":"Invalid value for temperature","type":"invalid_request_error",'
              b'"param":"temperature","code":"invalid_value"}}', BadRequest, 400),
    (401, {}, b'{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}',
     AuthenticationError, 401),
    (500, {}, b'{"error":{"message":"The server had an error","type":"server_error","code":null}}',
     UpstreamError, 500),
    (503, {}, b"<html>Service Unavailable</html>", ServiceUnavailable, 503),
    (502, {}, b"<html><body>Bad Gateway</body></html>", UpstreamError, 502),
])
def test_map_error(status, headers, body, kind, out_status) -> None:
    dep = deployment()
    err = dep.adapter.map_error(status, headers, body)
    assert type(err) is kind and err.status == out_status
    shape = err.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"}
    if status == 429:
        assert err.retry_after == 12 and err.response_headers()["Retry-After"] == "12"
    if kind is ContextWindowExceeded:
        assert shape["code"] == "context_length_exceeded" and shape["param"] == "messages"
    if kind is ContentPolicyViolation:
        assert shape["code"] == "content_policy_violation" and "safety system" in shape["message"]
        assert not err.retryable


def test_text_completion_model_serves_chat() -> None:
    entry = {"model_name": "t", "litellm_params": {"model": "text-completion-openai/gpt-3.5-turbo-instruct",
                                                   "api_base": "http://h/v1", "api_key": "k"}}
    dep = Deployment.from_entry(entry, ProviderRegistry())
    ctx = chat_ctx("t", text="Say hi", tools=[{"type": "function", "function": {"name": "f"}}])
    call = dep.adapter.build_request(ctx, dep)
    body = orjson.loads(call.body)
    assert call.url == "http://h/v1/completions" and body["prompt"] == "Say hi" and "messages" not in body
    assert "tools" not in body
    answer = dep.adapter.parse_response(ctx, dep, 200, orjson.dumps({
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "hi!", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}))
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "hi!"}


def test_exhausted_quota_is_not_retryable() -> None:
    err = deployment().adapter.map_error(429, {}, b'{"error":{"message":"You exceeded your current quota",'
                                                  b'"type":"insufficient_quota","code":"insufficient_quota"}}')
    assert err.status == 429 and not err.retryable
    assert deployment().adapter.map_error(429, {}, b"{}").retryable
