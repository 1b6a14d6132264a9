"""Gemini API adapter, fed with recorded generateContent / streamGenerateContent payloads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import (
    BadRequest,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProxyError,
    RateLimited,
    UpstreamError,
)
from proxy.providers.gemini import GeminiAdapter
from proxy.providers.registry import ProviderRegistry

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# Recorded from streamGenerateContent?alt=sse (gemini-2.0-flash): text in three events, usage cumulative.
TEXT_STREAM = b"""data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"}}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}]},"modelVersion": "gemini-2.0-flash","responseId": "ZCv2aLGfIeWvnvgP0aeQ8Ac"}\r
\r
data: {"candidates": [{"content": {"parts": [{"text": " sky is blue because of Rayleigh"}],"role": "model"}}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.0-flash","responseId": "ZCv2aLGfIeWvnvgP0aeQ8Ac"}\r
\r
data: {"candidates": [{"content": {"parts": [{"text": " scattering.\\n"}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 9,"totalTokenCount": 17,"cachedContentTokenCount": 4,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"candidatesTokensDetails": [{"modality": "TEXT","tokenCount": 9}]},"modelVersion": "gemini-2.0-flash","responseId": "ZCv2aLGfIeWvnvgP0aeQ8Ac"}\r
\r
"""
# Recorded: a function call arrives whole in one event.
TOOL_STREAM = b"""data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris","unit": "celsius"}}}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 41,"candidatesTokenCount": 8,"totalTokenCount": 49},"modelVersion": "gemini-2.0-flash","responseId": "kC32aN2tDO2vnvgPm5CR2Qc"}\r
\r
"""
# Recorded generateContent answer from a thinking model, with cached tokens.
THINKING = {
    "candidates": [{"content": {"parts": [{"text": "Counting r's: s-t-r-a-w-b-e-r-r-y.", "thought": True},
                                          {"text": "There are 3 r's."}], "role": "model"},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 7, "totalTokenCount": 1257,
                      "cachedContentTokenCount": 1024, "thoughtsTokenCount": 50},
    "modelVersion": "gemini-2.5-flash", "responseId": "x1y2z3",
}
BLOCKED = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.0-flash"}


def deployment(**params: Any) -> Deployment:
    entry = {"model_name": "g", "litellm_params": {"model": "gemini/gemini-2.0-flash", "api_key": "AIza-test", **params}}
    return Deployment.from_entry(entry, ProviderRegistry())


def ctx_for(body: dict[str, Any], kind: str = "chat") -> RequestContext:
    return RequestContext(kind, {"model": "g", **body})


def test_registry_serves_gemini_prefix_and_bare_names() -> None:
    registry = ProviderRegistry()
    assert isinstance(registry.resolve("gemini/gemini-1.5-pro")[0], GeminiAdapter)
    assert registry.resolve("gemini-2.0-flash")[1] == "gemini-2.0-flash"


def test_request_translation_field_by_field() -> None:
    dep = deployment()
    ctx = ctx_for({
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "and the weather in gs://bucket/x.jpg?"},
        ],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "stop": "END", "n": 1, "seed": 7,
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                                                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                                   "required": ["q"], "additionalProperties": False}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
            "type": "object", "properties": {"a": {"type": ["string", "null"]}, "b": {"$ref": "#/$defs/B"}},
            "$defs": {"B": {"type": "integer"}}, "additionalProperties": False}}},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    })
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    assert call.headers["x-goog-api-key"] == "AIza-test" and "key=" not in call.url
    body = orjson.loads(call.body)
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "What is in this image?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "cat"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"content": "a cat"}}},
                                   {"text": "and the weather in gs://bucket/x.jpg?"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "candidateCount": 1, "seed": 7, "maxOutputTokens": 100,
        "stopSequences": ["END"], "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "string", "nullable": True},
                                                             "b": {"type": "integer"}}},
    }
    assert body["tools"] == [{"functionDeclarations": [{"name": "lookup", "description": "Look up", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    dep = deployment()
    ctx = ctx_for({"messages": [{"role": "user", "content": "hi"}], "tool_choice": choice,
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]})
    body = orjson.loads(dep.adapter.build_request(ctx, dep).body)
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
    assert body["tools"] == [{"functionDeclarations": [{"name": "f"}]}]  # an empty OBJECT is left out


def test_json_object_and_http_image_and_stream_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    dep = Deployment.from_entry({"model_name": "g", "litellm_params": {
        "model": "gemini/gemini-1.5-pro", "api_base": "http://127.0.0.1:9"}}, ProviderRegistry())
    ctx = ctx_for({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
        "response_format": {"type": "json_object"}, "stream": True})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == "http://127.0.0.1:9/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse" and call.stream
    assert call.headers["x-goog-api-key"] == "from-env"
    body = orjson.loads(call.body)
    assert body["contents"][0]["parts"] == [{"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}}]
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_unsupported_params_are_refused_naming_them() -> None:
    dep = deployment()
    with pytest.raises(BadRequest) as info:
        dep.adapter.build_request(ctx_for({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}}), dep)
    assert info.value.param == "logit_bias"


def test_response_with_thoughts_and_cached_tokens() -> None:
    dep = deployment()
    out = dep.adapter.parse_response(ctx_for({}), dep, 200, orjson.dumps(THINKING))
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "There are 3 r's.",
                                 "reasoning_content": "Counting r's: s-t-r-a-w-b-e-r-r-y."}
    assert choice["finish_reason"] == "stop" and out["id"] == "x1y2z3" and out["model"] == "gemini-2.5-flash"
    assert out["usage"] == {"prompt_tokens": 1200, "completion_tokens": 57, "total_tokens": 1257,
                            "prompt_tokens_details": {"cached_tokens": 1024}, "cache_read_input_tokens": 1024,
                            "completion_tokens_details": {"reasoning_tokens": 50}}


@pytest.mark.parametrize(("reason", "expected"), [("MAX_TOKENS", "length"), ("RECITATION", "content_filter"),
                                                  ("STOP", "stop"), ("MALFORMED_FUNCTION_CALL", "stop")])
def test_finish_reasons(reason: str, expected: str) -> None:
    dep = deployment()
    data = {"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}]}
    assert dep.adapter.parse_response(ctx_for({}), dep, 200, orjson.dumps(data))["choices"][0]["finish_reason"] == expected


def test_function_call_response() -> None:
    dep = deployment()
    data = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
                                        "role": "model"}, "finishReason": "STOP"}]}
    message = dep.adapter.parse_response(ctx_for({}), dep, 200, orjson.dumps(data))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    call = message["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert message["message"]["content"] is None


def test_safety_blocks_are_content_policy_errors() -> None:
    dep = deployment()
    with pytest.raises(ContentPolicyViolation, match="SAFETY"):
        dep.adapter.parse_response(ctx_for({}), dep, 200, orjson.dumps(BLOCKED))
    empty = {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
    with pytest.raises(ContentPolicyViolation):
        dep.adapter.parse_response(ctx_for({}), dep, 200, orjson.dumps(empty))
    with pytest.raises(ContentPolicyViolation):  # in a stream, before anything was sent: fallbacks still apply
        list(dep.adapter.parse_stream(ctx_for({"stream": True}), dep, [b"data: " + orjson.dumps(BLOCKED) + b"\r\n"]))


def test_text_stream_chunks_and_usage() -> None:
    dep = deployment()
    ctx = ctx_for({"stream": True, "stream_options": {"include_usage": True}})
    chunks = list(dep.adapter.parse_stream(ctx, dep, TEXT_STREAM.splitlines(keepends=True)))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "The sky is blue because of Rayleigh scattering.\n"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert {c["id"] for c in chunks} == {"ZCv2aLGfIeWvnvgP0aeQ8Ac"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 8, "completion_tokens": 9, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4}, "cache_read_input_tokens": 4}


def test_stream_usage_reaches_accounting_without_a_usage_chunk() -> None:
    dep = deployment()
    ctx = ctx_for({"stream": True})
    chunks = list(dep.adapter.parse_stream(ctx, dep, TEXT_STREAM.splitlines(keepends=True)))
    assert all(c["choices"] for c in chunks)
    assert ctx.usage is not None and ctx.usage["total_tokens"] == 17


def test_tool_stream_arrives_whole() -> None:
    dep = deployment()
    chunks = list(dep.adapter.parse_stream(ctx_for({"stream": True}), dep, TOOL_STREAM.splitlines(keepends=True)))
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert len(calls) == 1
    assert calls[0][0]["index"] == 0 and calls[0][0]["function"] == {"name": "get_weather",
                                                                     "arguments": '{"city":"Paris","unit":"celsius"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_mid_stream_error_and_truncated_stream() -> None:
    dep = deployment()
    first = TEXT_STREAM.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    err = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    with pytest.raises(ProxyError) as info:
        list(dep.adapter.parse_stream(ctx_for({"stream": True}), dep, [first, err]))
    assert info.value.status == 503 and "overloaded" in info.value.message
    with pytest.raises(UpstreamError):
        list(dep.adapter.parse_stream(ctx_for({"stream": True}), dep, []))


def test_embeddings_batch() -> None:
    dep = deployment(model="gemini/text-embedding-004")
    ctx = ctx_for({"input": ["a b", "c"], "dimensions": 4}, kind="embedding")
    call = dep.adapter.build_request(ctx, dep)
    assert call.url.endswith("/models/text-embedding-004:batchEmbedContents")
    assert orjson.loads(call.body) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b"}]}, "outputDimensionality": 4},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "c"}]}, "outputDimensionality": 4}]}
    out = dep.adapter.parse_response(ctx, dep, 200, b'{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}')
    assert out["object"] == "list" and [d["embedding"] for d in out["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    assert [d["index"] for d in out["data"]] == [0, 1] and "usage" not in out


def test_error_mapping() -> None:
    adapter = GeminiAdapter()
    too_long = orjson.dumps({"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}})
    assert isinstance(adapter.map_error(400, {}, too_long), ContextWindowExceeded)
    quota = orjson.dumps({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}})
    err = adapter.map_error(429, {"retry-after": "3"}, quota)
    assert isinstance(err, RateLimited) and err.code == "RESOURCE_EXHAUSTED" and err.retry_after == 3.0
    assert "Resource has been exhausted" in err.message
    bad_key = orjson.dumps([{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}])
    err = adapter.map_error(400, {}, bad_key)
    assert err.status == 400 and "API key not valid" in err.message


@pytest.mark.parametrize(("model", "effort", "config"), [
    ("gemini/gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini/gemini-2.5-flash", "medium", {"thinkingBudget": 2048, "includeThoughts": True}),
    ("gemini/gemini-2.5-pro", "high", {"thinkingBudget": 4096, "includeThoughts": True}),
    ("gemini/gemini-2.5-flash", "minimal", {"thinkingBudget": 1, "includeThoughts": True}),
    ("gemini/gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("gemini/gemini-2.5-pro", "minimal", {"thinkingBudget": 128, "includeThoughts": True}),
    ("gemini/gemini-2.0-flash-thinking-exp", "minimal", {"thinkingBudget": 128, "includeThoughts": True}),
    ("gemini/gemini-2.5-flash", "disable", {"thinkingBudget": 0, "includeThoughts": False}),
    ("gemini/gemini-2.5-flash", "none", {"thinkingBudget": 0, "includeThoughts": False}),
    ("gemini/gemini-3-pro-preview", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
    ("gemini/gemini-3-flash-preview", "minimal", {"thinkingLevel": "low", "includeThoughts": True}),
    ("gemini/gemini-3-pro-preview", "none", {"thinkingLevel": "low", "includeThoughts": False}),
])
def test_reasoning_effort_becomes_thinking_config(model: str, effort: str, config: dict[str, Any]) -> None:
    dep = Deployment.from_entry({"model_name": "g", "litellm_params": {"model": model, "api_key": "k"}},
                                ProviderRegistry())
    ctx = ctx_for({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort, "max_tokens": 50})
    body = orjson.loads(dep.adapter.build_request(ctx, dep).body)
    assert body["generationConfig"] == {"maxOutputTokens": 50, "thinkingConfig": config}
    assert "thinkingConfig" not in body and "reasoning_effort" not in body


def test_bad_reasoning_effort_and_native_thinking_config() -> None:
    dep = deployment()
    with pytest.raises(BadRequest) as info:
        dep.adapter.build_request(ctx_for({"messages": [{"role": "user", "content": "x"}],
                                           "reasoning_effort": "extreme"}), dep)
    assert info.value.param == "reasoning_effort" and "extreme" in info.value.message
    # Gemini's own thinkingConfig goes where the API reads it, and wins over reasoning_effort
    native = {"thinkingBudget": 300, "includeThoughts": False}
    body = orjson.loads(dep.adapter.build_request(ctx_for({
        "messages": [{"role": "user", "content": "x"}], "thinkingConfig": native, "reasoning_effort": "high"}), dep).body)
    assert body["generationConfig"] == {"thinkingConfig": native} and "thinkingConfig" not in body
