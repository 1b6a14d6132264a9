"""Bedrock adapter (Converse API), fed with recorded Converse payloads and encoded event streams."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

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
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from proxy.providers.bedrock import BedrockAdapter
from proxy.providers.registry import ProviderRegistry

# ruff: noqa: E501 - recorded payloads keep their lines whole

ADAPTER = BedrockAdapter()
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def deployment(model: str = MODEL, **params: Any) -> Deployment:
    return Deployment(
        id=f"dep-{model}-{sorted(params)}", model_name="claude", params={"model": f"bedrock/{model}", **params},
        model_info={}, provider="bedrock", upstream_model=model, adapter=ADAPTER,
        api_key=params.get("api_key"),
    )


STATIC = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
          "aws_region_name": "us-west-2"}


@pytest.fixture(autouse=True)
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No credentials, region or profile from the machine running the tests."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_BEARER_TOKEN_BEDROCK", "AWS_BEDROCK_RUNTIME_ENDPOINT", "AWS_CREDENTIAL_EXPIRATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))


# ---- request building -----------------------------------------------------------------------

def test_request_url_and_body() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "content": "18C, sunny"},
        ],
        "max_tokens": 256, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "top_k": 40,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required",
    }
    call = ADAPTER.build_request(RequestContext("chat", body), deployment(**STATIC))
    assert call.method == "POST"
    assert call.url == "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert call.headers["Content-Type"] == "application/json"
    assert orjson.loads(call.body) == {
        "system": [{"text": "You are terse."}],
        "messages": [
            {"role": "user", "content": [
                {"text": "What's the weather in Paris?"}, {"text": "And this?"},
                {"image": {"format": "png", "source": {"bytes": PNG}}}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {"city": "Paris"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "content": [{"text": "18C, sunny"}]}}]},
        ],
        "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
            "toolChoice": {"any": {}},
        },
        "additionalModelRequestFields": {"top_k": 40},
    }


def test_stream_url_endpoint_override_and_tool_choice() -> None:
    dep = deployment("meta.llama3-8b-instruct-v1:0", aws_bedrock_runtime_endpoint="https://vpce-1.bedrock-runtime.eu-west-1.vpce.amazonaws.com/")
    tools = [{"type": "function", "function": {"name": "f"}}]
    ctx = RequestContext("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                                  "tools": tools, "tool_choice": {"type": "function", "function": {"name": "f"}}})
    call = ADAPTER.build_request(ctx, dep)
    assert call.stream
    assert call.url == "https://vpce-1.bedrock-runtime.eu-west-1.vpce.amazonaws.com/model/meta.llama3-8b-instruct-v1%3A0/converse-stream"
    assert orjson.loads(call.body)["toolConfig"]["toolChoice"] == {"tool": {"name": "f"}}
    ctx = RequestContext("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"})
    assert "toolConfig" not in orjson.loads(ADAPTER.build_request(ctx, dep).body)


def test_unsupported_params_are_refused() -> None:
    ctx = RequestContext("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "n": 1})
    with pytest.raises(BadRequest, match="logprobs"):
        ADAPTER.build_request(ctx, deployment())
    ctx = RequestContext("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                  "image": 1, **{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}})
    with pytest.raises(BadRequest, match="data: URLs"):
        ADAPTER.build_request(ctx, deployment())


def test_aws_params_are_not_request_defaults() -> None:
    registry = ProviderRegistry()
    registry.register(BedrockAdapter())
    entry = {"model_name": "claude", "litellm_params": {"model": f"bedrock/{MODEL}", **STATIC, "aws_profile_name": "p", "top_k": 5}}
    dep = Deployment.from_entry(entry, registry)
    assert dep.provider == "bedrock" and dep.upstream_model == MODEL
    assert dep.defaults == {"top_k": 5}


# ---- signing ----------------------------------------------------------------------------------

def signed(dep: Deployment) -> dict[str, str]:
    ctx = RequestContext("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    adapter = dep.adapter
    return adapter.sign(adapter.build_request(ctx, dep), dep).headers


def test_sigv4_with_static_credentials() -> None:
    headers = signed(deployment(**STATIC))
    assert re.match(r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-west-2/bedrock/aws4_request, "
                    r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$", headers["Authorization"])
    assert re.match(r"\d{8}T\d{6}Z$", headers["X-Amz-Date"])
    assert "X-Amz-Security-Token" not in headers
    assert headers["Content-Type"] == "application/json"


def test_sigv4_with_session_token_and_env_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    dep = deployment(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", aws_session_token="FwoGZXIvYXdzEXAMPLE")
    headers = signed(dep)
    assert "/eu-central-1/bedrock/aws4_request" in headers["Authorization"]
    assert "x-amz-security-token" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE"


def test_sigv4_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    headers = signed(deployment())
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDENV/")
    assert "/us-east-1/bedrock/" in headers["Authorization"]


def test_sigv4_from_profile(tmp_path: Any) -> None:
    (tmp_path / "credentials").write_text("[work]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n")
    headers = signed(deployment(aws_profile_name="work", aws_region_name="ap-south-1"))
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPROFILE/")


def test_bearer_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = signed(deployment(api_key="ABSKexample"))
    assert headers["Authorization"] == "Bearer ABSKexample"
    assert "X-Amz-Date" not in headers
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKenv")
    assert signed(deployment())["Authorization"] == "Bearer ABSKenv"


def test_no_credentials_is_an_auth_error() -> None:
    with pytest.raises(AuthenticationError, match="no AWS credentials"):
        signed(deployment())
    with pytest.raises(AuthenticationError, match="aws_role_name"):
        signed(deployment(aws_role_name="arn:aws:iam::123456789012:role/x"))


# ---- responses --------------------------------------------------------------------------------

TEXT_RESPONSE = b'{"metrics":{"latencyMs":612},"output":{"message":{"content":[{"text":"Hello! How can I help you today?"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":11,"totalTokens":23}}'
TOOL_RESPONSE = b'{"metrics":{"latencyMs":1310},"output":{"message":{"content":[{"text":"Let me check the weather."},{"toolUse":{"input":{"city":"Paris"},"name":"get_weather","toolUseId":"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"}}],"role":"assistant"}},"stopReason":"tool_use","usage":{"inputTokens":402,"outputTokens":71,"totalTokens":473}}'


def test_parse_text_response() -> None:
    out = ADAPTER.parse_response(RequestContext("chat", {}), deployment(), 200, TEXT_RESPONSE)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == MODEL
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello! How can I help you today?"}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23}


def test_parse_tool_use_response() -> None:
    out = ADAPTER.parse_response(RequestContext("chat", {}), deployment(), 200, TOOL_RESPONSE)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check the weather."
    assert choice["message"]["tool_calls"] == [{"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                                                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert out["usage"]["total_tokens"] == 473


@pytest.mark.parametrize(("reason", "expected"), [("max_tokens", "length"), ("stop_sequence", "stop"),
                                                  ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter")])
def test_finish_reasons(reason: str, expected: str) -> None:
    body = orjson.dumps({**orjson.loads(TEXT_RESPONSE), "stopReason": reason})
    assert ADAPTER.parse_response(RequestContext("chat", {}), deployment(), 200, body)["choices"][0]["finish_reason"] == expected


def test_invalid_body_is_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        ADAPTER.parse_response(RequestContext("chat", {}), deployment(), 200, b"<html>")


# ---- event streams ----------------------------------------------------------------------------

def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream frame: prelude (total length, headers length, CRC), string headers,
    payload, message CRC (CRC32 over everything before it)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_frame(headers, orjson.dumps(payload))


def as_lines(data: bytes) -> Iterator[bytes]:
    """What transport.StreamingResponse.lines() yields: pieces split after each b"\\n"."""
    yield from data.splitlines(keepends=True)


TEXT_EVENTS = [
    ("messageStart", {"p": "abcd", "role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}, "p": "abcdefgh"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "!\nHow can I help?"}, "p": "ab"}),
    ("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefghijk"}),
    ("messageStop", {"p": "abc", "stopReason": "end_turn"}),
    ("metadata", {"metrics": {"latencyMs": 402}, "p": "a", "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21}}),
]
TOOL_EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Checking."}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"name": "get_weather", "toolUseId": "tooluse_abc123"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ""}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": "Pa'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ris"}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"metrics": {"latencyMs": 900}, "usage": {"inputTokens": 400, "outputTokens": 50, "totalTokens": 450}}),
]


def stream(events: list[tuple[str, dict[str, Any]]], body: dict[str, Any] | None = None,
           pieces: Iterator[bytes] | None = None) -> tuple[list[dict[str, Any]], RequestContext]:
    ctx = RequestContext("chat", body or {"model": "m", "messages": [], "stream": True})
    data = b"".join(event(k, p) for k, p in events)
    return list(ADAPTER.parse_stream(ctx, deployment(), pieces or as_lines(data))), ctx


def test_text_stream() -> None:
    chunks, ctx = stream(TEXT_EVENTS)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hello!\nHow can I help?"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert ctx.usage == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def test_stream_byte_at_a_time_with_usage_chunk() -> None:
    data = b"".join(event(k, p) for k, p in TEXT_EVENTS)
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    chunks, ctx = stream(TEXT_EVENTS, body, (data[i:i + 1] for i in range(len(data))))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 21
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert ctx.usage is None  # the relay takes it from the usage chunk


def test_tool_call_stream() -> None:
    chunks, _ = stream(TOOL_EVENTS)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {"index": 0, "id": "tooluse_abc123", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert all(c["index"] == 0 for c in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("kind", "error"), [("throttlingException", RateLimited), ("validationException", BadRequest),
                                             ("serviceUnavailableException", ServiceUnavailable),
                                             ("modelStreamErrorException", UpstreamError)])
def test_stream_exception_event(kind: str, error: type) -> None:
    frames = event("messageStart", {"role": "assistant"}) + encode_frame(
        {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
        b'{"message":"Too many requests, please wait before trying again."}')
    ctx = RequestContext("chat", {"model": "m", "messages": [], "stream": True})
    chunks = ADAPTER.parse_stream(ctx, deployment(), as_lines(frames))
    assert next(chunks)["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(error):
        next(chunks)


def test_truncated_or_corrupt_stream() -> None:
    data = b"".join(event(k, p) for k, p in TEXT_EVENTS[:3])
    with pytest.raises(UpstreamError, match="ended before"):
        stream([], pieces=iter([data]))
    with pytest.raises(UpstreamError, match="inside a frame"):
        stream([], pieces=iter([data[:-5]]))
    corrupt = bytearray(event(*TEXT_EVENTS[0]))
    corrupt[-1] ^= 0xFF
    with pytest.raises(UpstreamError, match="invalid event stream"):
        stream([], pieces=iter([bytes(corrupt)]))


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error_type", "message", "expected"), [
    (400, "ValidationException", "Input is too long for requested model.", ContextWindowExceeded),
    (400, "ValidationException", "prompt is too long: 210000 tokens > 200000 maximum", ContextWindowExceeded),
    (400, "ValidationException", "The model returned the following errors: too many input tokens", ContextWindowExceeded),
    (400, "ValidationException", "Malformed input request: #: extraneous key [foo] is not permitted", BadRequest),
    (403, "AccessDeniedException", "You don't have access to the model with the specified model ID.", PermissionDenied),
    (403, "UnrecognizedClientException", "The security token included in the request is invalid.", AuthenticationError),
    (404, "ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier.", NotFound),
    (429, "ThrottlingException", "Too many requests, please wait before trying again.", RateLimited),
    (408, "ModelTimeoutException", "Model has timed out in processing the request.", RequestTimeout),
    (503, "ServiceUnavailableException", "Bedrock is unable to process your request.", ServiceUnavailable),
    (429, "ModelNotReadyException", "Model is not ready to serve inference requests.", RateLimited),
    (500, "InternalServerException", "An internal server error occurred.", UpstreamError),
])
def test_map_error(status: int, error_type: str, message: str, expected: type) -> None:
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "content-type": "application/json"}
    err = ADAPTER.map_error(status, headers, orjson.dumps({"message": message}))
    assert type(err) is expected
    assert message in err.message
    if expected is not ContextWindowExceeded:
        assert err.code == error_type


def test_map_error_retry_after_and_plain_body() -> None:
    err = ADAPTER.map_error(429, {"retry-after": "3"}, b'{"Message":"Rate exceeded"}')
    assert isinstance(err, RateLimited) and err.retry_after == 3.0 and "Rate exceeded" in err.message
    err = ADAPTER.map_error(502, {}, b"Bad Gateway")
    assert isinstance(err, UpstreamError) and err.status == 502
