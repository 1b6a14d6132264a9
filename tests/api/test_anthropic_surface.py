"""The Anthropic surface's translations: Messages requests in, chat completions and chunk streams out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from proxy.api.anthropic import (
    AnthropicEndpoints,
    anthropic_to_openai,
    openai_to_anthropic,
    run_messages,
    serve_messages,
)
from proxy.api.anthropic_stream import EventStream, StreamTranslator, as_chunks, encode, error_type
from proxy.app import create_app
from proxy.context import RequestContext
from proxy.errors import BadRequest, RateLimited, ServiceUnavailable, UpstreamError
from tests.helpers import mock_model

# Payloads follow the examples of Anthropic's Messages API documentation.
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}
IMAGE_DATA = "/9j/4AAQSkZJRgABAQEASABIAAD"


# -- request ---------------------------------------------------------------------------------------


def test_request_with_system_image_and_params() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are a helpful assistant.",
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": IMAGE_DATA}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
                {"type": "text", "text": "Describe this image."},
            ]},
            {"role": "assistant", "content": "It is an ant."},
            {"role": "user", "content": "Hello, Claude"},
        ],
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "user-123", "trace_id": "t-1"},
    }
    assert anthropic_to_openai(body) == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{IMAGE_DATA}"}},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
                {"type": "text", "text": "Describe this image."},
            ]},
            {"role": "assistant", "content": "It is an ant."},
            {"role": "user", "content": "Hello, Claude"},
        ],
        "max_tokens": 1024, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["\n\nHuman:"],
        "user": "user-123", "metadata": {"trace_id": "t-1"},
    }


def test_system_blocks_and_cache_control() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "system": [{"type": "text", "text": "Be brief."}]}
    assert anthropic_to_openai(body)["messages"][0] == {"role": "system", "content": "Be brief."}
    cached = {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
    body["system"] = [{"type": "text", "text": "Be brief."}, cached]
    assert anthropic_to_openai(body)["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}]}


def test_tools_tool_use_and_tool_result() -> None:
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "What's the weather like in San Francisco?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"type": "text", "text": "Answer in Celsius."},
            ]},
        ],
    }
    out = anthropic_to_openai(body)
    assert out["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a given location",
        "parameters": WEATHER_TOOL["input_schema"]}}]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "<thinking>I need to use get_weather</thinking>", "tool_calls": [
            {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
        {"role": "user", "content": "Answer in Celsius."},
    ]


def test_tool_result_blocks_and_images() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": False, "content": [
            {"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        ]}]},
    ]}
    messages = anthropic_to_openai(body)["messages"]
    assert messages == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "line 1\nline 2"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "get_weather"},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
])
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL], "tool_choice": choice}
    out = anthropic_to_openai(body)
    assert {k: out[k] for k in expected} == expected and "parallel_tool_calls" not in out


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"},
     "tool_choice"),
])
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        anthropic_to_openai(body)
    assert info.value.param == param and info.value.status == 400


def test_unknown_fields_pass_through_and_count_only() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}}
    out = anthropic_to_openai(body, count_only=True)
    assert out["thinking"] == {"type": "enabled"} and "max_tokens" not in out


# -- response --------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}}


def test_response_with_tool_use() -> None:
    message = {"role": "assistant", "content": "<thinking>I need to use get_weather</thinking>", "tool_calls": [
        {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"location": "San Francisco, CA", "unit": "celsius"}'}}]}
    assert openai_to_anthropic(completion(message, "tool_calls"), "claude-sonnet-4-5") == {
        "id": "msg_abc123", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 89, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }


@pytest.mark.parametrize(("finish", "reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn"),
])
def test_stop_reasons(finish: str | None, reason: str) -> None:
    out = openai_to_anthropic(completion({"role": "assistant", "content": "Hi!"}, finish), "m")
    assert out["stop_reason"] == reason and out["content"] == [{"type": "text", "text": "Hi!"}]


def test_stop_sequence_named_by_upstream_and_cached_usage() -> None:
    data = completion({"role": "assistant", "content": "1, 2"}, "stop",
                      {"prompt_tokens": 100, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 60}})
    data["choices"][0]["stop_reason"] = ", 3"
    out = openai_to_anthropic(data, "m", [", 3"])
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", ", 3")
    assert out["usage"] == {"input_tokens": 40, "output_tokens": 3, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 60}
    assert openai_to_anthropic(data, "m")["stop_reason"] == "end_turn"  # no stop_sequences asked


def test_error_types_by_status() -> None:
    assert [error_type(s) for s in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 529)] == [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
        "request_too_large", "rate_limit_error", "api_error", "api_error", "overloaded_error", "api_error",
        "overloaded_error"]


# -- stream ----------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}}
TOOL_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Okay"}),
    chunk({"content": ", let's check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"locat'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ion": "SF"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_def", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    USAGE_CHUNK,
]


def run_translator(chunks: list[dict[str, Any]], model: str = "claude-sonnet-4-5") -> list[dict[str, Any]]:
    translator = StreamTranslator(model)
    events = [e for c in chunks for e in translator.feed(c)]
    return events + translator.close()


def test_stream_of_text_and_tool_calls_becomes_the_documented_event_sequence() -> None:
    assert run_translator(TOOL_CHUNKS) == [
        {"type": "message_start", "message": {
            "id": "msg_123", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", let's check."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"locat'}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": 'ion": "SF"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "call_def", "name": "get_time", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"input_tokens": 25, "output_tokens": 15, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0}},
        {"type": "message_stop"},
    ]


def test_stream_text_only_and_usage_fallback() -> None:
    translator = StreamTranslator("m")
    events = [e for c in [chunk({"role": "assistant"}), chunk({"content": "Hello"}), chunk({}, "length")]
              for e in translator.feed(c)]
    events += translator.close({"prompt_tokens": 3, "completion_tokens": 1})
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "ping", "content_block_delta",
                                           "content_block_stop", "message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["input_tokens"] == 3 and events[-2]["usage"]["output_tokens"] == 1


def test_empty_stream_still_is_a_whole_message() -> None:
    assert [e["type"] for e in run_translator([])] == ["message_start", "ping", "message_delta", "message_stop"]


def test_whole_completion_replayed_as_a_stream() -> None:
    message = {"role": "assistant", "content": "Sure.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}}]}
    events = run_translator(list(as_chunks(completion(message, "tool_calls"))))
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-2]["usage"]["output_tokens"] == 89


def test_sse_framing() -> None:
    assert encode([{"type": "ping"}, {"type": "message_stop"}]) == (
        b'event: ping\ndata: {"type":"ping"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n')


# -- the request context is finished exactly once ---------------------------------------------------


class Chunks:
    """A chunk iterator that records being closed (as the upstream stream would be)."""

    def __init__(self, chunks: list[dict[str, Any]], fail: Exception | None = None) -> None:
        self._it: Iterator[dict[str, Any]] = iter(chunks)
        self.fail = fail
        self.closed = False

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            return next(self._it)
        except StopIteration:
            if self.fail is not None:
                raise self.fail from None
            raise

    def close(self) -> None:
        self.closed = True


def counted_ctx(stream: bool = True) -> tuple[RequestContext, list[int]]:
    ctx = RequestContext("chat", {"model": "m", "stream": stream, "messages": []})
    finished: list[int] = []
    ctx.on_finish(lambda c: finished.append(c.status))
    return ctx, finished


def events_of(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in body.decode().split("\n\n"):
        if frame:
            head, data = frame.split("\n", 1)
            out.append((head.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_stream_finishes_once_when_complete() -> None:
    ctx, finished = counted_ctx()
    body = EventStream(ctx, Chunks(TOOL_CHUNKS[:3]), StreamTranslator("m"))
    data = b"".join(body)
    body.close()
    assert events_of(data)[-1] == ("message_stop", {"type": "message_stop"}) and finished == [200]


def test_stream_finishes_once_when_the_client_leaves() -> None:
    ctx, finished = counted_ctx()
    chunks = Chunks(TOOL_CHUNKS)
    body = EventStream(ctx, chunks, StreamTranslator("m"))
    next(body)
    body.close()
    body.close()
    assert finished == [499] and chunks.closed
    ctx, finished = counted_ctx()
    chunks = Chunks(TOOL_CHUNKS)
    EventStream(ctx, chunks, StreamTranslator("m")).close()  # before the first byte
    assert finished == [499] and chunks.closed


def test_mid_stream_error_is_an_error_event() -> None:
    ctx, finished = counted_ctx()
    body = EventStream(ctx, Chunks(TOOL_CHUNKS[:2], fail=ServiceUnavailable("upstream overloaded")),
                       StreamTranslator("m"))
    events = events_of(b"".join(body))
    body.close()
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                               "message": "upstream overloaded"}})
    assert finished == [503] and ctx.error is not None


class FakeGateway:
    def __init__(self, result: Any) -> None:
        self.result = result

    def pipeline(self, ctx: RequestContext) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_run_messages_json_error_and_headers() -> None:
    ctx, finished = counted_ctx(stream=False)
    reply = run_messages(FakeGateway(completion({"role": "assistant", "content": "Hi"}, "stop")), ctx, "m")
    assert finished == [] and orjson.loads(reply.body)["content"] == [{"type": "text", "text": "Hi"}]
    assert any(name == "Server-Timing" for name, _ in reply.headers)
    reply.on_close()
    assert finished == [200]
    ctx, finished = counted_ctx(stream=False)
    reply = run_messages(FakeGateway(RateLimited("slow down", retry_after=7)), ctx, "m")
    assert finished == [429] and reply.status == 429 and ("Retry-After", "7") in reply.headers
    assert orjson.loads(reply.body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def test_run_messages_unexpected_error_finishes_and_raises() -> None:
    ctx, finished = counted_ctx(stream=False)
    with pytest.raises(RuntimeError):
        run_messages(FakeGateway(RuntimeError("bug")), ctx, "m")
    assert finished == [500]


def test_stream_request_answered_whole_is_still_a_stream() -> None:
    ctx, finished = counted_ctx()
    reply = run_messages(FakeGateway(completion({"role": "assistant", "content": "Hi"}, "stop")), ctx, "m")
    assert ("Content-Type", "text/event-stream") in reply.headers
    events = events_of(b"".join(reply.body))
    reply.body.close()
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert finished == [200]


def test_serve_messages_bad_json_and_wsgi_passthrough() -> None:
    reply = serve_messages(FakeGateway(UpstreamError("unused")), b'{"model": ', {})
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"]["type"] == "invalid_request_error"
    reply = serve_messages(FakeGateway(None), b'{"model": "m", "max_tokens": 1, "messages": [{"content": "x"}]}', {})
    assert reply.status == 400 and "role" in orjson.loads(reply.body)["error"]["message"]

    calls = []
    app = AnthropicEndpoints(FakeGateway(None), lambda environ, start: calls.append(environ["PATH_INFO"]) or [b"ok"])
    assert app({"PATH_INFO": "/v1/chat/completions"}, lambda *a: None) == [b"ok"]
    statuses = []
    body = app({"PATH_INFO": "/v1/messages", "REQUEST_METHOD": "GET"}, lambda status, headers: statuses.append(status))
    assert statuses == ["405 Method Not Allowed"] and orjson.loads(b"".join(body))["type"] == "error"
    assert calls == ["/v1/chat/completions"]


def test_anthropic_prefix_serves_the_same_surface() -> None:
    client = create_app({"model_list": [mock_model("m", "same answer")]}, live=False).test_client()
    request = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello there"}]}
    plain = client.post("/v1/messages", json=request).get_json()
    prefixed = client.post("/anthropic/v1/messages", json=request)
    assert prefixed.status_code == 200
    answer = prefixed.get_json()
    assert answer["content"] == plain["content"] == [{"type": "text", "text": "same answer"}]
    assert answer["type"] == "message" and answer["usage"] == plain["usage"]
    streamed = client.post("/anthropic/v1/messages", json={**request, "stream": True})
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    assert [e for e, _ in events_of(streamed.get_data())][-1] == "message_stop"
    counted = client.post("/anthropic/v1/messages/count_tokens", json={k: request[k] for k in ("model", "messages")})
    assert counted.get_json() == client.post("/v1/messages/count_tokens", json={
        k: request[k] for k in ("model", "messages")}).get_json()
    assert counted.get_json()["input_tokens"] > 0
    wrong = client.get("/anthropic/v1/messages")
    assert wrong.status_code == 405 and wrong.get_json()["type"] == "error"
