"""Bedrock beyond Converse chat: embeddings through InvokeModel (Titan G1/V2, Cohere), the
toolConfig a tool history needs, and the usage read from pass-through answers and streams."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import BadRequest
from proxy.providers.base import PassThroughCall
from proxy.providers.bedrock import BedrockAdapter, translate_request
from proxy.providers.bedrock_native import PassThroughMeter, native_usage
from tests.mock_upstream.native_servers import chunk_event, encode_frame, event

# ruff: noqa: E501 - recorded payloads keep their lines whole

ADAPTER = BedrockAdapter()
STATIC = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret", "aws_region_name": "us-west-2"}


def deployment(model: str) -> Deployment:
    return Deployment(id=f"d-{model}", model_name="emb", params={"model": f"bedrock/{model}", **STATIC},
                      model_info={}, provider="bedrock", upstream_model=model, adapter=ADAPTER)


def embed_ctx(**body: Any) -> RequestContext:
    return RequestContext("embedding", {"model": "emb", **body})


def test_titan_v2_request_one_call_per_input() -> None:
    call = ADAPTER.build_request(embed_ctx(input=["first text", "second"], dimensions=512), deployment("amazon.titan-embed-text-v2:0"))
    batch = call.extra["batch"]
    assert [c.url for c in batch] == ["https://bedrock-runtime.us-west-2.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"] * 2
    assert [orjson.loads(c.body) for c in batch] == [{"inputText": "first text", "dimensions": 512},
                                                    {"inputText": "second", "dimensions": 512}]
    signed = ADAPTER.sign(call, deployment("amazon.titan-embed-text-v2:0"))
    assert all("/us-west-2/bedrock/aws4_request" in c.headers["Authorization"] for c in signed.extra["batch"])


def test_titan_single_input_is_one_plain_call_and_bad_dimensions_are_refused() -> None:
    call = ADAPTER.build_request(embed_ctx(input="just one"), deployment("amazon.titan-embed-text-v1"))
    assert "batch" not in call.extra and orjson.loads(call.body) == {"inputText": "just one"}
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(embed_ctx(input="x", dimensions=100), deployment("amazon.titan-embed-text-v2:0"))
    assert info.value.param == "dimensions"
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(embed_ctx(input=[1, 2, 3]), deployment("amazon.titan-embed-text-v2:0"))
    assert info.value.param == "input"


def test_cohere_request_takes_the_whole_list() -> None:
    call = ADAPTER.build_request(embed_ctx(input=["a", "b"], input_type="search_query"), deployment("cohere.embed-english-v3"))
    assert orjson.loads(call.body) == {"texts": ["a", "b"], "input_type": "search_query"}
    call = ADAPTER.build_request(embed_ctx(input="a"), deployment("cohere.embed-multilingual-v3"))
    assert orjson.loads(call.body)["input_type"] == "search_document"


TITAN_V2 = b'{"embedding":[0.0123,-0.0456,0.0789],"embeddingsByType":{"float":[0.0123,-0.0456,0.0789]},"inputTextTokenCount":4}'
TITAN_V1 = b'{"embedding":[0.5,0.25],"inputTextTokenCount":2}'
COHERE = b'{"embeddings":[[0.1,0.2],[0.3,0.4]],"id":"4b9b8a3e-9a3e-4f5a-8b1e-0e2c7b1f7e11","response_type":"embeddings_floats","texts":["a","b"]}'
COHERE_BY_TYPE = b'{"embeddings":{"float":[[0.1,0.2]]},"id":"x","response_type":"embeddings_by_type","texts":["a"]}'


def test_parse_titan_batch_and_cohere() -> None:
    out = ADAPTER.parse_batch(embed_ctx(input=["a", "b"]), deployment("amazon.titan-embed-text-v2:0"), [TITAN_V2, TITAN_V1])
    assert out == {"object": "list", "model": "amazon.titan-embed-text-v2:0",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789]},
                            {"object": "embedding", "index": 1, "embedding": [0.5, 0.25]}],
                   "usage": {"prompt_tokens": 6, "total_tokens": 6}}
    out = ADAPTER.parse_response(embed_ctx(input=["a", "b"]), deployment("cohere.embed-english-v3"), 200, COHERE)
    assert [d["embedding"] for d in out["data"]] == [[0.1, 0.2], [0.3, 0.4]] and "usage" not in out
    out = ADAPTER.parse_response(embed_ctx(input="a", encoding_format="base64"), deployment("cohere.embed-english-v3"),
                                 200, COHERE_BY_TYPE)
    assert base64.b64decode(out["data"][0]["embedding"]) == b"\xcd\xcc\xcc=\xcd\xccL>"


def test_tool_history_without_tools_gets_a_tool_config() -> None:
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                                     "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "t1", "content": "sunny"}]
    body = translate_request({"messages": history})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "dummy_tool", "description": "This is a dummy tool call",
                                                          "inputSchema": {"json": {"type": "object", "properties": {}}}}}]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = translate_request({"messages": history, "tools": tools, "tool_choice": "none"})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
    assert "toolConfig" not in translate_request({"messages": [{"role": "user", "content": "hi"}]})


def test_pass_through_targets_the_deployment_model() -> None:
    dep = deployment("anthropic.claude-3-haiku-20240307-v1:0")
    sent = PassThroughCall("bedrock", "invoke-with-response-stream", b'{"x":1}', {"Content-Type": "application/json"})
    call = ADAPTER.pass_through(sent, dep)
    assert call.url.endswith("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream")
    assert call.stream and call.extra == {"binary": True} and call.body == b'{"x":1}'


CONVERSE = b'{"metrics":{"latencyMs":612},"output":{"message":{"content":[{"text":"Hi"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":11,"totalTokens":23,"cacheReadInputTokens":4}}'
INVOKE_ANTHROPIC = b'{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-3-haiku-20240307","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5}}'


def test_native_usage_of_answers() -> None:
    assert native_usage("converse", {}, CONVERSE) == {
        "prompt_tokens": 16, "completion_tokens": 11, "total_tokens": 27, "prompt_tokens_details": {"cached_tokens": 4},
        "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}
    headers = {"x-amzn-bedrock-input-token-count": "9", "x-amzn-bedrock-output-token-count": "3"}
    assert native_usage("invoke", headers, INVOKE_ANTHROPIC)["prompt_tokens"] == 9  # headers first
    assert native_usage("invoke", {}, INVOKE_ANTHROPIC) == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert native_usage("invoke", {}, TITAN_V1) == {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}
    assert native_usage("invoke", {}, b"not json") is None
    meter = PassThroughMeter("invoke")
    meter.answer(headers, INVOKE_ANTHROPIC)
    assert meter.usage == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_stream_tap_reads_usage_from_any_split_of_the_bytes() -> None:
    converse = b"".join([event("messageStart", {"role": "assistant"}),
                         event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
                         event("messageStop", {"stopReason": "end_turn"}),
                         event("metadata", {"usage": {"inputTokens": 7, "outputTokens": 2, "totalTokens": 9}})])
    tap = PassThroughMeter("converse-stream")
    for i in range(0, len(converse), 5):  # 5 bytes at a time
        tap.feed(converse[i:i + 5])
    assert tap.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    invoke = b"".join([chunk_event({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
                       chunk_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                       chunk_event({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                           "inputTokenCount": 10, "outputTokenCount": 6, "invocationLatency": 500, "firstByteLatency": 200}})])
    tap = PassThroughMeter("invoke-with-response-stream")
    tap.feed(invoke)
    assert tap.usage == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
    broken = PassThroughMeter("converse-stream")
    broken.feed(encode_frame({":message-type": "event"}, b"{}")[:-1] + b"\x00" + b"garbage" * 5)
    assert broken.usage is None  # an undecodable stream is left alone, never raised on
